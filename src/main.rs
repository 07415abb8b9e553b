//! kisumctl: infrastructure as code and operations for the Kisum platform.

mod cli;
mod matrix;
mod ops;
mod render;
#[allow(dead_code, unused_imports)] // used by `deploy local`, arriving next
mod secrets;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
