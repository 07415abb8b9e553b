//! kisumctl: infrastructure as code and operations for the Kisum platform.

// Output goes through `cli::output` (`out!`, `outln!`, `err!`, `errln!`),
// which survives a closed pipe; `print!` and friends panic there.
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod aws;
mod backup;
mod cli;
mod cluster;
mod db;
mod dns;
mod local;
mod matrix;
mod ops;
mod render;
mod rotation;
mod secrets;
mod smoke;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
