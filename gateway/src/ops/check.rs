//! `check-config`, `config` and the hidden `generate` (man pages, completions).

use crate::config::Config;
use crate::deliver::retention;
use crate::deliver::tenants::{self, TenantsError};
use crate::fleet::registry::{Registry, RegistryFile};
use crate::ops::OpsError;
use crate::ops::service::block_on;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file.
    pub config: PathBuf,
    /// Also reach the broker and check that each commune's database exists.
    #[arg(long)]
    pub connect: bool,
}

/// `check-config FILE`: loads and validates the config, the registry (which must exist:
/// the service refuses to start without it) and the data directory (writable by whoever
/// runs this: run it as the service user).
pub fn check_config(a: &CheckArgs) -> Result<String, OpsError> {
    let config = Config::load(&a.config)?;
    let registry =
        Registry::load_existing(&config.gateway.registry).map_err(OpsError::NoRegistry)?;
    check_writable(&config.gateway.data_dir)?;
    let broker = match &config.mqtt.host {
        Some(h) => format!("{h}:{}", config.mqtt.port),
        None => format!("embedded on {}", config.mqtt.embedded_listen),
    };
    let db = match &config.database {
        Some(d) => format!("{:?} API at {}", d.api, d.url_shown()),
        None => "none: line-protocol files".into(),
    };
    let mut out = format!(
        "config ok: broker {broker}; database {db}; {} devices in {}; data in {}",
        registry.len(),
        config.gateway.registry.display(),
        config.gateway.data_dir.display()
    );
    if a.connect {
        out.push('\n');
        out.push_str(&check_connections(&config, &registry)?);
    }
    Ok(out)
}

/// `check-config --connect`: the broker answers, and each commune of the registry has its
/// database. An error naming every problem found.
fn check_connections(config: &Config, registry: &Registry) -> Result<String, OpsError> {
    let (mut ok, mut problems) = (Vec::new(), Vec::new());
    if let Some(host) = &config.mqtt.host {
        let target = format!("{host}:{}", config.mqtt.port);
        match reach(&target) {
            // Its account is checked when the service connects (`/readyz` names a refusal):
            // logging in here with the service's client id would take over its session.
            Ok(()) => ok.push(format!("broker {target} answers")),
            Err(e) => problems.push(format!("broker {target}: {e}")),
        }
    }
    let tenants = registry.tenants();
    if let Some(db) = &config.database {
        let max_age = config.validation.max_age;
        match block_on(retention::ask(db, &tenants))? {
            Ok(keeps) => match retention::bound(max_age, &keeps) {
                (_, short) if short.is_empty() && !keeps.is_empty() => ok.push(format!(
                    "every database keeps validation.max_age ({})",
                    retention::words(max_age)
                )),
                (_, short) if short.is_empty() => {}
                (bound, short) => problems.push(retention::warning(max_age, bound, &short)),
            },
            Err(e) => problems.push(format!("retention not checked: {e}")),
        }
    }
    match tenants::Influx::new(config.database.as_ref()) {
        Ok(influx) => {
            for tenant in tenants {
                match block_on(influx.state(tenant))? {
                    Ok(s) if s.exists => ok.push(format!("database {} exists", s.name)),
                    Ok(s) => problems.push(format!(
                        "database {} of {tenant} is missing: `tenants add --tenant {tenant}`",
                        s.name
                    )),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        Err(TenantsError::NoDatabase | TenantsError::Unsupported(_)) => {}
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        Ok(format!("connections ok: {}", ok.join("; ")))
    } else {
        Err(OpsError::Connections(problems))
    }
}

/// A TCP connection to `target` within 3 s.
fn reach(target: &str) -> std::io::Result<()> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(target)?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop)
}

/// Whether files can be created in `dir` (or in the nearest existing parent, which the
/// service would create it in).
fn check_writable(dir: &Path) -> Result<(), OpsError> {
    let existing = dir
        .ancestors()
        .find(|d| d.is_dir())
        .ok_or_else(|| OpsError::NoDataDir(dir.to_path_buf()))?;
    let probe = existing.join(format!(".vigie-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(OpsError::NotWritable {
            dir: dir.to_path_buf(),
            probed: existing.to_path_buf(),
            source,
        }),
    }
}

/// `config`: the commented example configuration, every key with its default.
pub fn example_config() -> &'static str {
    include_str!("../../gateway.example.toml")
}

/// `generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Directory to write `man/` and `completions/` into.
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Man pages (one per command) and bash, zsh and fish completions, from the clap
/// definitions, so they always match the binary.
pub fn generate(a: &GenerateArgs) -> Result<(), OpsError> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let write = || -> std::io::Result<()> {
        let (man, completions) = (a.out_dir.join("man"), a.out_dir.join("completions"));
        std::fs::create_dir_all(&man)?;
        std::fs::create_dir_all(&completions)?;
        clap_mangen::generate_to(crate::ops::Cli::command(), &man)?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cli = crate::ops::Cli::command();
            clap_complete::generate_to(shell, &mut cli, "vigie-gateway", &completions)?;
        }
        Ok(())
    };
    write().map_err(OpsError::Generate)
}
