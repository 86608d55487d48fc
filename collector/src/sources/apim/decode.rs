//! APIM gateway log shapes to canonical field maps.
//!
//! Takes a body sent to `/ingest/apim` (or a file `seam ingest` read) and the line number of
//! its first line; gives [`ApimItem`]s: GatewayLogs records and custom `log-to-eventhub`
//! events as [`Fields`] (keys canonicalised so every delivery path reads alike), and
//! rejected pieces with their position and reason.
//!
//! Shapes (docs/ingest-formats.md): Event Hubs bodies and pre-2018 storage blobs
//! (`{"records":[…]}`), storage JSON Lines, Log Analytics query results over
//! `ApiManagementGatewayLogs` and `AzureDiagnostics` (`{"tables":[…]}`), 2017 records with
//! `properties` as a JSON string, self-hosted gateway JSON lines (plain, or escaped inside
//! syslog) and `[Info] … [GatewayLogs], key: value` text lines, custom JSON events and
//! `string.Join` CSV events; and query results as the Azure portal exports them: CSV with a
//! header line (read by [`super::csv`]) and JSON arrays of rows keyed by column names, whose
//! datetime columns carry a unit (`TimeGenerated [UTC]`).
//!
//! Canonical keys: lower case, without `_`, without an AzureDiagnostics type suffix (`_s`,
//! `_d`, `_b`, `_g`, `_t`); nested objects are flattened by concatenating keys
//! (`lastError.reason` → `lasterrorreason`), except header maps, `errors` and `jwt`, which
//! stay values. `properties` (an object or a JSON string) and `AdditionalFields` are merged
//! into the record. The Azure subscription (top-level `SubscriptionId`, `_SubscriptionId`)
//! becomes `azuresubscriptionid`, so it is never taken for the APIM subscription.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::decode::json_stream::{Piece, check_first_line, pieces};
use crate::error::IngestError;

/// A record's fields under canonical keys.
pub type Fields = BTreeMap<String, Value>;

/// Where an item was in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// A line number (from 1).
    Line(u64),
    /// An index (from 0) inside a JSON document.
    Index(u64),
}

/// The formats `/ingest/apim` knows, for the `format` parameter and error messages.
pub const FORMATS: &[&str] = &[
    "apim_records (Event Hubs body or pre-2018 storage blob: {\"records\":[...]})",
    "apim_jsonl (storage archive PT1H.json, one record per line)",
    "apim_loganalytics (query result over ApiManagementGatewayLogs)",
    "apim_azurediagnostics (query result over AzureDiagnostics)",
    "apim_loganalytics_csv (Azure portal CSV export of a query result: a header line such as TimeGenerated [UTC],CorrelationId,..., then one row per line)",
    "apim_loganalytics_json (Azure portal JSON export of a query result: [{\"TimeGenerated [UTC]\":...}, ...])",
    "apim_selfhosted_json / apim_selfhosted_text (self-hosted gateway lines)",
    "apim_custom_json / apim_custom_csv (log-to-eventhub events)",
];

/// One item of an APIM input.
#[derive(Debug, Clone, PartialEq)]
pub enum ApimItem {
    /// A GatewayLogs record.
    Gateway {
        /// Where.
        pos: Pos,
        /// Its fields.
        fields: Fields,
        /// The shape it came in.
        format: &'static str,
        /// Its text as received.
        raw: String,
    },
    /// A custom log-to-eventhub event.
    Event {
        /// Where.
        pos: Pos,
        /// Its fields.
        fields: Fields,
        /// The shape it came in.
        format: &'static str,
        /// Its text as received.
        raw: String,
    },
    /// A refused piece.
    Reject {
        /// Where.
        pos: Pos,
        /// Why.
        reason: String,
        /// Its text.
        raw: String,
    },
}

/// Keys whose values stay whole.
const WHOLE: &[&str] = &[
    "requestheaders",
    "responseheaders",
    "backendrequestheaders",
    "backendresponseheaders",
    "errors",
    "tracerecords",
    "jwt",
    "claims",
];

/// The canonical form of a key.
pub fn canon(key: &str) -> String {
    let k = key.to_ascii_lowercase();
    let b = k.as_bytes();
    let stripped = if b.len() > 2
        && b[b.len() - 2] == b'_'
        && matches!(b[b.len() - 1], b's' | b'd' | b'b' | b'g' | b't')
    {
        &k[..k.len() - 2]
    } else {
        &k[..]
    };
    stripped.replace('_', "")
}

fn parse_embedded(s: &str) -> Option<Value> {
    let t = s.trim();
    if !t.starts_with('{') {
        return None;
    }
    serde_json::from_str(t)
        .ok()
        .or_else(|| serde_json::from_str(&t.replace('\'', "\"")).ok())
}

fn put(out: &mut Fields, key: String, v: Value) {
    let empty = match &v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    match out.get(&key) {
        Some(old) if !empty || !matches!(old, Value::Null) => {
            // Keep the first non-empty value.
            let old_empty = matches!(old, Value::Null) || old.as_str() == Some("");
            if old_empty && !empty {
                out.insert(key, v);
            }
        }
        _ => {
            out.insert(key, v);
        }
    }
}

/// Deepest object nesting flattened into concatenated keys: deeper objects stay whole
/// values, so flattening costs at most this many times a record's size.
const MAX_FLATTEN_DEPTH: usize = 8;

fn flatten_into(out: &mut Fields, prefix: &str, obj: &Map<String, Value>, top: bool, depth: usize) {
    let deeper = depth.saturating_add(1);
    // Exports differ in the casing of column names (`_ResourceId`, `_resourceId`).
    let azure_columns = top
        && obj.keys().any(|k| {
            k.eq_ignore_ascii_case("ResourceProvider") || k.eq_ignore_ascii_case("_ResourceId")
        });
    for (k, v) in obj {
        let mut ck = format!("{prefix}{}", canon(k));
        if top && ck == "subscriptionid" && (k.starts_with('_') || azure_columns) {
            // The Azure subscription (AzureDiagnostics `SubscriptionId`, LA `_SubscriptionId`).
            ck = "azuresubscriptionid".into();
        }
        if prefix.is_empty() && (ck == "properties" || ck == "additionalfields") {
            match v {
                Value::Object(_) | Value::String(_) if deeper >= MAX_FLATTEN_DEPTH => {
                    put(out, ck, v.clone());
                }
                Value::Object(m) => flatten_into(out, "", m, false, deeper),
                Value::String(s) => match parse_embedded(s) {
                    Some(Value::Object(m)) => flatten_into(out, "", &m, false, deeper),
                    _ => put(out, ck, v.clone()),
                },
                _ => {}
            }
            continue;
        }
        if WHOLE.contains(&ck.as_str()) {
            put(out, ck, v.clone());
            continue;
        }
        if matches!(v, Value::Object(_) | Value::Array(_))
            && crate::normalise::redact::is_sensitive_key(k)
        {
            // Everything under a secret name is secret, however it is nested.
            let mut leaves = Vec::new();
            crate::normalise::json::secret_leaves(v, &mut leaves);
            if let Value::Array(list) = out
                .entry(SECRETS_KEY.to_string())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.extend(leaves.into_iter().map(Value::String));
            }
        }
        match v {
            Value::Object(_) if deeper >= MAX_FLATTEN_DEPTH => put(out, ck, v.clone()),
            Value::Object(m) => flatten_into(out, &ck, m, false, deeper),
            Value::String(secret)
                if !prefix.is_empty() && crate::normalise::redact::is_sensitive_key(k) =>
            {
                // Flattened, the key no longer ends in its own name: remember the value.
                if let Value::Array(list) = out
                    .entry(SECRETS_KEY.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()))
                {
                    list.push(Value::String(secret.clone()));
                }
                put(out, ck, v.clone());
            }
            _ => put(out, ck, v.clone()),
        }
    }
}

/// The key under which [`fields_of`] lists the values of nested keys with secret names.
pub const SECRETS_KEY: &str = "\u{1}secrets";

/// Flattens one record object into canonical fields.
pub fn fields_of(obj: &Map<String, Value>) -> Fields {
    let mut out = Fields::new();
    flatten_into(&mut out, "", obj, true, 0);
    out
}

/// Keys that mark a GatewayLogs record.
const GATEWAY_KEYS: &[&str] = &[
    "category",
    "operationname",
    "responsecode",
    "isrequestsuccess",
    "totaltime",
    "durationms",
    "servicetime",
    "backendresponsecode",
];

fn is_gateway(f: &Fields) -> bool {
    let cat_ok = |k: &str| {
        f.get(k)
            .and_then(Value::as_str)
            .is_none_or(|s| s.to_ascii_lowercase().contains("gatewaylogs"))
    };
    GATEWAY_KEYS.iter().any(|k| f.contains_key(*k)) && cat_ok("category")
}

fn is_event(f: &Fields) -> bool {
    ["requestid", "eventtime", "jwt", "tokenfingerprint"]
        .iter()
        .any(|k| f.contains_key(*k))
}

/// One record object to an item: a GatewayLogs record, a custom event, or refused.
pub(super) fn classify(
    obj: &Map<String, Value>,
    pos: Pos,
    raw: String,
    format: &'static str,
) -> ApimItem {
    let fields = fields_of(obj);
    // The documented custom event has OperationName too: RequestId/EventTime without a
    // GatewayLogs category is an event.
    let event_first = is_event(&fields) && !fields.contains_key("category");
    if is_gateway(&fields) && !event_first {
        ApimItem::Gateway {
            pos,
            fields,
            format,
            raw,
        }
    } else if is_event(&fields) {
        let format = if format == "apim_jsonl" || format == "apim_records" {
            "apim_custom_json"
        } else {
            format
        };
        ApimItem::Event {
            pos,
            fields,
            format,
            raw,
        }
    } else {
        ApimItem::Reject {
            pos,
            reason: "not an APIM GatewayLogs record (no category, responseCode, totalTime or durationMs) nor a custom event (no RequestId or EventTime)".into(),
            raw,
        }
    }
}

/// A column name without the unit the Azure portal appends to datetime columns in exports
/// (`TimeGenerated [UTC]` → `TimeGenerated` and `UTC`; `TimeGenerated [Local Time]`).
pub(super) fn split_unit(name: &str) -> (&str, Option<&str>) {
    let t = name.trim();
    if let Some(body) = t.strip_suffix(']')
        && let Some((base, unit)) = body.rsplit_once(" [")
        && !base.trim().is_empty()
        && !unit.contains(['[', ']'])
    {
        return (base.trim_end(), Some(unit.trim()));
    }
    (t, None)
}

/// A column of a Log Analytics result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    /// Its name as written (`TimeGenerated [UTC]` in portal exports): the key in `raw`.
    pub(super) written: String,
    /// Its name without the unit (`TimeGenerated`): the key the record is read under.
    pub(super) name: String,
    /// Whether its unit says its times are UTC (`[UTC]`); other units (`[Local Time]`) are
    /// read in the input's zone, like times without one.
    pub(super) utc: bool,
}

impl Column {
    /// A column from its name as written.
    pub(super) fn new(written: &str) -> Self {
        let (name, unit) = split_unit(written);
        Column {
            written: written.to_string(),
            name: name.to_string(),
            utc: unit
                .is_some_and(|u| u.eq_ignore_ascii_case("utc") || u.eq_ignore_ascii_case("gmt")),
        }
    }
}

/// A Log Analytics cell as a record value: `dynamic` cells given as JSON text are parsed.
pub(super) fn la_cell(v: Value) -> Value {
    match v {
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
            match serde_json::from_str::<Value>(&s) {
                Ok(parsed) => parsed,
                Err(_) => Value::String(s),
            }
        }
        other => other,
    }
}

/// A time cell of a `[UTC]` column as ISO-8601 UTC text (`2024-11-06T14:04:55.301Z`), so
/// that the input's `timezone` does not apply to it. Numbers (epoch times are UTC anyway),
/// text that is no time, and year-less text (its year depends on when it is read) stay as
/// they are.
fn utc_time(v: Value) -> Value {
    use crate::normalise::time::{Zone, parse};
    let ns = match &v {
        Value::String(s) => parse(s, Zone::Utc, 0).filter(|ns| {
            // A year-less time resolves differently at another "now": leave it to normalise.
            parse(s, Zone::Utc, i64::MAX / 2) == Some(*ns)
        }),
        _ => None,
    };
    match ns {
        Some(ns) => Value::String(
            chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        ),
        None => v,
    }
}

/// One Log Analytics row (its cells in column order) as a record keyed by the column names
/// without their unit, and as the raw object kept as evidence (keyed by the names as written,
/// times as written). `dynamic` cells given as JSON text are parsed ([`la_cell`]); times
/// under a `[UTC]` column are made ISO-8601 UTC text. A column exported twice under
/// different units keeps its `[UTC]` value, else its first non-null one; a column without a
/// name is kept in `raw` only.
pub(super) fn la_record(
    cols: &[Column],
    cells: impl IntoIterator<Item = Value>,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut obj = Map::new();
    let mut raw = Map::new();
    for (c, v) in cols.iter().zip(cells) {
        let v = la_cell(v);
        raw.insert(c.written.clone(), v.clone());
        if c.name.is_empty() {
            continue;
        }
        let v = if c.utc { utc_time(v) } else { v };
        match obj.get(&c.name) {
            Some(old) if !old.is_null() && (!c.utc || v.is_null()) => {}
            _ => {
                obj.insert(c.name.clone(), v);
            }
        }
    }
    (obj, raw)
}

/// Log Analytics' own columns (lower case): a flat object with one of them is a row of a
/// query result, not an Event Hubs or storage record.
const LA_OWN_COLUMNS: &[&str] = &[
    "tenantid",
    "_resourceid",
    "_subscriptionid",
    "sourcesystem",
    "_itemid",
    "_billedsize",
    "_isbillable",
    "resourceprovider",
];

/// Whether an element of a JSON array is a row of a query result as the Azure portal exports
/// it: a flat object keyed by column names, one of them with a unit (`TimeGenerated [UTC]`),
/// `TimeGenerated` as Log Analytics spells it, or a column only Log Analytics has
/// (`TenantId`, `_ResourceId`, `SourceSystem`, `ResourceProvider`, …). Event Hubs and
/// storage records (`properties`) are not.
fn is_portal_row(o: &Map<String, Value>) -> bool {
    !o.keys().any(|k| k.eq_ignore_ascii_case("properties"))
        && o.keys().any(|k| {
            k == "TimeGenerated"
                || split_unit(k).1.is_some()
                || LA_OWN_COLUMNS.iter().any(|c| k.eq_ignore_ascii_case(c))
        })
}

/// Log Analytics `{"tables":[{"columns":[…],"rows":[…]}]}` to records.
fn log_analytics(v: &Value, out: &mut Vec<ApimItem>) -> bool {
    let Some(tables) = v.get("tables").and_then(Value::as_array) else {
        return false;
    };
    let mut index = 0u64;
    for t in tables {
        let cols: Vec<Column> = t
            .get("columns")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .map(|c| {
                        Column::new(
                            c.get("name")
                                .or_else(|| c.get("ColumnName"))
                                .and_then(Value::as_str)
                                .unwrap_or(""),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let diag = cols.iter().any(|c| {
            let l = c.name.to_ascii_lowercase();
            l == "resourceprovider" || l.ends_with("_s") || l.ends_with("_d")
        });
        let format = if diag {
            "apim_azurediagnostics"
        } else {
            "apim_loganalytics"
        };
        let rows = t
            .get("rows")
            .or_else(|| t.get("Rows"))
            .and_then(Value::as_array);
        for row in rows.into_iter().flatten() {
            let pos = Pos::Index(index);
            index += 1;
            let Some(cells) = row.as_array() else {
                out.push(ApimItem::Reject {
                    pos,
                    reason: "Log Analytics row is not an array".into(),
                    raw: row.to_string(),
                });
                continue;
            };
            if cells.len() != cols.len() {
                out.push(ApimItem::Reject {
                    pos,
                    reason: format!(
                        "Log Analytics row has {} cells for {} columns",
                        cells.len(),
                        cols.len()
                    ),
                    raw: row.to_string(),
                });
                continue;
            }
            // `dynamic` cells come as JSON text.
            let (obj, raw) = la_record(&cols, cells.iter().cloned());
            let raw = Value::Object(raw).to_string();
            out.push(classify(&obj, pos, raw, format));
        }
    }
    true
}

/// A JSON value: a records document, a query result, an array or one record.
fn json_value(value: Value, line: u64, raw: &str, out: &mut Vec<ApimItem>) -> bool {
    match value {
        Value::Object(ref m) => {
            // The Event Hubs / pre-2018 envelope is `{"records":[…]}` and nothing else: a
            // record with a field of that name is a record.
            if let Some(records) = m
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("records"))
                .and_then(|(_, v)| v.as_array())
                .filter(|_| m.len() == 1)
            {
                for (i, r) in records.iter().enumerate() {
                    let pos = Pos::Index(i as u64);
                    match r.as_object() {
                        Some(o) => out.push(classify(o, pos, r.to_string(), "apim_records")),
                        None => out.push(ApimItem::Reject {
                            pos,
                            reason: "record is not a JSON object".into(),
                            raw: r.to_string(),
                        }),
                    }
                }
                return true;
            }
            if log_analytics(&value, out) {
                return true;
            }
            let format = if m.contains_key("timeGenerated") && !m.contains_key("properties") {
                "apim_selfhosted_json"
            } else {
                "apim_jsonl"
            };
            let item = classify(m, Pos::Line(line), raw.to_string(), format);
            let known = !matches!(item, ApimItem::Reject { .. });
            out.push(item);
            known
        }
        Value::Array(items) => {
            let mut known = false;
            for (i, r) in items.iter().enumerate() {
                let pos = Pos::Index(i as u64);
                match r.as_object() {
                    Some(o) if is_portal_row(o) => {
                        // A portal JSON export: read like a row of a query result.
                        let cols: Vec<Column> = o.keys().map(|k| Column::new(k)).collect();
                        let (obj, _) = la_record(&cols, o.values().cloned());
                        let item = classify(&obj, pos, r.to_string(), "apim_loganalytics_json");
                        known |= !matches!(item, ApimItem::Reject { .. });
                        out.push(item);
                    }
                    Some(o) => {
                        let item = classify(o, pos, r.to_string(), "apim_records");
                        known |= !matches!(item, ApimItem::Reject { .. });
                        out.push(item);
                    }
                    None => out.push(ApimItem::Reject {
                        pos,
                        reason: "array element is not a JSON object".into(),
                        raw: r.to_string(),
                    }),
                }
            }
            known
        }
        _ => false,
    }
}

/// Self-hosted gateway text: `[Info] <time> [GatewayLogs], key: value, key: "value", …`.
fn selfhosted_text(line: &str) -> Option<Map<String, Value>> {
    let at = line.find("[GatewayLogs]")?;
    let head = line[..at].trim();
    let time = head
        .rsplit_once(']')
        .map_or(head, |(_, t)| t)
        .trim()
        .to_string();
    let mut obj = Map::new();
    if !time.is_empty() {
        obj.insert("timeGenerated".into(), Value::String(time));
    }
    let rest = line[at + "[GatewayLogs]".len()..].trim_start_matches([',', ' ']);
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let kstart = i;
        while i < bytes.len() && bytes[i] != b':' {
            i += 1;
        }
        let key = rest[kstart..i].trim().trim_matches('"').to_string();
        // Past the `:` (or the end, when there is none).
        i = (i + 1).min(bytes.len());
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut s = String::new();
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch_len = rest[i..].chars().next().map_or(1, char::len_utf8);
                s.push_str(&rest[i..i + ch_len]);
                i += ch_len;
            }
            i = (i + 1).min(bytes.len());
            Value::String(s)
        } else {
            let vstart = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            let t = rest[vstart..i].trim();
            match t {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" | "" => Value::Null,
                _ => t
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| t.parse::<f64>().map(Value::from))
                    .unwrap_or_else(|_| Value::String(t.to_string())),
            }
        };
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if !key.is_empty() {
            obj.insert(key, value);
        }
    }
    Some(obj)
}

/// JSON inside a syslog line, possibly backslash-escaped.
fn embedded_json(line: &str) -> Option<Map<String, Value>> {
    let start = line.find('{')?;
    let end = line.rfind('}')?;
    if end <= start {
        return None;
    }
    let s = &line[start..=end];
    let parsed: Option<Value> = serde_json::from_str(s).ok().or_else(|| {
        let unescaped = s.replace("\\\"", "\"").replace("\\\\", "\\");
        serde_json::from_str(&unescaped).ok()
    });
    match parsed {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// A `string.Join(",", …)` event: time first, then service, request id, IP and operation.
fn csv_event(line: &str) -> Option<Map<String, Value>> {
    let parts: Vec<&str> = line.splitn(5, ',').map(str::trim).collect();
    // The first field must be a time (never longer than a few dozen characters).
    if parts.len() < 3 || parts[0].len() > 64 {
        return None;
    }
    crate::normalise::time::parse(parts[0], Default::default(), i64::MAX / 2)?;
    let names = [
        "EventTime",
        "ServiceName",
        "RequestId",
        "RequestIp",
        "OperationName",
    ];
    let mut obj = Map::new();
    for (n, p) in names.iter().zip(&parts) {
        obj.insert((*n).to_string(), Value::String((*p).to_string()));
    }
    Some(obj)
}

/// Splits an APIM input into items. `first_line` numbers its first line.
///
/// # Errors
/// [`IngestError::UnknownFormat`] when nothing in it is a shape seam knows;
/// [`IngestError::InvalidPayload`] when its line numbers would not fit 64 bits.
pub fn decode(text: &str, first_line: u64) -> Result<Vec<ApimItem>, IngestError> {
    decode_with(text, first_line, true)
}

/// As [`decode`]; with `strict` false (a pulled source whose format is configured), an
/// unreadable first item is refused on its own instead of the whole input.
///
/// # Errors
/// As [`decode`] (never [`IngestError::UnknownFormat`] when not `strict`).
pub fn decode_with(
    text: &str,
    first_line: u64,
    strict: bool,
) -> Result<Vec<ApimItem>, IngestError> {
    check_first_line(text, first_line)?;
    let mut out = Vec::new();
    // An Azure portal CSV export: its first non-blank line is the header of every row.
    if super::csv::decode_csv(text, first_line, &mut out) {
        return Ok(out);
    }
    let mut first_checked = false;
    for p in pieces(text, first_line) {
        let before = out.len();
        let ok = match p {
            Piece::Json { line, value, raw } => json_value(value, line, raw, &mut out),
            Piece::Text { line, text } => {
                let pos = Pos::Line(line);
                if let Some(obj) = selfhosted_text(text) {
                    out.push(classify(
                        &obj,
                        pos,
                        text.to_string(),
                        "apim_selfhosted_text",
                    ));
                    true
                } else if let Some(obj) = embedded_json(text) {
                    let item = classify(&obj, pos, text.to_string(), "apim_selfhosted_json");
                    let ok = !matches!(item, ApimItem::Reject { .. });
                    out.push(item);
                    ok
                } else if let Some(obj) = csv_event(text) {
                    out.push(classify(&obj, pos, text.to_string(), "apim_custom_csv"));
                    true
                } else {
                    out.push(ApimItem::Reject {
                        pos,
                        reason: "not an APIM record: neither JSON, a self-hosted gateway [GatewayLogs] line nor a CSV event".into(),
                        raw: text.to_string(),
                    });
                    false
                }
            }
            Piece::Bad { line, text, reason } => {
                out.push(ApimItem::Reject {
                    pos: Pos::Line(line),
                    reason,
                    raw: text.to_string(),
                });
                false
            }
        };
        if !first_checked && out.len() > before {
            first_checked = true;
            if !ok && strict {
                return Err(IngestError::UnknownFormat(format!(
                    "the input does not start with an APIM gateway log shape seam knows; known formats: {}",
                    FORMATS.join("; ")
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with a field named `records` is a record, not an envelope.
    #[test]
    fn a_records_field_is_not_an_envelope() {
        let text = "{\"time\":\"2024-11-06T14:04:55Z\",\"category\":\"GatewayLogs\",\"correlationId\":\"P\",\"records\":[{\"time\":\"2024-11-06T14:04:57Z\",\"correlationId\":\"C\"}]}\n";
        let items = decode(text, 1).unwrap();
        assert_eq!(items.len(), 1, "{items:?}");
        let ApimItem::Gateway { fields, pos, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(*pos, Pos::Line(1));
        assert_eq!(fields["correlationid"], "P");
    }

    #[test]
    fn canonical_keys() {
        assert_eq!(canon("CorrelationId"), "correlationid");
        assert_eq!(canon("lastError_reason_s"), "lasterrorreason");
        assert_eq!(canon("_ResourceId"), "resourceid");
        assert_eq!(canon("CallerIPAddress"), "calleripaddress");
        assert_eq!(canon("backendResponseCode_d"), "backendresponsecode");
    }

    #[test]
    fn properties_as_string_and_selfhosted_text() {
        let rec = r#"{"records":[{"time":"2017-06-01T10:00:00Z","resourceId":"/SUBSCRIPTIONS/X/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/OLD","category":"GatewayLogs","durationMs":12,"properties":"{\"ApiId\":\"a\",\"SubscriptionId\":\"s1\",\"ResponseCode\":200}"}]}"#;
        let items = decode(rec, 1).unwrap();
        let ApimItem::Gateway { fields, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(fields["apiid"], "a");
        assert_eq!(fields["subscriptionid"], "s1");
        let line = r#"[Info] 2024-09-12T06:29:10.648 [GatewayLogs], isRequestSuccess: true, totalTime: 74, category: "GatewayLogs", callerIpAddress: "10.0.0.1", url: "https://x/a?b=1, c""#;
        let items = decode(line, 1).unwrap();
        let ApimItem::Gateway { fields, format, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(*format, "apim_selfhosted_text");
        assert_eq!(fields["totaltime"], 74);
        assert_eq!(fields["url"], "https://x/a?b=1, c");
        assert!(matches!(
            decode("hello world\n", 1),
            Err(IngestError::UnknownFormat(_))
        ));
    }

    /// The review's body: one record, then lines of `[` and spaces (63 MB of them took 41 s
    /// when each line restarted a parse reading 128 levels ahead), then a record. Each broken
    /// region is refused once, naming its lines and why; the records around it are kept.
    #[test]
    fn brackets_after_a_record_are_one_refusal() {
        let rec = r#"{"time":"2024-11-05T09:20:00Z","category":"GatewayLogs","correlationId":"A","durationMs":5}"#;
        let mut body = format!("{rec}\n");
        for _ in 0..100_000 {
            body.push_str("[        \n");
        }
        body.push_str(&rec.replace("\"A\"", "\"B\""));
        body.push('\n');
        body.push_str(&"{\n".repeat(100_000));
        let split = crate::decode::json_stream::split(&body, 1);
        assert!(split.work <= 4 * body.len() as u64 + 16, "{}", split.work);
        let items = decode(&body, 1).unwrap();
        let summary: Vec<(Pos, bool)> = items
            .iter()
            .map(|i| match i {
                ApimItem::Gateway { pos, .. } | ApimItem::Event { pos, .. } => (*pos, true),
                ApimItem::Reject { pos, .. } => (*pos, false),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (Pos::Line(1), true),
                (Pos::Line(2), false),
                (Pos::Line(100_002), true),
                (Pos::Line(100_003), false)
            ]
        );
        let ApimItem::Reject { reason, raw, .. } = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert!(
            reason.contains("nested deeper than 127 levels") && reason.contains("lines 2-100001"),
            "{reason}"
        );
        assert_eq!(raw.trim_end(), "[");
        let ApimItem::Reject { reason, .. } = &items[3] else {
            panic!("{:?}", items[3])
        };
        assert!(reason.contains("lines 100003-200002"), "{reason}");
    }

    /// A self-hosted text line ending in a key without a value used to slice past its end.
    #[test]
    fn selfhosted_text_with_a_bare_last_key() {
        let line = "[Info] 2024-09-12T06:29:10.648 [GatewayLogs], totalTime: 74, category: \"GatewayLogs\", dangling";
        let items = decode(line, 1).unwrap();
        let ApimItem::Gateway { fields, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(fields["dangling"], Value::Null);
        let line = "[Info] x [GatewayLogs], totalTime: 74, url: \"unterminated";
        assert!(decode(line, 1).is_ok());
    }

    /// Deep records are flattened only so far: the keys cost a bounded multiple of the input.
    #[test]
    fn deep_records_flatten_boundedly() {
        let key = "k".repeat(1000);
        let mut v = serde_json::json!({"category": "GatewayLogs", "durationMs": 1});
        for _ in 0..100 {
            let mut m = Map::new();
            m.insert(key.clone(), v);
            m.insert("leaf".into(), Value::from(1));
            v = Value::Object(m);
        }
        let size = v.to_string().len();
        let Value::Object(obj) = v else {
            unreachable!()
        };
        let fields = fields_of(&obj);
        let key_bytes: usize = fields.keys().map(String::len).sum();
        assert!(
            key_bytes <= MAX_FLATTEN_DEPTH * size,
            "{key_bytes} for {size}"
        );
        assert!(fields.len() <= MAX_FLATTEN_DEPTH + 1, "{}", fields.len());
    }

    /// The Azure portal's JSON export: an array of rows keyed by column names, datetime
    /// columns with their unit, `dynamic` cells as JSON text; Event Hubs arrays are unchanged.
    #[test]
    fn portal_json_export() {
        let body = r#"[
  {"TenantId":"t","TimeGenerated [UTC]":"11/6/2024, 2:04:55.301 PM","CorrelationId":"c-1","Category":"GatewayLogs","ResponseCode":200,"TotalTime":"12","RequestHeaders":"{\"traceparent\":\"00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01\"}","_ResourceId":"/subscriptions/x/resourcegroups/rg/providers/microsoft.apimanagement/service/apim-contoso-weu"},
  {"timeGenerated [Local Time]":"11/6/2024, 3:04:55 PM","correlationId":"c-2","category":"GatewayLogs","responseCode":401,"_resourceId":"/subscriptions/x/providers/microsoft.apimanagement/service/apim-contoso-weu"}
]"#;
        let items = decode(body, 1).unwrap();
        let ApimItem::Gateway {
            fields,
            format,
            pos,
            raw,
        } = &items[0]
        else {
            panic!("{items:?}")
        };
        assert_eq!(*format, "apim_loganalytics_json");
        assert_eq!(*pos, Pos::Index(0));
        assert_eq!(fields["timegenerated"], "2024-11-06T14:04:55.301Z");
        assert_eq!(fields["correlationid"], "c-1");
        assert_eq!(
            fields["requestheaders"]["traceparent"],
            "00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01"
        );
        assert!(raw.contains("TimeGenerated [UTC]"), "{raw}");
        let ApimItem::Gateway { fields, format, .. } = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!(*format, "apim_loganalytics_json");
        // Not UTC: left for the input's zone.
        assert_eq!(fields["timegenerated"], "11/6/2024, 3:04:55 PM");
        assert_eq!(fields["responsecode"], 401);

        let records = r#"[{"time":"2024-11-05T09:20:00Z","category":"GatewayLogs","durationMs":5,"properties":{"correlationId":"A"}}]"#;
        let items = decode(records, 1).unwrap();
        let ApimItem::Gateway { format, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(*format, "apim_records");
    }

    /// A portal CSV export is read as one, its rows numbered from the header's line.
    #[test]
    fn portal_csv_export() {
        let body = "\u{feff}TimeGenerated [UTC],CorrelationId,Category,Url\n\
                    \"11/6/2024, 2:04:55.301 PM\",c-1,GatewayLogs,\"https://x/a?b=1,2\"\n";
        let items = decode(body, 7).unwrap();
        let ApimItem::Gateway {
            fields,
            format,
            pos,
            ..
        } = &items[0]
        else {
            panic!("{items:?}")
        };
        assert_eq!(*format, "apim_loganalytics_csv");
        assert_eq!(*pos, Pos::Line(8));
        assert_eq!(fields["timegenerated"], "2024-11-06T14:04:55.301Z");
        assert_eq!(fields["url"], "https://x/a?b=1,2");
    }

    #[test]
    fn line_numbers_that_would_overflow_are_refused() {
        assert!(matches!(
            decode("{}", u64::MAX),
            Err(IngestError::InvalidPayload(_))
        ));
        assert!(matches!(
            decode("{}", i64::MAX as u64 - 1),
            Err(IngestError::InvalidPayload(_))
        ));
        assert!(decode(r#"{"category":"GatewayLogs"}"#, 1 << 53).is_ok());
    }
}
