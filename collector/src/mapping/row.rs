//! One mapped record to one row of its mapping's table.
//!
//! Takes a [`Mapping`], a record (a JSON object from [`super::records`]), its text and
//! position, and the input's context; gives the row with its record key, or why the record
//! was refused (no readable time, or a mapped value that cannot be read as its column's
//! type: the column, the path and the value are named).
//!
//! Columns the built-in normalisers read (status, durations, URL, headers, error fields,
//! the JSON Logger fields of a flow line) are handed to them under the names they know, so a
//! mapped record gets the same derivations as a built-in shape: the record key, `url_path`,
//! the trace id from a logged `traceparent`, the token identity from logged headers, request
//! traffic rules for flow lines. Every other mapped column is converted to its column's type
//! and set directly, and wins over a derived value. Then: constants, `attributes` (the
//! record's unmapped scalar fields, flattened as `a.b`), the token columns (a fingerprint or
//! claims the gateway logged, or an `authorization` value fingerprinted and dropped), and the
//! raw text, redacted with the secrets found anywhere in the record.

use chrono::{DateTime, NaiveDateTime, Utc};
use seam_schemas::columns::{ATTRIBUTES, GATEWAY, RAW, RECORD_KEY, SOURCE_FORMAT, TRACE_ID};
use seam_schemas::tables::gateway_logs::GATEWAY_PRODUCT;
use seam_schemas::token::{self as tok, TokenColumns};
use serde_json::{Map, Number, Value};

use super::{Field, Kind, Mapping, Target, Unit};
use crate::normalise::json::{
    bool_of, headers_of, key_of, num_of, redact_text, secret_values, text_of, trace_of_traceparent,
};
use crate::normalise::token::TokenIdentity;
use crate::sources::apim::decode::{Fields, SECRETS_KEY, fields_of};
use crate::sources::apim::normalise::{Ctx, Keyed, Record, event_row, gateway_row};
use crate::sources::mule::decode::{MuleEvent, Pos, TimeText};
use crate::sources::mule::normalise::{TrafficRules, flow_row};
use seam_store::rows::{Cell, Columns};

/// Longest duration taken as written (30 days, in ms), as for the built-in shapes.
const MAX_DURATION_MS: f64 = 30.0 * 86_400_000.0;

/// Attributes kept per record.
const MAX_ATTRIBUTES: usize = 128;

/// Deepest nesting flattened into attributes.
const MAX_DEPTH: usize = 8;

/// gateway_logs columns the APIM normaliser reads, by its canonical key.
const GATEWAY_ALIASES: &[(&str, &str)] = &[
    ("correlation_id", "correlationid"),
    ("api_id", "apiid"),
    ("operation_id", "operationid"),
    ("api_revision", "apirevision"),
    ("product_id", "productid"),
    ("subscription_id", "apimsubscriptionid"),
    ("user_id", "userid"),
    ("backend_id", "backendid"),
    ("method", "method"),
    ("url", "url"),
    ("client_ip", "calleripaddress"),
    ("client_protocol", "clientprotocol"),
    ("client_tls_version", "clienttlsversion"),
    ("status_code", "responsecode"),
    ("is_request_success", "isrequestsuccess"),
    ("backend_method", "backendmethod"),
    ("backend_url", "backendurl"),
    ("backend_protocol", "backendprotocol"),
    ("backend_status_code", "backendresponsecode"),
    ("total_time_ms", "totaltime"),
    ("backend_time_ms", "backendtime"),
    ("client_time_ms", "clienttime"),
    ("cache", "cache"),
    ("cache_time_ms", "cachetime"),
    ("last_error_elapsed_ms", "lasterrorelapsed"),
    ("last_error_source", "lasterrorsource"),
    ("last_error_scope", "lasterrorscope"),
    ("last_error_section", "lasterrorsection"),
    ("last_error_reason", "lasterrorreason"),
    ("last_error_message", "lasterrormessage"),
    ("errors", "errors"),
    ("apim_service", "servicename"),
    ("region", "region"),
    ("resource_id", "resourceid"),
    ("request_size", "requestsize"),
    ("response_size", "responsesize"),
    ("request_headers", "requestheaders"),
    ("response_headers", "responseheaders"),
    ("backend_request_headers", "backendrequestheaders"),
    ("backend_response_headers", "backendresponseheaders"),
];

/// gateway_events columns the event normaliser reads.
const EVENT_ALIASES: &[(&str, &str)] = &[
    ("correlation_id", "requestid"),
    ("apim_service", "servicename"),
    ("client_ip", "requestip"),
    ("api_id", "apiid"),
    ("operation_id", "operationid"),
    ("product_id", "productid"),
    ("subscription_id", "subscriptionid"),
    ("user_id", "userid"),
    ("method", "method"),
    ("url", "url"),
    ("status_code", "statuscode"),
    ("section", "section"),
    ("elapsed_ms", "elapsedms"),
    ("last_error_source", "lasterrorsource"),
    ("last_error_reason", "lasterrorreason"),
    ("last_error_message", "lasterrormessage"),
    ("traceparent", "traceparent"),
];

/// flow_logs columns the flow normaliser reads from a JSON Logger record: (column, path in
/// the record it is given).
const FLOW_ALIASES: &[(&str, &[&str])] = &[
    ("mule_app", &["applicationName"]),
    ("flow", &["locationInfo", "rootContainer"]),
    ("correlation_id", &["correlationId"]),
    ("trace_point", &["tracePoint"]),
    ("level", &["priority"]),
    ("elapsed_ms", &["elapsed"]),
    ("scope_elapsed_ms", &["scopeElapsed"]),
    ("message", &["message"]),
    ("environment", &["environment"]),
    ("app_version", &["applicationVersion"]),
    ("remote_address", &["content", "remoteAddress"]),
    ("method", &["content", "method"]),
    ("request_path", &["content", "requestPath"]),
    ("status_code", &["content", "statusCode"]),
    ("error_type", &["content", "errorType"]),
    ("traceparent", &["content", "headers", "traceparent"]),
];

fn aliased(m: &Mapping, column: &str) -> bool {
    match m.table {
        Target::GatewayLogs => GATEWAY_ALIASES.iter().any(|(c, _)| *c == column),
        Target::GatewayEvents => EVENT_ALIASES.iter().any(|(c, _)| *c == column),
        Target::FlowLogs => FLOW_ALIASES.iter().any(|(c, _)| *c == column),
    }
}

/// A value that says something: not null, not empty text, not a lone `-` (NGINX, Apache).
fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => {
            let t = s.trim();
            !t.is_empty() && t != "-"
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// The last number of a value: NGINX writes `0.012, 0.034` (or `: `) when it tried several
/// upstreams; the last one answered.
fn num_last(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s
            .rsplit([',', ':'])
            .map(str::trim)
            .find(|p| !p.is_empty() && *p != "-")
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|f| f.is_finite()),
        other => num_of(other),
    }
}

fn epoch_ns(x: f64, unit: Option<Unit>) -> Option<i64> {
    match unit {
        None => crate::normalise::time::from_epoch(x),
        Some(u) => {
            let per: i64 = match u {
                Unit::S => 1_000_000_000,
                Unit::Ms => 1_000_000,
                Unit::Us => 1_000,
                Unit::Ns => 1,
            };
            // Whole numbers exactly (a double holds epoch ms, not epoch ms x 10^6).
            if x.fract() == 0.0 && x.abs() < 9.0e15 {
                return (x as i64).checked_mul(per).filter(|ns| *ns >= 0);
            }
            let ns = x * u.ms() * 1e6;
            (ns.is_finite() && (0.0..9.2e18).contains(&ns)).then(|| ns.round() as i64)
        }
    }
}

/// A time value in nanoseconds.
fn time_ns(v: &Value, f: &Field, m: &Mapping, ctx: Ctx<'_>) -> Option<i64> {
    match v {
        Value::Number(n) => epoch_ns(n.as_f64()?, f.unit),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                // Whole epoch numbers exactly, nanoseconds included.
                let i: i64 = t.parse().ok()?;
                return match f.unit {
                    Some(Unit::Ns) => Some(i),
                    Some(Unit::Us) => i.checked_mul(1_000),
                    Some(Unit::Ms) => i.checked_mul(1_000_000),
                    Some(Unit::S) => i.checked_mul(1_000_000_000),
                    None if i >= 100_000_000_000_000_000 => Some(i),
                    None => epoch_ns(i as f64, None),
                };
            }
            if !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && let Ok(x) = t.parse::<f64>()
            {
                return epoch_ns(x, f.unit);
            }
            for fmt in f.formats.iter().chain(&m.time_formats) {
                if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
                    return dt.with_timezone(&Utc).timestamp_nanos_opt();
                }
                if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
                    // A format ending in a literal `Z` (`%Y-%m-%dT%H:%M:%S%.fZ`) reads UTC.
                    if t.ends_with('Z') {
                        return n.and_utc().timestamp_nanos_opt();
                    }
                    return ctx.meta.zone.local(n);
                }
            }
            crate::normalise::time::parse(t, ctx.meta.zone, ctx.meta.now_ns)
        }
        _ => None,
    }
}

fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut cut: String = s.chars().take(60).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    cut
}

fn unreadable(f: &Field, path: &str, v: &Value, what: &str) -> String {
    format!(
        "field {} (path {path}): {:?} is not {what}",
        f.column,
        shown(v)
    )
}

/// A mapped value in the form the built-in normalisers read.
fn canonical(f: &Field, v: &Value, path: &str) -> Result<Value, String> {
    Ok(match f.kind {
        Kind::Duration | Kind::Float => {
            let ms = num_last(v).ok_or_else(|| unreadable(f, path, v, "a number"))?;
            let ms = ms * f.unit.unwrap_or(Unit::Ms).ms();
            if ms < 0.0 || (f.kind == Kind::Duration && ms > MAX_DURATION_MS) {
                Value::Null
            } else {
                Number::from_f64(ms).map_or(Value::Null, Value::Number)
            }
        }
        Kind::Int32 | Kind::Int64 => {
            let n = num_last(v)
                .ok_or_else(|| unreadable(f, path, v, "a number"))?
                .round();
            let (lo, hi, what) = if f.kind == Kind::Int32 {
                (
                    f64::from(i32::MIN),
                    f64::from(i32::MAX),
                    "a 32-bit whole number",
                )
            } else {
                (-9.2e18, 9.2e18, "a 64-bit whole number")
            };
            if !(lo..=hi).contains(&n) {
                return Err(unreadable(f, path, v, what));
            }
            Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        Kind::Bool => {
            Value::Bool(bool_of(v).ok_or_else(|| unreadable(f, path, v, "true or false"))?)
        }
        Kind::Map => {
            headers_of(v, &crate::normalise::token::TokenConfig::default())
                .ok_or_else(|| unreadable(f, path, v, "an object or a list of name/value pairs"))?;
            v.clone()
        }
        _ if f.column == "client_ip" => match text_of(v) {
            Some(t) => Value::String(without_port(&t).to_string()),
            None => Value::String(v.to_string()),
        },
        _ => match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => v.clone(),
            other => Value::String(other.to_string()),
        },
    })
}

/// An address without its port (`10.0.0.1:5443`, `[2001:db8::1]:443`); the first of a
/// forwarded list (`203.0.113.7, 10.0.0.1`).
fn without_port(addr: &str) -> &str {
    let a = addr.split(',').next().unwrap_or(addr).trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match a.rsplit_once(':') {
        // One colon: IPv4 or a name with a port. More: a bare IPv6 address.
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => a,
    }
}

/// A mapped value as a cell of its column.
fn cell(
    f: &Field,
    v: &Value,
    path: &str,
    m: &Mapping,
    ctx: Ctx<'_>,
    token: &mut Option<TokenIdentity>,
) -> Result<Cell, String> {
    let tokens = ctx.tokens;
    Ok(match f.kind {
        Kind::Time | Kind::Timestamp => Cell::Ts(
            time_ns(v, f, m, ctx).ok_or_else(|| unreadable(f, path, v, "a readable time"))?,
        ),
        Kind::Duration => {
            let ms = num_last(v).ok_or_else(|| unreadable(f, path, v, "a number"))?
                * f.unit.unwrap_or(Unit::Ms).ms();
            if (0.0..=MAX_DURATION_MS).contains(&ms) {
                Cell::F64(ms)
            } else {
                Cell::Null
            }
        }
        Kind::Float => Cell::F64(
            num_last(v).ok_or_else(|| unreadable(f, path, v, "a number"))?
                * f.unit.map_or(1.0, Unit::ms),
        ),
        Kind::Int32 => {
            let n = num_last(v).ok_or_else(|| unreadable(f, path, v, "a number"))?;
            let r = n.round();
            if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&r) {
                return Err(unreadable(f, path, v, "a 32-bit whole number"));
            }
            Cell::I32(r as i32)
        }
        Kind::Int64 => {
            let n = num_last(v).ok_or_else(|| unreadable(f, path, v, "a number"))?;
            let r = n.round();
            if !(-9.2e18..9.2e18).contains(&r) {
                return Err(unreadable(f, path, v, "a 64-bit whole number"));
            }
            Cell::I64(r as i64)
        }
        Kind::Bool => {
            Cell::Bool(bool_of(v).ok_or_else(|| unreadable(f, path, v, "true or false"))?)
        }
        Kind::List => {
            let items: Vec<String> = match v {
                Value::Array(a) => a.iter().filter_map(text_of).collect(),
                Value::String(s) => s
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
                other => text_of(other).into_iter().collect(),
            };
            let items: Vec<String> = items
                .into_iter()
                .map(|i| tokens.scrub_owned(i).text)
                .collect();
            if items.is_empty() {
                Cell::Null
            } else {
                Cell::List(items)
            }
        }
        Kind::Map => {
            let (h, t) = headers_of(v, tokens)
                .ok_or_else(|| unreadable(f, path, v, "an object or a list of name/value pairs"))?;
            if token.is_none() {
                *token = t;
            }
            Cell::Map(h)
        }
        Kind::Text | Kind::Traceparent | Kind::Authorization => {
            let t = match v {
                Value::String(s) => s.trim().to_string(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                other => other.to_string(),
            };
            Cell::Str(tokens.scrub_owned(t).text)
        }
    })
}

/// The values under secret names and the tokens anywhere in a record: what its raw text
/// must not keep.
fn secrets_of(m: &Mapping, obj: &Map<String, Value>, ctx: Ctx<'_>) -> Vec<String> {
    let tokens = ctx.tokens;
    let mut secrets = crate::sources::apim::normalise::secrets_in(&fields_of(obj), tokens);
    secret_values(&Value::Object(obj.clone()), tokens, &mut secrets);
    // Whatever an `authorization` pseudo-column reads is a credential, whatever its key.
    for f in m.fields.iter().filter(|f| f.kind == Kind::Authorization) {
        for p in &f.paths {
            if let Some(v) = p.get(obj).and_then(text_of) {
                let (_, cred) = credential(&v);
                for s in [v.clone(), cred.to_string()] {
                    if s.len() >= 4 {
                        secrets.push(s);
                    }
                }
            }
        }
    }
    secrets
}

/// A refused record's text, redacted with every secret the record holds (for `rejects`).
pub fn redacted_raw(m: &Mapping, obj: &Map<String, Value>, raw: String, ctx: Ctx<'_>) -> String {
    let secrets = secrets_of(m, obj, ctx);
    redact_text(raw, &secrets, ctx.tokens).0
}

/// An Authorization value's scheme (lower case, empty for a bare token) and credential.
fn credential(v: &str) -> (String, &str) {
    let t = v.trim();
    match t.split_once(char::is_whitespace) {
        Some((scheme, rest)) if !scheme.contains('.') && scheme.len() <= 20 => {
            (scheme.to_ascii_lowercase(), rest.trim())
        }
        _ => (String::new(), t),
    }
}

/// The record's scalar fields outside `skip` (lower-case flattened paths), flattened.
fn attributes(
    obj: &Map<String, Value>,
    skip: &[String],
    ctx: Ctx<'_>,
) -> Vec<(String, Option<String>)> {
    fn walk(
        prefix: &str,
        v: &Value,
        depth: usize,
        skip: &[String],
        out: &mut Vec<(String, Value)>,
    ) {
        if out.len() >= MAX_ATTRIBUTES {
            return;
        }
        if skip.iter().any(|s| s == prefix) {
            return;
        }
        match v {
            Value::Object(m) if depth < MAX_DEPTH => {
                for (k, child) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, child, depth + 1, skip, out);
                }
            }
            Value::Null => {}
            other => out.push((prefix.to_string(), other.clone())),
        }
    }
    let tokens = ctx.tokens;
    let mut flat = Vec::new();
    walk("", &Value::Object(obj.clone()), 0, skip, &mut flat);
    flat.into_iter()
        .filter_map(|(k, v)| {
            let text = match &v {
                Value::Array(_) | Value::Object(_) => v.to_string(),
                other => text_of(other)?,
            };
            let value = if k.split('.').any(|seg| {
                crate::normalise::redact::is_sensitive_key(seg) || tokens.is_extra_secret_name(seg)
            }) {
                crate::normalise::redact::MARKER.to_string()
            } else {
                let mut secrets = Vec::new();
                match &v {
                    Value::String(s) => {
                        crate::normalise::json::secret_in_text(s, tokens, &mut secrets);
                    }
                    other => secret_values(other, tokens, &mut secrets),
                }
                redact_text(text, &secrets, tokens).0
            };
            Some((tokens.scrub_owned(k).text, Some(value)))
        })
        .collect()
}

const TOKEN_COLUMNS: &[&str] = &[
    tok::TOKEN_ID,
    tok::TOKEN_UTI,
    tok::SUBJECT,
    tok::TOKEN_OBJECT_ID,
    tok::CLIENT_APP,
    tok::TENANT_ID,
    tok::TOKEN_ISSUER,
    tok::TOKEN_AUDIENCE,
    tok::TOKEN_ISSUED_AT,
    tok::TOKEN_EXPIRES_AT,
    tok::TOKEN_SCOPES,
    tok::TOKEN_ROLES,
    tok::TOKEN_TYPE,
];

/// Builds the row of one record.
///
/// # Errors
/// Why the record is refused.
pub fn build(
    m: &Mapping,
    cols: &Columns,
    obj: &Map<String, Value>,
    raw: String,
    pos: Pos,
    ctx: Ctx<'_>,
    rules: &TrafficRules,
) -> Result<Keyed, String> {
    let line = match pos {
        Pos::Line(n) | Pos::Index(n) => i64::try_from(n).ok(),
    };
    // The first present value of each field.
    let mut found: Vec<(&Field, &Value, &str)> = Vec::new();
    for f in &m.fields {
        if let Some((p, v)) = f
            .paths
            .iter()
            .find_map(|p| p.get(obj).filter(|v| present(v)).map(|v| (p, v)))
        {
            found.push((f, v, p.text()));
        }
    }
    let time_field = m.fields.iter().find(|f| f.kind == Kind::Time);
    let time = match found.iter().find(|(f, _, _)| f.kind == Kind::Time) {
        Some((f, v, p)) => {
            time_ns(v, f, m, ctx).ok_or_else(|| unreadable(f, p, v, "a readable time"))?
        }
        None => {
            let paths = time_field
                .map(|f| {
                    f.paths
                        .iter()
                        .map(|p| p.text().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            return Err(format!("field time: no value at {paths}"));
        }
    };
    ctx.meta.in_window(time)?;
    let secrets = secrets_of(m, obj, ctx);

    let mut k = match m.table {
        Target::GatewayLogs | Target::GatewayEvents => {
            let aliases = if m.table == Target::GatewayLogs {
                GATEWAY_ALIASES
            } else {
                EVENT_ALIASES
            };
            let mut canon = Fields::new();
            canon.insert("time".into(), Value::String(rfc3339(time)));
            canon.insert("eventtime".into(), Value::String(rfc3339(time)));
            for (f, v, p) in &found {
                if let Some((_, key)) = aliases.iter().find(|(c, _)| *c == f.column) {
                    let v = canonical(f, v, p)?;
                    if !v.is_null() {
                        canon.insert((*key).to_string(), v);
                    }
                }
            }
            canon.insert(
                SECRETS_KEY.to_string(),
                Value::Array(secrets.iter().cloned().map(Value::String).collect()),
            );
            let rec = Record {
                fields: &canon,
                format: "mapped",
                line,
            };
            if m.table == Target::GatewayLogs {
                gateway_row(cols, rec, raw.clone(), ctx)?
            } else {
                event_row(cols, rec, raw.clone(), ctx)?
            }
        }
        Target::FlowLogs => {
            let mut jl = Map::new();
            for (f, v, p) in &found {
                if let Some((_, path)) = FLOW_ALIASES.iter().find(|(c, _)| *c == f.column) {
                    let v = canonical(f, v, p)?;
                    if v.is_null() {
                        continue;
                    }
                    insert_path(&mut jl, path, v);
                }
            }
            let ev = MuleEvent {
                pos: Some(pos),
                time: Some(TimeText::Nanos(time)),
                correlation_id: jl.get("correlationId").and_then(text_of),
                message: Value::Object(jl).to_string(),
                raw: raw.clone(),
                format: "mapped",
                ..Default::default()
            };
            flow_row(cols, ev, ctx.meta, rules, ctx.tokens, ctx.ingest_ns)?
        }
    };

    // Columns set directly; a mapped value wins over a derived one.
    let mut token: Option<TokenIdentity> = None;
    let mut auth: Option<TokenIdentity> = None;
    let mut claims: Vec<(&str, Cell)> = Vec::new();
    for (f, v, p) in &found {
        match f.kind {
            Kind::Time => continue,
            Kind::Traceparent => {
                // A mapped `trace_id` wins over the traceparent, as in every table.
                let direct = found.iter().any(|(f, _, _)| f.column == TRACE_ID);
                if m.table == Target::GatewayLogs
                    && !direct
                    && let Some(t) = text_of(v).and_then(|t| trace_of_traceparent(&t))
                {
                    cols.set(&mut k.row, TRACE_ID, Cell::Str(t));
                }
                continue;
            }
            Kind::Authorization => {
                if let Some(t) = text_of(v) {
                    // A bearer token (or a bare one) is identified; Basic credentials and
                    // other schemes are only redacted.
                    let (scheme, cred) = credential(&t);
                    if (scheme.is_empty() || scheme == "bearer") && !cred.is_empty() {
                        auth = Some(ctx.tokens.identify(cred));
                    }
                }
                continue;
            }
            _ => {}
        }
        if TOKEN_COLUMNS.contains(&f.column.as_str()) {
            claims.push((tok_name(&f.column), cell(f, v, p, m, ctx, &mut token)?));
            continue;
        }
        if aliased(m, &f.column) {
            continue;
        }
        let c = cell(f, v, p, m, ctx, &mut token)?;
        cols.set(&mut k.row, &f.column, c);
    }
    for (column, value) in &m.constants {
        if matches!(cols.get(&k.row, column), Cell::Null) || column == GATEWAY {
            let mapped = found.iter().any(|(f, _, _)| f.column == *column);
            if !mapped {
                // Services are stored lower case, as the built-in shapes store them, so that
                // the copies of one request share their key.
                let value = if column == seam_schemas::columns::APIM_SERVICE {
                    value.to_ascii_lowercase()
                } else {
                    value.clone()
                };
                cols.set(&mut k.row, column, Cell::Str(value));
            }
        }
    }
    if cols.schema().index_of(ATTRIBUTES).is_ok() {
        // The fields a mapped path found, as the record spells them: the rest are
        // attributes (a key differing only in case from a mapped one included).
        let skip: Vec<String> = m
            .fields
            .iter()
            .flat_map(|f| f.paths.iter().filter_map(|p| p.locate(obj).map(|(k, _)| k)))
            .collect();
        let attrs = attributes(obj, &skip, ctx);
        cols.set(
            &mut k.row,
            ATTRIBUTES,
            if attrs.is_empty() {
                Cell::Null
            } else {
                Cell::Map(attrs)
            },
        );
    }

    // The raw text, redacted with every secret of the record.
    let (raw, raw_token) = redact_text(raw, &secrets, ctx.tokens);
    cols.set(&mut k.row, RAW, Cell::Str(raw.clone()));
    cols.set(
        &mut k.row,
        SOURCE_FORMAT,
        Cell::Str(m.source_format.clone()),
    );

    // Token identity: a raw token the record carried, then what the gateway reported.
    let base = auth.or(token);
    if let Some(t) = &base {
        cols.set_token(&mut k.row, &t.into());
    } else if matches!(cols.get(&k.row, tok::TOKEN_ID), Cell::Null)
        && claims.is_empty()
        && let Some(t) = &raw_token
    {
        cols.set_token(&mut k.row, &t.into());
    }
    if !claims.is_empty() {
        let claim = |name: &str| {
            claims.iter().find_map(|(c, v)| match v {
                Cell::Str(s) if *c == name => Some(s.clone()),
                _ => None,
            })
        };
        let fp = claim(tok::TOKEN_ID);
        let uti = claim(tok::TOKEN_UTI);
        if base.is_none() && (fp.is_some() || uti.is_some()) {
            let id = ctx.tokens.reported(fp, uti);
            let cols_of: TokenColumns = (&id).into();
            cols.set(&mut k.row, tok::TOKEN_ID, Cell::text(cols_of.token_id));
            cols.set(&mut k.row, tok::TOKEN_UTI, Cell::text(cols_of.uti));
        }
        for (c, v) in claims {
            if c == tok::TOKEN_ID && (base.is_some() || !matches!(cols.get(&k.row, c), Cell::Null))
            {
                continue;
            }
            // A claim the raw token did not carry; never over the raw token's own.
            if base.is_some() && !matches!(cols.get(&k.row, c), Cell::Null) {
                continue;
            }
            if c == tok::TOKEN_UTI && !matches!(cols.get(&k.row, c), Cell::Null) {
                continue;
            }
            cols.set(&mut k.row, c, v);
        }
    }

    // The record key.
    let text = |row: &seam_store::rows::Row, c: &str| match cols.get(row, c) {
        Cell::Str(s) => s.clone(),
        _ => String::new(),
    };
    // Keyed by the record's content, not by how it was wrapped or spaced (a JSON line, an
    // element of {"records":[...]}, a CSV row under its header).
    let content = redact_text(
        serde_json::to_string(obj).unwrap_or_default(),
        &secrets,
        ctx.tokens,
    )
    .0;
    k.key = match m.table {
        Target::GatewayLogs => {
            cols.set(&mut k.row, GATEWAY_PRODUCT, Cell::Str(m.product.clone()));
            if m.product != "apim"
                && !found.iter().any(|(f, _, _)| f.column == GATEWAY)
                && !m.constants.iter().any(|(c, _)| c == GATEWAY)
            {
                let g = ctx
                    .meta
                    .gateway
                    .clone()
                    .unwrap_or_else(|| m.product.clone());
                cols.set(&mut k.row, GATEWAY, Cell::Str(g));
            }
            let service = text(&k.row, seam_schemas::columns::APIM_SERVICE);
            let corr = text(&k.row, seam_schemas::columns::CORRELATION_ID);
            if m.product == "apim" && !corr.is_empty() {
                key_of(&["gw", &service, &corr.to_ascii_lowercase()])
            } else if !corr.is_empty() {
                key_of(&["gw", &m.product, &service, &corr.to_ascii_lowercase()])
            } else {
                key_of(&["gw-raw", &m.product, &content])
            }
        }
        Target::GatewayEvents => key_of(&["event", &m.name, &content]),
        Target::FlowLogs => key_of(&[
            "mule",
            &text(&k.row, seam_schemas::columns::MULE_APP),
            &content,
        ]),
    };
    cols.set(&mut k.row, RECORD_KEY, Cell::Str(k.key.clone()));
    Ok(k)
}

/// Puts `v` at `path` in `map`, making the objects on the way.
fn insert_path(map: &mut Map<String, Value>, path: &[&str], v: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert((*last).to_string(), v);
        }
        [first, rest @ ..] => {
            let entry = map
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(next) = entry {
                insert_path(next, rest, v);
            }
        }
    }
}

fn tok_name(column: &str) -> &'static str {
    TOKEN_COLUMNS
        .iter()
        .find(|c| **c == column)
        .copied()
        .unwrap_or(tok::TOKEN_ID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{MappingFile, records};
    use crate::normalise::json::InputMeta;
    use crate::normalise::token::{TokenConfig, parse_keys};
    use seam_schemas::tables::{flow_logs, gateway_events, gateway_logs};

    fn mapping(text: &str) -> Mapping {
        let f: MappingFile = toml::from_str(text).unwrap();
        let (name, spec) = f.mappings.into_iter().next().unwrap();
        Mapping::compile(&name, &spec, false).unwrap()
    }

    fn tokens() -> TokenConfig {
        TokenConfig {
            keys: std::sync::Arc::new(parse_keys("k1=0123456789abcdef0123456789abcdef").unwrap()),
            ..Default::default()
        }
    }

    fn rows(m: &Mapping, text: &str) -> (Columns, Vec<Result<seam_store::rows::Row, String>>) {
        let cols = Columns::new(match m.table {
            Target::GatewayLogs => gateway_logs::schema(),
            Target::GatewayEvents => gateway_events::schema(),
            Target::FlowLogs => flow_logs::schema(),
        });
        let tokens = tokens();
        let meta = InputMeta {
            now_ns: 1_800_000_000_000_000_000,
            ..Default::default()
        };
        let ctx = Ctx {
            meta: &meta,
            tokens: &tokens,
            ingest_ns: 1,
        };
        let items = match m.format {
            crate::mapping::Format::Json => records::json(text, 1, true, &m.name).unwrap(),
            crate::mapping::Format::Csv => records::csv(text, 1, true, &m.name).unwrap(),
        };
        let out = items
            .into_iter()
            .map(|i| match i {
                records::Item::Record { pos, obj, raw } => {
                    build(m, &cols, &obj, raw, pos, ctx, &TrafficRules::default()).map(|k| k.row)
                }
                records::Item::Reject { reason, .. } => Err(reason),
            })
            .collect();
        (cols, out)
    }

    const CONTOSO: &str = r#"
[mappings.contoso-events]
table = "gateway_events"
time_format = "%d.%m.%Y %H:%M:%S%.f"
[mappings.contoso-events.fields]
time = "ts"
correlation_id = "requestId"
api_id = "api"
status_code = "status"
elapsed_ms = { path = "took", unit = "s" }
token_id = "token.fp"
client_app = ["token.azp", "token.appid", "token.cid"]
token_scopes = "token.scp"
traceparent = "headers.traceparent"
"#;

    /// The issue's own `time_format` ends in a literal `Z`: UTC, whatever the input's zone.
    #[test]
    fn a_literal_z_in_a_time_format_is_utc() {
        let m = mapping(
            r#"
[mappings.z]
table = "gateway_events"
time_format = "%Y-%m-%dT%H:%M:%S%.fZ"
[mappings.z.fields]
time = "ts"
"#,
        );
        let tokens = tokens();
        let meta = InputMeta {
            zone: crate::normalise::time::Zone::parse("Europe/Dublin").unwrap(),
            now_ns: 1_800_000_000_000_000_000,
            ..Default::default()
        };
        let ctx = Ctx {
            meta: &meta,
            tokens: &tokens,
            ingest_ns: 1,
        };
        let f = &m.fields[0];
        let v = Value::String("2024-07-01T10:00:00.250Z".into());
        assert_eq!(time_ns(&v, f, &m, ctx), Some(1_719_828_000_250_000_000));
    }

    #[test]
    fn nested_fields_units_lists_and_attributes() {
        let m = mapping(CONTOSO);
        let text = r#"{"ts":"06.11.2024 14:04:55.301","requestId":"R-1","api":"orders","status":"201","took":0.25,"token":{"fp":"hmac-sha256:k1:aa","appid":"app-9","scp":"orders.read orders.write"},"headers":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},"tenant":"eu","password":"hunter22"}
{"requestId":"R-2","api":"orders"}
{"ts":1730901895301,"requestId":"R-3","status":"teapot"}
"#;
        let (cols, out) = rows(&m, text);
        let row = out[0].as_ref().unwrap();
        let get = |c: &str| cols.get(row, c).clone();
        assert_eq!(get("correlation_id"), Cell::Str("R-1".into()));
        assert_eq!(get("status_code"), Cell::I32(201));
        assert_eq!(get("elapsed_ms"), Cell::F64(250.0));
        assert_eq!(get("token_id"), Cell::Str("hmac-sha256:k1:aa".into()));
        assert_eq!(get("client_app"), Cell::Str("app-9".into()));
        assert_eq!(
            get("token_scopes"),
            Cell::List(vec!["orders.read".into(), "orders.write".into()])
        );
        assert_eq!(
            get("trace_id"),
            Cell::Str("4bf92f3577b34da6a3ce929d0e0e4736".into())
        );
        assert_eq!(
            get("source_format"),
            Cell::Str("mapping:contoso-events".into())
        );
        let Cell::Map(attrs) = get("attributes") else {
            panic!("{:?}", get("attributes"))
        };
        assert!(
            attrs.contains(&("tenant".into(), Some("eu".into()))),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&("password".into(), Some("<redacted>".into()))),
            "{attrs:?}"
        );
        assert!(
            !attrs.iter().any(|(k, _)| k.starts_with("token.")),
            "{attrs:?}"
        );
        let Cell::Str(raw) = get("raw") else { panic!() };
        assert!(!raw.contains("hunter22"), "{raw}");
        let Cell::Ts(t) = get("time") else { panic!() };
        assert_eq!(t, 1_730_901_895_301_000_000);
        assert_eq!(out[1].as_ref().unwrap_err(), "field time: no value at ts");
        let e = out[2].as_ref().unwrap_err();
        assert!(
            e.contains("field status_code (path status)") && e.contains("teapot"),
            "{e}"
        );
    }

    #[test]
    fn csv_mapping_to_gateway_logs_with_product_and_bearer() {
        let m = mapping(
            r#"
[mappings.edge-csv]
table = "gateway_logs"
format = "csv"
product = "edge"
[mappings.edge-csv.fields]
time = "When"
correlation_id = "Id"
status_code = "Status"
total_time_ms = { path = "Seconds", unit = "s" }
backend_time_ms = "UpstreamMs"
url = "Url"
request_headers = "Headers"
authorization = "Auth"
"#,
        );
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyLTEiLCJhenAiOiJhcHAtMSJ9.c2ln";
        let text = format!(
            "When,Id,Status,Seconds,UpstreamMs,Url,Headers,Auth\n\
             2024-11-06T14:04:55Z,abc,502,\"0.010, 0.120\",-1,https://h/x/y?code=1,\"{{\"\"x-correlation-id\"\":\"\"abc\"\"}}\",Bearer {jwt}\n"
        );
        let (cols, out) = rows(&m, &text);
        let row = out[0].as_ref().unwrap();
        let get = |c: &str| cols.get(row, c).clone();
        assert_eq!(get("gateway_product"), Cell::Str("edge".into()));
        assert_eq!(get("gateway"), Cell::Str("edge".into()));
        assert_eq!(get("status_code"), Cell::I32(502));
        assert_eq!(get("total_time_ms"), Cell::F64(120.0));
        assert_eq!(get("backend_time_ms"), Cell::Null);
        assert_eq!(get("url_path"), Cell::Str("/x/y".into()));
        assert_eq!(get("forwarded_correlation_id"), Cell::Str("abc".into()));
        assert_eq!(get("subject"), Cell::Str("user-1".into()));
        assert!(matches!(get("token_id"), Cell::Str(s) if s.starts_with("hmac-sha256:k1:")));
        let Cell::Str(raw) = get("raw") else { panic!() };
        assert!(!raw.contains(jwt), "{raw}");
    }

    #[test]
    fn flow_logs_mapping_reads_request_traffic() {
        let m = mapping(
            r#"
[mappings.flows]
table = "flow_logs"
[mappings.flows.fields]
time = { path = "t", unit = "ms" }
correlation_id = "cid"
mule_app = "app"
flow = "flow"
request_path = "path"
level = "lvl"
message = "msg"
thread = "th"
"#,
        );
        let text = "{\"t\":1730901895301,\"cid\":\"c1\",\"app\":\"orders\",\"flow\":\"get-order\",\"path\":\"/orders/1\",\"lvl\":\"INFO\",\"msg\":\"hi\",\"th\":\"worker-1\"}\n\
                    {\"t\":1730901895302,\"cid\":\"c2\",\"app\":\"orders\",\"flow\":\"poll-scheduler\",\"msg\":\"tick\"}\n";
        let (cols, out) = rows(&m, text);
        let a = out[0].as_ref().unwrap();
        assert_eq!(cols.get(a, "mule_app"), &Cell::Str("orders".into()));
        assert_eq!(cols.get(a, "flow"), &Cell::Str("get-order".into()));
        assert_eq!(cols.get(a, "thread"), &Cell::Str("worker-1".into()));
        assert_eq!(cols.get(a, "message"), &Cell::Str("hi".into()));
        assert_eq!(cols.get(a, "is_request_traffic"), &Cell::Bool(true));
        let b = out[1].as_ref().unwrap();
        assert_eq!(cols.get(b, "is_request_traffic"), &Cell::Bool(false));
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use crate::mapping::{MappingFile, records};
    use crate::normalise::json::InputMeta;
    use crate::normalise::token::TokenConfig;
    use seam_schemas::tables::gateway_logs;

    /// Secrets nested under secret names, in header lists and JSON text, and whatever the
    /// `authorization` pseudo-column reads, are in no stored cell (an adversarial review
    /// found each of them kept in `raw` or `attributes`).
    #[test]
    fn no_secret_survives_in_any_cell() {
        let f: MappingFile = toml::from_str(
            r#"
[mappings.gl]
table = "gateway_logs"
product = "edge"
[mappings.gl.fields]
time = "ts"
correlation_id = "id"
request_headers = "hdrs"
authorization = "creds"
"#,
        )
        .unwrap();
        let (name, spec) = f.mappings.into_iter().next().unwrap();
        let m = Mapping::compile(&name, &spec, false).unwrap();
        let text = r#"{"ts":"2024-11-06T14:04:55Z","id":"A1","creds":"OPAQUEAPIKEY12345","password":{"x":"TOPOBJPW2","y":["ARRPW3"]},"client_secret":["ARRSEC4","ARRSEC5"],"nest":{"password":{"inner":"PWNESTED777"}},"hdrs":["Authorization: Basic SERSQkFTSUMx","X-Api-Key: K"],"more":"{\"Cookie\":\"HDRCOOKIE4\"}","trunc":"{\"authorization\":\"FTOPQ1XX\"","pass":"FTPASS12"}"#;
        let tokens = TokenConfig::default();
        let meta = InputMeta::default();
        let ctx = Ctx {
            meta: &meta,
            tokens: &tokens,
            ingest_ns: 1,
        };
        let cols = Columns::new(gateway_logs::schema());
        let items = records::json(text, 1, true, "gl").unwrap();
        let records::Item::Record { pos, obj, raw } = &items[0] else {
            panic!("{items:?}")
        };
        let k = build(
            &m,
            &cols,
            obj,
            raw.clone(),
            *pos,
            ctx,
            &TrafficRules::default(),
        )
        .unwrap();
        let all = format!("{:?}", k.row.cells);
        for secret in [
            "OPAQUEAPIKEY12345",
            "TOPOBJPW2",
            "ARRPW3",
            "ARRSEC4",
            "PWNESTED777",
            "SERSQkFTSUMx",
            "HDRCOOKIE4",
            "FTOPQ1XX",
            "FTPASS12",
        ] {
            assert!(!all.contains(secret), "{secret} kept: {all}");
        }
        let Cell::Str(raw) = cols.get(&k.row, RAW) else {
            panic!()
        };
        assert!(
            serde_json::from_str::<Value>(raw).is_ok(),
            "raw is not JSON: {raw}"
        );
        let refused = redacted_raw(&m, obj, raw.clone(), ctx);
        assert!(!refused.contains("OPAQUEAPIKEY12345"), "{refused}");
    }
}
