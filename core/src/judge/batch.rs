//! Judging a batch of messages, pure: each message gets the verdict it would get alone,
//! in arrival order, because the frames accepted earlier in the batch count (through a
//! [`Pending`](crate::judge::replay_book::Pending) overlay) before the batch is durable. The
//! ingest worker turns the plan into I/O: records to append, entries to quarantine,
//! acknowledgements; then, once durable, it applies the accepted frames to the book.

use crate::condition::missing::Gap;
use crate::judge::reason::Reason;
use crate::judge::replay_book::ReplayBook;
use crate::judge::spare::SpareLines;
use crate::judge::verify::{self, Accepted, Context, Verdict};

/// The verdict of one message, by index into the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored: index into [`Plan::accepted`].
    Store(usize),
    /// Already stored: acknowledge, count.
    Duplicate,
    /// Quarantined with this reason.
    Reject(Reason),
    /// Not storable now, storable later (a time outside the window, SPEC §13.3): not
    /// stored, not quarantined, not acknowledged; the device keeps it and resends it.
    Hold(Reason),
    /// A status message (`online` / `offline`).
    Status {
        /// Tenant.
        tenant: String,
        /// Device.
        device: String,
        /// True for `online`.
        online: bool,
    },
}

/// What to do with a batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// One outcome per message, in order.
    pub outcomes: Vec<Outcome>,
    /// The frames to store, in order.
    pub accepted: Vec<Accepted>,
}

/// Judges `messages` (topic, payload) in order against the book in `cx` and the frames
/// accepted before them in the same batch.
pub fn judge<'m>(
    messages: impl IntoIterator<Item = (&'m str, &'m [u8])>,
    cx: &Context<'_, ReplayBook>,
) -> Plan {
    judge_with(messages, cx, &mut SpareLines::default())
}

/// [`judge`], accepted frames' lines written into buffers from `spare` (see
/// [`Plan::recycle`]).
pub fn judge_with<'m>(
    messages: impl IntoIterator<Item = (&'m str, &'m [u8])>,
    cx: &Context<'_, ReplayBook>,
    spare: &mut SpareLines,
) -> Plan {
    let messages = messages.into_iter();
    let mut pending = cx.counters.pending();
    // Room for every message at once: growing them copied each accepted frame's record
    // up to eleven times per batch (1.3 % of a drain's instructions, docs/PERFORMANCE.md).
    let room = messages.size_hint().0;
    let mut plan = Plan {
        outcomes: Vec::with_capacity(room),
        accepted: Vec::with_capacity(room),
    };
    for (topic, payload) in messages {
        let cx = Context {
            registry: cx.registry,
            counters: &pending,
            rules: cx.rules,
            strings: cx.strings,
            now_s: cx.now_s,
            clock_synced: cx.clock_synced,
        };
        let verdict = verify::assess_into(topic, payload, &cx, spare, &mut plan.accepted);
        let outcome = match verdict {
            Ok(i) => {
                pending.note(&plan.accepted[i]);
                Outcome::Store(i)
            }
            Err(Verdict::Accept(a)) => {
                pending.note(&a);
                plan.accepted.push(a);
                Outcome::Store(plan.accepted.len() - 1)
            }
            Err(Verdict::Duplicate { .. }) => Outcome::Duplicate,
            Err(Verdict::Reject(reason)) => Outcome::Reject(reason),
            Err(Verdict::Hold(reason)) => Outcome::Hold(reason),
            Err(Verdict::Status {
                tenant,
                device,
                online,
            }) => Outcome::Status {
                tenant,
                device,
                online,
            },
        };
        plan.outcomes.push(outcome);
    }
    plan
}

impl Plan {
    /// Gives the accepted frames' line buffers to `spare`, for the next batches.
    pub fn recycle(mut self, spare: &mut SpareLines) {
        // Taken in place: moving each frame out of the vector copied it whole.
        for a in &mut self.accepted {
            spare.keep(std::mem::take(&mut a.record.lines));
        }
    }
}

/// Applies a durable plan's accepted frames to the book; returns what each says of
/// missing counters.
pub fn apply<'a>(
    book: &mut ReplayBook,
    accepted: impl IntoIterator<Item = &'a Accepted>,
) -> Vec<Gap> {
    accepted.into_iter().map(|a| book.note(a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Registry;
    use crate::output::lineproto::StringFields;
    use proptest::prelude::*;
    use protocol::{AirQuality, Field, Identity, MAX_FRAME_LEN, Reading, Values};

    use crate::fixtures::{self, NOW, RULES};

    fn registry() -> Registry {
        fixtures::registry(&["a", "bb"])
    }

    /// A message: device, counter, and a value that makes frames under one counter differ.
    /// A later counter is a later second, as from an honest clock.
    fn message(device: &str, counter: u32, variant: u8) -> (String, Vec<u8>) {
        let key = fixtures::key(device);
        let reading = Reading {
            time: NOW as u32 - 3000 + counter + u32::from(variant),
            values: Values::AirQuality(AirQuality {
                pm25: Field::Value(100 + u16::from(variant)),
                ..AirQuality::default()
            }),
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        let who = Identity::new("lyon", device).unwrap();
        let frame = protocol::seal(&mut buf, &[reading], counter, &key, who)
            .unwrap()
            .to_vec();
        (format!("vigie/v1/lyon/{device}/up"), frame)
    }

    /// What the tests judge against: `registry`, `book`, the default rules, a synced clock.
    fn context<'a>(registry: &'a Registry, book: &'a ReplayBook) -> Context<'a, ReplayBook> {
        Context {
            registry,
            counters: book,
            rules: &RULES,
            strings: StringFields::Fields,
            now_s: NOW,
            clock_synced: true,
        }
    }

    /// Verdict kinds of `messages` delivered in batches of the given sizes.
    fn verdicts(messages: &[(String, Vec<u8>)], sizes: &[usize]) -> Vec<String> {
        let registry = registry();
        let mut book = ReplayBook::default();
        let mut out = Vec::new();
        let mut rest = messages;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let cx = context(&registry, &book);
            let plan = judge(batch.iter().map(|(t, p)| (t.as_str(), p.as_slice())), &cx);
            out.extend(plan.outcomes.iter().map(|o| match o {
                Outcome::Store(_) => "store".to_string(),
                Outcome::Duplicate => "duplicate".into(),
                Outcome::Reject(r) => r.code().into(),
                Outcome::Hold(r) => format!("hold {}", r.code()),
                Outcome::Status { .. } => "status".into(),
            }));
            for a in &plan.accepted {
                assert_eq!(
                    a.seconds,
                    a.record.seconds(),
                    "as a restart reads them back"
                );
            }
            apply(&mut book, &plan.accepted);
        }
        out
    }

    #[test]
    fn the_cases_the_field_found_give_one_verdict_however_batched() {
        let w = protocol::replay::WINDOW;
        let seq = vec![
            message("a", 10, 0),
            message("a", 10, 0),     // exact duplicate
            message("a", 10, 1),     // counter reused with other content
            message("a", w + 20, 0), // moves the window
            message("a", 11, 0),     // now below it: a counter gone back (SPEC §13.2)
            message("a", 11, 0),     // and again
        ];
        let one_by_one = verdicts(&seq, &[1]);
        assert_eq!(
            one_by_one,
            [
                "store",
                "duplicate",
                "counter_reused",
                "store",
                "counter_reused",
                "counter_reused"
            ]
        );
        assert_eq!(verdicts(&seq, &[seq.len()]), one_by_one);
        assert_eq!(verdicts(&seq, &[2, 3]), one_by_one);
    }

    #[test]
    fn kept_line_buffers_give_the_same_plans_and_are_used_again() {
        let registry = registry();
        let book = ReplayBook::default();
        let cx = context(&registry, &book);
        let batch: Vec<_> = (0..10)
            .map(|c| message(["a", "bb"][c % 2], c as u32, 0))
            .collect();
        let batch = || batch.iter().map(|(t, p)| (t.as_str(), p.as_slice()));
        let mut spare = SpareLines::default();
        let first = judge_with(batch(), &cx, &mut spare);
        assert_eq!(first.outcomes, judge(batch(), &cx).outcomes);
        let lines: Vec<String> = first
            .accepted
            .iter()
            .map(|a| a.record.lines.clone())
            .collect();
        let buffers: Vec<*const u8> = first
            .accepted
            .iter()
            .map(|a| a.record.lines.as_ptr())
            .collect();
        first.recycle(&mut spare);
        assert_eq!(spare.len(), 10, "every buffer kept");
        let again = judge_with(batch(), &cx, &mut spare);
        assert!(spare.is_empty(), "every kept buffer taken");
        let reused: Vec<*const u8> = again
            .accepted
            .iter()
            .map(|a| a.record.lines.as_ptr())
            .collect();
        assert!(
            reused.iter().all(|p| buffers.contains(p)),
            "the same buffers, not new ones"
        );
        let again: Vec<&str> = again
            .accepted
            .iter()
            .map(|a| a.record.lines.as_str())
            .collect();
        assert_eq!(again, lines, "emptied before they are written again");
    }

    #[test]
    fn spare_line_buffers_are_bounded() {
        let mut spare = SpareLines::default();
        spare.keep(String::with_capacity(SpareLines::ROOM + 1));
        assert!(spare.is_empty(), "a buffer larger than the bound is freed");
        for _ in 0..SpareLines::KEPT + 5 {
            spare.keep(String::from("x"));
        }
        assert_eq!(spare.len(), SpareLines::KEPT);
    }

    #[test]
    fn a_board_whose_counter_went_back_is_never_told_duplicate() {
        // 100 frames stored, then the board erased and flashed again with the same blob:
        // its counter restarts at 0 and its new frames differ. Every one of them, however
        // far back in the window, is refused out loud, never acknowledged as a duplicate
        // (with tags kept for the last 64 counters only, all 30 were "duplicates", their
        // readings deleted by the device: issue 28's 30 of 30).
        let mut seq: Vec<_> = (0..100).map(|c| message("a", c, 0)).collect();
        seq.extend((0..30).map(|c| message("a", c, 1)));
        let v = verdicts(&seq, &[16]);
        assert!(v[..100].iter().all(|v| v == "store"), "{v:?}");
        assert!(v[100..].iter().all(|v| v == "counter_reused"), "{v:?}");
        assert_eq!(verdicts(&seq, &[1]), v);
    }

    fn sequence() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        let w = protocol::replay::WINDOW;
        let counter = prop_oneof![0u32..6, (w..w + 6)];
        prop::collection::vec((prop::bool::ANY, counter, 0u8..2), 1..24).prop_map(|v| {
            v.into_iter()
                .map(|(dev, c, var)| message(if dev { "a" } else { "bb" }, c, var))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any split of a message sequence into batches gives the same verdicts.
        #[test]
        fn verdicts_do_not_depend_on_batching(
            seq in sequence(),
            sizes in prop::collection::vec(1usize..8, 1..6),
        ) {
            prop_assert_eq!(verdicts(&seq, &sizes), verdicts(&seq, &[1]));
        }
    }
}
