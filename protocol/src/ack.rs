//! The acknowledgement downlink (SPEC.md §12): a gateway tells one device which of its
//! frames it holds durably, so the device may forget them.
//!
//! ```text
//! 0x1A | id (8 B, clear) | base counter u32 BE, settled bitmap u64 BE (encrypted) | tag (8 B)
//! ```
//! Sealed with the device's own key under a nonce of its own domain (direction byte
//! 0x02), bound to the device's tenant and id: it can never verify as an uplink frame, nor
//! as another device's acknowledgement. An acknowledgement only ever states a fact that
//! stays true (those frames are held), so a replayed one clears nothing that is not held:
//! the device keeps no replay state for them.

use crate::crypto::{self, DeviceKey};
use crate::error::DecodeError;
use crate::limits::{TAG_LEN, VERSION};
use crate::topic::Identity;

/// Low nibble of an acknowledgement's header byte (no uplink kind uses it).
pub const ACK_KIND: u8 = 0x0a;
/// Clear part: header byte and the 8-byte id.
const CLEAR_LEN: usize = 9;
/// Encrypted part: base counter and bitmap.
const BODY_LEN: usize = 12;
/// Every acknowledgement is this long.
pub const ACK_LEN: usize = CLEAR_LEN + BODY_LEN + TAG_LEN;
/// Counters one acknowledgement can cover, from its base.
pub const ACK_SPAN: u32 = 64;

/// Which counters of one device a gateway holds durably: bit `i` of `settled` (least
/// significant first) stands for counter `base + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ack {
    /// Counter of bit 0.
    pub base: u32,
    /// Settled counters: stored, or judged for good (quarantined).
    pub settled: u64,
}

impl Ack {
    /// An acknowledgement of `base` alone.
    pub const fn new(base: u32) -> Self {
        Self { base, settled: 1 }
    }

    /// Marks `counter` settled; false if it is outside `base .. base + 64`.
    pub fn set(&mut self, counter: u32) -> bool {
        match counter.checked_sub(self.base) {
            Some(d) if d < ACK_SPAN => {
                self.settled |= 1 << d;
                true
            }
            _ => false,
        }
    }

    /// Whether the acknowledgement covers `counter`.
    pub fn covers(&self, counter: u32) -> bool {
        counter
            .checked_sub(self.base)
            .is_some_and(|d| d < ACK_SPAN && self.settled >> d & 1 == 1)
    }

    /// Seals the acknowledgement for `who` under `key`. `id` must be unique per
    /// acknowledgement under this key (gateways draw it at random: 64 bits).
    pub fn seal(&self, id: [u8; 8], key: &DeviceKey, who: Identity<'_>) -> [u8; ACK_LEN] {
        let mut out = [0u8; ACK_LEN];
        out[0] = VERSION << 4 | ACK_KIND;
        out[1..CLEAR_LEN].copy_from_slice(&id);
        out[CLEAR_LEN..CLEAR_LEN + 4].copy_from_slice(&self.base.to_be_bytes());
        out[CLEAR_LEN + 4..CLEAR_LEN + BODY_LEN].copy_from_slice(&self.settled.to_be_bytes());
        let (clear, rest) = out.split_at_mut(CLEAR_LEN);
        let nonce = crypto::ack_nonce(key.epoch(), &id);
        let tag = crypto::seal_with(key, nonce, clear, who, &mut rest[..BODY_LEN]);
        rest[BODY_LEN..].copy_from_slice(&tag);
        out
    }

    /// Verifies an acknowledgement for `who` under `key`, then decodes it.
    pub fn open(bytes: &[u8], key: &DeviceKey, who: Identity<'_>) -> Result<Self, DecodeError> {
        if bytes.len() < ACK_LEN {
            return Err(DecodeError::TooShort);
        }
        if bytes.len() > ACK_LEN {
            return Err(DecodeError::TooLong);
        }
        let version = bytes[0] >> 4;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if bytes[0] & 0x0f != ACK_KIND {
            return Err(DecodeError::UnknownKind(bytes[0] & 0x0f));
        }
        let (clear, rest) = bytes.split_at(CLEAR_LEN);
        let (ciphertext, tag) = rest.split_at(BODY_LEN);
        let mut id = [0u8; 8];
        id.copy_from_slice(&clear[1..]);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let mut plain = [0u8; BODY_LEN];
        let nonce = crypto::ack_nonce(key.epoch(), &id);
        if !crypto::open_with(key, nonce, clear, who, ciphertext, &tag_bytes, &mut plain) {
            return Err(DecodeError::Authentication);
        }
        let mut base = [0u8; 4];
        base.copy_from_slice(&plain[..4]);
        let mut settled = [0u8; 8];
        settled.copy_from_slice(&plain[4..]);
        Ok(Self {
            base: u32::from_be_bytes(base),
            settled: u64::from_be_bytes(settled),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_FRAME_LEN;
    use crate::reading::{AirQuality, Field, Reading, Values};

    fn key() -> DeviceKey {
        DeviceKey::new([9; 16], 3)
    }

    fn who() -> Identity<'static> {
        Identity::new("lyon", "aq-1").unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn set_and_covers() {
        let mut a = Ack::new(100);
        assert!(a.set(163) && !a.set(164) && !a.set(99));
        assert!(a.covers(100) && a.covers(163));
        assert!(!a.covers(101) && !a.covers(99) && !a.covers(164));
        // Near the top of the counter space nothing overflows.
        let top = Ack::new(u32::MAX - 1);
        assert!(top.covers(u32::MAX - 1) && !top.covers(u32::MAX) && !top.covers(0));
    }

    #[test]
    fn round_trip_and_binding() {
        let mut a = Ack::new(40);
        a.set(45);
        let sealed = a.seal([1, 2, 3, 4, 5, 6, 7, 8], &key(), who());
        assert_eq!(Ack::open(&sealed, &key(), who()), Ok(a));
        // Another device, another epoch, a flipped bit: nothing verifies.
        let other = Identity::new("lyon", "aq-2").unwrap_or_else(|_| unreachable!());
        assert_eq!(
            Ack::open(&sealed, &key(), other),
            Err(DecodeError::Authentication)
        );
        assert_eq!(
            Ack::open(&sealed, &DeviceKey::new([9; 16], 4), who()),
            Err(DecodeError::Authentication)
        );
        for i in 1..ACK_LEN {
            let mut bad = sealed;
            bad[i] ^= 0x10;
            assert_eq!(
                Ack::open(&bad, &key(), who()),
                Err(DecodeError::Authentication)
            );
        }
        assert_eq!(
            Ack::open(&sealed[..ACK_LEN - 1], &key(), who()),
            Err(DecodeError::TooShort)
        );
    }

    #[test]
    fn an_ack_never_verifies_as_an_uplink_and_back() {
        let sealed = Ack::new(7).seal([0; 8], &key(), who());
        assert!(crate::open(&sealed, &key(), who()).is_err());
        // An uplink frame of the same length is refused by kind before any key work.
        let reading = Reading {
            time: 1_800_000_000,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(1),
                ..AirQuality::default()
            }),
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = crate::seal(&mut buf, &[reading], 7, &key(), who()).unwrap_or_default();
        assert!(Ack::open(frame, &key(), who()).is_err());
    }
}
