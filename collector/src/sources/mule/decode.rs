//! Mule 4 log shapes to events.
//!
//! Takes a body sent to `/ingest/mule` (or a file `seam ingest` read) and the line number of
//! its first line; gives [`MuleItem`]s: one [`MuleEvent`] per log event, with the lines of a
//! multi-line event (error blocks, stack traces, pretty-printed JSON Logger output, banners)
//! reassembled, and rejected lines with their line number and reason.
//!
//! Text: log4j lines in the default `[processor: …; event: …]` pattern, the `[%MDC]`
//! pattern, the older `[event: …]` pattern and the CloudHub `[MM-dd HH:mm:ss]` pattern. A line
//! that does not start an event belongs to the event before it when that event is open (its
//! message was empty, as before an error block or banner; its JSON is not complete yet) or
//! when it looks like a continuation (indented, a stack frame, `Caused by:`, a `*****` rule,
//! a `Key : value` block line, blank). Anything else is rejected with its line number.
//!
//! JSON: JSON Logger records as JSON Lines or pretty-printed documents, CloudHub 1.0 Logs
//! API exports (an array of `{recordId, line, event{…}}`) and the older `{"data":[…]}`.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::decode::json_stream::{Piece, check_first_line, pieces};
use crate::error::IngestError;
pub use crate::sources::apim::decode::Pos;

/// The formats `/ingest/mule` knows, for error messages.
pub const FORMATS: &[&str] = &[
    "mule_log4j (default pattern: LEVEL time [thread] [processor: …; event: …] logger: message)",
    "mule_log4j_mdc ([%MDC] pattern)",
    "mule_log4j_event (older [event: …] pattern)",
    "mule_cloudhub_log4j ([MM-dd HH:mm:ss] LEVEL logger [thread]: message)",
    "mule_json_logger (JSON Logger records, JSON Lines or pretty-printed)",
    "cloudhub_logs_api (CloudHub 1.0 Logs API export, a JSON array or {\"data\":[…]})",
];

/// An event time as the input wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeText {
    /// Text, parsed by `normalise::time`.
    Text(String),
    /// Epoch milliseconds.
    EpochMs(f64),
    /// Epoch nanoseconds (OTLP).
    Nanos(i64),
}

/// One Mule log event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MuleEvent {
    /// First line (or record index).
    pub pos: Option<Pos>,
    /// Level.
    pub level: Option<String>,
    /// Time.
    pub time: Option<TimeText>,
    /// Thread.
    pub thread: Option<String>,
    /// Processor path.
    pub processor: Option<String>,
    /// Correlation id from the pattern.
    pub correlation_id: Option<String>,
    /// MDC entries.
    pub mdc: Vec<(String, String)>,
    /// Logger.
    pub logger: Option<String>,
    /// The message with its continuation lines.
    pub message: String,
    /// Every line of the event as received.
    pub raw: String,
    /// The shape.
    pub format: &'static str,
    /// CloudHub fields (instance, deployment, record id).
    pub extra: Vec<(String, String)>,
}

/// One item of a Mule input.
#[derive(Debug, Clone, PartialEq)]
pub enum MuleItem {
    /// An event.
    Event(Box<MuleEvent>),
    /// A refused line or record.
    Reject {
        /// Where.
        pos: Pos,
        /// Why.
        reason: String,
        /// Its text.
        raw: String,
    },
}

const LEVELS: &str = r"TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|SEVERE";
const TIME: &str = r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?";

static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^(?P<level>{LEVELS})\s+(?P<time>{TIME})\s+\[(?P<thread>.*?)\]\s+\[(?:processor: (?P<proc>[^;\]]*); event: (?P<event>[^\]]*)|event: (?P<event2>[^\]]*)|\{{(?P<mdc>[^}}]*)\}}|(?P<empty>))\]\s+(?P<logger>[^\s:]+):\s?"
    ))
    .unwrap_or_else(|e| panic!("header regex: {e}"))
});

static CLOUDHUB: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^\[(?P<time>(?:\d{{4}}-)?\d{{2}}-\d{{2}} \d{{2}}:\d{{2}}:\d{{2}}(?:[.,]\d+)?)\]\s+(?P<level>{LEVELS})\s+(?P<logger>\S+)\s+\[(?P<thread>.*?)\]:\s?"
    ))
    .unwrap_or_else(|e| panic!("cloudhub regex: {e}"))
});

static CONTINUATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:\s|at |Caused by:|Suppressed:|\.\.\. \d+ more|\*{5,}|-{5,}|[\w$.]+(?:Exception|Error|Throwable)\b|[A-Z][A-Za-z ()]+?\s+: |[}\]],?\s*$|$)",
    )
    .unwrap_or_else(|e| panic!("continuation regex: {e}"))
});

/// Brace depth of JSON text outside strings, carried across lines.
#[derive(Debug, Default, Clone, Copy)]
struct JsonDepth {
    depth: i64,
    in_str: bool,
    esc: bool,
}

impl JsonDepth {
    fn feed(&mut self, s: &str) {
        for b in s.bytes() {
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// The message: what follows a header match (the patterns end before it, so that matching
/// a header costs the header's length, not the message's).
fn message_after(line: &str, header: Option<regex::Match<'_>>) -> String {
    line.get(header.map_or(line.len(), |m| m.end())..)
        .unwrap_or_default()
        .to_string()
}

fn header(line: &str) -> Option<MuleEvent> {
    if let Some(c) = HEADER.captures(line) {
        let get = |n: &str| c.name(n).map(|m| m.as_str().trim().to_string());
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let mdc: Vec<(String, String)> = get("mdc")
            .map(|m| {
                m.split(", ")
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let from_mdc = |keys: &[&str]| {
            mdc.iter()
                .find(|(k, _)| keys.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let format = if c.name("mdc").is_some() {
            "mule_log4j_mdc"
        } else if c.name("event2").is_some() {
            "mule_log4j_event"
        } else {
            "mule_log4j"
        };
        return Some(MuleEvent {
            level: get("level"),
            time: get("time").map(TimeText::Text),
            thread: get("thread"),
            processor: nonempty(get("proc")).or_else(|| from_mdc(&["processorPath"])),
            correlation_id: nonempty(get("event").or_else(|| get("event2")))
                .or_else(|| from_mdc(&["correlationId", "correlation.id"])),
            logger: get("logger"),
            message: message_after(line, c.get(0)),
            format,
            mdc,
            ..Default::default()
        });
    }
    let c = CLOUDHUB.captures(line)?;
    let get = |n: &str| c.name(n).map(|m| m.as_str().trim().to_string());
    Some(MuleEvent {
        level: get("level"),
        time: get("time").map(TimeText::Text),
        thread: get("thread"),
        logger: get("logger"),
        message: message_after(line, c.get(0)),
        format: "mule_cloudhub_log4j",
        ..Default::default()
    })
}

/// Whether `line` starts a log4j event in a pattern seam knows.
pub fn is_header(line: &str) -> bool {
    header(line).is_some()
}

fn unknown() -> IngestError {
    IngestError::UnknownFormat(format!(
        "the input does not start with a Mule log shape seam knows; known formats: {}",
        FORMATS.join("; ")
    ))
}

struct Open {
    ev: MuleEvent,
    /// The message was empty: a block (banner, error report) follows, up to its second
    /// `*****` rule.
    block: bool,
    rules: u8,
    json: JsonDepth,
    line: u64,
}

fn close(open: Option<Open>, out: &mut Vec<MuleItem>) {
    if let Some(o) = open {
        let mut ev = o.ev;
        ev.pos = Some(Pos::Line(o.line));
        let trimmed = ev.message.trim_end().len();
        ev.message.truncate(trimmed);
        let trimmed = ev.raw.trim_end().len();
        ev.raw.truncate(trimmed);
        out.push(MuleItem::Event(Box::new(ev)));
    }
}

fn text_lines(
    text: &str,
    first_line: u64,
    out: &mut Vec<MuleItem>,
    strict: bool,
) -> Result<(), IngestError> {
    let mut open: Option<Open> = None;
    let mut seen_any = false;
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        let n = first_line.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
        if let Some(mut ev) = header(line) {
            close(open.take(), out);
            seen_any = true;
            let mut json = JsonDepth::default();
            let block = ev.message.trim().is_empty();
            if ev.message.trim_start().starts_with(['{', '[']) {
                json.feed(&ev.message);
            }
            ev.raw = line.to_string();
            open = Some(Open {
                ev,
                block,
                rules: 0,
                json,
                line: n,
            });
            continue;
        }
        if !seen_any {
            if line.trim().is_empty() {
                continue;
            }
            if strict {
                return Err(unknown());
            }
            out.push(MuleItem::Reject {
                pos: Pos::Line(n),
                reason: "not a Mule log line: no level and timestamp header in a known pattern, before the first event of the input".into(),
                raw: line.to_string(),
            });
            continue;
        }
        let attach = match &open {
            Some(o) => o.block || o.json.depth > 0 || CONTINUATION.is_match(line),
            None => false,
        };
        match (&mut open, attach) {
            (Some(o), true) => {
                if o.block
                    && line.trim_end().len() >= 5
                    && line.trim_end().bytes().all(|b| b == b'*')
                {
                    o.rules += 1;
                    if o.rules >= 2 {
                        o.block = false;
                    }
                }
                o.ev.raw.push('\n');
                o.ev.raw.push_str(line);
                o.ev.message.push('\n');
                o.ev.message.push_str(line);
                if o.json.depth > 0 {
                    o.json.feed(line);
                }
            }
            _ => {
                if line.trim().is_empty() {
                    continue;
                }
                out.push(MuleItem::Reject {
                    pos: Pos::Line(n),
                    reason: "not a Mule log line: no level and timestamp header in a known pattern, and not a continuation of the event before it".into(),
                    raw: line.to_string(),
                });
            }
        }
    }
    close(open, out);
    Ok(())
}

fn str_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A CloudHub Logs API record (`{recordId, deploymentId, instanceId, line, event{…}}`, or a
/// v1 `{message, priority, timestamp}`).
fn cloudhub(rec: &Map<String, Value>, pos: Pos) -> Option<MuleEvent> {
    let ev = rec.get("event").and_then(Value::as_object).unwrap_or(rec);
    let message = str_of(ev.get("message"))?;
    let time = match ev.get("timestamp") {
        Some(Value::Number(n)) => n.as_f64().map(TimeText::EpochMs),
        Some(Value::String(s)) => Some(TimeText::Text(s.clone())),
        _ => None,
    };
    let mut extra = Vec::new();
    for k in [
        "recordId",
        "deploymentId",
        "instanceId",
        "line",
        "sequenceNumber",
    ] {
        if let Some(v) = str_of(rec.get(k)) {
            extra.push((k.to_string(), v));
        }
    }
    Some(MuleEvent {
        pos: Some(pos),
        level: str_of(ev.get("priority")),
        time,
        thread: str_of(ev.get("threadName")),
        logger: str_of(ev.get("loggerName")),
        raw: Value::Object(rec.clone()).to_string(),
        message,
        format: "cloudhub_logs_api",
        extra,
        ..Default::default()
    })
}

fn is_json_logger(m: &Map<String, Value>) -> bool {
    ["tracePoint", "correlationId", "priority", "elapsed"]
        .iter()
        .filter(|k| m.contains_key(**k))
        .count()
        >= 2
}

fn json_record(v: &Value, pos: Pos, raw: String, out: &mut Vec<MuleItem>) -> bool {
    let Some(m) = v.as_object() else {
        out.push(MuleItem::Reject {
            pos,
            reason: "record is not a JSON object".into(),
            raw,
        });
        return false;
    };
    if m.contains_key("event") || (m.contains_key("message") && m.contains_key("sequenceNumber")) {
        if let Some(ev) = cloudhub(m, pos) {
            out.push(MuleItem::Event(Box::new(ev)));
            return true;
        }
    } else if is_json_logger(m) {
        out.push(MuleItem::Event(Box::new(MuleEvent {
            pos: Some(pos),
            level: str_of(m.get("priority")),
            message: raw.clone(),
            raw,
            format: "mule_json_logger",
            ..Default::default()
        })));
        return true;
    }
    out.push(MuleItem::Reject {
        pos,
        reason: "not a JSON Logger record (no tracePoint, correlationId, priority) nor a CloudHub Logs API record (no event or message)".into(),
        raw,
    });
    false
}

fn json_input(
    text: &str,
    first_line: u64,
    out: &mut Vec<MuleItem>,
    strict: bool,
) -> Result<(), IngestError> {
    let mut checked = false;
    for p in pieces(text, first_line) {
        let before = out.len();
        let ok = match p {
            Piece::Json { line, value, raw } => {
                let list = match &value {
                    Value::Array(a) => Some(a.as_slice()),
                    Value::Object(m) => m.get("data").and_then(Value::as_array).map(Vec::as_slice),
                    _ => None,
                };
                match list {
                    Some(items) => {
                        let mut any = false;
                        for (i, r) in items.iter().enumerate() {
                            any |= json_record(r, Pos::Index(i as u64), r.to_string(), out);
                        }
                        any || items.is_empty()
                    }
                    None => json_record(&value, Pos::Line(line), raw.to_string(), out),
                }
            }
            Piece::Text { line, text } => match header(text) {
                Some(mut ev) => {
                    ev.pos = Some(Pos::Line(line));
                    ev.raw = text.to_string();
                    out.push(MuleItem::Event(Box::new(ev)));
                    true
                }
                None => {
                    out.push(MuleItem::Reject {
                        pos: Pos::Line(line),
                        reason: "not JSON and not a Mule log line in a known pattern".into(),
                        raw: text.to_string(),
                    });
                    false
                }
            },
            Piece::Bad { line, text, reason } => {
                out.push(MuleItem::Reject {
                    pos: Pos::Line(line),
                    reason,
                    raw: text.to_string(),
                });
                false
            }
        };
        if !checked && out.len() > before {
            checked = true;
            if !ok && strict {
                return Err(unknown());
            }
        }
    }
    Ok(())
}

/// Splits a Mule input into items. `first_line` numbers its first line.
///
/// # Errors
/// [`IngestError::UnknownFormat`] when the input does not start with a shape seam knows;
/// [`IngestError::InvalidPayload`] when its line numbers would not fit 64 bits.
pub fn decode(text: &str, first_line: u64) -> Result<Vec<MuleItem>, IngestError> {
    decode_with(text, first_line, true)
}

/// As [`decode`]; with `strict` false (a pulled source whose format is configured), lines
/// before the first recognisable event are refused one by one instead of the whole input,
/// and the shape (JSON or text) is decided by the first line that looks like either.
///
/// # Errors
/// As [`decode`] (never [`IngestError::UnknownFormat`] when not `strict`).
pub fn decode_with(
    text: &str,
    first_line: u64,
    strict: bool,
) -> Result<Vec<MuleItem>, IngestError> {
    check_first_line(text, first_line)?;
    let mut out = Vec::new();
    let mut lines = text.lines().map(|l| l.trim_start_matches('\u{feff}'));
    let first = if strict {
        lines.find(|l| !l.trim().is_empty())
    } else {
        lines.find(|l| l.trim_start().starts_with(['{', '[']) || is_header(l))
    }
    .unwrap_or("");
    if first.trim_start().starts_with(['{', '[']) && !CLOUDHUB.is_match(first) {
        json_input(text, first_line, &mut out, strict)?;
    } else {
        text_lines(text, first_line, &mut out, strict)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(items: &[MuleItem]) -> Vec<&MuleEvent> {
        items
            .iter()
            .filter_map(|i| match i {
                MuleItem::Event(e) => Some(e.as_ref()),
                MuleItem::Reject { .. } => None,
            })
            .collect()
    }

    #[test]
    fn patterns_blocks_and_garbage() {
        let text = "\
INFO  2024-11-05 09:10:02,611 [main] [processor: ; event: ] org.mule.LogUtil: \n\
**********\n\
* Started app 'x' *\n\
**********\n\
ERROR 2024-11-05 09:16:05,862 [[MuleRuntime].uber.07: [app].flow.CPU_LITE @2a] [processor: flow/processors/2; event: abc] org.mule.OnErrorPropagateHandler: \n\
********\n\
Message               : failed\n\
Error type            : HTTP:UNAUTHORIZED\n\
********\n\
this is garbage\n\
INFO  2024-11-05 09:16:06,000 [t] [{correlationId=c1, processorPath=f/processors/0}] org.mule.LoggerMessageProcessor: hi\n\
WARN  2024-11-05 09:16:07,000 [t] [event: c2] org.mule.LoggerMessageProcessor: {\n\
  \"a\" : 1\n\
}\n\
[11-05 09:16:08] INFO  LoggerMessageProcessor [[MuleRuntime].uber.01: [app].f.CPU_LITE @1]: cloud\n\
java.lang.IllegalStateException: boom\n\
\tat x.y(Z.java:1)\n";
        let items = decode(text, 1).unwrap();
        let ev = events(&items);
        assert_eq!(ev.len(), 5, "{items:#?}");
        assert!(ev[0].message.contains("Started app"));
        assert_eq!(ev[1].correlation_id.as_deref(), Some("abc"));
        assert!(ev[1].message.contains("HTTP:UNAUTHORIZED"));
        assert_eq!(ev[2].correlation_id.as_deref(), Some("c1"));
        assert_eq!(ev[2].processor.as_deref(), Some("f/processors/0"));
        assert_eq!(ev[3].format, "mule_log4j_event");
        assert!(ev[3].message.ends_with('}'));
        assert_eq!(ev[4].format, "mule_cloudhub_log4j");
        assert!(ev[4].message.contains("\tat x.y"));
        let rejects: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                MuleItem::Reject { pos, .. } => Some(*pos),
                MuleItem::Event(_) => None,
            })
            .collect();
        assert_eq!(rejects, vec![Pos::Line(10)]);
        assert!(matches!(
            decode("garbage\n", 1),
            Err(IngestError::UnknownFormat(_))
        ));
    }

    fn rejects(items: &[MuleItem]) -> Vec<(Pos, &str)> {
        items
            .iter()
            .filter_map(|i| match i {
                MuleItem::Reject { pos, reason, .. } => Some((*pos, reason.as_str())),
                MuleItem::Event(_) => None,
            })
            .collect()
    }

    /// JSON Logger lines around deep nesting and lines of `{`: each broken region is one
    /// refusal, the records around it are kept (the splitter's work is tested with it).
    #[test]
    fn broken_json_regions_are_refused_once() {
        let rec = r#"{"correlationId":"c","tracePoint":"START","priority":"INFO","message":"m"}"#;
        let body = format!(
            "{rec}\n{}{rec}\n{}{rec}\n",
            "[ \n".repeat(300_000),
            "{\n".repeat(300_000)
        );
        let items = decode(&body, 1).unwrap();
        assert_eq!(events(&items).len(), 3);
        let r = rejects(&items);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].0, Pos::Line(2));
        assert!(r[0].1.contains("lines 2-300001"), "{r:?}");
        assert_eq!(r[1].0, Pos::Line(300_003));
        assert!(r[1].1.contains("lines 300003-600002"), "{r:?}");
    }

    /// A 20 MB message and a 20 MB line that almost is a header: one event, one refusal.
    #[test]
    fn huge_lines_are_read_once() {
        let head = "INFO  2024-11-05 09:10:02,611 [main] [processor: ; event: e1] a.B: ";
        let big = "x".repeat(20 << 20);
        let text = format!("{head}{big}\nINFO  2024-11-05 09:10:03,611 [{big}\n");
        let items = decode(&text, 1).unwrap();
        let ev = events(&items);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].message.len(), big.len());
        assert_eq!(ev[0].correlation_id.as_deref(), Some("e1"));
        assert_eq!(rejects(&items).len(), 1);
    }

    #[test]
    fn line_numbers_that_would_overflow_are_refused() {
        let line = "INFO  2024-11-05 09:10:02,611 [t] [event: c] a.B: hi\n";
        assert!(matches!(
            decode(line, u64::MAX - 3),
            Err(IngestError::InvalidPayload(_))
        ));
        let items = decode(line, 1 << 53).unwrap();
        assert_eq!(events(&items)[0].pos, Some(Pos::Line(1 << 53)));
    }
}
