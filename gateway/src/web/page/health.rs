//! The gateway's own health on the overview and commune pages.

use super::{View, clock, esc};
use crate::observe::health::{GroupView, Snapshot, Tenant};

/// One line of the health list, green or red.
fn item(good: bool, text: &str) -> String {
    let class = if good { "green" } else { "red" };
    format!(
        r#"<li><span class="light {class}">{}</span></li>"#,
        esc(text)
    )
}

/// The health section (of one commune's database when `only` names it).
pub(super) fn health(v: &View, only: Option<&str>) -> String {
    let Some(h) = v.health else {
        return String::new();
    };
    let mut items = vec![broker(v, h)];
    let store = h.store.problem();
    let buffer_ok = v
        .lang
        .pick("Mémoire tampon disponible", "Buffer taking writes");
    items.push(item(store.is_none(), store.as_deref().unwrap_or(buffer_ok)));
    items.extend(databases(v, h, only));
    items.extend(h.group.as_ref().map(|g| group(v, g)));
    if let Some(e) = &h.registry_error {
        let what = v.lang.pick("Registre illisible", "Registry reload failed");
        items.push(item(false, &format!("{what} : {e}")));
    }
    format!(
        r#"<section aria-labelledby="gw"><h2 id="gw">{}</h2><ul class="cards" id="health">{}</ul></section>"#,
        v.lang.pick("Passerelle", "Gateway"),
        items.concat()
    )
}

/// The group's line: the gateways alive in it, or why they cannot be listed.
fn group(v: &View, g: &GroupView) -> String {
    let what = v.lang.pick("Groupe de passerelles", "Group of gateways");
    match &g.error {
        Some(e) => {
            let unreachable = v.lang.pick("etcd injoignable", "etcd unreachable");
            item(false, &format!("{what} {} : {unreachable} ({e})", g.prefix))
        }
        None => item(
            true,
            &format!("{what} {} : {}", g.prefix, g.members.join(", ")),
        ),
    }
}

/// The broker's line.
fn broker(v: &View, h: &Snapshot) -> String {
    if h.broker_connected {
        return item(
            true,
            v.lang.pick("Broker MQTT connecté", "MQTT broker connected"),
        );
    }
    let why = h
        .broker_error
        .as_ref()
        .map(|e| format!(" : {e}"))
        .unwrap_or_default();
    let unreachable = v
        .lang
        .pick("Broker MQTT injoignable", "MQTT broker unreachable");
    item(false, &format!("{unreachable}{why}"))
}

/// A line per held database, or one saying none is.
fn databases(v: &View, h: &Snapshot, only: Option<&str>) -> Vec<String> {
    let mut items = Vec::new();
    for (tenant, state) in &h.tenants {
        if let Tenant::Held { error, since_ms } = state
            && only.is_none_or(|t| t == tenant)
        {
            items.push(item(
                false,
                &format!(
                    "{} {tenant} : {} {} ({error})",
                    v.lang.pick("Base de données", "Database"),
                    v.lang
                        .pick("refuse les écritures depuis", "refusing writes since"),
                    clock(*since_ms, v.now_ms)
                ),
            ));
        }
    }
    if items.is_empty() {
        let fine = v.lang.pick(
            "Base de données : aucune écriture en échec",
            "Database: no failing write",
        );
        items.push(item(true, fine));
    }
    items
}
