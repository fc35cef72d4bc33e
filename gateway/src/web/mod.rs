//! The web side: the HTTP server (`/metrics`, `/healthz`, `/readyz`, `/devices`, the
//! status pages, quarantine replay).

pub mod http;
pub mod page;
