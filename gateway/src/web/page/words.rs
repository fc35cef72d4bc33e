//! Everything the status page says, in French and in English.

use vigie_core::condition::atmo::Band;
use vigie_core::condition::{Light, Sensor, Why};

/// The page's language: French by default, English on `?lang=en`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Français.
    #[default]
    Fr,
    /// English.
    En,
}

impl Lang {
    /// From the `lang` query parameter.
    pub fn from_query(lang: Option<&str>) -> Self {
        match lang {
            Some("en") => Lang::En,
            _ => Lang::Fr,
        }
    }

    /// The HTML `lang` code.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// The other language: its code and its name in itself.
    pub fn other(self) -> (&'static str, &'static str) {
        match self {
            Lang::Fr => ("en", "English"),
            Lang::En => ("fr", "Français"),
        }
    }

    /// The French or the English text.
    pub fn pick(self, fr: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }

    /// A number with `decimals` decimals, with a decimal comma in French.
    pub fn number(self, v: f64, decimals: usize) -> String {
        let s = format!("{v:.decimals$}");
        match self {
            Lang::Fr => s.replace('.', ","),
            Lang::En => s,
        }
    }

    /// A duration in words at its two largest units: `45 s`, `5 min`, `1 h 10 min`,
    /// `2 j 3 h` / `2 d 3 h` (an interval of 4200 s reads as 1 h 10 min).
    pub fn duration(self, seconds: u64) -> String {
        let day = self.pick("j", "d");
        let units = [(86_400, day), (3_600, "h"), (60, "min"), (1, "s")];
        let mut parts = Vec::new();
        let mut rest = seconds;
        for (size, name) in units {
            let n = rest / size;
            if n > 0 || (parts.is_empty() && size == 1) {
                parts.push(format!("{n} {name}"));
                rest %= size;
            }
            if parts.len() == 2 || (!parts.is_empty() && rest == 0) {
                break;
            }
        }
        parts.join(" ")
    }

    /// A light in words.
    pub fn light(self, light: Light) -> &'static str {
        match light {
            Light::Green => self.pick("en service", "working"),
            Light::Amber => self.pick("à surveiller", "needs attention"),
            Light::Red => self.pick("en panne ou muet", "down or silent"),
        }
    }

    /// An ATMO band in words.
    pub fn band(self, band: Band) -> &'static str {
        match band {
            Band::Good => self.pick("Bon", "Good"),
            Band::Fair => self.pick("Moyen", "Fair"),
            Band::Degraded => self.pick("Dégradé", "Degraded"),
            Band::Poor => self.pick("Mauvais", "Poor"),
            Band::VeryPoor => self.pick("Très mauvais", "Very poor"),
            Band::ExtremelyPoor => self.pick("Extrêmement mauvais", "Extremely poor"),
        }
    }

    /// What a technician does about a rejection (its reason code).
    pub fn hint(self, code: &str) -> &'static str {
        match self {
            Lang::En => vigie_core::judge::reason::Reason::hint(code),
            Lang::Fr => match code {
                "topic" => {
                    "pas un sujet de remontée d'appareil : vérifier l'identifiant et la commune du blob"
                }
                "unknown_device" => "absent du registre : l'enregistrer avec `devices add`",
                "revoked" => "appareil révoqué : lui donner une nouvelle clé avec `devices rotate`",
                "bad_status" => {
                    "message d'état autre que `online` ou `offline` : pas un micrologiciel Vigie"
                }
                "authentication" => {
                    "l'authentification échoue : flasher le blob actuel de l'appareil (mauvaise clé ou époque) ou vérifier qu'il publie sur son propre sujet"
                }
                "malformed" => {
                    "trame illisible : micrologiciel et passerelle ne parlent pas le même format"
                }
                "kind_mismatch" => {
                    "type de mesure non enregistré pour cet appareil : vérifier --kind"
                }
                "counter_reused" => {
                    "compteur déjà utilisé avec un autre contenu : l'appareil a perdu sa mémoire de compteur"
                }
                "future_timestamp" => {
                    "mesures datées du futur, gardées par l'appareil : son horloge avance, ou celle de la passerelle retarde"
                }
                "stale_timestamp" => {
                    "mesure plus ancienne que validation.max_age : horloge fausse ou file très ancienne"
                }
                _ => "",
            },
        }
    }

    /// A faulty sensor in words.
    fn fault(self, sensor: Sensor) -> &'static str {
        match sensor {
            Sensor::Pm => self.pick("capteur de particules en panne", "PM sensor fault"),
            Sensor::Climate => self.pick("capteur climatique en panne", "climate sensor fault"),
            Sensor::Distance => self.pick("capteur de distance en panne", "distance sensor fault"),
            Sensor::Storage => self.pick("mémoire en panne", "storage fault"),
            Sensor::Other => self.pick("capteur en panne", "sensor fault"),
        }
    }

    /// Why frames were held, in words.
    fn held(self, code: &str) -> &'static str {
        match code {
            "future_timestamp" => self.pick(
                "mesures datées du futur gardées par l'appareil (horloge en avance, ou celle de la passerelle en retard), dernière à",
                "readings dated in the future kept by the device (its clock ahead, or the gateway's behind), last at"
            ),
            "stale_timestamp" => self.pick(
                "mesures trop anciennes gardées par l'appareil tant que l'horloge de la passerelle n'est pas synchronisée, dernière à",
                "readings too old kept by the device while the gateway's clock is not synchronised, last at"
            ),
            _ => self.pick(
                "trames refusées gardées par l'appareil : la quarantaine n'a plus de place pour les siennes, dernière à",
                "refused frames kept by the device: the quarantine has no room left for its own, last at"
            ),
        }
    }

    /// A reason in words; `clock` puts a time into words.
    pub fn why(self, why: &Why, clock: impl Fn(u64) -> String) -> String {
        match why {
            Why::NeverHeard => self.pick("jamais entendu", "never heard from").into(),
            Why::Revoked => self.pick("clé révoquée", "key revoked").into(),
            Why::Silent { since_ms, .. } => {
                format!(
                    "{} {}",
                    self.pick("muet depuis", "silent since"),
                    clock(*since_ms)
                )
            }
            Why::Offline { since_ms } => format!(
                "{} {}",
                self.pick("hors ligne depuis", "offline since"),
                clock(*since_ms)
            ),
            Why::FireSuspected => self.pick("suspicion d'incendie", "fire suspected").into(),
            Why::Battery { mv } => format!(
                "{} {} V",
                self.pick("batterie", "battery"),
                self.number(*mv as f64 / 1000.0, 1)
            ),
            Why::SensorFault { sensor } => self.fault(*sensor).into(),
            Why::BinFull { percent } => match self {
                Lang::Fr => format!("bac plein à {percent} %"),
                Lang::En => format!("bin {percent} % full"),
            },
            Why::Tilted => self.pick("bac renversé", "bin tilted").into(),
            Why::LidOpen => self.pick("couvercle ouvert", "lid open").into(),
            Why::Refused { code, since_ms } => format!(
                "{} {} ({code} : {})",
                self.pick("trames refusées depuis", "frames refused since"),
                clock(*since_ms),
                self.hint(code),
            ),
            Why::Held { code, since_ms } => format!(
                "{} {} ({})",
                self.held(code),
                clock(*since_ms),
                self.pick("non acquittées, renvoyées", "not acknowledged, sent again"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_words_not_seconds() {
        let en = Lang::En;
        assert_eq!(en.duration(4_200), "1 h 10 min");
        assert_eq!(en.duration(300), "5 min");
        assert_eq!(en.duration(3_600), "1 h");
        assert_eq!(en.duration(45), "45 s");
        assert_eq!(en.duration(0), "0 s");
        assert_eq!(en.duration(90), "1 min 30 s");
        assert_eq!(en.duration(2 * 86_400 + 3 * 3_600 + 59), "2 d 3 h");
        assert_eq!(Lang::Fr.duration(2 * 86_400), "2 j");
    }
}
