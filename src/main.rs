//! kisumctl: infrastructure as code and operations for the Kisum platform.

mod backup;
mod cli;
mod dns;
mod local;
mod matrix;
mod ops;
mod render;
// `list`, `keys` and `remove` serve the secrets commands still to come.
#[allow(dead_code)]
mod secrets;
mod smoke;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
