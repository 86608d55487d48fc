//! seam's own log, redacted: every line goes through the token scanner before it reaches
//! standard error.
//!
//! Takes the formatted events of `tracing-subscriber`; gives them to stderr with tokens,
//! Basic credentials and `name=value` secrets replaced, like every stored value. Error
//! messages quote input (a serde error names the value it could not read), so a log line
//! is as much a place a secret could land as a table.

use std::io::Write;

use seam_collector::normalise::token::TokenConfig;

/// A `MakeWriter` for `tracing-subscriber` that scrubs each event before writing it.
#[derive(Debug, Clone, Default)]
pub struct RedactedStderr {
    scanner: TokenConfig,
}

impl RedactedStderr {
    /// Scrubs with `scanner` (the configured extra patterns and names included). Its
    /// fingerprint keys are not needed: markers in the log carry no fingerprint.
    pub fn new(mut scanner: TokenConfig) -> Self {
        scanner.keys = Default::default();
        scanner.links_file = None;
        Self { scanner }
    }
}

/// One event being formatted.
#[derive(Debug)]
pub struct EventWriter {
    scanner: TokenConfig,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let out = match self.scanner.scan(&text) {
            Some(s) if s.changed => s.text,
            _ => text.into_owned(),
        };
        self.buf.clear();
        std::io::stderr().lock().write_all(out.as_bytes())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            scanner: self.scanner.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter as _;

    #[test]
    fn a_log_line_loses_its_secrets() {
        let mut w = RedactedStderr::new(TokenConfig::default()).make_writer();
        w.write_all(b"invalid value: string \"Bearer abc.def-123\", password=hunter2\n")
            .ok();
        let text = String::from_utf8_lossy(&w.buf).into_owned();
        let scanned = w.scanner.scan(&text).map(|s| s.text).unwrap_or_default();
        assert!(
            !scanned.contains("abc.def-123") && !scanned.contains("hunter2"),
            "{scanned}"
        );
        w.buf.clear();
    }
}
