//! The last 24 hours of one device as a small SVG line chart, drawn on the server (no
//! script, no external library): one line per series, one point per hour with data.

use super::esc;
use vigie_core::condition::glance::{HOURS, Hour, Mean};

const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 64.0;
const PAD: f64 = 4.0;
/// Room above the plot for the scale's label.
const TOP: f64 = 14.0;

/// One line of a chart.
#[derive(Debug)]
pub struct Series {
    /// Its name in the legend.
    pub label: &'static str,
    /// Its colour (dark enough on white).
    pub colour: &'static str,
    /// The hour's value.
    pub value: fn(&Hour) -> Mean,
}

/// The chart of `hours` up to `now_s`; `floor` is the smallest top of the scale (so a
/// flat low line does not look high); `summary` is read out by screen readers.
pub fn chart(
    hours: &[&Hour],
    now_s: u64,
    series: &[Series],
    floor: f64,
    unit: &str,
    summary: &str,
) -> String {
    let now_h = now_s / 3600;
    let first = (now_h + 1).saturating_sub(HOURS);
    let points = |s: &Series| -> Vec<(u64, f64)> {
        hours
            .iter()
            .filter(|h| h.hour >= first && h.hour <= now_h)
            .filter_map(|h| (s.value)(h).value().map(|v| (h.hour - first, v)))
            .collect()
    };
    let all: Vec<Vec<(u64, f64)>> = series.iter().map(points).collect();
    let top = all
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(floor, f64::max)
        .max(1.0);
    let x = |i: u64| PAD + i as f64 * (WIDTH - 2.0 * PAD) / (HOURS - 1) as f64;
    let y = |v: f64| HEIGHT - PAD - v / top * (HEIGHT - PAD - TOP);
    let mut svg = format!(
        r##"<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" aria-label="{}"><title>{}</title><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#f7f7f7"/>"##,
        esc(summary),
        esc(summary)
    );
    svg += &lines(series, &all, x, y);
    svg += &format!(
        r##"<line x1="{PAD}" y1="{TOP}" x2="{:.0}" y2="{TOP}" stroke="#ccc" stroke-dasharray="2 2"/><text x="{:.0}" y="10" font-size="9" text-anchor="end" fill="#333">{} {}</text></svg>"##,
        WIDTH - PAD,
        WIDTH - PAD,
        (top * 10.0).round() / 10.0,
        esc(unit)
    );
    let legend = legend(series);
    format!(
        r#"<figure class="plot">{svg}<figcaption>{} · 24 h</figcaption></figure>"#,
        legend.join(" ")
    )
}

/// Each series as a line, or a dot when it has one point.
fn lines(
    series: &[Series],
    all: &[Vec<(u64, f64)>],
    x: impl Fn(u64) -> f64,
    y: impl Fn(f64) -> f64,
) -> String {
    let mut out = String::new();
    for (s, pts) in series.iter().zip(all) {
        if pts.len() == 1 {
            let (i, v) = pts[0];
            out += &format!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}"/>"#,
                x(i),
                y(v),
                s.colour
            );
        } else if !pts.is_empty() {
            let line: Vec<String> = pts
                .iter()
                .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
                .collect();
            out += &format!(
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                s.colour,
                line.join(" ")
            );
        }
    }
    out
}

/// The legend's keys.
fn legend(series: &[Series]) -> Vec<String> {
    series
        .iter()
        .map(|s| {
            format!(
                r#"<span class="key" style="border-color:{}">{}</span>"#,
                s.colour, s.label
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_series_within_the_last_day() {
        let hour = |h: u64, v: f64| Hour {
            hour: h,
            pm25: Mean { sum: v, n: 1 },
            ..Hour::default()
        };
        let hours = [hour(10, 5.0), hour(30, 10.0), hour(40, 20.0)];
        let refs: Vec<&Hour> = hours.iter().collect();
        let pm25 = Series {
            label: "PM2.5",
            colour: "#1f4e9c",
            value: |h| h.pm25,
        };
        let pm10 = Series {
            label: "PM10",
            colour: "#8a3b00",
            value: |h| h.pm10,
        };
        let svg = chart(&refs, 40 * 3600 + 5, &[pm25, pm10], 25.0, "µg/m³", "PM <a>");
        // Hour 10 is more than a day old; hours 30 and 40 make one line; PM10 none.
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("aria-label=\"PM &lt;a&gt;\""));
        assert!(svg.contains(">25 µg/m³<"), "{svg}");
        // The newest hour at the right edge; 20 of a 25 scale.
        assert!(svg.contains(" 236.0,23.2\""), "{svg}");
    }
}
