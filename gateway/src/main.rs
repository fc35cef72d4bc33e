//! `gateway` binary. The service lands with the gateway issue; until then it states so
//! instead of pretending to run.

fn main() -> std::process::ExitCode {
    eprintln!(
        "vigie gateway {}: the service is not implemented yet; see README.md",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
