//! The collection round of a commune (issue 32): the bins to empty now, those expected
//! full within the horizon (each bin's fill rate from its hourly means), and an order to
//! visit them from the depot (nearest neighbour, then 2-opt). Pure: the caller gives the
//! bins, their history and the time; the page and the exports (CSV, GeoJSON, GPX) are
//! made from the result.

use crate::condition::glance::Hour;

/// A bin as the round sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    /// Device id.
    pub id: String,
    /// Where it stands (WGS84 degrees): latitude, longitude.
    pub at: (f64, f64),
    /// Its latest fill level, %.
    pub fill: u8,
    /// Fill points gained per day, when its history tells.
    pub rate: Option<f64>,
}

/// Why a bin is on the round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Due {
    /// At or above the threshold now.
    Now,
    /// Expected to reach it within the horizon, in this many days.
    Soon(f64),
}

/// One stop of the round, in visiting order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// The bin.
    pub bin: Bin,
    /// Why it is on the round.
    pub due: Due,
}

/// A round: its stops in order, and its length from the depot and back, km.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Round {
    /// In visiting order.
    pub stops: Vec<Stop>,
    /// Depot → stops → depot (or first stop → last without a depot), km as the crow flies.
    pub km: f64,
}

/// A drop of more fill points than this between two hours is an emptying: the rate is
/// estimated on the hours since the last one.
const EMPTIED_DROP: f64 = 20.0;

/// Fill points per day from hourly means (oldest first): the least-squares slope over
/// the hours since the last emptying, or, when it was emptied less than 3 hours ago, over
/// the hours between the emptying before and that one (a bin fills at about the same
/// pace from one round to the next); `None` without 3 such hours, or for a slope that
/// does not rise (a bin nobody fills never becomes due).
pub fn fill_rate(hours: &[Hour]) -> Option<f64> {
    let points: Vec<(f64, f64)> = hours
        .iter()
        .filter_map(|h| Some((h.hour as f64, h.fill.value()?)))
        .collect();
    let mut end = points.len();
    let points = loop {
        let cut = points[..end]
            .windows(2)
            .rposition(|w| w[0].1 - w[1].1 > EMPTIED_DROP)
            .map_or(0, |i| i + 1);
        let segment = fill_segment(&points[cut..end], end < points.len());
        if segment.len() >= 3 {
            break segment;
        }
        if cut == 0 {
            return None;
        }
        end = cut;
    };
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(a, b), p| {
        (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx) * (p.0 - mx))
    });
    let per_hour = sxy / sxx;
    (per_hour > 0.0).then_some(per_hour * 24.0)
}

/// The hours of one filling: without the hour of the emptying that began it (its mean
/// mixes the full bin and the empty one: it is above the next) and, for a filling an
/// emptying ended (`ended`), without the hours it stayed full before it (no rise there:
/// the sensor's dead zone).
fn fill_segment(points: &[(f64, f64)], ended: bool) -> &[(f64, f64)] {
    let mut start = 0;
    while start + 1 < points.len() && points[start + 1].1 < points[start].1 {
        start += 1;
    }
    let mut end = points.len();
    while ended && end > start + 1 && points[end - 1].1 <= points[end - 2].1 {
        end -= 1;
    }
    &points[start..end]
}

/// Whether `bin` is due within `horizon_days` of reaching `threshold` %.
pub fn due(bin: &Bin, threshold: u8, horizon_days: f64) -> Option<Due> {
    if bin.fill >= threshold {
        return Some(Due::Now);
    }
    let days = f64::from(threshold - bin.fill) / bin.rate?;
    (days <= horizon_days).then_some(Due::Soon(days))
}

/// The round of `bins` (those due), from and back to `depot` when given.
pub fn plan(bins: Vec<Bin>, threshold: u8, horizon_days: f64, depot: Option<(f64, f64)>) -> Round {
    let stops: Vec<Stop> = bins
        .into_iter()
        .filter_map(|bin| due(&bin, threshold, horizon_days).map(|due| Stop { bin, due }))
        .collect();
    let points: Vec<(f64, f64)> = stops.iter().map(|s| s.bin.at).collect();
    let order = two_opt(&points, depot, nearest_neighbour(&points, depot));
    let km = length(&points, depot, &order);
    let mut stops: Vec<Option<Stop>> = stops.into_iter().map(Some).collect();
    let stops = order.iter().filter_map(|&i| stops[i].take()).collect();
    Round { stops, km }
}

/// Great-circle distance, km.
pub fn km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371.0 * h.sqrt().min(1.0).asin()
}

/// Visiting order: from the depot (or the first point) always to the nearest unvisited.
fn nearest_neighbour(points: &[(f64, f64)], depot: Option<(f64, f64)>) -> Vec<usize> {
    let mut left: Vec<usize> = (0..points.len()).collect();
    let mut order = Vec::with_capacity(points.len());
    let mut here = depot.or_else(|| points.first().copied());
    while let Some(from) = here {
        let Some(k) = (0..left.len())
            .min_by(|&a, &b| km(from, points[left[a]]).total_cmp(&km(from, points[left[b]])))
        else {
            break;
        };
        let next = left.swap_remove(k);
        order.push(next);
        here = Some(points[next]);
    }
    order
}

/// Length of the round in `order`, km: depot → … → depot, or first → last without one.
fn length(points: &[(f64, f64)], depot: Option<(f64, f64)>, order: &[usize]) -> f64 {
    let path: Vec<(f64, f64)> = depot
        .into_iter()
        .chain(order.iter().map(|&i| points[i]))
        .chain(depot)
        .collect();
    // A fold from +0: an empty f64 sum is −0, shown "-0.0 km".
    path.windows(2).fold(0.0, |total, w| total + km(w[0], w[1]))
}

/// Reverses segments of `order` while that shortens the round (2-opt), at most a few
/// hundred passes.
fn two_opt(points: &[(f64, f64)], depot: Option<(f64, f64)>, mut order: Vec<usize>) -> Vec<usize> {
    let mut best = length(points, depot, &order);
    for _ in 0..200 {
        let mut improved = false;
        for i in 0..order.len() {
            for j in i + 1..order.len() {
                order[i..=j].reverse();
                let candidate = length(points, depot, &order);
                if candidate + 1e-9 < best {
                    best = candidate;
                    improved = true;
                } else {
                    order[i..=j].reverse();
                }
            }
        }
        if !improved {
            break;
        }
    }
    order
}

/// The round as CSV: order, device, latitude, longitude, fill %, due (`now` or days).
pub fn csv(round: &Round) -> String {
    let mut out = String::from("order,device,latitude,longitude,fill_percent,due\n");
    for (i, s) in round.stops.iter().enumerate() {
        out.push_str(&format!(
            "{},{},{:.6},{:.6},{},{}\n",
            i + 1,
            s.bin.id,
            s.bin.at.0,
            s.bin.at.1,
            s.bin.fill,
            due_text(s.due)
        ));
    }
    out
}

/// The round as GeoJSON: a point per stop (in order) and the line through them.
pub fn geojson(round: &Round) -> String {
    let coords: Vec<serde_json::Value> = round
        .stops
        .iter()
        .map(|s| serde_json::json!([s.bin.at.1, s.bin.at.0]))
        .collect();
    let mut features: Vec<serde_json::Value> = round
        .stops
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [s.bin.at.1, s.bin.at.0]},
                "properties": {"order": i + 1, "device": s.bin.id, "fill_percent": s.bin.fill,
                               "due": due_text(s.due)},
            })
        })
        .collect();
    features.push(serde_json::json!({
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": coords},
        "properties": {"km": round.km},
    }));
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

/// The round as GPX 1.1: a route of the stops in order (for a driver's phone).
pub fn gpx(round: &Round, name: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"vigie\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\">\n<rte><name>{}</name>\n",
        esc(name)
    );
    for s in &round.stops {
        out.push_str(&format!(
            "<rtept lat=\"{:.6}\" lon=\"{:.6}\"><name>{}</name><desc>{} %</desc></rtept>\n",
            s.bin.at.0,
            s.bin.at.1,
            esc(&s.bin.id),
            s.bin.fill
        ));
    }
    out.push_str("</rte>\n</gpx>\n");
    out
}

fn due_text(due: Due) -> String {
    match due {
        Due::Now => "now".into(),
        Due::Soon(days) => format!("{days:.1}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::glance::Mean;

    fn hour(hour: u64, fill: f64) -> Hour {
        Hour {
            hour,
            fill: Mean { sum: fill, n: 1 },
            ..Hour::default()
        }
    }

    #[test]
    fn the_rate_counts_from_the_last_emptying_and_never_falls() {
        // 2 points an hour, emptied at hour 5, then 1 point an hour.
        let mut hours: Vec<Hour> = (0..5).map(|h| hour(h, 60.0 + 2.0 * h as f64)).collect();
        hours.extend((5..15).map(|h| hour(h, 5.0 + (h - 5) as f64)));
        let rate = fill_rate(&hours).unwrap_or_default();
        assert!((rate - 24.0).abs() < 1e-9, "{rate}");
        // One hour since the emptying: the pace of the fill before it.
        let before = fill_rate(&hours[..6]).unwrap_or_default();
        assert!((before - 48.0).abs() < 1e-9, "{before}");
        assert_eq!(fill_rate(&hours[..2]), None, "too few hours in all");
        let flat: Vec<Hour> = (0..10).map(|h| hour(h, 40.0)).collect();
        assert_eq!(fill_rate(&flat), None);
        // Full (85 %) for hours, emptied within hour 3 (its mean mixes both), then 1.75
        // points an hour: neither the mixed hour nor the full ones count.
        let fills = [85.0, 85.0, 85.0, 14.5, 2.0, 3.75, 5.5, 7.25];
        let hours: Vec<Hour> = (0..8).map(|h| hour(h, fills[h as usize])).collect();
        let rate = fill_rate(&hours).unwrap_or_default();
        assert!((rate - 42.0).abs() < 1e-9, "{rate}");
        // Just emptied after being full all along: nothing tells its pace yet.
        assert_eq!(fill_rate(&hours[..5]), None);
    }

    #[test]
    fn bins_due_now_and_soon_are_ordered_into_a_short_round() {
        let bin = |id: &str, at: (f64, f64), fill: u8, rate: Option<f64>| Bin {
            id: id.into(),
            at,
            fill,
            rate,
        };
        // Four bins on a line east of the depot, given in a bad order; one not due.
        let bins = vec![
            bin("far", (45.0, 4.04), 90, None),
            bin("near", (45.0, 4.01), 85, None),
            bin("mid", (45.0, 4.02), 70, Some(20.0)), // full in 0.5 days
            bin("late", (45.0, 4.03), 10, Some(5.0)), // in 14 days
            bin("next", (45.0, 4.03), 79, Some(10.0)),
        ];
        let r = plan(bins, 80, 1.0, Some((45.0, 4.0)));
        let ids: Vec<&str> = r.stops.iter().map(|s| s.bin.id.as_str()).collect();
        assert_eq!(ids, ["near", "mid", "next", "far"]);
        assert_eq!(r.stops[1].due, Due::Soon(0.5));
        // Out and back along the line: twice the depot-to-farthest distance.
        let straight = 2.0 * km((45.0, 4.0), (45.0, 4.04));
        assert!((r.km - straight).abs() < 1e-6, "{} {straight}", r.km);
        assert!(csv(&r).starts_with("order,device,latitude,longitude,fill_percent,due\n1,near,"));
        assert!(gpx(&r, "Lyon <centre>").contains("<name>Lyon &lt;centre&gt;</name>"));
        let g: serde_json::Value = serde_json::from_str(&geojson(&r)).unwrap_or_default();
        assert_eq!(g["features"].as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn two_opt_untangles_a_crossing() {
        // A square visited corner to opposite corner: 2-opt makes it the perimeter.
        let p = [(45.0, 4.0), (45.01, 4.01), (45.0, 4.01), (45.01, 4.0)];
        let crossed = vec![0, 1, 2, 3];
        let before = length(&p, None, &crossed);
        let after = length(&p, None, &two_opt(&p, None, crossed));
        assert!(after < before, "{after} {before}");
    }
}
