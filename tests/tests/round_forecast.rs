//! How wrong the collection round's forecast is on the simulated fleet (issue 32, item 2;
//! docs/OPERATIONS.md "Collection round"): 200 simulated bins (the simulator's fill model:
//! each bin fills at its own pace and is emptied every three days), their hourly fill
//! means over the last day (the hours the gateway keeps per device), the forecast the round makes
//! from them (`vigie_core::round`), and what the simulated bins then did over the next
//! two days. Pure: no servers; the figures are printed and recorded in the docs.
#![allow(clippy::unwrap_used)]

use firmware::sampling::fill_level;
use vigie_core::condition::glance::{HOURS, Hour, Mean};
use vigie_core::round::{Bin, Due, due, fill_rate};
use vigie_sim::signals::bin_distance;

const DEPTH_MM: u16 = 1000;
const THRESHOLD: u8 = 80;
const HORIZON_DAYS: f64 = 2.0;
/// The forecast is made at this time (2027-01-15 08:00 UTC).
const NOW: u32 = 1_800_000_000;
/// Samples every 300 s, as `devices add` sets.
const SAMPLE_S: u32 = 300;

fn fill(seed: u64, t: u32) -> u8 {
    fill_level(bin_distance(seed, t, DEPTH_MM), DEPTH_MM).unwrap()
}

/// The hourly means of the [`HOURS`] before [`NOW`].
fn history(seed: u64) -> Vec<Hour> {
    let hours = HOURS as u32;
    (0..hours)
        .map(|h| {
            let start = NOW - (hours - h) * 3600;
            let mut mean = Mean::default();
            for t in (start..start + 3600).step_by(SAMPLE_S as usize) {
                mean.sum += f64::from(fill(seed, t));
                mean.n += 1;
            }
            Hour {
                hour: u64::from(start / 3600),
                fill: mean,
                ..Hour::default()
            }
        })
        .collect()
}

/// What the simulated bin did after [`NOW`]: the days until it reached the threshold,
/// or `Err` with whether it was emptied first, within the horizon.
fn actual(seed: u64) -> Result<f64, bool> {
    let mut last = fill(seed, NOW);
    for t in (NOW..NOW + (HORIZON_DAYS * 86_400.0) as u32).step_by(SAMPLE_S as usize) {
        let f = fill(seed, t);
        if f + 20 < last {
            return Err(true);
        }
        if f >= THRESHOLD {
            return Ok(f64::from(t - NOW) / 86_400.0);
        }
        last = f;
    }
    Err(false)
}

#[test]
fn the_fill_forecast_on_200_simulated_bins() {
    let (mut now, mut soon, mut hit, mut emptied, mut late, mut missed) = (0, 0, 0, 0, 0, 0);
    let mut errors_h = Vec::new();
    for seed in 1..=200u64 {
        let bin = Bin {
            id: format!("bin-{seed}"),
            at: (45.0, 4.0),
            fill: fill(seed, NOW),
            rate: fill_rate(&history(seed)),
        };
        match (due(&bin, THRESHOLD, HORIZON_DAYS), actual(seed)) {
            (Some(Due::Now), _) => now += 1,
            (Some(Due::Soon(days)), Ok(real)) => {
                soon += 1;
                hit += 1;
                errors_h.push((days - real).abs() * 24.0);
            }
            (Some(Due::Soon(_)), Err(true)) => (soon, emptied) = (soon + 1, emptied + 1),
            (Some(Due::Soon(_)), Err(false)) => (soon, late) = (soon + 1, late + 1),
            (None, Ok(real)) => {
                eprintln!("unforeseen: {bin:?}, full after {real:.2} days");
                missed += 1;
            }
            (None, Err(_)) => {}
        }
    }
    errors_h.sort_by(f64::total_cmp);
    let mean = errors_h.iter().sum::<f64>() / errors_h.len().max(1) as f64;
    let p90 = errors_h[(errors_h.len() * 9 / 10).min(errors_h.len() - 1)];
    eprintln!(
        "forecast on 200 simulated bins ({THRESHOLD} %, {HORIZON_DAYS} days): {now} due now, \
         {soon} expected within the horizon, of which {hit} reached {THRESHOLD} % in it \
         (time error mean {mean:.1} h, 90th percentile {p90:.1} h, max {:.1} h), {emptied} \
         emptied by their round first, {late} not full in time; {missed} reached it unforeseen",
        errors_h.last().unwrap_or(&0.0)
    );
    // The simulated bins fill linearly: the least-squares rate over the hours since the
    // last emptying should put the time within a few hours, and miss none that fills.
    assert!(hit >= 20, "enough bins to judge: {hit}");
    assert!(mean <= 3.0 && p90 <= 6.0, "{mean} h, {p90} h");
    assert_eq!(
        late, 0,
        "a bin expected full in time stayed under the threshold"
    );
    assert_eq!(missed, 0, "a bin reached the threshold unforeseen");
}

/// Where simulated bin `seed` stands: scattered over some 4 × 4 km around Lyon's centre
/// (a deterministic spread, the same at every run).
fn place(seed: u64) -> (f64, f64) {
    let h = |salt: u64| {
        let x = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(salt)
            .rotate_left(17);
        (x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 11) as f64 / (1u64 << 53) as f64
    };
    (45.74 + 0.036 * h(1), 4.81 + 0.051 * h(2))
}

/// The length of the minimum spanning tree of `points` (Prim), km.
fn spanning_tree_km(points: &[(f64, f64)]) -> f64 {
    use vigie_core::round::km;
    let mut best: Vec<f64> = points.iter().map(|p| km(points[0], *p)).collect();
    let mut done = vec![false; points.len()];
    done[0] = true;
    let mut total = 0.0;
    for _ in 1..points.len() {
        let next = (0..points.len())
            .filter(|i| !done[*i])
            .min_by(|a, b| best[*a].total_cmp(&best[*b]))
            .unwrap();
        done[next] = true;
        total += best[next];
        for i in 0..points.len() {
            best[i] = best[i].min(km(points[next], points[i]));
        }
    }
    total
}

#[test]
fn the_round_of_200_simulated_bins_is_shorter_than_visiting_them_in_id_order() {
    use vigie_core::round::{km, plan};
    let depot = (45.75, 4.85);
    let bins: Vec<Bin> = (1..=200u64)
        .map(|seed| Bin {
            id: format!("bin-{seed:03}"),
            at: place(seed),
            fill: fill(seed, NOW),
            rate: fill_rate(&history(seed)),
        })
        .collect();
    let round = plan(bins.clone(), THRESHOLD, HORIZON_DAYS, Some(depot));
    // The same bins in id order, from the depot and back.
    let mut due: Vec<&Bin> = bins
        .iter()
        .filter(|b| round.stops.iter().any(|s| s.bin.id == b.id))
        .collect();
    due.sort_by(|a, b| a.id.cmp(&b.id));
    let mut at = depot;
    let mut id_order = 0.0;
    for b in &due {
        id_order += km(at, b.at);
        at = b.at;
    }
    id_order += km(at, depot);
    // The true bound: no round through these stops and the depot is shorter than their
    // minimum spanning tree (a round less one leg is a spanning tree).
    let points: Vec<(f64, f64)> = std::iter::once(depot)
        .chain(due.iter().map(|b| b.at))
        .collect();
    let tree = spanning_tree_km(&points);
    eprintln!(
        "collection round of {} due bins among 200 simulated: {:.1} km planned \
         (nearest neighbour and 2-opt) against {id_order:.1} km in id order ({:.0} %); \
         no round can be under {tree:.1} km (minimum spanning tree): the plan is {:.2} of it",
        round.stops.len(),
        round.km,
        100.0 * round.km / id_order,
        round.km / tree
    );
    assert!(
        round.km >= tree - 1e-9,
        "{} km under the bound {tree} km",
        round.km
    );
    assert!(round.stops.len() >= 100, "{}", round.stops.len());
    assert!(round.km < id_order, "{} km against {id_order} km", round.km);
}
