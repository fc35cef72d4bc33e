//! A group's refusals quarantined once for the whole group, as one gateway quarantines
//! them once (`vigie_core::judge::recent`): a frame refused without settling (a reused
//! counter, a forged tag, an unknown or revoked device) is resent as it is, and each
//! gateway of the group may get a copy. Its fingerprint (SHA-256 of topic and bytes,
//! the first 8 bytes) goes into a list per topic in the group's store,
//! `<prefix>/refused/<hash of the topic>`, read after judging and written in the claim's
//! transaction: the gateway whose claim wins with the fingerprint new quarantines the
//! frame, every other finds it there. A list keeps the topic's last [`KEPT`] refusals.

use super::Inbound;
use super::claim::Claim as Writes;
use crate::store::group::{Etcd, GroupError};
use vigie_core::judge::batch::{Outcome, Plan};
use vigie_core::judge::recent::Recent;

/// Fingerprints kept per topic.
pub const KEPT: usize = 32;
const MAGIC: &[u8; 4] = b"VGQ1";

/// The refusals of a batch the group decides on, read from the store.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    /// Message index and fingerprint of each such refusal, in the batch's order.
    items: Vec<(usize, u64)>,
    /// Each topic's key, its revision and its list as read.
    lists: Vec<(String, i64, Vec<u64>)>,
    /// Each item's list.
    list_of: Vec<usize>,
}

impl Refusals {
    /// The batch's refusals that do not settle (replays aside: those go back to the
    /// quarantine whatever), at most `room` topics, with their topics' lists.
    pub(super) fn read(
        store: &mut Etcd,
        messages: &[Inbound],
        plan: &Plan,
        room: usize,
    ) -> Result<Self, GroupError> {
        let mut r = Self::default();
        for (i, (m, outcome)) in messages.iter().zip(&plan.outcomes).enumerate() {
            let Outcome::Reject(reason) = outcome else {
                continue;
            };
            if reason.settles() || m.quarantined_as.is_some() {
                continue;
            }
            let key = store.refused_key(&hex::encode(digest(&[m.topic().as_bytes()])));
            let list = match r.lists.iter().position(|(k, ..)| *k == key) {
                Some(at) => at,
                None if r.lists.len() < room => {
                    r.lists.push((key, 0, Vec::new()));
                    r.lists.len() - 1
                }
                // Past one transaction's room: this gateway's own memory decides.
                None => continue,
            };
            r.items.push((i, fingerprint(m)));
            r.list_of.push(list);
        }
        if r.lists.is_empty() {
            return Ok(r);
        }
        let keys: Vec<String> = r.lists.iter().map(|(k, ..)| k.clone()).collect();
        for ((_, revision, list), held) in r.lists.iter_mut().zip(store.fetch(&keys)?) {
            *revision = held.revision;
            *list = decode(held.state.as_deref().unwrap_or_default());
        }
        Ok(r)
    }

    /// What the claim compares and writes besides the devices' states: each list read,
    /// at its revision, with the batch's new fingerprints added.
    pub(super) fn claim(&self) -> Writes {
        let mut compare = Vec::new();
        let mut puts = Vec::new();
        for (at, (key, revision, list)) in self.lists.iter().enumerate() {
            let mut new = list.clone();
            for (&(_, print), _) in self
                .items
                .iter()
                .zip(&self.list_of)
                .filter(|(_, l)| **l == at)
            {
                if !new.contains(&print) {
                    new.push(print);
                }
            }
            if new.len() == list.len() {
                continue;
            }
            let skip = new.len().saturating_sub(KEPT);
            compare.push((key.clone(), *revision));
            puts.push((key.clone(), encode(&new[skip..])));
        }
        (compare, puts)
    }

    /// Once the claim won: `recent` made to say "first time" for the refusals new to the
    /// group and "seen" for the others, so that the verdicts quarantine each once.
    pub(super) fn decide(&self, recent: &mut Recent, messages: &[Inbound]) {
        let mut done: Vec<u64> = Vec::new();
        for (&(i, print), &at) in self.items.iter().zip(&self.list_of) {
            if done.contains(&print) {
                continue;
            }
            done.push(print);
            let m = &messages[i];
            if self.lists[at].2.contains(&print) {
                recent.first_time(m.topic(), m.payload());
            } else {
                recent.forget(m.topic(), m.payload());
            }
        }
    }
}

/// The first 8 bytes of the SHA-256 of `parts`, each followed by a zero byte.
fn digest(parts: &[&[u8]]) -> [u8; 8] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
        ctx.update(&[0]);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&ctx.finish().as_ref()[..8]);
    out
}

/// A refused frame's fingerprint: the same on every gateway.
fn fingerprint(m: &Inbound) -> u64 {
    u64::from_be_bytes(digest(&[m.topic().as_bytes(), m.payload()]))
}

fn encode(prints: &[u64]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for p in prints {
        out.extend_from_slice(&p.to_be_bytes());
    }
    out
}

/// A list as stored; an unreadable one as empty (its refusals quarantined again).
fn decode(bytes: &[u8]) -> Vec<u64> {
    match bytes.split_at_checked(4) {
        Some((m, rest)) if m == MAGIC && rest.len() % 8 == 0 => rest
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_its_last_fingerprints_and_reads_back() {
        let prints: Vec<u64> = (0..40).collect();
        assert_eq!(decode(&encode(&prints)), prints);
        assert!(decode(b"VGQ1\x01").is_empty(), "a torn list reads as empty");
        let r = Refusals {
            items: vec![(0, 7), (1, 8), (2, 7)],
            lists: vec![("k".into(), 5, (100..131).collect())],
            list_of: vec![0, 0, 0],
        };
        let (compare, puts) = r.claim();
        assert_eq!(compare, vec![("k".to_string(), 5)]);
        let written = decode(&puts[0].1);
        assert_eq!(written.len(), KEPT);
        assert_eq!(&written[KEPT - 2..], &[7, 8], "new ones last, once each");
        let known = Refusals {
            items: vec![(0, 100)],
            lists: vec![("k".into(), 5, vec![100])],
            list_of: vec![0],
        };
        assert_eq!(
            known.claim(),
            (vec![], vec![]),
            "nothing new: nothing written"
        );
        assert_ne!(digest(&[b"a", b"bc"]), digest(&[b"ab", b"c"]));
    }
}
