//! Ranges and combinations a configuration must keep, each mistake said so that it can
//! be fixed without reading code.

use super::{Config, ConfigError, DatabaseApi, DatabaseConfig, HttpConfig, MqttConfig};

fn bad(message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(message.into()))
}

impl Config {
    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_mqtt(&self.mqtt)?;
        if let Some(db) = &self.database {
            check_database(db)?;
        }
        check_http(&self.http)?;
        self.check_export()?;
        self.check_round()?;
        self.alerts.check()?;
        self.check_communes()?;
        self.check_sizes()?;
        if let Some(group) = &self.group {
            group.validate()?;
            if self.mqtt.host.is_none() {
                return bad(
                    "[group] needs mqtt.host: the gateways of a group share one broker, not each \
                     its embedded one",
                );
            }
        }
        if let Some(directive) = bad_log_directive(&self.log.level) {
            return bad(format!(
                "log.level: {directive:?} is not a level (trace, debug, info, warn, error, off) \
                 nor target=level; a word the filter does not know would turn logging off"
            ));
        }
        Ok(())
    }

    fn check_export(&self) -> Result<(), ConfigError> {
        let public = vigie_core::output::opendata::DEFAULT_PUBLIC;
        for (tenant, fields) in &self.export.public_fields {
            if let Some(f) = fields.iter().find(|f| !public.contains(&f.as_str())) {
                return bad(format!(
                    "export.public_fields.{tenant}: {f:?} is not a field that can be published (one of {})",
                    public.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn check_communes(&self) -> Result<(), ConfigError> {
        for (tenant, c) in &self.communes {
            if protocol::Id::new(tenant).is_err() {
                return bad(format!("communes.{tenant}: not a tenant identifier"));
            }
            if c.name
                .as_ref()
                .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 80)
            {
                return bad(format!("communes.{tenant}.name: 1 to 80 characters"));
            }
            if let Some(p) = c
                .public
                .iter()
                .find(|p| !super::PUBLIC_PARTS.contains(&p.as_str()))
            {
                return bad(format!(
                    "communes.{tenant}.public: {p:?} is not one of {}",
                    super::PUBLIC_PARTS.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn check_round(&self) -> Result<(), ConfigError> {
        let r = &self.round;
        if !(1..=100).contains(&r.threshold_percent) {
            return bad("round.threshold_percent must be 1 to 100");
        }
        if !(0.0..=30.0).contains(&r.horizon_days) {
            return bad("round.horizon_days must be 0 to 30");
        }
        for (tenant, d) in &r.depots {
            if !(-90.0..=90.0).contains(&d.latitude) || !(-180.0..=180.0).contains(&d.longitude) {
                return bad(format!(
                    "round.depots.{tenant}: latitude -90 to 90 and longitude -180 to 180 (WGS84 degrees)"
                ));
            }
        }
        Ok(())
    }

    fn check_sizes(&self) -> Result<(), ConfigError> {
        if self.batch.max_lines == 0 {
            return bad("batch.max_lines must be at least 1");
        }
        if self.batch.min_backoff.is_zero() || self.batch.min_backoff > self.batch.max_backoff {
            return bad("batch.min_backoff must be above 0 and at most batch.max_backoff");
        }
        if self.buffer.segment_mib == 0 || self.buffer.max_mib < 2 * self.buffer.segment_mib {
            return bad(format!(
                "buffer.max_mib ({}) must be at least twice buffer.segment_mib ({}), which must be above 0",
                self.buffer.max_mib, self.buffer.segment_mib
            ));
        }
        if self.quarantine.max_mib == 0 {
            return bad("quarantine.max_mib must be at least 1");
        }
        Ok(())
    }
}

fn check_mqtt(mqtt: &MqttConfig) -> Result<(), ConfigError> {
    if let Some(user) = &mqtt.username
        && mqtt.client_id != user.as_str()
        && mqtt.client_id != MqttConfig::default().client_id
    {
        return bad(format!(
            "mqtt.client_id {:?} differs from mqtt.username {user:?}: the broker lets an \
             account connect with its own username as client id only; remove mqtt.client_id",
            mqtt.client_id
        ));
    }
    if mqtt.host.is_none() && !mqtt.embedded_listen.ip().is_loopback() {
        return bad(format!(
            "mqtt.embedded_listen {}: the embedded broker has no accounts, so it listens on \
             loopback only; for devices on a network set mqtt.host and run Mosquitto with \
             deploy/mosquitto.conf",
            mqtt.embedded_listen
        ));
    }
    if mqtt.client_id.is_empty() || mqtt.client_id.len() > 64 {
        return bad("mqtt.client_id must be 1 to 64 characters and stable across restarts");
    }
    if let Err(e) = protocol::Id::new(&mqtt.group) {
        return bad(format!("mqtt.group {:?}: {e}", mqtt.group));
    }
    let window = protocol::replay::WINDOW / 2;
    if mqtt.receive_maximum == 0 || u32::from(mqtt.receive_maximum) > window {
        return bad(format!(
            "mqtt.receive_maximum must be 1 to {window}: everything in flight must fit the replay window, so that messages redelivered after a crash are recognised as duplicates"
        ));
    }
    if mqtt.session_expiry.is_zero() {
        return bad(
            "mqtt.session_expiry must be above 0, or the broker forgets unacknowledged messages when the gateway restarts",
        );
    }
    if mqtt.password.is_some() && mqtt.username.is_none() {
        return bad("mqtt.password is set but mqtt.username is not");
    }
    Ok(())
}

fn check_database(db: &DatabaseConfig) -> Result<(), ConfigError> {
    // A URL the HTTP client cannot use is a config error, not a failure at the first
    // write (the v2 client would panic on it).
    match reqwest::Url::parse(&db.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => return bad("database.url: an http:// or https:// URL with a host"),
        Err(e) => return bad(format!("database.url: {e}")),
    }
    if db.gzip && db.api == DatabaseApi::V2 {
        return bad(
            "database.gzip: only with api = \"v1\" (InfluxDB 1.x, VictoriaMetrics); the InfluxDB 2.x client sends plain bodies",
        );
    }
    if db.api == DatabaseApi::V2 && (db.org.is_none() || db.token.is_none()) {
        return bad(
            "database.api = \"v2\" needs database.org and database.token (or VIGIE_DATABASE_TOKEN)",
        );
    }
    if db.password.is_some() && db.username.is_none() {
        return bad("database.password is set but database.username is not");
    }
    Ok(())
}

fn check_http(http: &HttpConfig) -> Result<(), ConfigError> {
    if http
        .admin_token
        .as_ref()
        .is_some_and(|t| t.expose().len() < 16)
    {
        return bad("http.admin_token: at least 16 characters (e.g. `openssl rand -hex 16`)");
    }
    if let Some(t) = &http.map_tiles {
        let placeholders = ["{z}", "{x}", "{y}"].iter().all(|p| t.contains(p));
        if !t.starts_with("https://") || !placeholders || http.tile_origin().is_none() {
            return bad(
                "http.map_tiles: an https:// URL with {z}, {x} and {y}, e.g. https://tiles.example.fr/{z}/{x}/{y}.png",
            );
        }
    }
    if http.public_listen.is_some() && http.public_tenants.is_empty() {
        return bad("http.public_listen is set but http.public_tenants names no commune to show");
    }
    if let Some(t) = http
        .public_tenants
        .iter()
        .find(|t| protocol::Id::new(t).is_err())
    {
        return bad(format!(
            "http.public_tenants: {t:?} is not a tenant identifier"
        ));
    }
    Ok(())
}

/// Each comma-separated directive of a log filter is a level or `target=level`; the first
/// that is not, if any.
pub(super) fn bad_log_directive(filter: &str) -> Option<&str> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    for directive in filter.split(',').map(str::trim) {
        let ok = match directive.split_once('=') {
            Some((target, l)) => {
                !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_:-".contains(c))
                    && level(l)
            }
            None => level(directive),
        };
        if !ok {
            return Some(directive);
        }
    }
    None
}
