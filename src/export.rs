//! `seam export`: the evidence of a time range as files an auditor keeps and verifies.
//!
//! Takes a running seam's API (`--server`, the key from `SEAM_TOKEN` / `SEAM_TOKEN_FILE`), a
//! half-open time range (`since <= time < until`), optional filters and an output directory;
//! gives one file per evidence set (`access_log`, `gateway_bypass`, `denials`,
//! `expired_token_use`, `token_sharing`, `external_probes`) as Parquet or CSV, `SHA256SUMS`
//! (the `sha256sum -c` format) and `manifest.json` (range, filters and, per file, the exact
//! SQL sent, its rows, bytes and SHA-256). `docs/audit-queries.md`, "Exports for auditors",
//! documents the sets and the manifest.
//!
//! Invariants:
//! - each set is one SQL statement sent to `POST /api/v1/sql?format=arrow`, ordered by its
//!   keys (`time, request_id`, …), so the same data gives the same rows in the same order;
//! - the Arrow stream is decoded and written batch by batch as it arrives (a result is never
//!   held whole);
//! - every file is written under a temporary name, synced and renamed; `manifest.json` is
//!   renamed last, so a directory with a manifest holds a whole export, and a failed export
//!   removes what it wrote (and the directory, when this run created it and it is empty);
//! - the server address shows in messages and the manifest without its user name and
//!   password (`seam::client::display_url`);
//! - filter values become SQL literals (quotes doubled, control characters refused): the SQL
//!   endpoint has no bound parameters.

use std::fs::{self, File};
use std::io::{BufWriter, ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The evidence sets, in the order they are written.
const SETS: [&str; 6] = [
    "access_log",
    "gateway_bypass",
    "denials",
    "expired_token_use",
    "token_sharing",
    "external_probes",
];

/// The columns of `access_log`, from `requests`.
const ACCESS_LOG_COLUMNS: &str = "time, request_id, api_id, operation_id, method, url_path, \
     status_code, rejected_by, error_reason, client_ip, user_agent, subscription_id, gateway, \
     token_id, subject, client_app, tenant_id, token_issuer, token_expires_at, token_expired, \
     token_scopes, token_roles, has_gateway, bypassed_gateway, mule_app, flow, settled";

/// A set read from an audit view: (set, view, its columns a filter can match, order).
type ViewSet = (
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
);

/// The sets read from an audit view.
const VIEW_SETS: [ViewSet; 4] = [
    (
        "gateway_bypass",
        "audit_gateway_bypass",
        &["token_id", "subject", "client_app"],
        "time, request_id",
    ),
    (
        "denials",
        "audit_denials",
        &["api_id", "token_id", "subject", "client_app"],
        "time, request_id",
    ),
    (
        "expired_token_use",
        "audit_expired_token_use",
        &["api_id", "token_id", "subject", "client_app"],
        "time, request_id",
    ),
    (
        "external_probes",
        "audit_external_probes",
        &[],
        "time, probe_id",
    ),
];

/// The columns of `requests` the filters match (all four).
const REQUEST_FILTER_COLUMNS: &[&str] = &["api_id", "token_id", "subject", "client_app"];

/// The range rule, as the manifest and the documentation state it.
const RANGE_RULE: &str = "time >= since AND time < until";

/// Rows per Parquet row group: a bounded writer buffer, whatever the result's size.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// CSV form of timestamps without a zone (seam's own columns carry UTC and are written
/// RFC 3339 with `Z` by arrow's default).
const NAIVE_TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.fZ";

// `seam export`'s flags (its help is the doc comment of `Command::Export` in main.rs).
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Start of the range, included: RFC 3339 (2026-12-05T10:00:00Z, 2026-12-05T11:00:00+01:00),
    /// a date (2026-12-01, midnight UTC) or a duration back from now (24h, 7d, 90m).
    #[arg(long, value_name = "TIME")]
    since: String,
    /// End of the range, excluded (rows with since <= time < until); same forms as --since
    /// [default: now].
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Directory to write to: created if missing; refused when not empty, unless --force.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// File format of the sets (CSV: lists and maps as JSON text, times RFC 3339 UTC).
    #[arg(long, value_enum, default_value_t = ExportFormat::Parquet)]
    format: ExportFormat,
    /// The server's API address.
    #[arg(long, env = "SEAM_SERVER", default_value_t = format!("http://{}", seam::config::DEFAULT_API))]
    server: String,
    /// Only requests to this APIM API id (repeat for several).
    #[arg(long = "api", value_name = "API_ID")]
    api: Vec<String>,
    /// Only requests of this client application (azp, appid, cid; repeat for several).
    #[arg(long = "client-app", value_name = "APP")]
    client_app: Vec<String>,
    /// Only requests with this token subject (sub; repeat for several).
    #[arg(long = "subject", value_name = "SUBJECT")]
    subject: Vec<String>,
    /// Only requests with this token identity (token_id; repeat for several).
    #[arg(long = "token-id", value_name = "ID")]
    token_id: Vec<String>,
    /// Write into a non-empty DIR: replaces the export there (its manifest.json, SHA256SUMS
    /// and set files, in both formats); other files are left alone.
    #[arg(long)]
    force: bool,
}

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Parquet (zstd), the columns' Arrow types kept.
    Parquet,
    /// CSV with a header line.
    Csv,
}

impl ExportFormat {
    fn name(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
        }
    }
}

/// The half-open range `since <= time < until`.
#[derive(Debug, Clone, Copy)]
struct Range {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Range {
    /// `time >= 'since' AND time < 'until'`, the column qualified by `q` (e.g. `r.`).
    fn condition(&self, q: &str) -> String {
        format!(
            "{q}time >= '{}' AND {q}time < '{}'",
            rfc3339(self.since),
            rfc3339(self.until)
        )
    }
}

/// One filter flag: the column it matches, its values and their SQL literals.
#[derive(Debug)]
struct Filter {
    column: &'static str,
    flag: &'static str,
    values: Vec<String>,
    literals: Vec<String>,
}

impl Filter {
    /// `None` when the flag was not given.
    fn new(
        column: &'static str,
        flag: &'static str,
        values: &[String],
    ) -> anyhow::Result<Option<Self>> {
        if values.is_empty() {
            return Ok(None);
        }
        let literals = values
            .iter()
            .map(|v| sql_literal(flag, v))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Self {
            column,
            flag,
            values: values.to_vec(),
            literals,
        }))
    }

    /// `column IN ('a', 'b')`, the column qualified by `q`.
    fn condition(&self, q: &str) -> String {
        format!("{q}{} IN ({})", self.column, self.literals.join(", "))
    }
}

/// One set's statement.
#[derive(Debug)]
struct SetQuery {
    set: &'static str,
    source: &'static str,
    sql: String,
    /// The filter columns applied to this set.
    filters: Vec<&'static str>,
}

/// Runs `seam export`.
///
/// # Errors
/// Invalid times or filters, a directory that is not empty (without `--force`), a query seam
/// refuses (the set is named, with seam's message), or a file that cannot be written.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let range = resolve_range(&args.since, args.until.as_deref(), now)?;
    let filters = [
        Filter::new("api_id", "--api", &args.api)?,
        Filter::new("client_app", "--client-app", &args.client_app)?,
        Filter::new("subject", "--subject", &args.subject)?,
        Filter::new("token_id", "--token-id", &args.token_id)?,
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let queries = queries(&range, &filters);
    let url = seam::client::api_url(&args.server, &["api", "v1", "sql"])?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let made_dir = prepare_dir(&args.out, args.force)?;
    let mut created = Vec::new();
    let result = runtime.block_on(write_export(
        &args,
        url,
        &range,
        &filters,
        &queries,
        now,
        &mut created,
    ));
    if result.is_err() {
        // Nothing of a failed export stays behind (its manifest is never written).
        for p in created.iter().rev() {
            let _ = fs::remove_file(p);
        }
        if made_dir {
            // Only an empty directory is removed: nothing but this run's files was in it.
            let _ = fs::remove_dir(&args.out);
        }
    }
    result
}

/// RFC 3339 in UTC with `Z`, with as many fractional digits as the time needs (0, 3, 6, 9).
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A time given on the command line: RFC 3339 with an offset, a date (midnight UTC), or a
/// duration before `now`.
fn parse_time(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let t = s.trim();
    let at = if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        dt.with_timezone(&Utc)
    } else if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        day.and_hms_opt(0, 0, 0)
            .context("not a valid day")?
            .and_utc()
    } else if let Ok(ago) = humantime::parse_duration(t) {
        let ago = TimeDelta::from_std(ago).context("the duration is too long")?;
        now.checked_sub_signed(ago)
            .context("the duration reaches too far back")?
    } else if t.contains('T') || t.contains(':') {
        bail!(
            "not an RFC 3339 time: give its offset too (2026-12-05T10:00:00Z, \
             2026-12-05T11:00:00+01:00)"
        );
    } else {
        bail!(
            "neither an RFC 3339 time (2026-12-05T10:00:00Z), a date (2026-12-01) nor a \
             duration back from now (24h, 7d, 90m)"
        );
    };
    if at.timestamp_nanos_opt().is_none() {
        bail!("outside the times seam stores (1677-09-21 to 2262-04-11)");
    }
    Ok(at)
}

/// The range of `--since` and `--until` (default `now`); refused unless since < until.
fn resolve_range(since: &str, until: Option<&str>, now: DateTime<Utc>) -> anyhow::Result<Range> {
    let s = parse_time(since, now).with_context(|| format!("--since {since:?}"))?;
    let u = match until {
        Some(until) => parse_time(until, now).with_context(|| format!("--until {until:?}"))?,
        None => now,
    };
    if s >= u {
        bail!(
            "--since {} is not before --until {}: the range is since <= time < until, so it \
             would hold nothing",
            rfc3339(s),
            rfc3339(u)
        );
    }
    Ok(Range { since: s, until: u })
}

/// `value` as an SQL string literal: quotes doubled; empty values and control characters
/// (newlines, NUL, …) refused.
fn sql_literal(flag: &str, value: &str) -> anyhow::Result<String> {
    if value.is_empty() {
        bail!("{flag} needs a value");
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        bail!(
            "{flag} {value:?}: control characters (here U+{:04X}) are refused",
            u32::from(c)
        );
    }
    Ok(format!("'{}'", value.replace('\'', "''")))
}

/// ` AND f1 AND f2` for the filters whose column `columns` has, and those columns.
fn filter_clause(filters: &[Filter], columns: &[&str], q: &str) -> (String, Vec<&'static str>) {
    let applied: Vec<&Filter> = filters
        .iter()
        .filter(|f| columns.contains(&f.column))
        .collect();
    let clause = applied
        .iter()
        .map(|f| format!(" AND {}", f.condition(q)))
        .collect::<String>();
    (clause, applied.iter().map(|f| f.column).collect())
}

/// The statement of every set, in [`SETS`] order.
fn queries(range: &Range, filters: &[Filter]) -> Vec<SetQuery> {
    let mut out = Vec::with_capacity(SETS.len());
    let (clause, applied) = filter_clause(filters, REQUEST_FILTER_COLUMNS, "");
    out.push(SetQuery {
        set: "access_log",
        source: "requests",
        sql: format!(
            "SELECT {ACCESS_LOG_COLUMNS} FROM requests WHERE {}{clause} ORDER BY time, request_id",
            range.condition("")
        ),
        filters: applied,
    });
    let [bypass, denials, expired, probes] = VIEW_SETS;
    for v in [bypass, denials, expired] {
        out.push(view_query(v, range, filters));
    }
    out.push(token_sharing(range, filters));
    out.push(view_query(probes, range, filters));
    out
}

/// `SELECT *` from an audit view over the range, with the filters it has columns for.
fn view_query(v: ViewSet, range: &Range, filters: &[Filter]) -> SetQuery {
    let (set, view, columns, order) = v;
    let (clause, applied) = filter_clause(filters, columns, "");
    SetQuery {
        set,
        source: view,
        sql: format!(
            "SELECT * FROM {view} WHERE {}{clause} ORDER BY {order}",
            range.condition("")
        ),
        filters: applied,
    }
}

/// `audit_token_sharing` computed over the range: the view's shape (shared tokens found with
/// plain aggregates, the DISTINCT aggregates over their requests only) with the range inside
/// both scans. Filters select tokens (a token used in the range by at least one request that
/// matches them all); its figures count all its requests in the range.
fn token_sharing(range: &Range, filters: &[Filter]) -> SetQuery {
    let applied: Vec<&'static str> = filters.iter().map(|f| f.column).collect();
    let matching = if filters.is_empty() {
        String::new()
    } else {
        let all = filters
            .iter()
            .map(|f| f.condition(""))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(" AND max(CASE WHEN {all} THEN 1 ELSE 0 END) = 1")
    };
    let sql = format!(
        "SELECT * FROM (SELECT r.token_id, max(r.subject) AS subject, count(*) AS requests, \
         count(DISTINCT r.client_ip) AS client_ips, \
         count(DISTINCT r.client_app) AS client_apps, \
         array_sort(array_agg(DISTINCT r.client_ip) FILTER (WHERE r.client_ip IS NOT NULL)) AS ips, \
         min(r.time) AS first_seen, max(r.time) AS last_seen \
         FROM (SELECT token_id FROM requests WHERE token_id IS NOT NULL AND {inner} \
         GROUP BY token_id \
         HAVING (min(client_ip) <> max(client_ip) OR min(client_app) <> max(client_app)){matching}) s \
         JOIN requests r ON r.token_id = s.token_id WHERE {outer} \
         GROUP BY r.token_id) t ORDER BY first_seen, token_id",
        inner = range.condition(""),
        outer = range.condition("r."),
    );
    SetQuery {
        set: "token_sharing",
        source: "requests (audit_token_sharing over the range)",
        sql,
        filters: applied,
    }
}

/// The names an export writes in its directory (both formats, and temporary names),
/// manifest first.
fn export_file_names() -> Vec<String> {
    let mut names = vec!["manifest.json".to_string(), "SHA256SUMS".to_string()];
    for set in SETS {
        for ext in ["parquet", "csv"] {
            names.push(format!("{set}.{ext}"));
        }
    }
    let partial: Vec<String> = names.iter().map(|n| format!(".{n}.partial")).collect();
    names.extend(partial);
    names
}

/// Creates `dir`, or checks that it is empty; with `force`, removes a previous export in it
/// (its manifest first, so no manifest outlives its files). Gives whether it created `dir`.
fn prepare_dir(dir: &Path, force: bool) -> anyhow::Result<bool> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => bail!("--out {}: not a directory", dir.display()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create --out {}", dir.display()))?;
            return Ok(true);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot use --out {}", dir.display())),
    }
    let mut entries =
        fs::read_dir(dir).with_context(|| format!("cannot read --out {}", dir.display()))?;
    if entries.next().is_none() {
        return Ok(false);
    }
    if !force {
        bail!(
            "--out {} is not empty: give a new directory, or --force to replace the export in \
             it (two exports are never mixed)",
            dir.display()
        );
    }
    for name in export_file_names() {
        let p = dir.join(&name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    Ok(false)
}

/// Writes every set (each statement sent to `url`, seam's `/api/v1/sql`), then `SHA256SUMS`,
/// then `manifest.json`; `created` collects every path written (for the cleanup of a failed
/// export).
async fn write_export(
    args: &ExportArgs,
    mut url: reqwest::Url,
    range: &Range,
    filters: &[Filter],
    queries: &[SetQuery],
    now: DateTime<Utc>,
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let client = seam::client::http_client(Duration::from_secs(3600))?;
    let server = seam::client::display_url(&args.server);
    url.set_query(Some("format=arrow"));
    let ext = args.format.name();
    let mut files = Vec::with_capacity(queries.len());
    let mut sums = String::new();
    let mut total_rows = 0u64;
    for q in queries {
        let name = format!("{}.{ext}", q.set);
        let path = args.out.join(&name);
        let tmp = args.out.join(format!(".{name}.partial"));
        created.push(tmp.clone());
        let rows = fetch_into(&client, &url, &server, q, &tmp, args.format, range).await?;
        let (sha256, bytes) = sha256_file(&tmp)?;
        created.push(path.clone());
        fs::rename(&tmp, &path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        println!("{name}: {rows} rows, {bytes} bytes");
        total_rows += rows;
        sums.push_str(&format!("{sha256}  {name}\n"));
        files.push(json!({
            "name": name,
            "set": q.set,
            "source": q.source,
            "query": q.sql,
            "filters_applied": q.filters,
            "rows": rows,
            "bytes": bytes,
            "sha256": sha256,
        }));
    }
    let filters_json: serde_json::Map<String, Value> = filters
        .iter()
        .map(|f| {
            let applies_to: Vec<&str> = queries
                .iter()
                .filter(|q| q.filters.contains(&f.column))
                .map(|q| q.set)
                .collect();
            (
                f.column.to_string(),
                json!({"flag": f.flag, "values": f.values, "applies_to": applies_to}),
            )
        })
        .collect();
    let manifest = json!({
        "seam_version": env!("CARGO_PKG_VERSION"),
        "created_at": rfc3339(now),
        "server": server,
        "range": {
            "since": rfc3339(range.since),
            "until": rfc3339(range.until),
            "rule": RANGE_RULE,
        },
        "filters": filters_json,
        "format": ext,
        "files": files,
    });
    let mut text = serde_json::to_string_pretty(&manifest).context("encoding the manifest")?;
    text.push('\n');
    write_atomic(&args.out, "SHA256SUMS", sums.as_bytes(), created)?;
    // Last: a manifest exists only beside every file it lists.
    write_atomic(&args.out, "manifest.json", text.as_bytes(), created)?;
    if let Ok(d) = File::open(&args.out) {
        let _ = d.sync_all();
    }
    println!(
        "seam export: {} files, {total_rows} rows, {} <= time < {}, in {} (manifest.json, \
         SHA256SUMS)",
        queries.len(),
        rfc3339(range.since),
        rfc3339(range.until),
        args.out.display()
    );
    Ok(())
}

/// seam's message in an error body (`{"error": …, "kind": …, "sqlstate": …}`), else the body.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("error").and_then(Value::as_str) {
            Some(e) => match v.get("sqlstate").and_then(Value::as_str) {
                Some(state) => format!("{e} (SQLSTATE {state})"),
                None => e.to_string(),
            },
            None => v.to_string(),
        },
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Runs one set's statement and writes its rows to `tmp`, batch by batch as they arrive.
/// Gives the number of rows. `server` is the address as messages show it (no password).
async fn fetch_into(
    client: &reqwest::Client,
    url: &reqwest::Url,
    server: &str,
    q: &SetQuery,
    tmp: &Path,
    format: ExportFormat,
    range: &Range,
) -> anyhow::Result<u64> {
    let mut resp = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(q.sql.clone())
        .send()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("set {}: cannot reach seam at {server}", q.set))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        bail!(
            "set {} ({}) failed ({status}): {}",
            q.set,
            q.source,
            error_message(&body)
        );
    }
    let mut decoder = StreamDecoder::new();
    let mut out: Option<SetWriter> = None;
    let mut rows = 0u64;
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(reqwest::Error::without_url)
            .with_context(|| {
                format!(
                    "set {}: the result was cut short (seam ends a result past query.timeout or \
                     query.max_result_bytes; seam_audit and its log say why): export a shorter \
                     range",
                    q.set
                )
            })?;
        let Some(chunk) = chunk else { break };
        let mut buf = Buffer::from(chunk);
        while !buf.is_empty() {
            let batch = decoder
                .decode(&mut buf)
                .with_context(|| format!("set {}: decoding seam's Arrow answer", q.set))?;
            if out.is_none()
                && let Some(schema) = decoder.schema()
            {
                out = Some(SetWriter::create(tmp, schema, format, q.set, range)?);
            }
            if let Some(batch) = batch {
                let w = out
                    .as_mut()
                    .with_context(|| format!("set {}: rows before their schema", q.set))?;
                rows += batch.num_rows() as u64;
                w.write(&batch)
                    .with_context(|| format!("set {}: writing {}", q.set, tmp.display()))?;
            }
        }
    }
    decoder
        .finish()
        .with_context(|| format!("set {}: seam's Arrow answer ends midway", q.set))?;
    let w = out.with_context(|| format!("set {}: seam's answer has no Arrow schema", q.set))?;
    w.finish()
        .with_context(|| format!("set {}: writing {}", q.set, tmp.display()))?;
    Ok(rows)
}

/// A set's file being written (both boxed: the writers differ much in size).
enum SetWriter {
    Parquet(Box<ArrowWriter<File>>),
    Csv(Box<CsvSet>),
}

/// A CSV file being written.
struct CsvSet {
    writer: arrow::csv::Writer<BufWriter<File>>,
    /// The schema written: nested columns as Utf8 (JSON text).
    schema: SchemaRef,
    /// No batch written yet (the header comes with the first one).
    empty: bool,
}

impl SetWriter {
    fn create(
        path: &Path,
        schema: SchemaRef,
        format: ExportFormat,
        set: &str,
        range: &Range,
    ) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(match format {
            ExportFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .set_key_value_metadata(Some(vec![
                        KeyValue::new("seam.export.set".to_string(), set.to_string()),
                        KeyValue::new("seam.export.range".to_string(), range.condition("")),
                    ]))
                    .build();
                let writer = ArrowWriter::try_new(file, schema, Some(props))
                    .context("cannot start the Parquet file")?;
                SetWriter::Parquet(Box::new(writer))
            }
            ExportFormat::Csv => SetWriter::Csv(Box::new(CsvSet {
                writer: arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .with_timestamp_format(NAIVE_TIMESTAMP_FORMAT.to_string())
                    .build(BufWriter::new(file)),
                schema: seam_query::http::csv_schema(&schema),
                empty: true,
            })),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match self {
            SetWriter::Parquet(w) => w.write(batch).context("writing Parquet")?,
            SetWriter::Csv(c) => {
                let batch = seam_query::http::nested_as_json(batch, &c.schema)
                    .context("nested columns as JSON text")?;
                c.writer.write(&batch).context("writing CSV")?;
                c.empty = false;
            }
        }
        Ok(())
    }

    /// Ends the file (Parquet footer; CSV header when there were no rows) and syncs it.
    fn finish(self) -> anyhow::Result<()> {
        let file = match self {
            SetWriter::Parquet(w) => (*w).into_inner().context("finishing the Parquet file")?,
            SetWriter::Csv(c) => {
                let CsvSet {
                    mut writer,
                    schema,
                    empty,
                } = *c;
                if empty {
                    writer
                        .write(&RecordBatch::new_empty(schema))
                        .context("writing the CSV header")?;
                }
                writer
                    .into_inner()
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .context("writing CSV")?
            }
        };
        file.sync_all().context("syncing the file to disk")?;
        Ok(())
    }
}

/// The SHA-256 (hex) and size of a file, read in blocks.
fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut block)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&block[..n]);
        size += n as u64;
    }
    Ok((hex::encode(&hash.finalize()[..]), size))
}

/// Writes `bytes` to `dir/name` through a synced temporary file and a rename.
fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.partial"));
    let path = dir.join(name);
    created.push(tmp.clone());
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    created.push(path.clone());
    fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(s: &str) -> String {
        rfc3339(parse_time(s, now()).unwrap())
    }

    #[test]
    fn times_in_every_form() {
        assert_eq!(at("2026-12-05T10:00:00Z"), "2026-12-05T10:00:00Z");
        assert_eq!(
            at("2026-12-05T11:00:00.5+01:00"),
            "2026-12-05T10:00:00.500Z"
        );
        assert_eq!(at("2026-12-01"), "2026-12-01T00:00:00Z");
        assert_eq!(at("24h"), "2026-12-04T12:00:00Z");
        assert_eq!(at("7d"), "2026-11-28T12:00:00Z");
        assert_eq!(at("90m"), "2026-12-05T10:30:00Z");
        assert!(parse_time("2026-12-05T10:00:00", now()).is_err());
        assert!(parse_time("yesterday", now()).is_err());
    }

    #[test]
    fn empty_and_reversed_ranges_are_refused() {
        assert!(
            resolve_range("2026-12-05T10:00:00Z", Some("2026-12-05T10:00:00Z"), now()).is_err()
        );
        assert!(resolve_range("1h", Some("2h"), now()).is_err());
        let r = resolve_range("2h", None, now()).unwrap();
        assert_eq!(
            r.condition(""),
            "time >= '2026-12-05T10:00:00Z' AND time < '2026-12-05T12:00:00Z'"
        );
    }

    #[test]
    fn literals_double_quotes_and_refuse_control_characters() {
        assert_eq!(sql_literal("--api", "o'brien").unwrap(), "'o''brien'");
        assert_eq!(sql_literal("--api", r"a\b").unwrap(), r"'a\b'");
        assert!(sql_literal("--subject", "a\nb").is_err());
        assert!(sql_literal("--subject", "a\0b").is_err());
        assert!(sql_literal("--subject", "").is_err());
    }

    #[test]
    fn filters_apply_to_the_sets_that_have_the_column() {
        let range = resolve_range("2h", None, now()).unwrap();
        let filters = [Filter::new("api_id", "--api", &["x'y".to_string()])
            .unwrap()
            .unwrap()];
        let qs = queries(&range, &filters);
        let names: Vec<&str> = qs.iter().map(|q| q.set).collect();
        assert_eq!(names, SETS);
        let by = |set: &str| qs.iter().find(|q| q.set == set).unwrap();
        assert!(
            by("access_log")
                .sql
                .contains(" AND api_id IN ('x''y') ORDER BY time, request_id")
        );
        assert_eq!(by("access_log").filters, ["api_id"]);
        assert!(by("denials").sql.contains("api_id IN ('x''y')"));
        assert!(!by("gateway_bypass").sql.contains("api_id"));
        assert!(by("gateway_bypass").filters.is_empty());
        assert!(by("external_probes").filters.is_empty());
        assert!(
            by("token_sharing")
                .sql
                .contains("max(CASE WHEN api_id IN ('x''y') THEN 1 ELSE 0 END) = 1")
        );
        assert!(by("token_sharing").sql.contains("WHERE r.time >= '"));
    }
}
