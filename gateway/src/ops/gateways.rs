//! `gateways add`: a gateway's broker account.

use crate::config::GatewayConfig;
use crate::fleet::access;
use crate::fleet::registry;
use crate::ops::OpsError;
use crate::ops::devices::{change_here, registry_change};
use crate::ops::error::file;
use std::path::{Path, PathBuf};

/// `gateways …`.
#[derive(Debug, clap::Subcommand)]
pub enum GatewaysCommand {
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

/// Runs a `gateways` command.
pub fn run(cmd: GatewaysCommand) -> Result<(), OpsError> {
    match cmd {
        GatewaysCommand::Add {
            config,
            username,
            password_out,
        } => registry_change(&config, |c| add(&c.gateway, &username, &password_out)),
    }
}

/// `gateways add`: a broker account for one gateway (each gateway of a group needs its
/// own: the broker binds the account to one client id, its username). The password goes to
/// `password_out` (mode 0640, group `vigie`: the service reads it), its hash to the registry
/// and the broker's access file.
pub fn add(g: &GatewayConfig, username: &str, password_out: &Path) -> Result<String, OpsError> {
    change_here(g, |registry| {
        let password = access::new_password().map_err(|source| OpsError::Random {
            what: "password",
            reason: source,
        })?;
        let password_hash =
            access::hash_password(&password).map_err(|source| OpsError::Random {
                what: "salt",
                reason: source,
            })?;
        registry.set_gateway(registry::GatewayAccount {
            username: username.into(),
            password_hash,
        })?;
        // Read by the service: group vigie, like the registry.
        crate::store::fs::replace_for_group(
            password_out,
            format!("{}\n", password.expose()).as_bytes(),
            0o640,
            registry::SERVICE_GROUP,
        )
        .map_err(file(password_out))
    })?;
    Ok(format!(
        "gateway account {username}: password in {}. In the gateway's config set \
         mqtt.username = \"{username}\" and mqtt.password_file = \"{}\"; {}",
        password_out.display(),
        password_out.display(),
        access::restart_hint(&g.broker_access())
    ))
}
