//! Harness for the end-to-end suite: real Mosquitto, InfluxDB 1.x and VictoriaMetrics
//! processes, each on a free 127.0.0.1 port with its own temporary directory, stopped by
//! PID when dropped (also when a test panics). Tests live in `tests/tests/`.
//!
//! The servers come from Debian's packages (`mosquitto`, `influxdb`, `victoria-metrics`),
//! which `scripts/test.sh` installs when missing, as it does Chromium and its WebDriver
//! (`chromium`, `chromium-driver`) for the status page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod etcd;
pub mod fleet;
pub mod process;
pub mod proxy;
pub mod qemu;
pub mod readback;
pub mod receivers;
pub mod scenario;
pub mod servers;
pub mod tls;
pub mod tmpfs;

pub use servers::{Server, influxdb, mosquitto, victoria_metrics};

/// A free TCP port on 127.0.0.1 (bound then released), never one this process handed
/// out before: the OS may give a released port again at once, and two listeners of one
/// gateway (`http.listen`, `public_listen`) then collided (seen in CI: "Address already in
/// use" at the gateway's start).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if given.insert(port) {
            return port;
        }
    }
}

/// Unix seconds now.
pub fn now_s() -> u32 {
    (gateway::clock::Clock::system().now_ms() / 1000) as u32
}

/// A benchmark's command line: `--flag NUMBER` pairs, each flag one of `known`, in order.
/// Panics with the known flags on anything else.
pub fn number_flags(known: &[&'static str]) -> Vec<(&'static str, u64)> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    argv.chunks(2)
        .map(|pair| {
            let flag = known
                .iter()
                .find(|k| **k == pair[0])
                .unwrap_or_else(|| panic!("unknown flag {} ({})", pair[0], known.join(", ")));
            let value = pair.get(1).and_then(|v| v.parse().ok());
            (*flag, value.unwrap_or_else(|| panic!("{flag} NUMBER")))
        })
        .collect()
}

/// Polls `done` every 50 ms until it holds, panicking with `what` after `limit`.
pub async fn wait_for(what: &str, limit: std::time::Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !done().await {
        assert!(
            std::time::Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
