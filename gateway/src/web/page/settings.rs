//! What the pages take from the configuration: each commune's name and public parts
//! (`[communes.<tenant>]`), the tile server (`http.map_tiles`).

use super::{View, for_citizens};
use std::collections::BTreeMap;
use vigie_core::condition::{Light, Why};

/// What the pages take from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `http.map_tiles`.
    pub map_tiles: Option<String>,
    /// `[communes.<tenant>]`.
    pub communes: BTreeMap<String, crate::config::CommuneConfig>,
    /// `round.threshold_percent`: a bin to empty from this fill level (0: the default).
    pub bin_threshold: u8,
}

impl View<'_> {
    /// A commune's name: its configured name, else its id.
    pub fn name_of<'t>(&'t self, tenant: &'t str) -> &'t str {
        self.settings
            .and_then(|s| s.communes.get(tenant)?.name.as_deref())
            .unwrap_or(tenant)
    }

    /// Whether the page shows `part` of `tenant` (everything but in the public view).
    pub fn shows(&self, tenant: &str, part: &str) -> bool {
        if !self.public {
            return true;
        }
        match self.settings.and_then(|s| s.communes.get(tenant)) {
            Some(c) => c.public.iter().any(|p| p == part),
            None => crate::config::PUBLIC_DEFAULT.contains(&part),
        }
    }

    /// The fill level from which a bin is to be emptied, %.
    pub fn bin_threshold(&self) -> u8 {
        self.settings
            .map(|s| s.bin_threshold)
            .filter(|t| *t > 0)
            .unwrap_or(vigie_core::condition::BIN_FULL_PERCENT)
    }

    /// The tile server, if any.
    pub fn map_tiles(&self) -> Option<&str> {
        self.settings.and_then(|s| s.map_tiles.as_deref())
    }

    /// In the public view of a commune that does not publish its devices' condition, each
    /// device keeps only what a citizen sees at the bin (full, tilted, lid open, fire), and
    /// its colour follows from that alone.
    pub fn for_citizens(&mut self) {
        if !self.public {
            return;
        }
        let hidden: Vec<&str> = self
            .communes
            .keys()
            .copied()
            .filter(|t| !self.shows(t, "condition"))
            .collect();
        for tenant in hidden {
            for s in self.communes.get_mut(tenant).into_iter().flatten() {
                s.condition.reasons.retain(for_citizens);
                s.condition.light = s
                    .condition
                    .reasons
                    .iter()
                    .map(Why::light)
                    .max()
                    .unwrap_or(Light::Green);
            }
        }
    }
}
