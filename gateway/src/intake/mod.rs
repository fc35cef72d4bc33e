//! Intake: frames arrive over MQTT (an external Mosquitto, or the embedded broker of the
//! no-servers mode) and acknowledgements leave the same way.

pub mod broker;
pub mod mqtt;
