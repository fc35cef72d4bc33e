//! Tilt switch (ball or mercury type, for example SW-520D) on a GPIO input: closed when the
//! container is knocked over. Contacts bounce when the bin is moved, so the state is a
//! majority of several reads rather than one.

use embedded_hal::digital::InputPin;

/// Reads per decision; odd, so there is always a majority.
const READS: u8 = 5;

/// The switch on `pin`.
#[derive(Debug)]
pub struct Tilt<P> {
    pin: P,
    active_low: bool,
}

impl<P: InputPin> Tilt<P> {
    /// `active_low`: the switch pulls the input to ground when tilted (pull-up wiring).
    pub fn new(pin: P, active_low: bool) -> Self {
        Self { pin, active_low }
    }

    /// Whether the container is tilted (majority of five reads); bus errors are kept.
    pub fn is_tilted(&mut self) -> Result<bool, P::Error> {
        let mut active = 0;
        for _ in 0..READS {
            if self.pin.is_low()? == self.active_low {
                active += 1;
            }
        }
        Ok(active > READS / 2)
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    #[test]
    fn majority_of_bouncing_reads() {
        use State::{High, Low};
        let reads = [Low, High, Low, Low, High, High, High, Low, High, High];
        let mut tilt = Tilt::new(Mock::new(&reads.map(Transaction::get)), true);
        assert!(tilt.is_tilted().unwrap(), "3 of 5 low: tilted");
        assert!(!tilt.is_tilted().unwrap(), "1 of 5 low: upright");
        tilt.release().done();
    }

    #[test]
    fn pin_errors_are_kept() {
        let e = embedded_hal_mock::eh1::MockError::Io(std::io::ErrorKind::Other);
        let mut tilt = Tilt::new(
            Mock::new(&[Transaction::get(State::Low).with_error(e)]),
            true,
        );
        assert!(tilt.is_tilted().is_err());
        tilt.release().done();
    }
}
