//! What the gateway knows of each device from its traffic (last reading, battery, online,
//! counts, gaps, rejections by reason), and the registry listing the status views show.
//! Pure: no I/O, no clock. The gateway's `devices` module owns the one shared book, saves
//! it and serves it.

use crate::condition::glance::{Glance, History};
use crate::condition::missing::{self, Gap};
use crate::condition::{self, Condition};
use crate::device_map::{DeviceMap, DeviceRef, Hashed};
use crate::fleet::{DeviceEntry, DeviceKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One device, as its traffic shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceState {
    /// Tenant.
    pub tenant: String,
    /// Device id.
    pub device: String,
    /// Measurement time (Unix seconds) of its latest stored reading.
    pub last_reading_s: Option<u64>,
    /// When the gateway last stored a frame of it (Unix ms, the gateway's clock).
    pub last_frame_ms: Option<u64>,
    /// Latest battery voltage it reported, mV.
    pub battery_mv: Option<i64>,
    /// Readings its own queue dropped since its boot, as last reported.
    pub dropped_readings: Option<i64>,
    /// Its retained status (`true` online, `false` offline), if it published one.
    pub online: Option<bool>,
    /// When that status arrived (Unix ms).
    pub status_ms: Option<u64>,
    /// Frames stored.
    pub frames: u64,
    /// Readings stored.
    pub readings: u64,
    /// Frames it sent that never arrived (frame-counter gaps, [`crate::condition::missing`]).
    pub missing_frames: u64,
    /// Counter jumps of the replay window's width or more (not counted as missing).
    pub counter_jumps: u64,
    /// Counters above the highest stored that arrived and were refused after their tag
    /// verified: not missing when a stored frame passes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arrived_ahead: Vec<u32>,
    /// Frames on its topics that were rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Its frames held since the last one stored (a reading's time outside the window:
    /// not acknowledged, the device keeps them): the reason and when, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<(String, u64)>,
    /// Its last frame refused since the last one stored: the reason and when, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_since: Option<(String, u64)>,
    /// Latest values and the last day's hourly means (status page).
    pub history: History,
}

/// A registered device as the status views list it: the registry entry without its key
/// or broker password.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// Tenant (served with the state's).
    #[serde(skip)]
    pub tenant: String,
    /// Device id (served with the state's).
    #[serde(skip)]
    pub device: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Site name.
    pub site: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// WGS84 latitude.
    pub latitude: Option<f64>,
    /// WGS84 longitude.
    pub longitude: Option<f64>,
    /// Address or place.
    pub place: Option<String>,
    /// INSEE code of its commune.
    pub insee: Option<String>,
    /// Bin category.
    pub container: Option<String>,
    /// Bin capacity, litres.
    pub capacity_l: Option<u32>,
    /// Sampling interval, s.
    pub sample_interval_s: Option<u16>,
    /// Heartbeat, s.
    pub heartbeat_s: Option<u16>,
    /// Report interval, s (none: it stays connected).
    pub report_interval_s: Option<u16>,
    /// Key revoked.
    pub revoked: bool,
}

impl Listing {
    /// The listing of a registry entry.
    pub fn of(e: &DeviceEntry) -> Self {
        Self {
            tenant: e.tenant.clone(),
            device: e.id.clone(),
            kind: e.kind,
            site: e.site.clone(),
            zone: e.zone.clone(),
            latitude: e.latitude,
            longitude: e.longitude,
            place: e.place.clone(),
            insee: e.insee.clone(),
            container: e.container.clone(),
            capacity_l: e.capacity_l,
            sample_interval_s: e.sample_interval_s,
            heartbeat_s: e.heartbeat_s,
            report_interval_s: e.report_interval_s.filter(|&r| r > 0),
            revoked: e.revoked,
        }
    }
}

#[cfg(test)]
impl Listing {
    /// A device of `lyon` sampling every 60 s with a 600 s heartbeat, nothing else set.
    pub(crate) fn for_test(device: &str, kind: DeviceKind) -> Self {
        Self::of(&DeviceEntry {
            sample_interval_s: Some(60),
            heartbeat_s: Some(600),
            ..DeviceEntry::new("lyon", device, kind, String::new(), 1)
        })
    }
}

/// Every device's state. Pure: no I/O, no clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceBook {
    /// Looked up per frame with borrowed ids, no allocation, and hashed (a tree lookup
    /// compared ids 18 times per frame for 100 devices: 5 % of the gateway's
    /// instructions while draining). Sorted when listed.
    devices: DeviceMap<DeviceState>,
}

/// The saved form.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    devices: Vec<DeviceState>,
}

/// What a durable frame tells about its device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored {
    /// Latest measurement time in the frame (Unix s).
    pub last_time: u32,
    /// Readings in it.
    pub readings: u32,
    /// Its counter.
    pub counter: u32,
    /// What it says of missing counters.
    pub gap: Gap,
    /// Battery voltage, mV.
    pub battery_mv: Option<i64>,
    /// Queue drops since boot.
    pub dropped: Option<i64>,
}

impl DeviceBook {
    fn entry(&mut self, tenant: &str, device: &str) -> &mut DeviceState {
        self.entry_at(DeviceRef::new(tenant, device).into())
    }

    fn entry_at(&mut self, who: Hashed<'_>) -> &mut DeviceState {
        let names = who.who();
        let state = || DeviceState {
            tenant: names.tenant.to_string(),
            device: names.device.to_string(),
            ..DeviceState::default()
        };
        self.devices
            .get_or_insert_with(who, || names.to_name(), state)
    }

    /// A frame of the device was made durable at `now_ms`.
    pub fn stored(
        &mut self,
        tenant: &str,
        device: &str,
        frame: Stored,
        glance: &Glance,
        now_ms: u64,
    ) {
        self.stored_as(DeviceRef::new(tenant, device).into(), frame, glance, now_ms);
    }

    /// [`Self::stored`], the device's names hashed already (when its frame was judged).
    pub fn stored_as(&mut self, who: Hashed<'_>, frame: Stored, glance: &Glance, now_ms: u64) {
        let d = self.entry_at(who);
        d.history.merge(glance);
        d.frames += 1;
        d.readings += u64::from(frame.readings);
        match frame.gap {
            Gap::Skipped { from, count } => {
                let arrived = d
                    .arrived_ahead
                    .iter()
                    .filter(|c| (from + 1..frame.counter).contains(*c))
                    .count() as u64;
                d.missing_frames += u64::from(count).saturating_sub(arrived);
            }
            Gap::Late => d.missing_frames = d.missing_frames.saturating_sub(1),
            Gap::Jump => d.counter_jumps += 1,
            Gap::None | Gap::Reboot => {}
        }
        d.arrived_ahead.retain(|c| *c > frame.counter);
        d.held = None;
        d.refused_since = None;
        d.last_frame_ms = Some(now_ms);
        d.last_reading_s = d.last_reading_s.max(Some(u64::from(frame.last_time)));
        d.battery_mv = frame.battery_mv.or(d.battery_mv);
        d.dropped_readings = frame.dropped.or(d.dropped_readings);
    }

    /// The device's missing frames as its group of gateways counts them (the shared
    /// replay state's count, [`crate::judge::replay_book::ReplayBook::missing`]): one
    /// gateway of a group sees only some of its frames.
    pub fn set_missing(&mut self, tenant: &str, device: &str, missing: u32) {
        self.entry(tenant, device).missing_frames = u64::from(missing);
    }

    /// A frame of the device with `counter` was refused after its tag verified (it
    /// arrived: not missing); `highest` is the highest counter stored before it.
    pub fn refused(&mut self, tenant: &str, device: &str, counter: u32, highest: Option<u32>) {
        let d = self.entry(tenant, device);
        match highest {
            Some(h) if counter < h => d.missing_frames = d.missing_frames.saturating_sub(1),
            _ if d.arrived_ahead.len() < missing::AHEAD && !d.arrived_ahead.contains(&counter) => {
                d.arrived_ahead.push(counter);
            }
            _ => {}
        }
    }

    /// The device published its status.
    /// The status is retained, so every gateway or broker restart delivers it again:
    /// only a change moves `status_ms`, and an `offline` learnt with no state before dates
    /// from the device's last frame (it was last heard then), not from the restart.
    pub fn status(&mut self, tenant: &str, device: &str, online: bool, now_ms: u64) {
        let d = self.entry(tenant, device);
        match d.online {
            Some(was) if was == online && d.status_ms.is_some() => return,
            None if !online => d.status_ms = d.last_frame_ms.or(Some(now_ms)),
            _ => d.status_ms = Some(now_ms),
        }
        d.online = Some(online);
    }

    /// A frame of the device was held for `reason` at `at_ms` (not acknowledged).
    pub fn held(&mut self, tenant: &str, device: &str, reason: &str, at_ms: u64) {
        self.entry(tenant, device).held = Some((reason.to_string(), at_ms));
    }

    /// A frame on the device's topics was rejected for `reason` at `at_ms`.
    pub fn rejected(&mut self, tenant: &str, device: &str, reason: &str, at_ms: u64) {
        let d = self.entry(tenant, device);
        *d.rejected.entry(reason.to_string()).or_default() += 1;
        d.refused_since = Some((reason.to_string(), at_ms));
    }

    /// Forgets a tenant's devices, or one of them (`erase`); returns how many.
    pub fn forget(&mut self, tenant: &str, device: Option<&str>) -> usize {
        let before = self.devices.len();
        match device {
            Some(d) => {
                self.devices.remove(DeviceRef::new(tenant, d));
            }
            None => self.devices.retain(|name, _| &*name.tenant != tenant),
        }
        before - self.devices.len()
    }

    /// One device.
    pub fn get(&self, tenant: &str, device: &str) -> Option<&DeviceState> {
        self.devices.get(DeviceRef::new(tenant, device))
    }

    /// Every device, by tenant then id.
    pub fn iter(&self) -> impl Iterator<Item = &DeviceState> {
        let mut all: Vec<_> = self.devices.values().collect();
        all.sort_unstable_by(|a, b| (&a.tenant, &a.device).cmp(&(&b.tenant, &b.device)));
        all.into_iter()
    }

    /// The saved (and served) JSON.
    pub fn to_json(&self) -> String {
        let saved = Saved {
            devices: self.iter().cloned().collect(),
        };
        serde_json::to_string_pretty(&saved).unwrap_or_default() + "\n"
    }

    /// Reads the JSON back.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let saved: Saved = serde_json::from_str(text)?;
        let mut book = Self::default();
        for d in saved.devices {
            let (tenant, device) = (d.tenant.clone(), d.device.clone());
            *book.entry(&tenant, &device) = d;
        }
        Ok(book)
    }
}

/// One device as `GET /devices` serves it: its state, its registry listing, the silence
/// it is allowed and its condition.
#[derive(Serialize)]
struct Served<'a> {
    #[serde(flatten)]
    state: std::borrow::Cow<'a, DeviceState>,
    #[serde(flatten)]
    listing: &'a Listing,
    due_s: u64,
    condition: Condition,
}

/// `GET /devices`: every registered device (of `tenant` if given), never heard from or
/// not, as JSON (`{"devices": [...]}`; schema in OPERATIONS.md, "Monitoring").
pub fn served_json(
    roster: &[Listing],
    book: &DeviceBook,
    now_ms: u64,
    tenant: Option<&str>,
) -> String {
    let devices: Vec<Served> = roster
        .iter()
        .filter(|l| tenant.is_none_or(|t| t == l.tenant))
        .map(|l| {
            let state = book.get(&l.tenant, &l.device);
            Served {
                condition: condition::assess(l, state, now_ms),
                due_s: condition::due_s(l),
                state: match state {
                    Some(s) => std::borrow::Cow::Borrowed(s),
                    None => std::borrow::Cow::Owned(DeviceState {
                        tenant: l.tenant.clone(),
                        device: l.device.clone(),
                        ..DeviceState::default()
                    }),
                },
                listing: l,
            }
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "devices": devices })).unwrap_or_default()
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erasure_forgets_one_device_or_a_whole_tenant() {
        let mut book = DeviceBook::default();
        for (t, d) in [("lyon", "a"), ("lyon", "b"), ("paris", "a")] {
            book.status(t, d, true, 1);
        }
        assert_eq!(book.forget("lyon", Some("a")), 1);
        assert_eq!(book.forget("lyon", Some("a")), 0);
        assert!(book.get("lyon", "b").is_some() && book.get("paris", "a").is_some());
        assert_eq!(book.forget("lyon", None), 1);
        assert_eq!(book.forget("nowhere", None), 0);
        let left: Vec<_> = book
            .iter()
            .map(|d| (d.tenant.as_str(), d.device.as_str()))
            .collect();
        assert_eq!(left, [("paris", "a")]);
    }

    #[test]
    fn devices_are_listed_by_tenant_then_id_whatever_the_order_heard() {
        let mut book = DeviceBook::default();
        let heard = [("paris", "b"), ("lyon", "z"), ("paris", "a"), ("lyon", "a")];
        for (t, d) in heard {
            book.status(t, d, true, 1);
        }
        let listed: Vec<_> = book
            .iter()
            .map(|d| (d.tenant.as_str(), d.device.as_str()))
            .collect();
        let mut sorted = heard.to_vec();
        sorted.sort_unstable();
        assert_eq!(listed, sorted);
        let saved = book.to_json();
        let at = |id: &str| saved.find(&format!("\"device\": \"{id}\"")).unwrap();
        assert!(at("z") < at("b"), "lyon's devices are saved before paris's");
    }

    fn frame(t: u32, counter: u32, gap: Gap, battery: Option<i64>) -> Stored {
        Stored {
            last_time: t,
            readings: 3,
            counter,
            gap,
            battery_mv: battery,
            dropped: None,
        }
    }

    #[test]
    fn frames_status_and_rejections_add_up_and_survive_json() {
        let mut book = DeviceBook::default();
        let none = Glance::default();
        book.stored(
            "lyon",
            "aq-1",
            frame(1_000, 1, Gap::None, Some(3_700)),
            &none,
            5,
        );
        // An older frame (a redelivery after a gap) never moves "last reading" back, and
        // a frame without a battery report keeps the last one.
        let skipped = Gap::Skipped { from: 1, count: 2 };
        book.stored("lyon", "aq-1", frame(900, 4, skipped, None), &none, 6);
        book.status("lyon", "aq-1", false, 7);
        book.rejected("lyon", "aq-1", "authentication", 8);
        book.rejected("lyon", "aq-1", "authentication", 9);
        let d = book.get("lyon", "aq-1").unwrap();
        assert_eq!(
            (d.frames, d.readings, d.missing_frames, d.last_reading_s),
            (2, 6, 2, Some(1_000))
        );
        assert_eq!(
            (d.battery_mv, d.online, d.last_frame_ms),
            (Some(3_700), Some(false), Some(6))
        );
        assert_eq!(d.rejected["authentication"], 2);
        assert_eq!(DeviceBook::from_json(&book.to_json()).unwrap(), book);
    }

    #[test]
    fn offline_since_is_the_change_or_the_last_frame_never_a_restart() {
        let mut book = DeviceBook::default();
        let none = Glance::default();
        book.stored(
            "lyon",
            "aq-1",
            frame(1_000, 1, Gap::None, None),
            &none,
            5_000,
        );
        // Learnt offline with no status before (a gateway started after the device
        // went): since its last frame.
        book.status("lyon", "aq-1", false, 90_000);
        assert_eq!(book.get("lyon", "aq-1").unwrap().status_ms, Some(5_000));
        // The retained status again (a gateway or broker restart): unchanged.
        book.status("lyon", "aq-1", false, 120_000);
        let restored = DeviceBook::from_json(&book.to_json()).unwrap();
        let mut book = restored;
        book.status("lyon", "aq-1", false, 150_000);
        assert_eq!(book.get("lyon", "aq-1").unwrap().status_ms, Some(5_000));
        // A change is dated when it came.
        book.status("lyon", "aq-1", true, 160_000);
        book.status("lyon", "aq-1", false, 170_000);
        assert_eq!(book.get("lyon", "aq-1").unwrap().status_ms, Some(170_000));
    }

    #[test]
    fn missing_frames_leave_out_what_arrived_reboots_and_jumps() {
        let mut book = DeviceBook::default();
        let none = Glance::default();
        let missing = |b: &DeviceBook| b.get("lyon", "aq-1").unwrap().missing_frames;
        book.stored("lyon", "aq-1", frame(1, 10, Gap::None, None), &none, 1);
        // 11 and 12 arrive but are refused (say, a wrong clock); 14 is stored: only 13 is
        // missing.
        book.refused("lyon", "aq-1", 11, Some(10));
        book.refused("lyon", "aq-1", 12, Some(10));
        let skip = Gap::Skipped { from: 10, count: 3 };
        book.stored("lyon", "aq-1", frame(2, 14, skip, None), &none, 2);
        assert_eq!(missing(&book), 1);
        // 13 comes late: nothing missing.
        book.stored("lyon", "aq-1", frame(3, 13, Gap::Late, None), &none, 3);
        assert_eq!(missing(&book), 0);
        // Skipped 15 and 16, then 15 refused late: one missing.
        let skip = Gap::Skipped { from: 14, count: 2 };
        book.stored("lyon", "aq-1", frame(4, 17, skip, None), &none, 4);
        book.refused("lyon", "aq-1", 15, Some(17));
        assert_eq!(missing(&book), 1);
        // A reboot and a jump count nothing; the jump is counted apart.
        book.stored("lyon", "aq-1", frame(5, 64, Gap::Reboot, None), &none, 5);
        book.stored("lyon", "aq-1", frame(6, 99_999, Gap::Jump, None), &none, 6);
        let d = book.get("lyon", "aq-1").unwrap();
        assert_eq!((d.missing_frames, d.counter_jumps), (1, 1));
        assert!(d.arrived_ahead.is_empty());
    }
}
