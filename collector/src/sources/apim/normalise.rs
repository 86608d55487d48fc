//! APIM GatewayLogs records and custom gateway events to rows of `gateway_log_copies` and
//! `gateway_events`.
//!
//! Takes [`Fields`] from `sources::apim::decode`, the input's [`InputMeta`] and the token settings;
//! gives a [`Row`] in the table's column order with its record key, or the reason the
//! record was refused (it has no readable time). Field aliases across delivery paths are
//! resolved here (docs/ingest-formats.md lists them); the raw record is kept, redacted.

use seam_schemas::columns::{
    API_ID, APIM_SERVICE, ATTRIBUTES, BACKEND_STATUS_CODE, CACHE, CLIENT_IP, CORRELATION_ID,
    ELAPSED_MS, GATEWAY, INGEST_TIME, LAST_ERROR_MESSAGE, LAST_ERROR_REASON, LAST_ERROR_SOURCE,
    METHOD, OPERATION_ID, PRODUCT_ID, RAW, RECORD_KEY, SOURCE_FILE, SOURCE_FORMAT, SOURCE_LINE,
    STATUS_CODE, SUBSCRIPTION_ID, TIME, TRACE_ID, URL, URL_PATH, USER_AGENT, USER_ID,
};
use seam_schemas::tables::gateway_events::{self, SECTION, TOKEN_VALIDATED};
use seam_schemas::tables::gateway_logs::{
    self, API_REVISION, BACKEND_ID, BACKEND_METHOD, BACKEND_PROTOCOL, BACKEND_REQUEST_HEADERS,
    BACKEND_RESPONSE_HEADERS, BACKEND_TIME_MS, BACKEND_URL, CACHE_TIME_MS, CLIENT_PROTOCOL,
    CLIENT_TIME_MS, CLIENT_TLS_VERSION, ERRORS, FORWARDED_CORRELATION_ID, IS_REQUEST_SUCCESS,
    LAST_ERROR_ELAPSED_MS, LAST_ERROR_SCOPE, LAST_ERROR_SECTION, REGION, REQUEST_HEADERS,
    REQUEST_SIZE, RESOURCE_ID, RESPONSE_HEADERS, RESPONSE_SIZE, TOTAL_TIME_MS,
};
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
    cols.set(&mut row, TIME, Cell::Ts(time));
    cols.set(&mut row, INGEST_TIME, Cell::Ts(ctx.ingest_ns));
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
    redact_text(raw, &secrets_in(fields, tokens), tokens)
}

/// The values a record's raw text must not keep: values under secret names (flattened
/// fields, the nested ones [`crate::sources::apim::decode::fields_of`] listed) and the
/// secrets inside every other value.
pub(crate) fn secrets_in(fields: &Fields, tokens: &TokenConfig) -> Vec<String> {
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
    secrets
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
    let time = match cols.get(&row, TIME) {
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
    set(RECORD_KEY, Cell::Str(key.clone()));
    set(CORRELATION_ID, Cell::text(correlation));
    set(TRACE_ID, Cell::text(trace));
    set(FORWARDED_CORRELATION_ID, Cell::text(forwarded));
    set(API_ID, Cell::text(f.s(&["apiid"])));
    set(OPERATION_ID, Cell::text(f.s(&["operationid"])));
    set(API_REVISION, Cell::text(f.s(&["apirevision"])));
    set(PRODUCT_ID, Cell::text(f.s(&["productid"])));
    set(
        SUBSCRIPTION_ID,
        Cell::text(f.s(&["apimsubscriptionid", "subscriptionid"])),
    );
    set(USER_ID, Cell::text(f.s(&["userid"])));
    set(BACKEND_ID, Cell::text(f.s(&["backendid"])));
    set(
        METHOD,
        Cell::text(f.s(&["method"]).map(|m| m.to_ascii_uppercase())),
    );
    set(URL_PATH, Cell::text(url.as_deref().and_then(path_of)));
    set(URL, Cell::text(url));
    set(CLIENT_IP, Cell::text(f.s(&["calleripaddress", "clientip"])));
    set(USER_AGENT, Cell::text(user_agent));
    set(CLIENT_PROTOCOL, Cell::text(f.s(&["clientprotocol"])));
    set(CLIENT_TLS_VERSION, Cell::text(f.s(&["clienttlsversion"])));
    set(STATUS_CODE, cell_i32(status_code));
    set(
        IS_REQUEST_SUCCESS,
        f.b(&["isrequestsuccess"]).map_or(Cell::Null, Cell::Bool),
    );
    set(BACKEND_METHOD, Cell::text(f.s(&["backendmethod"])));
    set(BACKEND_URL, Cell::text(scrub(f.s(&["backendurl"]))));
    set(BACKEND_PROTOCOL, Cell::text(f.s(&["backendprotocol"])));
    set(BACKEND_STATUS_CODE, cell_i32(backend_status));
    set(TOTAL_TIME_MS, cell_f(total));
    set(BACKEND_TIME_MS, cell_f(backend_time));
    set(CLIENT_TIME_MS, cell_f(f.n(&["clienttime"])));
    set(CACHE, Cell::text(cache));
    set(CACHE_TIME_MS, cell_f(cache_time));
    set(LAST_ERROR_ELAPSED_MS, cell_f(f.n(&["lasterrorelapsed"])));
    set(LAST_ERROR_SOURCE, Cell::text(f.s(&["lasterrorsource"])));
    set(LAST_ERROR_SCOPE, Cell::text(f.s(&["lasterrorscope"])));
    set(LAST_ERROR_SECTION, Cell::text(f.s(&["lasterrorsection"])));
    set(LAST_ERROR_REASON, Cell::text(f.s(&["lasterrorreason"])));
    set(
        LAST_ERROR_MESSAGE,
        Cell::text(scrub(f.s(&["lasterrormessage"]))),
    );
    set(ERRORS, Cell::text(scrub(errors)));
    set(APIM_SERVICE, Cell::text(service));
    set(GATEWAY, Cell::text(gateway));
    set(gateway_logs::GATEWAY_PRODUCT, Cell::Str("apim".into()));
    set(REGION, Cell::text(f.s(&["region", "location"])));
    set(
        RESOURCE_ID,
        Cell::text(f.s(&["resourceid"]).map(|s| s.to_ascii_lowercase())),
    );
    set(REQUEST_SIZE, cell_i64(f.n(&["requestsize"])));
    set(RESPONSE_SIZE, cell_i64(f.n(&["responsesize"])));
    set(REQUEST_HEADERS, req_h.map_or(Cell::Null, Cell::Map));
    set(RESPONSE_HEADERS, resp_h.map_or(Cell::Null, Cell::Map));
    set(
        BACKEND_REQUEST_HEADERS,
        breq_h.map_or(Cell::Null, Cell::Map),
    );
    set(
        BACKEND_RESPONSE_HEADERS,
        bresp_h.map_or(Cell::Null, Cell::Map),
    );
    set(SOURCE_FORMAT, Cell::Str(format.to_string()));
    set(SOURCE_FILE, Cell::text(meta.file.clone()));
    set(SOURCE_LINE, line.map_or(Cell::Null, Cell::I64));
    let (raw, raw_token) = raw_text(raw, fields, tokens);
    set(RAW, Cell::Str(raw));
    if let Some(t) = token.or(raw_token) {
        cols.set_token(&mut row, &(&t).into());
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
        CORRELATION_ID,
        Cell::text(f.s(&["requestid", "correlationid"])),
    );
    set(APIM_SERVICE, Cell::text(service_of(&f, meta)));
    set(
        CLIENT_IP,
        Cell::text(f.s(&["requestip", "ipaddress", "calleripaddress"])),
    );
    set(API_ID, Cell::text(f.s(&["apiid", "apiname"])));
    set(
        OPERATION_ID,
        Cell::text(f.s(&["operationid", "operationname"])),
    );
    set(PRODUCT_ID, Cell::text(f.s(&["productid"])));
    set(
        SUBSCRIPTION_ID,
        Cell::text(f.s(&["subscriptionid", "apimsubscriptionid"])),
    );
    set(USER_ID, Cell::text(f.s(&["userid"])));
    set(
        METHOD,
        Cell::text(f.s(&["method"]).map(|m| m.to_ascii_uppercase())),
    );
    set(URL_PATH, Cell::text(url.as_deref().and_then(path_of)));
    set(URL, Cell::text(url));
    set(
        STATUS_CODE,
        cell_i32(status(f.n(&["statuscode", "responsecode"]))),
    );
    set(SECTION, Cell::text(f.s(&["section"])));
    set(ELAPSED_MS, cell_f(f.n(&["elapsedms", "elapsed"])));
    set(
        TRACE_ID,
        Cell::text(f.s(&["traceparent"]).and_then(|t| trace_of_traceparent(&t))),
    );
    set(LAST_ERROR_SOURCE, Cell::text(f.s(&["lasterrorsource"])));
    set(LAST_ERROR_REASON, Cell::text(f.s(&["lasterrorreason"])));
    set(
        LAST_ERROR_MESSAGE,
        Cell::text(scrub(f.s(&["lasterrormessage"]))),
    );
    let jwt = f.v(&["jwt", "claims"]).cloned();
    let jwt = match jwt {
        Some(Value::String(s)) => serde_json::from_str(&s).ok(),
        other => other,
    };
    set(
        TOKEN_VALIDATED,
        jwt.as_ref()
            .and_then(|j| j.get("validated"))
            .and_then(bool_of)
            .map_or(Cell::Null, Cell::Bool),
    );
    let secrets = secrets_in(fields, tokens);
    let attrs: Vec<(String, Option<String>)> = fields
        .iter()
        .filter(|(k, _)| !EVENT_KEYS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let t = text_of(v)?;
            // A value nested under a secret name is flattened under a key that no longer
            // says so: the record's secret list knows it.
            let t = if crate::normalise::redact::is_sensitive_key(k)
                || tokens.is_extra_secret_name(k)
                || secrets.contains(&t)
            {
                crate::normalise::redact::MARKER.to_string()
            } else {
                tokens.scrub_owned(t).text
            };
            Some((k.clone(), Some(t)))
        })
        .collect();
    set(
        ATTRIBUTES,
        if attrs.is_empty() {
            Cell::Null
        } else {
            Cell::Map(attrs)
        },
    );
    set(SOURCE_FORMAT, Cell::Str(format.to_string()));
    set(SOURCE_FILE, Cell::text(meta.file.clone()));
    set(SOURCE_LINE, line.map_or(Cell::Null, Cell::I64));
    let (raw, raw_token) = raw_text(raw, fields, tokens);
    let key = key_of(&["event", &raw]);
    set(RECORD_KEY, Cell::Str(key.clone()));
    set(RAW, Cell::Str(raw));
    let fingerprint = f.s(&["tokenfingerprint"]);
    let claims = jwt.as_ref().filter(|j| j.is_object()).map(claims_from_json);
    if fingerprint.is_some() || claims.is_some() {
        let claims = claims.unwrap_or_default();
        let mut id = tokens.reported(fingerprint, claims.uti.clone());
        id.claims = claims;
        cols.set_token(&mut row, &(&id).into());
    } else if let Some(t) = raw_token {
        cols.set_token(&mut row, &(&t).into());
    }
    Ok(Keyed { row, key })
}
