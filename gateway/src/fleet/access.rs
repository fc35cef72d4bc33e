//! Broker accounts and what each may do, generated from the registry: the configuration
//! file of Mosquitto's dynamic-security plugin (`deploy/mosquitto.conf` loads it).
//!
//! Why that plugin and not `password_file` + `acl_file`: Mosquitto's ACL file is checked
//! when a message is *delivered*, never when a client *subscribes* (Mosquitto 2.0
//! `acl_file__check`: "FIXME - implement ACL subscription strings"). A device account that
//! joins the gateways' shared subscription is accepted as a group member, and every message
//! the broker hands to it is then silently dropped by the ACL: measured, 5 of 10 readings.
//! The dynamic-security plugin refuses the SUBSCRIBE itself.
//!
//! Accounts:
//! - each active device: username `<tenant>.<device>` (its client id, SPEC §7); may publish
//!   only to its own uplink and status topics, subscribe to and receive only its own
//!   acknowledgement topic;
//! - each gateway account of the registry: may join a shared subscription of the uplink
//!   topics, receive uplinks, subscribe to and receive the devices' status topics, and
//!   publish acknowledgements; nothing else.
//!
//! Everything else is refused: anonymous clients (`allow_anonymous false`), other topics,
//! other subscriptions. Each account is bound to one client id, its username, so no
//! account can take over another's session. (Not Mosquitto's `use_username_as_clientid`:
//! on 2.0.11 a refused anonymous CONNECT with another client's id still wipes that
//! client's session.)
//!
//! Passwords are stored only as salted PBKDF2-SHA512 hashes in Mosquitto's own format.

use crate::config::Secret;
use crate::fleet::registry::Registry;
use serde_json::{Value, json};
use std::num::NonZeroU32;
use std::path::Path;

/// PBKDF2 iterations, Mosquitto's own default. The passwords are random (143 bits), so
/// the work factor protects nothing more; the broker pays it at every connection.
pub const ITERATIONS: u32 = 101;
const SALT_LEN: usize = 12;
use vigie_core::fleet::HASH_LEN;
/// Length of a generated password: 24 characters of `[A-Za-z0-9]`, 142.9 bits.
pub const PASSWORD_LEN: usize = 24;

pub use vigie_core::fleet::{HashFormatError, PasswordHash};

/// Hashes `password` under a fresh random salt.
pub fn hash_password(password: &Secret) -> Result<PasswordHash, getrandom::Error> {
    let mut salt = vec![0u8; SALT_LEN];
    getrandom::fill(&mut salt)?;
    Ok(derive(password.expose(), salt, ITERATIONS))
}

fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> PasswordHash {
    let mut hash = vec![0u8; HASH_LEN];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
        &salt,
        password.as_bytes(),
        &mut hash,
    );
    // Parts of the right sizes by construction.
    PasswordHash::from_parts(iterations.max(1), salt, hash).unwrap_or_else(|_| unreachable!())
}

/// True when `password` is the one `stored` hashes (constant-time comparison).
pub fn verify(stored: &PasswordHash, password: &str) -> bool {
    ring::pbkdf2::verify(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        NonZeroU32::new(stored.iterations()).unwrap_or(NonZeroU32::MIN),
        stored.salt(),
        password.as_bytes(),
        stored.hash(),
    )
    .is_ok()
}

/// A new random password: [`PASSWORD_LEN`] characters of `[A-Za-z0-9]` (rejection
/// sampling, so every character is uniform).
pub fn new_password() -> Result<Secret, getrandom::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(PASSWORD_LEN);
    while out.len() < PASSWORD_LEN {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        for b in bytes {
            // 248 = 4 × 62: values above would favour the first characters.
            if b < 248 && out.len() < PASSWORD_LEN {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(Secret::new(out))
}

/// The broker username of a device: its client id (SPEC §7).
pub fn device_username(tenant: &str, id: &str) -> String {
    format!("{tenant}.{id}")
}

/// Name of the role every gateway account holds.
const GATEWAY_ROLE: &str = "vigie-gateway";

fn acl(acltype: &str, topic: &str) -> Value {
    json!({ "acltype": acltype, "topic": topic, "priority": 0, "allow": true })
}

fn client(username: &str, hash: &PasswordHash, role: &str) -> Value {
    let (salt, password, iterations) = hash.dynsec_fields();
    json!({
        "username": username,
        "clientid": username,
        "salt": salt,
        "password": password,
        "iterations": iterations,
        "roles": [{ "rolename": role }],
    })
}

/// The dynamic-security configuration for `registry`: one account and role per active
/// device that has a broker password, the gateway role and its accounts. Revoked devices
/// have no account.
pub fn dynsec_config(registry: &Registry) -> Value {
    let mut clients = Vec::new();
    let mut roles = vec![json!({
        "rolename": GATEWAY_ROLE,
        "acls": [
            acl("subscribePattern", "$share/+/vigie/v1/+/+/up"),
            acl("publishClientReceive", "vigie/v1/+/+/up"),
            acl("subscribePattern", protocol::topic::STATUS_FILTER),
            acl("publishClientReceive", protocol::topic::STATUS_FILTER),
            acl("publishClientSend", "vigie/v1/+/+/ack"),
        ],
    })];
    for g in registry.gateways() {
        clients.push(client(&g.username, &g.password_hash, GATEWAY_ROLE));
    }
    for e in registry.entries() {
        let Some(hash) = e.broker_password_hash.as_ref().filter(|_| !e.revoked) else {
            continue;
        };
        let user = device_username(&e.tenant, &e.id);
        let base = format!("vigie/v1/{}/{}", e.tenant, e.id);
        roles.push(json!({
            "rolename": user,
            "acls": [
                acl("publishClientSend", &format!("{base}/up")),
                acl("publishClientSend", &format!("{base}/status")),
                acl("subscribeLiteral", &format!("{base}/ack")),
                acl("publishClientReceive", &format!("{base}/ack")),
            ],
        }));
        clients.push(client(&user, hash, &user));
    }
    json!({
        "defaultACLAccess": {
            "publishClientSend": false,
            "publishClientReceive": false,
            "subscribe": false,
            "unsubscribe": true,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    })
}

/// Writes the broker's access file for `registry` atomically, mode 0640, group `mosquitto`
/// (Debian's broker reads it as that user) or the group of the file it replaces.
pub fn write(path: &Path, registry: &Registry) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(&dynsec_config(registry))?;
    crate::store::fs::replace_for_group(path, text.as_bytes(), 0o640, BROKER_GROUP)
}

/// The group Debian's Mosquitto runs as.
pub const BROKER_GROUP: &str = "mosquitto";

/// What to tell the operator after the access file changed: Mosquitto reads it at start
/// only (the plugin ignores SIGHUP).
pub fn restart_hint(path: &Path) -> String {
    format!(
        "broker accounts written to {}; restart the broker to apply them \
         (`systemctl restart mosquitto`: it saves its queues first, devices resend what no \
         gateway acknowledged)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_round_trips_in_mosquitto_format_and_verifies() {
        let pw = Secret::new("correct horse");
        let h = hash_password(&pw).unwrap();
        let text = h.to_string();
        assert!(text.starts_with("$7$101$"), "{text}");
        let back: PasswordHash = text.parse().unwrap();
        assert_eq!(back, h);
        assert!(verify(&back, "correct horse"));
        assert!(!verify(&back, "correct horsf"));
        for bad in [
            "",
            "$6$101$a$b",
            "$7$0$AAAA$AAAA",
            "$7$101$!!$x",
            "$7$101$AAAA$AAAA",
        ] {
            assert_eq!(bad.parse::<PasswordHash>(), Err(HashFormatError), "{bad}");
        }
        assert!(!format!("{h:?}").contains(&text[7..]));
    }

    #[test]
    fn matches_mosquitto_passwd_output() {
        // `mosquitto_passwd -b f user secret` wrote this line (Mosquitto 2.0.11).
        let line = "$7$101$M/0AH5HggN6asdKR$L5UPgj3sMu9/H+yBFqWNvR177YsoZp/gdodvFf9BvjJS8DZGcPzcYp5RdLY+urvOxiayt+ENEITEs/+voL1g0g==";
        let h: PasswordHash = line.parse().unwrap();
        assert!(verify(&h, "gwpass"));
        assert_eq!(h.to_string(), line);
    }

    #[test]
    fn passwords_are_long_uniform_alphanumerics() {
        let a = new_password().unwrap();
        let b = new_password().unwrap();
        assert_eq!(a.expose().len(), PASSWORD_LEN);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert!(protocol::provision::password_ok(a.expose()));
    }
}
