//! The gateway tables: `gateway_log_copies` (one row per stored copy of an APIM GatewayLogs
//! record) and the `gateway_logs` view over it (one row per gateway request).
//!
//! Takes nothing; gives the copies' schema and the view's SQL. The same request reaches seam
//! in several shapes (Event Hubs, the storage archive, a Log Analytics export days later);
//! the collector stores a copy only when it adds a field no earlier copy had, and the view
//! merges the copies of a request (`record_key`) into one row.
//!
//! The merge rule (one rule, for this view and for the correlator's gateway read, which
//! orders its copies by [`MERGE_ORDER`] and folds them the same way): copies are ranked by
//! acceptance, [`MERGE_ORDER`]; each column takes the value of the earliest-accepted copy
//! that has one; `time` and `ingest_time` are the earliest; the token identity
//! ([`crate::token::COLUMNS`]) is taken whole from the earliest-accepted copy with a
//! `token_id`, never mixed across copies. [`merge_expr`] writes the rule for one column as an
//! aggregate; [`view_sql`] computes the same values without an aggregate that holds a
//! request's values (its headers), so the view's memory does not grow with them: the
//! earliest-accepted copy is read whole, and only what it lacks is gathered from the others.

use arrow_schema::{DataType, Field, SchemaRef};

use super::{attribute_map_type, field, schema_of, text, timestamp_type};
use crate::columns::*;

/// SQL name of the stored copies.
pub const TABLE: &str = "gateway_log_copies";
/// What one row of the copies is.
pub const DESCRIPTION: &str = "One row per stored copy of an Azure API Management GatewayLogs \
     record, in whichever shape it arrived (Event Hubs, storage archive, Log Analytics, \
     AzureDiagnostics, self-hosted gateway, 2017 records). A copy is stored only when it adds \
     a field that no earlier copy of the same request had; query the `gateway_logs` view for \
     one row per request.";
/// SQL name of the merged view.
pub const VIEW: &str = "gateway_logs";
/// What one row of the view is.
pub const VIEW_DESCRIPTION: &str = "One row per gateway request: the copies in \
     `gateway_log_copies` with the same `record_key` merged. Each column takes the value of \
     the earliest-accepted copy that has one (copies ranked by ingest_time, then \
     source_format, source_file, source_line); `time` and `ingest_time` are the earliest \
     (`ingest_time`: when seam first accepted the request); the token columns (token_id to \
     token_type) come together from the earliest-accepted copy with a token_id, never mixed \
     across copies. The correlator merges the copies it reads by the same rule \
     (docs/correlation.md). Columns are those of `gateway_log_copies` without `raw`, \
     `source_format`, `source_file` and `source_line`, plus `copies` (bigint: stored copies) \
     and `source_formats` (list<text>: the shapes it arrived in).";

/// The acceptance order of the copies of one request, earliest first: an SQL `ORDER BY`
/// list (ascending, NULLs last as the engine sorts them by default). A copy is identified by
/// when and where it was accepted, so the order is total in practice. The `gateway_logs`
/// view ranks copies by it inside `first_value`; the correlator's gateway read returns its
/// copies in it, so that folding them first-value-first gives the view's values.
pub const MERGE_ORDER: &str = "ingest_time, source_format, source_file, source_line";

// Columns of this table only (shared names are in `crate::columns`).

/// The X-Correlation-ID value the gateway logged.
pub const FORWARDED_CORRELATION_ID: &str = "forwarded_correlation_id";
/// API revision.
pub const API_REVISION: &str = "api_revision";
/// Backend entity id.
pub const BACKEND_ID: &str = "backend_id";
/// HTTP version of the client request.
pub const CLIENT_PROTOCOL: &str = "client_protocol";
/// TLS version the client used.
pub const CLIENT_TLS_VERSION: &str = "client_tls_version";
/// APIM's isRequestSuccess.
pub const IS_REQUEST_SUCCESS: &str = "is_request_success";
/// HTTP method sent to the backend.
pub const BACKEND_METHOD: &str = "backend_method";
/// URL sent to the backend.
pub const BACKEND_URL: &str = "backend_url";
/// HTTP version to the backend.
pub const BACKEND_PROTOCOL: &str = "backend_protocol";
/// APIM TotalTime, ms.
pub const TOTAL_TIME_MS: &str = "total_time_ms";
/// APIM BackendTime, ms.
pub const BACKEND_TIME_MS: &str = "backend_time_ms";
/// APIM ClientTime, ms.
pub const CLIENT_TIME_MS: &str = "client_time_ms";
/// APIM CacheTime, ms.
pub const CACHE_TIME_MS: &str = "cache_time_ms";
/// ms from request receipt until the last error.
pub const LAST_ERROR_ELAPSED_MS: &str = "last_error_elapsed_ms";
/// Policy scope of the last error.
pub const LAST_ERROR_SCOPE: &str = "last_error_scope";
/// Policy section of the last error.
pub const LAST_ERROR_SECTION: &str = "last_error_section";
/// The Errors collection as JSON text.
pub const ERRORS: &str = "errors";
/// Azure region of the gateway.
pub const REGION: &str = "region";
/// ARM resource id of the APIM service.
pub const RESOURCE_ID: &str = "resource_id";
/// Bytes received from the client.
pub const REQUEST_SIZE: &str = "request_size";
/// Bytes sent to the client.
pub const RESPONSE_SIZE: &str = "response_size";
/// Logged client request headers.
pub const REQUEST_HEADERS: &str = "request_headers";
/// Logged response headers.
pub const RESPONSE_HEADERS: &str = "response_headers";
/// Logged headers sent to the backend.
pub const BACKEND_REQUEST_HEADERS: &str = "backend_request_headers";
/// Logged backend response headers.
pub const BACKEND_RESPONSE_HEADERS: &str = "backend_response_headers";
/// Which gateway product wrote the record.
pub const GATEWAY_PRODUCT: &str = "gateway_product";

fn ms(name: &str, desc: &str) -> Field {
    let desc =
        format!("{desc} NULL when absent, negative or over 30 days (not a plausible duration).");
    field(name, DataType::Float64, true, &desc)
}

/// Arrow schema of `gateway_log_copies`.
pub fn schema() -> SchemaRef {
    schema_of(
        vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When the gateway started processing the request (UTC): time, TimeGenerated or timeGenerated.",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When seam accepted this copy (UTC).",
        ),
        field(
            RECORD_KEY,
            DataType::Utf8,
            false,
            "seam's key of the request (32 hex): a hash of the APIM service and correlation id, or of the service, time (to the second), URL and status for old records without a correlation id. Copies of one request share it.",
        ),
        text(
            CORRELATION_ID,
            "APIM's request id (CorrelationId, = policy context.RequestId).",
        ),
        text(
            TRACE_ID,
            "W3C trace id (32 lower-case hex) from a logged traceparent header (backend request first, then client request).",
        ),
        text(
            FORWARDED_CORRELATION_ID,
            "The X-Correlation-ID value the gateway logged: sent to the backend, else received from the client.",
        ),
        text(API_ID, "API entity id (ApiId)."),
        text(OPERATION_ID, "Operation entity id (OperationId)."),
        text(API_REVISION, "API revision (ApiRevision)."),
        text(PRODUCT_ID, "Product entity id (ProductId)."),
        text(
            SUBSCRIPTION_ID,
            "APIM subscription id (ApimSubscriptionId; SubscriptionId in 2017 records). Not the Azure subscription.",
        ),
        text(USER_ID, "APIM user entity id (UserId); not the token subject."),
        text(BACKEND_ID, "Backend entity id (BackendId)."),
        text(METHOD, "HTTP method of the client request."),
        text(
            URL,
            "URL of the client request; secret query parameters (subscription-key, sig, ...) are redacted.",
        ),
        text(URL_PATH, "Path of url."),
        text(CLIENT_IP, "IP address of the immediate caller (CallerIpAddress)."),
        text(USER_AGENT, "User-Agent from the logged client request headers."),
        text(CLIENT_PROTOCOL, "HTTP version of the client request."),
        text(CLIENT_TLS_VERSION, "TLS version the client used."),
        field(
            STATUS_CODE,
            DataType::Int32,
            true,
            "Status code the client got (ResponseCode).",
        ),
        field(
            IS_REQUEST_SUCCESS,
            DataType::Boolean,
            true,
            "APIM's isRequestSuccess (2xx or 3xx).",
        ),
        text(BACKEND_METHOD, "HTTP method sent to the backend."),
        text(BACKEND_URL, "URL sent to the backend (secrets redacted)."),
        text(BACKEND_PROTOCOL, "HTTP version to the backend."),
        field(
            BACKEND_STATUS_CODE,
            DataType::Int32,
            true,
            "Status code received from the backend; NULL when no backend was called (APIM logs 0, empty or null then).",
        ),
        ms(
            TOTAL_TIME_MS,
            "APIM TotalTime (durationMs; ServiceTime in 2017 records): first byte received to last byte sent.",
        ),
        ms(
            BACKEND_TIME_MS,
            "APIM BackendTime: backend I/O. NULL when no backend was called.",
        ),
        ms(CLIENT_TIME_MS, "APIM ClientTime: client I/O."),
        text(CACHE, "Cache involvement: none, hit or miss."),
        ms(
            CACHE_TIME_MS,
            "APIM CacheTime; NULL when the cache was not used.",
        ),
        ms(
            LAST_ERROR_ELAPSED_MS,
            "ms from request receipt until the last error.",
        ),
        text(
            LAST_ERROR_SOURCE,
            "Policy or handler that raised the last error (e.g. validate-jwt).",
        ),
        text(LAST_ERROR_SCOPE, "Policy scope of the last error."),
        text(
            LAST_ERROR_SECTION,
            "Policy section of the last error: inbound, backend, outbound or on-error.",
        ),
        text(
            LAST_ERROR_REASON,
            "Reason of the last error (e.g. TokenExpired).",
        ),
        text(LAST_ERROR_MESSAGE, "Message of the last error."),
        text(ERRORS, "The Errors collection as JSON text, when logged."),
        text(
            APIM_SERVICE,
            "APIM service name (lower case), from the resource id, ServiceName or DeploymentName.",
        ),
        text(
            GATEWAY,
            "Gateway that handled the request: managed, or the self-hosted gateway's name (the ingest request's gateway parameter; self-hosted when unnamed); for another product read by a mapping, the gateway parameter or the mapping's gateway value, else the product.",
        ),
        text(
            GATEWAY_PRODUCT,
            "Gateway product that wrote the record: apim for Azure API Management (every built-in shape and mappings without a product), else the mapping's product (kong, envoy, nginx, aws_apigateway, identity_proxy, or a user's own). NULL in copies stored before this column existed (schema version 1); the gateway_logs view reads those as apim.",
        ),
        text(REGION, "Azure region of the gateway (Region or location)."),
        text(
            RESOURCE_ID,
            "ARM resource id of the APIM service, lower case.",
        ),
        field(
            REQUEST_SIZE,
            DataType::Int64,
            true,
            "Bytes received from the client.",
        ),
        field(
            RESPONSE_SIZE,
            DataType::Int64,
            true,
            "Bytes sent to the client.",
        ),
        field(
            REQUEST_HEADERS,
            attribute_map_type(),
            true,
            "Logged client request headers (names lower case); credentials redacted.",
        ),
        field(
            RESPONSE_HEADERS,
            attribute_map_type(),
            true,
            "Logged response headers (names lower case); credentials redacted.",
        ),
        field(
            BACKEND_REQUEST_HEADERS,
            attribute_map_type(),
            true,
            "Logged headers sent to the backend (names lower case); credentials redacted.",
        ),
        field(
            BACKEND_RESPONSE_HEADERS,
            attribute_map_type(),
            true,
            "Logged backend response headers (names lower case); credentials redacted.",
        ),
        field(
            ATTRIBUTES,
            attribute_map_type(),
            true,
            "A mapped record's unmapped scalar fields (flattened as a.b), secrets redacted; NULL for the built-in APIM shapes.",
        ),
        text(
            SOURCE_FORMAT,
            "The shape this copy arrived in: apim_records (Event Hubs body or pre-2018 storage blob), apim_jsonl (storage archive lines), apim_loganalytics, apim_loganalytics_csv and apim_loganalytics_json (Azure portal exports), apim_azurediagnostics, apim_selfhosted_json, apim_selfhosted_text, or mapping:NAME for a record read by the mapping NAME.",
        ),
        text(
            SOURCE_FILE,
            "File the copy came from (seam ingest), else NULL.",
        ),
        field(
            SOURCE_LINE,
            DataType::Int64,
            true,
            "Line (JSON lines and text) or record index (documents, from 0) of the copy in its input.",
        ),
        text(
            RAW,
            "The original record as received (JSON), with tokens and secrets redacted.",
        ),
    ]
    .into_iter()
    .chain(super::token_fields())
    .collect())
}

/// Columns of the copies that the view leaves out.
const COPY_ONLY: &[&str] = &[RAW, SOURCE_FORMAT, SOURCE_FILE, SOURCE_LINE];

/// The rule for column `name` of the copies written as one aggregate over a request's copies
/// (without its alias): the reference form of the merge rule, the one docs/correlation.md
/// states and the correlator's fold follows ([`view_sql`] computes the same values without an
/// aggregate per column):
/// - `time`, `ingest_time`: the earliest (`min`);
/// - a token identity column ([`crate::token::COLUMNS`]): the earliest-accepted copy's value
///   among the copies with a `token_id`, so the identity is one copy's, never mixed;
/// - any other column: the earliest-accepted copy's value among the copies that have one.
///
/// `record_key` is the group key and the copy-only columns are not in the view; for them
/// this gives the plain column.
pub fn merge_expr(name: &str) -> String {
    if name == RECORD_KEY || COPY_ONLY.contains(&name) {
        return name.to_string();
    }
    if name == TIME || name == INGEST_TIME {
        return format!("min({name})");
    }
    let has = presence(name);
    let merged =
        format!("first_value({name} ORDER BY {MERGE_ORDER}) FILTER (WHERE {has} IS NOT NULL)");
    if name == GATEWAY_PRODUCT {
        // Copies stored before the column existed were all APIM's.
        return format!("coalesce({merged}, 'apim')");
    }
    merged
}

/// The column whose presence in a copy decides whether that copy gives `name`: `token_id`
/// for the token identity (taken whole from one copy), else the column itself.
fn presence(name: &str) -> &str {
    if crate::token::COLUMNS.contains(&name) {
        crate::token::TOKEN_ID
    } else {
        name
    }
}

/// Whether `f` is a map column (the headers, `attributes`): filled by a query of its own.
fn is_map(f: &Field) -> bool {
    matches!(f.data_type(), DataType::Map(_, _))
}

/// The columns of the copies that the view merges, in the copies' order: all but `time` and
/// `ingest_time` (the earliest), `record_key` (the group) and the copy-only ones.
fn merged_fields() -> Vec<Field> {
    schema()
        .fields()
        .iter()
        .filter(|f| {
            let n = f.name().as_str();
            n != TIME && n != INGEST_TIME && n != RECORD_KEY && !COPY_ONLY.contains(&n)
        })
        .map(|f| Field::clone(f))
        .collect()
}

/// SQL of a copy's acceptance key: one text that sorts as [`MERGE_ORDER`] ranks the copies
/// (ascending, NULLs last), so the earliest-accepted copy of a request is the one with the
/// least key. Each column becomes a part that sorts as it does and ends where the next part
/// begins: a whole number (a time in nanoseconds, a line; never negative) as 16 hex digits,
/// a text followed by chr(1) (a control character no shape name or file name holds), NULL as
/// chr(1114111) (U+10FFFF, above every other character). Like [`MERGE_ORDER`], the key tells
/// the copies of a request apart in practice: two copies with one key would both be read as
/// the earliest-accepted one.
fn acceptance_key() -> String {
    let copies = schema();
    let parts: Vec<String> = MERGE_ORDER
        .split(", ")
        .filter_map(|c| copies.field_with_name(c).ok())
        .map(|f| {
            let c = f.name();
            let part = if f.data_type() == &DataType::Utf8 {
                format!("{c} || chr(1)")
            } else {
                format!("lpad(to_hex(CAST({c} AS BIGINT)), 16, '0')")
            };
            if f.is_nullable() {
                format!("coalesce({part}, chr(1114111))")
            } else {
                part
            }
        })
        .collect();
    format!("concat({})", parts.join(", "))
}

/// Digits of [`presence_mask`] written after the acceptance key (a mask is below 2^63).
const MASK_DIGITS: usize = 19;

/// SQL of a copy's presence mask over `columns` (the view's merged columns but the maps): bit
/// `i` is set when the copy has `columns[i]`. At most 63 columns (a test checks it).
fn presence_mask(columns: &[&Field]) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "CASE WHEN {} IS NULL THEN 0 ELSE {} END",
                f.name(),
                1_i64 << i
            )
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The SQL of the `gateway_logs` view: one row per `record_key`, each column merged by the
/// rule of [`merge_expr`], computed so that no aggregate holds a request's values (one
/// aggregate per column held every request's headers until the last copy was read, and a
/// 1 GiB query memory limit ran out below 5,000 requests with large headers):
/// - `req`: per request, the earliest `time` and `ingest_time`, the copies, their shapes and
///   the least acceptance key (`acceptance_key`): the earliest-accepted copy's;
/// - the earliest-accepted copy is read whole from the copies (a join on request and key),
///   so its values, headers included, stream from the scan to the result;
/// - `fills`: for a request with several copies, what the earliest-accepted copy lacks and a
///   later copy has, one cell per column of each later copy that has it (the earliest copy's
///   presence mask, `presence_mask`, says what it lacks); a request's cells sorted by column
///   and acceptance key, so the first cell of a column is the earliest-accepted copy's;
/// - `fill_<map>`, one per map column: the earliest-accepted copy's map among the copies that
///   have one, for a request whose earliest-accepted copy has none.
///
/// Each column is the earliest-accepted copy's value, else its first cell; a token column is
/// the earliest-accepted copy's when that copy has a `token_id` (a later copy's cells of the
/// token columns are there only then, all of them, NULL or not, from each copy with one).
/// What a query leaves out is not computed: the fill of a map nobody selects is dropped.
pub fn view_sql() -> String {
    let key = acceptance_key();
    let merged = merged_fields();
    let scalars: Vec<&Field> = merged.iter().filter(|f| !is_map(f)).collect();
    let id = |name: &str| scalars.iter().position(|f| f.name() == name).unwrap_or(0);
    // One slot of a cell per type of the merged columns (but the maps).
    let mut types: Vec<&DataType> = Vec::new();
    for f in &scalars {
        if !types.contains(&f.data_type()) {
            types.push(f.data_type());
        }
    }
    let slot = |f: &Field| {
        let t = types.iter().position(|t| *t == f.data_type()).unwrap_or(0);
        format!("v{t}")
    };

    let req = format!(
        "SELECT {RECORD_KEY}, min({TIME}) AS {TIME}, min({INGEST_TIME}) AS {INGEST_TIME}, \
         count(*) AS copies, array_sort(array_distinct(array_agg({SOURCE_FORMAT}))) AS \
         source_formats, min({key}) AS _first FROM {TABLE} GROUP BY {RECORD_KEY}"
    );

    let ids = scalars
        .iter()
        .map(|f| {
            let has = presence(f.name());
            format!(
                "CASE WHEN (_has & {}) = 0 AND {has} IS NOT NULL THEN {} END",
                1_i64 << id(has),
                id(f.name().as_str())
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let values = types
        .iter()
        .enumerate()
        .map(|(t, ty)| {
            let branches = scalars
                .iter()
                .filter(|f| f.data_type() == *ty)
                .map(|f| format!("WHEN {} THEN {}", id(f.name().as_str()), f.name()))
                .collect::<Vec<_>>()
                .join(" ");
            format!("CASE _n {branches} END AS v{t}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let cell = (0..types.len())
        .map(|t| format!("'v{t}', v{t}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mask = presence_mask(&scalars);
    let fills = format!(
        "SELECT {RECORD_KEY}, array_sort(array_agg(named_struct('n', _n, 'k', _key, {cell}))) \
         AS _cells, array_sort(array_agg(_n)) AS _ids FROM (SELECT {RECORD_KEY}, _key, _n, \
         {values} FROM (SELECT c.*, unnest(array_compact(make_array({ids}))) AS _n FROM \
         (SELECT {RECORD_KEY}, CAST(right(min(concat({key}, lpad(CAST({mask} AS VARCHAR), \
         {MASK_DIGITS}, '0'))), {MASK_DIGITS}) AS BIGINT) AS _has FROM {TABLE} GROUP BY \
         {RECORD_KEY} HAVING count(*) > 1) f JOIN (SELECT *, {key} AS _key FROM {TABLE}) c ON \
         c.{RECORD_KEY} = f.{RECORD_KEY}) cells) typed GROUP BY {RECORD_KEY}"
    );

    let mut ctes = vec![format!("req AS ({req})"), format!("fills AS ({fills})")];
    let mut with_fills = format!("(fills RIGHT JOIN req ON fills.{RECORD_KEY} = req.{RECORD_KEY})");
    for m in merged.iter().filter(|f| is_map(f)) {
        let m = m.name();
        ctes.push(format!(
            "fill_{m} AS (SELECT c.{RECORD_KEY}, first_value(c.{m} ORDER BY c._key) AS v FROM \
             (SELECT {RECORD_KEY} FROM {TABLE} GROUP BY {RECORD_KEY} HAVING count(*) > 1 AND \
             right(min(concat({key}, CASE WHEN {m} IS NULL THEN '0' ELSE '1' END)), 1) = '0') f \
             JOIN (SELECT {RECORD_KEY}, {m}, {key} AS _key FROM {TABLE} WHERE {m} IS NOT NULL) \
             c ON c.{RECORD_KEY} = f.{RECORD_KEY} GROUP BY c.{RECORD_KEY})"
        ));
        with_fills = format!(
            "(fill_{m} RIGHT JOIN {with_fills} ON fill_{m}.{RECORD_KEY} = req.{RECORD_KEY})"
        );
    }

    let mut cols = vec![
        format!("req.{TIME}"),
        format!("req.{INGEST_TIME}"),
        format!("req.{RECORD_KEY}"),
    ];
    for f in &merged {
        let n = f.name();
        let fill = format!(
            "fills._cells[CAST(array_position(fills._ids, {}) AS BIGINT)]['{}']",
            id(n.as_str()),
            slot(f)
        );
        let e = if is_map(f) {
            format!("coalesce(p.{n}, fill_{n}.v)")
        } else if presence(n) != n.as_str() {
            format!(
                "CASE WHEN p.{0} IS NOT NULL THEN p.{n} ELSE {fill} END",
                presence(n)
            )
        } else if n == GATEWAY_PRODUCT {
            // Copies stored before the column existed were all APIM's.
            format!("coalesce(p.{n}, {fill}, 'apim')")
        } else {
            format!("coalesce(p.{n}, {fill})")
        };
        cols.push(format!("{e} AS {n}"));
    }
    cols.push("req.copies".into());
    cols.push("req.source_formats".into());
    format!(
        "WITH {} SELECT {} FROM {with_fills} JOIN (SELECT *, {key} AS _key FROM {TABLE}) p ON \
         p.{RECORD_KEY} = req.{RECORD_KEY} AND p._key = req._first",
        ctes.join(", "),
        cols.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_expr_states_the_rule() {
        assert_eq!(
            merge_expr(STATUS_CODE),
            "first_value(status_code ORDER BY ingest_time, source_format, source_file, \
             source_line) FILTER (WHERE status_code IS NOT NULL)"
        );
        assert_eq!(
            merge_expr(REQUEST_HEADERS),
            "first_value(request_headers ORDER BY ingest_time, source_format, source_file, \
             source_line) FILTER (WHERE request_headers IS NOT NULL)"
        );
        // The token identity is one copy's: every token column filters on token_id.
        for c in crate::token::COLUMNS {
            assert_eq!(
                merge_expr(c),
                format!(
                    "first_value({c} ORDER BY {MERGE_ORDER}) FILTER (WHERE token_id IS NOT NULL)"
                )
            );
        }
        assert_eq!(merge_expr(TIME), "min(time)");
        assert_eq!(merge_expr(INGEST_TIME), "min(ingest_time)");
        assert!(merge_expr(GATEWAY_PRODUCT).starts_with("coalesce(first_value(gateway_product"));
    }

    #[test]
    fn merge_order_names_columns_of_the_copies() {
        let s = schema();
        for c in MERGE_ORDER.split(", ") {
            assert!(s.field_with_name(c).is_ok(), "{c}");
        }
        assert!(MERGE_ORDER.starts_with(INGEST_TIME));
    }

    #[test]
    fn acceptance_key_sorts_as_the_merge_order() {
        assert_eq!(
            acceptance_key(),
            "concat(lpad(to_hex(CAST(ingest_time AS BIGINT)), 16, '0'), \
             coalesce(source_format || chr(1), chr(1114111)), \
             coalesce(source_file || chr(1), chr(1114111)), \
             coalesce(lpad(to_hex(CAST(source_line AS BIGINT)), 16, '0'), chr(1114111)))"
        );
    }

    #[test]
    fn presence_mask_fits_its_digits() {
        let merged = merged_fields();
        let scalars: Vec<&Field> = merged.iter().filter(|f| !is_map(f)).collect();
        // Bit i of the mask is 2^i, a BIGINT: at most 63 columns, written in 19 digits.
        assert!(scalars.len() < 63, "{}", scalars.len());
        assert!(i64::MAX.to_string().len() <= MASK_DIGITS);
        assert!(
            presence_mask(&scalars)
                .starts_with("CASE WHEN correlation_id IS NULL THEN 0 ELSE 1 END + ")
        );
    }

    #[test]
    fn view_gives_every_merged_column_once_in_the_copies_order() {
        let sql = view_sql();
        let select = sql.rsplit_once(") SELECT ").map(|(_, s)| s).unwrap();
        let mut at = 0;
        for name in ["req.time", "req.ingest_time", "req.record_key"] {
            let i = select[at..].find(name).unwrap() + at;
            at = i;
        }
        for f in merged_fields() {
            let alias = format!(" AS {}, ", f.name());
            let i = select[at..]
                .find(&alias)
                .unwrap_or_else(|| panic!("{}", f.name()))
                + at;
            at = i;
            assert_eq!(select.matches(&alias).count(), 1, "{}", f.name());
        }
        assert!(
            select[at..].contains("req.copies, req.source_formats FROM "),
            "{select}"
        );
        for c in COPY_ONLY {
            assert!(!select.contains(&format!(" AS {c}, ")), "{c}");
        }
        // The token identity is one copy's: the earliest-accepted copy's when it has one.
        assert!(
            select.contains("CASE WHEN p.token_id IS NOT NULL THEN p.subject ELSE fills._cells["),
            "{select}"
        );
        assert!(
            select
                .contains("coalesce(p.request_headers, fill_request_headers.v) AS request_headers")
        );
        // No aggregate holds a request's values: the headers come from the copy itself.
        assert!(
            !sql.contains("first_value(request_headers ORDER BY"),
            "{sql}"
        );
    }
}
