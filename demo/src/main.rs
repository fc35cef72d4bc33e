//! `vigie-demo`: the whole chain on one machine with nothing installed (README
//! "Quickstart"). Its own binary, so the service crate links neither the simulator nor
//! the firmware.

mod run;

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "vigie-demo",
    version,
    about = "Everything on this machine: embedded broker, simulated fleet, full gateway pipeline"
)]
struct Cli {
    /// Stop after this many seconds (default: on Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Devices per tenant (two tenants; half air quality, half bins).
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Virtual seconds per real second. Devices sample every 5 virtual minutes, so the
    /// default 300 makes that once a second; the virtual clock ends at "now".
    #[arg(long, default_value_t = 300.0)]
    accel: f64,
    /// Keep the temporary data directory.
    #[arg(long)]
    keep_data: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's own progress line says what happens; only problems are logged.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,rumqttd=off"))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let opts = run::DemoOptions {
        duration: cli.duration.map(Duration::from_secs),
        devices_per_tenant: cli.devices.max(1),
        accel: cli.accel.clamp(1.0, 3600.0),
        keep_data: cli.keep_data,
    };
    let summary = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(async {
            let (tx, stop) = watch::channel(false);
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    let _ = tx.send(true);
                }
            });
            run::run(opts, stop).await
        }),
        Err(e) => Err(run::DemoError::Runtime(e)),
    };
    match summary {
        Ok(s) => {
            println!(
                "acknowledged={} stored={} rejected={}",
                s.acknowledged, s.stored, s.rejected
            );
            if s.acknowledged == 0 || s.stored != s.acknowledged {
                eprintln!("vigie-demo: the demo did not store every acknowledged reading");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigie-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
