//! `/commune/<tenant>/round`: the commune's collection round (vigie_core::round) as a
//! page for the office, and as CSV, GeoJSON and GPX for the driver's phone.

use super::{Station, View, esc, layout};
use crate::config::RoundConfig;
use crate::fleet::registry::DeviceKind;
use std::fmt::Write;
use vigie_core::round::{self, Bin, Due, Round};

/// The commune's bins on the round's terms: those with coordinates and a fill level; and
/// how many bins lack coordinates (they cannot be placed on a round).
fn bins(stations: &[Station]) -> (Vec<Bin>, usize) {
    let (mut bins, mut unplaced) = (Vec::new(), 0);
    for s in stations
        .iter()
        .filter(|s| s.listing.kind == DeviceKind::WasteBin)
    {
        let history = s.state.map(|d| &d.history);
        let fill = history.and_then(|h| h.latest.fill_percent);
        match (s.listing.latitude, s.listing.longitude, fill) {
            (Some(lat), Some(lon), Some(fill)) => bins.push(Bin {
                id: s.listing.device.clone(),
                at: (lat, lon),
                fill,
                rate: history.and_then(|h| round::fill_rate(&h.hours)),
            }),
            (None, _, _) | (_, None, _) => unplaced += 1,
            _ => {}
        }
    }
    (bins, unplaced)
}

/// The round of `tenant`, and its bins without coordinates; `None` for an unknown commune.
pub fn plan(v: &View, tenant: &str, c: &RoundConfig) -> Option<(Round, usize)> {
    let stations = v.communes.get(tenant)?;
    let (bins, unplaced) = bins(stations);
    let depot = c.depots.get(tenant).map(|d| (d.latitude, d.longitude));
    let round = round::plan(bins, c.threshold_percent, c.horizon_days, depot);
    Some((round, unplaced))
}

/// The table's rows: each stop in order, its fill, when it is due, where it is.
fn rows(v: &View, round: &Round) -> String {
    let mut rows = String::new();
    for (i, s) in round.stops.iter().enumerate() {
        let due = match s.due {
            Due::Now => v.lang.pick("maintenant", "now").to_string(),
            Due::Soon(days) => format!(
                "{} {}",
                v.lang.pick("dans", "in"),
                v.lang.duration((days * 86_400.0) as u64)
            ),
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{}, {}</td></tr>",
            i + 1,
            esc(&s.bin.id),
            s.bin.fill,
            esc(&due),
            v.lang.number(s.bin.at.0, 5),
            v.lang.number(s.bin.at.1, 5),
        );
    }
    rows
}

/// The page: the stops in order, why each is due, the length, the downloads.
pub fn page(v: &View, tenant: &str, c: &RoundConfig) -> Option<String> {
    let (round, unplaced) = plan(v, tenant, c)?;
    let rows = rows(v, &round);
    // Where this page is served, `?format=` giving the driver's files.
    let base = format!("/round/{tenant}");
    let mut body = format!(
        "<p>{} {} % {} {}. {} {} km.</p>",
        v.lang
            .pick("Bacs à vider : remplis à", "Bins to empty: filled to"),
        c.threshold_percent,
        v.lang.pick(
            "ou plus, ou qui le seront d'ici",
            "or more, or expected to be within"
        ),
        v.lang.duration((c.horizon_days * 86_400.0) as u64),
        v.lang
            .pick("Tournée à vol d'oiseau :", "Round as the crow flies:"),
        v.lang.number(round.km, 1),
    );
    let _ = write!(
        body,
        r#"<table><tr><th>#</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>{rows}</table><p><a href="{base}?format=csv">CSV</a> · <a href="{base}?format=geojson">GeoJSON</a> · <a href="{base}?format=gpx">GPX</a></p>"#,
        v.lang.pick("Bac", "Bin"),
        v.lang.pick("Remplissage", "Fill"),
        v.lang.pick("À vider", "Due"),
        v.lang.pick("Position", "Position"),
    );
    if unplaced > 0 {
        let _ = write!(
            body,
            r#"<p class="muted">{unplaced} {}</p>"#,
            v.lang.pick(
                "bac(s) sans coordonnées ne figurent pas sur la tournée (devices edit --latitude --longitude).",
                "bin(s) without coordinates are not on the round (devices edit --latitude --longitude)."
            )
        );
    }
    let title = format!(
        "{} · {}",
        v.name_of(tenant),
        v.lang.pick("tournée", "round")
    );
    Some(layout(v, &title, &base, 0, &body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::devices::{DeviceBook, Listing};
    use crate::web::page::Lang;
    use protocol::{Field, Reading, Values, WasteBin};
    use vigie_core::condition::glance::Glance;

    #[test]
    fn the_round_lists_the_full_bins_from_the_depot_and_names_those_without_coordinates() {
        let now_ms = 1_795_305_600_000;
        let bin = |id: &str, at: Option<(f64, f64)>| {
            Listing::of(&vigie_core::fleet::DeviceEntry {
                latitude: at.map(|a| a.0),
                longitude: at.map(|a| a.1),
                bin_depth_mm: Some(1000),
                ..vigie_core::fleet::DeviceEntry::new(
                    "lyon",
                    id,
                    DeviceKind::WasteBin,
                    String::new(),
                    1,
                )
            })
        };
        let roster = vec![
            bin("far", Some((45.0, 4.02))),
            bin("near", Some((45.0, 4.01))),
            bin("empty", Some((45.0, 4.015))),
            bin("lost", None),
        ];
        let mut book = DeviceBook::default();
        for (id, fill) in [("far", 90), ("near", 85), ("empty", 10), ("lost", 95)] {
            let mut g = Glance::default();
            g.add(&Reading {
                time: (now_ms / 1000) as u32 - 60,
                values: Values::WasteBin(WasteBin {
                    fill_level: Field::Value(fill),
                    ..WasteBin::default()
                }),
            });
            book.stored("lyon", id, Default::default(), &g, now_ms - 1_000);
        }
        let mut v = View::new(&roster, &book, now_ms, |_| true);
        v.lang = Lang::En;
        let mut c = RoundConfig::default();
        c.depots.insert(
            "lyon".into(),
            crate::config::Depot {
                latitude: 45.0,
                longitude: 4.0,
            },
        );
        let (round, unplaced) = plan(&v, "lyon", &c).unwrap_or_default();
        let ids: Vec<&str> = round.stops.iter().map(|s| s.bin.id.as_str()).collect();
        assert_eq!((ids, unplaced), (vec!["near", "far"], 1));
        let html = page(&v, "lyon", &c).unwrap_or_default();
        assert!(
            html.contains("<td>1</td><td>near</td><td>85 %</td><td>now</td>"),
            "{html}"
        );
        assert!(html.contains("1 bin(s) without coordinates"), "{html}");
        assert!(round::gpx(&round, "lyon").contains(r#"<rtept lat="45.000000" lon="4.010000">"#));
    }
}
