//! What the node does with a gateway's downlinks (SPEC §12): forget the frames an
//! acknowledgement covers, count those refused for good, and re-seal under fresh counters
//! the frames whose counter the gateway had already seen (the board's counter went back:
//! erased, swapped, restored), so that their readings are stored after all and no nonce
//! is ever used for two contents. And, at boot on a new blob, re-seal under the new key
//! what waits under the previous one (`devices rotate`, SPEC §11).

use embedded_storage::nor_flash::NorFlash;
use protocol::provision::Provisioning;
use protocol::{Ack, DeviceKey, Downlink, Identity, Verdicts};

use crate::counter::FrameCounter;
use crate::node::NodeError;
use crate::ring::{self, FrameRing, Pos};

/// What the downlinks received during one exchange did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// Readings a gateway holds (stored, or duplicates of stored ones): forgotten.
    pub acknowledged: u32,
    /// Readings a gateway refused for good (kept in its quarantine): forgotten.
    pub refused: u32,
    /// Frames re-sealed under fresh counters: they wait to be sent.
    pub resealed: u32,
    /// Readings dropped from a full ring to make room for re-sealed frames.
    pub lost: u32,
    /// A re-seal failed (flash): the frames wait as they were.
    pub failed: bool,
}

/// The flash the node applies downlinks to.
pub(crate) struct Store<'a, F> {
    pub ring: &'a mut FrameRing<F>,
    pub counter: &'a mut FrameCounter<F>,
    pub provisioning: &'a Provisioning,
}

impl<F: NorFlash> Store<'_, F> {
    /// Applies one received message if it is a valid downlink for this device (anything
    /// else is ignored).
    pub fn apply(&mut self, message: &[u8], heard: &mut Heard) {
        let Ok(who) = self.provisioning.identity() else {
            return;
        };
        match Downlink::open(message, &self.provisioning.key, who) {
            Ok(Downlink::Ack(ack)) => heard.acknowledged += self.forget(&ack),
            Ok(Downlink::Verdicts(v)) => {
                heard.refused += self.forget(&v.refused_for_good());
                heard.acknowledged += self.forget(&v.ack());
                if v.to_reseal().settled != 0 {
                    match self.reseal(&v, who) {
                        Ok((resealed, lost)) => {
                            heard.resealed += resealed;
                            heard.lost += lost;
                        }
                        Err(_) => heard.failed = true,
                    }
                }
            }
            Err(_) => {}
        }
    }

    fn forget(&mut self, ack: &Ack) -> u32 {
        self.ring.acknowledge(ack).unwrap_or(0)
    }

    /// Moves the counter to `v.resume`, then re-seals the waiting frames `v` names (only
    /// below `v.resume`, where every frame re-sealed here goes above).
    fn reseal(&mut self, v: &Verdicts, who: Identity<'_>) -> Result<(u32, u32), NodeError> {
        let names = v.to_reseal();
        self.counter.skip_to(v.resume).map_err(NodeError::Counter)?;
        let key = self.provisioning.key.clone();
        self.reseal_waiting(&key, who, |old| old < v.resume && names.covers(old))
    }

    /// At boot: re-seals under the blob's key what waits under its previous one (a board
    /// flashed with the blob `devices rotate` wrote), then forgets, counted as lost, what
    /// neither key opens (a key older still, another identity's blob): no gateway could
    /// ever verify it, and resending it would only fill a quarantine.
    pub fn adopt_blob(&mut self, heard: &mut Heard) -> Result<(), NodeError> {
        let who = self
            .provisioning
            .identity()
            .map_err(|_| NodeError::Identity)?;
        if let Some(previous) = self.provisioning.previous.clone() {
            let (resealed, lost) = self.reseal_waiting(&previous, who, |_| true)?;
            heard.resealed += resealed;
            heard.lost += lost;
        }
        self.each_waiting(|s, pos, frame, counter| {
            // Re-sealed under its own counter and key: fails exactly when it does not verify.
            if protocol::reseal(frame, counter, &s.provisioning.key, who).is_err() {
                let readings = s.ring.readings_at(pos)?;
                s.ring.acknowledge(&Ack::new(counter))?;
                heard.lost += u32::from(readings);
            }
            Ok(())
        })
    }

    /// Calls `f` with each waiting frame (a copy to work on) and its counter, oldest
    /// first; frames `f` appends come after and are visited too.
    fn each_waiting(
        &mut self,
        mut f: impl FnMut(&mut Self, Pos, &mut [u8], u32) -> Result<(), NodeError>,
    ) -> Result<(), NodeError> {
        let mut buf = [0u8; ring::MAX_FRAME];
        let mut at = None;
        while let Some(pos) = self.ring.next_unacked(at)? {
            at = Some(pos);
            let n = self.ring.read(pos, &mut buf)?;
            let frame = &mut buf[..n];
            if let Ok(header) = protocol::peek(frame) {
                f(self, pos, frame, header.counter)?;
            }
        }
        Ok(())
    }

    /// For each waiting frame `pick` chooses (by counter) that opens under `from`: keeps
    /// a copy sealed under the next counter and the blob's key, then forgets the old one.
    /// Returns the frames re-sealed and the readings a full ring dropped for them. A
    /// power cut between the two writes leaves both: the old one is refused again and its
    /// readings stored twice (at two points), never lost.
    fn reseal_waiting(
        &mut self,
        from: &DeviceKey,
        who: Identity<'_>,
        mut pick: impl FnMut(u32) -> bool,
    ) -> Result<(u32, u32), NodeError> {
        let (mut resealed, mut lost) = (0, 0);
        self.each_waiting(|s, pos, frame, old| {
            // Sealed under the counter `take` returns next, which is reserved only then.
            let fresh = s.counter.peek();
            if !pick(old) || protocol::rekey(frame, fresh, from, &s.provisioning.key, who).is_err()
            {
                return Ok(()); // not chosen, or not sealed under `from`: left as it is
            }
            if s.counter.take().map_err(NodeError::Counter)? != fresh {
                return Err(NodeError::Counter(crate::counter::CounterError::Verify));
            }
            let readings = s.ring.readings_at(pos)?;
            lost += s.ring.append(frame, readings)?;
            s.ring.acknowledge(&Ack::new(old))?;
            resealed += 1;
            Ok(())
        })?;
        Ok((resealed, lost))
    }
}
