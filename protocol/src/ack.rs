//! The downlinks (SPEC.md §12): a gateway tells one device which of its frames it holds
//! durably, so the device may forget them ([`Ack`]), and, when a commit refused some of
//! them, which ones and why ([`Verdicts`]).
//!
//! ```text
//! 0x1A | id (8 B, clear) | base u32 BE, settled u64 BE (encrypted) | tag (8 B)
//! 0x1B | id (8 B, clear) | base u32 BE, settled u64 BE, refused u64 BE, resume u32 BE | tag
//! ```
//! Sealed with the device's own key under a nonce of their own domain (direction byte
//! 0x02 and 0x03), bound to the device's tenant and id: neither can verify as an uplink
//! frame, as the other downlink, nor as another device's. Each only states facts that
//! stay true (those frames are held; those were refused; the counter was behind), so a
//! replayed one changes nothing that is not waiting: the device keeps no replay state
//! for them.

use crate::crypto::{self, DIRECTION_ACK, DIRECTION_VERDICTS, DeviceKey};
use crate::error::DecodeError;
use crate::limits::{TAG_LEN, VERSION};
use crate::topic::Identity;

/// Low nibble of an acknowledgement's header byte (no uplink kind uses it).
pub const ACK_KIND: u8 = 0x0a;
/// Low nibble of a verdict downlink's header byte.
pub const VERDICTS_KIND: u8 = 0x0b;
/// Clear part: header byte and the 8-byte id.
const CLEAR_LEN: usize = 9;
/// Encrypted part of an acknowledgement: base counter and bitmap.
const ACK_BODY: usize = 12;
/// Encrypted part of a verdict downlink: base, two bitmaps, resume counter.
const VERDICTS_BODY: usize = 24;
/// Every acknowledgement is this long.
pub const ACK_LEN: usize = CLEAR_LEN + ACK_BODY + TAG_LEN;
/// Every verdict downlink is this long.
pub const VERDICTS_LEN: usize = CLEAR_LEN + VERDICTS_BODY + TAG_LEN;
/// Counters one acknowledgement can cover, from its base.
pub const ACK_SPAN: u32 = 64;

/// Bit of `counter` in a bitmap starting at `base`, if it has one.
fn bit(base: u32, counter: u32) -> Option<u32> {
    counter.checked_sub(base).filter(|d| *d < ACK_SPAN)
}

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
        let Some(d) = bit(self.base, counter) else {
            return false;
        };
        self.settled |= 1 << d;
        true
    }

    /// Whether the acknowledgement covers `counter`.
    pub fn covers(&self, counter: u32) -> bool {
        bit(self.base, counter).is_some_and(|d| self.settled >> d & 1 == 1)
    }

    /// Seals the acknowledgement for `who` under `key`. `id` must be unique per
    /// downlink under this key (gateways draw it at random: 64 bits).
    pub fn seal(&self, id: [u8; 8], key: &DeviceKey, who: Identity<'_>) -> [u8; ACK_LEN] {
        let mut out = [0u8; ACK_LEN];
        out[CLEAR_LEN..CLEAR_LEN + 4].copy_from_slice(&self.base.to_be_bytes());
        out[CLEAR_LEN + 4..CLEAR_LEN + ACK_BODY].copy_from_slice(&self.settled.to_be_bytes());
        seal_downlink(&mut out, ACK_KIND, DIRECTION_ACK, id, key, who);
        out
    }

    /// Verifies an acknowledgement for `who` under `key`, then decodes it.
    pub fn open(bytes: &[u8], key: &DeviceKey, who: Identity<'_>) -> Result<Self, DecodeError> {
        let mut plain = [0u8; ACK_BODY];
        open_downlink(bytes, ACK_KIND, DIRECTION_ACK, key, who, &mut plain)?;
        Ok(Self {
            base: be32(&plain[..4]),
            settled: be64(&plain[4..12]),
        })
    }
}

/// What one commit decided for a device's frames when it refused some (SPEC §12.1). For
/// counter `base + i`, bit `i` of `settled` and of `refused`:
///
/// | settled | refused | the frame |
/// |---|---|---|
/// | 1 | 0 | is held (stored, or a duplicate of a stored one): forget it |
/// | 1 | 1 | was refused for good (kept in the gateway's quarantine): forget it |
/// | 0 | 1 | was sealed under a counter the gateway had already seen (the device's counter went back): re-seal it under a counter at or above `resume` and send it again |
/// | 0 | 0 | nothing said |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Verdicts {
    /// Counter of bit 0.
    pub base: u32,
    /// As an acknowledgement's bitmap.
    pub settled: u64,
    /// Refused counters (see the table).
    pub refused: u64,
    /// The lowest counter the device may use from now on (0 when no frame is to be
    /// re-sealed).
    pub resume: u32,
}

impl Verdicts {
    /// The acknowledgement part: what the device may forget.
    pub fn ack(&self) -> Ack {
        Ack {
            base: self.base,
            settled: self.settled,
        }
    }

    /// Frames refused for good, as an acknowledgement of them alone.
    pub fn refused_for_good(&self) -> Ack {
        Ack {
            base: self.base,
            settled: self.settled & self.refused,
        }
    }

    /// Frames to re-seal, as an acknowledgement of them alone (they are forgotten once
    /// their re-sealed copies are kept).
    pub fn to_reseal(&self) -> Ack {
        Ack {
            base: self.base,
            settled: self.refused & !self.settled,
        }
    }

    /// Marks `counter` settled (`refused`: for good); false if it is outside the span.
    pub fn settle(&mut self, counter: u32, refused: bool) -> bool {
        let Some(d) = bit(self.base, counter) else {
            return false;
        };
        self.settled |= 1 << d;
        if refused {
            self.refused |= 1 << d;
        }
        true
    }

    /// Marks `counter` to be re-sealed (and not settled, whatever was said of it before);
    /// false if it is outside the span.
    pub fn reseal(&mut self, counter: u32) -> bool {
        let Some(d) = bit(self.base, counter) else {
            return false;
        };
        self.refused |= 1 << d;
        self.settled &= !(1 << d);
        true
    }

    /// Seals the verdicts for `who` under `key` (`id` as for [`Ack::seal`]).
    pub fn seal(&self, id: [u8; 8], key: &DeviceKey, who: Identity<'_>) -> [u8; VERDICTS_LEN] {
        let mut out = [0u8; VERDICTS_LEN];
        let body = &mut out[CLEAR_LEN..CLEAR_LEN + VERDICTS_BODY];
        body[..4].copy_from_slice(&self.base.to_be_bytes());
        body[4..12].copy_from_slice(&self.settled.to_be_bytes());
        body[12..20].copy_from_slice(&self.refused.to_be_bytes());
        body[20..].copy_from_slice(&self.resume.to_be_bytes());
        seal_downlink(&mut out, VERDICTS_KIND, DIRECTION_VERDICTS, id, key, who);
        out
    }

    /// Verifies a verdict downlink for `who` under `key`, then decodes it.
    pub fn open(bytes: &[u8], key: &DeviceKey, who: Identity<'_>) -> Result<Self, DecodeError> {
        let mut plain = [0u8; VERDICTS_BODY];
        open_downlink(
            bytes,
            VERDICTS_KIND,
            DIRECTION_VERDICTS,
            key,
            who,
            &mut plain,
        )?;
        Ok(Self {
            base: be32(&plain[..4]),
            settled: be64(&plain[4..12]),
            refused: be64(&plain[12..20]),
            resume: be32(&plain[20..]),
        })
    }
}

/// Either downlink, as a device receives them on its acknowledgement topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Downlink {
    /// An acknowledgement (SPEC §12).
    Ack(Ack),
    /// A verdict downlink (SPEC §12.1).
    Verdicts(Verdicts),
}

impl Downlink {
    /// Verifies and decodes whichever downlink `bytes` is (by its header's kind).
    pub fn open(bytes: &[u8], key: &DeviceKey, who: Identity<'_>) -> Result<Self, DecodeError> {
        match bytes.first().map(|b| b & 0x0f) {
            Some(VERDICTS_KIND) => Verdicts::open(bytes, key, who).map(Self::Verdicts),
            _ => Ack::open(bytes, key, who).map(Self::Ack),
        }
    }
}

/// Writes the clear part of `out` (header, id), encrypts its body in place and appends
/// the tag.
fn seal_downlink(
    out: &mut [u8],
    kind: u8,
    direction: u8,
    id: [u8; 8],
    key: &DeviceKey,
    who: Identity<'_>,
) {
    out[0] = VERSION << 4 | kind;
    out[1..CLEAR_LEN].copy_from_slice(&id);
    let body_end = out.len() - TAG_LEN;
    let (clear, rest) = out.split_at_mut(CLEAR_LEN);
    let nonce = crypto::downlink_nonce(key.epoch(), &id, direction);
    let tag = crypto::seal_with(key, nonce, clear, who, &mut rest[..body_end - CLEAR_LEN]);
    rest[body_end - CLEAR_LEN..].copy_from_slice(&tag);
}

/// Checks the length, version and kind, verifies the tag and decrypts into `plain` (whose
/// length is the body's).
fn open_downlink(
    bytes: &[u8],
    kind: u8,
    direction: u8,
    key: &DeviceKey,
    who: Identity<'_>,
    plain: &mut [u8],
) -> Result<(), DecodeError> {
    let len = CLEAR_LEN + plain.len() + TAG_LEN;
    if bytes.len() < len {
        return Err(DecodeError::TooShort);
    }
    if bytes.len() > len {
        return Err(DecodeError::TooLong);
    }
    let version = bytes[0] >> 4;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes[0] & 0x0f != kind {
        return Err(DecodeError::UnknownKind(bytes[0] & 0x0f));
    }
    let (clear, rest) = bytes.split_at(CLEAR_LEN);
    let (ciphertext, tag) = rest.split_at(plain.len());
    let mut id = [0u8; 8];
    id.copy_from_slice(&clear[1..]);
    let mut tag_bytes = [0u8; TAG_LEN];
    tag_bytes.copy_from_slice(tag);
    let nonce = crypto::downlink_nonce(key.epoch(), &id, direction);
    if !crypto::open_with(key, nonce, clear, who, ciphertext, &tag_bytes, plain) {
        return Err(DecodeError::Authentication);
    }
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
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
    fn verdicts_round_trip_and_never_open_as_an_ack_or_the_reverse() {
        let mut v = Verdicts {
            base: 100,
            resume: 5_000,
            ..Verdicts::default()
        };
        assert!(v.settle(100, false) && v.settle(101, true) && v.reseal(102));
        assert!(!v.settle(164, false) && !v.reseal(99));
        let sealed = v.seal([3; 8], &key(), who());
        assert_eq!(sealed.len(), VERDICTS_LEN);
        assert_eq!(Verdicts::open(&sealed, &key(), who()), Ok(v));
        assert_eq!(
            Downlink::open(&sealed, &key(), who()),
            Ok(Downlink::Verdicts(v))
        );
        let (ack, gone, again) = (v.ack(), v.refused_for_good(), v.to_reseal());
        assert!(ack.covers(100) && ack.covers(101) && !ack.covers(102));
        assert!(!gone.covers(100) && gone.covers(101) && !gone.covers(102));
        assert!(!again.covers(100) && !again.covers(101) && again.covers(102));
        // Same id, same key: the two downlinks' nonces differ in byte 8, and neither
        // kind opens as the other, even with the header byte swapped.
        let a = Ack::new(7).seal([3; 8], &key(), who());
        assert_eq!(
            Downlink::open(&a, &key(), who()),
            Ok(Downlink::Ack(Ack::new(7)))
        );
        assert!(Ack::open(&sealed, &key(), who()).is_err());
        assert!(Verdicts::open(&a, &key(), who()).is_err());
        let mut swapped = sealed;
        swapped[0] = VERSION << 4 | ACK_KIND;
        assert!(Downlink::open(&swapped, &key(), who()).is_err());
        for i in 1..VERDICTS_LEN {
            let mut bad = sealed;
            bad[i] ^= 0x04;
            assert_eq!(
                Verdicts::open(&bad, &key(), who()),
                Err(DecodeError::Authentication)
            );
        }
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
