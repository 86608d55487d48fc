//! Where to cut what was read from a file, so that every text handed over ends at a line end
//! and, for Mule logs, at an entry end: a stack trace being written at the end of a file waits
//! for the line that starts the next entry, or for the file to stay unchanged for
//! `multiline_timeout`, and is then taken as it is. A line cut mid-way (no newline yet) waits
//! the same way. A line longer than `max_batch_bytes` is taken as it is, so that it never
//! wedges the file.
//!
//! Takes the bytes read from the taken offset (always a line start) and what is known about
//! the file's end; gives how many of them to take now. Pure.

use crate::sources::mule::decode::is_header;
use crate::sources::pull::PullFormat;

/// The most lines one text holds (the collector refuses inputs of more than 100,000 records).
pub(crate) const MAX_LINES: usize = 50_000;

/// Bytes of a line looked at to tell whether it starts a log4j entry.
const HEADER_SCAN: usize = 4096;

/// How the end of what was read is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Mule (and auto): the text ends before the last line that starts an entry (a log4j
    /// header or a line starting with `{`) while the file may still grow.
    Entries,
    /// APIM and OTLP/JSON (one JSON document per line): only an incomplete last line
    /// waits.
    Lines,
}

impl Mode {
    /// The mode of a format.
    pub(crate) fn of(format: PullFormat) -> Self {
        match format {
            PullFormat::Mule | PullFormat::Auto => Mode::Entries,
            PullFormat::Apim | PullFormat::OtlpJson => Mode::Lines,
        }
    }
}

/// What to take of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cut {
    /// Bytes to take from the start of the read.
    pub(crate) take: usize,
    /// More can be taken right away (the read stopped at a limit, not at the file's end).
    pub(crate) more: bool,
}

/// Whether `line` (without its newline) starts a Mule entry: a log4j header in a pattern
/// seam knows, or a JSON Logger record (`{`).
pub(crate) fn is_entry_start(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    if line.first() == Some(&b'{') {
        return true;
    }
    let head = line.get(..HEADER_SCAN.min(line.len())).unwrap_or(line);
    is_header(&String::from_utf8_lossy(head))
}

/// Offset just past the `n`th newline, when `buf` has more than `n` lines' worth of bytes
/// after it.
fn nth_line_end(buf: &[u8], n: usize) -> Option<usize> {
    buf.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n.saturating_sub(1))
        .map(|(i, _)| i.saturating_add(1))
        .filter(|end| *end < buf.len())
}

/// Start of the last line of `text` (complete lines, ending with a newline) that starts an
/// entry.
fn last_entry_start(text: &[u8]) -> Option<usize> {
    let mut end = text.len();
    while end > 0 {
        // `end` is just past a newline: the line runs from the newline before it.
        let body_end = end.saturating_sub(1);
        let before = text.get(..body_end)?;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i.saturating_add(1));
        if is_entry_start(before.get(start..)?) {
            return Some(start);
        }
        end = start;
    }
    None
}

/// Start of the first line of `text` (complete lines) that starts an entry, when lines that
/// are not blank come before it: those go alone, so that the entries after them are not
/// refused with them (the Mule decoder refuses a text that does not start with an entry).
fn leading_strays(text: &[u8]) -> Option<usize> {
    let mut start = 0usize;
    let mut stray = false;
    while start < text.len() {
        let rest = text.get(start..)?;
        let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = rest.get(..len)?;
        if is_entry_start(line) {
            return (stray && start > 0).then_some(start);
        }
        stray |= !line.trim_ascii().is_empty();
        start = start.saturating_add(len).saturating_add(1);
    }
    None
}

/// How much of `buf` (read from a line start, at most `limit` bytes) to take now.
/// `at_end`: `buf` reaches the file's end as it is now. `idle`: the file has not changed for
/// `multiline_timeout` (or will not: a finished gzip stream).
pub(crate) fn cut(buf: &[u8], mode: Mode, at_end: bool, idle: bool, limit: usize) -> Cut {
    if buf.is_empty() {
        return Cut {
            take: 0,
            more: false,
        };
    }
    // At most MAX_LINES lines: the rest is ready for the next step.
    let (view, capped) = match nth_line_end(buf, MAX_LINES) {
        Some(end) => (buf.get(..end).unwrap_or(buf), true),
        None => (buf, false),
    };
    let at_end = at_end && !capped;
    let more = !at_end;
    let full = capped || buf.len() >= limit;
    let complete = view
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i.saturating_add(1));
    if mode == Mode::Entries
        && let Some(end) = leading_strays(view.get(..complete).unwrap_or_default())
    {
        return Cut {
            take: end,
            more: true,
        };
    }
    if at_end && idle {
        // Nothing more will come soon: everything as it is.
        return Cut {
            take: view.len(),
            more: false,
        };
    }
    let take = match mode {
        Mode::Lines => complete,
        Mode::Entries => match last_entry_start(view.get(..complete).unwrap_or_default()) {
            // Up to the last entry, which may go on.
            Some(start) if start > 0 => start,
            // One entry, at the end of the file: wait for its end.
            Some(_) if at_end => 0,
            // One entry longer than a step, or lines that start none: take the lines.
            _ => complete,
        },
    };
    if take > 0 || !full {
        return Cut { take, more };
    }
    // A full read with nothing to cut at: the complete lines, or a line longer than the
    // limit as it is.
    let take = if complete > 0 { complete } else { view.len() };
    Cut { take, more: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "INFO  2024-11-05 09:14:03,139 [[MuleRuntime].uber.03: [orders-papi-prd].orders-papi-main.CPU_LITE @4f1a2b3c] [processor: orders-papi-main/processors/0; event: 8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07] org.mule.runtime.core.internal.processor.LoggerMessageProcessor: first\n";
    const H2: &str = "ERROR 2024-11-05 09:14:04,139 [[MuleRuntime].uber.03: [orders-papi-prd].orders-papi-main.CPU_LITE @4f1a2b3c] [processor: orders-papi-main/processors/1; event: 8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07] org.mule.runtime.core.internal.processor.LoggerMessageProcessor: failed\n";
    const TRACE: &str = "java.lang.IllegalStateException: boom\n\tat com.example.A.run(A.java:10)\n\tat com.example.B.run(B.java:20)\n";
    const BIG: usize = 1 << 20;

    fn c(buf: &str, mode: Mode, at_end: bool, idle: bool) -> usize {
        cut(buf.as_bytes(), mode, at_end, idle, BIG).take
    }

    #[test]
    fn headers_and_json_records_start_entries() {
        assert!(is_entry_start(H1.trim_end().as_bytes()));
        assert!(is_entry_start(b"{\"message\":\"x\"}\r"));
        assert!(is_entry_start(b"\xef\xbb\xbf{\"a\":1}"));
        assert!(!is_entry_start(b"\tat com.example.A.run(A.java:10)"));
        assert!(!is_entry_start(b"Caused by: java.io.IOException"));
        assert!(!is_entry_start(b""));
    }

    #[test]
    fn a_stack_trace_at_the_end_waits_for_the_next_entry() {
        let text = format!("{H1}{H2}{TRACE}");
        // The file may grow: up to the ERROR entry, which waits.
        assert_eq!(c(&text, Mode::Entries, true, false), H1.len());
        // The next entry arrived: the ERROR entry with its whole trace goes.
        let grown = format!("{text}{H1}");
        assert_eq!(c(&grown, Mode::Entries, true, false), text.len());
        // No growth for the timeout: everything as it is.
        assert_eq!(c(&text, Mode::Entries, true, true), text.len());
        // One entry alone at the end waits.
        let alone = format!("{H2}{TRACE}");
        assert_eq!(c(&alone, Mode::Entries, true, false), 0);
        // Not at the end (a limit stopped the read): up to the last entry all the same.
        let cut_at_limit = cut(text.as_bytes(), Mode::Entries, false, false, text.len());
        assert_eq!(
            cut_at_limit,
            Cut {
                take: H1.len(),
                more: true
            }
        );
    }

    #[test]
    fn json_logger_lines_hold_back_only_the_last_one() {
        let text = "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n";
        assert_eq!(c(text, Mode::Entries, true, false), 16);
        assert_eq!(c(text, Mode::Entries, true, true), text.len());
    }

    #[test]
    fn a_line_cut_mid_way_waits_until_the_timeout() {
        let text = "{\"a\":1}\n{\"a\":2}\n{\"a\":";
        assert_eq!(c(text, Mode::Lines, true, false), 16);
        assert_eq!(c(text, Mode::Lines, true, true), text.len());
        assert_eq!(c("{\"a\":", Mode::Lines, true, false), 0);
        assert_eq!(c("{\"a\":", Mode::Entries, true, false), 0);
        // Mule: the cut-off line is not a complete entry start yet; the one before waits.
        assert_eq!(c(text, Mode::Entries, true, false), 8);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_taken_as_it_is() {
        let long = "x".repeat(100);
        for mode in [Mode::Lines, Mode::Entries] {
            let got = cut(long.as_bytes(), mode, false, false, 100);
            assert_eq!(
                got,
                Cut {
                    take: 100,
                    more: true
                },
                "{mode:?}"
            );
        }
        // One entry longer than a step: its complete lines go.
        let text = format!("{H2}{TRACE}");
        let got = cut(text.as_bytes(), Mode::Entries, false, false, text.len());
        assert_eq!(got.take, text.len());
    }

    #[test]
    fn lines_that_start_no_entry_are_taken() {
        let text = format!("{TRACE}tail");
        assert_eq!(c(&text, Mode::Entries, true, false), TRACE.len());
    }

    #[test]
    fn lines_before_the_first_entry_go_alone() {
        let text = format!("stray line\n\n{H1}{H2}");
        assert_eq!(
            cut(text.as_bytes(), Mode::Entries, true, true, BIG),
            Cut {
                take: 12,
                more: true
            }
        );
        // Blank lines before the first entry are no strays.
        let text = format!("\n{H1}{H2}");
        assert_eq!(c(&text, Mode::Entries, true, false), 1 + H1.len());
        // APIM lines have no entries.
        let text = format!("stray line\n{H1}");
        assert_eq!(c(&text, Mode::Lines, true, true), text.len());
    }

    #[test]
    fn crlf_lines_end_at_their_newline() {
        let text = "{\"a\":1}\r\n{\"a\":2}\r\n";
        assert_eq!(c(text, Mode::Entries, true, false), 9);
        assert_eq!(c(text, Mode::Lines, true, false), text.len());
    }

    #[test]
    fn at_most_max_lines_per_step() {
        let text = "{}\n".repeat(MAX_LINES + 10);
        let got = cut(text.as_bytes(), Mode::Lines, true, false, BIG);
        assert_eq!(
            got,
            Cut {
                take: MAX_LINES * 3,
                more: true
            }
        );
        let got = cut(text.as_bytes(), Mode::Entries, true, true, BIG);
        // Capped: not the file's end, so the last entry of the step waits for the next.
        assert_eq!(
            got,
            Cut {
                take: (MAX_LINES - 1) * 3,
                more: true
            }
        );
        let exact = "{}\n".repeat(MAX_LINES);
        let got = cut(exact.as_bytes(), Mode::Lines, true, true, BIG);
        assert_eq!(
            got,
            Cut {
                take: exact.len(),
                more: false
            }
        );
    }

    #[test]
    fn formats_map_to_modes() {
        assert_eq!(Mode::of(PullFormat::Mule), Mode::Entries);
        assert_eq!(Mode::of(PullFormat::Auto), Mode::Entries);
        assert_eq!(Mode::of(PullFormat::Apim), Mode::Lines);
        assert_eq!(Mode::of(PullFormat::OtlpJson), Mode::Lines);
    }
}
