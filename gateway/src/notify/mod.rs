//! Alerts told by e-mail and webhook (docs/OPERATIONS.md "Alerts"). Every
//! `alerts.interval` the shell gathers the conditions (each device's, each commune's
//! delivery, the gateway's buffer, disk and broker), lets the core's
//! [`vigie_core::alert::Book`] say what started and what ended, writes the messages for
//! each audience into a bounded outbox, sends what is due, and keeps book and outbox in
//! `data_dir/alerts.json`, so a restart neither repeats an alert nor forgets a message.

mod certs;
mod outbox;
pub mod send;
pub mod text;

use crate::config::{AlertsConfig, Config};
use crate::observe::health::{Snapshot, Tenant};
use crate::service::Common;
use crate::web::page::Lang;
use chrono::TimeZone;
use outbox::{Outbox, To};
use std::collections::BTreeMap;
use std::path::PathBuf;
use vigie_core::alert::{self, Alert, Book, Change, Rules, What};

pub use send::SetupError;

/// The alert shell's settings and state.
#[derive(Debug)]
pub struct Notifier {
    cfg: AlertsConfig,
    gateway: String,
    bin_full_percent: u8,
    buffer_max: u64,
    data_dir: PathBuf,
    mailer: Option<send::Mailer>,
    hooks: send::Hooks,
    names: BTreeMap<String, String>,
    certificates: Vec<PathBuf>,
    backlog: alert::Backlog,
    state: State,
    /// What `alerts.json` holds now: written again only when the state differs.
    saved: Vec<u8>,
}

/// What `alerts.json` keeps.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    book: Book,
    outbox: Outbox,
}

const FILE_NAME: &str = "alerts.json";

impl Notifier {
    /// The alerts of `config`, `None` when nobody is to be told; their secrets read now.
    pub fn new(config: &Config) -> Result<Option<Self>, SetupError> {
        let cfg = config.alerts.clone();
        if !cfg.enabled() {
            return Ok(None);
        }
        let mailer = cfg.smtp.as_ref().map(send::Mailer::new).transpose()?;
        let all = std::iter::once(&cfg.operator).chain(cfg.communes.values());
        let hooks = send::Hooks::new(all.flat_map(|r| &r.webhooks))?;
        let data_dir = config.gateway.data_dir.clone();
        let state = match std::fs::read(data_dir.join(FILE_NAME)) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "alerts.json unreadable: alerts start afresh");
                State::default()
            }),
            Err(_) => State::default(),
        };
        Ok(Some(Self {
            bin_full_percent: config.round.threshold_percent,
            cfg,
            gateway: config.mqtt.client_id.clone(),
            buffer_max: config.buffer.max_mib << 20,
            data_dir,
            mailer,
            hooks,
            names: config
                .communes
                .iter()
                .filter_map(|(t, c)| Some((t.clone(), c.name.clone()?)))
                .collect(),
            certificates: certs::watched(config),
            backlog: alert::Backlog::new(config.alerts.backlog_window.as_millis() as u64),
            state,
            saved: Vec::new(),
        }))
    }

    fn lang(&self, tenant: &str) -> Lang {
        let l = self
            .cfg
            .recipients(tenant)
            .and_then(|r| r.language.as_deref())
            .unwrap_or(&self.cfg.language);
        Lang::from_query(Some(l))
    }

    /// Who a message for `tenant` is about: the commune's name, or the gateway.
    fn who(&self, lang: Lang, tenant: &str) -> String {
        let name = self.names.get(tenant).map_or(tenant, String::as_str);
        text::audience(lang, name, &self.gateway)
    }

    fn threshold(&self, tenant: &str, zone: Option<&str>) -> u8 {
        self.cfg
            .bin_threshold(tenant, zone)
            .unwrap_or(self.bin_full_percent)
    }
}

/// Runs until the service stops.
pub(crate) async fn run(mut n: Notifier, c: Common) {
    let rules = Rules {
        confirm_ms: n.cfg.confirm.as_millis() as u64,
        up_since_ms: c.clock.now_ms(),
    };
    let mut tick = tokio::time::interval(n.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = c.stopping.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now_ms = c.clock.now_ms();
        let seen = n.seen(&c, now_ms);
        let changes = n.state.book.update(now_ms, rules, seen);
        if !changes.is_empty() {
            // What is told must be what a restart finds: the device state first.
            c.traffic.devices.save();
        }
        n.tell(&changes, now_ms);
        n.digest(now_ms);
        // What was told and what is to be sent, kept before anything is sent.
        n.save();
        // A send is bounded (20 s) but shutdown does not wait for it: a message cut
        // short is sent again at the next start.
        let stopped = tokio::select! {
            () = c.stopping.cancelled() => true,
            () = n.deliver(&c, now_ms) => false,
        };
        n.save();
        if stopped {
            break;
        }
    }
}

impl Notifier {
    /// Every condition now: each device's, each commune's delivery, the gateway's.
    fn seen(&mut self, c: &Common, now_ms: u64) -> Vec<Alert> {
        let mut seen = c.traffic.devices.read_all(|roster, book| {
            roster
                .iter()
                .flat_map(|l| {
                    let state = book.get(&l.tenant, &l.device);
                    alert::of_device(
                        l,
                        state,
                        now_ms,
                        self.threshold(&l.tenant, l.zone.as_deref()),
                    )
                })
                .collect::<Vec<_>>()
        });
        let health = c.health.snapshot();
        let used = c.metrics.buffer_bytes.get().max(0) as u64;
        seen.extend(gateway_alerts(&health, used, self.buffer_max, &self.cfg));
        seen.extend(disk_alert(&self.data_dir, self.cfg.disk_free_percent));
        let pending = c.metrics.buffer_pending_bytes.get().max(0) as u64;
        let growing = self
            .backlog
            .observe(now_ms, pending, self.cfg.backlog_mib << 20);
        seen.extend(growing.map(|what| Alert {
            tenant: String::new(),
            device: None,
            what,
        }));
        seen.extend(certs::expiring(
            &self.certificates,
            now_ms,
            self.cfg.certificate_days,
        ));
        seen
    }

    /// The messages telling `changes`, per audience: a commune's changes to its
    /// recipients, the gateway's and every commune held to the operator.
    fn tell(&mut self, changes: &[Change], now_ms: u64) {
        let mut by: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for ch in changes {
            let a = &ch.entry().alert;
            by.entry(a.tenant.clone()).or_default().push(ch.clone());
            if matches!(a.what, What::CommuneHeld { .. }) {
                by.entry(String::new()).or_default().push(ch.clone());
            }
        }
        for (tenant, changes) in by {
            let Some(r) = self.cfg.recipients(&tenant).cloned() else {
                continue;
            };
            let lang = self.lang(&tenant);
            let who = self.who(lang, &tenant);
            if !r.emails.is_empty() {
                let (subject, body) = text::changes_mail(lang, &who, &changes, &local_time);
                self.queue(To::Email(r.emails.clone()), subject, body, now_ms);
            }
            if !r.webhooks.is_empty() {
                let json =
                    text::changes_json(lang, &self.gateway, &tenant, &changes, &local_time, &iso);
                for w in &r.webhooks {
                    self.queue(
                        To::Webhook(w.url.clone()),
                        String::new(),
                        json.clone(),
                        now_ms,
                    );
                }
            }
        }
    }

    /// Once a local day, at `alerts.digest_hour`: each audience's alerts in force to its
    /// `digest_emails`.
    fn digest(&mut self, now_ms: u64) {
        let local = chrono::Local.timestamp_millis_opt(now_ms as i64).single();
        let Some(local) = local else { return };
        let day = local.date_naive().to_epoch_days() as i64;
        let hour = chrono::Timelike::hour(&local) as u8;
        if !self.state.book.digest_due(day, hour, self.cfg.digest_hour) {
            return;
        }
        let audiences: Vec<_> = std::iter::once((String::new(), &self.cfg.operator))
            .chain(self.cfg.communes.iter().map(|(t, r)| (t.clone(), r)))
            .filter(|(_, r)| !r.digest_emails.is_empty())
            .map(|(t, r)| (t, r.digest_emails.clone()))
            .collect();
        for (tenant, to) in audiences {
            let lang = self.lang(&tenant);
            let who = self.who(lang, &tenant);
            let active = self.state.book.announced(&tenant);
            let (subject, body) = text::digest_mail(lang, &who, &active, &local_time);
            self.queue(To::Email(to), subject, body, now_ms);
        }
    }

    fn queue(&mut self, to: To, subject: String, body: String, now_ms: u64) {
        if let Some(dropped) = self.state.outbox.push(to, subject, body, now_ms) {
            tracing::error!(
                channel = dropped.to.channel(),
                "alert outbox full ({} messages): the oldest message is given up",
                outbox::CAPACITY
            );
        }
    }

    /// Sends every message that is due, in order per destination.
    async fn deliver(&mut self, c: &Common, now_ms: u64) {
        let m = &c.metrics.alerts;
        for msg in self.state.outbox.due(now_ms) {
            let channel = msg.to.channel();
            match self.send(&msg, now_ms).await {
                Ok(()) => {
                    // On disk before it counts: a crash now sends it again, never twice
                    // once counted.
                    self.state.outbox.sent(msg.id);
                    self.save();
                    m.sent_of(channel).inc();
                    c.health.set_alerts_error(None);
                }
                Err(e) => {
                    let (permanent, unit) = (e.permanent(), crate::clock::jitter());
                    let given_up = self.state.outbox.failed(msg.id, permanent, now_ms, unit);
                    tracing::warn!(channel, error = %e, given_up, "alert message not sent");
                    c.health.set_alerts_error(Some(e.to_string()));
                    if given_up {
                        m.failed_of(channel).inc();
                    }
                }
            }
        }
        for channel in crate::observe::metrics::alerts::CHANNELS {
            m.failed_of(channel)
                .inc_by(self.state.outbox.take_dropped(channel));
        }
        m.pending.set(self.state.outbox.len() as i64);
        m.active.set(
            self.state
                .book
                .active
                .values()
                .filter(|e| e.announced)
                .count() as i64,
        );
    }

    async fn send(&self, msg: &outbox::Pending, now_ms: u64) -> Result<(), send::SendError> {
        match &msg.to {
            To::Email(to) => match &self.mailer {
                Some(mailer) => mailer.send(to, &msg.subject, &msg.body).await,
                None => Err(send::SendError::Mail("no [alerts.smtp] any more".into())),
            },
            To::Webhook(url) => self.hooks.send(url, &msg.body, now_ms / 1000).await,
        }
    }

    fn save(&mut self) {
        let path = self.data_dir.join(FILE_NAME);
        let Ok(json) = serde_json::to_vec(&self.state) else {
            return;
        };
        if json == self.saved {
            return;
        }
        match crate::store::fs::write_atomic(&path, &json, 0o640) {
            Ok(()) => self.saved = json,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the alerts' state")
            }
        }
    }
}

/// The gateway's own conditions and each commune's delivery, from `/readyz`'s snapshot
/// and the buffer's size.
fn gateway_alerts(h: &Snapshot, used: u64, max: u64, cfg: &AlertsConfig) -> Vec<Alert> {
    let gateway = |what| Alert {
        tenant: String::new(),
        device: None,
        what,
    };
    let mut out = Vec::new();
    if !h.broker_connected {
        out.push(gateway(What::BrokerDown {
            error: h.broker_error.clone(),
        }));
    }
    if let Some(problem) = h.store.problem() {
        out.push(gateway(What::StoreRefusing { problem }));
    }
    // Full is nearly full too: one alert from the warning until the buffer drains.
    if max > 0 && used * 100 >= max * u64::from(cfg.buffer_percent) {
        out.push(gateway(What::BufferNearlyFull { used, max }));
    }
    for (tenant, state) in &h.tenants {
        if let Tenant::Held { error, .. } = state {
            out.push(Alert {
                tenant: tenant.clone(),
                device: None,
                what: What::CommuneHeld {
                    error: error.clone(),
                },
            });
        }
    }
    out
}

/// The data directory's disk under `percent` free.
fn disk_alert(dir: &std::path::Path, percent: u8) -> Option<Alert> {
    let (free, total) = crate::store::fs::disk_space(dir).ok()?;
    (total > 0 && free * 100 < total * u64::from(percent)).then(|| Alert {
        tenant: String::new(),
        device: None,
        what: What::DiskNearlyFull { free, total },
    })
}

/// A time in the gateway's local time with its offset: `2026-12-06 14:05 (UTC+01:00)`.
fn local_time(ms: u64) -> String {
    match chrono::Local.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M (UTC%:z)").to_string(),
        None => ms.to_string(),
    }
}

/// RFC 3339 in UTC, for webhooks.
fn iso(ms: u64) -> String {
    match chrono::Utc.timestamp_millis_opt(ms as i64).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => ms.to_string(),
    }
}
