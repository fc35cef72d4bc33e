//! The alerts' metrics: messages sent, given up and waiting, by channel, and the alerts in
//! force.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A channel label: `email` or `webhook`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// The channel.
    pub channel: &'static str,
}

/// The channels.
pub const CHANNELS: [&str; 2] = ["email", "webhook"];

/// `vigie_alert_*`.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    /// `vigie_alert_messages_sent_total{channel}`.
    pub sent: Family<ChannelLabel, Counter>,
    /// `vigie_alert_messages_failed_total{channel}`.
    pub failed: Family<ChannelLabel, Counter>,
    /// `vigie_alert_messages_pending`.
    pub pending: Gauge,
    /// `vigie_alerts_active`.
    pub active: Gauge,
}

impl AlertMetrics {
    /// The messages sent on `channel`.
    pub fn sent_of(&self, channel: &'static str) -> Counter {
        self.sent.get_or_create_owned(&ChannelLabel { channel })
    }

    /// The messages given up on `channel`.
    pub fn failed_of(&self, channel: &'static str) -> Counter {
        self.failed.get_or_create_owned(&ChannelLabel { channel })
    }

    pub(super) fn register(&self, r: &mut Registry) {
        for channel in CHANNELS {
            self.sent_of(channel);
            self.failed_of(channel);
        }
        r.register(
            "alert_messages_sent",
            "Alert messages (e-mails, webhook calls) the receiving server accepted, by channel.",
            self.sent.clone(),
        );
        r.register(
            "alert_messages_failed",
            "Alert messages given up (refused for good, older than a day, or pushed out of a full outbox), by channel.",
            self.failed.clone(),
        );
        r.register(
            "alert_messages_pending",
            "Alert messages waiting to be sent or retried.",
            self.pending.clone(),
        );
        r.register(
            "alerts_active",
            "Alerts told and not yet ended.",
            self.active.clone(),
        );
    }
}
