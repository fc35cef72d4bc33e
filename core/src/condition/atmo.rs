//! The French ATMO index's sub-indices for particulate matter: the band a mean
//! concentration falls in, as the "arrêté du 10 juillet 2020 relatif à l'indice de la
//! qualité de l'air ambiant" (annexe, in force since 1 January 2021) defines them.
//!
//! | band | PM2.5 µg/m³ | PM10 µg/m³ |
//! |---|---|---|
//! | bon | 0–10 | 0–20 |
//! | moyen | 11–20 | 21–40 |
//! | dégradé | 21–25 | 41–50 |
//! | mauvais | 26–50 | 51–100 |
//! | très mauvais | 51–75 | 101–150 |
//! | extrêmement mauvais | > 75 | > 150 |
//!
//! The regulation's bounds are whole µg/m³; a mean is rounded to the nearest whole
//! µg/m³ before it is banded (so 10.4 is "bon" and 10.5 "moyen").

use serde::Serialize;

/// An ATMO band, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    /// Bon.
    Good,
    /// Moyen.
    Fair,
    /// Dégradé.
    Degraded,
    /// Mauvais.
    Poor,
    /// Très mauvais.
    VeryPoor,
    /// Extrêmement mauvais.
    ExtremelyPoor,
}

/// Upper bounds (inclusive, µg/m³) of the first five bands.
const PM25_BOUNDS: [u32; 5] = [10, 20, 25, 50, 75];
const PM10_BOUNDS: [u32; 5] = [20, 40, 50, 100, 150];

const BANDS: [Band; 6] = [
    Band::Good,
    Band::Fair,
    Band::Degraded,
    Band::Poor,
    Band::VeryPoor,
    Band::ExtremelyPoor,
];

fn band(bounds: &[u32; 5], mean: f64) -> Band {
    let v = mean.max(0.0).round() as u32;
    let i = bounds.iter().position(|b| v <= *b).unwrap_or(5);
    BANDS[i]
}

/// The PM2.5 sub-index of a mean concentration.
pub fn pm25(mean: f64) -> Band {
    band(&PM25_BOUNDS, mean)
}

/// The PM10 sub-index of a mean concentration.
pub fn pm10(mean: f64) -> Band {
    band(&PM10_BOUNDS, mean)
}

impl Band {
    /// The index's official colour.
    pub fn colour(self) -> &'static str {
        match self {
            Band::Good => "#50f0e6",
            Band::Fair => "#50ccaa",
            Band::Degraded => "#f0e641",
            Band::Poor => "#ff5050",
            Band::VeryPoor => "#960032",
            Band::ExtremelyPoor => "#872181",
        }
    }

    /// Text colour readable on [`Band::colour`] (contrast ≥ 4.5:1).
    pub fn ink(self) -> &'static str {
        match self {
            Band::Good | Band::Fair | Band::Degraded | Band::Poor => "#000000",
            Band::VeryPoor | Band::ExtremelyPoor => "#ffffff",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_regulation_at_each_edge() {
        let edges25 = [(10.0, Band::Good), (10.5, Band::Fair), (20.0, Band::Fair)];
        for (v, b) in edges25 {
            assert_eq!(pm25(v), b, "PM2.5 {v}");
        }
        assert_eq!(pm25(25.0), Band::Degraded);
        assert_eq!(pm25(26.0), Band::Poor);
        assert_eq!(pm25(75.0), Band::VeryPoor);
        assert_eq!(pm25(76.0), Band::ExtremelyPoor);
        assert_eq!(pm10(20.4), Band::Good);
        assert_eq!(pm10(41.0), Band::Degraded);
        assert_eq!(pm10(100.0), Band::Poor);
        assert_eq!(pm10(150.0), Band::VeryPoor);
        assert_eq!(pm10(1_000.0), Band::ExtremelyPoor);
        assert_eq!(pm10(-1.0), Band::Good);
    }
}
