//! The size budget of DESIGN.md / SPEC.md §8.
#![allow(clippy::unwrap_used)]

mod common;

#[test]
fn typical_air_quality_reading_fits_28_bytes() {
    let (_, readings) = common::size_cases()
        .into_iter()
        .find(|(n, _)| *n == "aq6")
        .unwrap();
    let len = common::sealed_len(&readings);
    assert!(len <= 28, "aq6 takes {len} bytes");
}

#[test]
fn every_single_reading_frame_fits_lorawan_dr0() {
    let cases = common::size_cases();
    let singles: Vec<_> = cases
        .iter()
        .filter(|(n, _)| !n.starts_with("batch"))
        .collect();
    assert!(singles.len() >= 6, "typical and largest case of every kind");
    for (name, readings) in singles {
        assert_eq!(readings.len(), 1, "{name}");
        let len = common::sealed_len(readings);
        assert!(len <= 51, "{name} takes {len} bytes");
    }
}

#[test]
fn largest_values_are_the_largest_encodings() {
    // The 'all-largest' cases must dominate every other in-range choice per field,
    // otherwise the 51-byte check above proves less than it claims.
    use protocol::varint::varint_len;
    for kind in protocol::Kind::ALL {
        let largest = common::largest(kind);
        for (i, spec) in kind.fields().iter().enumerate() {
            let wire = |raw: i64| spec.to_wire(raw);
            let chosen = varint_len(wire(largest.get(i).value().unwrap()));
            for raw in [spec.min, spec.max, 0.clamp(spec.min, spec.max)] {
                assert!(varint_len(wire(raw)) <= chosen, "{}", spec.name);
            }
        }
    }
}
