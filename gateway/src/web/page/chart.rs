//! The last 24 hours of one device as a small SVG line chart, drawn on the server (no
//! script, no external library): one line per series, one point per hour with data, a
//! time axis in the gateway's local time, the scale's top and a labelled threshold.

use super::esc;
use vigie_core::condition::glance::{HOURS, Hour, Mean};

const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 110.0;
const PAD: f64 = 4.0;
/// Room above the plot for the scale's label.
const TOP: f64 = 14.0;
/// Room below the plot for the time axis.
const BOTTOM: f64 = 16.0;

/// The vertical scale: its smallest top (so a flat low line does not look high), its
/// unit, and a threshold drawn and named on it (an ATMO band's edge, a bin's "to empty").
#[derive(Debug)]
pub struct Scale<'a> {
    /// Smallest top of the scale.
    pub floor: f64,
    /// Unit after the numbers.
    pub unit: &'a str,
    /// A value to mark, and what it means.
    pub threshold: Option<(f64, String)>,
}

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

/// The chart of `hours` up to `now_s` on `scale`; `summary` is read out by screen readers.
pub fn chart(
    hours: &[&Hour],
    now_s: u64,
    series: &[Series],
    scale: &Scale,
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
        .fold(scale.floor, f64::max)
        .max(scale.threshold.as_ref().map_or(1.0, |t| t.0));
    let x = |i: u64| PAD + i as f64 * (WIDTH - 2.0 * PAD) / (HOURS - 1) as f64;
    let y = |v: f64| HEIGHT - BOTTOM - v / top * (HEIGHT - BOTTOM - TOP);
    let mut svg = format!(
        r##"<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" aria-label="{}"><title>{}</title><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#f7f7f7"/>"##,
        esc(summary),
        esc(summary)
    );
    svg += &time_axis(first, x);
    if let Some((value, meaning)) = &scale.threshold {
        let at = y(*value);
        svg += &format!(
            r##"<line class="threshold" x1="{PAD}" y1="{at:.1}" x2="{:.0}" y2="{at:.1}" stroke="#b00020" stroke-dasharray="4 3"/><text x="{PAD}" y="{:.1}" font-size="9" fill="#b00020">{} {} : {}</text>"##,
            WIDTH - PAD,
            at - 2.0,
            value,
            esc(scale.unit),
            esc(meaning)
        );
    }
    svg += &lines(series, &all, x, y);
    svg += &format!(
        r##"<line x1="{PAD}" y1="{TOP}" x2="{:.0}" y2="{TOP}" stroke="#ccc" stroke-dasharray="2 2"/><text x="{:.0}" y="10" font-size="9" text-anchor="end" fill="#333">{} {}</text></svg>"##,
        WIDTH - PAD,
        WIDTH - PAD,
        (top * 10.0).round() / 10.0,
        esc(scale.unit)
    );
    let legend = legend(series);
    format!(
        r#"<figure class="plot">{svg}<figcaption>{} · 24 h</figcaption></figure>"#,
        legend.join(" ")
    )
}

/// The hours of the day under the plot, every 6 h, in the gateway's local time, with a
/// tick at each.
fn time_axis(first: u64, x: impl Fn(u64) -> f64) -> String {
    use chrono::{Local, TimeZone, Timelike};
    let mut out = format!(
        r##"<line x1="{PAD}" y1="{b:.0}" x2="{:.0}" y2="{b:.0}" stroke="#999"/>"##,
        WIDTH - PAD,
        b = HEIGHT - BOTTOM
    );
    for i in 0..HOURS {
        let Some(t) = Local.timestamp_opt(((first + i) * 3600) as i64, 0).single() else {
            continue;
        };
        if t.hour() % 6 != 0 {
            continue;
        }
        let at = x(i);
        // A label at an edge is kept inside the chart.
        let anchor = match at {
            a if a < 15.0 => "start",
            a if a > WIDTH - 15.0 => "end",
            _ => "middle",
        };
        out += &format!(
            r##"<line x1="{at:.1}" y1="{:.0}" x2="{at:.1}" y2="{:.0}" stroke="#999"/><text class="hour" x="{at:.1}" y="{:.0}" font-size="9" text-anchor="{anchor}" fill="#333">{} h</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 3.0,
            HEIGHT - 4.0,
            t.hour()
        );
    }
    out
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
        let scale = Scale {
            floor: 25.0,
            unit: "µg/m³",
            threshold: Some((15.0, "mauvais".into())),
        };
        let svg = chart(&refs, 40 * 3600 + 5, &[pm25, pm10], &scale, "PM <a>");
        // Hour 10 is more than a day old; hours 30 and 40 make one line; PM10 none.
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("aria-label=\"PM &lt;a&gt;\""));
        assert!(svg.contains(">25 µg/m³<"), "{svg}");
        // The newest hour at the right edge; 20 of a 25 scale (80 px tall from y = 94).
        assert!(svg.contains(" 296.0,30.0\""), "{svg}");
        assert!(svg.contains(">15 µg/m³ : mauvais<"), "{svg}");
        // Every 6 h of the 24 on the axis (the test runs with the host's time zone).
        assert_eq!(svg.matches("class=\"hour\"").count(), 4, "{svg}");
    }
}
