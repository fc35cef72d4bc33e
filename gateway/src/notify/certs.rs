//! Certificates near their end: the earliest `notAfter` of the certificates in each PEM
//! file the gateway trusts (the broker's CA, the database's CA), the deployment's CA
//! beside the registry, the broker's certificate where `broker-cert` writes it, and
//! those `alerts.certificates` names. Read with `yasna`, the DER reader rcgen already builds.

use std::path::{Path, PathBuf};
use vigie_core::alert::{Alert, What};

/// The files to watch: those of the configuration that exist.
pub fn watched(config: &crate::config::Config) -> Vec<PathBuf> {
    let registry_dir = config.gateway.registry.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = [
        config.mqtt.ca_file.clone(),
        config.database.as_ref().and_then(|d| d.ca_file.clone()),
        Some(crate::fleet::pki::CaFiles::in_dir(registry_dir).cert),
        Some(Path::new(crate::ops::cert::BROKER_CERT_DIR).join(crate::ops::cert::BROKER_CERT)),
    ]
    .into_iter()
    .flatten()
    .chain(config.alerts.certificates.iter().cloned())
    .collect();
    files.sort();
    files.dedup();
    files
}

/// The certificates of `files` that end within `days` of `now_ms` (or have ended).
pub fn expiring(files: &[PathBuf], now_ms: u64, days: u32) -> Vec<Alert> {
    let horizon_s = now_ms as i64 / 1000 + i64::from(days) * 86_400;
    files
        .iter()
        .filter_map(|f| Some((f, not_after(f).ok().flatten()?)))
        .filter(|(_, end)| *end <= horizon_s)
        .map(|(f, end)| Alert {
            tenant: String::new(),
            device: None,
            what: What::CertificateExpiring {
                file: f.display().to_string(),
                not_after_ms: end.max(0) as u64 * 1000,
            },
        })
        .collect()
}

/// The earliest end of validity (Unix s) of the certificates in the PEM file at `path`.
pub fn not_after(path: &Path) -> std::io::Result<Option<i64>> {
    let pem = std::fs::read(path)?;
    let mut earliest: Option<i64> = None;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        if let Some(end) = cert_not_after(&cert?) {
            earliest = Some(earliest.map_or(end, |e| e.min(end)));
        }
    }
    Ok(earliest)
}

/// `tbsCertificate.validity.notAfter` of one DER certificate (RFC 5280 §4.1).
fn cert_not_after(der: &[u8]) -> Option<i64> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let end = r.next().read_sequence(|r| {
                r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_i64()))?;
                for _ in 0..3 {
                    r.next().read_der()?; // serial number, signature algorithm, issuer
                }
                let end = r.next().read_sequence(|r| {
                    read_time(r.next())?;
                    read_time(r.next())
                })?;
                while r.read_optional(|r| r.read_der())?.is_some() {} // subject, key, extensions
                Ok(end)
            })?;
            r.next().read_der()?;
            r.next().read_der()?;
            Ok(end)
        })
    })
    .ok()
}

fn read_time(r: yasna::BERReader) -> yasna::ASN1Result<i64> {
    if r.lookahead_tag()? == yasna::tags::TAG_UTCTIME {
        Ok(r.read_utctime()?.datetime().unix_timestamp())
    } else {
        Ok(r.read_generalized_time()?.datetime().unix_timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_ending_within_the_horizon_is_alerted_with_its_date() {
        let dir = tempfile::tempdir().unwrap();
        let end = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["broker.example".into()]).unwrap();
        params.not_after = end;
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let file = dir.path().join("broker.pem");
        std::fs::write(&file, pem).unwrap();
        assert_eq!(not_after(&file).unwrap(), Some(1_800_000_000));
        let files = [file.clone(), dir.path().join("missing.pem")];
        let day = 86_400_000;
        assert!(expiring(&files, 1_800_000_000_000 - 31 * day, 30).is_empty());
        let alerts = expiring(&files, 1_800_000_000_000 - 29 * day, 30);
        assert_eq!(alerts.len(), 1, "the missing file is not an alert");
        assert_eq!(
            alerts[0].what,
            What::CertificateExpiring {
                file: file.display().to_string(),
                not_after_ms: 1_800_000_000_000
            }
        );
    }
}
