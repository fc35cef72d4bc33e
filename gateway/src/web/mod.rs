//! The web side: the HTTP server (`/metrics`, `/healthz`, `/readyz`, `/devices`, the
//! status pages, quarantine replay) and the live feed it shows.

pub mod feed;
pub mod http;
pub mod page;
