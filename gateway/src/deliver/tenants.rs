//! Communes by command: `tenants add | list | remove` make, show and drop a commune's
//! database and its retention.
//!
//! What each server allows per tenant:
//! - InfluxDB 1.x (`api = "v1"`, `kind = "influxdb"`): a database per commune, created with
//!   `CREATE DATABASE` and a default retention policy `vigie` of `database.retention` (or
//!   `--retention`), dropped with `DROP DATABASE`, all through its HTTP `/query` endpoint
//!   (Debian's `influxdb` package ships no `influx` client).
//! - VictoriaMetrics: one store for every tenant, one retention for all
//!   (`-retentionPeriod`): nothing to create or drop per commune; a commune's series are
//!   erased with its `delete_series` API, not here.
//! - InfluxDB 2.x/3.x buckets (`api = "v2"`, `kind = "influxdb"`): with its own
//!   `influx bucket create`; this command says so.

use crate::config::{DatabaseApi, DatabaseConfig, DatabaseKind};
use std::time::Duration;

/// Why a database command failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// No `[database]` in the config.
    #[error(
        "no [database] section in the config: readings go to files, there is no database to manage"
    )]
    NoDatabase,
    /// The server kind has no per-tenant databases this command can make.
    #[error("{0}")]
    Unsupported(String),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Setup(#[from] crate::deliver::SetupError),
    /// No answer.
    #[error("the database at {url} does not answer: {error}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        error: String,
    },
    /// It answered with an error.
    #[error("the database refused `{query}`: {answer}")]
    Refused {
        /// The statement.
        query: String,
        /// Its answer.
        answer: String,
    },
}

/// A tenant's database as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseState {
    /// Its name.
    pub name: String,
    /// Whether it exists.
    pub exists: bool,
    /// The default retention policy's duration as InfluxDB prints it (`0s`: for ever).
    pub retention: Option<String>,
}

/// An InfluxDB 1.x server's `/query` endpoint.
#[derive(Debug)]
pub struct Influx {
    client: reqwest::Client,
    cfg: DatabaseConfig,
}

impl Influx {
    /// The server of `cfg`, if it is InfluxDB 1.x; otherwise what to do instead.
    pub fn new(cfg: Option<&DatabaseConfig>) -> Result<Self, TenantsError> {
        let cfg = cfg.ok_or(TenantsError::NoDatabase)?;
        match (cfg.kind, cfg.api) {
            (DatabaseKind::Influxdb, DatabaseApi::V1) => Ok(Self {
                client: crate::deliver::client_builder(cfg)?
                    .build()
                    .map_err(crate::deliver::SetupError::from)?,
                cfg: cfg.clone(),
            }),
            (DatabaseKind::Victoriametrics, _) => Err(TenantsError::Unsupported(
                "VictoriaMetrics keeps every commune in one store with one retention (its \
                 -retentionPeriod): there is no database to create or drop per commune"
                    .into(),
            )),
            (DatabaseKind::Influxdb, DatabaseApi::V2) => Err(TenantsError::Unsupported(
                "InfluxDB 2.x/3.x buckets are made with its own client: `influx bucket create \
                 --name <prefix><tenant> --retention <duration>`"
                    .into(),
            )),
        }
    }

    /// One InfluxQL statement on the server; the answer's first result.
    async fn query(&self, q: &str) -> Result<serde_json::Value, TenantsError> {
        self.send(q, None).await
    }

    /// One InfluxQL statement in `database` (`DELETE`, `SELECT`); the answer's first
    /// result.
    pub async fn query_in(
        &self,
        database: &str,
        q: &str,
    ) -> Result<serde_json::Value, TenantsError> {
        self.send(q, Some(database)).await
    }

    async fn send(&self, q: &str, db: Option<&str>) -> Result<serde_json::Value, TenantsError> {
        let url = format!("{}/query", self.cfg.url.trim_end_matches('/'));
        let mut form = vec![("q", q)];
        form.extend(db.map(|db| ("db", db)));
        let request = crate::deliver::authorize(self.client.post(&url).form(&form), &self.cfg);
        let unreachable = |e: reqwest::Error| TenantsError::Unreachable {
            url: self.cfg.url_shown(),
            error: e.without_url().to_string(),
        };
        let answer = request.send().await.map_err(unreachable)?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.map_err(unreachable)?;
        let result = &body["results"][0];
        let error = body["error"].as_str().or(result["error"].as_str());
        match error {
            Some(e) => Err(TenantsError::Refused {
                query: q.to_string(),
                answer: e.to_string(),
            }),
            None if !status.is_success() => Err(TenantsError::Refused {
                query: q.to_string(),
                answer: status.to_string(),
            }),
            None => Ok(result.clone()),
        }
    }

    /// The communes whose database exists on the server: the databases named by
    /// `database.tenants`, and those named `<prefix><tenant>`.
    pub async fn communes(&self) -> Result<Vec<String>, TenantsError> {
        let databases = self.query("SHOW DATABASES").await?;
        let names: Vec<String> = rows(&databases)
            .filter_map(|row| row[0].as_str().map(String::from))
            .collect();
        Ok(names
            .iter()
            .filter_map(|name| {
                let mapped = self.cfg.tenants.iter().find(|(_, db)| *db == name);
                match mapped {
                    Some((tenant, _)) => Some(tenant.clone()),
                    None => name
                        .strip_prefix(self.cfg.prefix.as_str())
                        .filter(|t| !self.cfg.prefix.is_empty() && protocol::Id::new(t).is_ok())
                        .map(String::from),
                }
            })
            .collect())
    }

    /// The database of `tenant` as it stands.
    pub async fn state(&self, tenant: &str) -> Result<DatabaseState, TenantsError> {
        let name = self.cfg.target(tenant);
        let databases = self.query("SHOW DATABASES").await?;
        let exists = rows(&databases).any(|row| row[0].as_str() == Some(name.as_str()));
        let retention = if exists {
            let policies = self
                .query(&format!("SHOW RETENTION POLICIES ON {}", quote(&name)))
                .await?;
            let columns = columns(&policies);
            let at = |c: &str| columns.iter().position(|x| x == c);
            let (Some(duration), Some(default)) = (at("duration"), at("default")) else {
                return Err(TenantsError::Refused {
                    query: "SHOW RETENTION POLICIES".into(),
                    answer: "unexpected columns".into(),
                });
            };
            rows(&policies)
                .find(|row| row[default].as_bool() == Some(true))
                .and_then(|row| row[duration].as_str().map(String::from))
        } else {
            None
        };
        Ok(DatabaseState {
            name,
            exists,
            retention,
        })
    }

    /// Creates the database of `tenant` (if missing) with a default retention policy
    /// `vigie` of `retention` (none: for ever); an existing one gets the new retention.
    pub async fn create(
        &self,
        tenant: &str,
        retention: Option<Duration>,
    ) -> Result<DatabaseState, TenantsError> {
        let name = self.cfg.target(tenant);
        self.query(&format!("CREATE DATABASE {}", quote(&name)))
            .await?;
        let duration = match retention {
            // InfluxDB's smallest retention is one hour.
            Some(d) => format!("{}s", d.as_secs().max(3600)),
            None => "INF".into(),
        };
        let create = format!(
            "CREATE RETENTION POLICY \"vigie\" ON {} DURATION {duration} REPLICATION 1 DEFAULT",
            quote(&name)
        );
        if self.query(&create).await.is_err() {
            // It exists (an earlier `tenants add`): change its duration.
            self.query(&format!(
                "ALTER RETENTION POLICY \"vigie\" ON {} DURATION {duration} DEFAULT",
                quote(&name)
            ))
            .await?;
        }
        self.state(tenant).await
    }

    /// Drops the database of `tenant` and every reading in it.
    pub async fn drop(&self, tenant: &str) -> Result<String, TenantsError> {
        let name = self.cfg.target(tenant);
        self.query(&format!("DROP DATABASE {}", quote(&name)))
            .await?;
        Ok(name)
    }
}

/// An InfluxQL identifier in double quotes.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn columns(result: &serde_json::Value) -> Vec<String> {
    result["series"][0]["columns"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn rows(result: &serde_json::Value) -> impl Iterator<Item = &Vec<serde_json::Value>> {
    result["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_array())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_results_read() {
        assert_eq!(quote("vigie_lyon"), "\"vigie_lyon\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let result = serde_json::json!({"series": [{"columns": ["name"], "values": [["_internal"], ["vigie_lyon"]]}]});
        assert_eq!(columns(&result), ["name"]);
        assert_eq!(rows(&result).count(), 2);
        assert_eq!(rows(&serde_json::json!({})).count(), 0);
    }
}
