//! Azure portal CSV exports of Log Analytics query results over `ApiManagementGatewayLogs`
//! and `AzureDiagnostics` (format `apim_loganalytics_csv`).
//!
//! Takes the text of an export, or a chunk of one (its header line, then rows: `seam ingest`
//! cuts large exports so and repeats the header), and the line number of its first line;
//! gives one [`ApimItem`] per row, at the line the row starts on, its fields built exactly as
//! for a row of a `{"tables":[…]}` query result ([`super::decode`]: `dynamic` cells parsed,
//! `AdditionalFields` merged, `_s`/`_d` suffixes dropped), or the row refused with why.
//!
//! The layout (docs/ingest-formats.md; sample `tests/fixtures/apim-gatewaylogs-portal.csv`):
//! - an optional UTF-8 byte-order mark;
//! - a header line of column names separated by commas, such as `TenantId,TimeGenerated
//!   [UTC],OperationName,CorrelationId,…,_ResourceId`. Datetime columns carry their unit:
//!   times under ` [UTC]` are UTC whatever the input's `timezone`; under another unit
//!   (` [Local Time]`) they are read in the input's zone, as are times of columns without
//!   one. Names differ in casing between exports (`TimeGenerated`, `timeGenerated`,
//!   `CallerIPAddress`); AzureDiagnostics columns have type suffixes (`apiId_s`,
//!   `backendResponseCode_d`);
//! - one row per record, RFC 4180: a field holding a comma, a quote or a line break is quoted,
//!   with `"` doubled inside; `dynamic` columns (`RequestHeaders`, `Errors`,
//!   `AdditionalFields`, …) are JSON text; an empty field is a missing value; times are
//!   locale text (`11/6/2024, 2:04:55.301 PM`) or ISO-8601.
//!
//! Blank lines are skipped. A row with another number of fields than the header has columns
//! is refused with its line and both counts; when it runs over several lines (an unclosed
//! quote took the lines after it), only its first line is refused and reading resumes at the
//! next line, so one stray quote cannot swallow the rest of the export.

use ::csv::{ReaderBuilder, StringRecord};
use serde_json::Value;

use super::decode::{ApimItem, Column, Pos, canon, classify, la_record, split_unit};

/// The `source_format` of the rows of a portal CSV export.
pub const FORMAT: &str = "apim_loganalytics_csv";

/// Longest header line looked at (an AzureDiagnostics export has a few hundred columns).
const MAX_HEADER_LEN: usize = 64 * 1024;

/// Longest column name.
const MAX_NAME_LEN: usize = 128;

/// The time column of a query result (canonical names).
const TIME_COLUMNS: &[&str] = &["timegenerated", "timestamp", "time"];

/// GatewayLogs columns (canonical names): a header with one of them besides a time column is
/// an export of gateway logs.
const GATEWAY_COLUMNS: &[&str] = &[
    "correlationid",
    "responsecode",
    "backendresponsecode",
    "url",
    "backendurl",
    "apiid",
    "operationid",
    "method",
    "calleripaddress",
    "resourceprovider",
    "category",
    "operationname",
    "isrequestsuccess",
    "totaltime",
    "durationms",
    "backendtime",
    "apimsubscriptionid",
    "requestheaders",
    "lasterrorreason",
    "lasterrorsource",
];

/// Whether a column name (without its unit) can be one: letters, digits and `_ . - $ @`
/// and spaces, or empty (a trailing comma). JSON, log lines and data rows are not.
fn plausible_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$' | '@' | ' '))
}

/// The column names of `line` when it is the header line of a portal export
/// ([`is_csv_header`]).
fn header_names(line: &str) -> Option<Vec<String>> {
    let line = line
        .strip_prefix('\u{feff}')
        .unwrap_or(line)
        .trim_end_matches(['\r', '\n']);
    if line.len() > MAX_HEADER_LEN
        || line.contains('\n')
        || !line.contains(',')
        || line.trim_start().starts_with(['{', '['])
    {
        return None;
    }
    let mut rdr = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    let mut rec = StringRecord::new();
    if !matches!(rdr.read_record(&mut rec), Ok(true)) {
        return None;
    }
    let names: Vec<String> = rec.iter().map(|n| n.trim().to_string()).collect();
    if names.len() < 3 || !names.iter().all(|n| plausible_name(split_unit(n).0)) {
        return None;
    }
    let canonical: Vec<String> = names.iter().map(|n| canon(split_unit(n).0)).collect();
    let time = canonical
        .iter()
        .position(|c| TIME_COLUMNS.contains(&c.as_str()))?;
    canonical
        .iter()
        .enumerate()
        .any(|(i, c)| i != time && GATEWAY_COLUMNS.contains(&c.as_str()))
        .then_some(names)
}

/// Whether `line` is the header line of an Azure portal CSV export of gateway logs: at least
/// three comma-separated column names, one of them (without a ` [UTC]`-like unit, in any
/// casing) `TimeGenerated`, `Timestamp` or `time`, and another a GatewayLogs column
/// (`CorrelationId`, `ResponseCode`, `Url`, `ApiId`, `Method`, `CallerIpAddress`,
/// `ResourceProvider`, `Category`, `OperationName`, …, AzureDiagnostics type suffixes
/// allowed). A byte-order mark before it and a line break after it are allowed.
pub fn is_csv_header(line: &str) -> bool {
    header_names(line).is_some()
}

/// The header of an export: the byte offset of the line after it (the text's length when
/// there is none), that line's number, and the columns. `None` when the first non-blank line
/// of `body` is no header.
fn find_header(body: &str, first_line: u64) -> Option<(usize, u64, Vec<Column>)> {
    let mut start = 0usize;
    let mut line = first_line;
    loop {
        let rest = body.get(start..)?;
        if rest.trim_start_matches([' ', '\t']).starts_with(['{', '[']) {
            // JSON: no need to look for the end of a long line.
            return None;
        }
        let window = rest
            .as_bytes()
            .get(..rest.len().min(MAX_HEADER_LEN + 2))
            .unwrap_or_default();
        let this = match window.iter().position(|&b| b == b'\n') {
            Some(end) => rest.get(..end)?,
            None if window.len() == rest.len() => rest,
            // A first line longer than any header.
            None => return None,
        };
        let after = start.saturating_add(this.len()).saturating_add(1);
        if !this.trim().is_empty() {
            let names = header_names(this)?;
            let cols = names.iter().map(|n| Column::new(n)).collect();
            return Some((after.min(body.len()), line.saturating_add(1), cols));
        }
        if this.len() == rest.len() {
            // Nothing but blank lines.
            return None;
        }
        start = after;
        line = line.saturating_add(1);
    }
}

/// A byte offset of the reader's position, inside a text of `len` bytes.
fn offset_of(pos: &::csv::Position, len: usize) -> usize {
    usize::try_from(pos.byte()).map_or(len, |b| b.min(len))
}

/// Moves `cursor` (a byte offset of `bytes` and the number of its line) forward to `at` and
/// gives the number of the line `at` is on.
fn line_at(cursor: &mut (usize, u64), bytes: &[u8], at: usize) -> u64 {
    let (from, line) = *cursor;
    if at > from {
        let breaks = bytes
            .get(from..at)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        *cursor = (at, line.saturating_add(breaks as u64));
    }
    cursor.1
}

fn refuse(line: u64, reason: String, raw: &str) -> ApimItem {
    ApimItem::Reject {
        pos: Pos::Line(line),
        reason,
        raw: raw.to_string(),
    }
}

/// Whether a CSV reader is inside a quoted field after `text`, starting inside one when
/// `in_quotes`. RFC 4180 as the server's reader applies it: a `"` opens a quoted field only
/// at the start of a field; inside one, `""` is a quote and a lone `"` closes it; a `"`
/// inside an unquoted field (`5" monitor`) is a character like any other.
pub fn in_quotes_after(in_quotes: bool, text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut inside = in_quotes;
    let mut field_start = !in_quotes;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if inside {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    inside = false;
                }
            }
        } else {
            match b {
                b'"' if field_start => inside = true,
                b',' | b'\n' | b'\r' => {
                    field_start = true;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            field_start = false;
        }
        i += 1;
    }
    inside
}

/// Reads an Azure portal CSV export, or a chunk of one (its header line, then rows), whose
/// first line is line `first_line`; a byte-order mark and blank lines before the header are
/// allowed. Pushes to `out` one item per row, at the line the row starts on: a GatewayLogs
/// record or a custom event in format [`FORMAT`] (raw text: the row as a JSON object keyed by
/// the header's names), or the row refused with why. Gives false, pushing nothing, when the
/// first non-blank line of `text` is no export header ([`is_csv_header`]).
pub fn decode_csv(text: &str, first_line: u64, out: &mut Vec<ApimItem>) -> bool {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some((rows_at, rows_line, cols)) = find_header(body, first_line) else {
        return false;
    };
    let bytes = body.as_bytes();
    // Where the current reader started: a new one starts after a row that ran away.
    let mut offset = rows_at;
    let mut cursor = (rows_at, rows_line);
    'readers: while offset < body.len() {
        let rest = body.get(offset..).unwrap_or_default();
        let mut rdr = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(rest.as_bytes());
        let mut rec = StringRecord::new();
        loop {
            let from = offset + offset_of(rdr.position(), rest.len());
            let read = rdr.read_record(&mut rec);
            let to = offset + offset_of(rdr.position(), rest.len());
            // The row's text: from its first character (past the line breaks before it) to
            // its line break.
            let span = body.get(from..to).unwrap_or_default();
            let row = span.trim_start_matches(['\r', '\n']);
            let at = to - row.len();
            let row = row.trim_end_matches(['\r', '\n']);
            let line = line_at(&mut cursor, bytes, at);
            match read {
                Ok(false) => break 'readers,
                Ok(true) => {}
                Err(e) => {
                    if to <= from {
                        break 'readers;
                    }
                    out.push(refuse(line, format!("unreadable CSV row: {e}"), row));
                    continue;
                }
            }
            if to >= body.len() && row.contains('\n') && in_quotes_after(false, row) {
                // A quote never closed swallows the rest of the input into one field.
                let nl = row.find('\n').unwrap_or(row.len());
                let first = row.get(..nl).unwrap_or_default().trim_end_matches('\r');
                out.push(refuse(
                    line,
                    "a quoted field is never closed (it runs to the end of the input); this \
                     line is refused and reading resumes at the next one"
                        .to_string(),
                    first,
                ));
                offset = at + nl + 1;
                continue 'readers;
            }
            if rec.len() == 1 && rec.get(0).is_some_and(|f| f.trim().is_empty()) {
                // A blank line.
                continue;
            }
            if rec.len() != cols.len() {
                let reason = format!(
                    "CSV row has {} fields but the header has {} columns",
                    rec.len(),
                    cols.len()
                );
                if let Some(nl) = row.find('\n') {
                    let last = line.saturating_add(row.matches('\n').count() as u64);
                    let first = row.get(..nl).unwrap_or_default().trim_end_matches('\r');
                    out.push(refuse(
                        line,
                        format!(
                            "{reason}: it runs over lines {line}-{last} (an unclosed quote?); \
                             this line is refused and reading resumes at the next one"
                        ),
                        first,
                    ));
                    offset = at + nl + 1;
                    continue 'readers;
                }
                out.push(refuse(line, reason, row));
                continue;
            }
            let cells = rec.iter().map(|c| {
                if c.is_empty() {
                    Value::Null
                } else {
                    Value::String(c.to_string())
                }
            });
            let (obj, raw) = la_record(&cols, cells);
            out.push(classify(
                &obj,
                Pos::Line(line),
                Value::Object(raw).to_string(),
                FORMAT,
            ));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::json::InputMeta;
    use crate::normalise::token::TokenConfig;
    use crate::sources::apim::decode::{Fields, decode};
    use crate::sources::apim::normalise::{Ctx, Record, gateway_row};
    use seam_schemas::columns::{
        APIM_SERVICE, BACKEND_STATUS_CODE, RAW, SOURCE_FORMAT, STATUS_CODE, TIME, TRACE_ID,
    };
    use seam_schemas::tables::gateway_logs;
    use seam_store::rows::{Cell, Columns};

    /// An ApiManagementGatewayLogs export: byte-order mark, `TimeGenerated [UTC]`, locale and
    /// ISO times, headers as JSON text with doubled quotes (a traceparent, a bearer token),
    /// a quoted URL with a comma, an empty BackendResponseCode (rejected by the gateway), a
    /// message over two lines, a row with too few fields (line 6), and lower-case
    /// `_ResourceId`.
    const GATEWAY_LOGS: &str = concat!(
        "\u{feff}",
        r#"TenantId,TimeGenerated [UTC],OperationName,CorrelationId,Region,IsRequestSuccess,Category,TotalTime,CallerIpAddress,Method,Url,ResponseCode,BackendResponseCode,BackendTime,ApiId,OperationId,ApimSubscriptionId,LastErrorSource,LastErrorReason,LastErrorMessage,RequestHeaders,BackendRequestHeaders,_ResourceId
0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,"11/6/2024, 2:04:55.301 PM",Microsoft.ApiManagement/GatewayLogs,8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07,West Europe,true,GatewayLogs,184,203.0.113.45,GET,"https://apim-contoso-weu.azure-api.net/orders/v1/orders?ids=ORD-1001,ORD-1002",200,200,171,orders-api,get-order,6541a7c2f1e9b80d2c3a4b5e,,,,"{""traceparent"":""00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01"",""Authorization"":""Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJjc3YtdGVzdCIsInRpZCI6InQifQ.c2ln""}","{""traceparent"":""00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-b2c4d6e8f0a1b3c5-01"",""X-Correlation-ID"":""8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07""}",/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/rg-integration-weu/providers/microsoft.apimanagement/service/apim-contoso-weu
0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,2024-11-06T14:05:10.123Z,Microsoft.ApiManagement/GatewayLogs,2b6e4d1a-8c3f-4a97-b5e2-9d1c0f7a3e64,West Europe,false,GatewayLogs,3,203.0.113.45,GET,https://apim-contoso-weu.azure-api.net/orders/v1/orders/ORD-1002,401,,0,orders-api,get-order,6541a7c2f1e9b80d2c3a4b5e,validate-jwt,TokenExpired,IDX10223: Lifetime validation failed. The token is expired.,"{""traceparent"":""00-0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f-7e8f9a0b1c2d3e4f-01""}",,/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/rg-integration-weu/providers/microsoft.apimanagement/service/apim-contoso-weu
0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,"11/6/2024, 2:06:01.5 PM",Microsoft.ApiManagement/GatewayLogs,d7c3b9a1-4e2f-4d8b-9a61-5b0c7e2f1d94,West Europe,false,GatewayLogs,4,192.0.2.77,POST,https://apim-contoso-weu.azure-api.net/orders/v1/orders,403,,0,orders-api,create-order,6541a7c2f1e9b80d2c3a4c01,validate-jwt,TokenClaimValueNotAllowed,"Claim scp value of Orders.Read Customers.Read is not allowed.
Access denied.","{""User-Agent"":""Mozilla/5.0 (Windows NT 10.0; Win64; x64)""}",,/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/rg-integration-weu/providers/microsoft.apimanagement/service/apim-contoso-weu
0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,"11/6/2024, 2:06:30 PM",too few fields
0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,"11/6/2024, 2:07:44.3307718 PM",Microsoft.ApiManagement/GatewayLogs,7a2c5e9f-1b3d-4f6a-8c0e-2d4f6a8b0c1e,West Europe,true,GatewayLogs,6,192.0.2.77,GET,https://apim-contoso-weu.azure-api.net/customers/v1/customers/C-20417,200,,0,customers-api,get-customer,6541a7c2f1e9b80d2c3a4c01,,,,,,/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/rg-integration-weu/providers/microsoft.apimanagement/service/apim-contoso-weu
"#
    );

    /// An AzureDiagnostics export: other casings (`timeGenerated [UTC]`, `CallerIPAddress`),
    /// type suffixes, `AdditionalFields` as JSON text, upper-case `ResourceId`, the Azure
    /// `SubscriptionId`; CRLF line ends and a blank line between the rows.
    const AZURE_DIAGNOSTICS: &str = r#"TenantId,timeGenerated [UTC],ResourceId,Category,SubscriptionId,ResourceProvider,OperationName,correlationId_g,CallerIPAddress,DurationMs,method_s,url_s,responseCode_d,backendResponseCode_d,apiId_s,isRequestSuccess_b,AdditionalFields,Type,_ResourceId
0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,"11/5/2024, 9:14:03.127 AM",/SUBSCRIPTIONS/6F1C2D3E-4A5B-4C6D-8E9F-0A1B2C3D4E5F/RESOURCEGROUPS/RG-INTEGRATION-WEU/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM-CONTOSO-WEU,GatewayLogs,6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f,MICROSOFT.APIMANAGEMENT,Microsoft.ApiManagement/GatewayLogs,8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07,203.0.113.45,184,GET,https://apim-contoso-weu.azure-api.net/orders/v1/orders/ORD-1001,200,200,orders-api,True,"{""apimSubscriptionId"":""6541a7c2f1e9b80d2c3a4b5e"",""backendTime"":171,""requestHeaders"":{""traceparent"":""00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01""}}",AzureDiagnostics,/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/rg-integration-weu/providers/microsoft.apimanagement/service/apim-contoso-weu

0e6c4a2b-8d1f-4e3a-b5c7-9f2d4e6a8b1c,"11/5/2024, 9:15:37.204 AM",/SUBSCRIPTIONS/6F1C2D3E-4A5B-4C6D-8E9F-0A1B2C3D4E5F/RESOURCEGROUPS/RG-INTEGRATION-WEU/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM-CONTOSO-WEU,GatewayLogs,6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f,MICROSOFT.APIMANAGEMENT,Microsoft.ApiManagement/GatewayLogs,2b6e4d1a-8c3f-4a97-b5e2-9d1c0f7a3e64,203.0.113.45,3,GET,https://apim-contoso-weu.azure-api.net/orders/v1/orders/ORD-1002,401,,orders-api,False,"{""apimSubscriptionId"":""6541a7c2f1e9b80d2c3a4b5e"",""lastError"":{""source"":""validate-jwt"",""reason"":""TokenExpired"",""section"":""inbound""}}",AzureDiagnostics,/subscriptions/6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f/resourcegroups/rg-integration-weu/providers/microsoft.apimanagement/service/apim-contoso-weu
"#;

    /// Each item's line, and its fields when it is a GatewayLogs record (else its reason).
    fn lines(items: &[ApimItem]) -> Vec<(u64, Result<&Fields, &str>)> {
        items
            .iter()
            .map(|i| match i {
                ApimItem::Gateway {
                    pos: Pos::Line(l),
                    fields,
                    format,
                    ..
                } => {
                    assert_eq!(*format, FORMAT);
                    (*l, Ok(fields))
                }
                ApimItem::Reject {
                    pos: Pos::Line(l),
                    reason,
                    ..
                } => (*l, Err(reason.as_str())),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// The items' `gateway_logs` rows, as `seam` stores them.
    fn stored(items: Vec<ApimItem>) -> (Columns, Vec<seam_store::rows::Row>) {
        let cols = Columns::new(gateway_logs::schema());
        let meta = InputMeta::default();
        let tokens = TokenConfig::default();
        let ctx = Ctx {
            meta: &meta,
            tokens: &tokens,
            ingest_ns: 1,
        };
        let mut out = Vec::new();
        for item in items {
            if let ApimItem::Gateway {
                pos: Pos::Line(l),
                fields,
                format,
                raw,
            } = item
            {
                let rec = Record {
                    fields: &fields,
                    format,
                    line: Some(l as i64),
                };
                out.push(gateway_row(&cols, rec, raw, ctx).unwrap().row);
            }
        }
        (cols, out)
    }

    fn utc(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn headers_of_portal_exports() {
        assert!(is_csv_header(
            "\u{feff}TenantId,TimeGenerated [UTC],OperationName,CorrelationId\r\n"
        ));
        assert!(is_csv_header(
            "timeGenerated [Local Time],callerIPAddress,url_s"
        ));
        assert!(is_csv_header("Timestamp,ResponseCode,ApiId"));
        assert!(is_csv_header(
            "\"TimeGenerated [UTC]\",\"CorrelationId\",\"Category\""
        ));
        // No gateway column, too few columns, JSON, log lines, data rows.
        assert!(!is_csv_header("TimeGenerated [UTC],TenantId,Type"));
        assert!(!is_csv_header("TimeGenerated,CorrelationId"));
        assert!(!is_csv_header(
            r#"{"TimeGenerated":"x","CorrelationId":"y","Url":"z"}"#
        ));
        assert!(!is_csv_header(
            "[Info] 2024-09-12T06:29:10.648 [GatewayLogs], time: 1, url: \"x\""
        ));
        assert!(!is_csv_header(
            "2024-11-05T09:14:03Z,apim-contoso-weu,8d0c3f5e,203.0.113.45,GetOrder"
        ));
        assert!(!is_csv_header("time,method,url,{oops}"));
    }

    #[test]
    fn gateway_logs_export() {
        let mut items = Vec::new();
        assert!(decode_csv(GATEWAY_LOGS, 1, &mut items));
        let got = lines(&items);
        let at: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(at, vec![2, 3, 4, 6, 7]);

        let Ok(r1) = got[0].1 else {
            panic!("{:?}", got[0])
        };
        assert_eq!(r1["timegenerated"], "2024-11-06T14:04:55.301Z");
        assert_eq!(r1["correlationid"], "8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07");
        assert_eq!(
            r1["url"],
            "https://apim-contoso-weu.azure-api.net/orders/v1/orders?ids=ORD-1001,ORD-1002"
        );
        assert_eq!(
            r1["requestheaders"]["traceparent"],
            "00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01"
        );
        assert!(r1["backendrequestheaders"].is_object());
        assert_eq!(r1["totaltime"], "184");
        assert_eq!(r1["lasterrorsource"], Value::Null);
        assert!(
            r1["resourceid"]
                .as_str()
                .unwrap()
                .ends_with("/service/apim-contoso-weu")
        );

        let Ok(r4) = got[1].1 else {
            panic!("{:?}", got[1])
        };
        assert_eq!(r4["timegenerated"], "2024-11-06T14:05:10.123Z");
        assert_eq!(r4["backendresponsecode"], Value::Null);
        assert_eq!(r4["lasterrorreason"], "TokenExpired");

        let Ok(r7) = got[2].1 else {
            panic!("{:?}", got[2])
        };
        assert_eq!(r7["timegenerated"], "2024-11-06T14:06:01.500Z");
        assert_eq!(
            r7["lasterrormessage"],
            "Claim scp value of Orders.Read Customers.Read is not allowed.\nAccess denied."
        );

        let Err(reason) = got[3].1 else {
            panic!("{:?}", got[3])
        };
        assert!(
            reason.contains("3 fields but the header has 23 columns"),
            "{reason}"
        );
        let ApimItem::Reject { raw, .. } = &items[3] else {
            panic!("{:?}", items[3])
        };
        assert!(raw.ends_with("too few fields"), "{raw}");

        let Ok(r8) = got[4].1 else {
            panic!("{:?}", got[4])
        };
        assert_eq!(r8["timegenerated"], "2024-11-06T14:07:44.330771800Z");
        assert_eq!(r8["requestheaders"], Value::Null);

        // Through the normaliser: times, service, trace, statuses; the token is redacted.
        let (cols, rows) = stored(items);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            cols.get(&rows[0], TIME),
            &Cell::Ts(utc("2024-11-06T14:04:55.301Z"))
        );
        assert_eq!(
            cols.get(&rows[0], APIM_SERVICE),
            &Cell::Str("apim-contoso-weu".into())
        );
        assert_eq!(
            cols.get(&rows[0], TRACE_ID),
            &Cell::Str("7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a".into())
        );
        assert_eq!(cols.get(&rows[0], SOURCE_FORMAT), &Cell::Str(FORMAT.into()));
        let Cell::Str(raw) = cols.get(&rows[0], RAW) else {
            panic!("{:?}", cols.get(&rows[0], RAW))
        };
        assert!(raw.contains("TimeGenerated [UTC]"), "{raw}");
        assert!(raw.contains("11/6/2024, 2:04:55.301 PM"), "{raw}");
        assert!(
            !raw.contains("eyJzdWIiOiJjc3YtdGVzdCIsInRpZCI6InQifQ"),
            "{raw}"
        );
        assert_eq!(cols.get(&rows[1], STATUS_CODE), &Cell::I32(401));
        assert_eq!(cols.get(&rows[1], BACKEND_STATUS_CODE), &Cell::Null);
        assert_eq!(
            cols.get(&rows[3], TIME),
            &Cell::Ts(utc("2024-11-06T14:07:44.3307718Z"))
        );
    }

    #[test]
    fn azure_diagnostics_export_in_a_chunk() {
        // A chunk that starts at line 100 (its header repeated there), with CRLF line ends.
        let text = AZURE_DIAGNOSTICS.replace('\n', "\r\n");
        let items = decode(&text, 100).unwrap();
        let got = lines(&items);
        let at: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(at, vec![101, 103]);
        let Ok(r1) = got[0].1 else {
            panic!("{:?}", got[0])
        };
        assert_eq!(r1["timegenerated"], "2024-11-05T09:14:03.127Z");
        assert_eq!(r1["correlationid"], "8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07");
        assert_eq!(r1["calleripaddress"], "203.0.113.45");
        assert_eq!(r1["apiid"], "orders-api");
        assert_eq!(r1["responsecode"], "200");
        assert_eq!(r1["durationms"], "184");
        // AdditionalFields merged; the Azure subscription kept apart.
        assert_eq!(r1["apimsubscriptionid"], "6541a7c2f1e9b80d2c3a4b5e");
        assert_eq!(r1["backendtime"], 171);
        assert_eq!(
            r1["requestheaders"]["traceparent"],
            "00-7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a-1a2b3c4d5e6f7081-01"
        );
        assert_eq!(
            r1["azuresubscriptionid"],
            "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
        );
        assert!(!r1.contains_key("subscriptionid"));
        let Ok(r4) = got[1].1 else {
            panic!("{:?}", got[1])
        };
        assert_eq!(r4["backendresponsecode"], Value::Null);
        assert_eq!(r4["lasterrorsource"], "validate-jwt");

        let (cols, rows) = stored(items);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            cols.get(&rows[0], APIM_SERVICE),
            &Cell::Str("apim-contoso-weu".into())
        );
        assert_eq!(
            cols.get(&rows[0], TIME),
            &Cell::Ts(utc("2024-11-05T09:14:03.127Z"))
        );
        assert_eq!(cols.get(&rows[0], BACKEND_STATUS_CODE), &Cell::I32(200));
        assert_eq!(cols.get(&rows[1], STATUS_CODE), &Cell::I32(401));
        assert_eq!(cols.get(&rows[1], BACKEND_STATUS_CODE), &Cell::Null);
    }

    /// `[UTC]` times stay UTC in an input read in another zone; `[Local Time]` ones take it.
    #[test]
    fn units_of_time_columns() {
        let text = "TimeGenerated [UTC],Timestamp [Local Time],CorrelationId,Category\n\
                    \"7/1/2024, 10:00:00 AM\",\"7/1/2024, 10:00:00 AM\",a,GatewayLogs\n";
        let items = decode(text, 1).unwrap();
        let ApimItem::Gateway { fields, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(fields["timegenerated"], "2024-07-01T10:00:00Z");
        assert_eq!(fields["timestamp"], "7/1/2024, 10:00:00 AM");
        let dublin = crate::normalise::time::Zone::parse("Europe/Dublin").unwrap();
        let local = crate::normalise::time::parse("7/1/2024, 10:00:00 AM", dublin, 0);
        assert_eq!(local, Some(utc("2024-07-01T09:00:00Z")));
    }

    /// An unclosed quote in the last column keeps the field count right: still refused
    /// alone, and the rows after it read (an adversarial review found them lost).
    #[test]
    fn an_unclosed_quote_in_the_last_column_is_refused_alone() {
        let text = "TimeGenerated [UTC],CorrelationId,Category,Url\n\
                    2024-11-06T14:04:55Z,pc-1,GatewayLogs,https://x/1\n\
                    2024-11-06T14:04:56Z,pc-2,GatewayLogs,\"https://x/open\n\
                    2024-11-06T14:04:57Z,pc-3,GatewayLogs,https://x/3\n\
                    2024-11-06T14:04:58Z,pc-4,GatewayLogs,https://x/4\n";
        let items = decode(text, 1).unwrap();
        let got = lines(&items);
        let at: Vec<(u64, bool)> = got.iter().map(|(l, r)| (*l, r.is_ok())).collect();
        assert_eq!(
            at,
            vec![(2, true), (3, false), (4, true), (5, true)],
            "{items:?}"
        );
        // A quote inside an unquoted field is a character.
        assert!(!in_quotes_after(false, "a,5\" monitor,b"));
        assert!(in_quotes_after(false, "a,\"open"));
        assert!(!in_quotes_after(true, "still\" ,closed"));
        assert!(in_quotes_after(true, "a \"\" quote"));
    }

    /// An unclosed quote takes the lines after it into one field: its first line is refused
    /// alone and the rows after it are read.
    #[test]
    fn an_unclosed_quote_is_refused_alone() {
        let text = "\n\nTimeGenerated [UTC],CorrelationId,Category,TotalTime\n\
                    \"11/6/2024, 2:04:55 PM,broken,GatewayLogs,1\n\
                    2024-11-06T14:05:00Z,ok-1,GatewayLogs,2\n\
                    2024-11-06T14:06:00Z,ok-2,GatewayLogs,3\n";
        let items = decode(text, 1).unwrap();
        let got = lines(&items);
        let at: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(at, vec![4, 5, 6]);
        let Err(reason) = got[0].1 else {
            panic!("{:?}", got[0])
        };
        assert!(reason.contains("never closed"), "{reason}");
        let ApimItem::Reject { raw, .. } = &items[0] else {
            panic!("{:?}", items[0])
        };
        assert_eq!(raw, "\"11/6/2024, 2:04:55 PM,broken,GatewayLogs,1");
        let Ok(f) = got[2].1 else {
            panic!("{:?}", got[2])
        };
        assert_eq!(f["correlationid"], "ok-2");
    }

    /// A header alone is an export without rows; text whose first line is no header is not
    /// read here.
    #[test]
    fn header_only_and_other_text() {
        let mut out = Vec::new();
        assert!(decode_csv(
            "\u{feff}TimeGenerated [UTC],CorrelationId,Url\n",
            1,
            &mut out
        ));
        assert!(out.is_empty());
        assert!(!decode_csv("{\"records\":[]}", 1, &mut out));
        assert!(!decode_csv("\n\n", 1, &mut out));
        assert!(!decode_csv("hello,world,again\n", 1, &mut out));
        assert!(out.is_empty());
    }
}
