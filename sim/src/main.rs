//! `vigie-sim`: runs the provisioning blobs in a directory (what `gateway devices add`
//! writes, what technicians flash) as a simulated fleet against a real broker. Each
//! board's flash (frame counter, ring of unacknowledged frames) is kept in `state/`
//! beside the blobs, so a second run continues where the first stopped. The exit status
//! says whether every reading was acknowledged and none refused.
// Layout (docs/ARCHITECTURE.md): functions of at most 60 lines (`clippy.toml`) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use protocol::provision::{Provisioning, Transport};
use vigie_sim::net::TrustedCa;
use vigie_sim::{Fleet, FleetOptions};

/// Simulated fleet: the firmware's code on simulated sensors, publishing to a broker.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Directory of provisioning blobs (`*.vgp`), one per device.
    #[arg(long, required_unless_present = "man_dir")]
    blobs: Option<PathBuf>,
    /// Broker `host:port` (default: the one in the first blob).
    #[arg(long)]
    broker: Option<String>,
    /// Virtual seconds per real second (60: a 5-minute interval becomes 5 s).
    #[arg(long, default_value_t = 60.0)]
    accel: f64,
    /// Real seconds to run.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// A status report every this many samples.
    #[arg(long, default_value_t = 12)]
    status_every: u32,
    /// The CA (PEM) blobs made with `devices add --broker-ca` pin: those devices connect
    /// over TLS and verify the broker against it.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Writes the manual page `vigie-sim.1` into this directory (the Debian package's).
    #[arg(long, hide = true)]
    man_dir: Option<PathBuf>,
}

fn load(dir: &PathBuf, ca: Option<&TrustedCa>) -> Result<Vec<Provisioning>, String> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "vgp") {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let p = Provisioning::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            // A TLS blob runs only with the CA it pins: never in clear text.
            if let Transport::Tls { ca_sha256 } = p.transport
                && ca.is_none_or(|ca| ca.sha256 != ca_sha256)
            {
                return Err(format!(
                    "{}: the blob connects over TLS and pins its broker's CA: {}",
                    path.display(),
                    if ca.is_some() {
                        "--ca names another CA"
                    } else {
                        "name that CA with --ca"
                    }
                ));
            }
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(format!("no *.vgp blobs in {}", dir.display()));
    }
    Ok(out)
}

/// Writes `vigie-sim.1` into `dir`.
fn man_page(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    match clap_mangen::generate_to(Args::command(), dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// The CA `--ca` names, if any.
fn trusted_ca(path: Option<&PathBuf>) -> Result<Option<TrustedCa>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| TrustedCa::from_pem(&pem))
        .map(Some)
        .map_err(|e| format!("--ca {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.man_dir {
        return man_page(dir);
    }
    let Some(blobs) = args.blobs.clone() else {
        return ExitCode::FAILURE; // clap requires it without --man-dir
    };
    let result = (|| -> Result<(), String> {
        let ca = trusted_ca(args.ca.as_ref())?;
        let devices = load(&blobs, ca.as_ref())?;
        let broker = args
            .broker
            .clone()
            .unwrap_or_else(|| format!("{}:{}", devices[0].broker_host, devices[0].broker_port));
        let broker: SocketAddr = broker
            .to_socket_addrs()
            .map_err(|e| format!("broker {broker}: {e}"))?
            .next()
            .ok_or_else(|| format!("broker {broker}: no address"))?;
        if !args.accel.is_finite() || args.accel <= 0.0 {
            return Err("--accel must be positive".into());
        }
        let opts = FleetOptions {
            broker,
            accel: args.accel,
            duration: Duration::from_secs(args.duration),
            status_every: args.status_every,
            outages: Vec::new(),
            progress: true,
            ca,
        };
        let state = blobs.join("state");
        std::fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let summary = runtime.block_on(async {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                let _ = stop_tx.send(true);
            });
            Fleet::new(devices, opts)
                .with_state(state)
                .run(stop_rx)
                .await
        });
        println!("{summary}");
        summary.verdict()
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
