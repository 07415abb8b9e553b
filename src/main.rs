//! kisumctl: infrastructure as code and operations for the Kisum platform.

mod cli;
mod matrix;
mod ops;
mod render;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
