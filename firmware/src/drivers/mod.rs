//! Sensor drivers (SDS011 PM, BME280 climate, A02YYUW distance, tilt switch), each generic over the
//! embedded-hal 1.0 bus traits (I2C for the BME280, UART drivers over
//! `embedded_hal_nb::serial`), each keeping the bus error in its own error type and
//! reporting checksum and framing errors apart, each tested against the datasheet's
//! frames with embedded-hal-mock (`done()` checks every expected transaction happened).

pub mod a02yyuw;
pub mod bme280;
pub mod sds011;
pub mod tilt;

use embedded_hal_nb::nb;
use embedded_hal_nb::serial::Read;

/// Why a UART sensor read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UartError<E> {
    /// The UART itself failed (kept as the bus reported it).
    Serial(E),
    /// A complete frame arrived but its checksum is wrong.
    Checksum,
    /// No valid frame start within the bytes the driver is willing to skip.
    Framing,
}

#[cfg(feature = "defmt")]
impl<E: core::fmt::Debug> defmt::Format for UartError<E> {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Self::Serial(e) => defmt::write!(f, "UART error: {}", defmt::Debug2Format(e)),
            Self::Checksum => defmt::write!(f, "sensor frame checksum mismatch"),
            Self::Framing => defmt::write!(f, "no sensor frame found"),
        }
    }
}

/// Reads one byte, waiting for it.
fn read_byte<S: Read<u8>>(serial: &mut S) -> Result<u8, UartError<S::Error>> {
    nb::block!(serial.read()).map_err(UartError::Serial)
}

/// Skips bytes until `header` (at most `max_skip` bytes), then fills `frame` (whose first
/// byte is the header).
fn read_frame<S: Read<u8>>(
    serial: &mut S,
    header: u8,
    frame: &mut [u8],
    max_skip: usize,
) -> Result<(), UartError<S::Error>> {
    let mut skipped = 0;
    while read_byte(serial)? != header {
        skipped += 1;
        if skipped > max_skip {
            return Err(UartError::Framing);
        }
    }
    frame[0] = header;
    for b in &mut frame[1..] {
        *b = read_byte(serial)?;
    }
    Ok(())
}
