//! The status port's routes: authorisation, limits, answers.

use super::*;
use tower::ServiceExt;

fn service(token: Option<&str>) -> Service {
    let (metrics, health) = (Arc::new(Metrics::new()), Arc::new(Health::default()));
    let jobs = mpsc::channel(1).0;
    let registry = std::path::PathBuf::from("/nonexistent/devices.toml");
    Service {
        clock: Clock::system(),
        traffic: Traffic::default(),
        reload: crate::Reload::new(registry, jobs.clone(), metrics.clone(), health.clone()),
        metrics,
        health,
        jobs,
        admin_token: token.map(Secret::new),
        round: Arc::default(),
        pages: Arc::default(),
    }
}

async fn call(app: &Router, request: axum::http::Request<axum::body::Body>) -> (u16, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (code, String::from_utf8(body.to_vec()).unwrap())
}

fn request(method: &str, path: &str) -> axum::http::request::Builder {
    axum::http::Request::builder().method(method).uri(path)
}

#[test]
fn hosts_by_address_or_by_a_name_allowed() {
    let allowed = vec!["air.lyon.fr".to_string()];
    for ok in [
        "127.0.0.1:9650",
        "127.0.0.1",
        "[::1]:9650",
        "localhost:9650",
        "192.0.2.7",
        "AIR.lyon.fr",
        "air.lyon.fr:443",
    ] {
        assert!(host_allowed(ok, &allowed), "{ok}");
    }
    for refused in [
        "evil.example",
        "evil.example:9650",
        "",
        "127.0.0.1.evil.example",
        "[evil]:80",
    ] {
        assert!(!host_allowed(refused, &allowed), "{refused}");
    }
}

#[tokio::test]
async fn every_answer_has_its_security_headers_and_a_foreign_host_gets_none() {
    let app = guarded(router(service(None)), &crate::config::HttpConfig::default());
    let get = |host: &str| {
        request("GET", "/")
            .header(header::HOST, host)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let response = app.clone().oneshot(get("127.0.0.1:9650")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let h = response.headers();
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let (code, text) = call(&app, get("rebind.evil.example:9650")).await;
    assert_eq!(code, 421);
    assert!(text.contains("http.allowed_hosts"), "{text}");
}

#[tokio::test]
async fn routes_answer_and_the_admin_endpoint_needs_its_token() {
    let app = router(service(Some("0123456789abcdef")));
    let empty = axum::body::Body::empty;
    let (code, text) = call(&app, request("GET", "/metrics").body(empty()).unwrap()).await;
    assert_eq!(code, 200);
    assert!(
        text.contains("# TYPE vigie_frames_rejected counter"),
        "{text}"
    );
    let (code, text) = call(&app, request("GET", "/readyz").body(empty()).unwrap()).await;
    assert_eq!(code, 503, "not connected yet");
    assert!(text.contains("not connected to the broker"), "{text}");
    let (code, text) = call(&app, request("GET", "/devices").body(empty()).unwrap()).await;
    assert_eq!(
        (code, text.contains("\"devices\": []")),
        (200, true),
        "{text}"
    );
    let (code, _) = call(&app, request("GET", "/nope").body(empty()).unwrap()).await;
    assert_eq!(code, 404);
    // The collection round: an unknown commune, a bad format.
    let (code, _) = call(
        &app,
        request("GET", "/round/lyon?format=csv")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = call(
        &app,
        request("GET", "/round/lyon?format=kml")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(code, 400);
    for auth in [
        None,
        Some("Bearer 0123456789abcdeF"),
        Some("0123456789abcdef"),
    ] {
        let mut r = request("POST", "/quarantine/replay");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let (code, _) = call(&app, r.body(empty()).unwrap()).await;
        assert_eq!(code, 401, "{auth:?}");
    }
    let big = request("POST", "/quarantine/replay")
        .header("content-length", "5000")
        .body(axum::body::Body::from(vec![b'x'; 5000]))
        .unwrap();
    assert_eq!(call(&app, big).await.0, 413);
    // A reload that fails says why, and /readyz says it too.
    let reload = request("POST", "/registry/reload")
        .header("authorization", "Bearer 0123456789abcdef")
        .body(empty())
        .unwrap();
    let (code, text) = call(&app, reload).await;
    assert_eq!(code, 500);
    assert!(text.contains("/nonexistent/devices.toml"), "{text}");
    let (_, text) = call(&app, request("GET", "/readyz").body(empty()).unwrap()).await;
    assert!(text.contains("registry reload failed"), "{text}");
    let off = router(service(None));
    let (code, _) = call(
        &off,
        request("POST", "/quarantine/replay").body(empty()).unwrap(),
    )
    .await;
    assert_eq!(code, 403);
}

#[test]
fn token_compare() {
    let t = Secret::new("0123456789abcdef");
    assert!(token_matches(&t, "0123456789abcdef"));
    assert!(!token_matches(&t, "0123456789abcdeF"));
    assert!(!token_matches(&t, "0123456789abcde"));
    assert!(!token_matches(&t, ""));
}
