//! The operator commands, one file per group, each with its clap arguments beside it:
//! [`serve`] (`run`), [`check`] (`check-config`, `config`), [`devices`], [`gateways`],
//! [`tenants`], [`cert`] (`broker-cert`), [`quarantine`], [`export`], [`erase`].
//! [`service`] talks to the running gateway; [`text`] prints tables and reads times. Every
//! command fails with an [`OpsError`]; `main.rs` only parses and prints.

pub mod cert;
pub mod check;
pub mod devices;
pub mod erase;
pub mod error;
pub mod export;
pub mod gateways;
pub mod group;
pub mod quarantine;
pub mod serve;
pub mod service;
pub mod tenants;
pub mod text;

pub use error::OpsError;

use crate::config::Config;
use std::path::Path;

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "vigie-gateway",
    version,
    about = "Vigie gateway: authenticated sensor frames from MQTT to InfluxDB, nothing lost"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the service.
    Run(serve::RunArgs),
    /// Check a configuration file, its registry and data directory, then exit (run it as
    /// the service user).
    CheckConfig(check::CheckArgs),
    /// Print the commented example configuration (every key, with its default).
    Config,
    /// Write the man pages and shell completions (for packaging).
    #[command(hide = true)]
    Generate(check::GenerateArgs),
    /// Manage devices in the registry.
    #[command(subcommand)]
    Devices(Box<devices::DevicesCommand>),
    /// Manage the gateways' broker accounts.
    #[command(subcommand)]
    Gateways(gateways::GatewaysCommand),
    /// Manage the communes' databases and their retention.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Issue the broker's TLS certificate from the deployment's CA (created beside the
    /// registry on first use).
    BrokerCert(cert::CertArgs),
    /// Inspect or replay rejected frames.
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCommand),
    /// Export a commune's readings as open data (FIWARE NGSI-LD, CSV, GeoJSON), read back
    /// from the database; only the commune's public fields, no keys or counters.
    Export(export::ExportArgs),
    /// Erase a commune's or a device's readings everywhere (GDPR): database, buffer,
    /// quarantine, line-protocol files; with the service stopped. Without --yes, only
    /// says what it would erase.
    Erase(erase::command::EraseArgs),
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), OpsError> {
    match cli.command {
        Command::Run(a) => serve::run(&a),
        Command::CheckConfig(a) => {
            println!("{}", check::check_config(&a)?);
            Ok(())
        }
        Command::Config => {
            print!("{}", check::example_config());
            Ok(())
        }
        Command::Generate(a) => check::generate(&a),
        Command::Devices(cmd) => devices::run(*cmd),
        Command::Gateways(cmd) => gateways::run(cmd),
        Command::Tenants(cmd) => tenants::run(cmd),
        Command::BrokerCert(a) => cert::run(&a),
        Command::Quarantine(cmd) => quarantine::run(cmd),
        Command::Export(a) => export::command(a),
        Command::Erase(a) => erase::command::command(&a),
    }
}

/// The configuration file of a command.
pub fn load(path: &Path) -> Result<Config, OpsError> {
    Ok(Config::load(path)?)
}
