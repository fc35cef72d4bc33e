//! Why a frame was rejected: the code is a metrics label and is stored in quarantine.

use protocol::DecodeError;

/// Rejection reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The topic is not a device uplink topic.
    Topic,
    /// No such device in the registry.
    UnknownDevice,
    /// The device is revoked.
    Revoked,
    /// A status message whose payload is neither `online` nor `offline`.
    BadStatus,
    /// The tag does not verify (forged, altered, wrong key, or sent on another device's topic).
    Authentication,
    /// The frame cannot be decoded (before or after authentication).
    Malformed(DecodeError),
    /// An observation kind the device is not registered for.
    KindMismatch,
    /// A counter already accepted, with other content: the device reused a counter.
    CounterReused,
    /// A reading is further in the future than the allowed clock skew: held, never
    /// refused (SPEC §13.3): the device keeps the frame and resends it.
    FutureTimestamp,
    /// A reading is older than the configured horizon: refused when the host clock is
    /// synchronised, else held (SPEC §13.3).
    StaleTimestamp,
    /// A reading would share its stored point (second + counter mod 1000) with a reading
    /// of another block of 1000 counters: the device's clock went back (SPEC §13.2).
    TimeCollision,
    /// The database refused the line (400/422) after the batch was split down to it.
    DatabaseRejected,
    /// The database answered 2xx and then dropped rows (VictoriaMetrics outside its
    /// retention or beyond its series limits): the lines written meanwhile, kept.
    DatabaseDiscarded,
    /// Bytes of the durable buffer that are not a valid record (disk corruption).
    BufferCorrupt,
}

impl Reason {
    /// Whether the frame's tag had verified when this verdict fell: its counter is then
    /// authentic and the verdict final, so the device is told the frame is settled (SPEC
    /// §12). Never for a frame whose origin is unproven.
    pub fn after_authentication(&self) -> bool {
        match self {
            Self::Topic
            | Self::UnknownDevice
            | Self::Revoked
            | Self::BadStatus
            | Self::Authentication
            | Self::DatabaseRejected
            | Self::DatabaseDiscarded
            | Self::BufferCorrupt => false,
            // Errors of the clear header come before the tag check.
            Self::Malformed(e) => !matches!(
                e,
                DecodeError::TooShort
                    | DecodeError::TooLong
                    | DecodeError::UnsupportedVersion(_)
                    | DecodeError::UnknownKind(_)
                    | DecodeError::Authentication
            ),
            Self::KindMismatch
            | Self::CounterReused
            | Self::FutureTimestamp
            | Self::StaleTimestamp
            | Self::TimeCollision => true,
        }
    }

    /// Whether the device is told the frame is settled (SPEC §12): a final verdict after
    /// the tag verified. A reused counter is not: the device re-seals that frame under a
    /// fresh counter and sends it again (§12.1), so its readings are stored after all.
    pub fn settles(&self) -> bool {
        self.after_authentication() && *self != Self::CounterReused
    }

    /// Every reason code, for metrics that list zero counts too.
    pub const CODES: [&'static str; 14] = [
        "topic",
        "unknown_device",
        "revoked",
        "bad_status",
        "authentication",
        "malformed",
        "kind_mismatch",
        "counter_reused",
        "future_timestamp",
        "stale_timestamp",
        "time_collision",
        "database_rejected",
        "database_discarded",
        "buffer_corrupt",
    ];

    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::UnknownDevice => "unknown_device",
            Self::Revoked => "revoked",
            Self::BadStatus => "bad_status",
            Self::Authentication => "authentication",
            Self::Malformed(_) => "malformed",
            Self::KindMismatch => "kind_mismatch",
            Self::CounterReused => "counter_reused",
            Self::FutureTimestamp => "future_timestamp",
            Self::StaleTimestamp => "stale_timestamp",
            Self::TimeCollision => "time_collision",
            Self::DatabaseRejected => "database_rejected",
            Self::DatabaseDiscarded => "database_discarded",
            Self::BufferCorrupt => "buffer_corrupt",
        }
    }

    /// What a technician does about a rejection with this code (`devices watch`).
    pub fn hint(code: &str) -> &'static str {
        match code {
            "topic" => "not a device uplink topic: check the blob's tenant and id",
            "unknown_device" => "not in the registry: enrol it with `devices add`",
            "revoked" => "the device is revoked: re-key it with `devices rotate`",
            "bad_status" => "a status message other than `online` or `offline`: not Vigie firmware",
            "authentication" => {
                "the tag does not verify: flash the device's current blob (wrong key or epoch) or check it publishes on its own topic"
            }
            "malformed" => {
                "the frame cannot be decoded: firmware and gateway disagree on the format"
            }
            "kind_mismatch" => "a kind of reading the device is not registered for: check --kind",
            "counter_reused" => {
                "a counter already used (or far behind): the device lost its counter store; it is told where to resume and re-seals the frame"
            }
            "future_timestamp" => {
                "a reading is in the future: held until it is not (the device resends it); the device's clock is ahead, or the gateway's behind"
            }
            "stale_timestamp" => {
                "a reading is older than validation.max_age: the device's clock is wrong or its queue very old"
            }
            "time_collision" => {
                "a reading at a second this device already used 1000 counters earlier: its clock went back; the quarantine keeps the frame"
            }
            _ => "",
        }
    }

    /// Code plus detail, for quarantine listings and logs.
    pub fn detail(&self) -> String {
        match self {
            Self::Malformed(e) => format!("malformed: {} ({e})", e.code()),
            other => other.code().to_string(),
        }
    }
}
