//! APIM GatewayLogs records and custom gateway events to rows of `gateway_log_copies` and
//! `gateway_events`.
//!
//! Takes [`Fields`] from `sources::apim::decode`, the input's [`InputMeta`] and the token settings;
//! gives a [`Row`] in the table's column order with its record key, or the reason the
//! record was refused (it has no readable time). Field aliases across delivery paths are
//! resolved here (docs/ingest-formats.md lists them); the raw record is kept, redacted.

use seam_schemas::tables::{gateway_events, gateway_logs};
use serde_json::Value;

use crate::normalise::json::{
    InputMeta, bool_of, headers_of, key_of, num_of, path_of, redact_text, secret_values, text_of,
    time_of, trace_of_traceparent,
};
use crate::normalise::token::{TokenConfig, TokenIdentity, claims_from_json};
use crate::sources::apim::decode::Fields;
use seam_store::rows::{Cell, Columns, Row};

/// A normalised record: its row and key.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The row.
    pub row: Row,
    /// Its record key (32 hex).
    pub key: String,
}

/// One decoded record and where it was.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Its fields.
    pub fields: &'a Fields,
    /// The shape it came in.
    pub format: &'static str,
    /// Its line or record index.
    pub line: Option<i64>,
}

/// What every row of one input shares.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The input's context.
    pub meta: &'a InputMeta,
    /// Token settings.
    pub tokens: &'a TokenConfig,
    /// When seam accepted the input.
    pub ingest_ns: i64,
}

/// A new row with `time` (the first readable of `time_keys`) and `ingest_time` set.
fn start_row(
    cols: &Columns,
    f: &F<'_>,
    time_keys: &[&str],
    names: &str,
    ctx: Ctx<'_>,
) -> Result<Row, String> {
    let time = f
        .v(time_keys)
        .and_then(|v| time_of(v, ctx.meta))
        .ok_or_else(|| format!("no readable time ({names})"))?;
    let time = ctx.meta.in_window(time)?;
    let mut row = cols.row();
    cols.set(&mut row, "time", Cell::Ts(time));
    cols.set(&mut row, "ingest_time", Cell::Ts(ctx.ingest_ns));
    Ok(row)
}

struct F<'a>(&'a Fields);

impl F<'_> {
    fn v(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter()
            .filter_map(|k| self.0.get(*k))
            .find(|v| text_of(v).is_some() || v.is_object() || v.is_array())
    }
    fn s(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.0.get(*k).and_then(text_of))
    }
    fn n(&self, keys: &[&str]) -> Option<f64> {
        keys.iter().find_map(|k| self.0.get(*k).and_then(num_of))
    }
    fn b(&self, keys: &[&str]) -> Option<bool> {
        keys.iter().find_map(|k| self.0.get(*k).and_then(bool_of))
    }
}

fn service_of(f: &F<'_>, meta: &InputMeta) -> Option<String> {
    let from_id = f.s(&["resourceid"]).and_then(|id| {
        let lower = id.to_ascii_lowercase();
        let i = lower.find("/service/")?;
        lower[i + 9..].split('/').next().map(str::to_string)
    });
    from_id
        .or_else(|| {
            f.s(&["servicename", "deploymentname", "resource"])
                .map(|s| {
                    s.to_ascii_lowercase()
                        .trim_end_matches(".azure-api.net")
                        .to_string()
                })
        })
        .or_else(|| meta.service.clone())
        .filter(|s| !s.is_empty())
}

fn status(v: Option<f64>) -> Option<i32> {
    v.filter(|c| *c > 0.0 && *c < 1000.0)
        .map(|c| c.round() as i32)
}

/// Longest duration taken as written (30 days, in ms): a gateway never waits longer, and an
/// absurd or negative value (`1e308`, NaN) would skew every latency percentile.
const MAX_DURATION_MS: f64 = 30.0 * 86_400_000.0;

/// A duration in milliseconds; NULL when it is not a plausible one.
fn cell_f(v: Option<f64>) -> Cell {
    v.filter(|ms| (0.0..=MAX_DURATION_MS).contains(ms))
        .map_or(Cell::Null, Cell::F64)
}

fn cell_i32(v: Option<i32>) -> Cell {
    v.map_or(Cell::Null, Cell::I32)
}

fn cell_i64(v: Option<f64>) -> Cell {
    v.map_or(Cell::Null, |n| Cell::I64(n.round() as i64))
}

/// Redacts a record's raw text and finds any token in it.
fn raw_text(raw: String, fields: &Fields, tokens: &TokenConfig) -> (String, Option<TokenIdentity>) {
    // The fields hold every value of the record (flattened), so they alone tell which
    // values sit under secret names; the raw text is not parsed again.
    let mut secrets = Vec::new();
    for (k, v) in fields {
        if k == crate::sources::apim::decode::SECRETS_KEY {
            if let Value::Array(list) = v {
                secrets.extend(list.iter().filter_map(|x| x.as_str().map(str::to_string)));
            }
            continue;
        }
        match v {
            Value::String(s)
                if s.len() >= 4
                    && (crate::normalise::redact::is_sensitive_key(k)
                        || tokens.is_extra_secret_name(k)) =>
            {
                secrets.push(s.clone());
            }
            other => secret_values(other, tokens, &mut secrets),
        }
    }
    redact_text(raw, &secrets, tokens)
}

/// A GatewayLogs record to a `gateway_log_copies` row.
///
/// # Errors
/// The reason the record is refused.
pub fn gateway_row(
    cols: &Columns,
    rec: Record<'_>,
    raw: String,
    ctx: Ctx<'_>,
) -> Result<Keyed, String> {
    debug_assert_eq!(
        cols.schema().fields().len(),
        gateway_logs::schema().fields().len()
    );
    let (fields, format, line) = (rec.fields, rec.format, rec.line);
    let (meta, tokens) = (ctx.meta, ctx.tokens);
    let f = F(fields);
    let mut row = start_row(
        cols,
        &f,
        &["time", "timegenerated", "timestamp"],
        "time / TimeGenerated / timeGenerated",
        ctx,
    )?;
    let time = match cols.get(&row, "time") {
        Cell::Ts(t) => *t,
        _ => 0,
    };
    let mut set = |name: &str, c: Cell| cols.set(&mut row, name, c);
    let correlation = f.s(&["correlationid"]);
    let mut token: Option<TokenIdentity> = None;
    let mut header_map = |key: &str| -> Option<Vec<(String, Option<String>)>> {
        let (h, t) = headers_of(f.v(&[key])?, tokens)?;
        if token.is_none() {
            token = t;
        }
        Some(h)
    };
    let req_h = header_map("requestheaders");
    let resp_h = header_map("responseheaders");
    let breq_h = header_map("backendrequestheaders");
    let bresp_h = header_map("backendresponseheaders");
    let header = |h: &Option<Vec<(String, Option<String>)>>, name: &str| {
        h.as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    };
    let trace = header(&breq_h, "traceparent")
        .or_else(|| header(&req_h, "traceparent"))
        .and_then(|tp| trace_of_traceparent(&tp));
    let forwarded =
        header(&breq_h, "x-correlation-id").or_else(|| header(&req_h, "x-correlation-id"));
    let user_agent = header(&req_h, "user-agent");
    let scrub = |s: Option<String>| s.map(|s| tokens.scrub_owned(s).text);
    let url = scrub(f.s(&["url"]));
    let service = service_of(&f, meta);
    let backend_status = status(f.n(&["backendresponsecode"]));
    let total = f.n(&["totaltime", "durationms"]).or_else(|| {
        f.s(&["servicetime"])
            .and_then(|s| crate::normalise::time::timespan_ms(&s))
    });
    let backend_time = f
        .n(&["backendtime"])
        .filter(|t| backend_status.is_some() || *t > 0.0);
    let cache = f.s(&["cache"]).map(|c| c.to_ascii_lowercase());
    let cache_time = f
        .n(&["cachetime"])
        .filter(|t| *t > 0.0 || cache.as_deref() == Some("hit"));
    let status_code = status(f.n(&["responsecode"]));
    let gateway = if format.starts_with("apim_selfhosted") {
        Some(meta.gateway.clone().unwrap_or_else(|| "self-hosted".into()))
    } else {
        Some(meta.gateway.clone().unwrap_or_else(|| "managed".into()))
    };
    let errors = f.v(&["errors"]).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let time_s = time / 1_000_000_000;
    let key = match &correlation {
        Some(c) => key_of(&[
            "gw",
            service.as_deref().unwrap_or(""),
            &c.to_ascii_lowercase(),
        ]),
        None => key_of(&[
            "gw-legacy",
            service.as_deref().unwrap_or(""),
            &time_s.to_string(),
            url.as_deref().unwrap_or(""),
            &status_code.map(|s| s.to_string()).unwrap_or_default(),
        ]),
    };
    set("record_key", Cell::Str(key.clone()));
    set("correlation_id", Cell::text(correlation));
    set("trace_id", Cell::text(trace));
    set("forwarded_correlation_id", Cell::text(forwarded));
    set("api_id", Cell::text(f.s(&["apiid"])));
    set("operation_id", Cell::text(f.s(&["operationid"])));
    set("api_revision", Cell::text(f.s(&["apirevision"])));
    set("product_id", Cell::text(f.s(&["productid"])));
    set(
        "subscription_id",
        Cell::text(f.s(&["apimsubscriptionid", "subscriptionid"])),
    );
    set("user_id", Cell::text(f.s(&["userid"])));
    set("backend_id", Cell::text(f.s(&["backendid"])));
    set(
        "method",
        Cell::text(f.s(&["method"]).map(|m| m.to_ascii_uppercase())),
    );
    set("url_path", Cell::text(url.as_deref().and_then(path_of)));
    set("url", Cell::text(url));
    set(
        "client_ip",
        Cell::text(f.s(&["calleripaddress", "clientip"])),
    );
    set("user_agent", Cell::text(user_agent));
    set("client_protocol", Cell::text(f.s(&["clientprotocol"])));
    set("client_tls_version", Cell::text(f.s(&["clienttlsversion"])));
    set("status_code", cell_i32(status_code));
    set(
        "is_request_success",
        f.b(&["isrequestsuccess"]).map_or(Cell::Null, Cell::Bool),
    );
    set("backend_method", Cell::text(f.s(&["backendmethod"])));
    set("backend_url", Cell::text(scrub(f.s(&["backendurl"]))));
    set("backend_protocol", Cell::text(f.s(&["backendprotocol"])));
    set("backend_status_code", cell_i32(backend_status));
    set("total_time_ms", cell_f(total));
    set("backend_time_ms", cell_f(backend_time));
    set("client_time_ms", cell_f(f.n(&["clienttime"])));
    set("cache", Cell::text(cache));
    set("cache_time_ms", cell_f(cache_time));
    set("last_error_elapsed_ms", cell_f(f.n(&["lasterrorelapsed"])));
    set("last_error_source", Cell::text(f.s(&["lasterrorsource"])));
    set("last_error_scope", Cell::text(f.s(&["lasterrorscope"])));
    set("last_error_section", Cell::text(f.s(&["lasterrorsection"])));
    set("last_error_reason", Cell::text(f.s(&["lasterrorreason"])));
    set(
        "last_error_message",
        Cell::text(scrub(f.s(&["lasterrormessage"]))),
    );
    set("errors", Cell::text(scrub(errors)));
    set("apim_service", Cell::text(service));
    set("gateway", Cell::text(gateway));
    set("region", Cell::text(f.s(&["region", "location"])));
    set(
        "resource_id",
        Cell::text(f.s(&["resourceid"]).map(|s| s.to_ascii_lowercase())),
    );
    set("request_size", cell_i64(f.n(&["requestsize"])));
    set("response_size", cell_i64(f.n(&["responsesize"])));
    set("request_headers", req_h.map_or(Cell::Null, Cell::Map));
    set("response_headers", resp_h.map_or(Cell::Null, Cell::Map));
    set(
        "backend_request_headers",
        breq_h.map_or(Cell::Null, Cell::Map),
    );
    set(
        "backend_response_headers",
        bresp_h.map_or(Cell::Null, Cell::Map),
    );
    set("source_format", Cell::Str(format.to_string()));
    set("source_file", Cell::text(meta.file.clone()));
    set("source_line", line.map_or(Cell::Null, Cell::I64));
    let (raw, raw_token) = raw_text(raw, fields, tokens);
    set("raw", Cell::Str(raw));
    if let Some(t) = token.or(raw_token) {
        cols.set_token(&mut row, &t);
    }
    Ok(Keyed { row, key })
}

/// Keys an event row reads itself; the rest go to `attributes`.
const EVENT_KEYS: &[&str] = &[
    "eventtime",
    "timestamp",
    "time",
    "requestid",
    "correlationid",
    "servicename",
    "requestip",
    "ipaddress",
    "calleripaddress",
    "apiid",
    "apiname",
    "operationid",
    "operationname",
    "productid",
    "subscriptionid",
    "apimsubscriptionid",
    "userid",
    "method",
    "url",
    "statuscode",
    "responsecode",
    "section",
    "elapsedms",
    "elapsed",
    "traceparent",
    "lasterrorsource",
    "lasterrorreason",
    "lasterrormessage",
    "jwt",
    "claims",
    "tokenfingerprint",
];

/// A custom log-to-eventhub event to a `gateway_events` row.
///
/// # Errors
/// The reason the event is refused.
pub fn event_row(
    cols: &Columns,
    rec: Record<'_>,
    raw: String,
    ctx: Ctx<'_>,
) -> Result<Keyed, String> {
    debug_assert_eq!(
        cols.schema().fields().len(),
        gateway_events::schema().fields().len()
    );
    let (fields, format, line) = (rec.fields, rec.format, rec.line);
    let (meta, tokens) = (ctx.meta, ctx.tokens);
    let f = F(fields);
    let mut row = start_row(
        cols,
        &f,
        &["eventtime", "timestamp", "time"],
        "EventTime / Timestamp / time",
        ctx,
    )?;
    let mut set = |name: &str, c: Cell| cols.set(&mut row, name, c);
    let scrub = |s: Option<String>| s.map(|s| tokens.scrub_owned(s).text);
    let url = scrub(f.s(&["url"]));
    set(
        "correlation_id",
        Cell::text(f.s(&["requestid", "correlationid"])),
    );
    set("apim_service", Cell::text(service_of(&f, meta)));
    set(
        "client_ip",
        Cell::text(f.s(&["requestip", "ipaddress", "calleripaddress"])),
    );
    set("api_id", Cell::text(f.s(&["apiid", "apiname"])));
    set(
        "operation_id",
        Cell::text(f.s(&["operationid", "operationname"])),
    );
    set("product_id", Cell::text(f.s(&["productid"])));
    set(
        "subscription_id",
        Cell::text(f.s(&["subscriptionid", "apimsubscriptionid"])),
    );
    set("user_id", Cell::text(f.s(&["userid"])));
    set(
        "method",
        Cell::text(f.s(&["method"]).map(|m| m.to_ascii_uppercase())),
    );
    set("url_path", Cell::text(url.as_deref().and_then(path_of)));
    set("url", Cell::text(url));
    set(
        "status_code",
        cell_i32(status(f.n(&["statuscode", "responsecode"]))),
    );
    set("section", Cell::text(f.s(&["section"])));
    set("elapsed_ms", cell_f(f.n(&["elapsedms", "elapsed"])));
    set(
        "trace_id",
        Cell::text(f.s(&["traceparent"]).and_then(|t| trace_of_traceparent(&t))),
    );
    set("last_error_source", Cell::text(f.s(&["lasterrorsource"])));
    set("last_error_reason", Cell::text(f.s(&["lasterrorreason"])));
    set(
        "last_error_message",
        Cell::text(scrub(f.s(&["lasterrormessage"]))),
    );
    let jwt = f.v(&["jwt", "claims"]).cloned();
    let jwt = match jwt {
        Some(Value::String(s)) => serde_json::from_str(&s).ok(),
        other => other,
    };
    set(
        "token_validated",
        jwt.as_ref()
            .and_then(|j| j.get("validated"))
            .and_then(bool_of)
            .map_or(Cell::Null, Cell::Bool),
    );
    let attrs: Vec<(String, Option<String>)> = fields
        .iter()
        .filter(|(k, _)| !EVENT_KEYS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let t = text_of(v)?;
            let t = if crate::normalise::redact::is_sensitive_key(k)
                || tokens.is_extra_secret_name(k)
            {
                crate::normalise::redact::MARKER.to_string()
            } else {
                tokens.scrub_owned(t).text
            };
            Some((k.clone(), Some(t)))
        })
        .collect();
    set(
        "attributes",
        if attrs.is_empty() {
            Cell::Null
        } else {
            Cell::Map(attrs)
        },
    );
    set("source_format", Cell::Str(format.to_string()));
    set("source_file", Cell::text(meta.file.clone()));
    set("source_line", line.map_or(Cell::Null, Cell::I64));
    let (raw, raw_token) = raw_text(raw, fields, tokens);
    let key = key_of(&["event", &raw]);
    set("record_key", Cell::Str(key.clone()));
    set("raw", Cell::Str(raw));
    let fingerprint = f.s(&["tokenfingerprint"]);
    let claims = jwt.as_ref().filter(|j| j.is_object()).map(claims_from_json);
    if fingerprint.is_some() || claims.is_some() {
        let claims = claims.unwrap_or_default();
        let mut id = tokens.reported(fingerprint, claims.uti.clone());
        id.claims = claims;
        cols.set_token(&mut row, &id);
    } else if let Some(t) = raw_token {
        cols.set_token(&mut row, &t);
    }
    Ok(Keyed { row, key })
}
