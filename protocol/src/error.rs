//! Typed errors of the wire layer. Flat, `#[non_exhaustive]`, `Copy`, no allocation,
//! so firmware can log them with defmt and the gateway can turn them into reason codes.

use core::fmt;

/// Why a frame was rejected by [`crate::open`] or [`crate::peek`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the smallest possible frame.
    TooShort,
    /// Longer than [`crate::MAX_FRAME_LEN`].
    TooLong,
    /// Header version this decoder does not speak.
    UnsupportedVersion(u8),
    /// Header kind this decoder does not know.
    UnknownKind(u8),
    /// The tag does not verify: wrong key, wrong topic identity, or altered bytes.
    Authentication,
    /// A reading ends before its declared fields do.
    Truncated,
    /// A varint is overlong or does not fit 32 bits.
    BadVarint,
    /// A presence or fault bitmap names a field the kind does not have.
    UnknownField,
    /// A field is marked both present and faulty, or a fault map is empty.
    BadFaultMap,
    /// A reading carries no field at all.
    EmptyReading,
    /// A field's value is outside its documented range (index into the kind's field table).
    OutOfRange {
        /// Index of the field in [`crate::Kind::fields`].
        field: u8,
    },
    /// Readings of a frame are not in strictly increasing time, or the time overflows.
    TimeOrder,
    /// More than [`crate::MAX_READINGS`] readings.
    TooManyReadings,
}

impl DecodeError {
    /// Stable snake_case code, used for metrics labels and quarantine records.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownKind(_) => "unknown_kind",
            Self::Authentication => "authentication",
            Self::Truncated => "truncated",
            Self::BadVarint => "bad_varint",
            Self::UnknownField => "unknown_field",
            Self::BadFaultMap => "bad_fault_map",
            Self::EmptyReading => "empty_reading",
            Self::OutOfRange { .. } => "out_of_range",
            Self::TimeOrder => "time_order",
            Self::TooManyReadings => "too_many_readings",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => f.write_str("frame shorter than header, timestamp and tag"),
            Self::TooLong => write!(f, "frame longer than {} bytes", crate::MAX_FRAME_LEN),
            Self::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            Self::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Self::Authentication => f.write_str("authentication tag does not verify"),
            Self::Truncated => f.write_str("reading truncated"),
            Self::BadVarint => f.write_str("overlong or overflowing varint"),
            Self::UnknownField => f.write_str("bitmap names a field the kind does not have"),
            Self::BadFaultMap => f.write_str("fault map empty or overlapping present fields"),
            Self::EmptyReading => f.write_str("reading without any field"),
            Self::OutOfRange { field } => write!(f, "field #{field} out of range"),
            Self::TimeOrder => f.write_str("reading times not strictly increasing"),
            Self::TooManyReadings => {
                write!(f, "more than {} readings in one frame", crate::MAX_READINGS)
            }
        }
    }
}

/// Why a frame could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer (or [`crate::MAX_FRAME_LEN`]) has no room for the next reading.
    BufferFull,
    /// All readings of a frame must be of one kind.
    MixedKinds,
    /// A frame needs at least one reading.
    NoReadings,
    /// A reading carries no field at all.
    EmptyReading,
    /// A field's value is outside its documented range.
    OutOfRange {
        /// Index of the field in [`crate::Kind::fields`].
        field: u8,
    },
    /// Readings must be pushed in strictly increasing time.
    TimeOrder,
    /// More than [`crate::MAX_READINGS`] readings.
    TooManyReadings,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferFull => f.write_str("frame buffer full"),
            Self::MixedKinds => f.write_str("readings of different kinds in one frame"),
            Self::NoReadings => f.write_str("frame without readings"),
            Self::EmptyReading => f.write_str("reading without any field"),
            Self::OutOfRange { field } => write!(f, "field #{field} out of range"),
            Self::TimeOrder => f.write_str("reading times not strictly increasing"),
            Self::TooManyReadings => {
                write!(f, "more than {} readings in one frame", crate::MAX_READINGS)
            }
        }
    }
}

/// Why a topic or identifier was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum TopicError {
    /// An identifier is empty or longer than [`crate::MAX_ID_LEN`].
    IdLength,
    /// An identifier has a character outside `a-z`, `0-9`, `-`, or starts or ends with `-`.
    IdCharacter,
    /// The topic does not follow `vigie/v1/<tenant>/<device>/<channel>`.
    Shape,
    /// The topic's protocol root or version is not this one.
    Root,
    /// The last topic level is neither `up` nor `status`.
    Channel,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdLength => write!(
                f,
                "identifier must be 1 to {} characters",
                crate::MAX_ID_LEN
            ),
            Self::IdCharacter => {
                f.write_str("identifier may use a-z, 0-9 and '-' (not first or last)")
            }
            Self::Shape => f.write_str("topic is not vigie/v1/<tenant>/<device>/<channel>"),
            Self::Root => f.write_str("topic root is not vigie/v1"),
            Self::Channel => f.write_str("topic channel is neither 'up' nor 'status'"),
        }
    }
}

// `core::error::Error` is what `std::error::Error` re-exports: no `std` feature needed here.
impl core::error::Error for DecodeError {}
impl core::error::Error for EncodeError {}
impl core::error::Error for TopicError {}
