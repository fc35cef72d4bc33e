//! Identifiers and the MQTT topic scheme (SPEC.md §7):
//!
//! - uplink, QoS 1: `vigie/v1/<tenant>/<device>/up`
//! - status, retained, also the last will: `vigie/v1/<tenant>/<device>/status`
//! - acknowledgement downlink, retained: `vigie/v1/<tenant>/<device>/ack`
//! - gateway subscription: `$share/<group>/vigie/v1/+/+/up`

use core::fmt;
use heapless::String;

use crate::error::TopicError;

pub use crate::limits::{MAX_ID_LEN, MAX_TOPIC_LEN};
/// First two topic levels: product and topic-scheme version.
pub const ROOT: &str = "vigie/v1";
/// Retained status payload while the device is connected.
pub const STATUS_ONLINE: &[u8] = b"online";
/// Status payload the broker publishes as the device's last will.
pub const STATUS_OFFLINE: &[u8] = b"offline";
/// Every device's status topic: a gateway subscribes to it on its own (not shared:
/// retained messages reach no shared subscription, and every gateway shows every status).
pub const STATUS_FILTER: &str = "vigie/v1/+/+/status";

// The longest topic built here must fit the fixed-capacity string.
const _: () =
    assert!("$share/".len() + MAX_ID_LEN + 1 + ROOT.len() + "/+/+/up".len() <= MAX_TOPIC_LEN);
const _: () = assert!(ROOT.len() + 2 * (1 + MAX_ID_LEN) + "/status".len() <= MAX_TOPIC_LEN);

/// A validated identifier: 1 to 32 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
/// Safe in topics (no `/`, `+`, `#`), in file names and as database tag values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Id<'a>(&'a str);

impl<'a> Id<'a> {
    /// Validates `s`.
    pub fn new(s: &'a str) -> Result<Self, TopicError> {
        if !fits(s) {
            return Err(TopicError::IdLength);
        }
        if !s.bytes().all(id_byte) || !hyphens_inside(s) {
            return Err(TopicError::IdCharacter);
        }
        Ok(Self(s))
    }

    /// The identifier text.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Who sent a frame, as the topic says: bound into the frame's authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Identity<'a> {
    /// The commune or organisation owning the device.
    pub tenant: Id<'a>,
    /// The device, unique within its tenant.
    pub device: Id<'a>,
}

impl<'a> Identity<'a> {
    /// Validates both identifiers.
    pub fn new(tenant: &'a str, device: &'a str) -> Result<Self, TopicError> {
        Ok(Self {
            tenant: Id::new(tenant)?,
            device: Id::new(device)?,
        })
    }
}

/// Last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Channel {
    /// Sealed frames, QoS 1.
    Uplink,
    /// Retained `online` / `offline` (last will).
    Status,
    /// Retained acknowledgements from the gateways (SPEC §12), device-bound.
    Ack,
}

impl Channel {
    const fn level(self) -> &'static str {
        match self {
            Channel::Uplink => "up",
            Channel::Status => "status",
            Channel::Ack => "ack",
        }
    }
}

/// A parsed device topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Topic<'a> {
    /// Tenant and device.
    pub who: Identity<'a>,
    /// Uplink or status.
    pub channel: Channel,
}

/// An id's length is 1 to [`MAX_ID_LEN`] bytes.
fn fits(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
}

/// An id's bytes are `a-z`, `0-9` and `-` (compared here: a node that checks ids does
/// not carry the topic parser's table).
const fn id_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

/// An id neither starts nor ends with `-`.
fn hyphens_inside(id: &str) -> bool {
    !id.starts_with('-') && !id.ends_with('-')
}

const ID: u8 = 1;
const SLASH: u8 = 2;
/// What each byte is in a topic: [`ID`] a byte of an id ([`id_byte`]), [`SLASH`] the
/// level separator, 0 neither (one load per byte, where three comparisons cost twice as
/// much).
const LEVEL_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'/' => SLASH,
            b if id_byte(b) => ID,
            _ => 0,
        };
        b += 1;
    }
    table
};

/// `text` split at its first `/` if the level before it is a valid [`Id`], checked in the
/// same pass that finds the `/`, a table lookup per byte (the topic's parse had been
/// 2.6 % of a drain's instructions; a sixth less now, docs/PERFORMANCE.md). `None` for
/// anything else, which the level-by-level parse then names.
fn id_level(text: &str) -> Option<(Id<'_>, &str)> {
    let mut at = None;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        match LEVEL_BYTE[usize::from(b)] {
            ID => {}
            SLASH => {
                at = Some(i);
                break;
            }
            _ => return None,
        }
    }
    let level = &text[..at?];
    (fits(level) && hyphens_inside(level)).then(|| (Id(level), &text[level.len() + 1..]))
}

impl<'a> Topic<'a> {
    /// Parses `vigie/v1/<tenant>/<device>/<up|status|ack>`.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        // The usual topic: the root compared whole, then two valid ids; anything else goes
        // level by level for its exact error.
        let usual = topic
            .strip_prefix(ROOT)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(id_level)
            .and_then(|(tenant, rest)| Some((tenant, id_level(rest)?)))
            .filter(|(_, (_, channel))| !channel.bytes().any(|b| b == b'/'));
        let (who, channel) = match usual {
            Some((tenant, (device, channel))) => (Ok(Identity { tenant, device }), channel),
            None => {
                let mut levels = topic.split('/');
                let mut next = || levels.next().ok_or(TopicError::Shape);
                let (root, version, tenant, device, channel) =
                    (next()?, next()?, next()?, next()?, next()?);
                if levels.next().is_some() {
                    return Err(TopicError::Shape);
                }
                if root != "vigie" || version != "v1" {
                    return Err(TopicError::Root);
                }
                // Its error is returned after the channel's, which comes first.
                (Identity::new(tenant, device), channel)
            }
        };
        let channel = match channel {
            "up" => Channel::Uplink,
            "status" => Channel::Status,
            "ack" => Channel::Ack,
            _ => return Err(TopicError::Channel),
        };
        Ok(Self { who: who?, channel })
    }

    /// The topic text.
    pub fn render(&self) -> String<MAX_TOPIC_LEN> {
        build(&[
            ROOT,
            "/",
            self.who.tenant.as_str(),
            "/",
            self.who.device.as_str(),
            "/",
            self.channel.level(),
        ])
    }
}

/// The uplink topic of a device.
pub fn uplink(who: Identity<'_>) -> String<MAX_TOPIC_LEN> {
    Topic {
        who,
        channel: Channel::Uplink,
    }
    .render()
}

/// The retained status / last-will topic of a device.
pub fn status(who: Identity<'_>) -> String<MAX_TOPIC_LEN> {
    Topic {
        who,
        channel: Channel::Status,
    }
    .render()
}

/// The retained acknowledgement topic of a device: gateways publish, the device reads.
pub fn ack(who: Identity<'_>) -> String<MAX_TOPIC_LEN> {
    Topic {
        who,
        channel: Channel::Ack,
    }
    .render()
}

/// The gateway's shared subscription: gateways of one `group` split the uplink traffic.
pub fn shared_uplink_filter(group: Id<'_>) -> String<MAX_TOPIC_LEN> {
    build(&["$share/", group.as_str(), "/", ROOT, "/+/+/up"])
}

fn build(parts: &[&str]) -> String<MAX_TOPIC_LEN> {
    let mut s = String::new();
    for p in parts {
        // Cannot fail: ids are bounded and the const assertions above prove the fit.
        let _ = s.push_str(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        for ok in ["a", "grenoble", "aq-0001", "38185", &"x".repeat(32)] {
            assert!(Id::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(Id::new(""), Err(TopicError::IdLength));
        assert_eq!(Id::new(&"x".repeat(33)), Err(TopicError::IdLength));
        for bad in ["Lyon", "a/b", "a+", "#", "-a", "a-", "é", "a b", "a_b"] {
            assert_eq!(Id::new(bad), Err(TopicError::IdCharacter), "{bad}");
        }
    }

    #[test]
    fn topics_round_trip() {
        let who = Identity::new("lyon", "aq-0001").unwrap();
        assert_eq!(uplink(who).as_str(), "vigie/v1/lyon/aq-0001/up");
        assert_eq!(status(who).as_str(), "vigie/v1/lyon/aq-0001/status");
        assert_eq!(ack(who).as_str(), "vigie/v1/lyon/aq-0001/ack");
        assert_eq!(
            Topic::parse(ack(who).as_str()).unwrap().channel,
            Channel::Ack
        );
        let parsed = Topic::parse("vigie/v1/lyon/aq-0001/up").unwrap();
        assert_eq!(
            parsed,
            Topic {
                who,
                channel: Channel::Uplink
            }
        );
        assert_eq!(parsed.render().as_str(), "vigie/v1/lyon/aq-0001/up");
        assert_eq!(
            Topic::parse("vigie/v1/lyon/aq-0001/status")
                .unwrap()
                .channel,
            Channel::Status
        );
        let group = Id::new("gateways").unwrap();
        assert_eq!(
            shared_uplink_filter(group).as_str(),
            "$share/gateways/vigie/v1/+/+/up"
        );
    }

    #[test]
    fn topic_errors() {
        let cases = [
            ("vigie/v1/lyon/aq-1", TopicError::Shape),
            ("vigie/v1/lyon/aq-1/up/x", TopicError::Shape),
            ("vigie/v2/lyon/aq-1/up", TopicError::Root),
            ("other/v1/lyon/aq-1/up", TopicError::Root),
            ("vigie/v1/lyon/aq-1/down", TopicError::Channel),
            ("vigie/v1/Lyon/aq-1/up", TopicError::IdCharacter),
            ("vigie/v1//aq-1/up", TopicError::IdLength),
        ];
        for (t, want) in cases {
            assert_eq!(Topic::parse(t), Err(want), "{t}");
        }
        // Longest ids still fit.
        let long = "x".repeat(MAX_ID_LEN);
        let who = Identity::new(&long, &long).unwrap();
        assert_eq!(Topic::parse(status(who).as_str()).unwrap().who, who);
        assert!(shared_uplink_filter(Id::new(&long).unwrap()).len() > MAX_ID_LEN);
    }

    /// The level-by-level parse the usual-topic shortcut must agree with.
    fn by_levels(topic: &str) -> Result<Topic<'_>, TopicError> {
        let levels: std::vec::Vec<&str> = topic.split('/').collect();
        let [root, version, tenant, device, channel] = levels[..] else {
            return Err(TopicError::Shape);
        };
        if (root, version) != ("vigie", "v1") {
            return Err(TopicError::Root);
        }
        let channel = match channel {
            "up" => Channel::Uplink,
            "status" => Channel::Status,
            "ack" => Channel::Ack,
            _ => return Err(TopicError::Channel),
        };
        Ok(Topic {
            who: Identity::new(tenant, device)?,
            channel,
        })
    }

    proptest::proptest! {
        #[test]
        fn the_shortcut_agrees_with_the_levels(
            levels in proptest::collection::vec(
                "(vigie|v1|v2|up|status|ack|lyon|aq-1|Lyon|-x|x-|a b|x{32}|x{33})", 0..8),
        ) {
            let topic = levels.join("/");
            proptest::prop_assert_eq!(Topic::parse(&topic), by_levels(&topic));
        }
    }
}
