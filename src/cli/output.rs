//! How commands print data on stdout, and messages on stderr.
//!
//! Every command writes through [`out!`], [`outln!`], [`err!`] and
//! [`errln!`] rather than `print!` and friends, which panic when the
//! reader of a pipe has gone (`kisumctl status local -o json | head -c 10`).
//! Here a closed pipe ends that stream quietly: nothing more is written to
//! it and the command finishes with its own exit code. Any other write
//! error of stdout (a full disk) is kept for `cli::main` to report.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first error writing stdout other than a closed pipe.
static STDOUT_FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Writes to stdout; `false` once its reader has gone.
pub fn write_stdout(bytes: &[u8]) -> bool {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(error) => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            if error.kind() != io::ErrorKind::BrokenPipe
                && let Ok(mut failed) = STDOUT_FAILED.lock()
            {
                failed.get_or_insert_with(|| error.to_string());
            }
            false
        }
    }
}

/// Writes to stderr; a closed or failing stderr is given up quietly
/// (there is nowhere left to say so).
pub fn write_stderr(bytes: &[u8]) {
    if STDERR_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut err = io::stderr().lock();
    if err.write_all(bytes).and_then(|()| err.flush()).is_err() {
        STDERR_CLOSED.store(true, Ordering::Relaxed);
    }
}

pub fn print_stdout(args: fmt::Arguments) {
    write_stdout(fmt::format(args).as_bytes());
}

pub fn print_stderr(args: fmt::Arguments) {
    write_stderr(fmt::format(args).as_bytes());
}

/// Why stdout could not be written, when it was not a closed pipe.
pub fn stdout_error() -> Option<String> {
    STDOUT_FAILED.lock().ok().and_then(|failed| failed.clone())
}

/// `print!` that survives a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::print_stdout(format_args!($($arg)*))
    };
}

/// `println!` that survives a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::output::print_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::print_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that survives a closed pipe.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::cli::output::print_stderr(format_args!($($arg)*))
    };
}

/// `eprintln!` that survives a closed pipe.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::print_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, errln, out, outln};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text and tables.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Prints rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (n, cell) in row.iter().enumerate() {
            widths[n] = widths[n].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(n, cell)| format!("{cell:<width$}", width = widths[n]))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}
