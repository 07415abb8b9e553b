//! `kisumctl logs local SERVICE [-f] [-n N] [--raw]`.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::Duration;

use super::Exit;
use super::output::{errln, write_stdout};
use crate::local::Context;
use crate::matrix::Environment;

/// Print the log of a process of a local environment.
///
/// A service, a data service (postgres, redis, mongo) or `supervisor`.
/// Control characters a process wrote (terminal escape sequences, a bell,
/// a carriage return) are printed as escapes such as `\u{1b}`, and bytes
/// that are not UTF-8 as `\xff`, so that a log cannot drive the terminal;
/// `--raw` prints the file's bytes as they are.
///
/// Exit codes: 0 printed, 2 unknown process or unusable input.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Environment (only `local` runs processes).
    pub(super) env: String,

    /// The process whose log to print.
    service: String,

    /// Keep printing what is appended, until interrupted.
    #[arg(short, long)]
    follow: bool,

    /// Only the last N lines (all by default).
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,

    /// Print the bytes of the log as they are, control characters
    /// included.
    #[arg(long)]
    raw: bool,
}

pub fn run(dir: &Path, env: &Environment, args: Args) -> anyhow::Result<Exit> {
    let context = Context::for_environment(env, dir)?;
    let valid = args
        .service
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let path = context.state.log(&args.service);
    if !valid || !path.is_file() {
        let mut known: Vec<String> = std::fs::read_dir(context.state.logs())
            .map(|entries| {
                entries
                    .filter_map(|e| {
                        e.ok()?
                            .file_name()
                            .to_str()?
                            .strip_suffix(".log")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        known.sort();
        errln!(
            "error: no log for `{}` in {}; known: {}",
            crate::matrix::load::printable(&args.service),
            context.state.logs().display(),
            if known.is_empty() {
                "none (deploy first)".into()
            } else {
                known.join(", ")
            }
        );
        return Ok(Exit::UnusableInput);
    }
    let mut file = std::fs::File::open(&path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let shown = match args.lines {
        Some(n) => last_lines(&bytes, n),
        None => &bytes[..],
    };
    let mut printer = Printer {
        raw: args.raw,
        pending: Vec::new(),
    };
    // A closed pipe (`| head`) ends the command quietly, following or not.
    if !printer.print(shown) || !args.follow {
        return Ok(Exit::Clean);
    }
    let mut position = file.stream_position()?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let length = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if length < position {
            // Truncated or replaced (a purge and a new deploy).
            file = std::fs::File::open(&path)?;
            position = 0;
        }
        file.seek(SeekFrom::Start(position))?;
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk)?;
        position += chunk.len() as u64;
        if !chunk.is_empty() && !printer.print(&chunk) {
            return Ok(Exit::Clean);
        }
    }
}

/// The last `n` lines of a log.
fn last_lines(bytes: &[u8], n: usize) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if n == 0 {
        return &[];
    }
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map_or(0, |(at, _)| at + 1);
    &bytes[start..]
}

/// Writes log bytes to stdout, escaped unless raw.
struct Printer {
    raw: bool,
    /// The start of a UTF-8 sequence cut at the end of the last chunk.
    pending: Vec<u8>,
}

impl Printer {
    /// `false` once stdout's reader has gone.
    fn print(&mut self, chunk: &[u8]) -> bool {
        if self.raw {
            return write_stdout(chunk);
        }
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(chunk);
        let (text, rest) = escape(&bytes);
        self.pending = rest.to_vec();
        write_stdout(text.as_bytes())
    }
}

/// The bytes with control characters (except newline and tab) and
/// invalid UTF-8 escaped; an incomplete UTF-8 sequence at the very end is
/// returned apart, for the next chunk.
fn escape(mut bytes: &[u8]) -> (String, &[u8]) {
    let mut out = String::with_capacity(bytes.len());
    loop {
        let (valid, error) = match std::str::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(error) => (
                std::str::from_utf8(&bytes[..error.valid_up_to()]).unwrap_or_default(),
                Some(error),
            ),
        };
        for c in valid.chars() {
            if c.is_control() && c != '\n' && c != '\t' {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        let Some(error) = error else {
            return (out, &[]);
        };
        let rest = &bytes[error.valid_up_to()..];
        match error.error_len() {
            // Cut short at the end: maybe completed by the next chunk.
            None => return (out, rest),
            Some(length) => {
                for byte in &rest[..length] {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
                bytes = &rest[length..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bad_bytes_are_escaped() {
        let (text, rest) = escape(b"ok\t\xc3\xa9\n\x1b[31mred\x1b[0m\x07\r\xff\xfe end\n");
        assert_eq!(
            text,
            "ok\t\u{e9}\n\\u{1b}[31mred\\u{1b}[0m\\u{7}\\r\\xff\\xfe end\n"
        );
        assert!(rest.is_empty());
        assert!(!text.bytes().any(|b| b < 0x20 && b != b'\n' && b != b'\t'));
        let c1 = escape("a\u{9b}b".as_bytes()).0;
        assert_eq!(c1, "a\\u{9b}b");
    }

    #[test]
    fn a_sequence_cut_between_chunks_is_kept_for_the_next() {
        let (text, rest) = escape(b"caf\xc3");
        assert_eq!((text.as_str(), rest), ("caf", &b"\xc3"[..]));
        let mut joined = rest.to_vec();
        joined.extend_from_slice(b"\xa9!");
        assert_eq!(escape(&joined), ("\u{e9}!".to_string(), &b""[..]));
    }

    #[test]
    fn the_last_lines_are_cut_at_line_ends() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }
}
