//! The map of a commune's stations and bins (issue 32, item 3): each device with
//! coordinates a dot coloured by its condition, on a Web Mercator plane fitted to them,
//! drawn as inline SVG, so the page asks nothing of anyone. With `http.map_tiles` (a tile
//! server the site runs), its tiles are drawn beneath, in the same projection.

use super::{Station, View, esc, name};
use std::fmt::Write;
use vigie_core::condition::Light;

/// The map's size, px.
const W: f64 = 640.0;
const H: f64 = 360.0;
/// Room left around the outermost dots, px.
const PAD: f64 = 24.0;
/// Closest zoom (one device alone).
const MAX_ZOOM: u8 = 17;
const TILE: f64 = 256.0;

/// Web Mercator pixel coordinates at zoom 0 (a 256 px world).
fn project(lat: f64, lon: f64) -> (f64, f64) {
    let lat = lat.clamp(-85.0, 85.0).to_radians();
    let x = (lon + 180.0) / 360.0 * TILE;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * TILE;
    (x, y)
}

/// The zoom that fits `(min, max)` world pixels into the map, and the world pixel at its
/// top-left corner.
fn fit(min: (f64, f64), max: (f64, f64)) -> (u8, (f64, f64)) {
    let zoom = (0..=MAX_ZOOM)
        .rev()
        .find(|z| {
            let k = f64::from(1u32 << z);
            (max.0 - min.0) * k <= W - 2.0 * PAD && (max.1 - min.1) * k <= H - 2.0 * PAD
        })
        .unwrap_or(0);
    let k = f64::from(1u32 << zoom);
    let centre = ((min.0 + max.0) / 2.0 * k, (min.1 + max.1) / 2.0 * k);
    (zoom, (centre.0 - W / 2.0, centre.1 - H / 2.0))
}

/// `<figure>` with the map of `stations`, or nothing when none has coordinates.
pub fn map(v: &View, tenant: &str, stations: &[Station]) -> String {
    // Each device's rank among those of its kind, as the cards number them.
    let rank = |i: usize| {
        stations[..=i]
            .iter()
            .filter(|o| o.listing.kind == stations[i].listing.kind)
            .count()
    };
    let placed: Vec<(usize, &Station, (f64, f64))> = stations
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Some((
                rank(i),
                s,
                project(s.listing.latitude?, s.listing.longitude?),
            ))
        })
        .collect();
    if placed.is_empty() {
        return String::new();
    }
    let min = placed.iter().fold((f64::MAX, f64::MAX), |m, (_, _, p)| {
        (m.0.min(p.0), m.1.min(p.1))
    });
    let max = placed.iter().fold((f64::MIN, f64::MIN), |m, (_, _, p)| {
        (m.0.max(p.0), m.1.max(p.1))
    });
    let (zoom, origin) = fit(min, max);
    let k = f64::from(1u32 << zoom);
    let mut svg = tiles(v.map_tiles(), zoom, origin);
    for (rank, s, p) in &placed {
        let at = (p.0 * k - origin.0, p.1 * k - origin.1);
        svg += &dot(v, tenant, s, *rank, at);
    }
    svg += &scale_bar(zoom, min, max);
    let unplaced = stations.len() - placed.len();
    format!(
        r#"<figure class="map"><svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{label}">{svg}</svg><figcaption>{legend}{unplaced}</figcaption></figure>"#,
        label = esc(&format!(
            "{} {tenant}",
            v.lang
                .pick("Carte des appareils de", "Map of the devices of")
        )),
        legend = legend(v, &svg),
        unplaced = if unplaced > 0 {
            format!(
                " · {unplaced} {}",
                v.lang.pick(
                    "sans coordonnées, hors carte",
                    "without coordinates, not shown"
                )
            )
        } else {
            String::new()
        },
    )
}

/// A bar of a round length (100 m … 20 km) in the bottom-left corner.
fn scale_bar(zoom: u8, min: (f64, f64), max: (f64, f64)) -> String {
    // Metres per pixel at zoom 0 on the equator, scaled to the map's latitude.
    let y = (min.1 + max.1) / 2.0 / TILE;
    let lat = (std::f64::consts::PI * (1.0 - 2.0 * y)).sinh().atan();
    let m_per_px = 156_543.034 * lat.cos() / f64::from(1u32 << zoom);
    let metres = [100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4]
        .into_iter()
        .rev()
        .find(|m| m / m_per_px <= 120.0)
        .unwrap_or(100.0);
    let px = metres / m_per_px;
    let text = if metres >= 1e3 {
        format!("{} km", metres / 1e3)
    } else {
        format!("{metres} m")
    };
    format!(
        r##"<g class="scale"><rect x="10" y="{y0}" width="{px:.1}" height="4" fill="#333"/><text x="10" y="{y1}" font-size="12">{text}</text></g>"##,
        y0 = H - 14.0,
        y1 = H - 18.0,
    )
}

/// One device's dot, with its name and condition, and (not in the public view) a link to
/// its page.
fn dot(v: &View, tenant: &str, s: &Station, rank: usize, (x, y): (f64, f64)) -> String {
    let light = s.condition.light;
    // A commune that does not publish its devices' condition: a working device is a
    // plain dot, one a citizen can see is wrong (a full bin, a fire) is coloured.
    let (class, label) = if !v.shows(tenant, "condition") && light == Light::Green {
        ("plain".to_string(), name(v, s, rank))
    } else {
        let label = format!("{} — {}", name(v, s, rank), v.lang.light(light));
        (super::code(light), label)
    };
    let dot = format!(
        r#"<circle cx="{x:.1}" cy="{y:.1}" r="7" class="dot {class}" data-device-rank="{rank}"><title>{}</title></circle>"#,
        esc(&label)
    );
    if v.public {
        return dot;
    }
    format!(
        r#"<a href="/commune/{}/{}{}">{dot}</a>"#,
        esc(tenant),
        esc(&s.listing.device),
        super::query(v.lang)
    )
}

/// The colours drawn on the map, in words.
fn legend(v: &View, svg: &str) -> String {
    [Light::Green, Light::Amber, Light::Red]
        .iter()
        .filter(|l| svg.contains(&format!("dot {}", super::code(l))))
        .map(|l| {
            format!(
                r#"<span class="key {}">{}</span>"#,
                super::code(l),
                v.lang.light(*l)
            )
        })
        .collect()
}

/// The tiles under the map, when a tile server is configured; a plain ground otherwise.
fn tiles(url: Option<&str>, zoom: u8, origin: (f64, f64)) -> String {
    let ground = format!(r##"<rect width="{W}" height="{H}" fill="#eef2ee"/>"##);
    let Some(url) = url else {
        return ground;
    };
    let n = 1i64 << zoom;
    let first = (
        (origin.0 / TILE).floor() as i64,
        (origin.1 / TILE).floor() as i64,
    );
    let last = (
        ((origin.0 + W) / TILE).floor() as i64,
        ((origin.1 + H) / TILE).floor() as i64,
    );
    let mut out = ground;
    for ty in first.1.max(0)..=last.1.min(n - 1) {
        for tx in first.0..=last.0 {
            let href = url
                .replace("{z}", &zoom.to_string())
                .replace("{x}", &tx.rem_euclid(n).to_string())
                .replace("{y}", &ty.to_string());
            let _ = write!(
                out,
                r#"<image href="{}" x="{:.1}" y="{:.1}" width="256" height="256"/>"#,
                esc(&href),
                tx as f64 * TILE - origin.0,
                ty as f64 * TILE - origin.1
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_puts_lyon_where_web_mercator_tiles_have_it() {
        // Lyon (45.76, 4.84) is in tile x=8412, y=5844 at zoom 14 (OpenStreetMap's
        // numbering, the formula of its wiki, computed in Python).
        let (x, y) = project(45.76, 4.84);
        let k = f64::from(1u32 << 14) / TILE;
        assert_eq!(((x * k) as i64, (y * k) as i64), (8412, 5844));
    }

    #[test]
    fn a_tile_server_gives_the_tiles_under_the_map_in_the_same_projection() {
        let (x, y) = project(45.76, 4.84);
        let origin = (
            x * 16_384.0 / TILE * TILE - W / 2.0,
            y * 16_384.0 / TILE * TILE - H / 2.0,
        );
        let svg = tiles(Some("https://t.example/{z}/{x}/{y}.png"), 14, origin);
        assert!(
            svg.contains(r#"href="https://t.example/14/8412/5844.png""#),
            "{svg}"
        );
        let span =
            |from: f64, size: f64| ((from + size) / TILE).floor() - (from / TILE).floor() + 1.0;
        let covering = span(origin.0, W) * span(origin.1, H);
        assert_eq!(
            svg.matches("<image").count() as f64,
            covering,
            "the tiles the map overlaps"
        );
        assert!(!tiles(None, 14, origin).contains("<image"));
    }

    #[test]
    fn the_zoom_fits_the_devices_inside_the_map() {
        let (a, b) = (project(45.74, 4.81), project(45.78, 4.86));
        let min = (a.0.min(b.0), a.1.min(b.1));
        let max = (a.0.max(b.0), a.1.max(b.1));
        let (zoom, origin) = fit(min, max);
        let k = f64::from(1u32 << zoom);
        for p in [a, b] {
            let (x, y) = (p.0 * k - origin.0, p.1 * k - origin.1);
            assert!((PAD - 0.1..=W - PAD + 0.1).contains(&x), "{x}");
            assert!((PAD - 0.1..=H - PAD + 0.1).contains(&y), "{y}");
        }
        assert_eq!(
            zoom, 12,
            "a town of 4 × 4.5 km fills the map, not the world"
        );
    }
}
