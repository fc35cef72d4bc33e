//! Alerts (`[alerts]`): who is told what, by e-mail and webhook (docs/OPERATIONS.md
//! "Alerts"). Secrets (the SMTP password, each webhook's signing key) are read from files,
//! never written in this one.

use super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often conditions are checked.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a condition lasts before it is told, and is gone before its end is (a
    /// suspected fire is told at once).
    #[serde(with = "humantime_serde")]
    pub confirm: Duration,
    /// `fr` or `en`.
    pub language: String,
    /// Local hour (0–23) the daily digest goes out to `digest_emails`.
    pub digest_hour: u8,
    /// A bin at or above this fill level (%) is alerted; default `round.threshold_percent`.
    pub bin_full_percent: Option<u8>,
    /// The data directory's disk is alerted under this free share (%).
    pub disk_free_percent: u8,
    /// The buffer is alerted from this share of `buffer.max_mib` (%).
    pub buffer_percent: u8,
    /// Readings waiting for the databases are alerted from this many MiB (0: any), when
    /// more than `backlog_window` before.
    pub backlog_mib: u64,
    /// How long a backlog must have grown to be told.
    #[serde(with = "humantime_serde")]
    pub backlog_window: Duration,
    /// Certificates (PEM files) to watch besides the broker's and database's CA and the
    /// deployment's CA: the broker's own certificate, say.
    pub certificates: Vec<PathBuf>,
    /// A certificate is alerted this many days before it ends.
    pub certificate_days: u32,
    /// The mail server, needed by any `emails`.
    pub smtp: Option<SmtpConfig>,
    /// The gateway's operator: the gateway's own alerts and every commune held.
    pub operator: Recipients,
    /// Each commune's recipients, by tenant id.
    pub communes: BTreeMap<String, Recipients>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            confirm: Duration::from_secs(120),
            language: "fr".into(),
            digest_hour: 8,
            bin_full_percent: None,
            disk_free_percent: 10,
            buffer_percent: 80,
            backlog_mib: 100,
            backlog_window: Duration::from_secs(30 * 60),
            certificates: Vec::new(),
            certificate_days: 30,
            smtp: None,
            operator: Recipients::default(),
            communes: BTreeMap::new(),
        }
    }
}

/// Who is told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recipients {
    /// Told when an alert starts and when it ends.
    pub emails: Vec<String>,
    /// Sent the daily digest of the alerts in force.
    pub digest_emails: Vec<String>,
    /// Called with each start and end, JSON signed with HMAC-SHA256.
    pub webhooks: Vec<WebhookConfig>,
    /// This commune's bin threshold (%), instead of `alerts.bin_full_percent`.
    pub bin_full_percent: Option<u8>,
    /// Thresholds of its zones (a bin's `--zone`), `{ marche = 60 }`: a market square's
    /// bins emptied earlier.
    pub bin_full_zones: BTreeMap<String, u8>,
    /// This commune's language, instead of `alerts.language`.
    pub language: Option<String>,
}

impl Recipients {
    fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.digest_emails.is_empty() && self.webhooks.is_empty()
    }
}

/// A webhook.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (`http://` only to this host: 127.0.0.1, ::1, localhost).
    pub url: String,
    /// File holding the signing key (16 bytes or more); the receiver checks
    /// `X-Vigie-Signature` with it.
    pub secret_file: PathBuf,
}

/// How mail leaves: an authenticated, encrypted submission, never plain text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server name (checked against its certificate).
    pub host: String,
    /// Port: 587 for STARTTLS, 465 for TLS.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default) or `tls`.
    #[serde(default = "default_security")]
    pub security: String,
    /// Account; none for a relay that takes mail from this host without one.
    pub username: Option<String>,
    /// File holding the account's password.
    pub password_file: Option<PathBuf>,
    /// Sender, `Vigie <vigie@commune.fr>`.
    pub from: String,
    /// CA certificate (PEM) of a private server; default the host's CA store.
    pub ca_file: Option<PathBuf>,
}

/// Its host only: the URL's path or query may hold a token.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        f.debug_struct("WebhookConfig")
            .field("host", &host)
            .field("secret_file", &self.secret_file)
            .finish()
    }
}

fn default_smtp_port() -> u16 {
    587
}

fn default_security() -> String {
    "starttls".into()
}

fn bad(message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message.into()))
}

impl AlertsConfig {
    /// Anyone to tell.
    pub fn enabled(&self) -> bool {
        !self.operator.is_empty() || self.communes.values().any(|r| !r.is_empty())
    }

    /// The recipients of `tenant` (empty: the operator).
    pub fn recipients(&self, tenant: &str) -> Option<&Recipients> {
        if tenant.is_empty() {
            Some(&self.operator)
        } else {
            self.communes.get(tenant)
        }
    }

    /// The fill level from which a bin of `tenant` in `zone` is alerted: its zone's, else
    /// its commune's, else `alerts.bin_full_percent`; `None`: the round's threshold.
    pub fn bin_threshold(&self, tenant: &str, zone: Option<&str>) -> Option<u8> {
        let commune = self.communes.get(tenant);
        let by_zone = commune
            .zip(zone)
            .and_then(|(r, z)| r.bin_full_zones.get(z).copied());
        by_zone
            .or(commune.and_then(|r| r.bin_full_percent))
            .or(self.bin_full_percent)
    }

    /// Checks ranges, addresses and the settings the recipients need.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            return bad("alerts.interval must be 1 s to 1 h");
        }
        if self.confirm > Duration::from_secs(24 * 3600) {
            return bad("alerts.confirm must be at most 24 h");
        }
        if self.backlog_window < self.interval
            || self.backlog_window > Duration::from_secs(24 * 3600)
        {
            return bad("alerts.backlog_window must be at least alerts.interval and at most 24 h");
        }
        if self.digest_hour > 23 {
            return bad("alerts.digest_hour must be 0 to 23 (local time)");
        }
        if !(1..=99).contains(&self.disk_free_percent) || !(1..=100).contains(&self.buffer_percent)
        {
            return bad(
                "alerts.disk_free_percent must be 1 to 99 and alerts.buffer_percent 1 to 100",
            );
        }
        check_language("alerts.language", &self.language)?;
        check_percent("alerts.bin_full_percent", self.bin_full_percent)?;
        if let Some(smtp) = &self.smtp {
            smtp.check()?;
        }
        let all = std::iter::once(("operator".to_string(), &self.operator)).chain(
            self.communes
                .iter()
                .map(|(t, r)| (format!("communes.{t}"), r)),
        );
        for (name, r) in all {
            self.check_recipients(&name, r)?;
        }
        Ok(())
    }

    fn check_recipients(&self, name: &str, r: &Recipients) -> Result<(), ConfigError> {
        let mails = r.emails.iter().chain(&r.digest_emails);
        if mails.clone().next().is_some() && self.smtp.is_none() {
            return bad(format!(
                "alerts.{name}: e-mail recipients need an [alerts.smtp] section (the mail server)"
            ));
        }
        for m in mails {
            if m.parse::<lettre::Address>().is_err() {
                return bad(format!("alerts.{name}: {m:?} is not an e-mail address"));
            }
        }
        for (i, w) in r.webhooks.iter().enumerate() {
            check_webhook_url(&format!("alerts.{name}.webhooks[{i}]"), &w.url)?;
        }
        check_percent(
            &format!("alerts.{name}.bin_full_percent"),
            r.bin_full_percent,
        )?;
        for (zone, p) in &r.bin_full_zones {
            check_percent(&format!("alerts.{name}.bin_full_zones.{zone}"), Some(*p))?;
        }
        if let Some(l) = &r.language {
            check_language(&format!("alerts.{name}.language"), l)?;
        }
        Ok(())
    }
}

impl SmtpConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if !matches!(self.security.as_str(), "starttls" | "tls") {
            return bad(
                "alerts.smtp.security must be \"starttls\" (port 587) or \"tls\" (port 465): mail never leaves in plain text",
            );
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return bad(
                "alerts.smtp.from must be an address, `vigie@commune.fr` or `Vigie <vigie@commune.fr>`",
            );
        }
        if self.username.is_some() != self.password_file.is_some() {
            return bad("alerts.smtp: username and password_file go together");
        }
        Ok(())
    }
}

fn check_language(name: &str, l: &str) -> Result<(), ConfigError> {
    match l {
        "fr" | "en" => Ok(()),
        _ => bad(format!("{name} must be \"fr\" or \"en\"")),
    }
}

fn check_percent(name: &str, p: Option<u8>) -> Result<(), ConfigError> {
    match p {
        Some(p) if !(1..=100).contains(&p) => bad(format!("{name} must be 1 to 100")),
        _ => Ok(()),
    }
}

/// `https://`, or `http://` to this very host (a local relay), nothing else: a webhook's
/// body names devices and communes. The URL is never quoted (it may hold a token).
fn check_webhook_url(name: &str, url: &str) -> Result<(), ConfigError> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return bad(format!("{name}: url is not a URL"));
    };
    let local = matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
    match u.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        _ => bad(format!(
            "{name}: url must be https:// (http:// only to this host)"
        )),
    }
}
