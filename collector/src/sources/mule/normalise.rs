//! Mule log events to rows of `flow_logs`.
//!
//! Takes [`MuleEvent`]s from `sources::mule::decode`, the input's [`InputMeta`], the traffic rules and
//! the token settings; gives a `Row` with its record key, or the reason the event was
//! refused (no readable time). Reads JSON Logger records (embedded in the log4j message or
//! whole), Mule error blocks (`Error type`, `Message`), the app and flow from the thread
//! name, and the caller's token identity from JSON Logger `content.caller`.

use std::sync::LazyLock;

use regex::Regex;
use seam_schemas::columns::{
    ATTRIBUTES, CORRELATION_ID, ELAPSED_MS, FLOW, INGEST_TIME, LEVEL, METHOD, MULE_APP, RAW,
    RECORD_KEY, SOURCE_FILE, SOURCE_FORMAT, SOURCE_LINE, SPAN_ID, STATUS_CODE, TIME, TRACE_ID,
};
use seam_schemas::tables::flow_logs::{
    self, APP_VERSION, CONTENT, ENVIRONMENT, ERROR_TYPE, IS_REQUEST_TRAFFIC, LOCATION, LOGGER,
    MESSAGE, REMOTE_ADDRESS, REQUEST_PATH, SCOPE_ELAPSED_MS, TRACE_POINT,
};
use seam_schemas::token::TOKEN_ID;
use serde_json::{Map, Value};

use crate::normalise::json::{
    InputMeta, key_of, num_of, redact_text, secret_values, text_of, time_of, trace_of_traceparent,
};
use crate::normalise::token::{TokenConfig, claims_from_json};
use crate::sources::apim::normalise::Keyed;
use crate::sources::mule::decode::{MuleEvent, Pos, TimeText};
use seam_store::rows::{Cell, Columns};

/// Which events are not request traffic.
#[derive(Debug, Clone)]
pub struct TrafficRules {
    /// Flow names of scheduled and background work.
    pub non_request_flows: Regex,
    /// Request paths of health checks.
    pub health_paths: Regex,
}

/// Default pattern of flows that are not request traffic.
pub const DEFAULT_NON_REQUEST_FLOWS: &str = r"(?i)(schedul|cron|poll|refresh|heartbeat|health|keep-?alive|warm-?up|timer|batch-job|housekeep|cleanup)";
/// Default pattern of health check paths.
pub const DEFAULT_HEALTH_PATHS: &str = r"(?i)^(/api)?/(health|healthz|healthcheck|ping|status|ready|readiness|live|liveness|heartbeat)(/|$)";

impl TrafficRules {
    /// Rules from two regular expressions.
    ///
    /// # Errors
    /// A pattern that does not compile.
    pub fn new(flows: &str, paths: &str) -> Result<Self, String> {
        Ok(Self {
            non_request_flows: Regex::new(flows).map_err(|e| format!("non_request_flows: {e}"))?,
            health_paths: Regex::new(paths).map_err(|e| format!("health_paths: {e}"))?,
        })
    }
}

impl Default for TrafficRules {
    fn default() -> Self {
        Self::new(DEFAULT_NON_REQUEST_FLOWS, DEFAULT_HEALTH_PATHS)
            .unwrap_or_else(|e| panic!("default traffic rules: {e}"))
    }
}

static THREAD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\[(?P<app>[^\[\]]+)\]\.(?P<flow>[^\[]+?)\.(?:CPU_LITE|CPU_INTENSIVE|BLOCKING|IO|cpuLight|cpuIntensive|io|blocking)\b",
    )
    .unwrap_or_else(|e| panic!("thread regex: {e}"))
});

fn get<'a>(m: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| {
        m.get(*k).or_else(|| {
            m.iter()
                .find(|(mk, _)| mk.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        })
    })
}

fn gets(m: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    get(m, keys).and_then(text_of)
}

/// `Key : value` lines of a Mule error block.
fn block_field(message: &str, key: &str) -> Option<String> {
    message.lines().find_map(|l| {
        let (k, v) = l.split_once(" : ").or_else(|| l.split_once(": "))?;
        (k.trim() == key)
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// A flow event to a `flow_logs` row.
///
/// # Errors
/// The reason the event is refused.
pub fn flow_row(
    cols: &Columns,
    ev: MuleEvent,
    meta: &InputMeta,
    rules: &TrafficRules,
    tokens: &TokenConfig,
    ingest_ns: i64,
) -> Result<Keyed, String> {
    debug_assert_eq!(
        cols.schema().fields().len(),
        flow_logs::schema().fields().len()
    );
    // JSON Logger: the whole message is one JSON object.
    let trimmed = ev.message.trim();
    let json: Option<Map<String, Value>> = if trimmed.starts_with('{') {
        serde_json::from_str::<Value>(trimmed)
            .ok()
            .and_then(|v| v.as_object().cloned())
    } else {
        None
    };
    let jl = json.as_ref();
    let content: Option<Value> = jl.and_then(|m| get(m, &["content"])).map(|c| match c {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| c.clone()),
        other => other.clone(),
    });
    let content_obj = content.as_ref().and_then(Value::as_object);
    let location_info = jl
        .and_then(|m| get(m, &["locationInfo"]))
        .and_then(Value::as_object);

    let time = jl
        .and_then(|m| get(m, &["timestamp"]))
        .and_then(|v| time_of(v, meta))
        .filter(|_| ev.time.is_none())
        .or_else(|| match &ev.time {
            Some(TimeText::Text(t)) => crate::normalise::time::parse(t, meta.zone, meta.now_ns),
            Some(TimeText::EpochMs(ms)) => crate::normalise::time::from_epoch(*ms),
            Some(TimeText::Nanos(ns)) => Some(*ns),
            None => None,
        })
        .or_else(|| {
            jl.and_then(|m| get(m, &["timestamp"]))
                .and_then(|v| time_of(v, meta))
        })
        .ok_or_else(|| "no readable time (log4j timestamp, JSON Logger timestamp)".to_string())?;
    let time = meta.in_window(time)?;

    let thread = ev
        .thread
        .clone()
        .or_else(|| jl.and_then(|m| gets(m, &["threadName"])));
    let from_thread = thread.as_deref().and_then(|t| THREAD.captures(t));
    let app = jl
        .and_then(|m| gets(m, &["applicationName"]))
        .or_else(|| from_thread.as_ref().map(|c| c["app"].to_string()))
        .or_else(|| meta.app.clone());
    let flow = location_info
        .and_then(|l| gets(l, &["rootContainer"]))
        .or_else(|| from_thread.as_ref().map(|c| c["flow"].to_string()))
        .or_else(|| {
            ev.processor
                .as_deref()
                .and_then(|p| p.split('/').next())
                .map(str::to_string)
        })
        .filter(|f| !f.is_empty());
    let correlation = ev
        .correlation_id
        .clone()
        .or_else(|| jl.and_then(|m| gets(m, &["correlationId"])));
    let mdc = |keys: &[&str]| {
        ev.mdc
            .iter()
            .find(|(k, _)| keys.iter().any(|n| k.eq_ignore_ascii_case(n)))
            .map(|(_, v)| v.clone())
    };
    let headers = content_obj
        .and_then(|c| get(c, &["headers"]))
        .and_then(Value::as_object);
    let trace = mdc(&["trace_id", "traceId", "trace.id"])
        .map(|t| t.to_ascii_lowercase())
        .or_else(|| {
            headers
                .and_then(|h| gets(h, &["traceparent"]))
                .and_then(|t| trace_of_traceparent(&t))
        });
    let span = mdc(&["span_id", "spanId", "span.id"]).map(|t| t.to_ascii_lowercase());
    let is_block = ev.message.trim_start().starts_with('*') || ev.message.starts_with('\n');
    let error_type = block_field(&ev.message, "Error type")
        .or_else(|| content_obj.and_then(|c| gets(c, &["errorType", "error_type"])));
    let message = jl
        .and_then(|m| gets(m, &["message"]))
        .or_else(|| {
            is_block
                .then(|| block_field(&ev.message, "Message"))
                .flatten()
        })
        .or_else(|| {
            (!ev.message.trim().is_empty() && jl.is_none()).then(|| ev.message.trim().to_string())
        });
    let location = ev
        .processor
        .clone()
        .or_else(|| {
            block_field(&ev.message, "Element")
                .map(|e| e.split(" @ ").next().unwrap_or(&e).to_string())
        })
        .or_else(|| {
            let l = location_info?;
            let file = gets(l, &["fileName"])?;
            Some(match gets(l, &["lineInFile"]) {
                Some(n) => format!("{file}:{n}"),
                None => file,
            })
        });
    let remote = content_obj
        .and_then(|c| gets(c, &["remoteAddress", "remote_address", "clientIp"]))
        .map(|r| r.trim_start_matches('/').to_string());
    let method = content_obj.and_then(|c| gets(c, &["method", "httpMethod"]));
    let request_path = content_obj.and_then(|c| gets(c, &["requestPath", "path", "requestUri"]));
    let status = content_obj
        .and_then(|c| get(c, &["statusCode", "httpStatus", "responseStatus", "status"]))
        .and_then(num_of)
        .filter(|s| *s > 0.0 && *s < 1000.0)
        .map(|s| s.round() as i32);
    let level = jl
        .and_then(|m| gets(m, &["priority"]))
        .or(ev.level.clone())
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "WARNING" => "WARN".to_string(),
            "SEVERE" => "ERROR".to_string(),
            other => other.to_string(),
        });
    let traffic = correlation.is_some()
        && !flow
            .as_deref()
            .is_some_and(|f| rules.non_request_flows.is_match(f))
        && !request_path
            .as_deref()
            .is_some_and(|p| rules.health_paths.is_match(p));

    // Redaction: values under secret keys anywhere in the JSON, then tokens and secrets.
    let mut secrets = Vec::new();
    if let Some(m) = jl {
        secret_values(&Value::Object(m.clone()), tokens, &mut secrets);
    }
    let (raw, raw_token) = redact_text(ev.raw, &secrets, tokens);
    let scrub = |s: Option<String>| s.map(|s| redact_text(s, &secrets, tokens).0);
    let content_text = scrub(content.as_ref().map(|c| match c {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }));

    let mut row = cols.row();
    let mut set = |name: &str, c: Cell| cols.set(&mut row, name, c);
    set(TIME, Cell::Ts(time));
    set(INGEST_TIME, Cell::Ts(ingest_ns));
    let key = key_of(&["mule", app.as_deref().unwrap_or(""), &raw]);
    set(RECORD_KEY, Cell::Str(key.clone()));
    set(CORRELATION_ID, Cell::text(correlation));
    set(TRACE_ID, Cell::text(trace));
    set(SPAN_ID, Cell::text(span));
    set(MULE_APP, Cell::text(app));
    set(FLOW, Cell::text(flow));
    set(
        TRACE_POINT,
        Cell::text(jl.and_then(|m| gets(m, &["tracePoint"]))),
    );
    set(LEVEL, Cell::text(level));
    let ms = |k: &str| {
        jl.and_then(|m| get(m, &[k]))
            .and_then(num_of)
            .map_or(Cell::Null, Cell::F64)
    };
    set(ELAPSED_MS, ms("elapsed"));
    set(SCOPE_ELAPSED_MS, ms("scopeElapsed"));
    set(MESSAGE, Cell::text(scrub(message)));
    set(LOCATION, Cell::text(location));
    set(LOGGER, Cell::text(ev.logger.clone()));
    set(flow_logs::THREAD, Cell::text(thread));
    set(ERROR_TYPE, Cell::text(error_type));
    set(REMOTE_ADDRESS, Cell::text(remote));
    set(METHOD, Cell::text(method.map(|m| m.to_ascii_uppercase())));
    set(REQUEST_PATH, Cell::text(request_path));
    set(STATUS_CODE, status.map_or(Cell::Null, Cell::I32));
    set(IS_REQUEST_TRAFFIC, Cell::Bool(traffic));
    set(
        ENVIRONMENT,
        Cell::text(jl.and_then(|m| gets(m, &["environment"]))),
    );
    set(
        APP_VERSION,
        Cell::text(jl.and_then(|m| gets(m, &["applicationVersion"]))),
    );
    let mut attrs: Vec<(String, Option<String>)> = ev
        .mdc
        .iter()
        .map(|(k, v)| (k.clone(), Some(tokens.scrub(v).text)))
        .collect();
    attrs.extend(ev.extra.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
    set(
        ATTRIBUTES,
        if attrs.is_empty() {
            Cell::Null
        } else {
            Cell::Map(attrs)
        },
    );
    set(CONTENT, Cell::text(content_text));
    set(SOURCE_FORMAT, Cell::Str(ev.format.to_string()));
    set(SOURCE_FILE, Cell::text(meta.file.clone()));
    set(
        SOURCE_LINE,
        match ev.pos {
            Some(Pos::Line(n)) | Some(Pos::Index(n)) => Cell::I64(n as i64),
            None => Cell::Null,
        },
    );
    set(RAW, Cell::Str(raw));
    // The caller's token, as the app logged it.
    let caller = content_obj
        .and_then(|c| get(c, &["caller", "token", "jwt", "claims"]))
        .and_then(Value::as_object);
    if let Some(c) = caller {
        let claims = claims_from_json(&Value::Object(c.clone()));
        let fp = gets(c, &["tokenFingerprint", "fingerprint", "token_fingerprint"]);
        let mut id = tokens.reported(fp, claims.uti.clone());
        id.claims = claims;
        cols.set_token(&mut row, &(&id).into());
    } else if let Some(t) = raw_token {
        cols.set_token(&mut row, &(&t).into());
    }
    Ok(Keyed { row, key })
}

/// Whether an OTLP log record was exported by a Mule runtime: its instrumentation scope or a
/// resource attribute names Mule (`mule-tracer`, `org.mule…`, `mule.*` attributes).
pub fn is_mule_origin(o: &crate::normalise::Origin) -> bool {
    let mule = |s: &str| s.to_ascii_lowercase().contains("mule");
    o.scope_name.as_deref().is_some_and(mule) || o.resource_attributes.iter().any(|(k, _)| mule(k))
}

/// A Mule runtime's OTLP log record to a `flow_logs` row (`source_format` `otlp`).
///
/// # Errors
/// As [`flow_row`].
pub fn otlp_flow_row(
    cols: &Columns,
    r: &crate::normalise::LogRecord,
    rules: &TrafficRules,
    tokens: &TokenConfig,
    ingest_ns: i64,
) -> Result<Keyed, String> {
    let attr = |keys: &[&str]| {
        crate::normalise::attributes::first(&r.attributes, keys).map(str::to_string)
    };
    let ev = MuleEvent {
        pos: None,
        level: r.level.clone(),
        time: Some(TimeText::Nanos(r.time_ns)),
        thread: attr(&["thread.name", "thread.start.name", "threadName"]),
        processor: attr(&["location", "mule.app.processor.name"]),
        correlation_id: r.correlation_id.clone(),
        mdc: r
            .attributes
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect(),
        logger: r.origin.scope_name.clone(),
        message: r.body.clone().unwrap_or_default(),
        raw: r.body.clone().unwrap_or_default(),
        format: "otlp",
        extra: Vec::new(),
    };
    // The record's time passed the window when the OTLP log was normalised.
    let meta = InputMeta {
        app: r.origin.service_name.clone(),
        now_ns: ingest_ns,
        window: crate::normalise::time::TimeWindow {
            min_ns: i64::MIN,
            max_ahead_ns: i64::MAX,
        },
        ..Default::default()
    };
    let mut k = flow_row(cols, ev, &meta, rules, tokens, ingest_ns)?;
    if matches!(cols.get(&k.row, TRACE_ID), Cell::Null) {
        cols.set(&mut k.row, TRACE_ID, Cell::text(r.trace_id.clone()));
    }
    if matches!(cols.get(&k.row, SPAN_ID), Cell::Null) {
        cols.set(&mut k.row, SPAN_ID, Cell::text(r.span_id.clone()));
    }
    if let Some(flow) = attr(&["mule.app.flow.name", "flow.name", "flow"]) {
        cols.set(&mut k.row, FLOW, Cell::Str(flow));
    }
    if matches!(cols.get(&k.row, TOKEN_ID), Cell::Null)
        && let Some(t) = &r.token
    {
        cols.set_token(&mut k.row, &t.into());
    }
    let mut key_text = format!("{}|{}|", r.time_ns, r.span_id.as_deref().unwrap_or(""));
    key_text.push_str(r.body.as_deref().unwrap_or(""));
    k.key = key_of(&[
        "otlp",
        r.origin.service_name.as_deref().unwrap_or(""),
        &key_text,
    ]);
    cols.set(&mut k.row, RECORD_KEY, Cell::Str(k.key.clone()));
    Ok(k)
}
