//! Real servers started by the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process; killed (by PID) and reaped on drop.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its private directory (data, config, log).
    pub dir: tempfile::TempDir,
    /// Its TLS listener and the test CA that signed its certificate, if it has one.
    pub tls: Option<(SocketAddr, crate::tls::TestPki)>,
    restart: Vec<String>,
}

impl Server {
    /// A server not started yet.
    pub(crate) fn new(
        name: &'static str,
        program: &str,
        args: &[String],
        dir: tempfile::TempDir,
        addr: SocketAddr,
    ) -> Self {
        Self {
            name,
            child: None,
            addr,
            dir,
            tls: None,
            restart: std::iter::once(program.to_string())
                .chain(args.iter().cloned())
                .collect(),
        }
    }

    /// Starts (or restarts) the process with the same arguments and directory.
    pub fn start(&mut self) {
        if let Err(log) = self.try_start() {
            panic!(
                "{} could not bind its port:
{log}",
                self.name
            );
        }
    }

    /// Starts the process; `Err` with its log when it exited before listening because a
    /// port it was given is taken (any other early exit panics).
    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(&self.restart[0])
            .args(&self.restart[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({}): {e}; is the Debian package installed?",
                    self.name, self.restart[0]
                )
            });
        self.child = Some(child);
        self.wait_listening()
    }

    /// Stops the process: SIGTERM (clean shutdown, state saved), or SIGKILL.
    pub fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            let sig = if kill { "-KILL" } else { "-TERM" };
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The TLS listener's address and the CA file that verifies it (Mosquitto).
    pub fn tls(&self) -> (SocketAddr, &Path) {
        let (addr, pki) = self.tls.as_ref().expect("a server with a TLS listener");
        (*addr, &pki.ca)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                let log = self.log();
                if log.to_lowercase().contains("address already in use") {
                    return Err(log);
                }
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < until,
                "{} does not listen on {}:\n{}",
                self.name,
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(true);
    }
}

pub(crate) fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], crate::free_port()))
}

/// Starts the server `make` sets up on ports it picks itself. A port can be taken between
/// [`crate::free_port`] and the server's bind (the kernel hands the same ports to other
/// processes' outgoing connections): then the server is set up again on new ports, up to
/// five times.
pub(crate) fn launch(make: impl Fn() -> Server) -> Server {
    let mut last = String::new();
    for _ in 0..5 {
        let mut server = make();
        match server.try_start() {
            Ok(()) => return server,
            Err(log) => last = log,
        }
    }
    panic!("every port picked was taken before the server bound it (five tries):\n{last}");
}

/// Mosquitto as Debian installs it with the project's drop-in: Debian's own
/// `/etc/mosquitto/mosquitto.conf` as the main file (pid file, persistence directory, log
/// and include directory swapped for the test's own) including `deploy/mosquitto.conf`
/// (its port swapped).
///
/// The broker's accounts come from `registry_dir/broker-access.json`, the file
/// `fleet::write_registry` (the product's `access::write`) puts beside the registry: write
/// the registry first.
pub fn mosquitto(registry_dir: &Path) -> Server {
    launch(|| mosquitto_with(registry_dir, BrokerSetup::new(), false))
}

/// Where a test broker listens and the certificate its TLS listener serves, chosen before
/// it starts (a blob written first names them).
#[derive(Debug)]
pub struct BrokerSetup {
    /// The loopback listener.
    pub addr: SocketAddr,
    /// The TLS listener.
    pub tls_addr: SocketAddr,
    /// Its CA, certificate and key.
    pub pki: crate::tls::TestPki,
    /// Run as Debian runs it: started as root, it drops to the user `mosquitto`, so it
    /// reads the project's files only through their group (the install test). Otherwise
    /// it stays root.
    pub as_mosquitto_user: bool,
    _dir: Option<tempfile::TempDir>,
}

impl BrokerSetup {
    /// Free ports and a fresh test CA.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut setup = Self::with_pki(crate::tls::pki(dir.path()));
        setup._dir = Some(dir);
        setup
    }

    /// Free ports, and the certificate files `pki` names (`broker-cert` made them).
    pub fn with_pki(pki: crate::tls::TestPki) -> Self {
        Self {
            addr: addr(),
            tls_addr: addr(),
            pki,
            as_mosquitto_user: false,
            _dir: None,
        }
    }
}

impl Default for BrokerSetup {
    fn default() -> Self {
        Self::new()
    }
}

/// [`mosquitto`] as `setup` says (on its ports: no second try if one is taken).
pub fn mosquitto_at(registry_dir: &Path, setup: BrokerSetup) -> Server {
    let mut server = mosquitto_with(registry_dir, setup, false);
    server.start();
    server
}

/// [`mosquitto`] logging everything (`log_type all`: each denied publication too).
pub fn mosquitto_logging_all(registry_dir: &Path) -> Server {
    launch(|| mosquitto_with(registry_dir, BrokerSetup::new(), true))
}

/// The broker `setup` describes, not started.
fn mosquitto_with(registry_dir: &Path, setup: BrokerSetup, log_all: bool) -> Server {
    let (addr, tls_addr) = (setup.addr, setup.tls_addr);
    let access = registry_dir.join("broker-access.json");
    assert!(
        access.exists(),
        "{} missing: write the registry before starting the broker",
        access.display()
    );
    let dir = tempfile::tempdir().unwrap();
    // The certificate files move into the broker's own directory.
    let pki = crate::tls::TestPki {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
    };
    for (from, to) in [
        (&setup.pki.ca, &pki.ca),
        (&setup.pki.cert, &pki.cert),
        (&setup.pki.key, &pki.key),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    let debian = std::fs::read_to_string("/etc/mosquitto/mosquitto.conf")
        .expect("/etc/mosquitto/mosquitto.conf (Debian package mosquitto)");
    let mut main = String::new();
    for line in debian.lines() {
        let swapped = match line.split_whitespace().next() {
            Some("pid_file") => format!("pid_file {}/mosquitto.pid", dir.path().display()),
            Some("persistence_location") => {
                format!("persistence_location {}/", dir.path().display())
            }
            Some("log_dest") => "log_dest stderr".to_string(),
            Some("include_dir") => format!("include_dir {}", conf_d.display()),
            _ => line.to_string(),
        };
        main.push_str(&swapped);
        main.push('\n');
    }
    assert!(
        main.contains("include_dir"),
        "Debian's mosquitto.conf no longer includes conf.d:\n{debian}"
    );
    if setup.as_mosquitto_user {
        // Its own directory becomes the broker user's, as /var/lib/mosquitto is.
        let chown = Command::new("chown")
            .arg("-R")
            .arg("mosquitto:mosquitto")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(chown.success(), "chown to the mosquitto user (needs root)");
    } else {
        // Running as root in CI: keep root rather than dropping to a user that cannot
        // write here.
        main.push_str("user root\n");
    }
    if log_all {
        main.push_str("log_type all\n");
    }
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto.conf");
    let mut vigie = String::new();
    for line in std::fs::read_to_string(project).unwrap().lines() {
        // The loopback listener, then the TLS one, each on its own free port.
        if line.starts_with("listener 1883") {
            vigie.push_str(&format!("listener {} 127.0.0.1\n", addr.port()));
        } else if line.starts_with("listener 8883") {
            vigie.push_str(&format!("listener {} 127.0.0.1\n", tls_addr.port()));
        } else if line.starts_with("certfile ") {
            vigie.push_str(&format!("certfile {}\n", pki.cert.display()));
        } else if line.starts_with("keyfile ") {
            vigie.push_str(&format!("keyfile {}\n", pki.key.display()));
        } else if line.starts_with("plugin_opt_config_file ") {
            vigie.push_str(&format!("plugin_opt_config_file {}\n", access.display()));
        } else {
            vigie.push_str(line);
            vigie.push('\n');
        }
    }
    std::fs::write(conf_d.join("vigie.conf"), vigie).unwrap();
    let path = dir.path().join("mosquitto.conf");
    std::fs::write(&path, main).unwrap();
    let mut server = Server::new(
        "mosquitto",
        "mosquitto",
        &["-c".into(), path.display().to_string()],
        dir,
        addr,
    );
    server.tls = Some((tls_addr, pki));
    server
}

/// InfluxDB 1.x (`influxd`), HTTP API only, everything under a temporary directory.
pub fn influxdb() -> Server {
    launch(influxdb_setup)
}

fn influxdb_setup() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (http, rpc) = (addr(), addr());
    let d = dir.path().display();
    let conf = format!(
        "reporting-enabled = false\nbind-address = \"{rpc}\"\n\
         [meta]\n  dir = \"{d}/meta\"\n\
         [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
         [monitor]\n  store-enabled = false\n\
         [http]\n  bind-address = \"{http}\"\n  log-enabled = false\n\
         [ifql]\n  enabled = false\n"
    );
    let path = dir.path().join("influxdb.conf");
    std::fs::write(&path, conf).unwrap();
    Server::new(
        "influxd",
        "influxd",
        &["-config".into(), path.display().to_string()],
        dir,
        http,
    )
}

/// An InfluxDB server's RPC address, where `influxd backup` and `influxd restore` reach it
/// (its config's top-level `bind-address`).
pub fn influxdb_rpc(influx: &Server) -> SocketAddr {
    let conf = std::fs::read_to_string(influx.dir.path().join("influxdb.conf")).unwrap();
    let line = conf
        .lines()
        .find(|l| l.starts_with("bind-address"))
        .unwrap();
    line.split('"').nth(1).unwrap().parse().unwrap()
}

/// A VictoriaMetrics server's `-storageDataPath`.
pub fn victoria_data(victoria: &Server) -> PathBuf {
    victoria.dir.path().join("data")
}

/// VictoriaMetrics with a 100-year retention (its default month drops older points).
pub fn victoria_metrics() -> Server {
    victoria_metrics_with(&[])
}

/// VictoriaMetrics as Debian's package runs it: no `-retentionPeriod`, so one month
/// (it answers 204 while it drops older samples).
pub fn victoria_metrics_debian_default() -> Server {
    launch(|| victoria_metrics_on(addr(), &["-retentionPeriod=".to_string()]))
}

/// VictoriaMetrics that keeps at most `series` new series an hour
/// (`-storage.maxHourlySeries`): it answers 204 and drops the samples of any series beyond.
pub fn victoria_metrics_series_limit(series: u32) -> Server {
    launch(move || victoria_metrics_on(addr(), &[format!("-storage.maxHourlySeries={series}")]))
}

/// VictoriaMetrics serving HTTPS with the test CA's server certificate.
pub fn victoria_metrics_tls(pki: &crate::tls::TestPki) -> Server {
    victoria_metrics_with(&[
        "-tls".to_string(),
        format!("-tlsCertFile={}", pki.cert.display()),
        format!("-tlsKeyFile={}", pki.key.display()),
    ])
}

fn victoria_metrics_with(extra: &[String]) -> Server {
    launch(|| victoria_metrics_setup(extra))
}

fn victoria_metrics_setup(extra: &[String]) -> Server {
    victoria_metrics_on(addr(), extra)
}

fn victoria_metrics_on(http: SocketAddr, extra: &[String]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        format!("-storageDataPath={}/data", dir.path().display()),
        format!("-httpListenAddr={http}"),
        "-retentionPeriod=100y".to_string(),
        // Queries see samples as soon as they are flushed (the default hides the last 30 s,
        // for scrapes still arriving), so a test can query what it just wrote.
        "-search.latencyOffset=1s".to_string(),
    ];
    // `-retentionPeriod=` alone: the flag left at its default, as Debian runs it.
    if extra.iter().any(|a| a == "-retentionPeriod=") {
        args.retain(|a| !a.starts_with("-retentionPeriod"));
    }
    args.extend(extra.iter().filter(|a| *a != "-retentionPeriod=").cloned());
    Server::new("victoria-metrics", "victoria-metrics", &args, dir, http)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose port was taken before it bound it is set up again on a new one.
    #[test]
    fn a_port_taken_before_the_bind_is_picked_again() {
        // Taken the way CI saw it: the local end of another process's outgoing connection.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let outgoing = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let taken = outgoing.local_addr().unwrap();
        let tries = std::cell::Cell::new(0);
        let server = launch(|| {
            tries.set(tries.get() + 1);
            let port = if tries.get() == 1 { taken } else { addr() };
            victoria_metrics_on(port, &[])
        });
        assert_eq!(
            tries.get(),
            2,
            "one try on the taken port, one on a new one"
        );
        assert_ne!(server.addr, taken);
        assert!(std::net::TcpStream::connect(server.addr).is_ok());
    }
}
