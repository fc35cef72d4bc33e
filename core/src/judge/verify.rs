//! From an MQTT message to a verdict: parse the topic, find the device, verify the tag
//! with the device's key and topic identity, classify the counter, check times, flag
//! doubtful values and encode line protocol. Pure: the registry, the replay book and the
//! clock are passed in; nothing is changed here.

use crate::condition::glance::Glance;
use crate::device_map::{DeviceRef, Hashed, NamesHash};
use crate::fleet::Registry;
use crate::judge::reason::Reason;
use crate::judge::replay_book::{Counters, Seconds, Seen, Tag};
use crate::judge::spare::SpareLines;
use crate::judge::validate::{self, TimeRules};
use crate::output::lineproto::{self, StringFields};
use crate::record::Record;
use protocol::{Channel, DecodeError, Kind, Topic, Values, topic};

/// What to do with one message.
#[derive(Debug, Clone, PartialEq)]
// Not boxed: a verdict is made and moved once per message, and the box was one of the
// hot path's allocations per reading (callgrind, docs/PERFORMANCE.md).
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// Store, then acknowledge.
    Accept(Accepted),
    /// Already stored (redelivery) or replayed inside the window: acknowledge, count.
    Duplicate {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
    },
    /// Quarantine with the reason, then acknowledge.
    Reject(Reason),
    /// Storable later, not now (a reading's time outside the window, SPEC §13.3): no
    /// acknowledgement, no quarantine entry; the device keeps the frame and resends it.
    Hold(Reason),
    /// A retained status message (`online` / `offline`): nothing to store.
    Status {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
        /// True for `online`.
        online: bool,
    },
}

/// An accepted frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// What goes into the durable buffer.
    pub record: Record,
    /// Frame kind.
    pub kind: Kind,
    /// Readings stored with a quality flag.
    pub flagged: u32,
    /// Latest measurement time in the frame.
    pub last_time: u32,
    /// Battery voltage, mV, if the frame reports it.
    pub battery_mv: Option<i64>,
    /// On-board queue drops since boot, if a status frame reports it.
    pub dropped: Option<i64>,
    /// What the status page shows of it.
    pub glance: Glance,
    /// Its kind and the first and last seconds of its readings (what
    /// [`Record::seconds`] reads back from its lines).
    pub seconds: Option<Seconds>,
    /// The hash of its device's names, taken when it was judged.
    pub names_hash: NamesHash,
}

impl Accepted {
    /// Its device's names, hashed when it was judged: the replay book and its batch
    /// overlay find the device without hashing them again (2 % of a drain's
    /// instructions, docs/PERFORMANCE.md).
    pub fn names(&self) -> Hashed<'_> {
        let who = DeviceRef::new(&self.record.tenant, &self.record.device);
        Hashed::again(who, self.names_hash)
    }
}

/// What a judgement depends on besides the message: the registry, the counters already
/// accepted, the rules and the clock.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a, C: ?Sized> {
    /// Device registry.
    pub registry: &'a Registry,
    /// Counters accepted so far (the book, or the book plus the batch being judged).
    pub counters: &'a C,
    /// Timestamp window.
    pub rules: &'a TimeRules,
    /// Where string values go in line protocol.
    pub strings: StringFields,
    /// Unix seconds now.
    pub now_s: u64,
    /// The host clock is known to be synchronised (`clock.synchronised`): only then is a
    /// reading judged too old for good; otherwise it is held (SPEC §13.3).
    pub clock_synced: bool,
}

/// Judges one message.
pub fn assess<C: Counters + ?Sized>(topic: &str, payload: &[u8], cx: &Context<'_, C>) -> Verdict {
    let mut accepted = Vec::with_capacity(1);
    match assess_into(
        topic,
        payload,
        cx,
        &mut SpareLines::default(),
        &mut accepted,
    ) {
        Ok(i) => Verdict::Accept(accepted.swap_remove(i)),
        Err(verdict) => verdict,
    }
}

/// [`assess`] for a batch: an accepted frame is pushed onto `accepted` (its index
/// returned), its lines written into a buffer from `spare`; any other verdict is the
/// error. Built where it stays: a 352-byte frame moved through its verdict into the
/// plan was copied twice (1.1 % of a drain's instructions, docs/PERFORMANCE.md).
// The error is any verdict but an acceptance, so its size is that of a small variant's
// fields in a verdict-sized slot: nothing large is ever moved through it.
#[allow(clippy::result_large_err)]
pub fn assess_into<C: Counters + ?Sized>(
    topic: &str,
    payload: &[u8],
    cx: &Context<'_, C>,
    spare: &mut SpareLines,
    accepted: &mut Vec<Accepted>,
) -> Result<usize, Verdict> {
    let Ok(parsed) = Topic::parse(topic) else {
        return Err(Verdict::Reject(Reason::Topic));
    };
    let (tenant, device) = (parsed.who.tenant.as_str(), parsed.who.device.as_str());
    // Gateways publish acknowledgements; one arriving here is not a device's message.
    if parsed.channel == Channel::Ack {
        return Err(Verdict::Reject(Reason::Topic));
    }
    let names: Hashed<'_> = DeviceRef::new(tenant, device).into();
    let Some(dev) = cx.registry.find(names) else {
        return Err(Verdict::Reject(Reason::UnknownDevice));
    };
    if dev.entry.revoked {
        return Err(Verdict::Reject(Reason::Revoked));
    }
    if parsed.channel == Channel::Status {
        return Err(status(tenant, device, payload));
    }
    // Decoded in place: a `Frame` returned by value would copy all 64 reading slots.
    let mut readings = protocol::Readings::new();
    let header = match protocol::open_into(payload, &dev.key, parsed.who, &mut readings) {
        Ok(h) => h,
        Err(DecodeError::Authentication) => return Err(Verdict::Reject(Reason::Authentication)),
        Err(e) => return Err(Verdict::Reject(Reason::Malformed(e))),
    };
    let kind = header.kind;
    if !kind.of_every_device() && kind != dev.entry.kind.kind() {
        return Err(Verdict::Reject(Reason::KindMismatch));
    }
    let frame = Opened {
        who: (tenant, device),
        names,
        epoch: dev.key.epoch(),
        counter: header.counter,
        kind,
        tag: frame_tag(payload),
    };
    if let Some(refused) = replayed_or_untimely(&frame, &readings, cx) {
        return Err(refused);
    }
    accept(dev, &frame, &readings, cx.strings, spare.take(), accepted);
    Ok(accepted.len() - 1)
}

/// A verified frame's facts the later checks need.
struct Opened<'a> {
    who: (&'a str, &'a str),
    names: Hashed<'a>,
    epoch: u32,
    counter: u32,
    kind: Kind,
    tag: Tag,
}

/// A status message: not sealed (a last will is set at connect time); the broker's
/// account check (only the device's own account may publish there) is its authentication.
fn status(tenant: &str, device: &str, payload: &[u8]) -> Verdict {
    let online = match payload {
        topic::STATUS_ONLINE => true,
        topic::STATUS_OFFLINE => false,
        _ => return Verdict::Reject(Reason::BadStatus),
    };
    Verdict::Status {
        tenant: tenant.into(),
        device: device.into(),
        online,
    }
}

/// The verdict of a verified frame that is a resend, reuses a counter, carries a time
/// outside the window or collides with another frame's stored seconds; `None` if it is
/// none of these.
fn replayed_or_untimely<C: Counters + ?Sized>(
    f: &Opened<'_>,
    readings: &protocol::Readings,
    cx: &Context<'_, C>,
) -> Option<Verdict> {
    let (tenant, device) = f.who;
    let counters = cx.counters.device(f.names);
    match counters.seen(f.epoch, f.counter, &f.tag) {
        Seen::Duplicate => {
            return Some(Verdict::Duplicate {
                tenant: tenant.into(),
                device: device.into(),
            });
        }
        // Another frame under a stored counter, or a counter 2048 or more below the
        // highest stored (which a device only sends when its counter went back): refused,
        // not acknowledged; the device re-seals it under a fresh counter (SPEC §12.1).
        Seen::Reused | Seen::TooOld => return Some(Verdict::Reject(Reason::CounterReused)),
        Seen::Fresh => {}
    }
    for r in readings {
        match validate::check_time(r, cx.now_s, cx.rules) {
            Ok(()) => {}
            Err(Reason::StaleTimestamp) if cx.clock_synced => {
                return Some(Verdict::Reject(Reason::StaleTimestamp));
            }
            Err(reason) => return Some(Verdict::Hold(reason)),
        }
    }
    let seconds = span(f, readings)?;
    counters
        .collides(f.epoch, f.counter, &seconds)
        .then_some(Verdict::Reject(Reason::TimeCollision))
}

/// The frame's kind and the seconds of its first and last readings (they are in time
/// order); `None` for a frame without readings.
fn span(f: &Opened<'_>, readings: &protocol::Readings) -> Option<Seconds> {
    let (first, last) = (readings.first()?, readings.last()?);
    Some(Seconds {
        kind: f.kind.code(),
        first: first.time,
        last: last.time,
    })
}

/// Pushes the accepted frame onto `accepted`: its record (line protocol with quality
/// flags) and what it tells of its device, filled in place.
fn accept(
    dev: &crate::fleet::Device,
    f: &Opened<'_>,
    readings: &protocol::Readings,
    strings: StringFields,
    mut lines: String,
    accepted: &mut Vec<Accepted>,
) {
    // A six-value air-quality line with its tags is about 170 bytes: room for it first time.
    lines.reserve(readings.len() * 256);
    accepted.push(Accepted {
        record: Record {
            tenant: dev.names.0.clone(),
            device: dev.names.1.clone(),
            epoch: f.epoch,
            counter: f.counter,
            readings: readings.len() as u32,
            tag: Some(f.tag),
            lines,
        },
        kind: f.kind,
        flagged: 0,
        last_time: readings.last().map_or(0, |r| r.time),
        battery_mv: None,
        dropped: None,
        glance: Glance::default(),
        seconds: span(f, readings),
        names_hash: f.names.hash(),
    });
    let Some(a) = accepted.last_mut() else {
        return;
    };
    for r in readings {
        a.glance.add(r);
        let flags = validate::quality_flags(&r.values, &dev.entry);
        a.flagged += u32::from(!flags.is_empty());
        lineproto::encode(
            &mut a.record.lines,
            r,
            &dev.tags,
            &flags,
            f.counter,
            strings,
        );
        match &r.values {
            Values::DeviceStatus(s) => {
                a.battery_mv = s.battery.value().map(i64::from).or(a.battery_mv);
                a.dropped = s.dropped.value().map(i64::from).or(a.dropped);
            }
            Values::WasteBin(b) => {
                a.battery_mv = b.battery.value().map(i64::from).or(a.battery_mv);
            }
            Values::AirQuality(_) | Values::Energy(_) => {}
        }
    }
}

/// The frame's authentication tag: its last bytes (the frame verified, so they exist).
fn frame_tag(payload: &[u8]) -> Tag {
    let mut tag = Tag::default();
    let n = tag.len().min(payload.len());
    tag[..n].copy_from_slice(&payload[payload.len() - n..]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{DeviceEntry, DeviceKind};
    use crate::judge::replay_book::ReplayBook;
    use protocol::{AirQuality, DeviceKey, Field, Identity, MAX_FRAME_LEN, Reading, WasteBin};

    use crate::fixtures::{NOW, RULES};

    fn entry(tenant: &str, id: &str, kind: DeviceKind) -> DeviceEntry {
        DeviceEntry {
            site: Some("Bellecour".into()),
            bin_depth_mm: (kind == DeviceKind::WasteBin).then_some(1000),
            ..DeviceEntry::new(tenant, id, kind, hex::encode([id.len() as u8; 16]), 1)
        }
    }

    fn registry() -> Registry {
        let mut revoked = entry("lyon", "aq-9", DeviceKind::AirQuality);
        revoked.revoked = true;
        Registry::from_entries(vec![
            entry("lyon", "aq-1", DeviceKind::AirQuality),
            entry("lyon", "aq-22", DeviceKind::AirQuality),
            entry("lyon", "bin-1", DeviceKind::WasteBin),
            revoked,
        ])
        .unwrap()
    }

    fn aq(time: u32) -> Reading {
        Reading {
            time,
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(123),
                ..AirQuality::default()
            }),
        }
    }

    /// A frame sealed as the device `sealer` would, with its registry key.
    fn frame(sealer: (&str, &str), readings: &[Reading], counter: u32) -> Vec<u8> {
        let key = DeviceKey::new([sealer.1.len() as u8; 16], 1);
        let who = Identity::new(sealer.0, sealer.1).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        protocol::seal(&mut buf, readings, counter, &key, who)
            .unwrap()
            .to_vec()
    }

    fn judge(topic: &str, payload: &[u8], book: &ReplayBook) -> Verdict {
        judge_with_clock(topic, payload, book, true)
    }

    fn judge_with_clock(topic: &str, payload: &[u8], book: &ReplayBook, synced: bool) -> Verdict {
        let registry = registry();
        let cx = Context {
            registry: &registry,
            counters: book,
            rules: &RULES,
            strings: StringFields::Fields,
            now_s: NOW,
            clock_synced: synced,
        };
        assess(topic, payload, &cx)
    }

    #[test]
    fn the_judged_seconds_are_those_the_lines_give_back() {
        // The hot path keeps the seconds the judge read from the readings; a restart reads
        // them back from the buffer's lines (`Record::seconds`): they must agree, counter
        // milliseconds and all.
        let t = NOW as u32 - 600;
        for (readings, counter) in [
            (vec![aq(t)], 0),
            (vec![aq(t)], 999),
            (vec![aq(t), aq(t + 1), aq(t + 300)], 1_234_567),
        ] {
            let f = frame(("lyon", "aq-1"), &readings, counter);
            let Verdict::Accept(a) = judge("vigie/v1/lyon/aq-1/up", &f, &ReplayBook::default())
            else {
                panic!("not accepted")
            };
            assert!(a.seconds.is_some());
            assert_eq!(a.seconds, a.record.seconds(), "counter {counter}");
        }
    }

    #[test]
    fn accepts_a_good_frame_with_its_line() {
        let f = frame(("lyon", "aq-1"), &[aq(NOW as u32 - 60)], 5);
        let Verdict::Accept(a) = judge("vigie/v1/lyon/aq-1/up", &f, &ReplayBook::default()) else {
            panic!("not accepted")
        };
        assert_eq!(
            (a.record.counter, a.record.epoch, a.record.readings),
            (5, 1, 1)
        );
        assert_eq!(
            a.record.lines,
            "air_quality,device=aq-1,site=Bellecour,tenant=lyon pm25=12.3 1795305540005\n"
        );
        assert_eq!(a.record.tag.as_ref().map(|t| &t[..]), f.get(f.len() - 8..));
    }

    #[test]
    fn every_rejection_has_its_reason() {
        let t = NOW as u32;
        let book = ReplayBook::default();
        let good = frame(("lyon", "aq-1"), &[aq(t)], 5);
        let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
            ("vigie/v1/lyon/aq-1", good.clone(), Reason::Topic),
            (
                "vigie/v1/lyon/aq-404/up",
                good.clone(),
                Reason::UnknownDevice,
            ),
            (
                "vigie/v1/lyon/aq-9/up",
                frame(("lyon", "aq-9"), &[aq(t)], 1),
                Reason::Revoked,
            ),
            // aq-1's frame replayed on aq-22's topic: identity is bound, so it fails.
            (
                "vigie/v1/lyon/aq-22/up",
                good.clone(),
                Reason::Authentication,
            ),
            (
                "vigie/v1/lyon/aq-1/up",
                {
                    let mut f = good.clone();
                    f[9] ^= 1;
                    f
                },
                Reason::Authentication,
            ),
            (
                "vigie/v1/lyon/aq-1/up",
                good[..12].to_vec(),
                Reason::Malformed(DecodeError::TooShort),
            ),
            (
                "vigie/v1/lyon/aq-1/up",
                vec![0x21; 30],
                Reason::Malformed(DecodeError::UnsupportedVersion(2)),
            ),
            (
                "vigie/v1/lyon/aq-1/up",
                frame(("lyon", "aq-1"), &[aq(t - 86_401)], 7),
                Reason::StaleTimestamp,
            ),
        ];
        for (topic, payload, want) in cases {
            assert_eq!(
                judge(topic, &payload, &book),
                Verdict::Reject(want),
                "{topic} {want:?}"
            );
        }
        // Time: a future reading is held whatever the clock; a stale one is refused only
        // by a synchronised clock (SPEC §13.3).
        let future = frame(("lyon", "aq-1"), &[aq(t + 301)], 6);
        let stale = frame(("lyon", "aq-1"), &[aq(t - 86_401)], 7);
        for synced in [true, false] {
            assert_eq!(
                judge_with_clock("vigie/v1/lyon/aq-1/up", &future, &book, synced),
                Verdict::Hold(Reason::FutureTimestamp)
            );
        }
        assert_eq!(
            judge_with_clock("vigie/v1/lyon/aq-1/up", &stale, &book, false),
            Verdict::Hold(Reason::StaleTimestamp)
        );
        let bin_as_aq = frame(("lyon", "bin-1"), &[aq(t)], 1);
        assert_eq!(
            judge("vigie/v1/lyon/bin-1/up", &bin_as_aq, &book),
            Verdict::Reject(Reason::KindMismatch)
        );
    }

    #[test]
    fn duplicates_follow_the_book_and_below_the_window_is_a_counter_gone_back() {
        let t = NOW as u32;
        let mut book = ReplayBook::default();
        let top = protocol::replay::WINDOW + 100;
        let dup = frame(("lyon", "aq-1"), &[aq(t)], top);
        book.accept(&Record {
            tenant: "lyon".into(),
            device: "aq-1".into(),
            epoch: 1,
            counter: top,
            readings: 0,
            tag: Some(frame_tag(&dup)),
            lines: String::new(),
        });
        assert!(matches!(
            judge("vigie/v1/lyon/aq-1/up", &dup, &book),
            Verdict::Duplicate { .. }
        ));
        // The same counter with other content: a reused counter, not a duplicate.
        let reused = frame(("lyon", "aq-1"), &[aq(t - 1)], top);
        assert_eq!(
            judge("vigie/v1/lyon/aq-1/up", &reused, &book),
            Verdict::Reject(Reason::CounterReused)
        );
        // Below the window: the device's counter went back (a board erased, swapped or
        // restored): refused unacknowledged, so the device re-seals it (SPEC §13.2).
        let old = frame(("lyon", "aq-1"), &[aq(t)], 100);
        assert_eq!(
            judge("vigie/v1/lyon/aq-1/up", &old, &book),
            Verdict::Reject(Reason::CounterReused)
        );
        let late = frame(("lyon", "aq-1"), &[aq(t)], 101);
        assert!(matches!(
            judge("vigie/v1/lyon/aq-1/up", &late, &book),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn status_topic_and_bin_battery() {
        let v = judge(
            "vigie/v1/lyon/aq-1/status",
            b"offline",
            &ReplayBook::default(),
        );
        assert_eq!(
            v,
            Verdict::Status {
                tenant: "lyon".into(),
                device: "aq-1".into(),
                online: false
            }
        );
        let bin = Reading {
            time: NOW as u32,
            values: Values::WasteBin(WasteBin {
                distance: Field::Value(1200),
                battery: Field::Value(3550),
                ..WasteBin::default()
            }),
        };
        let f = frame(("lyon", "bin-1"), &[bin], 1);
        let Verdict::Accept(a) = judge("vigie/v1/lyon/bin-1/up", &f, &ReplayBook::default()) else {
            panic!("not accepted")
        };
        assert_eq!((a.flagged, a.battery_mv), (1, Some(3550)));
        assert!(a.record.lines.contains("quality=\"distance_beyond_depth\""));
    }
}
