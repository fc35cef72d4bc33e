//! The deployment's own certificate authority (rcgen): `broker-cert` creates it once beside
//! the registry (`ca.pem`, `ca.key` mode 0600) and issues the broker's TLS certificate for
//! the host names devices and gateways dial. Boards pin this CA (`devices add --broker-ca`),
//! gateways trust it (`mqtt.ca_file`); renewing the broker's certificate from the same CA
//! changes nothing on the boards.
//!
//! rcgen without its X.509 parser: the CA is re-created from its key and its fixed name
//! when it signs, which gives the same issuer name and key, so what it signs chains to the
//! `ca.pem` written the first time.

use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA's subject name (fixed: certificates are checked against it).
const CA_NAME: &str = "Vigie deployment CA";
/// How long the CA is valid: boards pin it for their life.
const CA_YEARS: i64 = 30;
/// How long a broker certificate is valid; renew it with `broker-cert` again.
const SERVER_YEARS: i64 = 5;

/// Why the CA or a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA key does not parse, or rcgen refused the parameters.
    #[error("{what}: {source}")]
    Cert {
        /// What was being done.
        what: String,
        /// Why.
        source: rcgen::Error,
    },
    /// No host name to put in the certificate.
    #[error("give at least one --host: the name (or address) devices and gateways dial")]
    NoHost,
}

/// Files of the deployment's CA.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The CA certificate (PEM): what boards pin and gateways trust.
    pub cert: PathBuf,
    /// Its private key (PEM), mode 0600.
    pub key: PathBuf,
}

impl CaFiles {
    /// `ca.pem` and `ca.key` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        }
    }
}

/// A certificate and its key, PEM.
#[derive(Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (a secret).
    pub key_pem: String,
    /// Valid until.
    pub not_after: OffsetDateTime,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Cert {
        what: what.to_string(),
        source,
    }
}

fn ca_params(now: OffsetDateTime) -> Result<rcgen::CertificateParams, PkiError> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA"))?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365 * CA_YEARS);
    Ok(p)
}

/// The CA in `files`, created when missing. Returns whether it was created.
pub fn load_or_create_ca(
    files: &CaFiles,
) -> Result<((rcgen::Certificate, rcgen::KeyPair), bool), PkiError> {
    let now = OffsetDateTime::now_utc();
    if files.key.exists() {
        let pem = std::fs::read_to_string(&files.key).map_err(io(&files.key))?;
        let key = rcgen::KeyPair::from_pem(&pem).map_err(cert_err("CA key"))?;
        // Same name, same key: what it signs chains to the ca.pem written at creation.
        let cert = ca_params(now)?.self_signed(&key).map_err(cert_err("CA"))?;
        return Ok(((cert, key), false));
    }
    let key = rcgen::KeyPair::generate().map_err(cert_err("CA key"))?;
    let cert = ca_params(now)?.self_signed(&key).map_err(cert_err("CA"))?;
    crate::store::fs::write_atomic(&files.key, key.serialize_pem().as_bytes(), 0o600)
        .map_err(io(&files.key))?;
    crate::store::fs::write_atomic(&files.cert, cert.pem().as_bytes(), 0o644)
        .map_err(io(&files.cert))?;
    Ok(((cert, key), true))
}

/// A server certificate for `hosts` (DNS names or IP addresses), signed by the CA.
pub fn issue_server(
    ca: &(rcgen::Certificate, rcgen::KeyPair),
    hosts: &[String],
) -> Result<Issued, PkiError> {
    let first = hosts.first().ok_or(PkiError::NoHost)?;
    let now = OffsetDateTime::now_utc();
    let mut p = rcgen::CertificateParams::new(hosts.to_vec()).map_err(cert_err("--host"))?;
    p.distinguished_name
        .push(rcgen::DnType::CommonName, first.as_str());
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365 * SERVER_YEARS);
    let not_after = p.not_after;
    let key = rcgen::KeyPair::generate().map_err(cert_err("server key"))?;
    let cert = p
        .signed_by(&key, &ca.0, &ca.1)
        .map_err(cert_err("server certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::client::danger::ServerCertVerifier;

    /// What the gateway's MQTT client does with the CA: a rustls verifier.
    fn verifies(ca_pem: &str, cert_pem: &str, host: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let cert = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .is_ok()
    }

    #[test]
    fn certificates_issued_later_chain_to_the_first_ca_pem() {
        let dir = tempfile::tempdir().unwrap();
        let files = CaFiles::in_dir(dir.path());
        let (ca, created) = load_or_create_ca(&files).unwrap();
        assert!(created);
        let ca_pem = std::fs::read_to_string(&files.cert).unwrap();
        let first = issue_server(&ca, &["mqtt.lyon.example".into()]).unwrap();
        // A later run reloads the CA from its key; its certificates still chain.
        let (again, created) = load_or_create_ca(&files).unwrap();
        assert!(!created);
        let later =
            issue_server(&again, &["mqtt.lyon.example".into(), "192.0.2.7".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), ca_pem);
        assert!(verifies(&ca_pem, &first.cert_pem, "mqtt.lyon.example"));
        assert!(verifies(&ca_pem, &later.cert_pem, "192.0.2.7"));
        assert!(!verifies(&ca_pem, &later.cert_pem, "mqtt.other.example"));
        // Another deployment's CA does not verify it.
        let other = tempfile::tempdir().unwrap();
        load_or_create_ca(&CaFiles::in_dir(other.path())).unwrap();
        let other_pem = std::fs::read_to_string(other.path().join("ca.pem")).unwrap();
        assert!(!verifies(&other_pem, &first.cert_pem, "mqtt.lyon.example"));
        assert!(matches!(issue_server(&ca, &[]), Err(PkiError::NoHost)));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
