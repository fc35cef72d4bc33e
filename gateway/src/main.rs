//! `gateway` binary: parses the command line, sets up logging, runs the command.

use clap::{Parser, Subcommand};
use gateway::config::{Config, LogFormat};
use gateway::fleet::registry::{DeviceKind, Enrolment, Metadata};
use gateway::ops;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;
use vigie_core::output::opendata::Resolution;

#[derive(Parser)]
#[command(
    name = "vigie-gateway",
    version,
    about = "Vigie gateway: authenticated sensor frames from MQTT to InfluxDB, nothing lost"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// Configuration file (see gateway.example.toml).
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file, its registry and data directory, then exit (run it as
    /// the service user).
    CheckConfig {
        /// Configuration file.
        config: PathBuf,
        /// Also reach the broker and check that each commune's database exists.
        #[arg(long)]
        connect: bool,
    },
    /// Print the commented example configuration (every key, with its default).
    Config,
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        /// Directory to write `man/` and `completions/` into.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Manage devices in the registry.
    #[command(subcommand)]
    Devices(Box<DevicesCommand>),
    /// Manage the gateways' broker accounts.
    #[command(subcommand)]
    Gateways(GatewaysCommand),
    /// Manage the communes' databases and their retention.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Issue the broker's TLS certificate from the deployment's CA (created beside the
    /// registry on first use).
    BrokerCert {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// Host name or address devices and gateways dial (repeat for several).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Where to write vigie-broker.crt and vigie-broker.key.
        #[arg(long, default_value = "/etc/mosquitto/certs")]
        out_dir: PathBuf,
    },
    /// Inspect or replay rejected frames.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Export a commune's readings as open data (FIWARE NGSI-LD, CSV, GeoJSON), read back
    /// from the database; only the commune's public fields, no keys or counters.
    Export {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The commune.
        #[arg(long)]
        tenant: String,
        /// From this UTC time (included): `2026-11-01` or `2026-11-01T06:00:00Z`.
        #[arg(long, value_parser = ops::parse_utc)]
        from: u32,
        /// To this UTC time (excluded).
        #[arg(long, value_parser = ops::parse_utc)]
        to: u32,
        /// Output format.
        #[arg(long, value_enum)]
        format: ops::export::Format,
        /// Every reading, or hourly or daily means.
        #[arg(long, default_value = "raw", value_parser = choice::<Resolution>(Resolution::NAMES))]
        resolution: Resolution,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a commune's or a device's readings everywhere (GDPR): database, buffer,
    /// quarantine, line-protocol files; with the service stopped. Without --yes, only
    /// says what it would erase.
    Erase {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The commune.
        #[arg(long)]
        tenant: String,
        /// Only this device of the commune.
        #[arg(long)]
        device: Option<String>,
        /// Only readings measured before this UTC time: `2026-01-01` or
        /// `2026-01-01T12:00:00Z`.
        #[arg(long, value_parser = ops::parse_utc)]
        before: Option<u32>,
        /// Erase for good (otherwise a dry run).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Register a new device, write its provisioning blob and its broker account (an id
    /// that exists is refused: `rotate` re-keys).
    Add(DeviceArgs),
    /// Re-key an existing device: new key, key epoch and broker password, new blob; what
    /// is not given again stays as it was.
    Rotate(DeviceArgs),
    /// Enrol many devices from a CSV file, each row as `devices add` would (the same
    /// checks; an id that exists is refused), one blob per device, one summary line.
    /// Columns, named on the first line: tenant, id, kind (air-quality, waste-bin), and
    /// any of site, zone, latitude, longitude, place, insee, container, capacity_l,
    /// bin_depth_mm, sample_interval, heartbeat.
    Import {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The CSV file.
        #[arg(long)]
        csv: PathBuf,
        /// Folder for the blobs, `<tenant>-<id>.vgp` each.
        #[arg(long, default_value = ".")]
        blob_dir: PathBuf,
        /// Broker host every board connects to (default: mqtt.host).
        #[arg(long)]
        broker_host: Option<String>,
        /// Broker port (default: mqtt.port).
        #[arg(long)]
        broker_port: Option<u16>,
        /// The CA of the broker's certificate: the boards connect over TLS (as `devices
        /// add --broker-ca`).
        #[arg(long)]
        broker_ca: Option<PathBuf>,
    },
    /// List devices, with last-seen times from the running service.
    List {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Show each frame of one device as the running service judges it (stored, or
    /// rejected and why): the field check after flashing a board.
    Watch {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The device, as `tenant/device`, e.g. `lyon/aq-0001`.
        device: String,
        /// Stop after this many frames.
        #[arg(long)]
        count: Option<usize>,
        /// Give up after this many seconds (an error if --count was not reached).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Change where a device stands or what it watches (site, zone, coordinates, place,
    /// INSEE code, bin container and capacity): no new key, no new blob.
    Edit {
        #[command(flatten)]
        device: DeviceRef,
        #[command(flatten)]
        meta: Metadata,
    },
    /// Revoke a device: its frames are rejected from the next registry reload, its broker
    /// account is removed.
    Revoke(DeviceRef),
    /// Remove a device from the registry and the broker's accounts (its stored readings
    /// stay in the database).
    Remove(DeviceRef),
}

/// Which device, in which configuration.
#[derive(clap::Args)]
struct DeviceRef {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    config: PathBuf,
    /// Tenant id (commune), e.g. `lyon`.
    #[arg(long)]
    tenant: String,
    /// Device id, e.g. `aq-0001`.
    #[arg(long)]
    id: String,
}

/// A value of a core enum, checked by clap against its names (so help, man pages and
/// completions list them) and parsed by the core.
fn choice<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

#[derive(clap::Args)]
struct DeviceArgs {
    #[command(flatten)]
    device: DeviceRef,
    /// Device kind.
    #[arg(long, value_parser = choice::<DeviceKind>(DeviceKind::NAMES))]
    kind: DeviceKind,
    #[command(flatten)]
    meta: Metadata,
    /// Bin depth from sensor to bottom, mm (bins).
    #[arg(long)]
    bin_depth_mm: Option<u16>,
    /// Seconds between samples (default: 300; `rotate`: the device's).
    #[arg(long)]
    sample_interval: Option<u16>,
    /// Seconds after which a reading is sent even without change (default: 3600;
    /// `rotate`: the device's).
    #[arg(long)]
    heartbeat: Option<u16>,
    /// Broker host the board connects to (default: mqtt.host; `rotate`: the one its
    /// blob named).
    #[arg(long)]
    broker_host: Option<String>,
    /// Broker port the board connects to (default: mqtt.port; `rotate`: its blob's).
    #[arg(long)]
    broker_port: Option<u16>,
    /// PEM certificate of the CA that signed the broker's certificate: the board then
    /// connects over TLS and accepts only a broker chaining to it. Without it: plain TCP
    /// (`rotate`: the CA its blob pinned).
    #[arg(long)]
    broker_ca: Option<PathBuf>,
    /// Where to write the provisioning blob (default: `<tenant>-<id>.vgp`).
    #[arg(long)]
    blob_out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Create a commune's database (InfluxDB 1.x) with its retention; an existing one
    /// gets the new retention.
    Add {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The commune's id, as its devices carry it.
        #[arg(long)]
        tenant: String,
        /// How long readings are kept, e.g. `730d` (default: database.retention; none:
        /// for ever).
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
    },
    /// List the communes of the registry and their databases.
    List {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// A commune leaves: refused while it has devices; its database only with
    /// --drop-database.
    Remove {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// The commune's id.
        #[arg(long)]
        tenant: String,
        /// Also drop its database and every reading in it.
        #[arg(long)]
        drop_database: bool,
    },
}

#[derive(Subcommand)]
enum GatewaysCommand {
    /// Create (or renew) a gateway's broker account; each gateway needs its own.
    Add {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
        /// Account name (`a-z`, `0-9`, `-`), e.g. `gw-mairie`.
        #[arg(long)]
        username: String,
        /// Where to write the generated password (mode 0600).
        #[arg(long)]
        password_out: PathBuf,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List quarantined frames with their reasons.
    List {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
    /// Re-submit quarantined frames through the running service's pipeline.
    Replay {
        /// Configuration file.
        #[arg(long, env = "VIGIE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => match Config::load(&config) {
            Ok(c) => {
                init_tracing(c.log.format, &c.log.level);
                serve(c)
            }
            Err(e) => Err(e.to_string()),
        },
        Command::CheckConfig { config, connect } => {
            ops::check_config(&config, connect).map(|s| println!("{s}"))
        }
        Command::Config => {
            print!("{}", ops::example_config());
            Ok(())
        }
        Command::Generate { out_dir } => generate(&out_dir).map_err(|e| e.to_string()),
        Command::Devices(cmd) => devices(*cmd),
        Command::Tenants(cmd) => tenants(cmd),
        Command::BrokerCert {
            config,
            hosts,
            out_dir,
        } => load(&config)
            .and_then(|c| ops::broker_cert(&c.gateway, &hosts, &out_dir))
            .map(|s| println!("{s}")),
        Command::Gateways(GatewaysCommand::Add {
            config,
            username,
            password_out,
        }) => registry_change(&config, |c| {
            ops::gateways_add(&c.gateway, &username, &password_out)
        }),
        Command::Export {
            config,
            tenant,
            from,
            to,
            format,
            resolution,
            out,
        } => load(&config).and_then(|c| {
            let request = ops::export::Request {
                tenant,
                from_s: u64::from(from),
                to_s: u64::from(to),
                format,
                resolution,
                out,
            };
            // The data may be on standard output: the summary goes to the other stream.
            ops::export::run(&c, &request).map(|s| eprintln!("{}", s.line(&request)))
        }),
        Command::Quarantine(QuarantineCommand::List { config }) => load(&config)
            .and_then(|c| ops::quarantine_list(&c))
            .map(|s| println!("{s}")),
        Command::Quarantine(QuarantineCommand::Replay { config }) => load(&config)
            .and_then(|c| ops::quarantine_replay(&c))
            .map(|s| println!("{s}")),
        Command::Erase {
            config,
            tenant,
            device,
            before,
            yes,
        } => load(&config)
            .and_then(|c| ops::erase(&c, &tenant, device.as_deref(), before, yes))
            .map(|s| println!("{s}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Man pages (one per command) and bash, zsh and fish completions, from the clap
/// definitions, so they always match the binary.
fn generate(out_dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let (man, completions) = (out_dir.join("man"), out_dir.join("completions"));
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "vigie-gateway", &completions)?;
    }
    Ok(())
}

fn load(path: &std::path::Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

fn tenants(cmd: TenantsCommand) -> Result<(), String> {
    let out = match cmd {
        TenantsCommand::Add {
            config,
            tenant,
            retention,
        } => ops::tenants_add(&load(&config)?, &tenant, retention),
        TenantsCommand::List { config } => ops::tenants_list(&load(&config)?),
        TenantsCommand::Remove {
            config,
            tenant,
            drop_database,
        } => ops::tenants_remove(&load(&config)?, &tenant, drop_database),
    }?;
    println!("{out}");
    Ok(())
}

fn devices(cmd: DevicesCommand) -> Result<(), String> {
    match cmd {
        DevicesCommand::Add(a) => enrol(a, ops::Enrol::Add),
        DevicesCommand::Rotate(a) => enrol(a, ops::Enrol::Rotate),
        DevicesCommand::Import {
            config,
            csv,
            blob_dir,
            broker_host,
            broker_port,
            broker_ca,
        } => import(
            &config,
            &csv,
            &blob_dir,
            (broker_host, broker_port, broker_ca),
        ),
        DevicesCommand::List { config } => load(&config)
            .and_then(|c| ops::devices_list(&c))
            .map(|s| println!("{s}")),
        DevicesCommand::Watch {
            config,
            device,
            count,
            timeout,
        } => {
            let c = load(&config)?;
            let (tenant, id) = device
                .split_once('/')
                .ok_or_else(|| format!("{device:?}: name the device as tenant/device"))?;
            let timeout = timeout.map(std::time::Duration::from_secs);
            let seen = ops::devices_watch(&c, tenant, id, count, timeout, &mut |line| {
                println!("{line}")
            })?;
            println!("{}", seen.summary(&device));
            Ok(())
        }
        DevicesCommand::Edit { device, meta } => registry_change(&device.config, |c| {
            ops::devices_edit(&c.gateway, &device.tenant, &device.id, &meta)
        }),
        DevicesCommand::Revoke(d) => registry_change(&d.config, |c| {
            ops::devices_revoke(&c.gateway, &d.tenant, &d.id)
        }),
        DevicesCommand::Remove(d) => registry_change(&d.config, |c| {
            ops::devices_remove(&c.gateway, &d.tenant, &d.id)
        }),
    }
}

/// A command that changes the registry: its report, then whether the running gateway
/// loaded the change.
fn registry_change(
    config: &std::path::Path,
    change: impl FnOnce(&Config) -> Result<String, String>,
) -> Result<(), String> {
    let c = load(config)?;
    println!("{}", change(&c)?);
    println!("{}", ops::reload(&c)?);
    Ok(())
}

fn enrol(a: DeviceArgs, mode: ops::Enrol) -> Result<(), String> {
    let config = a.device.config.clone();
    registry_change(&config, |c| enrol_in(c, a, mode))
}

fn enrol_in(c: &Config, a: DeviceArgs, mode: ops::Enrol) -> Result<String, String> {
    let DeviceRef { tenant, id, .. } = a.device;
    let given = ops::Given {
        sample_interval: a.sample_interval.is_some(),
        heartbeat: a.heartbeat.is_some(),
        broker_host: a.broker_host.is_some(),
        broker_port: a.broker_port.is_some(),
        broker_ca: a.broker_ca.is_some(),
    };
    let add = ops::AddDevice {
        given,
        blob_out: a
            .blob_out
            .unwrap_or_else(|| PathBuf::from(format!("{tenant}-{id}.vgp"))),
        device: Enrolment {
            tenant,
            id,
            kind: a.kind,
            site: a.meta.site.clone(),
            zone: a.meta.zone.clone(),
            latitude: a.meta.latitude,
            longitude: a.meta.longitude,
            bin_depth_mm: a.bin_depth_mm,
            sample_interval_s: a.sample_interval.unwrap_or(300),
            heartbeat_s: a.heartbeat.unwrap_or(3600),
            broker_host: a
                .broker_host
                .or(c.mqtt.host.clone())
                .unwrap_or_else(|| c.mqtt.embedded_listen.ip().to_string()),
            broker_port: a.broker_port.unwrap_or(if c.mqtt.host.is_some() {
                c.mqtt.port
            } else {
                c.mqtt.embedded_listen.port()
            }),
            transport: ops::transport(a.broker_ca.as_deref())?,
        },
        meta: a.meta,
    };
    ops::devices_add(&c.gateway, &add, mode)
}

/// One row of a `devices import` file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvDevice {
    tenant: String,
    id: String,
    kind: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
    #[serde(default)]
    place: Option<String>,
    #[serde(default)]
    insee: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    capacity_l: Option<u32>,
    #[serde(default)]
    bin_depth_mm: Option<u16>,
    #[serde(default)]
    sample_interval: Option<u16>,
    #[serde(default)]
    heartbeat: Option<u16>,
}

/// `devices import`: each row enrolled on its own; the refused ones named by line, the
/// others kept. Run again after fixing, the rows already added are refused as enrolled.
fn import(
    config: &std::path::Path,
    csv_path: &std::path::Path,
    blob_dir: &std::path::Path,
    broker: (Option<String>, Option<u16>, Option<PathBuf>),
) -> Result<(), String> {
    let c = load(config)?;
    let file = || format!("{}", csv_path.display());
    let mut reader = csv::Reader::from_path(csv_path).map_err(|e| format!("{}: {e}", file()))?;
    let headers = reader
        .headers()
        .map_err(|e| format!("{}: {e}", file()))?
        .clone();
    let (mut added, mut refused) = (0usize, Vec::new());
    for record in reader.records() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(0, |p| p.line());
        let row = record
            .and_then(|r| r.deserialize::<CsvDevice>(Some(&headers)))
            .map_err(|e| e.to_string())
            .and_then(|d| import_args(config, blob_dir, &broker, d))
            .and_then(|a| enrol_in(&c, a, ops::Enrol::Add));
        match row {
            Ok(_) => added += 1,
            Err(e) => refused.push(format!("{}:{line}: {e}", file())),
        }
    }
    for r in &refused {
        eprintln!("{r}");
    }
    println!(
        "{}: {added} devices added, {} refused; blobs in {}",
        file(),
        refused.len(),
        blob_dir.display()
    );
    if added > 0 {
        println!(
            "{}",
            gateway::fleet::access::restart_hint(&c.gateway.broker_access())
        );
        println!("{}", ops::reload(&c)?);
    }
    match refused.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} rows refused (above): fix them and import the same file again (the rows \
             added are then refused as already enrolled)"
        )),
    }
}

/// The `devices add` arguments of one imported row.
fn import_args(
    config: &std::path::Path,
    blob_dir: &std::path::Path,
    broker: &(Option<String>, Option<u16>, Option<PathBuf>),
    d: CsvDevice,
) -> Result<DeviceArgs, String> {
    let kind: DeviceKind = d.kind.parse().map_err(|e| format!("{e}"))?;
    Ok(DeviceArgs {
        blob_out: Some(blob_dir.join(format!("{}-{}.vgp", d.tenant, d.id))),
        device: DeviceRef {
            config: config.to_path_buf(),
            tenant: d.tenant,
            id: d.id,
        },
        kind,
        meta: Metadata {
            site: d.site,
            zone: d.zone,
            latitude: d.latitude,
            longitude: d.longitude,
            place: d.place,
            insee: d.insee,
            container: d.container,
            capacity_l: d.capacity_l,
        },
        bin_depth_mm: d.bin_depth_mm,
        sample_interval: d.sample_interval,
        heartbeat: d.heartbeat,
        broker_host: broker.0.clone(),
        broker_port: broker.1,
        broker_ca: broker.2.clone(),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// A watch that turns true on SIGINT or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    rx
}

fn serve(config: Config) -> Result<(), String> {
    runtime()?.block_on(async {
        let stop = shutdown_signal();
        gateway::run(config, stop).await.map_err(|e| e.to_string())
    })
}

fn init_tracing(format: LogFormat, level: &str) {
    // rumqttd (embedded broker) logs every client disconnect as an error; keep it quiet.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let quiet = if level.contains("rumqttd") {
            String::new()
        } else {
            ",rumqttd=warn".into()
        };
        tracing_subscriber::EnvFilter::new(format!("{level}{quiet}"))
    });
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
