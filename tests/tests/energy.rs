//! A simulated day of a waste-bin node (the firmware's node and link, the simulator's
//! energy ledger, through real Mosquitto, the gateway and InfluxDB): the ledgers it sends
//! cover the day, and what they say agrees with the model of `docs/ENERGY.md` within
//! 10 %, share by share and in average current.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use std::time::Duration;
use tokio::sync::watch;
use vigie_core::condition::energy::{CELL_MAH, Ledger, currents, lifetime_days};
use vigie_sim::{Fleet, FleetOptions};
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::InProcessGateway;
use vigie_tests::{influxdb, mosquitto, readback};

/// The default schedule of a bin (`devices add`): a sample every 300 s.
const INTERVAL_S: f64 = 300.0;
/// One simulated day in 12 real seconds.
const ACCEL: f64 = 86_400.0 / 12.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_day_agrees_with_the_energy_model() {
    let influx = influxdb();
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let dir = tempfile::tempdir().unwrap();
    let bin = Device::new("lyon", "bin-1", DeviceKind::WasteBin);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&bin));
    let broker = mosquitto(dir.path());
    let gw = InProcessGateway::for_registry(dir.path(), "gw", broker.addr, influx.addr).await;
    let options = FleetOptions {
        broker: broker.addr,
        accel: ACCEL,
        duration: Duration::from_secs(12),
        status_every: 6,
        outages: Vec::new(),
        progress: false,
        ca: None,
    };
    let fleet = Fleet::new(
        vec![bin.provisioning(broker.addr, INTERVAL_S as u16, 3600)],
        options,
    );
    let (_keep, never) = watch::channel(false);
    let summary = fleet.run(never).await;
    eprintln!("fleet: {summary}");
    assert_eq!(summary.verdict(), Ok(()), "{summary}");
    let [awake, asleep, on, active, sensor] = summary.energy;
    let day = Ledger {
        awake_ms: awake as u32,
        asleep_ms: asleep as u32,
        modem_on_ms: on as u32,
        modem_active_ms: active as u32,
        sensor_on_ms: sensor as u32,
    };
    let covered = day.covered_ms() as f64;
    assert!(
        covered >= 0.8 * 86_400_000.0,
        "the ledgers cover the day: {summary}"
    );

    // The model (docs/ENERGY.md, "The simulated day"): the modem registered all day, one
    // exchange of 1 s after each sample, the sensor on 35 s per sample (30 s of warm-up,
    // 5 readings), the MCU awake for both.
    let share = |ms: u64| ms as f64 / covered;
    let model = [
        ("modem on", share(on), 1.0),
        ("modem active", share(active), 1.0 / INTERVAL_S),
        ("sensor on", share(sensor), 35.0 / INTERVAL_S),
        ("MCU awake", share(awake), 36.0 / INTERVAL_S),
    ];
    let c = currents(protocol::Kind::WasteBin);
    // The same shares over a million milliseconds.
    let ms = |share: f64| (share * 1e6) as u32;
    let model_ledger = Ledger {
        awake_ms: ms(36.0 / INTERVAL_S),
        asleep_ms: ms(1.0 - 36.0 / INTERVAL_S),
        modem_on_ms: ms(1.0),
        modem_active_ms: ms(1.0 / INTERVAL_S),
        sensor_on_ms: ms(35.0 / INTERVAL_S),
    };
    let (simulated_ua, model_ua) = (
        day.average_ua(&c).unwrap_or_default(),
        model_ledger.average_ua(&c).unwrap_or_default(),
    );
    eprintln!(
        "simulated day of a bin: {model:?} (simulated share, model share); average current \
         {simulated_ua:.0} µA simulated, {model_ua:.0} µA modelled; a 19 Ah cell lasts {:.0} days",
        lifetime_days(CELL_MAH, simulated_ua)
    );
    for (what, simulated, modelled) in model {
        assert!(
            (simulated - modelled).abs() <= 0.1 * modelled,
            "{what}: {simulated:.4} simulated against {modelled:.4} modelled: {summary}"
        );
    }
    assert!((simulated_ua - model_ua).abs() <= 0.1 * model_ua);
    // The ledgers reached the database as device_energy points.
    let q = "SELECT count(cpuAwakeTime) FROM device_energy";
    let body = readback::influx_query(influx.addr, "vigie_lyon", q).await;
    let stored = body["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0);
    assert!(stored >= 40, "ledgers stored: {stored}");
    gw.stop().await;
}
