//! Ascon-AEAD128 (NIST SP 800-232) with a 64-bit truncated tag: the per-device key, the
//! nonce derived from key epoch and frame counter, and the associated data that binds the
//! frame to the tenant and device of its MQTT topic. See SPEC.md §5.

use ascon_aead::aead::consts::U8;
use ascon_aead::aead::inout::InOutBuf;
use ascon_aead::aead::{AeadInOut, KeyInit};
use ascon_aead::{Key, Nonce, Tag, TruncatedAsconAead128};
use core::fmt;
use zeroize::Zeroize;

pub use crate::limits::TAG_LEN;
use crate::limits::{HEADER_LEN, MAX_ID_LEN};
use crate::topic::Identity;

/// Nonce byte 8: traffic direction, so the acknowledgement downlink under the same key
/// never reuses an uplink nonce.
const DIRECTION_UPLINK: u8 = 0x01;
/// Nonce byte 8 of an acknowledgement (SPEC §12).
pub(crate) const DIRECTION_ACK: u8 = 0x02;
/// Nonce byte 8 of a verdict downlink (SPEC §12.1).
pub(crate) const DIRECTION_VERDICTS: u8 = 0x03;

/// Longest clear part bound as associated data: an acknowledgement's header and id.
const CLEAR_MAX: usize = 9;
const _: () = assert!(HEADER_LEN <= CLEAR_MAX);
/// Longest associated data: clear part, then tenant and device with a length byte each.
const AD_MAX: usize = CLEAR_MAX + 2 * (1 + MAX_ID_LEN);

type Cipher = TruncatedAsconAead128<U8>;

/// A device's 128-bit key and its epoch (bumped on every re-keying).
///
/// `Debug` never shows the key, and the key is wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey {
    key: [u8; 16],
    epoch: u32,
}

impl DeviceKey {
    /// Wraps raw key bytes.
    pub const fn new(key: [u8; 16], epoch: u32) -> Self {
        Self { key, epoch }
    }

    /// The key epoch: part of every nonce, so a new epoch restarts the counter safely.
    pub const fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The raw key, for writing a provisioning blob or a registry file. Never log it.
    pub const fn expose_secret(&self) -> &[u8; 16] {
        &self.key
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("epoch", &self.epoch)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for DeviceKey {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "DeviceKey {{ epoch: {}, key: <redacted> }}", self.epoch)
    }
}

impl Drop for DeviceKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The 16-byte uplink nonce: epoch (BE), counter (BE), direction, seven zero bytes.
pub(crate) fn nonce(epoch: u32, counter: u32) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..4].copy_from_slice(&epoch.to_be_bytes());
    n[4..8].copy_from_slice(&counter.to_be_bytes());
    n[8] = DIRECTION_UPLINK;
    n
}

/// The 16-byte downlink nonce: epoch (BE), id bytes 0–3, the direction (0x02 for an
/// acknowledgement, 0x03 for a verdict downlink), id bytes 4–7, three zero bytes. Byte 8
/// tells it from every uplink nonce and the two downlinks from each other.
pub(crate) fn downlink_nonce(epoch: u32, id: &[u8; 8], direction: u8) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..4].copy_from_slice(&epoch.to_be_bytes());
    n[4..8].copy_from_slice(&id[..4]);
    n[8] = direction;
    n[9..13].copy_from_slice(&id[4..]);
    n
}

/// Associated data: the clear part, then `len(tenant) ‖ tenant ‖ len(device) ‖ device`.
struct AssociatedData {
    buf: [u8; AD_MAX],
    len: usize,
}

impl AssociatedData {
    /// `clear` is at most [`CLEAR_MAX`] bytes (callers pass fixed-size headers).
    fn new(clear: &[u8], who: Identity<'_>) -> Self {
        let mut ad = Self {
            buf: [0; AD_MAX],
            len: 0,
        };
        ad.push(clear);
        for id in [who.tenant, who.device] {
            // Ids are at most MAX_ID_LEN bytes, so the length fits a byte and the buffer.
            ad.push(&[id.as_str().len() as u8]);
            ad.push(id.as_str().as_bytes());
        }
        ad
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn counter_nonce(key: &DeviceKey, header: &[u8; HEADER_LEN]) -> [u8; 16] {
    let counter = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    nonce(key.epoch, counter)
}

/// Encrypts `body` in place under the uplink nonce of `header`; returns the truncated tag.
pub(crate) fn seal(
    key: &DeviceKey,
    header: &[u8; HEADER_LEN],
    who: Identity<'_>,
    body: &mut [u8],
) -> [u8; TAG_LEN] {
    seal_with(key, counter_nonce(key, header), header, who, body)
}

/// Verifies `tag` and decrypts `ciphertext` into `plaintext` (same length).
/// On failure `plaintext` holds zeros, never unauthenticated bytes.
pub(crate) fn open(
    key: &DeviceKey,
    header: &[u8; HEADER_LEN],
    who: Identity<'_>,
    ciphertext: &[u8],
    tag: &[u8; TAG_LEN],
    plaintext: &mut [u8],
) -> bool {
    let nonce = counter_nonce(key, header);
    open_with(key, nonce, header, who, ciphertext, tag, plaintext)
}

/// Encrypts `body` in place with an explicit nonce, `clear` and `who` as associated data.
pub(crate) fn seal_with(
    key: &DeviceKey,
    nonce: [u8; 16],
    clear: &[u8],
    who: Identity<'_>,
    body: &mut [u8],
) -> [u8; TAG_LEN] {
    let ad = AssociatedData::new(clear, who);
    let cipher = Cipher::new(&Key::<Cipher>::from(key.key));
    let mut tag = [0u8; TAG_LEN];
    // Ascon only fails for inputs longer than 2^64 bytes; the frame limit rules that out.
    if let Ok(t) =
        cipher.encrypt_inout_detached(&Nonce::<Cipher>::from(nonce), ad.as_bytes(), body.into())
    {
        tag.copy_from_slice(&t);
    }
    tag
}

/// [`open`] with an explicit nonce and clear part.
pub(crate) fn open_with(
    key: &DeviceKey,
    nonce: [u8; 16],
    clear: &[u8],
    who: Identity<'_>,
    ciphertext: &[u8],
    tag: &[u8; TAG_LEN],
    plaintext: &mut [u8],
) -> bool {
    let Ok(buf) = InOutBuf::new(ciphertext, plaintext) else {
        return false;
    };
    decrypt(key, nonce, clear, who, buf, tag)
}

/// [`open`] decrypting `body` where it is: the caller's buffer need not be zeroed first.
pub(crate) fn open_in_place(
    key: &DeviceKey,
    header: &[u8; HEADER_LEN],
    who: Identity<'_>,
    body: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    decrypt(
        key,
        counter_nonce(key, header),
        header,
        who,
        body.into(),
        tag,
    )
}

fn decrypt(
    key: &DeviceKey,
    nonce: [u8; 16],
    clear: &[u8],
    who: Identity<'_>,
    buf: InOutBuf<'_, '_, u8>,
    tag: &[u8; TAG_LEN],
) -> bool {
    let ad = AssociatedData::new(clear, who);
    let cipher = Cipher::new(&Key::<Cipher>::from(key.key));
    let tag = Tag::<Cipher>::from(*tag);
    cipher
        .decrypt_inout_detached(&Nonce::<Cipher>::from(nonce), ad.as_bytes(), buf, &tag)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn debug_hides_the_key() {
        let k = DeviceKey::new([0xab; 16], 7);
        let s = format!("{k:?}");
        assert!(s.contains("epoch: 7") && s.contains("redacted"), "{s}");
        assert!(
            !s.to_lowercase().contains("ab, ") && !s.contains("171"),
            "{s}"
        );
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(
            nonce(0x0102_0304, 0x0a0b_0c0d),
            [1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            downlink_nonce(
                0x0102_0304,
                &[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7],
                DIRECTION_ACK
            ),
            [
                1, 2, 3, 4, 0xa0, 0xa1, 0xa2, 0xa3, 2, 0xa4, 0xa5, 0xa6, 0xa7, 0, 0, 0
            ]
        );
    }
}
