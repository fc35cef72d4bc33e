//! Cellular modem on a UART (SIMCom SIM7600 family AT commands): wake it, read the network
//! time, open a TCP socket or a TLS session (the modem's own TLS stack: the image carries
//! no TLS code) in transparent mode. After [`Modem::open`] or [`Modem::open_tls`] the UART
//! carries the MQTT byte stream as is, so the uplink runs over it unchanged.
//!
//! Commands, each answered by lines ending `\r\n`:
//! `AT` → `OK`; `ATE0` (no echo) → `OK`; `AT+CCLK?` → `+CCLK: "yy/MM/dd,hh:mm:ss±zz"`,
//! `OK` (zz in quarter hours); `AT+CIPMODE=1` → `OK`; `AT+NETOPEN` → `OK`;
//! `AT+CIPOPEN=0,"TCP","host",port` → `CONNECT 115200`. TLS: `AT+CCHMODE=1`,
//! `AT+CSSLCFG="sslversion",0,3` (TLS 1.2), `AT+CSSLCFG="authmode",0,1` (verify the
//! server), `AT+CSSLCFG="cacert",0,"file"`, `AT+CCHSTOP` (any answer), `AT+CCHSTART`,
//! `AT+CCHSSLCFG=0,0` → `OK`; `AT+CCHOPEN=0,"host",port,2` → `CONNECT 115200`.
//! `ERROR` or `NO CARRIER` fail.
//! `+++` between two silent seconds returns from transparent to command mode.
//! `AT+CPOF` → `OK` powers it off (a reporting node, between reports).

use embedded_io_async::{Read, Write};
use heapless::String;

/// Longest response line kept (longer lines are cut, never overflow).
const LINE: usize = 64;
/// `AT` attempts while the modem boots (it may also still be in transparent mode from a
/// previous session: the first lines are then junk to skip).
const WAKE_ATTEMPTS: usize = 10;
/// Lines read while waiting for one command's result.
const MAX_LINES: usize = 16;

/// Why the modem could not give a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ModemError {
    /// The UART failed or closed.
    Uart,
    /// The modem answered `ERROR` or `NO CARRIER`.
    Refused,
    /// No expected answer within the lines read.
    NoAnswer,
    /// The network time could not be parsed.
    Clock,
}

/// The modem on byte stream `T`.
#[derive(Debug)]
pub struct Modem<T> {
    io: T,
}

impl<T: Read + Write> Modem<T> {
    /// Wraps the UART.
    pub fn new(io: T) -> Self {
        Self { io }
    }

    /// The UART, in whatever mode the modem is (transparent after [`Self::open`]).
    pub fn io(&mut self) -> &mut T {
        &mut self.io
    }

    /// Wakes the modem and turns echo off.
    pub async fn wake(&mut self) -> Result<(), ModemError> {
        for _ in 0..WAKE_ATTEMPTS {
            if self.command("AT", "OK", None).await.is_ok() {
                return self.command("ATE0", "OK", None).await;
            }
        }
        Err(ModemError::NoAnswer)
    }

    /// Network time, Unix seconds UTC.
    pub async fn clock(&mut self) -> Result<u32, ModemError> {
        let mut info = String::new();
        self.command("AT+CCLK?", "OK", Some(("+CCLK:", &mut info)))
            .await?;
        parse_cclk(&info).ok_or(ModemError::Clock)
    }

    /// Opens a TCP connection to `host:port` in transparent mode.
    pub async fn open(&mut self, host: &str, port: u16) -> Result<(), ModemError> {
        self.command("AT+CIPMODE=1", "OK", None).await?;
        self.command("AT+NETOPEN", "OK", None).await?;
        // Built by hand: `write!` would link `core::fmt` into images that have no other use
        // for it.
        let mut cmd: String<{ LINE + 32 }> = String::new();
        let mut digits = [0u8; 10];
        let port = crate::decimal(u32::from(port), &mut digits);
        for part in ["AT+CIPOPEN=0,\"TCP\",\"", host, "\",", port] {
            cmd.push_str(part).map_err(|_| ModemError::Refused)?;
        }
        self.command(&cmd, "CONNECT", None).await
    }

    /// Opens a TLS session to `host:port` in transparent mode; the modem verifies the
    /// broker's certificate against its CA file `ca_file` (loaded on the modem with
    /// `AT+CCERTDOWN`, docs/FLASHING.md) and fails rather than connect unverified.
    pub async fn open_tls(
        &mut self,
        host: &str,
        port: u16,
        ca_file: &str,
    ) -> Result<(), ModemError> {
        let mut cmd: String<{ LINE + 32 }> = String::new();
        for part in ["AT+CSSLCFG=\"cacert\",0,\"", ca_file, "\""] {
            cmd.push_str(part).map_err(|_| ModemError::Refused)?;
        }
        for setting in [
            "AT+CCHMODE=1",
            "AT+CSSLCFG=\"sslversion\",0,3",
            "AT+CSSLCFG=\"authmode\",0,1",
            &cmd,
        ] {
            self.command(setting, "OK", None).await?;
        }
        // A session of a previous connection may still hold the TLS service.
        let _ = self.command("AT+CCHSTOP", "OK", None).await;
        self.command("AT+CCHSTART", "OK", None).await?;
        self.command("AT+CCHSSLCFG=0,0", "OK", None).await?;
        cmd.clear();
        let mut digits = [0u8; 10];
        let port = crate::decimal(u32::from(port), &mut digits);
        for part in ["AT+CCHOPEN=0,\"", host, "\",", port, ",2"] {
            cmd.push_str(part).map_err(|_| ModemError::Refused)?;
        }
        self.command(&cmd, "CONNECT", None).await
    }

    /// Leaves transparent mode (the modem then hangs up on `AT+CIPCLOSE` or a new
    /// `AT+CIPOPEN`). The modem only takes `+++` as an escape with a second of silence
    /// before and after it: the caller waits those out.
    pub async fn escape(&mut self) -> Result<(), ModemError> {
        self.io
            .write_all(b"+++")
            .await
            .map_err(|_| ModemError::Uart)?;
        self.io.flush().await.map_err(|_| ModemError::Uart)
    }

    /// Powers the modem off cleanly (`AT+CPOF`: it detaches from the network and saves
    /// its state); the board then cuts its supply until the next report.
    pub async fn power_off(&mut self) -> Result<(), ModemError> {
        self.command("AT+CPOF", "OK", None).await
    }

    /// Sends `cmd` and reads lines until one starts with `done`; a line starting with the
    /// prefix of `info` is copied there.
    async fn command(
        &mut self,
        cmd: &str,
        done: &str,
        mut info: Option<(&str, &mut String<LINE>)>,
    ) -> Result<(), ModemError> {
        self.io
            .write_all(cmd.as_bytes())
            .await
            .map_err(|_| ModemError::Uart)?;
        self.io
            .write_all(b"\r")
            .await
            .map_err(|_| ModemError::Uart)?;
        self.io.flush().await.map_err(|_| ModemError::Uart)?;
        for _ in 0..MAX_LINES {
            let line = self.line().await?;
            // A command with an information line ends only after it: an `OK` before it
            // is a stale answer (to an escape the modem took in transparent mode).
            let informed = info.as_ref().is_none_or(|(_, out)| !out.is_empty());
            if line.starts_with(done) && informed {
                return Ok(());
            }
            if line.starts_with("ERROR") || line.starts_with("NO CARRIER") {
                return Err(ModemError::Refused);
            }
            if let Some((prefix, out)) = info.as_mut()
                && line.starts_with(*prefix)
            {
                **out = line;
            }
        }
        Err(ModemError::NoAnswer)
    }

    /// One non-empty line, without its line ending. Lines end at LF: result codes end in
    /// CR LF, and stopping at the CR would leave the LF after `CONNECT` in the byte
    /// stream, where MQTT would read it as the first byte of a packet.
    async fn line(&mut self) -> Result<String<LINE>, ModemError> {
        let mut line = String::new();
        loop {
            let mut b = [0u8];
            let n = self.io.read(&mut b).await.map_err(|_| ModemError::Uart)?;
            if n == 0 {
                return Err(ModemError::Uart);
            }
            match b[0] {
                b'\n' if !line.is_empty() => return Ok(line),
                b'\n' | b'\r' => {}
                c if c.is_ascii() && !c.is_ascii_control() => {
                    let _ = line.push(c as char); // cut at LINE characters
                }
                _ => {} // junk from a previous transparent session
            }
        }
    }
}

/// `+CCLK: "26/11/22,18:30:05+04"` → Unix seconds UTC.
fn parse_cclk(line: &str) -> Option<u32> {
    let b = line.as_bytes();
    let b = b.get(b.iter().position(|&c| c == b'"')? + 1..)?;
    if b.len() < 20 {
        return None;
    }
    let num = |i: usize| -> Option<i64> {
        let d = b.get(i..i + 2)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0'))
    };
    let (y, mo, d) = (2000 + num(0)?, num(3)?, num(6)?);
    let (h, mi, sec) = (num(9)?, num(12)?, num(15)?);
    let quarters = num(18)? * if b[17] == b'-' { -1 } else { 1 };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let local = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    u32::try_from(local - quarters * 15 * 60).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A scripted modem: answers each command line with the next canned reply.
    struct Script {
        replies: Vec<&'static [u8]>,
        pending: Vec<u8>,
        sent: Vec<u8>,
    }

    impl embedded_io_async::ErrorType for Script {
        type Error = embedded_io_async::ErrorKind;
    }

    impl Read for Script {
        async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            if self.pending.is_empty() {
                return Ok(0);
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    impl Write for Script {
        async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.sent.extend_from_slice(buf);
            if buf.ends_with(b"\r") && !self.replies.is_empty() {
                let reply = self.replies.remove(0);
                self.pending.extend_from_slice(reply);
            }
            Ok(buf.len())
        }

        async fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    use crate::app::block_on as run;

    #[test]
    fn wake_clock_open_as_a_sim7600_answers() {
        let mut m = Modem::new(Script {
            replies: std::vec![
                b"\x10\x02junk\r\nAT\r\r\nOK\r\n", // left in transparent mode, then echo
                b"ATE0\r\r\nOK\r\n",
                b"\r\n+CCLK: \"26/11/22,19:30:05+04\"\r\n\r\nOK\r\n",
                b"\r\nOK\r\n",
                b"\r\nOK\r\n\r\n+NETOPEN: 0\r\n",
                b"\r\nCONNECT 115200\r\n",
            ],
            pending: Vec::new(),
            sent: Vec::new(),
        });
        run(m.wake()).unwrap();
        // 19:30:05 at UTC+1 (4 quarters) is 18:30:05 UTC.
        assert_eq!(run(m.clock()), Ok(1_795_372_205));
        run(m.open("broker.example", 1883)).unwrap();
        assert!(
            m.io().pending.is_empty(),
            "nothing of CONNECT's line left for MQTT"
        );
        let sent = std::string::String::from_utf8(m.io().sent.clone()).unwrap();
        assert!(
            sent.ends_with("AT+CIPOPEN=0,\"TCP\",\"broker.example\",1883\r"),
            "{sent}"
        );
    }

    #[test]
    fn open_tls_configures_the_pinned_ca_then_opens() {
        let ok: &'static [u8] = b"\r\nOK\r\n";
        let mut m = Modem::new(Script {
            replies: std::vec![
                ok,
                ok,
                ok,
                ok,
                b"\r\nERROR\r\n", // AT+CCHSTOP: nothing to stop
                b"\r\nOK\r\n\r\n+CCHSTART: 0\r\n",
                ok,
                b"\r\nCONNECT 115200\r\n",
            ],
            pending: Vec::new(),
            sent: Vec::new(),
        });
        run(m.open_tls("mqtt.example", 8883, "vigie-ca-0011223344556677.pem")).unwrap();
        let sent = std::string::String::from_utf8(m.io().sent.clone()).unwrap();
        let lines: Vec<_> = sent.split('\r').filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                "AT+CCHMODE=1",
                "AT+CSSLCFG=\"sslversion\",0,3",
                "AT+CSSLCFG=\"authmode\",0,1",
                "AT+CSSLCFG=\"cacert\",0,\"vigie-ca-0011223344556677.pem\"",
                "AT+CCHSTOP",
                "AT+CCHSTART",
                "AT+CCHSSLCFG=0,0",
                "AT+CCHOPEN=0,\"mqtt.example\",8883,2",
            ]
        );
        // A refused handshake (wrong CA on the modem) is a refusal, not a clear-text link.
        let mut m = Modem::new(Script {
            replies: std::vec![ok, ok, ok, ok, ok, ok, ok, b"\r\nERROR\r\n"],
            pending: Vec::new(),
            sent: Vec::new(),
        });
        assert_eq!(
            run(m.open_tls("mqtt.example", 8883, "vigie-ca-0011223344556677.pem")),
            Err(ModemError::Refused)
        );
        let sent = std::string::String::from_utf8(m.io().sent.clone()).unwrap();
        assert!(!sent.contains("CIPOPEN"), "{sent}");
    }

    #[test]
    fn refusals_and_bad_clocks_are_errors() {
        let mut m = Modem::new(Script {
            replies: std::vec![
                b"\r\nERROR\r\n",
                b"\r\n+CCLK: \"26/13/22,19:30:05+04\"\r\nOK\r\n"
            ],
            pending: Vec::new(),
            sent: Vec::new(),
        });
        assert_eq!(run(m.open("h", 1)), Err(ModemError::Refused));
        assert_eq!(run(m.clock()), Err(ModemError::Clock));
        assert_eq!(
            parse_cclk("+CCLK: \"00/01/01,00:00:00+00\""),
            Some(946_684_800)
        );
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
