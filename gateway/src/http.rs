//! Status endpoints on a small HTTP/1.1 server (no framework: four routes, one request per
//! connection): `GET /metrics`, `GET /healthz`, `GET /readyz`, `POST /quarantine/replay`.
//! It binds to loopback by default. Reading is open to whoever reaches the port; the
//! state-changing endpoint needs `Authorization: Bearer <http.admin_token>` (compared in
//! constant time) and is off while no token is configured. Every request is bounded: its
//! head within [`MAX_HEAD`] bytes, [`MAX_HEADERS`] header lines and [`HEAD_TIMEOUT`], no
//! body beyond [`MAX_BODY`] bytes; past a bound the connection gets an error and is closed.

use crate::config::Secret;
use crate::health::Health;
use crate::ingest::Job;
use crate::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Most header lines.
pub const MAX_HEADERS: usize = 32;
/// Longest wait for a whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body announced (no endpoint reads one).
pub const MAX_BODY: u64 = 1024;

/// What the server needs besides its socket.
#[derive(Debug, Clone)]
pub struct Service {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Health to report.
    pub health: Arc<Health>,
    /// The ingest worker, for a quarantine replay.
    pub jobs: mpsc::Sender<Job>,
    /// Token for state-changing endpoints.
    pub admin_token: Option<Secret>,
}

/// Serves until shutdown.
pub async fn serve(listener: TcpListener, service: Service, stopping: CancellationToken) {
    let service = Arc::new(service);
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = service.clone();
                // One short request per connection; errors only concern that client. A
                // replay may take long: only the head has a short deadline.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(300), handle(stream, &service)).await;
                });
            }
        }
    }
}

/// A request head that passed the bounds.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    bearer: Option<String>,
    body_len: u64,
}

/// Why a request head is refused: the status code and a short text.
type Refusal = (u16, &'static str);

/// Parses a complete request head (up to and including the blank line). Pure.
fn parse_head(head: &[u8]) -> Result<Request, Refusal> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "request head is not UTF-8\n"))?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method.is_empty() || path.is_empty() {
        return Err((400, "malformed request line\n"));
    }
    let mut request = Request {
        method: method.into(),
        path: path.into(),
        bearer: None,
        body_len: 0,
    };
    for (i, line) in lines.take_while(|l| !l.is_empty()).enumerate() {
        if i == MAX_HEADERS {
            return Err((431, "too many header fields\n"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err((400, "malformed header field\n"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            request.bearer = value.strip_prefix("Bearer ").map(|t| t.trim().to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            request.body_len = value.parse().map_err(|_| (400, "bad content-length\n"))?;
        }
    }
    if request.body_len > MAX_BODY {
        return Err((413, "request body too large\n"));
    }
    Ok(request)
}

/// Whether `given` is the configured token, in time independent of where they differ.
fn token_matches(configured: &Secret, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    configured
        .expose()
        .as_bytes()
        .ct_eq(given.as_bytes())
        .into()
}

/// Binds the listener (so a busy port is reported at start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn handle(mut stream: TcpStream, service: &Service) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let read_head = async {
        while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            if len == buf.len() {
                return Ok(Err((431, "request header too large\n")));
            }
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                return Ok(Err((400, "")));
            }
            len += n;
        }
        Ok::<_, std::io::Error>(Ok(()))
    };
    let request = match tokio::time::timeout(HEAD_TIMEOUT, read_head).await {
        Err(_) => Err((408, "request head not received in time\n")),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(refusal))) => Err(refusal),
        Ok(Ok(Ok(()))) => {
            let end = buf[..len]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(len, |i| i + 4);
            parse_head(&buf[..end])
        }
    };
    let request = match request {
        Ok(r) => r,
        Err((_, "")) => return Ok(()), // the client went away
        Err((code, text)) => return respond(&mut stream, code, "text/plain", text).await,
    };
    let Service {
        metrics,
        health,
        jobs,
        admin_token,
    } = service;
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/metrics") => {
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4",
                &metrics.render(),
            )
            .await
        }
        ("GET", "/healthz") => respond(&mut stream, 200, "text/plain", "ok\n").await,
        ("GET", "/readyz") => {
            // 200 or 503, and in both cases what is wrong: the store's state, held
            // tenants, a failed registry reload.
            let s = health.snapshot();
            let body = serde_json::json!({
                "ready": s.ready(),
                "summary": s.summary(),
                "health": s,
            });
            let code = if s.ready() { 200 } else { 503 };
            respond(&mut stream, code, "application/json", &format!("{body}\n")).await
        }
        ("POST", "/quarantine/replay") => {
            let Some(token) = admin_token else {
                return respond(
                    &mut stream,
                    403,
                    "text/plain",
                    "state-changing endpoints are off: set http.admin_token\n",
                )
                .await;
            };
            if !request.bearer.is_some_and(|b| token_matches(token, &b)) {
                tracing::warn!("quarantine replay refused: missing or wrong admin token");
                return respond(
                    &mut stream,
                    401,
                    "text/plain",
                    "missing or wrong bearer token\n",
                )
                .await;
            }
            let (tx, rx) = oneshot::channel();
            if jobs.send(Job::ReplayQuarantine(tx)).await.is_err() {
                return respond(&mut stream, 503, "text/plain", "shutting down\n").await;
            }
            match rx.await {
                Ok(summary) => {
                    let body = serde_json::to_string(&summary).unwrap_or_default() + "\n";
                    respond(&mut stream, 200, "application/json", &body).await
                }
                Err(_) => respond(&mut stream, 503, "text/plain", "shutting down\n").await,
            }
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_within_bounds_parse_others_are_refused_with_their_code() {
        let ok = parse_head(
            b"POST /quarantine/replay HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (ok.method.as_str(), ok.path.as_str(), ok.bearer.as_deref()),
            ("POST", "/quarantine/replay", Some("s3cret"))
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(head.as_bytes()).unwrap_err().0, 431);
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\ncontent-length: 5000\r\n\r\n")
                .unwrap_err()
                .0,
            413
        );
        assert_eq!(parse_head(b"\r\n\r\n").unwrap_err().0, 400);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nnocolon\r\n\r\n")
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn token_compare() {
        let t = Secret::new("0123456789abcdef");
        assert!(token_matches(&t, "0123456789abcdef"));
        assert!(!token_matches(&t, "0123456789abcdeF"));
        assert!(!token_matches(&t, "0123456789abcde"));
        assert!(!token_matches(&t, ""));
    }
}
