//! HTTP writers: InfluxDB's v1 `/write?db=` API with reqwest, and the v2 API through the
//! `influxdb2` crate. One client each, kept alive for the life of the service; futures run
//! on the service's tokio runtime from the delivery thread.

use super::{Answer, CountersError, LineWriter, Text};
use crate::config::{DatabaseConfig, DatabaseKind, Secret};
use std::time::Duration;
use tokio::runtime::Handle;
use vigie_core::deliver::discards::Discards;

/// Why a database writer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The CA file cannot be read.
    #[error("database.ca_file {path}: {source}")]
    CaRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file is not a PEM certificate.
    #[error("database.ca_file {path}: {source}")]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: reqwest::Error,
    },
    /// The HTTP client.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The InfluxDB v2 client.
    #[error("cannot build the InfluxDB v2 client: {0}")]
    V2(#[from] influxdb2::BuildError),
}

/// Client settings shared by both APIs: timeout, keep-alive, optional extra CA.
pub(crate) fn client_builder(cfg: &DatabaseConfig) -> Result<reqwest::ClientBuilder, SetupError> {
    let mut b = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|source| SetupError::CaRead {
            path: path.clone(),
            source,
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| SetupError::Ca {
            path: path.clone(),
            source,
        })?;
        b = b.add_root_certificate(cert);
    }
    Ok(b)
}

/// `request` with the configured credentials: v1 username and password, or a token.
pub(crate) fn authorize(
    request: reqwest::RequestBuilder,
    cfg: &DatabaseConfig,
) -> reqwest::RequestBuilder {
    if let Some(user) = &cfg.username {
        request.basic_auth(user, cfg.password.as_ref().map(Secret::expose))
    } else if let Some(token) = &cfg.token {
        request.header("Authorization", format!("Token {}", token.expose()))
    } else {
        request
    }
}

/// `POST {url}/write?db=<db>&precision=ms`.
#[derive(Debug)]
pub struct V1Writer {
    client: reqwest::Client,
    cfg: DatabaseConfig,
    runtime: Handle,
}

impl V1Writer {
    /// Builds the writer and its client.
    pub fn new(cfg: DatabaseConfig, runtime: Handle) -> Result<Self, SetupError> {
        let client = client_builder(&cfg)?.build()?;
        Ok(Self {
            client,
            cfg,
            runtime,
        })
    }
}

impl LineWriter for V1Writer {
    fn write(&mut self, tenant: &str, lines: &Text) -> Answer {
        let url = format!("{}/write", self.cfg.url.trim_end_matches('/'));
        let req = self.client.post(url).query(&[
            ("db", self.cfg.target(tenant).as_str()),
            ("precision", "ms"),
        ]);
        let req = match self.cfg.gzip {
            false => req.body(lines.body()),
            true => match gzip(lines.as_bytes()) {
                Ok(body) => req.header("Content-Encoding", "gzip").body(body),
                Err(e) => return Answer::Transport(format!("gzip: {e}")),
            },
        };
        let req = authorize(req, &self.cfg);
        self.runtime.block_on(async move {
            match req.send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = resp.text().await.unwrap_or_default();
                    Answer::Status {
                        code,
                        retry_after,
                        body,
                    }
                }
                Err(e) => Answer::Transport(e.to_string()),
            }
        })
    }

    fn discards(&mut self) -> Option<Result<Discards, CountersError>> {
        if self.cfg.kind != DatabaseKind::Victoriametrics {
            return None;
        }
        let url = format!("{}/metrics", self.cfg.url.trim_end_matches('/'));
        let req = authorize(self.client.get(url), &self.cfg);
        Some(self.runtime.block_on(async move {
            let http = |e: reqwest::Error| CountersError::Http(e.without_url());
            let resp = req.send().await.map_err(http)?;
            if !resp.status().is_success() {
                return Err(CountersError::Status(resp.status().as_u16()));
            }
            let text = resp.text().await.map_err(http)?;
            Ok(Discards::parse(&text))
        }))
    }
}

/// `lines` gzip-compressed at the fastest level: line protocol repeats itself (measurement,
/// tags, field names), so even that gives most of the gain.
fn gzip(lines: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(lines.len() / 4),
        flate2::Compression::fast(),
    );
    z.write_all(lines)?;
    z.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_bodies_round_trip_and_shrink_line_protocol() {
        let lines: String = (0..2_000)
            .map(|i| {
                format!(
                    "air_quality,device=aq-{:04},tenant=lyon pm25={}.{},pm10={},temperature=12.5 {}\n",
                    i % 100,
                    i % 97,
                    i % 10,
                    i % 89 + 20,
                    1_795_305_600_000u64 + i * 1_000
                )
            })
            .collect();
        let z = gzip(lines.as_bytes()).unwrap();
        let mut back = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, lines);
        assert!(
            z.len() * 4 < lines.len(),
            "{} of {} bytes",
            z.len(),
            lines.len()
        );
    }
}
