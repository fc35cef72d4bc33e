//! A device's page: its card, its details and its frames as they arrive.

use super::{Station, View, air_card, bin_card, clock, clock_seconds, code, esc, kind, layout};
use crate::fleet::registry::DeviceKind;
use crate::observe::feed::{Event, Verdict};
use std::fmt::Write;
use vigie_core::condition;

/// The device's details: what the registry says, then what its traffic says.
fn details(v: &View, s: &Station) -> String {
    let mut rows = described(v, s);
    rows.extend(heard(v, s));
    let rows: String = rows
        .iter()
        .map(|(k, x)| format!(r#"<tr><th scope="row">{k}</th><td>{}</td></tr>"#, esc(x)))
        .collect();
    format!(
        r#"<section aria-labelledby="about"><h2 id="about">{}</h2><table id="details">{rows}</table></section>"#,
        v.lang.pick("Fiche", "Details")
    )
}

fn dash() -> String {
    "–".to_string()
}

/// What the registry says of the device.
fn described(v: &View, s: &Station) -> Vec<(&'static str, String)> {
    let l = s.listing;
    let seconds = |x: Option<u16>| x.map_or_else(dash, |x| v.lang.duration(u64::from(x)));
    vec![
        (v.lang.pick("Type", "Kind"), kind(v, l.kind).to_string()),
        (
            v.lang.pick("Lieu", "Site"),
            l.site.clone().unwrap_or_else(dash),
        ),
        (
            v.lang.pick("Zone", "Zone"),
            l.zone.clone().unwrap_or_else(dash),
        ),
        (
            v.lang.pick("Coordonnées", "Coordinates"),
            match (l.latitude, l.longitude) {
                (Some(lat), Some(lon)) => format!("{lat:.5}, {lon:.5}"),
                _ => dash(),
            },
        ),
        (
            v.lang.pick("Intervalle de mesure", "Sampling interval"),
            seconds(l.sample_interval_s),
        ),
        (
            v.lang.pick("Battement de cœur", "Heartbeat"),
            seconds(l.heartbeat_s),
        ),
        (
            v.lang.pick("Rapports", "Reports"),
            match l.report_interval_s {
                Some(r) => format!(
                    "{} {}",
                    v.lang.pick(
                        "modem éteint entre deux, toutes les",
                        "modem off between them, every"
                    ),
                    v.lang.duration(u64::from(r))
                ),
                None => v
                    .lang
                    .pick("connecté en permanence", "always connected")
                    .into(),
            },
        ),
        (
            v.lang.pick("Silence toléré", "Allowed silence"),
            v.lang.duration(condition::due_s(l)),
        ),
    ]
}

/// What its traffic says of it.
fn heard(v: &View, s: &Station) -> Vec<(&'static str, String)> {
    let d = s.state;
    let mut rows = vec![
        (
            v.lang.pick("Dernière trame", "Last frame"),
            d.and_then(|d| d.last_frame_ms)
                .map_or_else(dash, |ms| clock(ms, v.now_ms)),
        ),
        (
            v.lang.pick("Batterie", "Battery"),
            d.and_then(|d| d.battery_mv).map_or_else(dash, |mv| {
                format!("{} V", v.lang.number(mv as f64 / 1000.0, 2))
            }),
        ),
        (
            v.lang.pick("Autonomie estimée", "Estimated battery life"),
            d.and_then(|d| d.history.latest.energy)
                .map_or_else(dash, |ledger| battery_life(v, s, &ledger)),
        ),
        (
            v.lang.pick("Micrologiciel", "Firmware"),
            d.and_then(|d| d.history.latest.firmware.clone())
                .unwrap_or_else(dash),
        ),
        (
            v.lang.pick("Trames enregistrées", "Frames stored"),
            d.map_or(0, |d| d.frames).to_string(),
        ),
        (
            v.lang.pick("Trames manquantes", "Missing frames"),
            d.map_or(0, |d| d.missing_frames).to_string(),
        ),
    ];
    for (reason, n) in d.iter().flat_map(|d| &d.rejected) {
        rows.push((v.lang.pick("Refusées", "Rejected"), format!("{n} {reason}")));
    }
    rows
}

/// The device's latest energy ledger as an average current and the life of a 19 Ah cell
/// at that rate (the currents of docs/ENERGY.md).
fn battery_life(v: &View, s: &Station, ledger: &condition::energy::Ledger) -> String {
    use condition::energy::{CELL_MAH, currents, lifetime_days};
    let kind = match s.listing.kind {
        DeviceKind::AirQuality => protocol::Kind::AirQuality,
        DeviceKind::WasteBin => protocol::Kind::WasteBin,
    };
    let Some(ua) = ledger.average_ua(&currents(kind)) else {
        return dash();
    };
    let days = lifetime_days(CELL_MAH, ua);
    let life = if days >= 730.0 {
        format!(
            "{} {}",
            v.lang.number(days / 365.0, 1),
            v.lang.pick("ans", "years")
        )
    } else {
        format!(
            "{} {}",
            v.lang.number(days, 0),
            v.lang.pick("jours", "days")
        )
    };
    format!("{life} ({} mA)", v.lang.number(ua / 1000.0, 2))
}

/// `/commune/<tenant>/<device>`: one device, and its frames as they arrive (the page
/// reloads itself every 5 seconds); `None` for an unknown device.
pub fn device(v: &View, tenant: &str, device: &str, events: &[Event]) -> Option<String> {
    let stations = v.communes.get(tenant)?;
    let (rank, s) = stations
        .iter()
        .enumerate()
        .find(|(_, s)| s.listing.device == device)?;
    let card = match s.listing.kind {
        DeviceKind::AirQuality => air_card(v, s, rank + 1),
        DeviceKind::WasteBin => bin_card(v, s, rank + 1),
    };
    let rows = frame_rows(v, events);
    let body = format!(
        r#"<ul class="cards">{card}</ul>{}<section aria-labelledby="live"><h2 id="live">{}</h2><p class="muted">{}</p><div class="scroll"><table id="frames"><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>{rows}</tbody></table></div></section>"#,
        details(v, s),
        v.lang.pick("Trames reçues", "Frames received"),
        v.lang.pick(
            "Les plus récentes en haut ; la page se met à jour toutes les 5 secondes.",
            "Newest first; the page updates itself every 5 seconds."
        ),
        v.lang.pick("Heure", "Time"),
        v.lang.pick("Compteur", "Counter"),
        v.lang.pick("Verdict", "Verdict"),
    );
    Some(layout(
        v,
        &format!("{tenant} / {device}"),
        &format!("/commune/{tenant}/{device}"),
        5,
        &body,
    ))
}

/// What became of a frame, in words.
fn verdict_words(v: &View, e: &Event) -> String {
    match e.verdict {
        Verdict::Stored => {
            let n = e.readings.unwrap_or(0);
            let unit = match n {
                1 => v.lang.pick("mesure", "reading"),
                _ => v.lang.pick("mesures", "readings"),
            };
            format!("{} ({n} {unit})", v.lang.pick("enregistrée", "stored"))
        }
        Verdict::Duplicate => v
            .lang
            .pick("doublon (déjà reçue)", "duplicate (already stored)")
            .into(),
        Verdict::Rejected => {
            let reason = e.reason.unwrap_or("?");
            format!(
                "{} : {reason} ({})",
                v.lang.pick("refusée", "rejected"),
                v.lang.hint(reason)
            )
        }
        Verdict::Held => {
            let reason = e.reason.unwrap_or("?");
            format!(
                "{} : {reason} ({})",
                v.lang.pick(
                    "gardée par l'appareil, non acquittée",
                    "kept by the device, not acknowledged"
                ),
                v.lang.hint(reason)
            )
        }
        Verdict::Online => v.lang.pick("en ligne", "online").into(),
        Verdict::Offline => v.lang.pick("hors ligne", "offline").into(),
    }
}

/// The live frames, newest first.
fn frame_rows(v: &View, events: &[Event]) -> String {
    let mut rows = String::new();
    for e in events.iter().rev() {
        let verdict = verdict_words(v, e);
        let _ = write!(
            rows,
            r#"<tr data-verdict="{}"><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            code(e.verdict),
            clock_seconds(e.at_ms),
            e.counter.map_or_else(|| "–".into(), |c| c.to_string()),
            esc(&verdict)
        );
    }
    rows
}
