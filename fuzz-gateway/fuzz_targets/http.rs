//! Hostile HTTP request heads through the service itself: the bytes go, as a client
//! would send them, into the same connection handling, routing, `Host` guard and pages
//! the status listener serves. Nothing may panic or hang, every answer is an HTTP/1.1
//! response, and no answer holds the admin token.
#![no_main]

use gateway::config::Secret;
use gateway::observe::health::Health;
use gateway::observe::metrics::Metrics;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "fuzz-admin-token-0123456789";

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (metrics, health) = (Arc::new(Metrics::new()), Arc::new(Health::default()));
        let jobs = tokio::sync::mpsc::channel(1).0;
        let registry = std::path::PathBuf::from("/nonexistent/devices.toml");
        let service = gateway::web::http::Service {
            reload: gateway::Reload::new(registry, jobs.clone(), metrics.clone(), health.clone()),
            metrics,
            health,
            jobs,
            admin_token: Some(Secret::new(TOKEN)),
            clock: gateway::clock::Clock::system(),
            traffic: gateway::observe::Traffic::default(),
            round: Arc::default(),
            pages: Arc::default(),
        };
        let app = gateway::web::http::guarded(
            gateway::web::http::router(service),
            &gateway::config::HttpConfig::default(),
        );
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(gateway::web::http::connection(server, app));
        let mut answer = Vec::new();
        let exchange = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let _ = client.read_to_end(&mut answer).await;
        };
        // The head's own time-out is 10 s; a request that hangs the service is a bug.
        tokio::time::timeout(Duration::from_secs(15), exchange)
            .await
            .expect("the service answers or closes");
        served.abort();
        let text = String::from_utf8_lossy(&answer);
        // hyper answers an HTTP/1.0 request in HTTP/1.0 (seeds/http/http10-misdirected).
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 "),
            "not an HTTP answer: {text:?}"
        );
        assert!(!text.contains(TOKEN), "the admin token in an answer");
    });
});
