//! Delivery decisions: a database answer → what to do and the backoff; the rows
//! VictoriaMetrics dropped after answering 204.

pub mod discards;
pub mod retry;
