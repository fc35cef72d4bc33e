//! Issue 34: three gateways sharing their device state in a three-member etcd cluster
//! judge one message sequence exactly as one gateway alone does, while one of them is
//! killed with SIGKILL and restarted and etcd's leader is killed once.
//!
//! Both setups read the same publishes: the group subscribes as `$share/trio/…`, the lone
//! gateway as `$share/solo/…` (the broker gives each group every message), and each writes
//! its own InfluxDB. The sequence holds what two gateways with their own state got wrong
//! (issue 34's measurements): a frame resent 20 times, consecutive frames, a reused
//! counter; and out-of-order frames and two readings in one second.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::{Registry, RegistryFile};
use std::collections::BTreeSet;
use std::time::Duration;
use vigie_tests::etcd;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{self, GatewayProcess, GatewaySettings};
use vigie_tests::{influxdb, mosquitto, now_s, readback, scenario, wait_for};

type Messages = Vec<(String, Vec<u8>)>;

/// Frame `counter` of `d` with reading number `n` (its values) at second `time`.
fn frame(d: &Device, counter: u32, n: u32, time: u32) -> (String, Vec<u8>) {
    (d.topic(), d.frame(&[d.reading(n, time)], counter))
}

/// Phase 1: 40 consecutive frames of each device, device 0's frame 5 resent 20 times
/// among them.
fn phase_one(devices: &[Device], start: u32) -> Messages {
    let mut out = Vec::new();
    for c in 0..40 {
        for d in devices {
            out.push(frame(d, c, c, start + c));
        }
        if (6..26).contains(&c) {
            out.push(frame(&devices[0], 5, 5, start + 5));
        }
    }
    out
}

/// Phase 2: device 1's counter 10 reused with other content, device 2's frames 45 down
/// to 40 (out of order), device 0's frames 40 and 41 in one second, a resend, and the
/// reused counter five times more.
fn phase_two(devices: &[Device], start: u32) -> Messages {
    let mut out = vec![frame(&devices[1], 10, 310, start + 10)];
    out.extend((40..46).rev().map(|c| frame(&devices[2], c, c, start + c)));
    out.push(frame(&devices[0], 40, 40, start + 40));
    out.push(frame(&devices[0], 41, 41, start + 40));
    out.push(frame(&devices[1], 39, 39, start + 39));
    // The reused counter again, five times: the broker hands them round to every gateway.
    out.extend((0..5).map(|_| frame(&devices[1], 10, 310, start + 10)));
    out
}

/// A metric summed over gateways.
fn total(gateways: &[&GatewayProcess], name: &str) -> f64 {
    gateways.iter().map(|g| g.metric(name).unwrap_or(0.0)).sum()
}

/// The verdict counters a gateway keeps.
const VERDICTS: [&str; 4] = [
    "vigie_frames_accepted_total",
    "vigie_frames_duplicate_total",
    "vigie_frames_rejected_total{reason=\"counter_reused\"}",
    "vigie_device_missing_frames",
];

/// Every frame counter a gateway keeps, by name: accepted, duplicate, refused and held
/// by each reason, and the quarantine's evictions, summed over `gateways`.
fn frame_counters(gateways: &[&GatewayProcess]) -> Vec<(String, f64)> {
    let mut names = vec![
        "vigie_frames_accepted_total".to_string(),
        "vigie_frames_duplicate_total".to_string(),
        "vigie_quarantine_evicted_total".to_string(),
    ];
    for code in vigie_core::judge::reason::Reason::CODES {
        names.push(format!("vigie_frames_rejected_total{{reason=\"{code}\"}}"));
        names.push(format!("vigie_frames_held_total{{reason=\"{code}\"}}"));
    }
    names
        .into_iter()
        .map(|n| (n.clone(), total(gateways, &n)))
        .collect()
}

/// Every verdict counter, summed over `gateways`.
fn verdicts(gateways: &[&GatewayProcess]) -> Vec<f64> {
    VERDICTS.iter().map(|v| total(gateways, v)).collect()
}

/// Each device's missing frames as the gateway that stored its last frame shows them.
fn missing_frames(gateways: &[&GatewayProcess], devices: &[Device]) -> Vec<u64> {
    let books: Vec<_> = gateways.iter().filter_map(|g| g.devices()).collect();
    devices
        .iter()
        .map(|d| {
            books
                .iter()
                .filter_map(|b| b.get(&d.tenant, &d.id))
                .max_by_key(|s| s.last_frame_ms)
                .map_or(0, |s| s.missing_frames)
        })
        .collect()
}

/// Publishes `messages` in small chunks, waiting `pause` between them (a fleet's pace:
/// a resend comes after its first copy was judged).
async fn publish(broker: std::net::SocketAddr, messages: &[(String, Vec<u8>)], pause: Duration) {
    for chunk in messages.chunks(8) {
        fleet::publish_all(broker, chunk).await;
        tokio::time::sleep(pause).await;
    }
}

/// The `pm25` points of the scenario's tenant, with their full-resolution count.
async fn content(influx: std::net::SocketAddr) -> (BTreeSet<String>, usize) {
    let points = scenario::stored(influx).await;
    (
        points,
        scenario::point_count(influx, scenario::TENANT).await,
    )
}

/// Mosquitto, InfluxDB (its `vigie_lyon` database made) and a one-member etcd for `n`
/// devices of the scenario's commune.
struct Bench {
    dir: tempfile::TempDir,
    devices: Vec<Device>,
    broker: vigie_tests::Server,
    influx: vigie_tests::Server,
    etcd: etcd::Cluster,
}

impl Bench {
    async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let devices = scenario::devices(dir.path(), n);
        let broker = mosquitto(dir.path());
        let influx = influxdb();
        readback::influx_create_db(influx.addr, "vigie_lyon").await;
        let etcd = etcd::cluster(1);
        Self {
            dir,
            devices,
            broker,
            influx,
            etcd,
        }
    }

    /// Gateway `id` of the group `pair`, with `more` appended to its `[group]`.
    fn member(&self, id: &str, group_toml: &str, more: &str) -> GatewaySettings {
        GatewaySettings {
            group: "pair".into(),
            extra_toml: format!("{group_toml}{more}"),
            ..GatewaySettings::new(id, self.broker.addr, Some(self.influx.addr))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_with_shared_state_judge_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let devices = scenario::devices(dir.path(), 3);
    let broker = mosquitto(dir.path());
    let (trio_db, solo_db) = (influxdb(), influxdb());
    for db in [&trio_db, &solo_db] {
        readback::influx_create_db(db.addr, "vigie_lyon").await;
    }
    let mut etcd = etcd::cluster(3);
    let group_toml = etcd.group_toml("trio");
    let member = |id: &str| GatewaySettings {
        group: "trio".into(),
        extra_toml: group_toml.clone(),
        ..GatewaySettings::new(id, broker.addr, Some(trio_db.addr))
    };
    let mut trio: Vec<GatewayProcess> = ["gw-a", "gw-b", "gw-c"]
        .iter()
        .map(|id| GatewayProcess::start(dir.path(), &member(id)))
        .collect();
    let solo = GatewayProcess::start(
        dir.path(),
        &GatewaySettings {
            group: "solo".into(),
            ..GatewaySettings::new("gw-solo", broker.addr, Some(solo_db.addr))
        },
    );
    let start = now_s() - 3000;
    let one = phase_one(&devices, start);
    let (first, second) = one.split_at(one.len() / 2);
    publish(broker.addr, first, Duration::from_millis(100)).await;
    // Mid-run: one gateway killed (its supervisor restarts it), then etcd's leader.
    trio[1].kill9();
    publish(
        broker.addr,
        &second[..second.len() / 2],
        Duration::from_millis(100),
    )
    .await;
    trio[1].restart();
    let leader = etcd.leader().expect("a leader");
    etcd.members[leader].stop(true);
    publish(
        broker.addr,
        &second[second.len() / 2..],
        Duration::from_millis(100),
    )
    .await;
    wait_for(
        "another etcd member elected",
        Duration::from_secs(20),
        async || etcd.leader().is_some_and(|l| l != leader),
    )
    .await;
    let stored_once = 3 * 40;
    let all = |g: &[&GatewayProcess]| total(g, "vigie_frames_accepted_total");
    wait_for(
        "phase 1 stored by the lone gateway",
        Duration::from_secs(60),
        async || all(&[&solo]) >= f64::from(stored_once),
    )
    .await;
    wait_for(
        "phase 1 in both databases",
        Duration::from_secs(60),
        async || content(trio_db.addr).await.0.len() == content(solo_db.addr).await.0.len(),
    )
    .await;
    etcd.members[leader].start();
    // Phase 2 compared counter by counter: its verdicts come after every restart.
    let trio_refs = |t: &[GatewayProcess]| -> Vec<f64> { verdicts(&t.iter().collect::<Vec<_>>()) };
    let (trio_before, solo_before) = (trio_refs(&trio), verdicts(&[&solo]));
    let counters = |t: &[&GatewayProcess]| frame_counters(t);
    let trio_now = || counters(&trio.iter().collect::<Vec<_>>());
    let (trio_counters_before, solo_counters_before) = (trio_now(), counters(&[&solo]));
    publish(
        broker.addr,
        &phase_two(&devices, start),
        Duration::from_millis(300),
    )
    .await;
    let judged =
        |before: &[f64], now: &[f64]| now[0] - before[0] + now[1] - before[1] + now[2] - before[2];
    wait_for(
        "phase 2 judged by both",
        Duration::from_secs(60),
        async || {
            judged(&solo_before, &verdicts(&[&solo])) >= 15.0
                && judged(&trio_before, &trio_refs(&trio)) >= 15.0
        },
    )
    .await;
    let (trio_after, solo_after) = (trio_refs(&trio), verdicts(&[&solo]));
    let moved = |after: Vec<(String, f64)>, before: &[(String, f64)]| -> Vec<(String, f64)> {
        after
            .into_iter()
            .zip(before)
            .map(|((n, a), (_, b))| (n, a - b))
            .filter(|(_, d)| *d != 0.0)
            .collect()
    };
    let trio_counted = moved(trio_now(), &trio_counters_before);
    let solo_counted = moved(counters(&[&solo]), &solo_counters_before);
    let delta = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>();
    let (trio_delta, solo_delta) = (
        delta(&trio_after, &trio_before),
        delta(&solo_after, &solo_before),
    );
    wait_for(
        "phase 2 in both databases",
        Duration::from_secs(60),
        async || content(trio_db.addr).await == content(solo_db.addr).await,
    )
    .await;
    let (trio_points, trio_count) = content(trio_db.addr).await;
    let (solo_points, solo_count) = content(solo_db.addr).await;
    let trio_all: Vec<&GatewayProcess> = trio.iter().collect();
    let reused = total(&trio_all, VERDICTS[2]);
    let waits: usize = trio
        .iter()
        .map(|g| g.log().matches("the group's store cannot be used").count())
        .sum();
    println!(
        "group of three: points={} (lone gateway {}), phase-2 verdicts {:?} (lone {:?}), \
         counter_reused={reused} conflicts={} store_waits={waits} accepted_per_gateway={:?}",
        trio_points.len(),
        solo_points.len(),
        trio_delta,
        solo_delta,
        total(&trio_all, "vigie_group_conflicts_total"),
        trio.iter()
            .map(|g| g.metric("vigie_frames_accepted_total").unwrap_or(0.0))
            .collect::<Vec<_>>(),
    );
    assert_eq!(trio_points, solo_points, "the same readings");
    assert_eq!(trio_count, solo_count, "no reading stored twice");
    assert_eq!(
        trio_points.len(),
        stored_once as usize + 6 + 2,
        "every fresh frame"
    );
    assert_eq!(
        trio_delta[..3],
        solo_delta[..3],
        "the same verdicts (accepted, duplicate, reused)"
    );
    println!("phase-2 frame counters: group {trio_counted:?}, lone gateway {solo_counted:?}");
    assert_eq!(
        trio_counted, solo_counted,
        "every frame counter moved alike"
    );
    assert_eq!(
        trio_delta[2], 6.0,
        "the reused counter refused six times of six"
    );
    let refused_by: Vec<f64> = trio
        .iter()
        .map(|g| g.metric(VERDICTS[2]).unwrap_or(0.0))
        .collect();
    println!("the reused counter refused by each gateway: {refused_by:?}");
    assert!(
        refused_by.iter().all(|&n| n > 0.0),
        "by every gateway: {refused_by:?}"
    );
    // The quarantine: the group's gateways hold together what the lone gateway holds
    // (the reused counter's frame once, not once per gateway that got a copy).
    let quarantined = |ids: &[&str]| {
        let mut all: Vec<(String, String, String)> = ids
            .iter()
            .flat_map(|id| {
                let q = dir.path().join(format!("data-{id}/quarantine"));
                gateway::store::quarantine::read_all(&q).unwrap().0
            })
            .map(|e| (e.reason, e.topic, e.payload))
            .collect();
        all.sort();
        all
    };
    let (group_q, solo_q) = (
        quarantined(&["gw-a", "gw-b", "gw-c"]),
        quarantined(&["gw-solo"]),
    );
    println!(
        "quarantined: group {} entries, lone gateway {}",
        group_q.len(),
        solo_q.len()
    );
    assert!(!solo_q.is_empty());
    assert_eq!(group_q, solo_q, "the same quarantine");
    let group_missing = missing_frames(&trio_all, &devices);
    let solo_missing = missing_frames(&[&solo], &devices);
    println!("missing frames per device: group {group_missing:?}, lone gateway {solo_missing:?}");
    assert_eq!(group_missing, solo_missing, "the same missing frames");
    // Each gateway's /readyz lists the group as etcd does: all three, the restarted one
    // included; one stopping leaves the list at once.
    let listed = |g: &GatewayProcess| -> Vec<String> {
        let body = g.get("/readyz").map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let members = v["health"]["group"]["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        members
            .iter()
            .filter_map(|m| Some(m.as_str()?.to_string()))
            .collect()
    };
    let all = ["gw-a", "gw-b", "gw-c"];
    wait_for(
        "every gateway listing the group",
        Duration::from_secs(20),
        async || trio.iter().all(|g| listed(g) == all),
    )
    .await;
    trio[2].terminate();
    wait_for(
        "the stopped gateway gone from the list",
        Duration::from_secs(20),
        async || listed(&trio[0]) == all[..2],
    )
    .await;
    for g in &mut trio[..2] {
        g.terminate();
    }
}

/// What a gateway killed between writing a commit's records (fsynced) and claiming them
/// in the store leaves on disk: records the store does not know. Modelled by appending
/// them to a stopped gateway's buffer: one fresh frame, and one under a counter the store
/// holds with another frame's tag (claimed meanwhile by another gateway). At its start the
/// gateway claims the first before the sink reads it, and empties the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_but_never_claimed_are_claimed_or_emptied_at_the_next_start() {
    let b = Bench::start(2).await;
    let (dir, devices, broker, influx) = (&b.dir, &b.devices, &b.broker, &b.influx);
    let mut gw = GatewayProcess::start(
        dir.path(),
        &b.member("gw-a", &b.etcd.group_toml("pair"), ""),
    );
    let start = now_s() - 3000;
    let first: Messages = (0..6)
        .flat_map(|c| devices.iter().map(move |d| frame(d, c, c, start + c)))
        .collect();
    publish(broker.addr, &first, Duration::from_millis(50)).await;
    wait_for("12 frames stored", Duration::from_secs(30), async || {
        scenario::stored(influx.addr).await.len() == 12
    })
    .await;
    gw.terminate();
    // Device 0's frame 6, never claimed; device 1's counter 3 with other readings.
    let fresh = frame(&devices[0], 6, 6, start + 6);
    let beaten = frame(&devices[1], 3, 303, start + 3);
    let records: Vec<Vec<u8>> = [&fresh, &beaten]
        .iter()
        .map(|(t, f)| record_of(devices, t, f))
        .collect();
    let buffer_dir = dir.path().join("data-gw-a").join("buffer");
    let fs = gateway::store::fs::real();
    let (mut buffer, _) =
        gateway::store::buffer::Buffer::open(fs, &buffer_dir, 8 << 20, 64 << 20, |_| {}).unwrap();
    buffer.append(&records).unwrap();
    drop(buffer);
    gw.restart();
    wait_for(
        "the fresh record delivered",
        Duration::from_secs(30),
        async || scenario::stored(influx.addr).await.len() == 13,
    )
    .await;
    let log = gw.log();
    assert!(log.contains("emptied"), "{log}");
    // The real frames now: device 0's frame 6 is a duplicate (claimed at the start), the
    // other frame under device 1's counter 3 a reused counter.
    publish(broker.addr, &[fresh, beaten], Duration::from_millis(50)).await;
    wait_for("both judged", Duration::from_secs(30), async || {
        gw.metric("vigie_frames_duplicate_total") == Some(1.0)
            && gw.metric("vigie_frames_rejected_total{reason=\"counter_reused\"}") == Some(1.0)
    })
    .await;
    let points = scenario::stored(influx.addr).await;
    let pm25 = |d: &Device, n: u32, t: u32| {
        readback::key(
            &d.tenant,
            "air_quality",
            &d.id,
            u64::from(t),
            "pm25",
            f64::from(100 + n % 500) / 10.0,
        )
    };
    assert!(
        points.contains(&pm25(&devices[0], 6, start + 6)),
        "the fresh record stored"
    );
    assert!(
        points.contains(&pm25(&devices[1], 3, start + 3)),
        "the first frame kept"
    );
    assert!(
        !points.contains(&pm25(&devices[1], 303, start + 3)),
        "the beaten record never stored"
    );
    assert_eq!(
        scenario::point_count(influx.addr, scenario::TENANT).await,
        13
    );
    println!("rejoin: 13 points, the beaten record emptied, the fresh one claimed");
    gw.terminate();
}

/// A frame's buffer record as the gateway writes it (judged by the core alone).
fn record_of(devices: &[Device], topic: &str, frame: &[u8]) -> Vec<u8> {
    use vigie_core::judge::{batch, replay_book::ReplayBook, validate::TimeRules, verify::Context};
    let registry = fleet::registry(devices.iter().map(Device::entry).collect());
    let book = ReplayBook::default();
    let cx = Context {
        registry: &registry,
        counters: &book,
        rules: &TimeRules {
            max_future_skew_s: 300,
            max_age_s: 90 * 86_400,
        },
        strings: Default::default(),
        now_s: u64::from(now_s()),
        clock_synced: true,
    };
    let plan = batch::judge([(topic, frame)], &cx);
    let mut out = Vec::new();
    plan.accepted[0].record.encode(&mut out);
    out
}

/// The store unreachable (every member killed, as a partition between a gateway and the
/// store looks from the gateway): nothing is judged or acknowledged, `/readyz` and a
/// metric say why, and everything is stored once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_store_a_group_member_acknowledges_nothing_then_resumes() {
    let mut b = Bench::start(2).await;
    let settings = b.member("gw-a", &b.etcd.group_toml("pair"), "timeout = \"500ms\"\n");
    let gw = GatewayProcess::start(b.dir.path(), &settings);
    let (devices, broker, influx, etcd) = (&b.devices, &b.broker, &b.influx, &mut b.etcd);
    let start = now_s() - 3000;
    let load = scenario::load(devices, 10, start);
    etcd.members[0].stop(true);
    publish(broker.addr, &load.messages, Duration::from_millis(20)).await;
    wait_for(
        "the store reported unreachable",
        Duration::from_secs(20),
        async || gw.metric("vigie_group_unreachable") == Some(1.0),
    )
    .await;
    let (ready, why) = gw.readyz().unwrap();
    assert!(
        !ready && why.contains("group's store cannot be used"),
        "{why}"
    );
    assert_eq!(
        gw.metric("vigie_frames_accepted_total"),
        Some(0.0),
        "nothing judged"
    );
    assert!(scenario::stored(influx.addr).await.is_empty());
    etcd.members[0].start();
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(60)).await;
    wait_for(
        "the store reachable again",
        Duration::from_secs(20),
        async || gw.metric("vigie_group_unreachable") == Some(0.0),
    )
    .await;
    println!("store unreachable, then back: {got}");
}

/// A claim's answer lost: etcd applied the transaction, the gateway never heard (a proxy
/// in front of the member throws the answer away and closes the connection; 40 ms windows
/// while 3,000 frames flow, until one lands on a claim's answer). The gateway
/// reads the devices again and publishes what the store holds; were it to remove its
/// records while the store holds their counters, every later resend would be a duplicate
/// of readings no gateway has: they would be missing from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_answer_is_lost_is_settled_by_reading_the_store() {
    let b = Bench::start(4).await;
    let (dir, devices, broker, influx) = (&b.dir, &b.devices, &b.broker, &b.influx);
    let member = b.etcd.members[0].addr;
    let proxy = vigie_tests::proxy::Proxy::start(member).await;
    let toml = b
        .etcd
        .group_toml("pair")
        .replace(&member.to_string(), &proxy.addr.to_string());
    let gw = GatewayProcess::start(
        dir.path(),
        &b.member("gw-a", &toml, "timeout = \"500ms\"\n"),
    );
    let load = scenario::load(devices, 750, now_s() - 3000);
    let publisher = {
        let (addr, messages) = (broker.addr, load.messages.clone());
        tokio::spawn(async move { publish(addr, &messages, Duration::from_millis(15)).await })
    };
    // Short windows of lost answers while commits flow, until one lands on a claim.
    let lost = "a claim's answer was lost";
    for _ in 0..60 {
        if gw.log().contains(lost) || publisher.is_finished() {
            break;
        }
        proxy.drop_answers(true);
        tokio::time::sleep(Duration::from_millis(40)).await;
        proxy.drop_answers(false);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    publisher.await.unwrap();
    let settled = gw.log().matches(lost).count();
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(60)).await;
    let accepted = gw.metric("vigie_frames_accepted_total").unwrap();
    println!(
        "lost answers: {} answers dropped, {settled} claims settled by reading the store; {got}, accepted {accepted}",
        proxy.dropped()
    );
    assert!(
        settled > 0,
        "no claim's answer was lost: the fault did not land"
    );
    assert_eq!(
        accepted as usize,
        load.messages.len(),
        "each frame accepted once"
    );
}

/// Two gateways of a group, each killed with SIGKILL again and again under load (and
/// restarted, as systemd would): every reading the broker accepted is in the database
/// once, and every frame is in exactly one gateway's buffer, written by the gateway whose
/// claim won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_killed_again_and_again_store_each_frame_once() {
    let b = Bench::start(4).await;
    let (dir, devices, broker, influx) = (&b.dir, &b.devices, &b.broker, &b.influx);
    let toml = b.etcd.group_toml("pair");
    let mut pair = [
        GatewayProcess::start(dir.path(), &b.member("gw-a", &toml, "")),
        GatewayProcess::start(dir.path(), &b.member("gw-b", &toml, "")),
    ];
    let load = scenario::load(devices, 750, now_s() - 7200);
    let publisher = {
        let (addr, messages) = (broker.addr, load.messages.clone());
        tokio::spawn(async move {
            for chunk in messages.chunks(60) {
                fleet::publish_all(addr, chunk).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };
    for kill in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let gw = &mut pair[kill % 2];
        gw.kill9();
        gw.restart();
    }
    assert!(
        !publisher.is_finished(),
        "the load still runs at the last kill"
    );
    publisher.await.unwrap();
    let got = scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(90)).await;
    for gw in &mut pair {
        gw.terminate();
    }
    let claimed_at_start: usize = pair
        .iter()
        .map(|g| g.log().matches("a crash had left unclaimed").count())
        .sum();
    let copies = buffered_frames(&[dir.path().join("data-gw-a"), dir.path().join("data-gw-b")]);
    let twice = copies.values().filter(|&&n| n > 1).count();
    println!(
        "group kills: {got}; kills=6; starts that claimed what a kill left unclaimed {claimed_at_start}; frames in the buffers {} of {}, in two buffers {twice}",
        copies.len(),
        load.messages.len()
    );
    assert_eq!(copies.len(), load.messages.len(), "every frame in a buffer");
    assert_eq!(twice, 0, "no frame written by both gateways");
}

/// How many records with readings each frame (device, counter) has across the gateways'
/// buffers (nothing is deleted from the current segment).
fn buffered_frames(
    data_dirs: &[std::path::PathBuf],
) -> std::collections::BTreeMap<(String, u32), usize> {
    let mut copies = std::collections::BTreeMap::new();
    for data in data_dirs {
        let fs = gateway::store::fs::real();
        let dir = data.join("buffer");
        let _ = gateway::store::buffer::Buffer::open(fs, &dir, 8 << 20, 64 << 20, |item| {
            if let gateway::store::buffer::Recovered::Record(payload) = item
                && let Ok(r) = vigie_core::record::Record::decode(payload)
                && r.readings > 0
            {
                *copies.entry((r.device.to_string(), r.counter)).or_insert(0) += 1;
            }
        })
        .unwrap();
    }
    copies
}

/// A group whose etcd user may not touch its prefix: etcd refuses, and the gateway says
/// so rather than judging without the group's state. Writing taken away while it runs
/// (reading still allowed, so a commit reads its devices and then its claim is refused):
/// `/readyz` names the refusal, nothing more is acknowledged, and once writing is granted
/// again the held frames are stored. Everything taken away, a start exits at once with the
/// refusal (it cannot follow the group's log of erasures and registry changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_the_user_may_not_touch_is_a_clear_error_and_nothing_is_acknowledged() {
    let b = Bench::start(2).await;
    let toml = b.etcd.group_toml("pair");
    let mut gw = GatewayProcess::start(b.dir.path(), &b.member("gw-a", &toml, ""));
    let first = scenario::load(&b.devices, 5, now_s() - 3000);
    publish(b.broker.addr, &first.messages, Duration::from_millis(20)).await;
    scenario::all_stored(b.influx.addr, &first.expected, Duration::from_secs(30)).await;
    b.etcd.permit("pair/", Some("read"));
    let more = scenario::load_from(&b.devices, 5, 5, now_s() - 3000);
    publish(b.broker.addr, &more.messages, Duration::from_millis(20)).await;
    wait_for(
        "the refusal reported",
        Duration::from_secs(20),
        async || gw.metric("vigie_group_unreachable") == Some(1.0),
    )
    .await;
    let (ready, why) = gw.readyz().unwrap();
    println!("writing not granted: /readyz {ready} {why:?}");
    assert!(!ready && why.contains("permission denied"), "{why}");
    let accepted = gw.metric("vigie_frames_accepted_total");
    assert_eq!(accepted, Some(first.messages.len() as f64), "nothing more");
    assert_eq!(scenario::stored(b.influx.addr).await, first.expected);
    b.etcd.permit("pair/", Some("readwrite"));
    let mut both = first.expected.clone();
    both.extend(more.expected.iter().cloned());
    let got = scenario::all_stored(b.influx.addr, &both, Duration::from_secs(30)).await;
    println!("writing granted again: {got}");
    b.etcd.permit("pair/", None);
    gw.kill9();
    let started = std::time::Instant::now();
    let out = process::cli(&["run", "--config", gw.config.to_str().unwrap()]);
    let said = process::text(&out);
    println!(
        "a start refused: exit {:?} after {:?}",
        out.status.code(),
        started.elapsed()
    );
    assert!(
        !out.status.success() && said.contains("permission denied"),
        "{said}"
    );
}

/// A member of `b`'s group with its own registry (a copy of the bench's) and, if given,
/// its database behind `database`.
fn own_registry(b: &Bench, id: &str, database: Option<std::net::SocketAddr>) -> GatewaySettings {
    let registry = b.dir.path().join(format!("registry-{id}/devices.toml"));
    std::fs::create_dir_all(registry.parent().unwrap()).unwrap();
    std::fs::copy(b.dir.path().join("devices.toml"), &registry).unwrap();
    GatewaySettings {
        registry: Some(registry),
        influx: database.or(Some(b.influx.addr)),
        ..b.member(id, &b.etcd.group_toml("pair"), "")
    }
}

/// Once every reading but aq-0's is stored and gw-b has written all it holds: those
/// readings, how the database holds them, all it holds, and how many of aq-0's readings
/// are among it (came back).
async fn after_erasure(
    influx: std::net::SocketAddr,
    gw_b: &GatewayProcess,
    load: &scenario::Load,
) -> (BTreeSet<String>, scenario::Outcome, BTreeSet<String>, usize) {
    let kept: BTreeSet<String> = load
        .expected
        .iter()
        .filter(|p| !p.contains("|aq-0|"))
        .cloned()
        .collect();
    let got = scenario::all_stored(influx, &kept, Duration::from_secs(60)).await;
    wait_for(
        "gw-b's buffer written",
        Duration::from_secs(30),
        async || {
            gw_b.readyz().is_some_and(|(ready, _)| ready)
                && gw_b.metric("vigie_buffer_pending_bytes") == Some(0.0)
        },
    )
    .await;
    let stored = scenario::stored(influx).await;
    let came_back = stored.iter().filter(|p| p.contains("|aq-0|")).count();
    (kept, got, stored, came_back)
}

/// `quarantine list` of a gateway's config: its entries' lines.
fn quarantined(gw: &GatewayProcess) -> String {
    let config = gw.config.to_str().unwrap();
    process::text(&process::cli(&["quarantine", "list", "--config", config]))
}

/// Issue 34's "an erased reading never comes back", and the device commands reaching the
/// group. Two gateways, each with its own registry file; gw-b's database out of reach, so
/// the readings it accepts wait in its buffer. `erase` of one device on gw-a (stopped, as
/// `erase` wants) must make gw-b erase its copies (it restarts in place) before the
/// database is erased: once gw-b's database is back, none of the device's readings comes
/// back, every other device's reading is there once. Then `devices remove` and `devices
/// rotate` on gw-a reach gw-b's registry: the removed device's frames are refused by
/// gw-b, the rotated device's frames under its new key stored through gw-b alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_and_device_commands_reach_every_member_of_the_group() {
    let b = Bench::start(3).await;
    let (dir, devices, broker, influx) = (&b.dir, &b.devices, &b.broker, &b.influx);
    let away = vigie_tests::proxy::Proxy::start(influx.addr).await;
    away.refuse(true);
    let mut a = GatewayProcess::start(dir.path(), &own_registry(&b, "gw-a", None));
    let mut gw_b = GatewayProcess::start(dir.path(), &own_registry(&b, "gw-b", Some(away.addr)));
    let start = now_s() - 3000;
    let load = scenario::load(devices, 30, start);
    // A reused counter of the device to erase: refused and quarantined.
    let mut messages = load.messages.clone();
    messages.push(frame(&devices[0], 3, 303, start + 3));
    publish(broker.addr, &messages, Duration::from_millis(30)).await;
    let both = [&a, &gw_b];
    wait_for("every frame judged", Duration::from_secs(30), async || {
        total(&both, "vigie_frames_accepted_total") as usize == load.messages.len()
    })
    .await;
    let held_by_b = gw_b.metric("vigie_frames_accepted_total").unwrap();
    assert!(held_by_b > 0.0, "gw-b holds some readings in its buffer");
    let before = quarantined(&a) + &quarantined(&gw_b);
    assert!(before.contains("lyon/aq-0"), "{before}");

    a.terminate();
    let erased = process::cli(&[
        "erase",
        "--config",
        a.config.to_str().unwrap(),
        "--tenant",
        "lyon",
        "--device",
        "aq-0",
        "--yes",
    ]);
    let report = process::text(&erased);
    assert!(erased.status.success(), "{report}");
    assert!(
        report.contains("every other gateway of the group erased"),
        "{report}"
    );
    // (gw-b may still be starting again: it erases before its sink writes anything.)
    away.refuse(false);
    a.restart();
    let (kept, got, stored, came_back) = after_erasure(influx.addr, &gw_b, &load).await;
    println!(
        "group erase: gw-b held {held_by_b} frames, its database away; {got}; aq-0 points after the erase: {came_back}\n{report}"
    );
    assert_eq!(came_back, 0, "an erased reading came back");
    assert!(gw_b.log().contains("erased as the group asked"));
    let after = quarantined(&a) + &quarantined(&gw_b);
    assert!(!after.contains("lyon/aq-0"), "{after}");
    assert_eq!(stored, kept, "every other reading stored, once");

    // `devices rotate` of aq-2, then `devices remove` of aq-1, on gw-a reach gw-b (in
    // that order: a registry of two devices loaded in gw-b holds both changes).
    let config = a.config.to_str().unwrap().to_string();
    let command = |args: &[&str]| {
        let out = process::cli(args);
        assert!(out.status.success(), "{}", process::text(&out));
    };
    let blob = dir.path().join("aq-2.vgp");
    command(&[
        "devices",
        "rotate",
        "--config",
        &config,
        "--tenant",
        "lyon",
        "--id",
        "aq-2",
        "--kind",
        "air-quality",
        "--blob-out",
        blob.to_str().unwrap(),
    ]);
    command(&[
        "devices", "remove", "--config", &config, "--tenant", "lyon", "--id", "aq-1",
    ]);
    wait_for(
        "gw-b's registry reloaded",
        Duration::from_secs(20),
        async || gw_b.metric("vigie_registry_devices") == Some(2.0),
    )
    .await;
    let registry = Registry::load(&dir.path().join("registry-gw-b/devices.toml")).unwrap();
    assert!(registry.get("lyon", "aq-1").is_none());
    let entry = registry.get("lyon", "aq-2").unwrap().entry.clone();
    let key = protocol::DeviceKey::new(gateway::fleet::registry::parse_key(&entry.key).unwrap(), 2);
    // Ten frames of each, handed round by the broker to both gateways (a gateway stopped
    // would still be handed its share, queued in its session).
    let both = [&a, &gw_b];
    let unknown = "vigie_frames_rejected_total{reason=\"unknown_device\"}";
    let b_accepted = gw_b.metric("vigie_frames_accepted_total").unwrap();
    let next = start + 100;
    let mut messages = Vec::new();
    let mut expected = kept.clone();
    for c in 0..10 {
        let reading = devices[2].reading(100 + c, next + c);
        let pm25 = f64::from(100 + (100 + c) % 500) / 10.0;
        expected.insert(readback::key(
            "lyon",
            "air_quality",
            "aq-2",
            u64::from(reading.time),
            "pm25",
            pm25,
        ));
        messages.push((
            devices[2].topic(),
            devices[2].frame_under(&[reading], c, &key),
        ));
        messages.push(frame(&devices[1], 30 + c, 30 + c, next + c));
    }
    publish(broker.addr, &messages, Duration::ZERO).await;
    let got = scenario::all_stored(influx.addr, &expected, Duration::from_secs(30)).await;
    wait_for(
        "the removed device's frames refused",
        Duration::from_secs(20),
        async || total(&both, unknown) == 10.0,
    )
    .await;
    let by_b = (
        gw_b.metric(unknown).unwrap(),
        gw_b.metric("vigie_frames_accepted_total").unwrap() - b_accepted,
        gw_b.metric("vigie_frames_rejected_total{reason=\"authentication\"}")
            .unwrap(),
    );
    println!(
        "group device commands: {got}; aq-1 removed: 10 refused, {} by gw-b; aq-2 re-keyed: {} frames under its new key accepted by gw-b, {} refused there",
        by_b.0, by_b.1, by_b.2
    );
    assert_eq!(
        scenario::stored(influx.addr).await,
        expected,
        "aq-1 nothing more, aq-2 ten"
    );
    assert!(
        by_b.0 >= 1.0 && by_b.1 >= 1.0 && by_b.2 == 0.0,
        "gw-b judged with the group's registry: {by_b:?}"
    );
    a.terminate();
    gw_b.terminate();
    let left = buffered_frames(&[dir.path().join("data-gw-b")]);
    assert!(
        left.keys().all(|(d, _)| d != "aq-0"),
        "gw-b's buffer still holds aq-0"
    );
}

/// A member cut off from etcd (a partition: it still reaches its database) while another
/// erases a device. Its key expires, so `erase` does not wait for it and erases the
/// database; the cut-off member must not write what it holds meanwhile (its deliveries
/// wait while it is not in step with the group's log), and erases its copies as soon as
/// it reaches etcd again, before writing anything: none of the device's readings comes
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_from_the_store_writes_nothing_until_it_has_erased() {
    let b = Bench::start(3).await;
    let (dir, devices, broker, influx) = (&b.dir, &b.devices, &b.broker, &b.influx);
    let member = b.etcd.members[0].addr;
    let (etcd_b, db_b) = (
        vigie_tests::proxy::Proxy::start(member).await,
        vigie_tests::proxy::Proxy::start(influx.addr).await,
    );
    db_b.refuse(true);
    let mut a = GatewayProcess::start(
        dir.path(),
        &b.member("gw-a", &b.etcd.group_toml("pair"), ""),
    );
    let toml_b = b
        .etcd
        .group_toml("pair")
        .replace(&member.to_string(), &etcd_b.addr.to_string());
    let settings_b = GatewaySettings {
        influx: Some(db_b.addr),
        ..b.member("gw-b", &toml_b, "")
    };
    let gw_b = GatewayProcess::start(dir.path(), &settings_b);
    let load = scenario::load(devices, 30, now_s() - 3000);
    publish(broker.addr, &load.messages, Duration::from_millis(30)).await;
    let both = [&a, &gw_b];
    wait_for("every frame judged", Duration::from_secs(30), async || {
        total(&both, "vigie_frames_accepted_total") as usize == load.messages.len()
    })
    .await;
    let held_by_b = gw_b.metric("vigie_frames_accepted_total").unwrap();
    etcd_b.refuse(true);
    wait_for("gw-b's key expired", Duration::from_secs(30), async || {
        a.get("/readyz")
            .is_some_and(|(_, body)| !body.contains("gw-b"))
    })
    .await;
    a.terminate();
    let config = a.config.to_str().unwrap().to_string();
    let erased = process::cli(&[
        "erase", "--config", &config, "--tenant", "lyon", "--device", "aq-0", "--yes",
    ]);
    assert!(erased.status.success(), "{}", process::text(&erased));
    // gw-b reaches its database again, not etcd: it must hold everything.
    let before = scenario::stored(influx.addr).await;
    db_b.refuse(false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = scenario::stored(influx.addr).await;
    let came_back_during = during.iter().filter(|p| p.contains("|aq-0|")).count();
    assert_eq!(
        came_back_during, 0,
        "gw-b wrote erased readings while cut off"
    );
    assert_eq!(during, before, "gw-b wrote nothing while cut off");
    etcd_b.refuse(false);
    let (kept, got, stored, came_back) = after_erasure(influx.addr, &gw_b, &load).await;
    println!(
        "group erase with a member cut off: gw-b held {held_by_b} frames; {} points before its database came back, the same 6 s after; then {got}; aq-0 points {came_back}",
        before.len()
    );
    assert!(gw_b.log().contains("erased as the group asked"));
    assert_eq!(came_back, 0, "an erased reading came back");
    assert_eq!(stored, kept);
}

/// A member started while its store is down waits for it (up to 30 s) instead of starting
/// without the group's log, then runs as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_while_its_store_is_down_waits_for_it() {
    let mut b = Bench::start(2).await;
    let settings = b.member("gw-a", &b.etcd.group_toml("pair"), "timeout = \"500ms\"\n");
    b.etcd.members[0].stop(true);
    let dir = b.dir.path().to_path_buf();
    let started = std::time::Instant::now();
    let etcd = &mut b.etcd;
    let gw = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_secs(4));
            etcd.members[0].start();
        });
        GatewayProcess::start(&dir, &settings)
    });
    let waited = started.elapsed();
    assert!(gw.log().contains("start-up waits for it"), "{}", gw.log());
    assert!(
        waited >= Duration::from_secs(4),
        "started before its store: {waited:?}"
    );
    let load = scenario::load(&b.devices, 10, now_s() - 3000);
    publish(b.broker.addr, &load.messages, Duration::from_millis(20)).await;
    let got = scenario::all_stored(b.influx.addr, &load.expected, Duration::from_secs(30)).await;
    println!("a start with its store down: connected after {waited:?}; then {got}");
}

/// `erase` in a group deletes from the database only once every listed gateway has erased
/// its copies: a listed gateway that never does (a member's key with no gateway behind it,
/// as a hung one would leave) makes it fail after `--group-wait`, naming it, with the
/// database untouched; run again once it is gone, it erases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_a_listed_gateway_never_applies_leaves_the_database_alone() {
    let b = Bench::start(2).await;
    let mut gw = GatewayProcess::start(
        b.dir.path(),
        &b.member("gw-a", &b.etcd.group_toml("pair"), ""),
    );
    let load = scenario::load(&b.devices, 10, now_s() - 3000);
    publish(b.broker.addr, &load.messages, Duration::from_millis(20)).await;
    scenario::all_stored(b.influx.addr, &load.expected, Duration::from_secs(30)).await;
    gw.terminate();
    b.etcd.set("pair/member/gw-hung", Some("gw-hung"));
    let config = gw.config.to_str().unwrap().to_string();
    let erase = || {
        process::cli(&[
            "erase",
            "--config",
            &config,
            "--tenant",
            "lyon",
            "--device",
            "aq-0",
            "--yes",
            "--group-wait",
            "2",
        ])
    };
    let out = erase();
    let said = process::text(&out);
    println!("a listed gateway that never erases: {said}");
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("gw-hung have not erased") && said.contains("the database was not erased"),
        "{said}"
    );
    assert_eq!(
        scenario::stored(b.influx.addr).await,
        load.expected,
        "the database untouched"
    );
    b.etcd.set("pair/member/gw-hung", None);
    let out = erase();
    assert!(out.status.success(), "{}", process::text(&out));
    let left = scenario::stored(b.influx.addr).await;
    assert!(
        !left.is_empty() && left.iter().all(|p| !p.contains("|aq-0|")),
        "{left:?}"
    );
}
