//! The status page, rendered on the server as plain HTML: an overview of the communes at
//! `/`, one page per commune at `/commune/<tenant>`, one per device with its live frames
//! at `/commune/<tenant>/<device>`; French, with an English switch (`?lang=en`). No
//! script, no external resource: readable on a phone and without JavaScript. Each device
//! is green, amber or red with its reasons in words ([`vigie_core::condition`]); each
//! air-quality station shows the ATMO sub-index bands of its PM2.5 and PM10 means over
//! the last 24 hours ([`vigie_core::condition::atmo`]) and its 24-hour chart.
//!
//! The public view (`http.public_listen`, communes in `http.public_tenants`) renders the
//! same commune page without device ids, counters, rejections or gateway health.
//!
//! Rendering is pure: a [`View`] (registry listing, device state, health, time) in, HTML
//! out.

pub mod chart;
mod device;
mod health;
mod map;
pub mod round;
mod settings;
pub mod words;

pub use device::device;
use health::health;

use crate::fleet::registry::DeviceKind;
use crate::observe::devices::{DeviceBook, DeviceState, Listing};
use crate::observe::health::Snapshot;
use chart::{Scale, Series};
pub use settings::Settings;
use std::collections::BTreeMap;
use std::fmt::Write;
use vigie_core::condition::atmo::{self, Band};
use vigie_core::condition::glance::Hour;
use vigie_core::condition::{self, Condition, Light, Why};
pub use words::Lang;

/// One device on a page.
#[derive(Debug)]
pub struct Station<'a> {
    /// From the registry.
    pub listing: &'a Listing,
    /// From its traffic; none before its first frame.
    pub state: Option<&'a DeviceState>,
    /// Its colour and reasons now.
    pub condition: Condition,
}

/// What a page is rendered from.
#[derive(Debug)]
pub struct View<'a> {
    /// Language.
    pub lang: Lang,
    /// Now (Unix ms).
    pub now_ms: u64,
    /// The citizens' view: no ids, counters, rejections or health.
    pub public: bool,
    /// Gateway health (not in the public view).
    pub health: Option<&'a Snapshot>,
    /// The site's settings: each commune's name and public parts, the tile server.
    pub settings: Option<&'a Settings>,
    /// Devices by commune, in registry order.
    pub communes: BTreeMap<&'a str, Vec<Station<'a>>>,
}

impl<'a> View<'a> {
    /// The registered devices of the communes `shown` accepts, with their state.
    pub fn new(
        roster: &'a [Listing],
        book: &'a DeviceBook,
        now_ms: u64,
        shown: impl Fn(&str) -> bool,
    ) -> Self {
        let mut communes: BTreeMap<&str, Vec<Station>> = BTreeMap::new();
        for listing in roster.iter().filter(|l| shown(&l.tenant)) {
            let state = book.get(&listing.tenant, &listing.device);
            communes
                .entry(listing.tenant.as_str())
                .or_default()
                .push(Station {
                    listing,
                    state,
                    condition: condition::assess(listing, state, now_ms),
                });
        }
        Self {
            lang: Lang::Fr,
            now_ms,
            public: false,
            health: None,
            settings: None,
            communes,
        }
    }
}

/// HTML-escapes text.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The JSON name of a unit variant (`green`, `degraded`, `stored`), for classes and
/// `data-` attributes.
fn code(x: impl serde::Serialize) -> String {
    match serde_json::to_value(x) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A time in the gateway's time zone: "14:05" today, "26/11 14:05" before.
pub fn clock(ms: u64, now_ms: u64) -> String {
    use chrono::{Local, TimeZone};
    let at = |ms: u64| Local.timestamp_millis_opt(ms as i64).single();
    match (at(ms), at(now_ms)) {
        (Some(t), Some(now)) if t.date_naive() == now.date_naive() => t.format("%H:%M").to_string(),
        (Some(t), _) => t.format("%d/%m %H:%M").to_string(),
        _ => "?".into(),
    }
}

/// A time of day to the second, in the gateway's time zone (the live frames).
fn clock_seconds(ms: u64) -> String {
    use chrono::{Local, TimeZone};
    Local
        .timestamp_millis_opt(ms as i64)
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%H:%M:%S").to_string())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:64rem;margin:auto;padding:.5rem 1rem;color:#111;background:#fff;line-height:1.4}\
a{color:#0b4f9c}header{display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap}\
.cards{display:flex;flex-wrap:wrap;gap:.75rem;padding:0;list-style:none}\
.card{border:1px solid #bbb;border-radius:.4rem;padding:.5rem .75rem;min-width:15rem;flex:1 1 15rem}\
.card h3{margin:.1rem 0 .4rem;font-size:1.05rem}\
.light{display:inline-block;border-radius:1rem;padding:0 .6rem;font-weight:600}\
.green{background:#d5f5dc;color:#0b3d1c}.amber{background:#ffe6a8;color:#4d3300}.red{background:#ffd4d4;color:#6b0000}\
.band{display:inline-block;border-radius:.3rem;padding:0 .4rem;margin:.1rem 0}\
table{border-collapse:collapse;width:100%;font-size:.92rem}th,td{text-align:left;padding:.25rem .4rem;border-bottom:1px solid #ddd;vertical-align:top}\
.scroll{overflow-x:auto}figure{margin:.3rem 0}figcaption{font-size:.8rem;color:#333}\
.key{border-left:.8rem solid;padding-left:.3rem;margin-right:.5rem}\
meter{width:10rem;height:1rem}.map svg{border:1px solid #ccc}.dot{stroke:#111;stroke-width:1.5}\
circle.plain{fill:#3a6ea5}circle.green{fill:#2e9e4f}circle.amber{fill:#f0a800}circle.red{fill:#d42020}\
.key.green{border-color:#2e9e4f}.key.amber{border-color:#f0a800}.key.red{border-color:#d42020}.muted{color:#444;font-size:.9rem}";

/// A page around `body`, reloading itself every `refresh_s` seconds (0: never).
fn layout(v: &View, title: &str, path: &str, refresh_s: u32, body: &str) -> String {
    let (other, other_name) = v.lang.other();
    let refresh = if refresh_s > 0 {
        format!(r#"<meta http-equiv="refresh" content="{refresh_s}">"#)
    } else {
        String::new()
    };
    format!(
        r#"<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">{refresh}<link rel="icon" href="data:,"><title>{title} · Vigie</title><style>{STYLE}</style></head><body><header><p><a href="/{q}">Vigie</a></p><p><a href="{path}?lang={other}" hreflang="{other}" lang="{other}">{other_name}</a></p></header><main><h1>{title}</h1><p class="muted">{updated} {now} ({zone})</p>{body}</main></body></html>"#,
        lang = v.lang.code(),
        title = esc(title),
        q = query(v.lang),
        path = esc(path),
        updated = v.lang.pick("État à", "As of"),
        now = clock(v.now_ms, v.now_ms),
        zone = zone(v),
    )
}

/// The time zone the page's times are in: "heure locale, UTC+01:00".
fn zone(v: &View) -> String {
    use chrono::{Local, TimeZone};
    let offset = Local
        .timestamp_millis_opt(v.now_ms as i64)
        .single()
        .map_or_else(String::new, |t| t.format("UTC%:z").to_string());
    format!("{}, {offset}", v.lang.pick("heure locale", "local time"))
}

/// The query string that keeps the language on links.
fn query(lang: Lang) -> &'static str {
    match lang {
        Lang::Fr => "",
        Lang::En => "?lang=en",
    }
}

fn light(v: &View, c: &Condition) -> String {
    format!(
        r#"<span class="light {}">{}</span>"#,
        code(c.light),
        v.lang.light(c.light)
    )
}

fn reasons(v: &View, c: &Condition) -> String {
    let words: Vec<String> = c
        .reasons
        .iter()
        .map(|w| esc(&v.lang.why(w, |ms| clock(ms, v.now_ms))))
        .collect();
    format!(r#"<span class="reasons">{}</span>"#, words.join(" · "))
}

/// What the public view says of a device's condition: what a citizen can see at the
/// bin; not its battery, key, silence, faults or refused frames (the operators' page).
fn for_citizens(w: &Why) -> bool {
    matches!(
        w,
        Why::BinFull { .. } | Why::Tilted | Why::LidOpen | Why::FireSuspected
    )
}

/// How a station is named: its site, else its id; in the public view its site or its
/// rank, never its id.
fn name(v: &View, s: &Station, rank: usize) -> String {
    match (&s.listing.site, v.public) {
        (Some(site), _) => site.clone(),
        (None, false) => s.listing.device.clone(),
        (None, true) => match s.listing.kind {
            DeviceKind::AirQuality => format!("{} {rank}", v.lang.pick("Station", "Station")),
            DeviceKind::WasteBin => format!("{} {rank}", v.lang.pick("Bac", "Bin")),
        },
    }
}

fn hours<'s>(s: &'s Station, now_ms: u64) -> Vec<&'s Hour> {
    s.state
        .map(|d| d.history.recent(now_ms / 1000).collect())
        .unwrap_or_default()
}

fn band(v: &View, pollutant: &str, label: &str, mean: Option<f64>, f: fn(f64) -> Band) -> String {
    match mean {
        Some(m) => {
            let b = f(m);
            format!(
                r#"<span class="band" data-pollutant="{pollutant}" data-band="{}" style="background:{};color:{}">{label} : <strong>{}</strong> ({} µg/m³)</span>"#,
                code(b),
                b.colour(),
                b.ink(),
                v.lang.band(b),
                v.lang.number(m, 1)
            )
        }
        None => format!(
            r#"<span class="band" data-pollutant="{pollutant}" data-band="none">{label} : {}</span>"#,
            v.lang.pick("pas de mesure", "no reading")
        ),
    }
}

fn air_card(v: &View, s: &Station, rank: usize) -> String {
    let (pm25, pm10) = s
        .state
        .map(|d| d.history.pm_means(v.now_ms / 1000))
        .unwrap_or((None, None));
    let series = [
        Series {
            label: "PM2.5",
            colour: "#1f4e9c",
            value: |h| h.pm25,
        },
        Series {
            label: "PM10",
            colour: "#8a3b00",
            value: |h| h.pm10,
        },
    ];
    let summary = format!(
        "{} {}",
        v.lang.pick(
            "PM2,5 et PM10 des 24 dernières heures, station",
            "PM2.5 and PM10 over the last 24 hours, station"
        ),
        name(v, s, rank)
    );
    card(
        v,
        s,
        rank,
        &format!(
            "<p>{}<br>{}</p>{}",
            band(v, "pm25", "PM2,5", pm25, atmo::pm25),
            band(v, "pm10", "PM10", pm10, atmo::pm10),
            chart::chart(
                &hours(s, v.now_ms),
                v.now_ms / 1000,
                &series,
                &Scale {
                    floor: 25.0,
                    unit: "µg/m³",
                    // PM2.5 above it is "mauvais" (ATMO, a mean over 25 µg/m³).
                    threshold: Some((
                        25.0,
                        format!("PM2,5 {}", v.lang.band(Band::Poor).to_lowercase()),
                    )),
                },
                &summary
            )
        ),
    )
}

fn bin_card(v: &View, s: &Station, rank: usize) -> String {
    let fill = s.state.and_then(|d| d.history.latest.fill_percent);
    let level = match fill {
        Some(p) => format!(
            r#"<p class="fill" data-fill="{p}"><label>{} <meter min="0" max="100" low="60" high="80" optimum="0" value="{p}">{p} %</meter> {p} %</label></p>"#,
            v.lang.pick("Remplissage", "Fill level")
        ),
        None => format!(
            r#"<p class="fill">{}</p>"#,
            v.lang.pick("Remplissage inconnu", "Fill level unknown")
        ),
    };
    let series = [Series {
        label: "%",
        colour: "#2d5e1e",
        value: |h| h.fill,
    }];
    let summary = format!(
        "{} {}",
        v.lang.pick(
            "Remplissage des 24 dernières heures, bac",
            "Fill level over the last 24 hours, bin"
        ),
        name(v, s, rank)
    );
    card(
        v,
        s,
        rank,
        &(level
            + &chart::chart(
                &hours(s, v.now_ms),
                v.now_ms / 1000,
                &series,
                &Scale {
                    floor: 100.0,
                    unit: "%",
                    threshold: Some((
                        f64::from(v.bin_threshold()),
                        v.lang.pick("à vider", "to empty").to_string(),
                    )),
                },
                &summary,
            )),
    )
}

fn card(v: &View, s: &Station, rank: usize, inner: &str) -> String {
    let id = if v.public {
        String::new()
    } else {
        format!(r#" id="station-{}""#, esc(&s.listing.device))
    };
    let badge = if v.shows(&s.listing.tenant, "condition") {
        light(v, &s.condition)
    } else {
        String::new()
    };
    format!(
        r#"<li class="card"{id} data-light="{}"><h3>{}</h3><p>{badge} {}</p>{inner}</li>"#,
        code(s.condition.light),
        esc(&name(v, s, rank)),
        reasons(v, &s.condition)
    )
}

fn counts(v: &View, stations: &[Station]) -> String {
    let mut out = Vec::new();
    if stations
        .iter()
        .any(|s| !v.shows(&s.listing.tenant, "condition"))
    {
        return String::new();
    }
    for l in [Light::Green, Light::Amber, Light::Red] {
        let n = stations.iter().filter(|s| s.condition.light == l).count();
        if n > 0 {
            out.push(format!(
                r#"<span class="light {}">{n} {}</span>"#,
                code(l),
                v.lang.light(l)
            ));
        }
    }
    out.join(" ")
}

/// `/`: every commune, with its counts and worst ATMO band; gateway health.
pub fn overview(v: &View) -> String {
    let mut rows = String::new();
    for (tenant, stations) in &v.communes {
        let worst = stations
            .iter()
            .filter_map(|s| s.state)
            .filter_map(|d| {
                let (a, b) = d.history.pm_means(v.now_ms / 1000);
                [a.map(atmo::pm25), b.map(atmo::pm10)]
                    .into_iter()
                    .flatten()
                    .max()
            })
            .max();
        let worst = worst.map_or_else(
            || "–".to_string(),
            |b| {
                format!(
                    r#"<span class="band" style="background:{};color:{}">{}</span>"#,
                    b.colour(),
                    b.ink(),
                    v.lang.band(b)
                )
            },
        );
        let _ = write!(
            rows,
            r#"<tr id="commune-{t}"><th scope="row"><a href="/commune/{t}{q}">{name}</a></th><td>{}</td><td>{}</td><td>{worst}</td></tr>"#,
            stations.len(),
            counts(v, stations),
            t = esc(tenant),
            name = esc(v.name_of(tenant)),
            q = query(v.lang),
        );
    }
    let body = format!(
        r#"<section aria-labelledby="communes"><h2 id="communes">{}</h2><div class="scroll"><table><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>{rows}</tbody></table></div></section>{}"#,
        v.lang.pick("Communes", "Communes"),
        v.lang.pick("Commune", "Commune"),
        v.lang.pick("Capteurs", "Sensors"),
        v.lang.pick("État", "Condition"),
        v.lang.pick(
            "Air (pire indice ATMO, 24 h)",
            "Air (worst ATMO band, 24 h)"
        ),
        health(v, None)
    );
    layout(
        v,
        v.lang.pick("État des capteurs", "Sensor status"),
        "/",
        60,
        &body,
    )
}

/// `/commune/<tenant>`: its map, stations, bins and devices (in the public view, what the
/// commune publishes); `None` for an unknown commune.
pub fn commune(v: &View, tenant: &str) -> Option<String> {
    let stations = v.communes.get(tenant)?;
    let mut body = format!("<p>{}</p>", counts(v, stations));
    if v.shows(tenant, "map") {
        body += &map::map(v, tenant, stations);
    }
    if v.shows(tenant, "air_quality") {
        body += &air_section(v, stations);
    }
    if v.shows(tenant, "bin_fill") {
        body += &bin_section(v, tenant, stations);
    }
    if !v.public {
        body += &devices_table(v, tenant, stations);
        body += &health(v, Some(tenant));
    }
    Some(layout(
        v,
        v.name_of(tenant),
        &format!("/commune/{tenant}"),
        60,
        &body,
    ))
}

/// The cards of the devices of `kind`, numbered among them; empty when it has none.
fn cards(v: &View, stations: &[Station], kind: DeviceKind) -> String {
    let card = match kind {
        DeviceKind::AirQuality => air_card,
        DeviceKind::WasteBin => bin_card,
    };
    stations
        .iter()
        .filter(|s| s.listing.kind == kind)
        .enumerate()
        .map(|(i, s)| card(v, s, i + 1))
        .collect()
}

/// The stations' cards, if the commune has any.
fn air_section(v: &View, stations: &[Station]) -> String {
    let cards = cards(v, stations, DeviceKind::AirQuality);
    if cards.is_empty() {
        return String::new();
    }
    format!(
        r#"<section aria-labelledby="air"><h2 id="air">{}</h2><p class="muted">{}</p><ul class="cards">{cards}</ul></section>"#,
        v.lang.pick("Qualité de l'air", "Air quality"),
        v.lang.pick(
            "Sous-indices ATMO (arrêté du 10 juillet 2020) des moyennes de PM2,5 et PM10 sur les 24 dernières heures.",
            "ATMO sub-indices (French regulation of 10 July 2020) of the PM2.5 and PM10 means over the last 24 hours."
        )
    )
}

/// The bins' cards and the link to the round, if the commune has any.
fn bin_section(v: &View, tenant: &str, stations: &[Station]) -> String {
    let cards = cards(v, stations, DeviceKind::WasteBin);
    if cards.is_empty() {
        return String::new();
    }
    let round = if v.public {
        String::new()
    } else {
        format!(
            r#"<p><a href="/round/{}{}">{}</a></p>"#,
            esc(tenant),
            query(v.lang),
            v.lang.pick("Tournée de collecte", "Collection round")
        )
    };
    format!(
        r#"<section aria-labelledby="bins"><h2 id="bins">{}</h2>{round}<ul class="cards">{cards}</ul></section>"#,
        v.lang.pick("Bacs", "Bins")
    )
}

fn devices_table(v: &View, tenant: &str, stations: &[Station]) -> String {
    let mut rows = String::new();
    for s in stations {
        let d = s.state;
        let last = d
            .and_then(|d| d.last_frame_ms)
            .map_or_else(|| "–".into(), |ms| clock(ms, v.now_ms));
        let battery = d.and_then(|d| d.battery_mv).map_or_else(
            || "–".into(),
            |mv| format!("{} V", v.lang.number(mv as f64 / 1000.0, 2)),
        );
        let firmware = d
            .and_then(|d| d.history.latest.firmware.clone())
            .unwrap_or_else(|| "–".into());
        let rejected: u64 = d.map_or(0, |d| d.rejected.values().sum());
        let _ = write!(
            rows,
            r#"<tr id="device-{id}" data-light="{light}"><th scope="row"><a href="/commune/{t}/{id}{q}">{id}</a></th><td>{}</td><td>{} {}</td><td>{last}</td><td>{battery}</td><td>{}</td><td>{}</td><td>{rejected}</td></tr>"#,
            kind(v, s.listing.kind),
            light(v, &s.condition),
            reasons(v, &s.condition),
            esc(&firmware),
            d.map_or(0, |d| d.missing_frames),
            id = esc(&s.listing.device),
            t = esc(tenant),
            q = query(v.lang),
            light = code(s.condition.light),
        );
    }
    format!(
        r#"<section aria-labelledby="devices"><h2 id="devices">{}</h2><div class="scroll"><table><thead><tr><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th><th scope="col">{}</th></tr></thead><tbody>{rows}</tbody></table></div></section>"#,
        v.lang.pick("Appareils", "Devices"),
        v.lang.pick("Appareil", "Device"),
        v.lang.pick("Type", "Kind"),
        v.lang.pick("État", "Condition"),
        v.lang.pick("Dernière trame", "Last frame"),
        v.lang.pick("Batterie", "Battery"),
        v.lang.pick("Micrologiciel", "Firmware"),
        v.lang.pick("Trames manquantes", "Missing frames"),
        v.lang.pick("Trames refusées", "Rejected frames"),
    )
}

fn kind(v: &View, kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::AirQuality => v.lang.pick("qualité de l'air", "air quality"),
        DeviceKind::WasteBin => v.lang.pick("bac", "waste bin"),
    }
}

/// What the registry and the device's traffic say of it.
#[cfg(test)]
mod tests;
