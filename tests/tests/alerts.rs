//! Alerts by e-mail and webhook (issue 32, item 1; docs/OPERATIONS.md "Alerts"), against
//! a real SMTP server (Debian's aiosmtpd, STARTTLS and authentication required) and a
//! webhook receiver that checks each signature as the docs tell a receiver to:
//! - a bin over its commune's threshold is told once to the commune's e-mail and webhook,
//!   and its end once when it is emptied;
//! - the daily digest goes to the official;
//! - a gateway killed (`kill -9`) while an alert is in force does not tell it again after
//!   its restart, and tells its end once;
//! - the mail server down: the message waits (metric, `/readyz`), then goes once it is back;
//! - the SMTP password never shows in the gateway's log.
#![allow(clippy::unwrap_used)]

use gateway::fleet::registry::DeviceKind;
use protocol::reading::bin_flags::{FIRE_SUSPECTED, TILTED};
use protocol::reading::{Field, Values};
use std::time::Duration;
use vigie_tests::fleet::{self, Device};
use vigie_tests::process::{GatewayProcess, GatewaySettings};
use vigie_tests::readback;
use vigie_tests::receivers::{self, received, rejected};
use vigie_tests::{influxdb, mosquitto, now_s, tls, wait_for};

const SMTP_PASSWORD: &str = "smtp-pass-9f3a7c21d4e8b605";
const LIMIT: Duration = Duration::from_secs(30);

/// The e-mails to `who` that say `what`.
fn mails(smtp: &vigie_tests::Server, who: &str, what: &str) -> Vec<String> {
    received(smtp)
        .into_iter()
        .filter(|m| m.lines().next().is_some_and(|l| l.contains(who)) && m.contains(what))
        .collect()
}

/// The webhook calls with an alert of `code` in `state`.
fn calls(hook: &vigie_tests::Server, code: &str, state: &str) -> usize {
    received(hook)
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["alert"] == code && a["state"] == state)
        .count()
}

/// Waits until the gateway counts as sent every message the receivers got: each is then
/// marked sent on disk (a message cut by a crash before that is sent again, by design).
async fn all_sent_kept(gw: &GatewayProcess, receivers: &[&vigie_tests::Server]) {
    wait_for("every message received marked sent", LIMIT, async || {
        let got: usize = receivers.iter().map(|r| received(r).len()).sum();
        let sent: f64 = ["email", "webhook"]
            .iter()
            .filter_map(|c| {
                gw.metric(&format!(
                    "vigie_alert_messages_sent_total{{channel=\"{c}\"}}"
                ))
            })
            .sum();
        sent as usize == got
    })
    .await;
}

/// A test directory with a CA, the SMTP server and the webhook receiver (its key in
/// `hook.key`).
fn receivers() -> (
    tempfile::TempDir,
    tls::TestPki,
    vigie_tests::Server,
    vigie_tests::Server,
) {
    let dir = tempfile::tempdir().unwrap();
    let pki = tls::pki(dir.path());
    std::fs::write(
        dir.path().join("hook.key"),
        "a-shared-key-of-32-bytes-000001\n",
    )
    .unwrap();
    let smtp = receivers::smtp(&pki, "vigie", SMTP_PASSWORD);
    let hook = receivers::webhook(&dir.path().join("hook.key"));
    (dir, pki, smtp, hook)
}

fn config(dir: &std::path::Path, pki: &tls::TestPki, smtp: u16, hook: u16) -> String {
    let password = dir.join("smtp-password");
    std::fs::write(&password, format!("{SMTP_PASSWORD}\n")).unwrap();
    format!(
        "[alerts]\ninterval = \"1s\"\nconfirm = \"2s\"\ndigest_hour = 0\n\
         [alerts.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"starttls\"\n\
         username = \"vigie\"\npassword_file = \"{password}\"\n\
         from = \"Vigie <vigie@example.org>\"\nca_file = \"{ca}\"\n\
         [alerts.operator]\nemails = [\"dsi@example.org\"]\n\
         [alerts.communes.lyon]\nemails = [\"astreinte@lyon.example.org\"]\n\
         digest_emails = [\"maire@lyon.example.org\"]\nbin_full_percent = 85\n\
         webhooks = [{{ url = \"http://127.0.0.1:{hook}/vigie\", secret_file = \"{key}\" }}]\n",
        password = password.display(),
        ca = pki.ca.display(),
        key = dir.join("hook.key").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bin_is_told_once_when_it_fills_and_once_when_it_is_emptied() {
    let (dir, pki, mut smtp, hook) = receivers();
    let bin = Device::new("lyon", "bin-1", DeviceKind::WasteBin);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&bin));
    let (broker, influx) = (mosquitto(dir.path()), influxdb());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let mut settings = GatewaySettings::new("gw", broker.addr, Some(influx.addr));
    settings.extra_toml = config(dir.path(), &pki, smtp.addr.port(), hook.addr.port());
    let mut gw = GatewayProcess::start(dir.path(), &settings);
    let t = now_s() - 100;
    // The test device's n-th bin reading is n % 101 % full.
    let send = async |n: u32, counter: u32| {
        let frame = bin.frame(&[bin.reading(n, t + counter)], counter);
        fleet::publish_all(broker.addr, &[(bin.topic(), frame)]).await;
    };

    wait_for("the official's digest", LIMIT, async || {
        !mails(&smtp, "maire@lyon", "résumé du jour").is_empty()
    })
    .await;
    send(80, 1).await; // under the commune's 85 %: nothing to tell
    send(90, 2).await;
    wait_for("the start told by e-mail and webhook", LIMIT, async || {
        !mails(&smtp, "astreinte@lyon", "bac plein à 90 %").is_empty()
            && calls(&hook, "bin_full", "started") == 1
    })
    .await;

    // Killed while the alert is in force: not told again after the restart.
    all_sent_kept(&gw, &[&smtp, &hook]).await;
    gw.kill9();
    gw.restart();
    send(95, 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        mails(&smtp, "astreinte@lyon", "DÉBUT bin-1").len(),
        1,
        "{:?}",
        received(&smtp)
    );
    assert_eq!(calls(&hook, "bin_full", "started"), 1);

    // Emptied while the mail server is down: the end waits, then goes once.
    smtp.stop(true);
    send(101, 4).await; // 0 %
    wait_for("the end sent to the webhook", LIMIT, async || {
        calls(&hook, "bin_full", "ended") == 1
    })
    .await;
    wait_for("the e-mail waiting, said by /readyz", LIMIT, async || {
        gw.metric("vigie_alert_messages_pending").unwrap_or(0.0) >= 1.0
            && gw
                .readyz()
                .is_some_and(|(_, s)| s.contains("alert messages not delivered"))
    })
    .await;
    smtp.start();
    wait_for(
        "the end told by e-mail once the server is back",
        Duration::from_secs(60),
        async || !mails(&smtp, "astreinte@lyon", "FIN bin-1").is_empty(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ends = mails(&smtp, "astreinte@lyon", "FIN bin-1");
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert!(
        ends[0].contains("FIN bin-1 : bac plein à 95 %"),
        "{}",
        ends[0]
    );
    assert_eq!(calls(&hook, "bin_full", "ended"), 1);
    assert_eq!(rejected(&hook), 0, "every webhook call verified");
    assert_eq!(
        gw.metric("vigie_alert_messages_failed_total{channel=\"email\"}"),
        Some(0.0)
    );
    assert!(
        gw.readyz()
            .is_some_and(|(_, s)| !s.contains("alert messages"))
    );
    assert!(
        !gw.log().contains(SMTP_PASSWORD),
        "the SMTP password in the log"
    );
    println!(
        "alerts: {} e-mails, {} webhook calls, 0 repeated after kill -9",
        received(&smtp).len(),
        received(&hook).len()
    );
}

/// Every device alert of a commune, the commune held, and the broker lost: each told once
/// when it starts and once when it ends, naming commune, device and cause, and nothing
/// told again after a `kill -9` with all of them in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_is_told_once_when_it_starts_and_once_when_it_ends_through_a_crash() {
    let (dir, pki, smtp, hook) = receivers();
    let aq = |t: &str, id: &str| Device::new(t, id, DeviceKind::AirQuality);
    let bin = Device::new("lyon", "bin-1", DeviceKind::WasteBin);
    let (faulty, quiet, forged, ahead, nice) = (
        aq("lyon", "aq-1"),
        aq("lyon", "aq-2"),
        aq("lyon", "aq-3"),
        aq("lyon", "aq-4"),
        aq("nice", "aq-1"),
    );
    // The broker's certificate, 10 days from its end.
    let soon = dir.path().join("broker-soon.pem");
    let mut cert = rcgen::CertificateParams::new(vec!["broker.example".into()]).unwrap();
    cert.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(10);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&soon, cert.self_signed(&key).unwrap().pem()).unwrap();
    let mut entries: Vec<_> = [&bin, &faulty, &quiet, &forged, &ahead, &nice]
        .iter()
        .map(|d| d.entry())
        .collect();
    // aq-2 may be silent 2 s + 2 × 3 s.
    entries[2].sample_interval_s = Some(3);
    entries[2].heartbeat_s = Some(2);
    fleet::save_registry(&dir.path().join("devices.toml"), &fleet::registry(entries));
    let (mut broker, influx) = (mosquitto(dir.path()), influxdb());
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    let mut settings = GatewaySettings::new("gw", broker.addr, Some(influx.addr));
    settings.extra_toml = config(dir.path(), &pki, smtp.addr.port(), hook.addr.port())
        .replace("confirm = \"2s\"", "confirm = \"1s\"")
        .replace(
            "[alerts]\n",
            &format!("[alerts]\ncertificates = [\"{}\"]\n", soon.display()),
        )
        .replace(
            "[alerts.operator]\n",
            &format!(
                "[alerts.operator]\nwebhooks = [{{ url = \"http://127.0.0.1:{}/operator\", secret_file = \"{}\" }}]\n",
                hook.addr.port(),
                dir.path().join("hook.key").display()
            ),
        );
    let mut gw = GatewayProcess::start(dir.path(), &settings);
    let now = now_s();
    let wrong_key = Device {
        key: [7; 16],
        ..forged.clone()
    };

    // Everything wrong at once.
    let bad_bin = fleet::bin_reading(now - 10, 90, FIRE_SUSPECTED | TILTED, 3_200);
    let mut fault = faulty.reading(1, now - 10);
    if let Values::AirQuality(a) = &mut fault.values {
        a.pm25 = Field::Fault;
    }
    fleet::publish_all(
        broker.addr,
        &[
            (bin.topic(), bin.frame(&[bad_bin], 1)),
            (faulty.topic(), faulty.frame(&[fault], 1)),
            (quiet.topic(), quiet.frame(&[quiet.reading(1, now - 10)], 1)),
            (
                forged.topic(),
                wrong_key.frame(&[forged.reading(1, now - 10)], 1),
            ),
            (
                ahead.topic(),
                ahead.frame(&[ahead.reading(1, now + 7_200)], 1),
            ),
            (nice.topic(), nice.frame(&[nice.reading(1, now - 10)], 1)),
        ],
    )
    .await;
    let lyon = [
        ("bin_full", "bin-1"),
        ("tilted", "bin-1"),
        ("fire_suspected", "bin-1"),
        ("battery", "bin-1"),
        ("sensor_fault_pm", "aq-1"),
        ("silent", "aq-2"),
        ("refused", "aq-3"),
        ("held", "aq-4"),
    ];
    let told = |state: &'static str| {
        let hook = &hook;
        move || {
            lyon.iter()
                .map(|(code, device)| receivers::told(hook, "lyon", code, device, state))
                .collect::<Vec<_>>()
        }
    };
    let started = told("started");
    wait_for("every lyon alert told", LIMIT, async || {
        started().iter().all(|n| *n >= 1)
            && receivers::told(&hook, "nice", "commune_held", "", "started") == 1
    })
    .await;
    assert_eq!(started(), [1; 8], "{lyon:?}");
    wait_for("the certificate's end told", LIMIT, async || {
        receivers::told(&hook, "", "certificate_expiring", "", "started") == 1
    })
    .await;
    // Renewed: its end told.
    let mut renewed = rcgen::CertificateParams::new(vec!["broker.example".into()]).unwrap();
    renewed.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(400);
    std::fs::write(&soon, renewed.self_signed(&key).unwrap().pem()).unwrap();
    wait_for("the renewed certificate told", LIMIT, async || {
        receivers::told(&hook, "", "certificate_expiring", "", "ended") == 1
    })
    .await;
    let held_mail = mails(
        &smtp,
        "dsi@",
        "commune nice : la base de données de la commune refuse",
    );
    assert_eq!(held_mail.len(), 1, "{:?}", received(&smtp));

    // kill -9 with all of them in force: nothing told again.
    all_sent_kept(&gw, &[&smtp, &hook]).await;
    gw.kill9();
    gw.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(started(), [1; 8], "after the restart");
    assert_eq!(
        receivers::told(&hook, "nice", "commune_held", "", "started"),
        1
    );

    // Everything right again.
    let mut good = nice.reading(2, now);
    good.time = now;
    readback::influx_create_db(influx.addr, "vigie_nice").await;
    fleet::publish_all(
        broker.addr,
        &[
            (
                bin.topic(),
                bin.frame(&[fleet::bin_reading(now, 0, 0, 3_900)], 2),
            ),
            (faulty.topic(), faulty.frame(&[faulty.reading(2, now)], 2)),
            (quiet.topic(), quiet.frame(&[quiet.reading(2, now)], 2)),
            (forged.topic(), forged.frame(&[forged.reading(2, now)], 2)),
            (ahead.topic(), ahead.frame(&[ahead.reading(2, now)], 2)),
            (nice.topic(), nice.frame(&[good], 2)),
        ],
    )
    .await;
    let ended = told("ended");
    wait_for("every end told", LIMIT, async || {
        ended().iter().all(|n| *n >= 1)
            && receivers::told(&hook, "nice", "commune_held", "", "ended") == 1
    })
    .await;
    assert_eq!((started(), ended()), (vec![1; 8], vec![1; 8]), "{lyon:?}");

    // The broker lost for a while, then back.
    broker.stop(true);
    wait_for("the broker's loss told", LIMIT, async || {
        receivers::told(&hook, "", "broker_down", "", "started") == 1
    })
    .await;
    broker.start();
    wait_for("its return told", LIMIT, async || {
        receivers::told(&hook, "", "broker_down", "", "ended") == 1
    })
    .await;
    assert_eq!(rejected(&hook), 0);
    assert_eq!(
        receivers::told(&hook, "", "certificate_expiring", "", "started"),
        1,
        "once, through the restart"
    );
    for told in ["DÉBUT le certificat", "FIN le certificat"] {
        let certificate = mails(&smtp, "dsi@", told);
        assert_eq!(certificate.len(), 1, "{told}: {:?}", received(&smtp));
    }
    let texts: Vec<String> = received(&hook);
    println!(
        "alerts: {} lyon alerts each started 1 and ended 1 through a kill -9; commune held and broker lost told once each; {} webhook calls",
        lyon.len(),
        texts.len()
    );
}

/// The data directory's disk filling up (a 32 MiB tmpfs filled by another file) is told to
/// the operator once, and once when the room is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_disk_filling_up_is_told_to_the_operator_once_and_its_end_once() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, operator) = receivers::operator_webhook(dir.path());
    let disk = vigie_tests::tmpfs::Tmpfs::mount(&dir.path().join("disk"), "32m");
    let bin = Device::new("lyon", "bin-1", DeviceKind::WasteBin);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&bin));
    let broker = mosquitto(dir.path());
    let mut settings = GatewaySettings::new("gw", broker.addr, None);
    settings.data_dir = Some(disk.path().join("data"));
    settings.buffer_mib = (8, 1);
    settings.extra_toml = format!(
        "[alerts]\ninterval = \"1s\"\nconfirm = \"1s\"\ndisk_free_percent = 20\n{operator}"
    );
    let _gw = GatewayProcess::start(dir.path(), &settings);
    // Another program's file takes 28 of the 32 MiB.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 28 << 20]).unwrap();
    let told = |state| receivers::told(&hook, "", "disk_nearly_full", "", state);
    wait_for("the full disk told", LIMIT, async || told("started") == 1).await;
    std::fs::remove_file(&filler).unwrap();
    wait_for("the room back told", LIMIT, async || told("ended") == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((told("started"), told("ended")), (1, 1));
    assert_eq!(rejected(&hook), 0);
}

/// Readings piling up for a commune whose database is missing: the growing backlog told
/// once to the operator, and its end once after the database is created and it drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_backlog_is_told_once_and_its_end_once() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, operator) = receivers::operator_webhook(dir.path());
    let aq = Device::new("lyon", "aq-1", DeviceKind::AirQuality);
    fleet::write_registry(&dir.path().join("devices.toml"), std::slice::from_ref(&aq));
    let (broker, influx) = (mosquitto(dir.path()), influxdb());
    let mut settings = GatewaySettings::new("gw", broker.addr, Some(influx.addr));
    settings.extra_toml = format!(
        "[alerts]\ninterval = \"1s\"\nconfirm = \"1s\"\nbacklog_mib = 0\nbacklog_window = \"2s\"\n{operator}"
    );
    let _gw = GatewayProcess::start(dir.path(), &settings);
    let told = |state| receivers::told(&hook, "", "backlog_growing", "", state);
    // Lyon's database does not exist yet: a reading every 100 ms waits in the buffer.
    let t = now_s() - 100;
    for n in 1..=60u32 {
        let frame = aq.frame(&[aq.reading(n, t + n)], n);
        fleet::publish_all(broker.addr, &[(aq.topic(), frame)]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if told("started") == 1 {
            break;
        }
    }
    wait_for("the growing backlog told", LIMIT, async || {
        told("started") == 1
    })
    .await;
    readback::influx_create_db(influx.addr, "vigie_lyon").await;
    wait_for("its end told", LIMIT, async || told("ended") == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((told("started"), told("ended")), (1, 1));
}
