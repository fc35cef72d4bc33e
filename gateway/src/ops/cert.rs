//! `broker-cert`: the broker's TLS certificate from the deployment's CA.

use crate::config::GatewayConfig;
use crate::fleet::access;
use crate::fleet::pki;
use crate::ops::error::file;
use crate::ops::{OpsError, load};
use std::path::{Path, PathBuf};

/// `broker-cert`.
#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Configuration file.
    #[arg(long, env = "VIGIE_CONFIG")]
    pub config: PathBuf,
    /// Host name or address devices and gateways dial (repeat for several).
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    /// Where to write vigie-broker.crt and vigie-broker.key.
    #[arg(long, default_value = BROKER_CERT_DIR)]
    pub out_dir: PathBuf,
}

/// Where `broker-cert` writes the broker's certificate by default.
pub const BROKER_CERT_DIR: &str = "/etc/mosquitto/certs";
/// The broker's certificate's file name.
pub const BROKER_CERT: &str = "vigie-broker.crt";

/// Runs `broker-cert` and prints its report.
pub fn run(a: &CertArgs) -> Result<(), OpsError> {
    let c = load(&a.config)?;
    println!("{}", broker_cert(&c.gateway, &a.hosts, &a.out_dir)?);
    Ok(())
}

/// `broker-cert`: the deployment's CA (created beside the registry on first use) issues
/// the broker's TLS certificate for `hosts` into `out_dir` (`vigie-broker.crt`, and
/// `vigie-broker.key` mode 0640, group `mosquitto`; a replaced file keeps its owner and
/// group).
pub fn broker_cert(
    g: &GatewayConfig,
    hosts: &[String],
    out_dir: &Path,
) -> Result<String, OpsError> {
    let dir = g.registry.parent().unwrap_or(Path::new("."));
    let files = pki::CaFiles::in_dir(dir);
    let (ca, created) = pki::load_or_create_ca(&files)?;
    let issued = pki::issue_server(&ca, hosts)?;
    let (cert, key) = (out_dir.join(BROKER_CERT), out_dir.join("vigie-broker.key"));
    let group = access::BROKER_GROUP;
    crate::store::fs::replace_for_group(&cert, issued.cert_pem.as_bytes(), 0o644, group)
        .map_err(file(&cert))?;
    crate::store::fs::replace_for_group(&key, issued.key_pem.as_bytes(), 0o640, group)
        .map_err(file(&key))?;
    let ca_note = if created {
        format!(
            "created the CA {} (its key {} is mode 0600: keep it safe, boards pin this CA)",
            files.cert.display(),
            files.key.display()
        )
    } else {
        format!("signed by the CA {}", files.cert.display())
    };
    Ok(format!(
        "broker certificate for {} valid until {}: {} and {}; {ca_note}.\n\
         Restart the broker; use --broker-ca {} with `devices add` and \
         mqtt.ca_file = \"{}\" for gateways on other hosts.",
        hosts.join(", "),
        issued.not_after.date(),
        cert.display(),
        key.display(),
        files.cert.display(),
        files.cert.display(),
    ))
}
