//! Observing: the typed metrics (counts only), the health `/readyz` reports, and what the
//! traffic shows ([`Traffic`]: each device's state, the live feed).

pub mod devices;
pub mod feed;
pub mod group;
pub mod health;
pub mod metrics;

use std::sync::Arc;

/// What the traffic shows, owned apart from the counters: each device's state and the
/// live feed. The worker writes both; the status pages, `/devices`, `devices watch` and
/// the device-info writer read them; `/metrics` renders the per-device gauges from the
/// state at each scrape.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Each device's state.
    pub devices: Arc<devices::Devices>,
    /// The live feed of frames and verdicts.
    pub feed: Arc<feed::Feed>,
}
