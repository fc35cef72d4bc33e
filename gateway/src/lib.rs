//! Vigie gateway service.
//!
//! Module map (filled by the gateway issue): ingest (MQTT), verify, validate, buffer,
//! sink (InfluxDB v1/v2), metrics, config, CLI. Today it holds nothing but the link to
//! the wire contract, so the workspace layout is in place for that work.

pub use protocol;
