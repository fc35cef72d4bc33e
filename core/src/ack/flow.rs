//! The MQTT acknowledgement flow, pure: which packet ids may be acknowledged, in what
//! order, and when everything handed to the worker is settled. The MQTT shell
//! (`crate::mqtt`) feeds it events and sends what it answers; no socket here (in the
//! style of rumqttc's `state.rs`).
//!
//! Rules: acknowledgements go out in the order the messages arrived (MQTT-4.6.0-2), which
//! is the order the worker returns them; an acknowledgement for an earlier connection is
//! never sent (the packet id may be reused; the broker redelivers that message instead);
//! an acknowledgement the client cannot take now waits and is never dropped (a lost one
//! would hold a slot of the broker's in-flight window until the next reconnect).

use std::collections::VecDeque;

/// Identifies a received message for its acknowledgement: the MQTT connection it came on
/// and its packet id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// Connection generation.
    pub generation: u64,
    /// MQTT packet id.
    pub pkid: u16,
}

/// Acknowledgement state of one MQTT session.
#[derive(Debug, Default)]
pub struct AckFlow {
    generation: u64,
    /// Messages handed to the worker whose acknowledgement has not been settled.
    outstanding: usize,
    /// Acknowledgements back from the worker, in order, not yet sent.
    pending: VecDeque<AckToken>,
}

impl AckFlow {
    /// A CONNACK: a new connection; earlier tokens are stale from now on.
    pub fn on_connack(&mut self) {
        self.generation += 1;
    }

    /// The token for a QoS 1 message with `pkid` received now.
    pub fn on_publish(&self, pkid: u16) -> AckToken {
        AckToken {
            generation: self.generation,
            pkid,
        }
    }

    /// A message went to the worker; `token` is its acknowledgement to come, if any.
    pub fn handed_over(&mut self, token: Option<AckToken>) {
        self.outstanding += usize::from(token.is_some());
    }

    /// The worker made a message durable: its acknowledgement may go out, in turn.
    pub fn on_durable(&mut self, token: AckToken) {
        self.pending.push_back(token);
    }

    /// The next acknowledgement to send, if any (stale ones are settled and skipped).
    /// Call [`Self::sent`] once the client took it.
    pub fn next_ack(&mut self) -> Option<AckToken> {
        while let Some(token) = self.pending.front() {
            if token.generation == self.generation {
                return Some(*token);
            }
            self.pending.pop_front();
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        None
    }

    /// The acknowledgement [`Self::next_ack`] returned was sent.
    pub fn sent(&mut self) {
        if self.pending.pop_front().is_some() {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
    }

    /// Every message handed over has been acknowledged (or was from an earlier connection).
    pub fn settled(&self) -> bool {
        self.outstanding == 0
    }

    /// No acknowledgement waits to be sent.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends every acknowledgement the client takes, like the shell.
    fn drain(flow: &mut AckFlow, room: usize) -> Vec<u16> {
        let mut sent = Vec::new();
        while let Some(t) = flow.next_ack() {
            if sent.len() == room {
                break;
            }
            sent.push(t.pkid);
            flow.sent();
        }
        sent
    }

    #[test]
    fn acknowledgements_go_out_in_arrival_order_and_wait_for_room() {
        let mut f = AckFlow::default();
        f.on_connack();
        let tokens: Vec<_> = (1..=5).map(|id| f.on_publish(id)).collect();
        for t in &tokens {
            f.handed_over(Some(*t));
        }
        for t in &tokens[..3] {
            f.on_durable(*t);
        }
        assert_eq!(drain(&mut f, 2), [1, 2], "the client took two");
        assert!(!f.settled());
        assert_eq!(
            drain(&mut f, 10),
            [3],
            "the third waited, it was not dropped"
        );
        for t in &tokens[3..] {
            f.on_durable(*t);
        }
        assert_eq!(drain(&mut f, 10), [4, 5]);
        assert!(f.settled() && f.idle());
    }

    #[test]
    fn a_stale_generation_is_never_acknowledged_but_settles() {
        let mut f = AckFlow::default();
        f.on_connack();
        let old = f.on_publish(7);
        f.handed_over(Some(old));
        f.on_connack(); // reconnect: pkid 7 may now name another message
        let new = f.on_publish(7);
        f.handed_over(Some(new));
        f.on_durable(old);
        f.on_durable(new);
        assert_eq!(f.next_ack(), Some(new), "only the current connection's");
        f.sent();
        assert!(f.settled() && f.idle());
    }

    #[test]
    fn qos0_messages_need_no_acknowledgement_to_settle() {
        let mut f = AckFlow::default();
        f.on_connack();
        f.handed_over(None);
        assert!(f.settled());
        assert_eq!(f.next_ack(), None);
    }
}
