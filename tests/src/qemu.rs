//! The reference node image in QEMU (`qemu-system-arm -M mps2-an386`), its UART0 bridged
//! to a cellular-modem emulator that answers the firmware's AT commands and then relays
//! the MQTT byte stream to the real broker (over TLS that the emulator terminates, as the
//! modem's own TLS stack does, verifying the broker against the CA file the firmware
//! names), its console (UART1) in a file, its monitor on
//! a TCP port for resets, its PSRAM (the frame-counter pages and the frame ring, the
//! board's "flash") in a file that outlives the process, so killing QEMU is a power cut.

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
/// Offset of the frame ring in the PSRAM file (`RING_ADDR - 0x21000000`), and its size.
pub const RING_OFFSET: usize = 0x2000;
/// Four 4 KiB pages.
pub const RING_LEN: usize = 4 * 4096;
/// The PSRAM size QEMU's mps2-an386 requires.
const PSRAM: u64 = 16 << 20;

/// The image `scripts/build-images.sh` builds, or the one `VIGIE_QEMU_IMAGE` names
/// (`scripts/bench-idle.sh` compares the spinning build with it).
pub fn image() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let elf = std::env::var_os("VIGIE_QEMU_IMAGE").map_or_else(
        || root.join("target/boards/thumbv7em-none-eabihf/release/vigie-node-mps2"),
        PathBuf::from,
    );
    assert!(
        elf.exists(),
        "{} missing: scripts/test.sh builds it (scripts/build-images.sh)",
        elf.display()
    );
    elf
}

/// What the emulated cellular network reaches.
#[derive(Debug, Clone)]
pub struct Network {
    /// The broker's plain listener (`AT+CIPOPEN`).
    pub plain: SocketAddr,
    /// The broker's TLS listener (`AT+CCHOPEN`) and the modem's CA files.
    pub tls: Option<TlsListener>,
}

/// A TLS listener the modem can reach, and the CA files loaded on the modem.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// The broker's TLS listener.
    pub addr: SocketAddr,
    /// (name, PEM): what a technician loads with `AT+CCERTDOWN`.
    pub ca_files: Vec<(String, Vec<u8>)>,
}

/// The modem emulator: a SIM7600 as far as the firmware's driver uses it.
#[derive(Debug)]
pub struct ModemEmulator {
    /// Where QEMU's UART0 connects.
    pub addr: SocketAddr,
    reset: watch::Sender<u64>,
    network: watch::Sender<bool>,
    /// Connections opened to the broker (`AT+CIPOPEN`, `AT+CCHOPEN`).
    pub connections: Arc<AtomicU64>,
    /// Times the firmware powered the modem off (`AT+CPOF`).
    pub power_offs: Arc<AtomicU64>,
}

/// The byte stream to the broker: TCP, or TLS over TCP.
trait Link: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Link for T {}

impl ModemEmulator {
    /// Listens on a free port; bridges to `broker` on `AT+CIPOPEN` (whatever host the
    /// firmware names: this is the "network"). A QEMU that was killed and started again
    /// connects anew.
    pub async fn start(broker: SocketAddr) -> Self {
        Self::start_on(Network {
            plain: broker,
            tls: None,
        })
        .await
    }

    /// [`Self::start`] on `network`: `AT+CCHOPEN` reaches its TLS listener.
    pub async fn start_on(network: Network) -> Self {
        let broker = Arc::new(network);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reset, reset_rx) = watch::channel(0);
        let (network, network_rx) = watch::channel(true);
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        let power_offs = Arc::new(AtomicU64::new(0));
        let offs = power_offs.clone();
        tokio::spawn(async move {
            // A board reset keeps the connection (same UART); a new QEMU makes a new one.
            while let Ok((uart, _)) = listener.accept().await {
                serve(
                    uart,
                    broker.clone(),
                    reset_rx.clone(),
                    network_rx.clone(),
                    counter.clone(),
                    offs.clone(),
                )
                .await;
            }
        });
        Self {
            addr,
            reset,
            network,
            connections,
            power_offs,
        }
    }

    /// Power-cycles the modem (its reset line follows the MCU's): hangs up, back to
    /// command mode.
    pub fn reset(&self) {
        self.reset.send_modify(|n| *n += 1);
    }

    /// The cellular data link goes down (the open connection is dropped, `AT+CIPOPEN`
    /// fails; the modem's clock still answers) or comes back.
    pub fn set_network(&self, up: bool) {
        let _ = self.network.send(up);
    }
}

/// `AT+CCHOPEN=0,"host",port,2`: a TLS session to the network's TLS listener, the broker
/// verified as `host` against the modem's CA file `ca_file`; `None` when anything fails
/// (the modem answers `ERROR`).
async fn open_tls(network: &Network, cmd: &str, ca_file: Option<&str>) -> Option<Box<dyn Link>> {
    let tls = network.tls.as_ref()?;
    let host = cmd.split('"').nth(1)?;
    let pem = &tls
        .ca_files
        .iter()
        .find(|(name, _)| Some(name.as_str()) == ca_file)?
        .1;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.ok()?).ok()?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let tcp = TcpStream::connect(tls.addr).await.ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    Some(Box::new(tls))
}

/// Silence before `+++` for it to count as an escape (the firmware keeps a second).
const GUARD: Duration = Duration::from_millis(800);

async fn serve(
    mut uart: TcpStream,
    broker: Arc<Network>,
    mut reset: watch::Receiver<u64>,
    mut network: watch::Receiver<bool>,
    connections: Arc<AtomicU64>,
    power_offs: Arc<AtomicU64>,
) {
    let mut line = Vec::new();
    let mut link: Option<Box<dyn Link>> = None;
    // The CA file `AT+CSSLCFG="cacert",0,"…"` named.
    let mut ca_file: Option<String> = None;
    let mut buf = [0u8; 2048];
    let mut from_broker = [0u8; 2048];
    // The escape's bytes seen so far, and when the UART last carried anything.
    let mut held = Vec::new();
    let mut quiet_since = std::time::Instant::now();
    loop {
        match link.as_mut() {
            // Command mode: lines end at CR; each gets its result code.
            None => {
                let n = tokio::select! {
                    r = uart.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                    _ = reset.changed() => { line.clear(); continue }
                    _ = network.changed() => continue,
                };
                for &b in &buf[..n] {
                    if b != b'\r' {
                        line.push(b);
                        continue;
                    }
                    // Like a real modem, look for the `AT` prefix: junk before it (a NUL
                    // from a resetting UART, a `+++` sent in command mode) is skipped.
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let cmd = text.find("AT").map_or("", |i| text[i..].trim()).to_string();
                    line.clear();
                    let reply = if cmd.starts_with("AT+CCLK?") {
                        format!("\r\n+CCLK: \"{}+00\"\r\n\r\nOK\r\n", cclk_now())
                    } else if (cmd.starts_with("AT+CIPOPEN=") || cmd.starts_with("AT+CCHOPEN="))
                        && !*network.borrow()
                    {
                        "\r\nERROR\r\n".into()
                    } else if cmd.starts_with("AT+CSSLCFG=\"cacert\"") {
                        ca_file = cmd.split('"').nth(3).map(str::to_string);
                        "\r\nOK\r\n".into()
                    } else if cmd.starts_with("AT+CIPOPEN=") || cmd.starts_with("AT+CCHOPEN=") {
                        let opened: Option<Box<dyn Link>> = if cmd.starts_with("AT+CIPOPEN=") {
                            match TcpStream::connect(broker.plain).await {
                                Ok(s) => Some(Box::new(s)),
                                Err(_) => None,
                            }
                        } else {
                            open_tls(&broker, &cmd, ca_file.as_deref()).await
                        };
                        match opened {
                            Some(s) => {
                                connections.fetch_add(1, Ordering::Relaxed);
                                link = Some(s);
                                "\r\nCONNECT 115200\r\n".into()
                            }
                            None => "\r\nERROR\r\n".into(),
                        }
                    } else if cmd.starts_with("AT+CPOF") {
                        // The board cuts the supply next and powers it up for its next
                        // report: this emulator only counts it.
                        power_offs.fetch_add(1, Ordering::Relaxed);
                        "\r\nOK\r\n".into()
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
            // Transparent mode: bytes both ways; `+++` after a silence (the modem's guard
            // time: the UART may hand its three bytes over one at a time), or a reset,
            // hangs up.
            Some(s) => {
                tokio::select! {
                    r = uart.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let after_silence = quiet_since.elapsed() >= GUARD;
                            quiet_since = std::time::Instant::now();
                            let data = &buf[..n];
                            if (after_silence || !held.is_empty())
                                && data.iter().all(|&b| b == b'+')
                                && held.len() + n <= 3
                            {
                                held.extend_from_slice(data);
                                if held.len() == 3 {
                                    held.clear();
                                    link = None;
                                    let _ = uart.write_all(b"\r\nOK\r\n").await;
                                }
                            } else {
                                let mut out = std::mem::take(&mut held);
                                out.extend_from_slice(data);
                                if s.write_all(&out).await.is_err() {
                                    link = None;
                                    let _ = uart.write_all(b"\r\nCLOSED\r\n").await;
                                }
                            }
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
                    _ = network.changed() => if !*network.borrow() {
                        link = None;
                        let _ = uart.write_all(b"\r\nCLOSED\r\n").await;
                    },
                }
            }
        }
    }
}

/// `yy/MM/dd,hh:mm:ss` in UTC, from the ISO 8601 form `2026-11-22T18:30:05Z`.
fn cclk_now() -> String {
    let iso = protocol::json::UtcTime((gateway::clock::Clock::system().now_ms() / 1000) as u32)
        .to_string();
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
    /// Boots `image` with `blob` at its flash address (no blob: `None`), UART0 to `modem`,
    /// its PSRAM (counter pages and frame ring) in `dir/flash.bin`, kept across boots.
    pub fn boot(image: &Path, blob: Option<&Path>, modem: SocketAddr, dir: &Path) -> Self {
        let monitor = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let console = dir.join("console.log");
        let flash = dir.join("flash.bin");
        let mut args: Vec<String> = vec![
            "-M".into(),
            "mps2-an386,memory-backend=flash".into(),
            "-object".into(),
            format!(
                "memory-backend-file,id=flash,size={PSRAM},mem-path={},share=on",
                flash.display()
            ),
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
        // The console file is recreated by each QEMU: keep what the earlier boots said.
        let earlier = std::fs::read_to_string(&console).unwrap_or_default();
        std::fs::write(dir.join("console.earlier"), earlier).unwrap();
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

    /// The QEMU process id (its CPU time is the emulated core's activity).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Power cut: QEMU killed (SIGKILL); only the PSRAM file (the flash) remains.
    pub fn power_cut(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The console so far, earlier QEMU processes on the same flash included.
    pub fn console(&self) -> String {
        let earlier = self.console.with_file_name("console.earlier");
        std::fs::read_to_string(earlier).unwrap_or_default()
            + &std::fs::read_to_string(&self.console).unwrap_or_default()
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

/// The frames waiting in the board's ring, read from its flash file (board off): sealed
/// bytes, oldest first.
pub fn waiting_frames(dir: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::read(dir.join("flash.bin")).unwrap();
    let mut flash = firmware::simulated::RamFlash::<RING_LEN, 4096>::default();
    flash
        .bytes_mut()
        .copy_from_slice(&file[RING_OFFSET..RING_OFFSET + RING_LEN]);
    let mut ring = firmware::ring::FrameRing::resume(flash).unwrap();
    let (mut out, mut pos) = (Vec::new(), None);
    while let Some(p) = ring.next_unacked(pos).unwrap() {
        let mut buf = [0u8; firmware::ring::MAX_FRAME];
        let n = ring.read(p, &mut buf).unwrap();
        out.push(buf[..n].to_vec());
        pos = Some(p);
    }
    out
}
