//! kisumctl: infrastructure as code and operations for the Kisum platform.

mod backup;
mod cli;
mod local;
mod matrix;
mod ops;
mod render;
mod rotation;
// `list`, `keys` and `remove` serve the secrets commands still to come.
#[allow(dead_code)]
mod secrets;
mod smoke;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
