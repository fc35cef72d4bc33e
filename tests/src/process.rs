//! The gateway as a separate process (`target/<profile>/gateway run`), so tests can
//! `kill -9` it like a power cut and start it again on the same data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings written into the process's TOML config.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Client id, also its data directory name.
    pub client_id: String,
    /// Subscription group.
    pub group: String,
    /// Broker.
    pub broker: SocketAddr,
    /// InfluxDB 1.x address, or `None` for line-protocol files.
    pub influx: Option<SocketAddr>,
    /// Buffer limit and segment size, MiB.
    pub buffer_mib: (u64, u64),
    /// How long a batch waits for more lines.
    pub linger: Duration,
    /// Data directory (default: `data-<client id>` in the test directory).
    pub data_dir: Option<PathBuf>,
    /// Registry file (default: `devices.toml` in the test directory).
    pub registry: Option<PathBuf>,
    /// The database at `influx` is VictoriaMetrics (its InfluxDB-compatible `/write`).
    pub victoria: bool,
    /// Write bodies gzip-compressed (`database.gzip`).
    pub gzip: bool,
    /// The public status view's address and communes (`http.public_listen`,
    /// `http.public_tenants`).
    pub public: Option<(SocketAddr, Vec<String>)>,
    /// `mqtt.keep_alive` (the gateway's default when `None`).
    pub keep_alive: Option<Duration>,
    /// More TOML appended to the config (whole sections, e.g. `[validation]`).
    pub extra_toml: String,
    /// Environment of the process (e.g. libfaketime's, to move its clock).
    pub env: Vec<(String, String)>,
}

impl GatewaySettings {
    /// Its own group, InfluxDB 1.x (or files), a 64 MiB buffer.
    pub fn new(client_id: &str, broker: SocketAddr, influx: Option<SocketAddr>) -> Self {
        Self {
            client_id: client_id.into(),
            group: client_id.into(),
            broker,
            influx,
            buffer_mib: (64, 8),
            linger: Duration::from_millis(200),
            data_dir: None,
            registry: None,
            victoria: false,
            gzip: false,
            public: None,
            keep_alive: None,
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

/// One gateway process per database of the same fleet: `gw-a` writing InfluxDB 1.x at
/// `influx`, `gw-b` writing VictoriaMetrics at `victoria`, each in its own group (so each
/// gets every message).
pub fn one_per_database(
    dir: &Path,
    broker: SocketAddr,
    influx: SocketAddr,
    victoria: SocketAddr,
) -> (GatewayProcess, GatewayProcess) {
    let to_influx = GatewayProcess::start(dir, &GatewaySettings::new("gw-a", broker, Some(influx)));
    let mut settings = GatewaySettings::new("gw-b", broker, Some(victoria));
    settings.victoria = true;
    (to_influx, GatewayProcess::start(dir, &settings))
}

/// The admin token of every gateway process's config (`POST /quarantine/replay`,
/// `POST /registry/reload`).
pub const ADMIN_TOKEN: &str = "test-admin-token-process-0123456789";

/// A gateway process; killed on drop.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Option<Child>,
    /// Its config file.
    pub config: PathBuf,
    /// Its metrics endpoint.
    pub http: SocketAddr,
    log: PathBuf,
    env: Vec<(String, String)>,
}

/// The `gateway` binary of the same profile: next to this executable (a `src/bin`
/// program) or one directory up (a test, in `deps/`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let here = exe.parent().unwrap();
    let bin = [here, here.parent().unwrap()]
        .iter()
        .map(|d| d.join("gateway"))
        .find(|b| b.exists());
    bin.unwrap_or_else(|| {
        panic!(
            "no gateway binary near {}: `cargo test --workspace` builds it (gateway/tests/cli.rs \
             needs it); alone, run `cargo build -p gateway` first",
            exe.display()
        )
    })
}

/// CPU seconds (user and system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime is the 14th, stime the 15th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Peak resident set size of process `pid`, MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs the gateway binary's command `args` to its end (never with `VIGIE_CONFIG` from
/// the environment).
pub fn cli(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .env_remove("VIGIE_CONFIG")
        .output()
        .unwrap()
}

/// Runs a program to success (panics with its output otherwise); its standard output.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's standard output and error, together.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl GatewayProcess {
    /// Writes the config under `dir` and starts the process.
    pub fn start(dir: &Path, s: &GatewaySettings) -> Self {
        let (config, http) = Self::write_config(dir, s);
        let log = dir.join(format!("{}.log", s.client_id));
        let mut g = Self {
            child: None,
            config,
            http,
            log,
            env: s.env.clone(),
        };
        g.restart();
        g
    }

    /// Writes the config of `s` under `dir`: its path and the status port it names.
    pub fn write_config(dir: &Path, s: &GatewaySettings) -> (PathBuf, SocketAddr) {
        let http = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let database = match s.influx {
            Some(addr) => format!(
                "[database]\napi = \"v1\"\nkind = \"{kind}\"\nurl = \"http://{addr}\"\n\
                 prefix = \"vigie_\"\ntimeout = \"3s\"\ngzip = {gzip}\n",
                kind = if s.victoria {
                    "victoriametrics"
                } else {
                    "influxdb"
                },
                gzip = s.gzip,
            ),
            None => String::new(),
        };
        let text = format!(
            "[gateway]\ndata_dir = \"{data}\"\nregistry = \"{registry}\"\n\
             [mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"{id}\"\ngroup = \"{group}\"\n\
             username = \"{id}\"\npassword = \"{password}\"\n{keep_alive}\
             {database}\
             [batch]\nlinger = \"{linger}ms\"\nmin_backoff = \"100ms\"\nmax_backoff = \"1s\"\n\
             [buffer]\nmax_mib = {max}\nsegment_mib = {seg}\n\
             [http]\nlisten = \"{http}\"\nadmin_token = \"{token}\"\n{public}[log]\nlevel = \"info\"\n{extra}",
            extra = s.extra_toml,
            token = ADMIN_TOKEN,
            keep_alive = s.keep_alive.map_or_else(String::new, |k| {
                format!("keep_alive = \"{}s\"\n", k.as_secs())
            }),
            public = s
                .public
                .as_ref()
                .map_or_else(String::new, |(addr, tenants)| format!(
                    "public_listen = \"{addr}\"\npublic_tenants = {tenants:?}\n"
                )),
            data = s
                .data_dir
                .clone()
                .unwrap_or_else(|| dir.join(format!("data-{}", s.client_id)))
                .display(),
            registry = s
                .registry
                .clone()
                .unwrap_or_else(|| dir.join("devices.toml"))
                .display(),
            host = s.broker.ip(),
            port = s.broker.port(),
            id = s.client_id,
            password = crate::fleet::password(&s.client_id).expose(),
            group = s.group,
            max = s.buffer_mib.0,
            seg = s.buffer_mib.1,
            linger = s.linger.as_millis(),
        );
        let config = dir.join(format!("{}.toml", s.client_id));
        std::fs::write(&config, text).unwrap();
        (config, http)
    }

    /// Starts the process again with the same config and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&self.config)
            // Times on the status page in UTC, as the tests compute them.
            .env("TZ", "UTC")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while self.metric("vigie_mqtt_connected").unwrap_or(0.0) < 1.0 {
            assert!(
                Instant::now() < until,
                "gateway did not connect:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: no flush, no ack, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns how long the shutdown took.
    pub fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "gateway exited with {status}:\n{}",
                self.log()
            );
        }
        started.elapsed()
    }

    /// `GET path`: status code and body; `None` if the process does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.http);
        // A thread of its own: callers may be sync code inside an async test.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(300))
                    .timeout(Duration::from_secs(5))
                    .build()
                    .ok()?;
                let answer = client.get(url).send().await.ok()?;
                let code = answer.status().as_u16();
                Some((code, answer.text().await.ok()?))
            })
        })
        .join()
        .ok()?
    }

    /// `/readyz`: whether ready, and the summary it gives.
    pub fn readyz(&self) -> Option<(bool, String)> {
        let (code, body) = self.get("/readyz")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some((code == 200, v["summary"].as_str()?.to_string()))
    }

    /// `/devices`: the device state it serves; `None` if the process does not answer.
    pub fn devices(&self) -> Option<gateway::observe::devices::DeviceBook> {
        let (_, body) = self.get("/devices")?;
        gateway::observe::devices::DeviceBook::from_json(&body).ok()
    }

    /// Sum of a metric over its labels, from `/metrics`; `None` if the process does not answer.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics")?;
        Some(gateway::observe::metrics::sum_samples(&text, name))
    }

    /// Waits until metric `name` stops changing (unchanged over one second), then returns
    /// it. For intake on a full buffer or disk: the gateway stores what still fits, in
    /// smaller and smaller pieces, then takes nothing more.
    pub fn settled(&self, name: &str, limit: Duration) -> f64 {
        let until = Instant::now() + limit;
        let mut last = self.metric(name).unwrap_or(0.0);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.metric(name).unwrap_or(0.0);
            if now == last {
                return now;
            }
            assert!(Instant::now() < until, "{name} never settled: {now}");
            last = now;
        }
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The gateway inside the test process (when no test needs to kill it like a power cut).
#[derive(Debug)]
pub struct InProcessGateway {
    /// Its metrics, read directly.
    pub metrics: std::sync::Arc<gateway::observe::metrics::Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), gateway::RunError>>,
}

impl InProcessGateway {
    /// Starts it on `config` and waits until it is connected to the broker.
    pub async fn start(config: gateway::config::Config) -> Self {
        Self::start_on(&tokio::runtime::Handle::current(), config).await
    }

    /// The same, its tasks on `runtime` (one of its own: threads apart from the test's).
    pub async fn start_on(
        runtime: &tokio::runtime::Handle,
        config: gateway::config::Config,
    ) -> Self {
        let metrics = std::sync::Arc::new(gateway::observe::metrics::Metrics::default());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = runtime.spawn(gateway::run_with_metrics(config, stop_rx, metrics.clone()));
        crate::wait_for("gateway connected", Duration::from_secs(20), async || {
            metrics.counts().mqtt_connected
        })
        .await;
        Self {
            metrics,
            stop,
            task,
        }
    }

    /// Starts a gateway (client id and group `id`) on `broker` for the registry in `dir`
    /// (`fleet::write_registry`, written before the broker started), writing InfluxDB 1.x
    /// at `influx`.
    pub async fn for_registry(
        dir: &Path,
        id: &str,
        broker: SocketAddr,
        influx: SocketAddr,
    ) -> Self {
        use crate::fleet;
        let db = fleet::database(gateway::config::DatabaseApi::V1, influx);
        Self::start(fleet::gateway_config(dir, id, broker, Some(db))).await
    }

    /// What it counted so far.
    pub fn counts(&self) -> gateway::observe::metrics::Counts {
        self.metrics.counts()
    }

    /// Shuts it down and checks it ended cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}
