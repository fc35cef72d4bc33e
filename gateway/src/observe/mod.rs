//! Observing: the typed metrics, the health `/readyz` reports, and each device's state
//! as its traffic shows it.

pub mod devices;
pub mod health;
pub mod metrics;
