//! Boot: the provisioning blob (SPEC §11, exactly what the gateway's `devices add` writes)
//! is read from a fixed flash location. A missing, half-written or invalid blob stops the
//! node with a message saying which: it never runs unauthenticated or as someone else.

use embedded_storage::nor_flash::ReadNorFlash;
use protocol::provision::{MAX_BLOB_LEN, ProvisionError, Provisioning};

/// Why the node will not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BootError {
    /// The flash could not be read.
    Flash,
    /// The blob is missing or invalid (which check failed).
    Provisioning(ProvisionError),
    /// The interval in the blob is zero.
    Interval,
}

/// Reads and checks the blob at `offset`. The blob's own length fields and CRC delimit it,
/// so the whole [`MAX_BLOB_LEN`] window is read (erased flash after it is harmless).
pub fn load_provisioning<F: ReadNorFlash>(
    flash: &mut F,
    offset: u32,
) -> Result<Provisioning, BootError> {
    let mut blob = [0u8; MAX_BLOB_LEN];
    let len = MAX_BLOB_LEN.min(flash.capacity().saturating_sub(offset as usize));
    flash
        .read(offset, &mut blob[..len])
        .map_err(|_| BootError::Flash)?;
    let p = Provisioning::decode(&blob[..len]).map_err(BootError::Provisioning)?;
    if p.sample_interval_s == 0 {
        return Err(BootError::Interval);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulated::RamFlash;
    use protocol::{DeviceKey, Kind};

    type Rom = RamFlash<512, 512>;

    fn provisioning() -> Provisioning {
        Provisioning {
            tenant: "lyon".try_into().unwrap(),
            device: "aq-0001".try_into().unwrap(),
            kind: Kind::AirQuality,
            key: DeviceKey::new([7; 16], 1),
            sample_interval_s: 300,
            heartbeat_s: 3600,
            report_interval_s: 0,
            bin_depth_mm: 0,
            broker_host: "mqtt.example".try_into().unwrap(),
            broker_port: 1883,
            broker_password: "pw".try_into().unwrap(),
            transport: protocol::provision::Transport::Plain,
            previous: None,
        }
    }

    #[test]
    fn reads_the_blob_devices_add_writes() {
        let mut rom = Rom::default();
        let n = provisioning().encode(&mut rom.bytes_mut()[256..]).unwrap();
        assert!(n <= MAX_BLOB_LEN);
        assert_eq!(load_provisioning(&mut rom, 256), Ok(provisioning()));
    }

    #[test]
    fn blank_torn_or_corrupt_flash_stops_the_node() {
        let mut rom = Rom::default();
        let magic = BootError::Provisioning(ProvisionError::Magic);
        assert_eq!(load_provisioning(&mut rom, 0), Err(magic));

        let n = provisioning().encode(rom.bytes_mut()).unwrap();
        rom.bytes_mut()[n - 1] ^= 1;
        let crc = BootError::Provisioning(ProvisionError::Checksum);
        assert_eq!(load_provisioning(&mut rom, 0), Err(crc));

        rom.bytes_mut()[5..n].fill(0xff); // a write cut after the magic
        assert!(matches!(
            load_provisioning(&mut rom, 0),
            Err(BootError::Provisioning(_))
        ));
    }
}
