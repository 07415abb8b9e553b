//! Where the log lines go: stderr, without a system call per request.
//!
//! The one access line every request ends with (`telemetry::track`, target
//! [`ACCESS_LOG_TARGET`] at INFO) is appended to a buffer that a background
//! thread writes out every [`FLUSH_INTERVAL`] (or at once past
//! [`FLUSH_BYTES`]). Every other line (warnings, errors, start and stop
//! messages) is written at once, after whatever was buffered before it, so
//! the order of lines is kept and nothing waits behind a request line.
//! [`flush`] writes the buffer out now; `serve` calls it when it stops.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The target of the per-request access line.
pub const ACCESS_LOG_TARGET: &str = "kisum_common::telemetry";
/// The longest a buffered access line waits.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Past this many buffered bytes, the buffer is written at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

static BUFFER: OnceLock<Arc<Buffer>> = OnceLock::new();

struct Buffer {
    pending: Mutex<Vec<u8>>,
    /// A thread writes the buffer out; without one nothing is buffered.
    flushed: bool,
}

impl Buffer {
    fn take(&self) -> Vec<u8> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
    }

    /// Writes the buffered lines, then `line`, under stderr's lock (so no
    /// other writer's chunk lands in between).
    fn write_out(&self, line: &[u8]) -> std::io::Result<()> {
        let stderr = std::io::stderr();
        let mut out = stderr.lock();
        let pending = self.take();
        if !pending.is_empty() {
            out.write_all(&pending)?;
        }
        if !line.is_empty() {
            out.write_all(line)?;
        }
        out.flush()
    }
}

fn buffer() -> &'static Buffer {
    BUFFER.get_or_init(|| {
        let buffer = Arc::new(Buffer {
            pending: Mutex::new(Vec::new()),
            flushed: true,
        });
        let flushing = Arc::clone(&buffer);
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    let _ = flushing.write_out(&[]);
                }
            });
        match spawned {
            Ok(_) => buffer,
            // No thread: every line is written at once instead.
            Err(_) => Arc::new(Buffer {
                pending: Mutex::new(Vec::new()),
                flushed: false,
            }),
        }
    })
}

/// Writes any buffered access lines now.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        let _ = buffer.write_out(&[]);
    }
}

/// The writer `telemetry::init_logging` logs with.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

/// One log line on its way out.
pub struct Line {
    buffer: &'static Buffer,
    buffered: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if !self.buffered {
            return self.buffer.write_out(bytes);
        }
        let full = {
            let mut pending = self
                .buffer
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(bytes);
            pending.len() >= FLUSH_BYTES
        };
        if full {
            self.buffer.write_out(&[])?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn is_access_line(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::INFO && metadata.target() == ACCESS_LOG_TARGET
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buffer: buffer(),
            buffered: false,
        }
    }

    fn make_writer_for(&'a self, metadata: &Metadata<'_>) -> Line {
        let buffer = buffer();
        Line {
            buffer,
            buffered: buffer.flushed && is_access_line(metadata),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_line_waits_in_the_buffer_and_any_other_line_writes_it_out() {
        // A buffer of its own (the global one belongs to the process).
        let buffer: &'static Buffer = Box::leak(Box::new(Buffer {
            pending: Mutex::new(Vec::new()),
            flushed: true,
        }));
        let mut access = Line {
            buffer,
            buffered: true,
        };
        access.write_all(b"{\"message\":\"request\"}\n").unwrap();
        assert_eq!(buffer.pending.lock().unwrap().len(), 22);
        let mut warning = Line {
            buffer,
            buffered: false,
        };
        warning.write_all(b"").unwrap();
        assert!(
            buffer.pending.lock().unwrap().is_empty(),
            "written before it"
        );
    }

    #[test]
    fn only_the_access_line_is_buffered() {
        let access = tracing::info_span!(target: "kisum_common::telemetry", "x");
        let access = access.metadata().unwrap();
        assert!(is_access_line(access));
        let warning = tracing::warn_span!(target: "kisum_common::telemetry", "x");
        assert!(!is_access_line(warning.metadata().unwrap()));
        let other = tracing::info_span!(target: "kisum_auth::login", "x");
        assert!(!is_access_line(other.metadata().unwrap()));
    }
}
