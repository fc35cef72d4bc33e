//! Body codec of one reading: presence bitmap, optional fault map, then the present
//! values as varints (zigzag for signed fields), in field-table order. See SPEC.md §4.

use crate::error::{DecodeError, EncodeError};
use crate::reading::{Field, Kind, Values};
use crate::varint::{Reader, Writer};

/// Writes the fields of `values`.
pub(crate) fn encode_values(w: &mut Writer<'_>, values: &Values) -> Result<(), EncodeError> {
    let specs = values.kind().fields();
    let (mut present, mut faults) = (0u32, 0u32);
    for (i, (spec, field)) in values.fields().enumerate() {
        match field {
            Field::Value(raw) if !spec.in_range(raw) => {
                return Err(EncodeError::OutOfRange { field: i as u8 });
            }
            Field::Value(_) => present |= 1 << i,
            Field::Fault => faults |= 1 << i,
            Field::Absent => {}
        }
    }
    if present | faults == 0 {
        return Err(EncodeError::EmptyReading);
    }
    let fault_flag = 1u32 << specs.len();
    if faults == 0 {
        w.varint(present)?;
    } else {
        w.varint(present | fault_flag)?;
        w.varint(faults)?;
    }
    for (spec, field) in values.fields() {
        if let Field::Value(raw) = field {
            // In range, so the casts below are exact.
            w.varint(spec.to_wire(raw))?;
        }
    }
    Ok(())
}

/// Reads the fields of one reading of `kind`.
pub(crate) fn decode_values(r: &mut Reader<'_>, kind: Kind) -> Result<Values, DecodeError> {
    let specs = kind.fields();
    let n = specs.len();
    let all_fields = (1u32 << n) - 1;
    let map = r.varint()?;
    if map >> (n + 1) != 0 {
        return Err(DecodeError::UnknownField);
    }
    let present = map & all_fields;
    let faults = if map >> n & 1 == 1 {
        let faults = r.varint()?;
        if faults == 0 || faults & !all_fields != 0 || faults & present != 0 {
            return Err(DecodeError::BadFaultMap);
        }
        faults
    } else {
        0
    };
    if present | faults == 0 {
        return Err(DecodeError::EmptyReading);
    }
    let mut values = Values::empty(kind);
    for (i, spec) in specs.iter().enumerate() {
        if present >> i & 1 == 1 {
            let wire = r.varint()?;
            let raw = spec.from_wire(wire);
            if !spec.in_range(raw) {
                return Err(DecodeError::OutOfRange { field: i as u8 });
            }
            values.set(i, Field::Value(raw));
        } else if faults >> i & 1 == 1 {
            values.set(i, Field::Fault);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::AirQuality;

    fn encode(values: &Values) -> Result<([u8; 64], usize), EncodeError> {
        let mut buf = [0u8; 64];
        let mut w = Writer::at(&mut buf, 0);
        encode_values(&mut w, values)?;
        let n = w.pos();
        Ok((buf, n))
    }

    #[test]
    fn typical_air_quality_body_is_eleven_bytes() {
        let v = Values::AirQuality(AirQuality {
            pm1: Field::Value(82),
            pm25: Field::Value(123),
            pm10: Field::Value(201),
            temperature: Field::Value(214),
            relative_humidity: Field::Value(555),
            pressure: Field::Value(10_132),
            ..AirQuality::default()
        });
        let (buf, n) = encode(&v).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0x3f, 0x52, 0x7b, 0xc9, 0x01, 0xac, 0x03, 0xab, 0x04, 0x94, 0x4f
            ]
        );
        let mut r = Reader::new(&buf[..n]);
        assert_eq!(decode_values(&mut r, Kind::AirQuality).unwrap(), v);
        assert!(r.is_empty());
    }

    #[test]
    fn faults_travel_in_their_own_map() {
        let v = Values::AirQuality(AirQuality {
            pm25: Field::Fault,
            temperature: Field::Value(-15),
            ..AirQuality::default()
        });
        let (buf, n) = encode(&v).unwrap();
        // presence bit 3 + fault-map flag bit 10, fault map bit 1, zigzag(-15) = 29.
        assert_eq!(&buf[..n], &[0x88, 0x08, 0x02, 0x1d]);
        assert_eq!(
            decode_values(&mut Reader::new(&buf[..n]), Kind::AirQuality).unwrap(),
            v
        );
    }

    #[test]
    fn rejects_bad_maps_and_ranges() {
        let k = Kind::AirQuality;
        let cases: &[(&[u8], DecodeError)] = &[
            (&[0x00], DecodeError::EmptyReading),
            (&[0x80, 0x10], DecodeError::UnknownField),
            (&[0x81, 0x08, 0x00], DecodeError::BadFaultMap),
            (&[0x81, 0x08, 0x01], DecodeError::BadFaultMap),
            (&[0x80, 0x08, 0x80, 0x08], DecodeError::BadFaultMap),
            (&[0x01, 0x91, 0x4e], DecodeError::OutOfRange { field: 0 }),
            (&[0x20, 0x01], DecodeError::OutOfRange { field: 5 }),
            (&[0x03, 0x01], DecodeError::Truncated),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode_values(&mut Reader::new(bytes), k),
                Err(*want),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn encoder_checks_ranges_and_emptiness() {
        let too_hot = Values::AirQuality(AirQuality {
            temperature: Field::Value(i16::MAX),
            ..AirQuality::default()
        });
        assert_eq!(
            encode(&too_hot).err(),
            Some(EncodeError::OutOfRange { field: 3 })
        );
        assert_eq!(
            encode(&Values::empty(Kind::WasteBin)).err(),
            Some(EncodeError::EmptyReading)
        );
    }
}
