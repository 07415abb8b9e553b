//! kisumctl: infrastructure as code and operations for the Kisum platform.

mod backup;
mod cli;
mod matrix;
mod ops;
mod render;
// `smoke` reads the store; writing, listing and generating are for
// `deploy local`.
#[allow(dead_code)]
mod secrets;
mod smoke;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
