//! The reference node image in QEMU (`qemu-system-arm -M mps2-an386`), its UART0 bridged
//! to a cellular-modem emulator that answers the firmware's AT commands and then relays
//! the MQTT byte stream to the real broker, its console (UART1) in a file, its monitor on
//! a TCP port for resets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Where the board's flash has the provisioning blob (boards/mps2-an386/src/hw.rs).
pub const BLOB_ADDR: u32 = 0x003f_0000;

/// The image `scripts/build-images.sh` builds.
pub fn image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let elf = root.join("target/boards/thumbv7em-none-eabihf/release/vigie-node-mps2");
    assert!(
        elf.exists(),
        "{} missing: scripts/test.sh builds it (scripts/build-images.sh)",
        elf.display()
    );
    elf
}

/// The modem emulator: a SIM7600 as far as the firmware's driver uses it.
#[derive(Debug)]
pub struct ModemEmulator {
    /// Where QEMU's UART0 connects.
    pub addr: SocketAddr,
    reset: watch::Sender<u64>,
    /// TCP connections opened to the broker (`AT+CIPOPEN`).
    pub connections: Arc<AtomicU64>,
}

impl ModemEmulator {
    /// Listens on a free port; bridges to `broker` on `AT+CIPOPEN` (whatever host the
    /// firmware names: this is the "network").
    pub async fn start(broker: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reset, reset_rx) = watch::channel(0);
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            // QEMU connects once; a board reset keeps the connection (same UART).
            if let Ok((uart, _)) = listener.accept().await {
                serve(uart, broker, reset_rx, counter).await;
            }
        });
        Self {
            addr,
            reset,
            connections,
        }
    }

    /// Power-cycles the modem (its reset line follows the MCU's): hangs up, back to
    /// command mode.
    pub fn reset(&self) {
        self.reset.send_modify(|n| *n += 1);
    }
}

async fn serve(
    mut uart: TcpStream,
    broker: SocketAddr,
    mut reset: watch::Receiver<u64>,
    connections: Arc<AtomicU64>,
) {
    let mut line = Vec::new();
    let mut link: Option<TcpStream> = None;
    let mut buf = [0u8; 2048];
    let mut from_broker = [0u8; 2048];
    loop {
        match link.as_mut() {
            // Command mode: lines end at CR; each gets its result code.
            None => {
                let n = tokio::select! {
                    r = uart.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                    _ = reset.changed() => { line.clear(); continue }
                };
                for &b in &buf[..n] {
                    if b != b'\r' {
                        line.push(b);
                        continue;
                    }
                    let cmd = String::from_utf8_lossy(&line).trim().to_string();
                    line.clear();
                    let reply = if cmd.starts_with("AT+CCLK?") {
                        format!("\r\n+CCLK: \"{}+00\"\r\n\r\nOK\r\n", cclk_now())
                    } else if cmd.starts_with("AT+CIPOPEN=") {
                        match TcpStream::connect(broker).await {
                            Ok(s) => {
                                connections.fetch_add(1, Ordering::Relaxed);
                                link = Some(s);
                                "\r\nCONNECT 115200\r\n".into()
                            }
                            Err(_) => "\r\nERROR\r\n".into(),
                        }
                    } else if cmd.starts_with("AT") {
                        "\r\nOK\r\n".into()
                    } else {
                        String::new() // noise from a session that ended
                    };
                    if uart.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    if link.is_some() {
                        break; // the firmware sends MQTT only once it has read CONNECT
                    }
                }
            }
            // Transparent mode: bytes both ways; `+++` alone, or a reset, hangs up.
            Some(s) => {
                tokio::select! {
                    r = uart.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) if &buf[..n] == b"+++" => {
                            link = None;
                            let _ = uart.write_all(b"\r\nOK\r\n").await;
                        }
                        Ok(n) => if s.write_all(&buf[..n]).await.is_err() {
                            link = None;
                            let _ = uart.write_all(b"\r\nCLOSED\r\n").await;
                        }
                    },
                    r = s.read(&mut from_broker) => match r {
                        Ok(0) | Err(_) => {
                            link = None;
                            let _ = uart.write_all(b"\r\nCLOSED\r\n").await;
                        }
                        Ok(n) => if uart.write_all(&from_broker[..n]).await.is_err() { return },
                    },
                    _ = reset.changed() => link = None,
                }
            }
        }
    }
}

/// `yy/MM/dd,hh:mm:ss` in UTC, from the ISO 8601 form `2026-11-22T18:30:05Z`.
fn cclk_now() -> String {
    let iso = protocol::json::UtcTime((gateway::now_ms() / 1000) as u32).to_string();
    format!(
        "{}/{}/{},{}",
        &iso[2..4],
        &iso[5..7],
        &iso[8..10],
        &iso[11..19]
    )
}

/// The emulated board; killed by PID on drop.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    monitor: SocketAddr,
    /// The console (UART1) log.
    pub console: PathBuf,
}

impl Qemu {
    /// Boots `image` with `blob` at its flash address (no blob: `None`), UART0 to `modem`.
    pub fn boot(image: &Path, blob: Option<&Path>, modem: SocketAddr, dir: &Path) -> Self {
        let monitor = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let console = dir.join("console.log");
        let mut args: Vec<String> = vec![
            "-M".into(),
            "mps2-an386".into(),
            "-nographic".into(),
            "-kernel".into(),
            image.display().to_string(),
            "-serial".into(),
            format!("tcp:{modem}"),
            "-serial".into(),
            format!("file:{}", console.display()),
            "-monitor".into(),
            format!("tcp:{monitor},server=on,wait=off"),
        ];
        if let Some(blob) = blob {
            args.push("-device".into());
            args.push(format!(
                "loader,file={},addr={BLOB_ADDR:#x}",
                blob.display()
            ));
        }
        let child = Command::new("qemu-system-arm")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-arm (Debian package qemu-system-arm)");
        Self {
            child,
            monitor,
            console,
        }
    }

    /// The console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Presses reset: `system_reset` on the QEMU monitor (RAM, so the counter pages, stays).
    pub async fn reset(&self) {
        let mut m = TcpStream::connect(self.monitor).await.unwrap();
        m.write_all(b"system_reset\n").await.unwrap();
        // Wait for the monitor to echo the command back, so the reset has happened.
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("system_reset") {
            let n = tokio::time::timeout(Duration::from_secs(5), m.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "QEMU monitor closed");
            seen.extend_from_slice(&buf[..n]);
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
