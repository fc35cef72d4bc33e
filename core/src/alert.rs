//! Alerts: which conditions are worth telling someone, when one starts, when it ends, and
//! when the daily digest is due. Pure: the conditions seen now, the time and the book of
//! what was already told come in; the changes to announce come out. The gateway's
//! `notify` shell turns them into e-mails and webhook calls and keeps the book on disk,
//! so a restart neither repeats nor forgets an alert.
//!
//! One message when a condition starts, one when it ends: a condition must be seen for
//! `confirm` before it is announced (a suspected fire at once), and be gone for `confirm`
//! before its end is; one that comes and goes within it is never announced. A device is
//! not called silent for the time the gateway itself was down: after a start, silence
//! counts from the start unless the alert was already announced before it.

use crate::condition::book::{DeviceState, Listing};
use crate::condition::{self, Why};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "alert", rename_all = "snake_case")]
pub enum What {
    /// A device's condition (silent, refused, held, battery, sensor, bin full, tilted,
    /// fire).
    Device {
        /// Its reason, as the status page gives it.
        why: Why,
    },
    /// The commune's database refuses writes: its readings wait in the buffer.
    CommuneHeld {
        /// The database's answer.
        error: String,
    },
    /// The durable buffer is filling up: the databases do not keep up.
    BufferNearlyFull {
        /// Bytes on disk.
        used: u64,
        /// Its limit.
        max: u64,
    },
    /// The readings waiting for the databases grow: past the threshold and more than
    /// half an hour ago.
    BacklogGrowing {
        /// Bytes waiting now.
        pending: u64,
        /// Bytes waiting half an hour before.
        before: u64,
    },
    /// The data directory's disk is nearly full.
    DiskNearlyFull {
        /// Free bytes.
        free: u64,
        /// Its size.
        total: u64,
    },
    /// Acknowledgements are withheld: the buffer is full, the disk refuses writes, or the
    /// group's store cannot be used.
    StoreRefusing {
        /// What `/readyz` says.
        problem: String,
    },
    /// Not connected to the broker: no reading arrives.
    BrokerDown {
        /// Why, when the broker said.
        error: Option<String>,
    },
    /// A certificate ends soon (or has ended): renew it before devices or the gateway
    /// can no longer connect.
    CertificateExpiring {
        /// The file holding it.
        file: String,
        /// Its end of validity, Unix ms.
        not_after_ms: u64,
    },
}

impl What {
    /// Its short name (`bin_full`, `sensor_fault_pm`, `commune_held`…), as in webhooks.
    pub fn code(&self) -> String {
        match self {
            What::Device {
                why: Why::SensorFault { sensor },
            } => format!("sensor_fault_{}", sensor.code()),
            What::Device { why } => why.code().to_string(),
            What::CommuneHeld { .. } => "commune_held".into(),
            What::BufferNearlyFull { .. } => "buffer_nearly_full".into(),
            What::BacklogGrowing { .. } => "backlog_growing".into(),
            What::DiskNearlyFull { .. } => "disk_nearly_full".into(),
            What::StoreRefusing { .. } => "store_refusing".into(),
            What::BrokerDown { .. } => "broker_down".into(),
            What::CertificateExpiring { .. } => "certificate_expiring".into(),
        }
    }

    /// Announced at once, without waiting to be confirmed.
    fn urgent(&self) -> bool {
        matches!(
            self,
            What::Device {
                why: Why::FireSuspected
            }
        )
    }
}

/// One condition seen now: of a commune's device, of a commune (`device` none), or of the
/// gateway (`tenant` empty too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Commune; empty for the gateway's own.
    pub tenant: String,
    /// Device.
    pub device: Option<String>,
    /// What.
    pub what: What,
}

impl Alert {
    fn key(&self) -> String {
        let file = match &self.what {
            What::CertificateExpiring { file, .. } => file.as_str(),
            _ => "",
        };
        format!(
            "{}/{}/{}{file}",
            self.tenant,
            self.device.as_deref().unwrap_or(""),
            self.what.code()
        )
    }
}

/// An alert the book follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The condition, as last seen.
    pub alert: Alert,
    /// First seen, Unix ms.
    pub since_ms: u64,
    /// Its start was announced.
    pub announced: bool,
    /// Not seen since, Unix ms.
    pub gone_ms: Option<u64>,
}

/// A change to tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The condition started.
    Started(Entry),
    /// The condition ended at `gone_ms` (inside the entry).
    Ended(Entry),
}

impl Change {
    /// The entry.
    pub fn entry(&self) -> &Entry {
        match self {
            Change::Started(e) | Change::Ended(e) => e,
        }
    }
}

/// How alerts are judged.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How long a condition is seen before it is announced, and gone before its end is.
    pub confirm_ms: u64,
    /// When the gateway started, Unix ms: silence before it is not the device's.
    pub up_since_ms: u64,
}

/// What was told: the alerts followed, and the local day the last digest went out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    /// By key (`tenant/device/code`).
    pub active: BTreeMap<String, Entry>,
    /// The local day (days since 1970-01-01) of the last digest.
    pub digest_day: Option<i64>,
}

impl Book {
    /// Takes the conditions seen at `now_ms`; returns the starts and ends to announce.
    pub fn update(&mut self, now_ms: u64, rules: Rules, seen: Vec<Alert>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut present = std::collections::BTreeSet::new();
        for alert in seen {
            let key = alert.key();
            if !self.active.contains_key(&key)
                && silent_only_for_our_downtime(&alert, rules, now_ms)
            {
                continue;
            }
            let entry = self.active.entry(key.clone()).or_insert_with(|| Entry {
                alert: alert.clone(),
                since_ms: now_ms,
                announced: false,
                gone_ms: None,
            });
            entry.alert = alert;
            entry.gone_ms = None;
            let confirmed = now_ms.saturating_sub(entry.since_ms) >= rules.confirm_ms;
            if !entry.announced && (confirmed || entry.alert.what.urgent()) {
                entry.announced = true;
                changes.push(Change::Started(entry.clone()));
            }
            present.insert(key);
        }
        self.active.retain(|key, entry| {
            if present.contains(key) {
                return true;
            }
            if !entry.announced {
                return false;
            }
            let gone = *entry.gone_ms.get_or_insert(now_ms);
            if now_ms.saturating_sub(gone) < rules.confirm_ms {
                return true;
            }
            changes.push(Change::Ended(entry.clone()));
            false
        });
        changes
    }

    /// The announced alerts of `tenant` (empty: the gateway's), oldest first.
    pub fn announced(&self, tenant: &str) -> Vec<&Entry> {
        let mut out: Vec<&Entry> = self
            .active
            .values()
            .filter(|e| e.announced && e.alert.tenant == tenant)
            .collect();
        out.sort_by_key(|e| e.since_ms);
        out
    }

    /// Whether the digest of local day `day` is due at local hour `hour` (it goes out
    /// once a day, at `digest_hour` or the first check after it); marks it sent.
    pub fn digest_due(&mut self, day: i64, hour: u8, digest_hour: u8) -> bool {
        if hour < digest_hour || self.digest_day.is_some_and(|d| d >= day) {
            return false;
        }
        self.digest_day = Some(day);
        true
    }
}

/// The buffer's pending bytes over a window (`alerts.backlog_window`, half an hour by
/// default), to tell a backlog that grows (a database too slow or away) from one that
/// drains.
#[derive(Debug, Clone)]
pub struct Backlog {
    window_ms: u64,
    samples: std::collections::VecDeque<(u64, u64)>,
}

impl Backlog {
    /// Growth is judged over `window_ms`.
    pub fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            samples: Default::default(),
        }
    }

    /// Takes the pending bytes at `now_ms`; the alert when they are at least `threshold`
    /// and more than at the window's start (a full window seen).
    pub fn observe(&mut self, now_ms: u64, pending: u64, threshold: u64) -> Option<What> {
        self.samples.push_back((now_ms, pending));
        // Keep one sample at or before the window's start.
        while self.samples.len() > 1 && self.samples[1].0 + self.window_ms <= now_ms {
            self.samples.pop_front();
        }
        let (at, before) = *self.samples.front()?;
        let full_window = at + self.window_ms <= now_ms;
        (full_window && pending >= threshold && pending > before)
            .then_some(What::BacklogGrowing { pending, before })
    }
}

/// A new "silent" that would not be one had the device been heard since the gateway
/// started: the gateway's own downtime is not the device's silence.
fn silent_only_for_our_downtime(alert: &Alert, rules: Rules, now_ms: u64) -> bool {
    match &alert.what {
        What::Device {
            why: Why::Silent { since_ms, due_s },
        } => now_ms.saturating_sub((*since_ms).max(rules.up_since_ms)) <= due_s * 1000,
        _ => false,
    }
}

/// The alerts of one device at `now_ms`: silent, refused, held, battery low, a sensor
/// fault, a bin at or above `bin_full_percent`, tilted, a suspected fire. Not alerted:
/// never heard (a device added before it is installed), revoked (an operator's act),
/// offline by its own word (its silence is, once past its window), a lid open (every
/// emptying opens it).
pub fn of_device(
    listing: &Listing,
    state: Option<&DeviceState>,
    now_ms: u64,
    bin_full_percent: u8,
) -> Vec<Alert> {
    if listing.revoked {
        return Vec::new();
    }
    let mut whys: Vec<Why> = condition::assess(listing, state, now_ms)
        .reasons
        .into_iter()
        .filter(|w| {
            !matches!(
                w,
                Why::NeverHeard
                    | Why::Revoked
                    | Why::Offline { .. }
                    | Why::LidOpen
                    | Why::BinFull { .. }
            )
        })
        .collect();
    let fill = state.and_then(|s| s.history.latest.fill_percent);
    if let Some(percent) = fill.filter(|p| *p >= bin_full_percent) {
        whys.push(Why::BinFull { percent });
    }
    whys.into_iter()
        .map(|why| Alert {
            tenant: listing.tenant.clone(),
            device: Some(listing.device.clone()),
            what: What::Device { why },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::DeviceKind;

    const MIN: u64 = 60_000;
    const RULES: Rules = Rules {
        confirm_ms: 2 * MIN,
        up_since_ms: 0,
    };

    fn bin(percent: u8) -> Alert {
        Alert {
            tenant: "lyon".into(),
            device: Some("bin-1".into()),
            what: What::Device {
                why: Why::BinFull { percent },
            },
        }
    }

    fn started(changes: &[Change]) -> usize {
        changes
            .iter()
            .filter(|c| matches!(c, Change::Started(_)))
            .count()
    }

    fn ended(changes: &[Change]) -> usize {
        changes
            .iter()
            .filter(|c| matches!(c, Change::Ended(_)))
            .count()
    }

    #[test]
    fn a_condition_is_told_once_when_confirmed_and_once_when_gone() {
        let mut b = Book::default();
        assert!(
            b.update(0, RULES, vec![bin(85)]).is_empty(),
            "not yet confirmed"
        );
        let c = b.update(2 * MIN, RULES, vec![bin(90)]);
        assert_eq!(started(&c), 1);
        assert!(matches!(&c[0], Change::Started(e) if e.alert == bin(90) && e.since_ms == 0));
        assert!(
            b.update(3 * MIN, RULES, vec![bin(95)]).is_empty(),
            "a new level is no new alert"
        );
        assert!(
            b.update(4 * MIN, RULES, vec![]).is_empty(),
            "not yet confirmed gone"
        );
        assert!(
            b.update(5 * MIN, RULES, vec![bin(81)]).is_empty(),
            "back: still the same alert"
        );
        assert!(b.update(6 * MIN, RULES, vec![]).is_empty());
        let c = b.update(8 * MIN, RULES, vec![]);
        assert_eq!((started(&c), ended(&c)), (0, 1));
        assert_eq!(c[0].entry().gone_ms, Some(6 * MIN));
        assert!(b.active.is_empty());
    }

    #[test]
    fn a_flicker_shorter_than_the_confirmation_is_never_told_a_fire_is_told_at_once() {
        let mut b = Book::default();
        assert!(b.update(0, RULES, vec![bin(80)]).is_empty());
        assert!(b.update(MIN, RULES, vec![]).is_empty());
        assert!(b.update(10 * MIN, RULES, vec![]).is_empty());
        assert!(b.active.is_empty());
        let fire = Alert {
            what: What::Device {
                why: Why::FireSuspected,
            },
            ..bin(0)
        };
        assert_eq!(started(&b.update(11 * MIN, RULES, vec![fire])), 1);
    }

    #[test]
    fn the_gateways_downtime_is_not_a_devices_silence_but_a_told_silence_stays() {
        let silent = |since_ms| Alert {
            what: What::Device {
                why: Why::Silent {
                    since_ms,
                    due_s: 720,
                },
            },
            ..bin(0)
        };
        let rules = Rules {
            confirm_ms: 0,
            up_since_ms: 100 * MIN,
        };
        let mut b = Book::default();
        // Heard at 0, the gateway down until 100 min: not silent until 112 min.
        assert!(b.update(101 * MIN, rules, vec![silent(0)]).is_empty());
        assert_eq!(started(&b.update(113 * MIN, rules, vec![silent(0)])), 1);
        // Told before a restart: it stays told, nothing repeated.
        let restarted = Rules {
            up_since_ms: 120 * MIN,
            ..rules
        };
        assert!(b.update(121 * MIN, restarted, vec![silent(0)]).is_empty());
        assert_eq!(b.announced("lyon").len(), 1);
    }

    #[test]
    fn a_backlog_is_growing_when_above_its_threshold_and_above_half_an_hour_ago() {
        let mut b = Backlog::new(30 * MIN);
        let mb = 1 << 20;
        assert_eq!(
            b.observe(0, 200 * mb, 100 * mb),
            None,
            "no half hour seen yet"
        );
        assert_eq!(b.observe(20 * MIN, 250 * mb, 100 * mb), None);
        let growing = b.observe(30 * MIN, 300 * mb, 100 * mb);
        assert_eq!(
            growing,
            Some(What::BacklogGrowing {
                pending: 300 * mb,
                before: 200 * mb
            })
        );
        // Draining: lower than half an hour ago (250 at 20 min).
        assert_eq!(b.observe(50 * MIN, 240 * mb, 100 * mb), None);
        // Growing but small.
        assert_eq!(b.observe(90 * MIN, 50 * mb, 100 * mb), None);
    }

    #[test]
    fn the_digest_goes_once_a_day_at_its_hour() {
        let mut b = Book::default();
        assert!(!b.digest_due(100, 7, 8));
        assert!(b.digest_due(100, 8, 8));
        assert!(!b.digest_due(100, 9, 8), "once a day");
        assert!(!b.digest_due(101, 6, 8));
        assert!(b.digest_due(101, 23, 8), "the first check after its hour");
    }

    #[test]
    fn a_device_alerts_on_what_needs_someone_not_on_what_is_normal() {
        let listing = Listing::for_test("bin-1", DeviceKind::WasteBin);
        let mut state = DeviceState {
            last_frame_ms: Some(1_000),
            ..DeviceState::default()
        };
        state.history.latest.fill_percent = Some(85);
        state.history.latest.bin_flags = Some(protocol::reading::bin_flags::LID_OPEN);
        let codes = |pct| -> Vec<String> {
            of_device(&listing, Some(&state), 2_000, pct)
                .iter()
                .map(|a| a.what.code())
                .collect()
        };
        assert_eq!(codes(80), ["bin_full"]);
        assert!(
            codes(90).is_empty(),
            "the commune's threshold, not the page's"
        );
        assert!(
            of_device(&listing, None, 2_000, 80).is_empty(),
            "never heard: not installed yet"
        );
    }
}
