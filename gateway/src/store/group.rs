//! The device state a group of gateways shares, in etcd (docs/OPERATIONS.md "Scaling
//! out"), as [`vigie_core::judge::replay_book::shared`] lays it out: per device a head,
//! `<prefix>/device/<tenant>/<device>`, and blocks of tag fingerprints,
//! `…/<device>/prints/<key epoch>/<block>` (a new key epoch starts with none).
//!
//! Two requests per commit, whatever its size, through etcd's JSON gateway (`/v3/kv/txn`,
//! no gRPC stack to build): [`Etcd::fetch`] reads the keys with their revisions,
//! [`Etcd::commit`] writes only if none of the compared keys changed since (compare-and-
//! swap on each head's `mod_revision`, one transaction: all or nothing). etcd is
//! linearizable (Raft), so a commit it answered survives the loss of its leader.
//!
//! The worker's thread blocks on these requests; they run on a private single-threaded
//! runtime, bounded by `group.timeout`, each tried on the next member when one does not
//! answer.

use crate::config::GroupConfig;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use vigie_core::Secret;

/// A key's value in the store, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The key's `mod_revision` (0: no such key).
    pub revision: i64,
    /// Its value, if any.
    pub state: Option<Vec<u8>>,
}

/// Why the store could not answer. None of them says whether a commit was applied: the
/// caller reads the keys again to know.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No member answered in time.
    #[error("no etcd member answered ({0})")]
    Unreachable(String),
    /// A member answered with an error.
    #[error("etcd refused the request: HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// etcd's message (no secret is sent, so none can come back).
        message: String,
    },
    /// The answer was not what etcd sends.
    #[error("unreadable answer from etcd: {0}")]
    Unreadable(&'static str),
}

/// Why the client cannot be set up (no secret is ever in these messages).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Its runtime or HTTP client.
    #[error("group: {0}")]
    Runtime(std::io::Error),
    /// A file it needs cannot be read.
    #[error("{what} {path}: {source}")]
    File {
        /// The setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `group.ca_file` holds no certificate.
    #[error("group.ca_file {0}: not a PEM certificate")]
    Ca(PathBuf),
}

/// A client of the group's etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    members: Vec<String>,
    prefix: String,
    /// The member that answered last: asked first.
    current: usize,
    /// The etcd user and password, if the cluster has authentication on.
    user: Option<(String, Secret)>,
    /// The token etcd gave for them (a simple token lives 5 minutes; asked again then).
    token: Option<Secret>,
    /// `group.max_txn_ops`.
    max_ops: usize,
}

impl Etcd {
    /// A client of the members `cfg` lists, its CA and password read (no request yet).
    pub fn new(cfg: &GroupConfig) -> Result<Self, SetupError> {
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|source| SetupError::File {
                what,
                path: path.clone(),
                source,
            })
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SetupError::Runtime)?;
        let mut http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(1)));
        if let Some(path) = &cfg.ca_file {
            let pem = read("group.ca_file", path)?;
            let ca =
                reqwest::Certificate::from_pem(&pem).map_err(|_| SetupError::Ca(path.clone()))?;
            http = http.add_root_certificate(ca);
        }
        let user = match (&cfg.username, &cfg.password_file) {
            (Some(name), Some(path)) => {
                let password = String::from_utf8_lossy(&read("group.password_file", path)?)
                    .trim_end()
                    .to_string();
                Some((name.clone(), Secret::new(password)))
            }
            _ => None,
        };
        Ok(Self {
            runtime,
            http: http
                .build()
                .map_err(|e| SetupError::Runtime(std::io::Error::other(e)))?,
            members: cfg
                .etcd
                .iter()
                .map(|m| m.trim_end_matches('/').to_string())
                .collect(),
            prefix: cfg.prefix.clone(),
            current: 0,
            user,
            token: None,
            max_ops: cfg.max_txn_ops,
        })
    }

    /// Most operations in one transaction (`group.max_txn_ops`, at most etcd's
    /// `--max-txn-ops`): a commit reads at most this many keys, and writes at most the
    /// heads and blocks it read.
    pub fn max_ops(&self) -> usize {
        self.max_ops
    }

    /// A device's head.
    pub fn head_key(&self, tenant: &str, device: &str) -> String {
        format!("{}/device/{tenant}/{device}", self.prefix)
    }

    /// A device's block of fingerprints under a key epoch.
    pub fn block_key(&self, tenant: &str, device: &str, epoch: u32, block: u32) -> String {
        format!(
            "{}/device/{tenant}/{device}/prints/{epoch}/{block}",
            self.prefix
        )
    }

    /// A topic's list of refused frames (`crate::ingest`'s group refusals), by the hex of
    /// its topic's hash.
    pub fn refused_key(&self, topic_hash: &str) -> String {
        format!("{}/refused/{topic_hash}", self.prefix)
    }

    /// The values of `keys`, in their order, in one request.
    pub fn fetch(&mut self, keys: &[String]) -> Result<Vec<Held>, GroupError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ranges: Vec<Value> = keys
            .iter()
            .map(|k| json!({"request_range": {"key": B64.encode(k)}}))
            .collect();
        let answer = self.txn(&json!({"success": ranges}))?;
        let responses = answer["responses"]
            .as_array()
            .filter(|r| r.len() == keys.len())
            .ok_or(GroupError::Unreadable("not one range per key"))?;
        responses.iter().map(held).collect()
    }

    /// Writes `puts` if every key of `unchanged` is still at its revision; `false`
    /// (nothing written) if one moved: another gateway committed meanwhile.
    pub fn commit(
        &mut self,
        unchanged: &[(String, i64)],
        puts: &[(String, Vec<u8>)],
    ) -> Result<bool, GroupError> {
        if puts.is_empty() {
            return Ok(true);
        }
        let compare: Vec<Value> = unchanged
            .iter()
            .map(|(k, rev)| {
                json!({"key": B64.encode(k), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
            })
            .collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|(k, v)| json!({"request_put": {"key": B64.encode(k), "value": B64.encode(v)}}))
            .collect();
        let answer = self.txn(&json!({"compare": compare, "success": success}))?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    fn txn(&mut self, body: &Value) -> Result<Value, GroupError> {
        self.request("/v3/kv/txn", body)
    }

    /// Keeps this gateway's key `<prefix>/member/<name>` alive on a lease of `ttl_s`
    /// seconds (`lease`: the one it holds, granted again when it expired), and lists the
    /// group's members: every such key alive.
    pub fn members(
        &mut self,
        name: &str,
        lease: &mut Option<i64>,
        ttl_s: u32,
    ) -> Result<Vec<String>, GroupError> {
        let alive = match *lease {
            Some(id) => {
                let answer = self.request("/v3/lease/keepalive", &json!({"ID": id.to_string()}))?;
                answer["result"]["TTL"].as_str().is_some_and(|t| t != "0")
            }
            None => false,
        };
        if !alive {
            let answer = self.request("/v3/lease/grant", &json!({"TTL": ttl_s.to_string()}))?;
            let id = answer["ID"].as_str().and_then(|i| i.parse().ok());
            *lease = Some(id.ok_or(GroupError::Unreadable("a lease without its id"))?);
            let key = B64.encode(self.member_key(name));
            let put = json!({"key": key, "value": B64.encode(name), "lease": lease.unwrap_or_default().to_string()});
            self.request("/v3/kv/put", &put)?;
        }
        self.listed()
    }

    /// The group's members: every gateway whose key `<prefix>/member/<name>` is alive.
    pub fn listed(&mut self) -> Result<Vec<String>, GroupError> {
        let prefix = self.member_key("");
        let range = json!({"key": B64.encode(&prefix), "range_end": B64.encode(range_end(&prefix)), "keys_only": true});
        let answer = self.request("/v3/kv/range", &range)?;
        Ok(kvs(&answer)
            .iter()
            .filter_map(|kv| B64.decode(kv["key"].as_str()?).ok())
            .filter_map(|k| {
                Some(
                    String::from_utf8(k)
                        .ok()?
                        .strip_prefix(&prefix)?
                        .to_string(),
                )
            })
            .collect())
    }

    /// Adds an operation to the group's log, `<prefix>/op/<unique>`, read by every
    /// member in the order etcd took them; its revision.
    pub fn put_op(&mut self, op: &[u8]) -> Result<i64, GroupError> {
        let mut nonce = [0u8; 8];
        // Uniqueness only (the order is etcd's): a clock and the process id do if the
        // system's randomness fails.
        if getrandom::fill(&mut nonce).is_err() {
            nonce = u64::from(std::process::id()).to_le_bytes();
        }
        let unique = format!(
            "{}/op/{}-{}",
            self.prefix,
            crate::clock::Clock::system().now_ms(),
            hex::encode(nonce)
        );
        let answer = self.request(
            "/v3/kv/put",
            &json!({"key": B64.encode(unique), "value": B64.encode(op)}),
        )?;
        revision(&answer["header"]["revision"])
    }

    /// The log's operations after revision `after`, oldest first, with their revisions.
    pub fn ops_after(&mut self, after: i64) -> Result<Vec<(i64, Vec<u8>)>, GroupError> {
        let prefix = format!("{}/op/", self.prefix);
        let range = json!({
            "key": B64.encode(&prefix), "range_end": B64.encode(range_end(&prefix)),
            "min_create_revision": (after + 1).to_string(),
            "sort_order": "ASCEND", "sort_target": "CREATE",
        });
        let answer = self.request("/v3/kv/range", &range)?;
        kvs(&answer)
            .iter()
            .map(|kv| {
                let value = B64
                    .decode(kv["value"].as_str().unwrap_or_default())
                    .map_err(|_| GroupError::Unreadable("a value that is not base64"))?;
                Ok((revision(&kv["create_revision"])?, value))
            })
            .collect()
    }

    /// The last operation each of `members` applied (0: none yet).
    pub fn applied(&mut self, members: &[String]) -> Result<Vec<i64>, GroupError> {
        let keys: Vec<String> = members.iter().map(|m| self.applied_key(m)).collect();
        let revision = |value: Option<Vec<u8>>| {
            let text = String::from_utf8(value.unwrap_or_default()).unwrap_or_default();
            text.parse().unwrap_or(0)
        };
        Ok(self
            .fetch(&keys)?
            .into_iter()
            .map(|h| revision(h.state))
            .collect())
    }

    /// Records that `member` applied every operation up to `revision`.
    pub fn set_applied(&mut self, member: &str, revision: i64) -> Result<(), GroupError> {
        let put = json!({"key": B64.encode(self.applied_key(member)), "value": B64.encode(revision.to_string())});
        self.request("/v3/kv/put", &put).map(drop)
    }

    fn applied_key(&self, member: &str) -> String {
        format!("{}/applied/{member}", self.prefix)
    }

    /// Ends a lease at once (a gateway stopping leaves the group's list now).
    pub fn revoke(&mut self, lease: i64) -> Result<(), GroupError> {
        self.request("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .map(drop)
    }

    fn member_key(&self, name: &str) -> String {
        format!("{}/member/{name}", self.prefix)
    }

    /// One request, authenticated when the cluster wants it: a token refused (expired)
    /// is asked again once.
    fn request(&mut self, path: &str, body: &Value) -> Result<Value, GroupError> {
        if self.user.is_some() && self.token.is_none() {
            self.token = Some(self.authenticate()?);
        }
        match self.post(path, body) {
            Err(GroupError::Refused { status: 401, .. }) if self.user.is_some() => {
                self.token = Some(self.authenticate()?);
                self.post(path, body)
            }
            other => other,
        }
    }

    /// A token for the configured user (`/v3/auth/authenticate`).
    fn authenticate(&mut self) -> Result<Secret, GroupError> {
        let Some((name, password)) = &self.user else {
            return Err(GroupError::Unreadable("no user configured"));
        };
        let body = json!({"name": name, "password": password.expose()});
        self.token = None;
        let answer = self.post("/v3/auth/authenticate", &body)?;
        let token = answer["token"]
            .as_str()
            .ok_or(GroupError::Unreadable("no token in the answer"))?;
        Ok(Secret::new(token.to_string()))
    }

    /// One request, on the member that answered last, then on each other in turn.
    fn post(&mut self, path: &str, body: &Value) -> Result<Value, GroupError> {
        let mut last = String::new();
        for i in 0..self.members.len() {
            let at = (self.current + i) % self.members.len();
            let mut sent = self
                .http
                .post(format!("{}{path}", self.members[at]))
                .json(body);
            if let Some(token) = &self.token {
                sent = sent.header("Authorization", token.expose());
            }
            let answer = self.runtime.block_on(async move {
                let response = sent.send().await?;
                let status = response.status();
                let text = response.text().await?;
                Ok::<_, reqwest::Error>((status, text))
            });
            match answer {
                Ok((status, text)) if status.is_success() => {
                    self.current = at;
                    return serde_json::from_str(&text)
                        .map_err(|_| GroupError::Unreadable("not JSON"));
                }
                // Not the leader's fault: another member may serve it (a member cut off
                // from the others answers 503 or times out).
                Ok((status, text)) if status.is_server_error() => {
                    last = format!(
                        "{}: HTTP {status}: {}",
                        self.members[at],
                        error_message(&text)
                    );
                }
                Ok((status, text)) => {
                    return Err(GroupError::Refused {
                        status: refused_status(status.as_u16(), &text),
                        message: error_message(&text),
                    });
                }
                Err(e) => last = format!("{}: {}", self.members[at], without_url(&e)),
            }
        }
        Err(GroupError::Unreachable(last))
    }
}

/// etcd's JSON gateway answers an expired or unknown token with HTTP 400 or 401 and
/// "invalid auth token": said 401 here, so the caller asks for a new one.
fn refused_status(status: u16, text: &str) -> u16 {
    if text.contains("invalid auth token") || text.contains("user name is empty") {
        401
    } else {
        status
    }
}

/// The end of the range of keys starting with `prefix` (its last byte plus one).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The key-values of a range answer.
fn kvs(answer: &Value) -> &[Value] {
    answer["kvs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A revision as etcd's JSON writes 64-bit integers: a string.
fn revision(v: &Value) -> Result<i64, GroupError> {
    v.as_str()
        .and_then(|r| r.parse().ok())
        .ok_or(GroupError::Unreadable("a revision that is not a number"))
}

/// One range response as a device's state.
fn held(response: &Value) -> Result<Held, GroupError> {
    let range = &response["response_range"];
    let Some(kv) = range["kvs"].as_array().and_then(|kvs| kvs.first()) else {
        return Ok(Held {
            revision: 0,
            state: None,
        });
    };
    // etcd's JSON writes 64-bit integers as strings.
    let revision = kv["mod_revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or(GroupError::Unreadable("a key without its revision"))?;
    let state = B64
        .decode(kv["value"].as_str().unwrap_or_default())
        .map_err(|_| GroupError::Unreadable("a value that is not base64"))?;
    Ok(Held {
        revision,
        state: Some(state),
    })
}

/// etcd's error message from an error answer, bounded.
fn error_message(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["message"].as_str().or(v["error"].as_str()))
        .unwrap_or(text);
    message.chars().take(200).collect()
}

/// A request error without its URL (the members are in the message already).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_string()
}
