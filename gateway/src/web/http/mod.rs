//! Status endpoints (axum on hyper's HTTP/1.1 server): the status page (`GET /`,
//! `/commune/<tenant>`, `/commune/<tenant>/<device>`, see [`crate::web::page`]),
//! `GET /devices[?tenant=T]`, `GET /devices/<tenant>/<device>/frames?after=N` (the live
//! feed `devices watch` reads), `GET /metrics`, `GET /healthz`, `GET /readyz`,
//! `POST /quarantine/replay`, `POST /registry/reload`. It binds to loopback by default.
//! Reading is open to whoever reaches the port; the state-changing endpoints need
//! `Authorization: Bearer <http.admin_token>` (compared in constant time) and are off while
//! no token is configured. The public view ([`public_router`], on `http.public_listen`)
//! serves only the commune pages of `http.public_tenants`, without device ids.
//!
//! Every request is bounded: its head within [`MAX_HEAD`] bytes
//! and [`MAX_HEADERS`] header lines (else 431), received within [`HEAD_TIMEOUT`] (else the
//! connection is closed), no body beyond [`MAX_BODY`] bytes (else 413). Each listener
//! holds at most [`MAX_CONNECTIONS`] connections: past that a new one is closed at once,
//! so a client holding sockets open cannot take the descriptors the buffer and the
//! databases need; a failed accept (out of descriptors) waits [`ACCEPT_BACKOFF`].

use crate::clock::Clock;
use crate::config::Secret;
use crate::ingest::Job;
use crate::observe::Traffic;
use crate::observe::devices::Devices;
use crate::observe::health::Health;
use crate::observe::metrics::Metrics;
use crate::web::page::{self, Lang, View};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Most header lines.
pub const MAX_HEADERS: usize = 32;
/// Longest wait for a whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections a listener holds at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Wait after a failed accept (`EMFILE`: out of descriptors), instead of a spin.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Largest body accepted (no endpoint reads one).
pub const MAX_BODY: u64 = 1024;
/// Longest a request may take (a quarantine replay may be long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// What the server needs besides its socket.
#[derive(Debug, Clone)]
pub struct Service {
    /// Metrics to render; they hold the device state too.
    pub metrics: Arc<Metrics>,
    /// Health to report.
    pub health: Arc<Health>,
    /// The ingest worker, for a quarantine replay.
    pub jobs: mpsc::Sender<Job>,
    /// Reloads the registry.
    pub reload: crate::Reload,
    /// Token for state-changing endpoints.
    pub admin_token: Option<Secret>,
    /// The service's clock.
    pub clock: Clock,
    /// Device state and live feed.
    pub traffic: Traffic,
    /// Collection rounds' settings.
    pub round: Arc<crate::config::RoundConfig>,
    /// What the pages take from the configuration (commune names, public parts, tiles).
    pub pages: Arc<page::Settings>,
}

/// The routes.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/commune/:tenant", get(commune))
        .route("/commune/:tenant/:device", get(device_page))
        .route("/round/:tenant", get(round))
        .route("/devices/:tenant/:device/frames", get(frames))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/devices", get(devices))
        .route("/quarantine/replay", post(replay))
        .route("/registry/reload", post(reload))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn(limit_body))
        .layer(DefaultBodyLimit::max(MAX_BODY as usize))
        .with_state(Arc::new(service))
}

/// What every page and endpoint of both listeners gets around it: a `Host` check against
/// DNS rebinding (a page of an attacker's domain that resolves to this address would read
/// the status port: only an IP address, `localhost` or a name of `http.allowed_hosts` is
/// served; else 421), and headers that keep the pages out of frames and scripts out of
/// them (they have none).
pub fn guarded(app: Router, http: &crate::config::HttpConfig) -> Router {
    let allowed: Arc<[String]> = http.allowed_hosts.clone().into();
    let csp = csp(http.tile_origin().as_deref());
    app.layer(middleware::from_fn_with_state(csp, secure_headers))
        .layer(middleware::from_fn_with_state(allowed, check_host))
}

/// Whether `host` (a `Host` header: name or address, maybe a port) may be served.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:9650
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

async fn check_host(
    State(allowed): State<Arc<[String]>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_allowed(host, &allowed) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "unknown Host: name it in http.allowed_hosts to serve it\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// The pages are made here, with inline styles and SVG and no script; images from here,
/// and from the tile server when one is configured (`tiles`, its origin).
fn csp(tiles: Option<&str>) -> header::HeaderValue {
    let tiles = tiles.map(|t| format!(" {t}")).unwrap_or_default();
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:{tiles}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    header::HeaderValue::from_str(&csp)
        .unwrap_or(header::HeaderValue::from_static("default-src 'none'"))
}

async fn secure_headers(
    State(csp): State<header::HeaderValue>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// The public view's routes: the commune pages of `tenants`, nothing else.
pub fn public_router(
    traffic: Traffic,
    tenants: Vec<String>,
    clock: Clock,
    pages: Arc<page::Settings>,
) -> Router {
    Router::new()
        .route("/", get(public_index))
        .route("/commune/:tenant", get(public_commune))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn(limit_body))
        .layer(DefaultBodyLimit::max(MAX_BODY as usize))
        .with_state(Arc::new(Public {
            traffic,
            tenants,
            clock,
            pages,
        }))
}

/// What the public view reads.
#[derive(Debug)]
struct Public {
    traffic: Traffic,
    tenants: Vec<String>,
    clock: Clock,
    pages: Arc<page::Settings>,
}

/// Serves `app` until shutdown.
pub async fn serve(listener: TcpListener, app: Router, stopping: CancellationToken) {
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // Full: closed at once (dropped), its descriptor freed.
                let Ok(permit) = room.clone().try_acquire_owned() else {
                    continue;
                };
                let (app, stopping) = (app.clone(), stopping.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        () = connection(stream, app) => {}
                        _ = stopping.cancelled() => {}
                    }
                });
            }
        }
    }
}

/// Serves one connection (`io`: a socket, or what a fuzz target feeds): one request,
/// its head bounded in size, headers and time, the whole request in time.
pub async fn connection<I>(io: I, app: Router)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    // Errors only concern that client.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn).await;
}

/// Binds the listener (so a busy port is reported at start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Refuses an announced body over [`MAX_BODY`] before any handler runs.
async fn limit_body(request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    }
    next.run(request).await
}

type Shared = State<Arc<Service>>;

async fn metrics(State(s): Shared) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s.traffic.devices),
    )
}

/// 200 or 503, and in both cases what is wrong: the store's state, held tenants, a failed
/// registry reload.
async fn readyz(State(s): Shared) -> impl IntoResponse {
    let h = s.health.snapshot();
    let body = serde_json::json!({
        "ready": h.ready(),
        "summary": h.summary(),
        "health": h,
    });
    let code = if h.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

/// Query of the pages and of `/devices`.
#[derive(Debug, Default, serde::Deserialize)]
struct PageQuery {
    lang: Option<String>,
    tenant: Option<String>,
    after: Option<u64>,
    format: Option<String>,
}

async fn devices(State(s): Shared, Query(q): Query<PageQuery>) -> impl IntoResponse {
    let now = s.clock.now_ms();
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.traffic.devices.read_all(|roster, book| {
            crate::observe::devices::served_json(roster, book, now, q.tenant.as_deref())
        }),
    )
}

/// Events of the live feed kept per request at most.
const MAX_FRAMES: usize = 200;

async fn frames(
    State(s): Shared,
    Path((tenant, device)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> impl IntoResponse {
    let events = s
        .traffic
        .feed
        .of(&tenant, &device, q.after.unwrap_or(0), MAX_FRAMES);
    axum::Json(serde_json::json!({
        "last_seq": s.traffic.feed.last_seq(),
        "events": events,
    }))
}

/// Renders a page of the view of the communes `shown` accepts, or 404.
fn page(
    devices: &Devices,
    now: u64,
    health: Option<&crate::observe::health::Snapshot>,
    (lang, settings): (Option<&str>, &page::Settings),
    shown: impl Fn(&str) -> bool,
    render: impl FnOnce(&View) -> Option<String>,
) -> Response {
    let html = devices.read_all(|roster, book| {
        let mut v = View::new(roster, book, now, shown);
        v.lang = Lang::from_query(lang);
        v.settings = Some(settings);
        v.health = health;
        v.public = health.is_none();
        v.for_citizens();
        render(&v)
    });
    match html {
        Some(html) => Html(html).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html("<!DOCTYPE html><title>404</title><p>not found</p>"),
        )
            .into_response(),
    }
}

async fn overview(State(s): Shared, Query(q): Query<PageQuery>) -> Response {
    let health = s.health.snapshot();
    page(
        &s.traffic.devices,
        s.clock.now_ms(),
        Some(&health),
        (q.lang.as_deref(), &s.pages),
        |_| true,
        |v| Some(page::overview(v)),
    )
}

async fn commune(
    State(s): Shared,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let health = s.health.snapshot();
    page(
        &s.traffic.devices,
        s.clock.now_ms(),
        Some(&health),
        (q.lang.as_deref(), &s.pages),
        |_| true,
        |v| page::commune(v, &tenant),
    )
}

/// `/round/<tenant>`: the collection round, a page or (`?format=csv|geojson|gpx`) a file.
async fn round(
    State(s): Shared,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    use vigie_core::round;
    let now = s.clock.now_ms();
    let kind = match q.format.as_deref() {
        None | Some("html") => {
            let health = s.health.snapshot();
            let lang = q.lang.as_deref();
            let r = &s.round;
            return page(
                &s.traffic.devices,
                now,
                Some(&health),
                (lang, &s.pages),
                |_| true,
                |v| page::round::page(v, &tenant, r),
            );
        }
        Some(f @ ("csv" | "geojson" | "gpx")) => f,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "format: csv, geojson or gpx\n").into_response();
        }
    };
    let planned = s.traffic.devices.read_all(|roster, book| {
        page::round::plan(&View::new(roster, book, now, |_| true), &tenant, &s.round)
    });
    let Some((r, _)) = planned else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let (body, mime) = match kind {
        "csv" => (round::csv(&r), "text/csv; charset=utf-8"),
        "geojson" => (round::geojson(&r), "application/geo+json"),
        _ => (round::gpx(&r, &tenant), "application/gpx+xml"),
    };
    let file = format!("attachment; filename=\"round-{tenant}.{kind}\"");
    let headers = [
        (header::CONTENT_TYPE, mime.to_string()),
        (header::CONTENT_DISPOSITION, file),
    ];
    (headers, body).into_response()
}

async fn device_page(
    State(s): Shared,
    Path((tenant, device)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let health = s.health.snapshot();
    let events = s.traffic.feed.of(&tenant, &device, 0, 50);
    page(
        &s.traffic.devices,
        s.clock.now_ms(),
        Some(&health),
        (q.lang.as_deref(), &s.pages),
        |_| true,
        |v| page::device(v, &tenant, &device, &events),
    )
}

async fn public_index(State(p): State<Arc<Public>>, Query(q): Query<PageQuery>) -> Response {
    let shown = |t: &str| p.tenants.iter().any(|x| x == t);
    page(
        &p.traffic.devices,
        p.clock.now_ms(),
        None,
        (q.lang.as_deref(), &p.pages),
        shown,
        |v| Some(page::overview(v)),
    )
}

async fn public_commune(
    State(p): State<Arc<Public>>,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let shown = |t: &str| p.tenants.iter().any(|x| x == t);
    page(
        &p.traffic.devices,
        p.clock.now_ms(),
        None,
        (q.lang.as_deref(), &p.pages),
        shown,
        |v| page::commune(v, &tenant),
    )
}

/// The state-changing endpoints' check: a configured token, given as a bearer token.
fn authorize(
    s: &Service,
    headers: &HeaderMap,
    what: &str,
) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = &s.admin_token else {
        return Err((
            StatusCode::FORBIDDEN,
            "state-changing endpoints are off: set http.admin_token\n",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| token_matches(token, g.trim())) {
        tracing::warn!("{what} refused: missing or wrong admin token");
        return Err((StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n"));
    }
    Ok(())
}

async fn replay(State(s): Shared, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, "quarantine replay") {
        return refused.into_response();
    }
    let (tx, rx) = oneshot::channel();
    if s.jobs.send(Job::ReplayQuarantine(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match rx.await {
        Ok(summary) => axum::Json(summary).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// Reloads the registry file (as SIGHUP does) and says whether it worked: the command
/// that changed the registry reports it.
async fn reload(State(s): Shared, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&s, &headers, "registry reload") {
        return refused.into_response();
    }
    match s.reload.run().await {
        Ok(devices) => axum::Json(serde_json::json!({ "devices": devices })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
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

#[cfg(test)]
mod tests;
