//! InfluxDB 2.x through the `influxdb2` crate, which our users asked for, behind this one
//! seam. What the crate does not do, and what the gateway does about it:
//! - it never reads `Retry-After`: a 429 or 503 from a v2 server is retried on the
//!   gateway's own back-off (`batch.min_backoff` .. `batch.max_backoff`), not when the
//!   server asks;
//! - it sends plain bodies: `database.gzip` is refused with `api = "v2"` at
//!   configuration time (config/validate.rs);
//! - it panics on a URL it cannot parse: `database.url` is checked as an http(s) URL with
//!   a host before any client is built (config/validate.rs), so it never sees one;
//! - it answers an HTTP error as text: the status and the body become the gateway's
//!   [`Answer`], classified like v1's.
//!
//! The client shares v1's settings (timeout, the configured CA) through
//! `client_builder`.

use super::{Answer, LineWriter, SetupError, Text, client_builder};
use crate::config::DatabaseConfig;
use tokio::runtime::Handle;

/// The v2 client of `cfg` (org and token from the configuration).
pub fn client(cfg: &DatabaseConfig) -> Result<influxdb2::Client, SetupError> {
    let builder = client_builder(cfg)?;
    let org = cfg.org.clone().unwrap_or_default();
    let token = cfg
        .token
        .as_ref()
        .map(|t| t.expose().to_string())
        .unwrap_or_default();
    Ok(influxdb2::ClientBuilder::with_builder(builder, cfg.url.clone(), org, token).build()?)
}

/// Deletes the points of `bucket` matching `predicate` measured before `stop_s` (`erase`).
pub async fn delete(
    cfg: &DatabaseConfig,
    bucket: &str,
    stop_s: u32,
    predicate: &str,
) -> Result<(), DeleteError> {
    let at = |s: u32| {
        chrono::DateTime::from_timestamp(i64::from(s), 0)
            .unwrap_or_default()
            .naive_utc()
    };
    let client = client(cfg)?;
    Ok(client
        .delete(bucket, at(0), at(stop_s), Some(predicate.to_string()))
        .await?)
}

/// Why a v2 delete failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The client could not be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The server's answer.
    #[error(transparent)]
    Request(#[from] influxdb2::RequestError),
}

/// `POST {url}/api/v2/write?org=&bucket=&precision=ms` through `influxdb2`.
#[derive(Debug)]
pub struct V2Writer {
    client: influxdb2::Client,
    cfg: DatabaseConfig,
    runtime: Handle,
}

impl V2Writer {
    /// Builds the writer and its client.
    pub fn new(cfg: DatabaseConfig, runtime: Handle) -> Result<Self, SetupError> {
        let client = client(&cfg)?;
        Ok(Self {
            client,
            cfg,
            runtime,
        })
    }
}

impl LineWriter for V2Writer {
    fn write(&mut self, tenant: &str, lines: &Text) -> Answer {
        let org = self.cfg.org.clone().unwrap_or_default();
        let bucket = self.cfg.target(tenant);
        let fut = self.client.write_line_protocol_with_precision(
            &org,
            &bucket,
            lines.body(),
            influxdb2::api::write::TimestampPrecision::Milliseconds,
        );
        match self.runtime.block_on(fut) {
            Ok(()) => Answer::Status {
                code: 204,
                retry_after: None,
                body: String::new(),
            },
            Err(influxdb2::RequestError::Http { status, text }) => Answer::Status {
                code: status.as_u16(),
                retry_after: None,
                body: text,
            },
            Err(e) => Answer::Transport(e.to_string()),
        }
    }
}
