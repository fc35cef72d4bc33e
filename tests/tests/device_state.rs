//! Device state: what `/devices`, `/metrics` and `devices list` say about each device is
//! counted from what was published and stored (frames, readings, last reading, battery,
//! frame-counter gaps, forged frames on its topic), and it survives a restart: saved at
//! shutdown, shown by `devices list` while the service is stopped, restored at start.
#![allow(clippy::unwrap_used)]

use protocol::json::UtcTime;
use protocol::{DeviceStatus, Field, Reading, Values};
use std::time::Duration;
use vigie_tests::process::{self, GatewayProcess, GatewaySettings};
use vigie_tests::{fleet, influxdb, mosquitto, now_s, readback, scenario, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_state_counts_what_was_stored_and_survives_a_restart() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    // aq-2 is registered and never sends anything.
    let devices = scenario::devices(dir.path(), 3);
    let (aq0, aq1, silent) = (&devices[0], &devices[1], &devices[2]);
    let broker = mosquitto(dir.path());
    let mut gw = GatewayProcess::start(
        dir.path(),
        &GatewaySettings::new("gw", broker.addr, Some(influx.addr)),
    );

    const PER_DEVICE: u32 = 20;
    let start = now_s() - 3600;
    let load = scenario::load(&devices[..2], PER_DEVICE, start);
    let mut messages = load.messages.clone();
    // aq-0 then reports its battery with frame counter PER_DEVICE + 2: two frames missing.
    let battery_mv = 3_650;
    let status_time = start + 100;
    let status = Reading {
        time: status_time,
        values: Values::DeviceStatus(DeviceStatus {
            battery: Field::Value(battery_mv),
            ..DeviceStatus::default()
        }),
    };
    let skipped = 2;
    messages.push((aq0.topic(), aq0.frame(&[status], PER_DEVICE + skipped)));
    // A forged frame on aq-1's topic (its tag altered).
    let mut forged = aq1.frame(&[aq1.reading(PER_DEVICE, start + 50)], PER_DEVICE);
    *forged.last_mut().unwrap() ^= 1;
    messages.push((aq1.topic(), forged));
    fleet::publish_all(broker.addr, &messages).await;
    scenario::all_stored(influx.addr, &load.expected, Duration::from_secs(60)).await;

    // What each device must show, from what was published.
    let frames_of = |d: &fleet::Device| {
        load.messages
            .iter()
            .filter(|(t, _)| *t == d.topic())
            .count() as u64
    };
    let want_aq0 = (frames_of(aq0) + 1, frames_of(aq0) + 1, u64::from(skipped));
    let want_aq1 = (frames_of(aq1), frames_of(aq1), 0);
    wait_for(
        "aq-0's status frame counted",
        Duration::from_secs(20),
        async || {
            gw.devices()
                .and_then(|b| b.get("lyon", &aq0.id).map(|d| d.frames))
                == Some(want_aq0.0)
        },
    )
    .await;
    wait_for(
        "the forged frame counted",
        Duration::from_secs(20),
        async || {
            gw.devices().and_then(|b| {
                b.get("lyon", &aq1.id)
                    .map(|d| d.rejected.values().sum::<u64>())
            }) == Some(1)
        },
    )
    .await;
    let before = gw.devices().unwrap();
    let (d0, d1) = (
        before.get("lyon", &aq0.id).unwrap(),
        before.get("lyon", &aq1.id).unwrap(),
    );
    assert_eq!((d0.frames, d0.readings, d0.missing_frames), want_aq0);
    assert_eq!((d1.frames, d1.readings, d1.missing_frames), want_aq1);
    assert_eq!(d0.last_reading_s, Some(u64::from(status_time)));
    assert_eq!(
        d1.last_reading_s,
        Some(u64::from(start + PER_DEVICE - 1)),
        "the forged frame's later time must not count"
    );
    assert_eq!(
        (d0.battery_mv, d1.battery_mv),
        (Some(i64::from(battery_mv)), None)
    );
    assert_eq!(
        d1.rejected.iter().collect::<Vec<_>>(),
        [(&"authentication".to_string(), &1)]
    );
    assert!(d0.rejected.is_empty());
    // The rejection is in the log too, for people: one plain line (no colour codes) with
    // tenant, device and reason.
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("frame rejected"))
        .unwrap_or_else(|| panic!("no rejection logged:\n{log}"));
    for part in ["lyon", &aq1.id, "authentication"] {
        assert!(line.contains(part), "{line}");
    }
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
    // The silent device is listed, with nothing heard, and red for it.
    let quiet = before.get("lyon", &silent.id).unwrap();
    assert_eq!((quiet.frames, quiet.last_frame_ms), (0, None));
    let (_, served) = gw.get("/devices?tenant=lyon").unwrap();
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    let quiet = served["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == silent.id.as_str())
        .unwrap();
    assert_eq!(quiet["condition"]["light"], "red");
    assert_eq!(quiet["condition"]["reasons"][0]["reason"], "never_heard");
    // The same figures in /metrics, rendered from that state.
    let series = |name: &str, d: &fleet::Device| {
        gw.metric(&format!("{name}{{tenant=\"lyon\",device=\"{}\"}}", d.id))
            .unwrap()
    };
    assert_eq!(
        series("vigie_device_last_seen_timestamp_seconds", aq0),
        f64::from(status_time)
    );
    assert_eq!(
        series("vigie_device_missing_frames", aq0),
        f64::from(skipped)
    );
    assert_eq!(
        series("vigie_device_battery_volts", aq0),
        f64::from(battery_mv) / 1000.0
    );

    // Stopped: `devices list` reads the state the service saved.
    gw.terminate();
    let list = process::cli(&["devices", "list", "--config", gw.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.status.success(), "{text}");
    let line = |d: &fleet::Device| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(d.id.as_str()))
            .unwrap_or_else(|| panic!("no line for {} in:\n{text}", d.id))
            .to_string()
    };
    assert!(
        line(aq0).contains(&UtcTime(status_time).to_string()),
        "{text}"
    );
    assert!(line(aq0).contains("3.65 V"), "{text}");
    assert!(
        line(aq1).contains(&UtcTime(start + PER_DEVICE - 1).to_string()),
        "{text}"
    );
    assert_eq!(line(silent).split_whitespace().nth(5), Some("-"), "{text}");
    assert!(text.contains("state as it last saved it"), "{text}");

    // Restarted: the state is back as it was.
    gw.restart();
    assert_eq!(gw.devices().unwrap(), before);
    println!(
        "device_state: aq-0 frames/readings/missing {want_aq0:?}, aq-1 {want_aq1:?} + 1 forged; \
         state identical after restart"
    );
    gw.terminate();
}
