//! How an alert leaves: e-mail through the configured SMTP server (STARTTLS or TLS, never
//! plain; authenticated when an account is set; via `lettre`), and webhook calls whose JSON
//! body is signed with HMAC-SHA256 (`ring`). Each send is bounded in time.

use crate::config::{SmtpConfig, WebhookConfig};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigie_core::Secret;

/// How long one e-mail or one webhook call may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// The alerts cannot start: a file they need (its content is never shown).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A secret or CA file cannot be read.
    #[error("{what} {path}: {source}")]
    File {
        /// The setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A webhook's signing key is too short to be one.
    #[error("alerts webhook secret_file {0}: a signing key of 16 bytes or more is needed")]
    ShortKey(PathBuf),
    /// The SMTP settings (an unusable CA certificate, a sender that is no address).
    #[error("alerts.smtp: {0}")]
    Smtp(String),
}

/// Why a message did not go.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The mail server refused or could not be reached.
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The message could not be built (an address).
    #[error("e-mail: {0}")]
    Mail(String),
    /// The webhook could not be reached.
    #[error("webhook {host}: {error}")]
    Http {
        /// Its host (the URL may hold a token).
        host: String,
        /// Why.
        error: String,
    },
    /// The webhook answered with an error status.
    #[error("webhook {host}: HTTP {status}")]
    Status {
        /// Its host.
        host: String,
        /// The status.
        status: u16,
    },
    /// No key for this webhook any more (its configuration changed).
    #[error("webhook {0}: no longer configured")]
    Gone(String),
}

impl SendError {
    /// Retrying cannot help: a refused address or account, a webhook that answers 4xx.
    pub fn permanent(&self) -> bool {
        match self {
            SendError::Smtp(e) => e.is_permanent(),
            SendError::Mail(_) | SendError::Gone(_) => true,
            SendError::Status { status, .. } => {
                (400..500).contains(status) && !matches!(status, 408 | 429)
            }
            SendError::Http { .. } => false,
        }
    }
}

/// Sends e-mail.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::File {
        what,
        path: path.to_path_buf(),
        source,
    })
}

impl Mailer {
    /// The transport the settings describe; the password read from its file.
    pub fn new(cfg: &SmtpConfig) -> Result<Self, SetupError> {
        let smtp = |e: lettre::transport::smtp::Error| SetupError::Smtp(e.to_string());
        let mut tls = TlsParameters::builder(cfg.host.clone());
        if let Some(ca) = &cfg.ca_file {
            let pem = read("alerts.smtp.ca_file", ca)?;
            tls = tls.add_root_certificate(Certificate::from_pem(&pem).map_err(smtp)?);
        }
        let tls = tls.build_rustls().map_err(smtp)?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .timeout(Some(SEND_TIMEOUT))
            .tls(match cfg.security.as_str() {
                "tls" => Tls::Wrapper(tls),
                _ => Tls::Required(tls),
            });
        if let (Some(user), Some(file)) = (&cfg.username, &cfg.password_file) {
            let password = Secret::new(
                String::from_utf8_lossy(&read("alerts.smtp.password_file", file)?).trim_end(),
            );
            b = b.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        let from = cfg
            .from
            .parse()
            .map_err(|_| SetupError::Smtp("from is not an address".into()))?;
        Ok(Self {
            transport: b.build(),
            from,
        })
    }

    /// Sends one text e-mail to `to`.
    pub async fn send(&self, to: &[String], subject: &str, body: &str) -> Result<(), SendError> {
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            m = m.to(address
                .parse()
                .map_err(|_| SendError::Mail(format!("{address:?} is not an address")))?);
        }
        let message = m
            .body(body.to_string())
            .map_err(|e| SendError::Mail(e.to_string()))?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// Calls webhooks, each with its own signing key.
#[derive(Default)]
pub struct Hooks {
    keys: BTreeMap<String, ring::hmac::Key>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("webhooks", &self.keys.len())
            .finish()
    }
}

impl Hooks {
    /// The webhooks of the configuration, their keys read from their files.
    pub fn new<'a>(hooks: impl IntoIterator<Item = &'a WebhookConfig>) -> Result<Self, SetupError> {
        let mut keys = BTreeMap::new();
        for h in hooks {
            let key = read("alerts webhook secret_file", &h.secret_file)?;
            let key = key.trim_ascii_end();
            if key.len() < 16 {
                return Err(SetupError::ShortKey(h.secret_file.clone()));
            }
            keys.insert(
                h.url.clone(),
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
            );
        }
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Self { keys, client })
    }

    /// POSTs `body` to `url`, signed: `X-Vigie-Timestamp: <Unix s>` and
    /// `X-Vigie-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
    pub async fn send(&self, url: &str, body: &str, now_s: u64) -> Result<(), SendError> {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let key = self
            .keys
            .get(url)
            .ok_or_else(|| SendError::Gone(host.clone()))?;
        let signature = signature(key, now_s, body);
        let answer = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-vigie-timestamp", now_s.to_string())
            .header("x-vigie-signature", format!("sha256={signature}"))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| SendError::Http {
                host: host.clone(),
                error: e.without_url().to_string(),
            })?;
        let status = answer.status().as_u16();
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(SendError::Status { host, status })
        }
    }
}

/// The hex HMAC-SHA256 of `"<timestamp>.<body>"`.
fn signature(key: &ring::hmac::Key, now_s: u64, body: &str) -> String {
    let tag = ring::hmac::sign(key, format!("{now_s}.{body}").as_bytes());
    hex::encode(tag.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // An independent HMAC, Python's:
        // hmac.new(b"0123456789abcdef", b"1700000000.{}", "sha256").hexdigest()
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"0123456789abcdef");
        assert_eq!(
            signature(&key, 1_700_000_000, "{}"),
            "e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }

    #[test]
    fn a_refused_address_or_a_4xx_is_given_up_a_timeout_or_a_5xx_is_retried() {
        let status = |status| SendError::Status {
            host: "h".into(),
            status,
        };
        assert!(status(401).permanent());
        assert!(!status(429).permanent());
        assert!(!status(503).permanent());
        assert!(
            !SendError::Http {
                host: "h".into(),
                error: "timeout".into()
            }
            .permanent()
        );
    }
}
