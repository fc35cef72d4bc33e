//! Talking to the running service from a command: its status port (`http.listen`), the
//! admin token for what changes it, and a Tokio runtime of the command's own (the
//! commands are synchronous).

use crate::config::{Config, Secret};
use crate::ops::OpsError;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a request to the running service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No answer (not running, wrong port).
    #[error("{0}")]
    Unreachable(String),
    /// It answered with an error status.
    #[error("{0}")]
    Refused(String),
}

/// Runs `f` to completion on a runtime of its own.
pub fn block_on<F: Future>(f: F) -> Result<F::Output, OpsError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(OpsError::Runtime)?;
    Ok(runtime.block_on(f))
}

/// One request to the running service's status port; the body of a 2xx answer.
pub fn request_blocking(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&Secret>,
) -> Result<String, ServiceError> {
    block_on(request(addr, method, path, token))
        .map_err(|e| ServiceError::Unreachable(e.to_string()))?
}

/// One request to the running service.
pub async fn request(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&Secret>,
) -> Result<String, ServiceError> {
    let unreachable = |e: &dyn std::fmt::Display| ServiceError::Unreachable(e.to_string());
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        // A replay re-judges the whole quarantine.
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| unreachable(&e))?;
    let mut request = client.request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        request = request.bearer_auth(t.expose());
    }
    let answer = request.send().await.map_err(|e| unreachable(&e))?;
    let status = answer.status();
    let body = answer.text().await.map_err(|e| unreachable(&e))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(ServiceError::Refused(format!("{status}: {}", body.trim())))
    }
}

/// After a registry change: asks the running service to load it and says what happened.
/// An error if the service answered that it cannot load it (the change is saved, but not
/// in force); without `http.admin_token`, or with the service stopped, says what to do.
pub fn reload(config: &Config) -> Result<String, OpsError> {
    const BY_HAND: &str = "run `systemctl reload vigie-gateway` (SIGHUP) to load it";
    let Some(addr) = config.http.listen else {
        return Ok(format!(
            "The gateway's status port is off (http.listen): {BY_HAND}."
        ));
    };
    let not_running = || {
        format!(
            "The gateway service does not answer on {addr}: it loads the registry when it starts."
        )
    };
    let Some(token) = &config.http.admin_token else {
        // No warning before the service ever ran: it will load the file when it starts.
        if let Err(ServiceError::Unreachable(_)) =
            request_blocking(addr, reqwest::Method::GET, "/healthz", None)
        {
            return Ok(not_running());
        }
        return Ok(format!(
            "No http.admin_token, so this command cannot ask the running gateway: {BY_HAND}."
        ));
    };
    match request_blocking(addr, reqwest::Method::POST, "/registry/reload", Some(token)) {
        Ok(body) => {
            let devices = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["devices"].as_u64())
                .unwrap_or(0);
            Ok(format!(
                "The running gateway loaded the registry: {devices} devices."
            ))
        }
        Err(ServiceError::Unreachable(_)) => Ok(not_running()),
        Err(ServiceError::Refused(why)) => Err(OpsError::ReloadRefused(why)),
    }
}
