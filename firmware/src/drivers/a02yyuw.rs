//! DFRobot A02YYUW / DYP-A02 ultrasonic distance sensor (waste-bin fill), UART 9600 8N1,
//! "processed value" output: `FF Data_H Data_L SUM`, distance in mm,
//! `SUM = (0xFF + Data_H + Data_L) mod 256`, one frame about every 100 ms.

use super::{UartError, read_frame};
use embedded_hal_nb::serial::Read;

/// Bytes skipped while looking for a frame header before giving up (three frames).
const MAX_SKIP: usize = 12;

/// The driver.
#[derive(Debug)]
pub struct A02yyuw<S> {
    serial: S,
}

impl<S: Read<u8>> A02yyuw<S> {
    /// Wraps the UART.
    pub fn new(serial: S) -> Self {
        Self { serial }
    }

    /// Gives the UART back.
    pub fn release(self) -> S {
        self.serial
    }

    /// The next distance, mm.
    pub fn read_mm(&mut self) -> Result<u16, UartError<S::Error>> {
        let mut f = [0u8; 4];
        read_frame(&mut self.serial, 0xff, &mut f, MAX_SKIP)?;
        if 0xffu8.wrapping_add(f[1]).wrapping_add(f[2]) != f[3] {
            return Err(UartError::Checksum);
        }
        Ok(u16::from_be_bytes([f[1], f[2]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::serial::{Mock, Transaction};

    #[test]
    fn datasheet_example_frame() {
        // Datasheet example: FF 07 A1 A7 → 0x07A1 = 1953 mm.
        let mut mock = Mock::new(&[Transaction::read_many([0x12, 0xff, 0x07, 0xa1, 0xa7])]);
        let mut s = A02yyuw::new(mock.clone());
        assert_eq!(s.read_mm(), Ok(1953));
        mock.done();
    }

    #[test]
    fn bad_checksum_and_no_header() {
        let mut mock = Mock::new(&[Transaction::read_many([0xff, 0x07, 0xa1, 0xa8])]);
        assert_eq!(
            A02yyuw::new(mock.clone()).read_mm(),
            Err(UartError::Checksum)
        );
        mock.done();
        let mut mock = Mock::new(&[Transaction::read_many([0x00; 13])]);
        assert_eq!(
            A02yyuw::new(mock.clone()).read_mm(),
            Err(UartError::Framing)
        );
        mock.done();
    }
}
