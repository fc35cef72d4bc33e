//! `run`: the service itself, with its logging and the signals that stop it.

use crate::config::{Config, LogFormat};
use crate::ops::OpsError;
use std::path::PathBuf;
use tokio::sync::watch;

/// `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (see gateway.example.toml).
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
}

/// Loads the configuration, sets up logging and runs the service until SIGINT or SIGTERM.
pub fn run(a: &RunArgs) -> Result<(), OpsError> {
    let config = Config::load(&a.config)?;
    init_tracing(config.log.format, &config.log.level);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(OpsError::Runtime)?
        .block_on(async {
            let stop = shutdown_signal();
            Ok(crate::run(config, stop).await?)
        })
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
