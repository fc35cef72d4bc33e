//! MQTT uplink: rust-mqtt (MQTT 5, QoS 1) over any `embedded_io_async` byte stream, so
//! the same code runs over a TCP socket on the host and over a UART to a cellular modem in
//! transparent mode on a board.
//!
//! One connection: Clean Start, a retained `online` on the status topic, `offline`
//! registered as the last will, then one uplink frame in flight at a time, each awaited
//! until its PUBACK. The node keeps its own store-and-forward queue and re-sends the same
//! sealed bytes after a reconnect, so no broker session is needed and a frame whose PUBACK
//! was lost is recognised by the gateway as a duplicate (same counter), never stored twice.
//!
//! Timeouts belong to the transport (a read that waits too long fails) or to the caller's
//! executor; this module never waits on a clock itself.

use core::num::NonZero;

use heapless::String;
use protocol::topic::{self, MAX_TOPIC_LEN, STATUS_OFFLINE, STATUS_ONLINE};
use protocol::{Identity, MAX_ID_LEN};
use rust_mqtt::Bytes;
use rust_mqtt::buffer::BufferProvider;
use rust_mqtt::client::event::Event;
use rust_mqtt::client::options::{
    ConnectOptions, DisconnectOptions, PublicationOptions, TopicReference, WillOptions,
};
use rust_mqtt::client::{Client, MqttError};
use rust_mqtt::config::KeepAlive;
use rust_mqtt::io::Transport;
use rust_mqtt::types::{MqttBinary, MqttString, TopicName};

/// The MQTT client as the node uses it: no subscriptions, one publication in flight, no
/// user properties or topic aliases.
pub type Mqtt<'c, T> = Client<'c, 'c, T, Scratch<'c>, 1, 1, 1, 0, 0, 0, 0>;

/// Why the uplink failed. Every variant means: drop this connection, keep the frame, and
/// reconnect after a back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum UplinkError {
    /// The byte stream failed or closed.
    Network,
    /// The broker refused the connection or the publication (bad credentials, ACL, quota);
    /// the MQTT reason code.
    Refused(u8),
    /// The broker sent something this client cannot accept.
    Protocol,
}

impl<const P: usize> From<MqttError<'_, P>> for UplinkError {
    fn from(e: MqttError<'_, P>) -> Self {
        match e {
            MqttError::Network(_) => Self::Network,
            MqttError::Disconnect { reason, .. } => Self::Refused(reason as u8),
            _ => Self::Protocol,
        }
    }
}

/// A safe bump allocator over one slice, for the few variable-length fields the broker may
/// send (reason strings, properties). One per connection; exhaustion is an error, after
/// which the connection is dropped and a new one gets a fresh slice.
#[derive(Debug)]
pub struct Scratch<'a>(&'a mut [u8]);

impl<'a> Scratch<'a> {
    /// Hands out `buf`, front to back.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self(buf)
    }
}

/// [`Scratch`] is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScratchFull;

impl<'a> BufferProvider<'a> for Scratch<'a> {
    type Buffer = &'a mut [u8];
    type ProvisionError = ScratchFull;

    fn provide_buffer(&mut self, len: usize) -> Result<&'a mut [u8], ScratchFull> {
        if self.0.len() < len {
            return Err(ScratchFull);
        }
        let (head, tail) = core::mem::take(&mut self.0).split_at_mut(len);
        self.0 = tail;
        Ok(head)
    }
}

/// A node's topics and connection options, built once from its identity.
#[derive(Debug, Clone)]
pub struct Uplink {
    client_id: String<{ 2 * MAX_ID_LEN + 1 }>,
    up: String<MAX_TOPIC_LEN>,
    status: String<MAX_TOPIC_LEN>,
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
            keep_alive_s,
        }
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Seconds of silence after which the node should [`Self::ping`].
    pub fn keep_alive_s(&self) -> u16 {
        self.keep_alive_s
    }

    /// Connects over `transport` and announces `online`.
    pub async fn connect<'c, T: Transport>(
        &self,
        client: &mut Mqtt<'c, T>,
        transport: T,
    ) -> Result<(), UplinkError> {
        let mut options = ConnectOptions::new().clean_start().will(
            WillOptions::new(topic_name(&self.status)?, binary(STATUS_OFFLINE)?)
                .at_least_once()
                .retain(),
        );
        if let Some(k) = NonZero::new(self.keep_alive_s) {
            options = options.keep_alive(KeepAlive::Seconds(k));
        }
        let id =
            MqttString::try_from(self.client_id.as_str()).map_err(|_| UplinkError::Protocol)?;
        client.connect(transport, &options, Some(id)).await?;
        self.publish_to(client, &self.status, STATUS_ONLINE, true)
            .await
    }

    /// Publishes one sealed frame at QoS 1 and waits for its PUBACK.
    pub async fn publish<'c, T: Transport>(
        &self,
        client: &mut Mqtt<'c, T>,
        frame: &[u8],
    ) -> Result<(), UplinkError> {
        self.publish_to(client, &self.up, frame, false).await
    }

    /// Proves the link is alive when there was nothing to send.
    pub async fn ping<'c, T: Transport>(
        &self,
        client: &mut Mqtt<'c, T>,
    ) -> Result<(), UplinkError> {
        client.ping().await?;
        loop {
            if let Event::Pingresp = client.poll().await? {
                return Ok(());
            }
        }
    }

    /// Closes the connection cleanly, announcing `offline` first (a clean DISCONNECT
    /// suppresses the will).
    pub async fn disconnect<'c, T: Transport>(
        &self,
        client: &mut Mqtt<'c, T>,
    ) -> Result<(), UplinkError> {
        self.publish_to(client, &self.status, STATUS_OFFLINE, true)
            .await?;
        client.disconnect(&DisconnectOptions::new()).await?;
        Ok(())
    }

    async fn publish_to<'c, T: Transport>(
        &self,
        client: &mut Mqtt<'c, T>,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), UplinkError> {
        let mut options =
            PublicationOptions::new(TopicReference::Name(topic_name(topic)?)).at_least_once();
        if retain {
            options = options.retain();
        }
        let pid = client
            .publish(&options, Bytes::from(payload))
            .await?
            .ok_or(UplinkError::Protocol)?;
        loop {
            match client.poll().await? {
                Event::PublishAcknowledged(ack) if ack.packet_identifier == pid => return Ok(()),
                Event::PublishRejected(rej) if rej.packet_identifier == pid => {
                    return Err(UplinkError::Refused(rej.reason_code as u8));
                }
                // Pings answered, anything else unexpected on a publish-only session.
                _ => {}
            }
        }
    }
}

fn topic_name(topic: &str) -> Result<TopicName<'_>, UplinkError> {
    MqttString::try_from(topic)
        .ok()
        .and_then(TopicName::new)
        .ok_or(UplinkError::Protocol)
}

fn binary(bytes: &[u8]) -> Result<MqttBinary<'_>, UplinkError> {
    MqttBinary::try_from(bytes).map_err(|_| UplinkError::Protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_hands_out_disjoint_slices_until_full() {
        let mut buf = [0u8; 10];
        let mut s = Scratch::new(&mut buf);
        let a = s.provide_buffer(4).unwrap();
        let b = s.provide_buffer(6).unwrap();
        a.fill(1);
        b.fill(2);
        assert_eq!(s.provide_buffer(1), Err(ScratchFull));
        assert_eq!(buf, [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn client_id_and_topics() {
        let u = Uplink::new(Identity::new("lyon", "aq-0001").unwrap(), 600);
        assert_eq!(u.client_id(), "lyon.aq-0001");
        assert_eq!(u.up.as_str(), "vigie/v1/lyon/aq-0001/up");
        assert_eq!(u.status.as_str(), "vigie/v1/lyon/aq-0001/status");
    }
}
