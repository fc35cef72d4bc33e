//! What the alerts say: an e-mail's subject and body in French or English, and a
//! webhook's JSON. Pure: the changes, the language and a way to write times come in.

use crate::web::page::Lang;
use serde_json::json;
use vigie_core::alert::{Change, Entry, What};

/// How a time reads in a message (the gateway's local time and its offset).
pub type Clock<'a> = &'a dyn Fn(u64) -> String;

/// Who a message is about: a commune's name, or the gateway's when `commune` is empty.
pub fn audience(lang: Lang, commune: &str, gateway: &str) -> String {
    if commune.is_empty() {
        format!("{} {gateway}", lang.pick("passerelle", "gateway"))
    } else {
        commune.to_string()
    }
}

/// An alert in words, without its device.
pub fn what(lang: Lang, what: &What, clock: Clock) -> String {
    match what {
        What::Device { why } => lang.why(why, clock),
        What::CommuneHeld { error } => format!(
            "{} : {error} ({})",
            lang.pick(
                "la base de données de la commune refuse les écritures",
                "the commune's database refuses writes"
            ),
            lang.pick(
                "les relevés attendent dans le tampon de la passerelle",
                "readings wait in the gateway's buffer"
            )
        ),
        What::BufferNearlyFull { used, max } => format!(
            "{} {} % ({} / {} Mio)",
            lang.pick("tampon durable rempli à", "durable buffer"),
            used * 100 / (*max).max(1),
            used >> 20,
            max >> 20
        ),
        What::BacklogGrowing { pending, before } => format!(
            "{} : {} Mio ({} {} Mio {})",
            lang.pick(
                "les relevés en attente des bases de données augmentent",
                "readings waiting for the databases keep growing"
            ),
            pending >> 20,
            lang.pick("contre", "against"),
            before >> 20,
            lang.pick("une demi-heure plus tôt", "half an hour before")
        ),
        What::DiskNearlyFull { free, total } => format!(
            "{} : {} % {}",
            lang.pick("disque des données presque plein", "data disk nearly full"),
            free * 100 / (*total).max(1),
            lang.pick("libre", "free")
        ),
        What::StoreRefusing { problem } => problem.clone(),
        What::CertificateExpiring { file, not_after_ms } => format!(
            "{} {file} {} {}",
            lang.pick("le certificat", "the certificate"),
            lang.pick("expire le", "expires on"),
            clock(*not_after_ms)
        ),
        What::BrokerDown { error } => format!(
            "{}{}",
            lang.pick(
                "déconnectée du broker MQTT : aucune mesure n'arrive",
                "not connected to the MQTT broker: no reading arrives"
            ),
            error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    }
}

/// An alert in words with what it is about: `bin-7 : bac plein à 92 %`, `commune nice :
/// …` (a commune's own), or the gateway's alone.
fn line(lang: Lang, e: &Entry, clock: Clock) -> String {
    let a = &e.alert;
    let about = match (&a.device, a.tenant.as_str()) {
        (Some(d), _) => format!("{d} : "),
        (None, "") => String::new(),
        (None, tenant) => format!("{} {tenant} : ", lang.pick("commune", "commune")),
    };
    format!("{about}{}", what(lang, &a.what, clock))
}

/// An e-mail telling `changes` of one audience: (subject, body).
pub fn changes_mail(lang: Lang, who: &str, changes: &[Change], clock: Clock) -> (String, String) {
    let started = changes
        .iter()
        .filter(|c| matches!(c, Change::Started(_)))
        .count();
    let ended = changes.len() - started;
    let subject = match changes {
        [Change::Started(e)] => format!("[Vigie] {who} — {}", line(lang, e, clock)),
        [Change::Ended(e)] => format!(
            "[Vigie] {who} — {} {}",
            lang.pick("fin :", "ended:"),
            line(lang, e, clock)
        ),
        _ => format!("[Vigie] {who} — {}", counts(lang, started, ended)),
    };
    let mut body = String::new();
    for c in changes {
        let e = c.entry();
        let text = match c {
            Change::Started(_) => format!(
                "{} {} — {} {}",
                lang.pick("DÉBUT", "START"),
                line(lang, e, clock),
                lang.pick("depuis", "since"),
                clock(e.since_ms)
            ),
            Change::Ended(_) => {
                let end = e.gone_ms.unwrap_or(e.since_ms);
                format!(
                    "{} {} — {} {} ({} {})",
                    lang.pick("FIN", "END"),
                    line(lang, e, clock),
                    lang.pick("terminée", "ended"),
                    clock(end),
                    lang.pick("durée", "lasted"),
                    lang.duration(end.saturating_sub(e.since_ms) / 1000)
                )
            }
        };
        body.push_str(&text);
        body.push('\n');
    }
    body.push_str(footer(lang));
    (subject, body)
}

/// "2 nouvelles alertes, 1 alerte terminée".
fn counts(lang: Lang, started: usize, ended: usize) -> String {
    let many = |n: usize, one: &str, more: &str| format!("{n} {}", if n > 1 { more } else { one });
    let mut parts = Vec::new();
    if started > 0 {
        parts.push(match lang {
            Lang::Fr => many(started, "nouvelle alerte", "nouvelles alertes"),
            Lang::En => many(started, "new alert", "new alerts"),
        });
    }
    if ended > 0 {
        parts.push(match lang {
            Lang::Fr => many(ended, "alerte terminée", "alertes terminées"),
            Lang::En => many(ended, "alert ended", "alerts ended"),
        });
    }
    parts.join(", ")
}

/// The daily digest of the alerts in force for one audience: (subject, body).
pub fn digest_mail(lang: Lang, who: &str, active: &[&Entry], clock: Clock) -> (String, String) {
    let subject = format!(
        "[Vigie] {who} — {} : {} {}",
        lang.pick("résumé du jour", "daily digest"),
        match lang {
            Lang::Fr if active.len() > 1 => format!("{} alertes", active.len()),
            Lang::Fr => format!("{} alerte", active.len()),
            Lang::En if active.len() == 1 => "1 alert".to_string(),
            Lang::En => format!("{} alerts", active.len()),
        },
        lang.pick("en cours", "in force")
    );
    let mut body = String::new();
    if active.is_empty() {
        body.push_str(lang.pick(
            "Aucune alerte en cours : tous les appareils suivis fonctionnent.\n",
            "No alert in force: every device followed works.\n",
        ));
    }
    for e in active {
        body.push_str(&format!(
            "- {} — {} {}\n",
            line(lang, e, clock),
            lang.pick("depuis", "since"),
            clock(e.since_ms)
        ));
    }
    body.push_str(footer(lang));
    (subject, body)
}

fn footer(lang: Lang) -> &'static str {
    lang.pick(
        "\n-- \nMessage de la passerelle Vigie. Chaque alerte est signalée une fois à son début et une fois à sa fin ; la page d'état montre l'état présent.\n",
        "\n-- \nSent by the Vigie gateway. Each alert is told once when it starts and once when it ends; the status page shows the present state.\n",
    )
}

/// A webhook's JSON body for `changes` of `tenant` (docs/OPERATIONS.md "Alerts").
pub fn changes_json(
    lang: Lang,
    gateway: &str,
    tenant: &str,
    changes: &[Change],
    clock: Clock,
    iso: Clock,
) -> String {
    let alerts: Vec<_> = changes
        .iter()
        .map(|c| {
            let e = c.entry();
            json!({
                "state": if matches!(c, Change::Started(_)) { "started" } else { "ended" },
                "alert": e.alert.what.code(),
                "tenant": (!e.alert.tenant.is_empty()).then_some(&e.alert.tenant),
                "device": e.alert.device,
                "since": iso(e.since_ms),
                "ended": e.gone_ms.filter(|_| matches!(c, Change::Ended(_))).map(iso),
                "text": line(lang, e, clock),
                "detail": e.alert.what,
            })
        })
        .collect();
    json!({
        "gateway": gateway,
        "tenant": (!tenant.is_empty()).then_some(tenant),
        "alerts": alerts,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigie_core::alert::Alert;
    use vigie_core::condition::Why;

    fn entry(why: Why) -> Entry {
        Entry {
            alert: Alert {
                tenant: "lyon".into(),
                device: Some("bin-7".into()),
                what: What::Device { why },
            },
            since_ms: 0,
            announced: true,
            gone_ms: Some(3_900_000),
        }
    }

    #[test]
    fn a_start_and_an_end_read_in_french_and_english() {
        let clock = |ms: u64| format!("t{}", ms / 1000);
        let full = entry(Why::BinFull { percent: 92 });
        let (subject, body) =
            changes_mail(Lang::Fr, "lyon", &[Change::Started(full.clone())], &clock);
        assert_eq!(subject, "[Vigie] lyon — bin-7 : bac plein à 92 %");
        assert!(
            body.starts_with("DÉBUT bin-7 : bac plein à 92 % — depuis t0\n"),
            "{body}"
        );
        let (subject, body) = changes_mail(
            Lang::En,
            "lyon",
            &[Change::Started(full.clone()), Change::Ended(full)],
            &clock,
        );
        assert_eq!(subject, "[Vigie] lyon — 1 new alert, 1 alert ended");
        assert!(
            body.contains("END bin-7 : bin 92 % full — ended t3900 (lasted 1 h 5 min)"),
            "{body}"
        );
    }

    #[test]
    fn a_webhook_names_the_alert_its_state_and_its_times() {
        let clock = |ms: u64| format!("t{ms}");
        let fire = entry(Why::FireSuspected);
        let body = changes_json(
            Lang::En,
            "gw",
            "lyon",
            &[Change::Ended(fire)],
            &clock,
            &clock,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["tenant"], "lyon");
        assert_eq!(v["alerts"][0]["state"], "ended");
        assert_eq!(v["alerts"][0]["alert"], "fire_suspected");
        assert_eq!(v["alerts"][0]["ended"], "t3900000");
        assert_eq!(v["alerts"][0]["detail"]["why"]["reason"], "fire_suspected");
    }
}
