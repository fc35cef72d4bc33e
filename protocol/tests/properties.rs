//! Property tests: round trip, hostile bytes, bit flips, wrong identity.
#![allow(clippy::unwrap_used)]

mod common;

use proptest::prelude::*;
use protocol::{
    DecodeError, DeviceKey, Field, Identity, Kind, MAX_FRAME_LEN, Reading, Values, open, peek, seal,
};

fn field(min: i64, max: i64) -> impl Strategy<Value = Field<i64>> {
    prop_oneof![
        1 => Just(Field::Absent),
        1 => Just(Field::Fault),
        4 => (min..=max).prop_map(Field::Value),
    ]
}

fn values(kind: Kind) -> impl Strategy<Value = Values> {
    let fields: Vec<_> = kind.fields().iter().map(|s| field(s.min, s.max)).collect();
    fields
        .prop_map(move |fields| {
            let mut v = Values::empty(kind);
            for (i, f) in fields.into_iter().enumerate() {
                v.set_raw(i, f).unwrap();
            }
            v
        })
        .prop_filter("a reading has at least one field", |v| {
            v.fields().any(|(_, f)| f != Field::Absent)
        })
}

fn readings() -> impl Strategy<Value = Vec<Reading>> {
    prop_oneof![
        Just(Kind::AirQuality),
        Just(Kind::WasteBin),
        Just(Kind::DeviceStatus)
    ]
    .prop_flat_map(|kind| {
        (
            0u32..=u32::MAX - 20 * 100_000,
            prop::collection::vec((1u32..100_000, values(kind)), 1..20),
        )
    })
    .prop_map(|(start, items)| {
        let mut time = start;
        items
            .into_iter()
            .map(|(delta, values)| {
                time += delta;
                Reading { time, values }
            })
            .collect()
    })
}

fn sealed(readings: &[Reading], counter: u32, key: &DeviceKey) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    seal(&mut buf, readings, counter, key, common::who())
        .unwrap()
        .to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(readings in readings(), counter: u32, key: [u8; 16], epoch: u32) {
        let key = DeviceKey::new(key, epoch);
        let frame = sealed(&readings, counter, &key);
        let opened = open(&frame, &key, common::who()).unwrap();
        prop_assert_eq!(opened.header.counter, counter);
        prop_assert_eq!(opened.header.kind, readings[0].values.kind());
        prop_assert_eq!(&opened.readings[..], &readings[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
        let _ = peek(&bytes);
        prop_assert!(open(&bytes, &common::key(), common::who()).is_err());
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_are_rejected(
        kind in 1u8..=3, body in prop::collection::vec(any::<u8>(), 0..200)
    ) {
        let mut frame = vec![0x10 | kind, 0, 0, 0, 42];
        frame.extend_from_slice(&body);
        prop_assert!(open(&frame, &common::key(), common::who()).is_err());
    }

    #[test]
    fn any_single_bit_flip_is_rejected(readings in readings(), bit in any::<prop::sample::Index>()) {
        let key = common::key();
        let mut frame = sealed(&readings, 7, &key);
        let bit = bit.index(frame.len() * 8);
        frame[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open(&frame, &key, common::who()).is_err(), "flip of bit {}", bit);
    }

    #[test]
    fn truncation_and_trailing_bytes_are_rejected(readings in readings(), extra: u8, cut in 1usize..8) {
        let key = common::key();
        let frame = sealed(&readings, 7, &key);
        let mut longer = frame.clone();
        longer.push(extra);
        prop_assert!(open(&longer, &key, common::who()).is_err());
        prop_assert!(open(&frame[..frame.len() - cut], &key, common::who()).is_err());
    }
}

#[test]
fn identity_epoch_and_key_are_all_bound() {
    let key = common::key();
    let frame = sealed(&common::series(common::aq6(), 1), 42, &key);
    assert!(open(&frame, &key, common::who()).is_ok());
    let other_device = Identity::new("lyon", "aq-0002").unwrap();
    let other_tenant = Identity::new("lyon2", "aq-0001").unwrap();
    // Same bytes split differently between tenant and device must not verify either.
    let shifted = Identity::new("lyo", "naq-0001").unwrap();
    for who in [other_device, other_tenant, shifted] {
        assert_eq!(
            open(&frame, &key, who),
            Err(DecodeError::Authentication),
            "{who:?}"
        );
    }
    let next_epoch = DeviceKey::new(common::KEY, 2);
    assert_eq!(
        open(&frame, &next_epoch, common::who()),
        Err(DecodeError::Authentication)
    );
    let other_key = DeviceKey::new([9; 16], 1);
    assert_eq!(
        open(&frame, &other_key, common::who()),
        Err(DecodeError::Authentication)
    );
}

#[test]
fn header_errors_are_typed() {
    let frame = sealed(&common::series(common::aq6(), 1), 42, &common::key());
    let mut v2 = frame.clone();
    v2[0] = 0x21;
    assert_eq!(peek(&v2), Err(DecodeError::UnsupportedVersion(2)));
    let mut k9 = frame.clone();
    k9[0] = 0x19;
    assert_eq!(peek(&k9), Err(DecodeError::UnknownKind(9)));
    assert_eq!(peek(&frame[..10]), Err(DecodeError::TooShort));
    assert_eq!(peek(&[0x11; MAX_FRAME_LEN + 1]), Err(DecodeError::TooLong));
    let h = peek(&frame).unwrap();
    assert_eq!((h.kind, h.counter), (Kind::AirQuality, 42));
}
