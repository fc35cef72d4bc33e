//! Device metadata in the database: a `device_info` point per registered device
//! (coordinates, site, zone, kind, schedule; docs/SCHEMA.md), written to its commune's
//! database at start and after each registry load, so dashboards and exports can place
//! and name stations. It is not part of the delivery promise (the registry is its
//! source, and it is written again at every load): a database that refuses is retried
//! every [`RETRY`] until it takes it, without holding readings back.

use crate::clock::Clock;
use crate::deliver::{Answer, LineWriter, Text};
use crate::observe::devices::{Devices, Listing};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vigie_core::output::lineproto;

/// Wait between attempts while a database refuses.
pub const RETRY: Duration = Duration::from_secs(30);
/// How often the registry is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The `device_info` lines of each commune at `time_ms`.
pub fn lines(roster: &[Listing], time_ms: u64) -> BTreeMap<String, Text> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for l in roster {
        lineproto::device_info(out.entry(l.tenant.clone()).or_default(), l, time_ms);
    }
    out.into_iter()
        .map(|(t, lines)| (t, lines.into()))
        .collect()
}

/// Writes the metadata of every registry load through `writer` until `stop`.
pub fn run(
    mut writer: Box<dyn LineWriter>,
    devices: Arc<Devices>,
    stop: CancellationToken,
    clock: Clock,
) {
    let mut written = 0;
    let mut pending = BTreeMap::new();
    let mut next_try = Instant::now();
    while !stop.is_cancelled() {
        let (version, roster) = devices.roster();
        if version != written {
            written = version;
            pending = lines(&roster, clock.now_ms());
            next_try = Instant::now();
        }
        if !pending.is_empty() && Instant::now() >= next_try {
            pending.retain(|tenant, lines| match writer.write(tenant, lines) {
                Answer::Status { code, .. } if (200..300).contains(&code) => false,
                Answer::Status { code, body, .. } => {
                    tracing::warn!(%tenant, code, body = %body.trim(), "device metadata not written; retrying");
                    true
                }
                Answer::Transport(e) => {
                    tracing::warn!(%tenant, error = %e, "device metadata not written; retrying");
                    true
                }
            });
            next_try = Instant::now() + RETRY;
        }
        std::thread::sleep(POLL);
    }
}
