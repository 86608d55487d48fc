//! Stage 3, normalise: OTLP request messages to seam's records.
//!
//! Takes a decoded `Export{Trace,Logs}ServiceRequest` and the ingest time; gives one
//! [`SpanRecord`] or [`LogRecord`] per valid item plus a count and description of the items
//! it rejected (partial success). Pure and synchronous; never panics on input.
//!
//! What it does to every record: ids to lower-case hex (and length checks: 16 bytes for a
//! trace id, 8 for a span id), times to signed UTC nanoseconds, attribute values to text with
//! credentials redacted ([`redact`]), and the promoted columns (HTTP facts, correlation id)
//! looked up under both the current and the older semantic-convention names.

pub mod attributes;
pub mod json;
pub mod redact;
pub mod time;
pub mod token;

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;

use attributes::{Attr, AttrLimits, first, first_scalar};
use token::{TokenConfig, TokenIdentity};

/// Attribute keys that carry a producer's correlation id, in order of preference.
pub const CORRELATION_KEYS: &[&str] = &[
    "correlation.id",
    "correlation_id",
    "correlationId",
    "mule.correlationId",
    "mule.correlation.id",
    "http.request.header.x-correlation-id",
    "http.request.header.x_correlation_id",
    "http.request.header.x-ms-correlation-id",
    "x-correlation-id",
];

/// What the normalise stage applies to every record.
#[derive(Debug, Clone, Default)]
pub struct Normaliser {
    /// Attribute count and length limits.
    pub limits: AttrLimits,
    /// Fingerprint keys and extra redaction rules.
    pub tokens: TokenConfig,
    /// The accepted event-time window.
    pub window: time::TimeWindow,
}

/// Attribute keys under which a producer (e.g. a gateway policy) reports a token's
/// fingerprint, when it never sends the raw token.
pub const FINGERPRINT_KEYS: &[&str] =
    &["token.fingerprint", "token_fingerprint", "tokenFingerprint"];
/// Attribute keys under which a producer reports a token's `uti`/`jti`.
pub const UTI_KEYS: &[&str] = &["token.uti", "token_uti", "jwt.uti", "token.jti", "jwt.jti"];

/// `text` with tokens and secrets replaced.
fn scrub(text: String, n: &Normaliser) -> String {
    n.tokens.scrub_owned(text).text
}

/// A token identity from producer-reported attributes, when no raw token was seen.
fn reported_token(attrs: &[Attr], n: &Normaliser) -> Option<TokenIdentity> {
    let fp = first(attrs, FINGERPRINT_KEYS).map(str::to_string);
    let uti = first(attrs, UTI_KEYS).map(str::to_string);
    if fp.is_none() && uti.is_none() {
        return None;
    }
    Some(n.tokens.reported(fp, uti))
}

/// Resource and scope facts shared by the records of one scope.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `service.name`.
    pub service_name: Option<String>,
    /// Scope name.
    pub scope_name: Option<String>,
    /// Scope version.
    pub scope_version: Option<String>,
    /// Resource attributes.
    pub resource_attributes: Arc<Vec<Attr>>,
}

/// One span event.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Event time (ns).
    pub time_ns: Option<i64>,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attributes: Vec<Attr>,
}

/// One span link.
#[derive(Debug, Clone)]
pub struct LinkRecord {
    /// Linked trace id (hex).
    pub trace_id: String,
    /// Linked span id (hex).
    pub span_id: String,
    /// Link attributes.
    pub attributes: Vec<Attr>,
}

/// One normalised span: a row of the `spans` table.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Start (ns since epoch, UTC).
    pub time_ns: i64,
    /// End (ns), when known.
    pub end_time_ns: Option<i64>,
    /// Trace id (hex).
    pub trace_id: String,
    /// Span id (hex).
    pub span_id: String,
    /// Parent span id (hex).
    pub parent_span_id: Option<String>,
    /// Trace state.
    pub trace_state: Option<String>,
    /// Name.
    pub name: String,
    /// Kind, lower case.
    pub kind: &'static str,
    /// Status code, lower case.
    pub span_status: &'static str,
    /// Status message.
    pub span_status_message: Option<String>,
    /// Resource and scope.
    pub origin: Arc<Origin>,
    /// Span attributes.
    pub attributes: Vec<Attr>,
    /// Events.
    pub events: Vec<EventRecord>,
    /// Links.
    pub links: Vec<LinkRecord>,
    /// HTTP method.
    pub method: Option<String>,
    /// URL path.
    pub url_path: Option<String>,
    /// Route template.
    pub http_route: Option<String>,
    /// HTTP status.
    pub status_code: Option<i32>,
    /// Client address.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// The bearer token the span carried, identified (never the token itself).
    pub token: Option<TokenIdentity>,
}

/// One normalised log record: a row of the `logs` table.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Event time (ns).
    pub time_ns: i64,
    /// Observed time (ns).
    pub observed_time_ns: Option<i64>,
    /// Severity text.
    pub level: Option<String>,
    /// Severity number.
    pub severity_number: Option<i32>,
    /// Body as text.
    pub body: Option<String>,
    /// Trace id (hex).
    pub trace_id: Option<String>,
    /// Span id (hex).
    pub span_id: Option<String>,
    /// Trace flags.
    pub flags: Option<i32>,
    /// Event name.
    pub event_name: Option<String>,
    /// Resource and scope.
    pub origin: Arc<Origin>,
    /// Attributes.
    pub attributes: Vec<Attr>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// The bearer token the record carried, identified.
    pub token: Option<TokenIdentity>,
}

/// The result of normalising one request.
#[derive(Debug)]
pub struct Normalised<T> {
    /// Valid records.
    pub records: Vec<T>,
    /// How many items were rejected.
    pub rejected: u64,
    /// What was wrong with the first rejected item, and where.
    pub first_error: Option<String>,
    /// How many attribute values or lists were cut to the limits.
    pub truncated: u64,
    /// Tokens whose claims could not be read, by reason (`opaque`, `bad_base64`, ...).
    pub unreadable_tokens: std::collections::BTreeMap<&'static str, u64>,
}

impl<T> Default for Normalised<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            rejected: 0,
            first_error: None,
            truncated: 0,
            unreadable_tokens: Default::default(),
        }
    }
}

impl<T> Normalised<T> {
    fn flatten(
        &mut self,
        kvs: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
        n: &Normaliser,
    ) -> (Vec<Attr>, Option<TokenIdentity>) {
        let f = attributes::flatten(kvs, &n.limits, &n.tokens);
        self.truncated += f.cut;
        if let Some(reason) = f.token.as_ref().and_then(|t| t.unreadable) {
            *self.unreadable_tokens.entry(reason).or_insert(0) += 1;
        }
        (f.attrs, f.token)
    }

    fn reject(&mut self, msg: impl FnOnce() -> String) {
        self.rejected += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }
}

fn origin(scope: Option<&InstrumentationScope>, res_attrs: &Arc<Vec<Attr>>) -> Origin {
    Origin {
        service_name: first(res_attrs, &["service.name"]).map(str::to_string),
        scope_name: scope.map(|s| s.name.clone()).filter(|s| !s.is_empty()),
        scope_version: scope.map(|s| s.version.clone()).filter(|s| !s.is_empty()),
        resource_attributes: Arc::clone(res_attrs),
    }
}

fn time_ns(t: u64) -> Option<i64> {
    i64::try_from(t).ok()
}

fn opt_string(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn check_id(id: &[u8], len: usize, allow_empty: bool) -> Result<Option<String>, String> {
    if id.is_empty() && allow_empty {
        return Ok(None);
    }
    if id.len() != len {
        return Err(format!("must be {len} bytes, got {}", id.len()));
    }
    if id.iter().all(|b| *b == 0) {
        return if allow_empty {
            Ok(None)
        } else {
            Err("must not be all zeros".into())
        };
    }
    Ok(Some(hex::encode(id)))
}

const KINDS: [&str; 6] = [
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
];
const STATUSES: [&str; 3] = ["unset", "ok", "error"];

/// Normalises a trace export request received at `ingest_ns` (the time window's "now").
pub fn spans(
    req: ExportTraceServiceRequest,
    ingest_ns: i64,
    n: &Normaliser,
) -> Normalised<SpanRecord> {
    let mut out = Normalised::default();
    for (ri, rs) in req.resource_spans.into_iter().enumerate() {
        let res_attrs = Arc::new(
            out.flatten(
                rs.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
                n,
            )
            .0,
        );
        for (si, ss) in rs.scope_spans.into_iter().enumerate() {
            let origin = Arc::new(origin(ss.scope.as_ref(), &res_attrs));
            for (pi, span) in ss.spans.into_iter().enumerate() {
                let at = || format!("resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]");
                let trace_id = match check_id(&span.trace_id, 16, false) {
                    Ok(Some(id)) => id,
                    Ok(None) | Err(_) => {
                        let e = check_id(&span.trace_id, 16, false)
                            .err()
                            .unwrap_or_default();
                        out.reject(|| format!("{}.traceId {e}", at()));
                        continue;
                    }
                };
                let span_id = match check_id(&span.span_id, 8, false) {
                    Ok(Some(id)) => id,
                    Ok(None) | Err(_) => {
                        let e = check_id(&span.span_id, 8, false).err().unwrap_or_default();
                        out.reject(|| format!("{}.spanId {e}", at()));
                        continue;
                    }
                };
                let parent_span_id = match check_id(&span.parent_span_id, 8, true) {
                    Ok(p) => p,
                    Err(e) => {
                        out.reject(|| format!("{}.parentSpanId {e}", at()));
                        continue;
                    }
                };
                let Some(start) = time_ns(span.start_time_unix_nano) else {
                    out.reject(|| format!("{}.startTimeUnixNano is out of range", at()));
                    continue;
                };
                if let Err(e) = n.window.check("startTimeUnixNano", start, ingest_ns) {
                    out.reject(|| format!("{}: {e}", at()));
                    continue;
                }
                let end = match time_ns(span.end_time_unix_nano) {
                    None => {
                        out.reject(|| format!("{}.endTimeUnixNano is out of range", at()));
                        continue;
                    }
                    Some(0) => None,
                    Some(e) => match n.window.check("endTimeUnixNano", e, ingest_ns) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            out.reject(|| format!("{}: {e}", at()));
                            continue;
                        }
                    },
                };
                if let Some((i, t)) = span.events.iter().enumerate().find_map(|(i, e)| {
                    let t = time_ns(e.time_unix_nano).unwrap_or(i64::MAX);
                    (t != 0 && !n.window.contains(t, ingest_ns)).then_some((i, t))
                }) {
                    let e = n
                        .window
                        .check("timeUnixNano", t, ingest_ns)
                        .err()
                        .unwrap_or_default();
                    out.reject(|| format!("{}.events[{i}]: {e}", at()));
                    continue;
                }
                let (attributes, mut token) = out.flatten(span.attributes, n);
                let kind = KINDS
                    .get(span.kind as usize)
                    .copied()
                    .unwrap_or("unspecified");
                let (span_status, span_status_message) = match span.status {
                    Some(s) => (
                        STATUSES.get(s.code as usize).copied().unwrap_or("unset"),
                        opt_string(s.message).map(|m| scrub(m, n)),
                    ),
                    None => ("unset", None),
                };
                let mut events = Vec::with_capacity(span.events.len());
                for e in span.events {
                    let (attributes, t) = out.flatten(e.attributes, n);
                    token = token.or(t);
                    events.push(EventRecord {
                        time_ns: time_ns(e.time_unix_nano).filter(|t| *t > 0),
                        name: scrub(e.name, n),
                        attributes,
                    });
                }
                let mut links = Vec::with_capacity(span.links.len());
                for l in span.links {
                    links.push(LinkRecord {
                        trace_id: hex::encode(&l.trace_id),
                        span_id: hex::encode(&l.span_id),
                        attributes: out.flatten(l.attributes, n).0,
                    });
                }
                let http = HttpFacts::from_attrs(&attributes, kind == "server");
                out.records.push(SpanRecord {
                    time_ns: start,
                    end_time_ns: end,
                    trace_id,
                    span_id,
                    parent_span_id,
                    trace_state: opt_string(span.trace_state),
                    name: scrub(span.name, n),
                    kind,
                    span_status,
                    span_status_message,
                    origin: Arc::clone(&origin),
                    events,
                    links,
                    method: http.method,
                    url_path: http.url_path,
                    http_route: http.http_route,
                    status_code: http.status_code,
                    client_ip: http.client_ip,
                    user_agent: http.user_agent,
                    correlation_id: first_scalar(&attributes, CORRELATION_KEYS),
                    token: token.or_else(|| reported_token(&attributes, n)),
                    attributes,
                });
            }
        }
    }
    out
}

/// Normalises a logs export request. `ingest_ns` stands in for a record without any time.
pub fn logs(
    req: ExportLogsServiceRequest,
    ingest_ns: i64,
    n: &Normaliser,
) -> Normalised<LogRecord> {
    let mut out = Normalised::default();
    for (ri, rl) in req.resource_logs.into_iter().enumerate() {
        let res_attrs = Arc::new(
            out.flatten(
                rl.resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default(),
                n,
            )
            .0,
        );
        for (si, sl) in rl.scope_logs.into_iter().enumerate() {
            let origin = Arc::new(origin(sl.scope.as_ref(), &res_attrs));
            for (li, rec) in sl.log_records.into_iter().enumerate() {
                let at = || format!("resourceLogs[{ri}].scopeLogs[{si}].logRecords[{li}]");
                let trace_id = match check_id(&rec.trace_id, 16, true) {
                    Ok(t) => t,
                    Err(e) => {
                        out.reject(|| format!("{}.traceId {e}", at()));
                        continue;
                    }
                };
                let span_id = match check_id(&rec.span_id, 8, true) {
                    Ok(t) => t,
                    Err(e) => {
                        out.reject(|| format!("{}.spanId {e}", at()));
                        continue;
                    }
                };
                let (Some(t), Some(observed)) = (
                    time_ns(rec.time_unix_nano),
                    time_ns(rec.observed_time_unix_nano),
                ) else {
                    out.reject(|| format!("{}: timeUnixNano is out of range", at()));
                    continue;
                };
                let observed = Some(observed).filter(|o| *o > 0);
                if let Some(e) = [
                    ("timeUnixNano", t),
                    ("observedTimeUnixNano", observed.unwrap_or(0)),
                ]
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .find_map(|(what, v)| n.window.check(what, v, ingest_ns).err())
                {
                    out.reject(|| format!("{}: {e}", at()));
                    continue;
                }
                let time = if t > 0 {
                    t
                } else {
                    observed.unwrap_or(ingest_ns)
                };
                let severity_number = Some(rec.severity_number).filter(|n| *n > 0);
                let level = opt_string(rec.severity_text)
                    .or_else(|| severity_number.map(|n| level_of(n).to_string()));
                let mut body_token = None;
                let body = rec.body.and_then(|b| b.value).map(|v| {
                    let s = n.tokens.scrub_owned(attributes::to_text(v));
                    body_token = s.token;
                    let mut t = s.text;
                    if attributes::truncate(&mut t, n.limits.max_value_bytes) {
                        out.truncated += 1;
                    }
                    t
                });
                if let Some(reason) = body_token.as_ref().and_then(|t| t.unreadable) {
                    *out.unreadable_tokens.entry(reason).or_insert(0) += 1;
                }
                let (attributes, token) = out.flatten(rec.attributes, n);
                out.records.push(LogRecord {
                    time_ns: time,
                    observed_time_ns: observed,
                    level,
                    severity_number,
                    body,
                    trace_id,
                    span_id,
                    flags: Some(rec.flags as i32).filter(|f| *f != 0),
                    event_name: opt_string(rec.event_name),
                    origin: Arc::clone(&origin),
                    correlation_id: first_scalar(&attributes, CORRELATION_KEYS),
                    token: token
                        .or(body_token)
                        .or_else(|| reported_token(&attributes, n)),
                    attributes,
                });
            }
        }
    }
    out
}

/// The short severity name of an OpenTelemetry severity number.
pub fn level_of(n: i32) -> &'static str {
    match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "UNSPECIFIED",
    }
}

/// HTTP facts promoted from span attributes, under current and older convention names.
#[derive(Debug, Default)]
struct HttpFacts {
    method: Option<String>,
    url_path: Option<String>,
    http_route: Option<String>,
    status_code: Option<i32>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

impl HttpFacts {
    fn from_attrs(a: &[Attr], server: bool) -> Self {
        let url_path = first(a, &["url.path"])
            .map(str::to_string)
            .or_else(|| first(a, &["http.target"]).map(strip_query))
            .or_else(|| first(a, &["url.full", "http.url"]).and_then(path_of_url));
        let mut client_keys = vec!["client.address", "http.client_ip"];
        if server {
            client_keys.extend(["network.peer.address", "net.sock.peer.addr", "net.peer.ip"]);
        }
        HttpFacts {
            method: first(a, &["http.request.method", "http.method"]).map(str::to_string),
            url_path,
            http_route: first(a, &["http.route"]).map(str::to_string),
            status_code: first(a, &["http.response.status_code", "http.status_code"])
                .and_then(|s| s.trim().parse::<i32>().ok()),
            client_ip: first(a, &client_keys).map(str::to_string),
            user_agent: first(a, &["user_agent.original", "http.user_agent"]).map(str::to_string),
        }
    }
}

fn strip_query(target: &str) -> String {
    target.split(['?', '#']).next().unwrap_or("").to_string()
}

/// The path of an absolute URL (`https://host/a/b?q` → `/a/b`), or of a relative one.
fn path_of_url(url: &str) -> Option<String> {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            match after.find(['/', '?', '#']) {
                Some(j) if after[j..].starts_with('/') => &after[j..],
                _ => "/",
            }
        }
        None => url,
    };
    let p = strip_query(rest);
    if p.is_empty() { None } else { Some(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths() {
        assert_eq!(
            path_of_url("https://h.example/a/b?x=1").as_deref(),
            Some("/a/b")
        );
        assert_eq!(path_of_url("https://h.example").as_deref(), Some("/"));
        assert_eq!(path_of_url("https://h.example?x").as_deref(), Some("/"));
        assert_eq!(
            path_of_url("/api/orders?status=OPEN").as_deref(),
            Some("/api/orders")
        );
        assert_eq!(strip_query("/a#frag"), "/a");
    }

    #[test]
    fn ids() {
        assert_eq!(
            check_id(&[1; 8], 8, false).unwrap().unwrap(),
            "0101010101010101"
        );
        assert!(check_id(&[1; 7], 8, false).is_err());
        assert!(check_id(&[0; 16], 16, false).is_err());
        assert_eq!(check_id(&[], 8, true).unwrap(), None);
    }
}
