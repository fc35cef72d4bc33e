//! Status endpoints on a small HTTP/1.1 server (no framework: four routes, one request per
//! connection): `GET /metrics`, `GET /healthz`, `GET /readyz`, `POST /quarantine/replay`.
//! Bind it to loopback or a management network; it has no authentication.

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

/// Serves until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    jobs: mpsc::Sender<Job>,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (metrics, health, jobs) = (metrics.clone(), health.clone(), jobs.clone());
                // One short request per connection; errors only concern that client.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(30), handle(stream, metrics, health, jobs)).await;
                });
            }
        }
    }
}

/// Binds the listener (so a busy port is reported at start-up).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("http.listen {addr}: {e}"))
}

async fn handle(
    mut stream: TcpStream,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    jobs: mpsc::Sender<Job>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == buf.len() {
            return respond(&mut stream, 431, "text/plain", "request header too large\n").await;
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
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
        404 => "Not Found",
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
