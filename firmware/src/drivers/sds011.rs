//! Nova Fitness SDS011 particulate-matter sensor (the Sensor.Community standard), UART
//! 9600 8N1, per its "Laser Dust Sensor Control Protocol V1.3".
//!
//! - Data frame, 10 bytes: `AA C0 PM25_lo PM25_hi PM10_lo PM10_hi ID_lo ID_hi CS AB`,
//!   PM in 0.1 µg/m³, `CS = sum(bytes 2..=7) mod 256`.
//! - Command frame, 19 bytes: `AA B4 cmd data[13] FF FF CS AB`, `CS = sum(bytes 2..=16)`.
//!   Sleep/work (cmd 6, set): data `01 00` sleeps, `01 01` works; the sensor answers
//!   `AA C5 06 01 mode 00 ID_lo ID_hi CS AB`.
//!
//! Duty cycling: wake the fan, wait about 30 s for the airflow to settle, read, sleep; the
//! laser lasts about 8,000 hours, so a node sampling every 5 minutes must sleep it.

use super::{UartError, read_frame};
use embedded_hal_nb::serial::{ErrorType, Read, Write};

/// This driver's error for the UART `S`.
pub type Error<S> = UartError<<S as ErrorType>::Error>;

/// A PM reading in the protocol's unit, 0.1 µg/m³.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pm {
    /// PM2.5, 0.1 µg/m³.
    pub pm25: u16,
    /// PM10, 0.1 µg/m³.
    pub pm10: u16,
}

/// Bytes skipped while looking for a frame header before giving up (two whole frames).
const MAX_SKIP: usize = 20;

/// The driver.
#[derive(Debug)]
pub struct Sds011<S> {
    serial: S,
}

impl<S: Read<u8> + Write<u8>> Sds011<S> {
    /// Wraps the UART.
    pub fn new(serial: S) -> Self {
        Self { serial }
    }

    /// Gives the UART back.
    pub fn release(self) -> S {
        self.serial
    }

    /// Waits for the next data frame (active reporting mode sends one per second).
    pub fn read(&mut self) -> Result<Pm, Error<S>> {
        let f = self.frame(0xc0)?;
        Ok(Pm {
            pm25: u16::from_le_bytes([f[2], f[3]]),
            pm10: u16::from_le_bytes([f[4], f[5]]),
        })
    }

    /// Stops fan and laser.
    pub fn sleep(&mut self) -> Result<(), Error<S>> {
        self.set_mode(0)
    }

    /// Starts fan and laser.
    pub fn wake(&mut self) -> Result<(), Error<S>> {
        self.set_mode(1)
    }

    fn set_mode(&mut self, work: u8) -> Result<(), Error<S>> {
        let cmd = command(0x06, &[0x01, work]);
        for b in cmd {
            embedded_hal_nb::nb::block!(self.serial.write(b)).map_err(UartError::Serial)?;
        }
        embedded_hal_nb::nb::block!(self.serial.flush()).map_err(UartError::Serial)?;
        // Data frames already in flight may come first; the reply is the C5 frame.
        for _ in 0..3 {
            let f = self.any_frame()?;
            if f[1] == 0xc5 && f[2] == 0x06 && f[4] == work {
                return Ok(());
            }
        }
        Err(UartError::Framing)
    }

    fn frame(&mut self, kind: u8) -> Result<[u8; 10], Error<S>> {
        for _ in 0..3 {
            let f = self.any_frame()?;
            if f[1] == kind {
                return Ok(f);
            }
        }
        Err(UartError::Framing)
    }

    /// One checksummed 10-byte frame of any kind.
    fn any_frame(&mut self) -> Result<[u8; 10], Error<S>> {
        let mut f = [0u8; 10];
        read_frame(&mut self.serial, 0xaa, &mut f, MAX_SKIP)?;
        if f[9] != 0xab {
            return Err(UartError::Framing);
        }
        if checksum(&f[2..8]) != f[8] {
            return Err(UartError::Checksum);
        }
        Ok(f)
    }
}

/// A 19-byte command frame addressed to every sensor (`FF FF`).
pub fn command(cmd: u8, data: &[u8]) -> [u8; 19] {
    let mut f = [0u8; 19];
    f[0] = 0xaa;
    f[1] = 0xb4;
    f[2] = cmd;
    let n = data.len().min(13);
    f[3..3 + n].copy_from_slice(&data[..n]);
    f[15] = 0xff;
    f[16] = 0xff;
    f[17] = checksum(&f[2..17]);
    f[18] = 0xab;
    f
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::serial::{Mock, Transaction};
    use std::vec::Vec;

    /// The datasheet's sleep command and its reply (protocol V1.3, "set sleep and work").
    const SLEEP: [u8; 19] = [
        0xaa, 0xb4, 0x06, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x05, 0xab,
    ];
    const SLEEP_REPLY: [u8; 10] = [0xaa, 0xc5, 0x06, 0x01, 0x00, 0x00, 0xa1, 0x60, 0x08, 0xab];

    #[test]
    fn commands_match_the_datasheet() {
        assert_eq!(command(0x06, &[0x01, 0x00]), SLEEP);
        let work = command(0x06, &[0x01, 0x01]);
        assert_eq!((work[17], work[18]), (0x06, 0xab));
    }

    #[test]
    fn reads_a_data_frame_after_noise() {
        // PM2.5 = 0x00d4 = 21.2 µg/m³, PM10 = 0x01f4 = 50.0 µg/m³.
        let frame = [0xaa, 0xc0, 0xd4, 0x00, 0xf4, 0x01, 0xa1, 0x60, 0xca, 0xab];
        let mut bytes = Vec::from([0x13, 0x37]);
        bytes.extend_from_slice(&frame);
        let mut mock = Mock::new(&[Transaction::read_many(bytes)]);
        let mut s = Sds011::new(mock.clone());
        assert_eq!(
            s.read(),
            Ok(Pm {
                pm25: 212,
                pm10: 500
            })
        );
        mock.done();
    }

    #[test]
    fn sleep_writes_the_command_and_waits_for_the_reply() {
        let data = [0xaa, 0xc0, 0xd4, 0x00, 0xf4, 0x01, 0xa1, 0x60, 0xca, 0xab];
        let mut replies = Vec::from(data); // a data frame still in flight
        replies.extend_from_slice(&SLEEP_REPLY);
        let mut mock = Mock::new(&[
            Transaction::write_many(SLEEP),
            Transaction::flush(),
            Transaction::read_many(replies),
        ]);
        let mut s = Sds011::new(mock.clone());
        assert_eq!(s.sleep(), Ok(()));
        mock.done();
    }

    #[test]
    fn checksum_framing_and_bus_errors_are_told_apart() {
        let bad_sum = [0xaa, 0xc0, 0xd4, 0x00, 0xf4, 0x01, 0xa1, 0x60, 0xcb, 0xab];
        let mut mock = Mock::new(&[Transaction::read_many(bad_sum)]);
        assert_eq!(Sds011::new(mock.clone()).read(), Err(UartError::Checksum));
        mock.done();

        let mut mock = Mock::new(&[Transaction::read_many([0x00; 21])]);
        assert_eq!(Sds011::new(mock.clone()).read(), Err(UartError::Framing));
        mock.done();

        let err = embedded_hal_nb::serial::ErrorKind::Overrun;
        let mut mock = Mock::new(&[Transaction::read_error(embedded_hal_nb::nb::Error::Other(
            err,
        ))]);
        assert_eq!(
            Sds011::new(mock.clone()).read(),
            Err(UartError::Serial(err))
        );
        mock.done();
    }
}
