//! Provisioning blob (SPEC.md §11): a board's identity, key and settings, written by the
//! gateway's `devices add` and read by the firmware from a fixed flash address. Checksummed,
//! so a blank or half-written flash page is refused instead of run unauthenticated.

use core::fmt;
use heapless::String;

use crate::crypto::DeviceKey;
use crate::limits::MAX_ID_LEN;
use crate::reading::Kind;
use crate::topic::{Id, Identity};

/// First bytes of a blob without a previous key: "VGP" and the blob format version 2.
pub const MAGIC: [u8; 4] = *b"VGP2";
/// First bytes of a blob with the key the board had before (`devices rotate`): "VGP3".
pub const MAGIC_ROTATED: [u8; 4] = *b"VGP3";
/// First bytes of a blob with a report interval (and a previous key, epoch 0 for none):
/// "VGP4". A blob is written in the oldest format that carries its settings, so a board
/// whose firmware predates the report interval still reads every blob that does not set
/// one.
pub const MAGIC_REPORTS: [u8; 4] = *b"VGP4";
/// Longest broker host name.
pub const MAX_HOST_LEN: usize = 64;
/// Longest broker password.
pub const MAX_PASSWORD_LEN: usize = 32;
/// Largest blob: magic, ids, fixed fields, host, password, TLS settings, CRC.
pub const MAX_BLOB_LEN: usize = 4
    + 2 * (1 + MAX_ID_LEN)
    + 1
    + 4
    + 16
    + 2 * 5
    + 1
    + MAX_HOST_LEN
    + 1
    + MAX_PASSWORD_LEN
    + 1
    + 32
    + 4
    + 16
    + 4;

/// Why a blob was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ProvisionError {
    /// No `VGP2`, `VGP3` or `VGP4` magic: blank flash or another format.
    Magic,
    /// Shorter than its fields say.
    Truncated,
    /// CRC-32 mismatch: half-written or corrupted.
    Checksum,
    /// Tenant or device identifier invalid.
    Id,
    /// Unknown device kind.
    Kind,
    /// Host name empty, too long or not ASCII.
    Host,
    /// Broker password empty, too long or not printable ASCII.
    Password,
    /// Unknown transport security mode.
    Tls,
    /// The output buffer is too small.
    BufferFull,
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Magic => "no provisioning blob (no VGP magic)",
            Self::Truncated => "provisioning blob truncated",
            Self::Checksum => "provisioning blob checksum mismatch",
            Self::Id => "provisioning blob has an invalid tenant or device id",
            Self::Kind => "provisioning blob has an unknown device kind",
            Self::Host => "provisioning blob has an invalid broker host",
            Self::Password => "provisioning blob has an invalid broker password",
            Self::Tls => "provisioning blob has an unknown transport security mode",
            Self::BufferFull => "buffer too small for the provisioning blob",
        })
    }
}

impl core::error::Error for ProvisionError {}

/// Everything a board needs to report.
#[derive(Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// Tenant id.
    pub tenant: String<MAX_ID_LEN>,
    /// Device id.
    pub device: String<MAX_ID_LEN>,
    /// What the board measures (its observation kind; it also sends status frames).
    pub kind: Kind,
    /// Key and epoch.
    pub key: DeviceKey,
    /// Seconds between samples.
    pub sample_interval_s: u16,
    /// Seconds after which a reading is sent even if nothing changed.
    pub heartbeat_s: u16,
    /// Seconds between reports: 0, the board stays connected (mains power); otherwise it
    /// powers its modem off between reports and connects every this many seconds to send
    /// what its flash holds (SPEC §11, blob format 4).
    pub report_interval_s: u16,
    /// Bin depth, sensor to bottom, for fill level (0 for non-bin devices).
    pub bin_depth_mm: u16,
    /// MQTT broker host name or address.
    pub broker_host: String<MAX_HOST_LEN>,
    /// MQTT broker port.
    pub broker_port: u16,
    /// Broker password of the device's own broker account (the username is the MQTT
    /// client id `<tenant>.<device>`, SPEC §7). A secret: never in `Debug`.
    pub broker_password: String<MAX_PASSWORD_LEN>,
    /// How the connection to the broker is protected.
    pub transport: Transport,
    /// The key and epoch the board had before this blob (`devices rotate`, blob format 3),
    /// so that it re-seals under the new key the frames it sealed under the old one and
    /// has not delivered (SPEC §11). `None` for a first enrolment.
    pub previous: Option<DeviceKey>,
}

/// How a board's connection to the broker is protected (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Transport {
    /// Plain TCP: only for a broker reached over a private network (a test bench, a
    /// private APN); the password travels in clear.
    Plain,
    /// TLS terminated by the cellular modem; the broker's certificate must chain to the CA
    /// whose certificate (DER) has this SHA-256 fingerprint.
    Tls {
        /// SHA-256 of the CA certificate, DER.
        ca_sha256: [u8; 32],
    },
}

impl Transport {
    const PLAIN: u8 = 0;
    const TLS: u8 = 1;
}

impl fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioning")
            .field("tenant", &self.tenant)
            .field("device", &self.device)
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("sample_interval_s", &self.sample_interval_s)
            .field("heartbeat_s", &self.heartbeat_s)
            .field("report_interval_s", &self.report_interval_s)
            .field("bin_depth_mm", &self.bin_depth_mm)
            .field("broker_host", &self.broker_host)
            .field("broker_port", &self.broker_port)
            .field("broker_password", &"<redacted>")
            .field("transport", &self.transport)
            .field("previous", &self.previous)
            .finish()
    }
}

impl Provisioning {
    /// The identity to seal frames with.
    pub fn identity(&self) -> Result<Identity<'_>, ProvisionError> {
        Identity::new(&self.tenant, &self.device).map_err(|_| ProvisionError::Id)
    }

    /// Writes the blob into `out`, returning its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ProvisionError> {
        let mut w = crate::varint::Writer::at(out, 0);
        let full = |_| ProvisionError::BufferFull;
        let reports = self.report_interval_s != 0;
        let magic = match (reports, self.previous.is_some()) {
            (true, _) => MAGIC_REPORTS,
            (false, true) => MAGIC_ROTATED,
            (false, false) => MAGIC,
        };
        w.bytes(&magic).map_err(full)?;
        for s in [self.tenant.as_str(), self.device.as_str()] {
            w.bytes(&[s.len() as u8]).map_err(full)?;
            w.bytes(s.as_bytes()).map_err(full)?;
        }
        w.bytes(&[self.kind.code()]).map_err(full)?;
        w.bytes(&self.key.epoch().to_be_bytes()).map_err(full)?;
        w.bytes(self.key.expose_secret()).map_err(full)?;
        for v in [
            self.sample_interval_s,
            self.heartbeat_s,
            self.bin_depth_mm,
            self.broker_port,
        ] {
            w.bytes(&v.to_be_bytes()).map_err(full)?;
        }
        if reports {
            w.bytes(&self.report_interval_s.to_be_bytes())
                .map_err(full)?;
        }
        for s in [self.broker_host.as_str(), self.broker_password.as_str()] {
            w.bytes(&[s.len() as u8]).map_err(full)?;
            w.bytes(s.as_bytes()).map_err(full)?;
        }
        let (mode, ca) = match self.transport {
            Transport::Plain => (Transport::PLAIN, [0; 32]),
            Transport::Tls { ca_sha256 } => (Transport::TLS, ca_sha256),
        };
        w.bytes(&[mode]).map_err(full)?;
        w.bytes(&ca).map_err(full)?;
        let none = DeviceKey::new([0; 16], 0);
        if let Some(previous) = self.previous.as_ref().or(reports.then_some(&none)) {
            w.bytes(&previous.epoch().to_be_bytes()).map_err(full)?;
            w.bytes(previous.expose_secret()).map_err(full)?;
        }
        let len = w.pos();
        let crc = crc32(&out[..len]);
        let mut w = crate::varint::Writer::at(out, len);
        w.bytes(&crc.to_be_bytes()).map_err(full)?;
        Ok(w.pos())
    }

    /// Reads and checks a blob. Bytes after the CRC (rest of the flash page) are ignored.
    pub fn decode(blob: &[u8]) -> Result<Self, ProvisionError> {
        let (reports, rotated) = format_of(blob)?;
        let mut r = crate::varint::Reader::new(&blob[4..]);
        let trunc = |_| ProvisionError::Truncated;
        let mut id = || -> Result<String<MAX_ID_LEN>, ProvisionError> {
            let [len] = r.array::<1>().map_err(trunc)?;
            let bytes = r.take(usize::from(len)).map_err(trunc)?;
            let s = core::str::from_utf8(bytes).map_err(|_| ProvisionError::Id)?;
            Id::new(s).map_err(|_| ProvisionError::Id)?;
            String::try_from(s).map_err(|_| ProvisionError::Id)
        };
        let (tenant, device) = (id()?, id()?);
        let [kind] = r.array::<1>().map_err(trunc)?;
        let key = read_key(&mut r)?;
        let mut u16s = [0u16; 4];
        for v in &mut u16s {
            *v = u16::from_be_bytes(r.array::<2>().map_err(trunc)?);
        }
        let report_interval_s = match reports {
            true => u16::from_be_bytes(r.array::<2>().map_err(trunc)?),
            false => 0,
        };
        let [host_len] = r.array::<1>().map_err(trunc)?;
        let host = r.take(usize::from(host_len)).map_err(trunc)?;
        let [password_len] = r.array::<1>().map_err(trunc)?;
        let password = r.take(usize::from(password_len)).map_err(trunc)?;
        let [mode] = r.array::<1>().map_err(trunc)?;
        let ca_sha256 = r.array::<32>().map_err(trunc)?;
        // Format 4 always has the field: epoch 0 (never a key's, §13.8) for none.
        let previous = match rotated {
            true => Some(read_key(&mut r)?).filter(|k| k.epoch() != 0),
            false => None,
        };
        let body_len = blob.len() - r.remaining();
        let crc = u32::from_be_bytes(r.array::<4>().map_err(trunc)?);
        if crc != crc32(&blob[..body_len]) {
            return Err(ProvisionError::Checksum);
        }
        let kind = Kind::from_code(kind).ok_or(ProvisionError::Kind)?;
        let (broker_host, broker_password) = checked_account(host, password)?;
        let transport = match mode {
            Transport::PLAIN => Transport::Plain,
            Transport::TLS => Transport::Tls { ca_sha256 },
            _ => return Err(ProvisionError::Tls),
        };
        let [sample_interval_s, heartbeat_s, bin_depth_mm, broker_port] = u16s;
        Ok(Self {
            tenant,
            device,
            kind,
            key,
            sample_interval_s,
            heartbeat_s,
            report_interval_s,
            bin_depth_mm,
            broker_host,
            broker_port,
            broker_password,
            transport,
            previous,
        })
    }
}

/// Whether a blob's format carries a report interval, and a previous key.
fn format_of(blob: &[u8]) -> Result<(bool, bool), ProvisionError> {
    match blob.get(..4) {
        Some(m) if m == MAGIC => Ok((false, false)),
        Some(m) if m == MAGIC_ROTATED => Ok((false, true)),
        Some(m) if m == MAGIC_REPORTS => Ok((true, true)),
        _ => Err(ProvisionError::Magic),
    }
}

/// A key epoch, then the key.
fn read_key(r: &mut crate::varint::Reader<'_>) -> Result<DeviceKey, ProvisionError> {
    let trunc = |_| ProvisionError::Truncated;
    let epoch = u32::from_be_bytes(r.array::<4>().map_err(trunc)?);
    Ok(DeviceKey::new(r.array::<16>().map_err(trunc)?, epoch))
}

/// The broker host (ASCII, not empty) and password ([`password_ok`]) of a blob.
#[allow(clippy::type_complexity)]
fn checked_account(
    host: &[u8],
    password: &[u8],
) -> Result<(String<MAX_HOST_LEN>, String<MAX_PASSWORD_LEN>), ProvisionError> {
    let host = core::str::from_utf8(host).map_err(|_| ProvisionError::Host)?;
    if host.is_empty() || !host.is_ascii() {
        return Err(ProvisionError::Host);
    }
    let password = core::str::from_utf8(password).map_err(|_| ProvisionError::Password)?;
    if !password_ok(password) {
        return Err(ProvisionError::Password);
    }
    Ok((
        String::try_from(host).map_err(|_| ProvisionError::Host)?,
        String::try_from(password).map_err(|_| ProvisionError::Password)?,
    ))
}

/// Length of [`ca_file_name`]: `vigie-ca-`, 16 hex digits, `.pem`.
pub const CA_FILE_NAME_LEN: usize = 29;

/// The name under which the board's modem keeps the CA certificate a TLS transport pins
/// (SPEC §11): `vigie-ca-` and the first 8 bytes of its SHA-256, hex, then `.pem`. The
/// firmware asks the modem to verify the broker against that file only, so a board trusts
/// the CA its blob names and no other.
pub fn ca_file_name(ca_sha256: &[u8; 32]) -> String<CA_FILE_NAME_LEN> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = String::new();
    // Cannot fail: 9 + 16 + 4 characters.
    let _ = name.push_str("vigie-ca-");
    for b in &ca_sha256[..8] {
        let _ = name.push(char::from(HEX[usize::from(b >> 4)]));
        let _ = name.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    let _ = name.push_str(".pem");
    name
}

/// A broker password a blob can carry: 1 to 32 printable ASCII characters, no space.
pub fn password_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= MAX_PASSWORD_LEN && p.bytes().all(|b| b.is_ascii_graphic())
}

/// CRC-32 (IEEE 802.3, as zlib and `crc32fast`), bitwise: the blob is read once at boot.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                crc >> 1 ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provisioning {
        Provisioning {
            tenant: String::try_from("lyon").unwrap_or_default(),
            device: String::try_from("bin-0042").unwrap_or_default(),
            kind: Kind::WasteBin,
            key: DeviceKey::new([5; 16], 3),
            sample_interval_s: 300,
            heartbeat_s: 3600,
            report_interval_s: 0,
            bin_depth_mm: 1200,
            broker_host: String::try_from("mqtt.example.org").unwrap_or_default(),
            broker_port: 8883,
            broker_password: String::try_from("s3cret-Pa55").unwrap_or_default(),
            transport: Transport::Tls {
                ca_sha256: [0xca; 32],
            },
            previous: None,
        }
    }

    #[test]
    fn ca_file_name_names_the_pinned_ca() {
        let mut sha = [0u8; 32];
        sha[0] = 0xab;
        sha[7] = 0x01;
        sha[8] = 0xff; // beyond the first 8 bytes: not in the name
        assert_eq!(ca_file_name(&sha).as_str(), "vigie-ca-ab00000000000001.pem");
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trip_and_every_corruption_is_refused() {
        let mut buf = [0xffu8; MAX_BLOB_LEN + 16];
        let n = sample().encode(&mut buf).unwrap_or(0);
        assert_eq!(n, 4 + 5 + 9 + 1 + 4 + 16 + 8 + 1 + 16 + 1 + 11 + 1 + 32 + 4);
        // Trailing erased flash (0xff) is ignored.
        assert_eq!(Provisioning::decode(&buf).ok(), Some(sample()));
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 0x10;
            assert!(Provisioning::decode(&bad).is_err(), "flip in byte {i}");
        }
        assert_eq!(
            Provisioning::decode(&[0xff; 64]).err(),
            Some(ProvisionError::Magic)
        );
        assert_eq!(
            Provisioning::decode(&buf[..n - 1]).err(),
            Some(ProvisionError::Truncated)
        );
        assert_eq!(
            sample().encode(&mut [0u8; 20]).err(),
            Some(ProvisionError::BufferFull)
        );
    }

    #[test]
    fn a_rotated_blob_carries_the_previous_key() {
        let rotated = Provisioning {
            previous: Some(DeviceKey::new([4; 16], 2)),
            ..sample()
        };
        let mut buf = [0xffu8; MAX_BLOB_LEN + 16];
        let n = rotated.encode(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..4], b"VGP3");
        assert_eq!(
            n,
            4 + 5 + 9 + 1 + 4 + 16 + 8 + 1 + 16 + 1 + 11 + 1 + 32 + 4 + 16 + 4
        );
        assert_eq!(Provisioning::decode(&buf).ok(), Some(rotated.clone()));
        for i in 0..n {
            let mut bad = buf;
            bad[i] ^= 0x10;
            assert_ne!(
                Provisioning::decode(&bad).ok(),
                Some(rotated.clone()),
                "byte {i}"
            );
        }
        // The largest blob (format 4) fits MAX_BLOB_LEN.
        let max = Provisioning {
            report_interval_s: 7200,
            tenant: String::try_from("t".repeat(32).as_str()).unwrap_or_default(),
            device: String::try_from("d".repeat(32).as_str()).unwrap_or_default(),
            broker_host: String::try_from("h".repeat(64).as_str()).unwrap_or_default(),
            broker_password: String::try_from("p".repeat(32).as_str()).unwrap_or_default(),
            ..rotated
        };
        assert_eq!(max.encode(&mut buf), Ok(MAX_BLOB_LEN));
    }

    #[test]
    fn a_blob_with_a_report_interval_is_format_4_with_or_without_a_previous_key() {
        for previous in [None, Some(DeviceKey::new([4; 16], 2))] {
            let p = Provisioning {
                report_interval_s: 7200,
                previous: previous.clone(),
                ..sample()
            };
            let mut buf = [0xffu8; MAX_BLOB_LEN + 16];
            let n = p.encode(&mut buf).unwrap_or(0);
            assert_eq!(&buf[..4], b"VGP4");
            assert_eq!(
                n,
                4 + 5 + 9 + 1 + 4 + 16 + 10 + 1 + 16 + 1 + 11 + 1 + 32 + 20 + 4
            );
            assert_eq!(Provisioning::decode(&buf).ok(), Some(p.clone()));
            for i in 0..n {
                let mut bad = buf;
                bad[i] ^= 0x10;
                assert_ne!(Provisioning::decode(&bad).ok(), Some(p.clone()), "byte {i}");
            }
        }
        // Without one, the older formats: a board on older firmware reads them.
        let mut buf = [0xffu8; MAX_BLOB_LEN];
        sample().encode(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..4], b"VGP2");
    }

    #[test]
    fn debug_hides_the_key_and_the_password() {
        extern crate std;
        let rotated = Provisioning {
            previous: Some(DeviceKey::new([6; 16], 2)),
            ..sample()
        };
        let s = std::format!("{rotated:?}");
        assert!(!s.contains("6, 6"), "{s}");
        let s = std::format!("{:?}", sample());
        assert!(s.contains("redacted") && !s.contains("5, 5"), "{s}");
        assert!(!s.contains("s3cret"), "{s}");
    }
}
