//! Acknowledgements: which MQTT acknowledgements may go out, in what order; the device
//! acknowledgements waiting for the broker; what a durable commit settled.

pub mod downlinks;
pub mod flow;
pub mod settle;
