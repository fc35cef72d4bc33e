//! The node's MQTT session (SPEC §7), over any `embedded_io_async` byte stream, so the
//! same code runs over a TCP socket on the host and over a UART to a cellular modem in
//! transparent mode on a board.
//!
//! One connection: Clean Start, a retained `online` on the status topic, `offline`
//! registered as the last will, a QoS 0 subscription to the device's own acknowledgement
//! topic (SPEC §12), then one uplink frame in flight at a time, each awaited until its
//! PUBACK. A PUBACK only means the broker has the frame: the node forgets a frame when a
//! gateway's acknowledgement covers it, and every message that arrives meanwhile goes to
//! the caller (`on_message`).
//!
//! Timeouts belong to the transport (a read that waits too long fails) or to the caller's
//! executor; this module never waits on a clock itself.

use heapless::String;
use protocol::topic::{self, MAX_TOPIC_LEN, STATUS_OFFLINE, STATUS_ONLINE};
use protocol::{Identity, MAX_ID_LEN};

use crate::mqtt::Will;
pub use crate::mqtt::{Mqtt, MqttError as UplinkError};
use embedded_io_async::{Read, Write};

/// A node's topics and connection options, built once from its identity.
#[derive(Debug, Clone)]
pub struct Uplink {
    client_id: String<{ 2 * MAX_ID_LEN + 1 }>,
    up: String<MAX_TOPIC_LEN>,
    status: String<MAX_TOPIC_LEN>,
    ack: String<MAX_TOPIC_LEN>,
    keep_alive_s: u16,
}

impl Uplink {
    /// Client id `<tenant>.<device>` (ids cannot contain `.`), topics per SPEC §7; the
    /// broker drops the connection after 1.5 × `keep_alive_s` of silence and publishes the
    /// will.
    pub fn new(who: Identity<'_>, keep_alive_s: u16) -> Self {
        let mut client_id = String::new();
        // Cannot fail: two ids of at most MAX_ID_LEN and a dot.
        let _ = client_id.push_str(who.tenant.as_str());
        let _ = client_id.push('.');
        let _ = client_id.push_str(who.device.as_str());
        Self {
            client_id,
            up: topic::uplink(who),
            status: topic::status(who),
            ack: topic::ack(who),
            keep_alive_s,
        }
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Seconds of silence after which the node should exchange (an exchange ends with a
    /// ping).
    pub fn keep_alive_s(&self) -> u16 {
        self.keep_alive_s
    }

    /// Connects with the device's broker `password`, announces `online` and subscribes to
    /// the device's acknowledgements (a retained one may arrive: `on_message`).
    pub async fn connect<T: Read + Write>(
        &self,
        client: &mut Mqtt<T>,
        password: &str,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<(), UplinkError> {
        let will = Will {
            topic: &self.status,
            payload: STATUS_OFFLINE,
        };
        client
            .connect(&self.client_id, password, self.keep_alive_s, will)
            .await?;
        client
            .publish(&self.status, STATUS_ONLINE, true, on_message)
            .await?;
        client.subscribe(&self.ack, on_message).await
    }

    /// Publishes one sealed frame at QoS 1 and waits for its PUBACK.
    pub async fn publish<T: Read + Write>(
        &self,
        client: &mut Mqtt<T>,
        frame: &[u8],
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<(), UplinkError> {
        client.publish(&self.up, frame, false, on_message).await
    }

    /// Closes the connection cleanly, announcing `offline` first (a clean DISCONNECT
    /// suppresses the will).
    pub async fn disconnect<T: Read + Write>(
        &self,
        client: &mut Mqtt<T>,
    ) -> Result<(), UplinkError> {
        client
            .publish(&self.status, STATUS_OFFLINE, true, &mut |_| {})
            .await?;
        client.disconnect().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_and_topics() {
        let u = Uplink::new(Identity::new("lyon", "aq-0001").unwrap(), 600);
        assert_eq!(u.client_id(), "lyon.aq-0001");
        assert_eq!(u.up.as_str(), "vigie/v1/lyon/aq-0001/up");
        assert_eq!(u.status.as_str(), "vigie/v1/lyon/aq-0001/status");
        assert_eq!(u.ack.as_str(), "vigie/v1/lyon/aq-0001/ack");
    }
}
