//! `vigie-gateway`: parses the command line and runs the command (`gateway::ops`); an
//! error is printed as one line and the exit status is 1.
// Layout (docs/ARCHITECTURE.md): functions of at most 60 lines (`clippy.toml`) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match gateway::ops::run(gateway::ops::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
