//! A UART driven through `embedded-hal-nb` as the `embedded_io_async` byte stream the
//! modem and the uplink read and write, for boards whose HAL has no async UART. Reads poll
//! the receiver and give the executor the hand while nothing waits; writes block per byte
//! (a frame is a few dozen bytes).
//!
//! Polling keeps the image small and executor-free, at a cost: a byte that arrives while
//! the core is busy elsewhere for longer than a character time (87 µs at 115,200 baud) is
//! overrun. A board that can spare the RAM should feed an interrupt-driven ring buffer
//! instead; the reference boards' modem traffic is small and acknowledged.

use embedded_hal_nb::nb;
use embedded_hal_nb::serial::{Read as NbRead, Write as NbWrite};
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};

use crate::app::yield_now;

/// The UART failed (overrun, framing, noise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SerialError;

impl core::fmt::Display for SerialError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("UART error")
    }
}

impl core::error::Error for SerialError {}

impl embedded_io_async::Error for SerialError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// The adapter.
#[derive(Debug)]
pub struct NbSerial<S>(pub S);

impl<S> ErrorType for NbSerial<S> {
    type Error = SerialError;
}

impl<S: NbRead<u8>> Read for NbSerial<S> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, SerialError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n < buf.len() {
            match self.0.read() {
                Ok(b) => {
                    buf[n] = b;
                    n += 1;
                }
                Err(nb::Error::WouldBlock) if n > 0 => break,
                Err(nb::Error::WouldBlock) => yield_now().await,
                Err(nb::Error::Other(_)) => return Err(SerialError),
            }
        }
        Ok(n)
    }
}

impl<S: NbWrite<u8>> Write for NbSerial<S> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, SerialError> {
        for &b in buf {
            nb::block!(self.0.write(b)).map_err(|_| SerialError)?;
        }
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), SerialError> {
        nb::block!(self.0.flush()).map_err(|_| SerialError)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::serial::{Mock, Transaction};

    use crate::app::block_on as run;

    #[test]
    fn reads_what_waits_and_writes_every_byte() {
        let expect = [
            Transaction::read_error(nb::Error::WouldBlock),
            Transaction::read_many(b"OK"),
            Transaction::read_error(nb::Error::WouldBlock),
            Transaction::write_many(b"AT\r"),
            Transaction::flush(),
        ];
        let mut s = NbSerial(Mock::new(&expect));
        let mut buf = [0u8; 8];
        assert_eq!(run(s.read(&mut buf)), Ok(2));
        assert_eq!(&buf[..2], b"OK");
        run(s.write_all(b"AT\r")).unwrap();
        run(s.flush()).unwrap();
        s.0.done();
    }
}
