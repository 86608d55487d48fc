//! Gateway and flow log ingest: the path from a body of APIM or Mule logs to acknowledged
//! rows, shared by `POST /ingest/apim`, `POST /ingest/mule` and `seam ingest`.
//!
//! Takes the text of an input, where it came from ([`InputMeta`], first line number) and an
//! optional forced format; gives an [`AccessOutcome`] (accepted, rejected, duplicates, the
//! first refusals with file:line and reason) once every stored row is durable in the
//! write-ahead log. decode → normalise (rows, redaction, tokens) → dedupe → wal → dedupe
//! commit. Decoding and normalising run on the blocking pool, at most one input per core at
//! once, in time linear in the input's size, so a large or hostile body never stalls the
//! async workers (OTLP ingest, queries); the duplicate check, the write-ahead log append and
//! the commit run for one input at a time (they must not interleave). `first_line` and
//! `first_index` are refused past [`MAX_FIRST_POSITION`], so positions never wrap.

pub mod receive_http;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use seam_schemas::columns::{
    INGEST_TIME, RAW, RECORD_KEY, SOURCE, SOURCE_FILE, SOURCE_FORMAT, SOURCE_LINE, TIME,
};
use seam_schemas::tables::{flow_logs, gateway_events, gateway_logs, rejects};

use crate::dedupe::{Verdict, parse_key};
use crate::error::IngestError;
use crate::normalise::json::{InputMeta, key_of};
use crate::sources::apim::decode::{self as apim, ApimItem, Pos};
use crate::sources::apim::normalise::{Ctx, Keyed, Record, event_row, gateway_row};
use crate::sources::mule::decode::{self as mule, MuleItem};
use crate::sources::mule::normalise::flow_row;
use crate::{Collector, now_ns, stats};
use seam_store::rows::{self, Cell, Columns, Row};

/// Which endpoint an input was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessSource {
    /// `/ingest/apim`: gateway logs and custom gateway events.
    Apim,
    /// `/ingest/mule`: Mule logs.
    Mule,
}

impl AccessSource {
    /// The label in `rejects.source`.
    pub fn label(self) -> &'static str {
        match self {
            AccessSource::Apim => "apim",
            AccessSource::Mule => "mule",
        }
    }

    fn stats_source(self) -> &'static str {
        match self {
            AccessSource::Apim => "apim_http",
            AccessSource::Mule => "mule_http",
        }
    }

    /// Every format name this source accepts for `format=`.
    pub fn formats(self) -> &'static [&'static str] {
        match self {
            AccessSource::Apim => &[
                "apim_records",
                "apim_jsonl",
                "apim_loganalytics",
                "apim_azurediagnostics",
                "apim_loganalytics_csv",
                "apim_loganalytics_json",
                "apim_selfhosted_json",
                "apim_selfhosted_text",
                "apim_custom_json",
                "apim_custom_csv",
            ],
            AccessSource::Mule => &[
                "mule_log4j",
                "mule_log4j_mdc",
                "mule_log4j_event",
                "mule_cloudhub_log4j",
                "mule_json_logger",
                "cloudhub_logs_api",
            ],
        }
    }
}

/// Which endpoint an input belongs to, from its first records; `None` when it is in no
/// format seam knows.
pub fn sniff(text: &str) -> Option<AccessSource> {
    if let Ok(items) = mule::decode(text, 1)
        && items.iter().any(|i| matches!(i, MuleItem::Event(_)))
    {
        return Some(AccessSource::Mule);
    }
    if let Ok(items) = apim::decode(text, 1)
        && items.iter().any(|i| !matches!(i, ApimItem::Reject { .. }))
    {
        return Some(AccessSource::Apim);
    }
    None
}

/// One input.
#[derive(Debug, Clone)]
pub struct AccessInput {
    /// Endpoint.
    pub source: AccessSource,
    /// The text.
    pub text: String,
    /// Number of its first line in the file (1 for a whole body).
    pub first_line: u64,
    /// Index of its first record inside a JSON document that was sent in parts (0 for a
    /// whole body).
    pub first_index: u64,
    /// A forced format: records of another shape are refused.
    pub format: Option<String>,
    /// A mapping that reads the input instead of the built-in shapes (its table decides
    /// where the rows go, whichever endpoint received it).
    pub mapping: Option<Arc<crate::mapping::Mapping>>,
    /// Context.
    pub meta: InputMeta,
}

/// A refused line or record, for the response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// `file:line`, `line N`, `file record N` or `record N`.
    pub at: String,
    /// Why.
    pub reason: String,
}

/// What happened to an input.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccessOutcome {
    /// Records stored (new, or a copy adding fields).
    pub accepted: u64,
    /// Lines or records refused (also stored in `rejects`).
    pub rejected: u64,
    /// Records already stored (nothing new).
    pub duplicates: u64,
    /// Stored rows per table.
    pub tables: std::collections::BTreeMap<&'static str, u64>,
    /// The first refusals (at most 100).
    pub refusals: Vec<Refused>,
}

const MAX_REFUSALS: usize = 100;
const MAX_REJECT_RAW: usize = 4096;

fn at(meta: &InputMeta, pos: Pos) -> String {
    match (&meta.file, pos) {
        (Some(f), Pos::Line(n)) => format!("{f}:{n}"),
        (None, Pos::Line(n)) => format!("line {n}"),
        (Some(f), Pos::Index(i)) => format!("{f} record {i}"),
        (None, Pos::Index(i)) => format!("record {i}"),
    }
}

fn line_of(pos: Pos) -> Option<i64> {
    match pos {
        Pos::Line(n) | Pos::Index(n) => i64::try_from(n).ok(),
    }
}

/// The largest `first_line` or `first_index` an input may give: 2^53 - 1, the largest whole
/// number every JSON client holds exactly. The lines and records of a body (fewer than its
/// bytes) added to it stay far inside the `Int64` columns that store positions (`line`,
/// `record_index`, `source_line`).
pub const MAX_FIRST_POSITION: u64 = (1 << 53) - 1;

fn position_error(name: &str, min: u64, got: &str) -> IngestError {
    let got: String = got.chars().take(40).collect();
    IngestError::InvalidPayload(format!(
        "{name} must be a whole number from {min} to {MAX_FIRST_POSITION}, not {got:?}"
    ))
}

/// Checks a `first_line` (`min` 1) or `first_index` (`min` 0) given with an input.
///
/// # Errors
/// [`IngestError::InvalidPayload`] naming the parameter and the accepted range.
pub fn check_position(name: &str, value: u64, min: u64) -> Result<u64, IngestError> {
    if (min..=MAX_FIRST_POSITION).contains(&value) {
        Ok(value)
    } else {
        Err(position_error(name, min, &value.to_string()))
    }
}

/// Reads a `first_line` (`min` 1) or `first_index` (`min` 0) query parameter; absent or
/// empty is `min`.
///
/// # Errors
/// [`IngestError::InvalidPayload`] for anything but a whole number in range.
pub fn parse_position(name: &str, raw: Option<&str>, min: u64) -> Result<u64, IngestError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(min),
        Some(s) => match s.parse::<u64>() {
            Ok(v) => check_position(name, v, min),
            Err(_) => Err(position_error(name, min, s)),
        },
    }
}

/// Inputs decoded at once, off the async workers: one per core.
static DECODERS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    tokio::sync::Semaphore::new(
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
    )
});

/// One input decoded and normalised into rows, not yet stored
/// ([`Collector::prepare_access`], then [`Collector::store_access`]).
#[derive(Debug)]
pub struct PreparedAccess {
    source: AccessSource,
    /// The `ingest_stats` signal: the endpoint's, or the mapping's table's.
    signal: &'static str,
    ingest: i64,
    rejected: u64,
    refusals: Vec<Refused>,
    /// Gateway logs, gateway events, flow logs, rejects.
    pending: [Pending; 4],
}

type RowFn = fn(&Columns, Record<'_>, String, Ctx<'_>) -> Result<Keyed, String>;

#[derive(Debug)]
struct Pending {
    table: &'static str,
    cols: Columns,
    rows: Vec<Row>,
    keys: Vec<(u128, u64)>,
}

impl Pending {
    fn new(table: &'static str, schema: arrow::datatypes::SchemaRef) -> Self {
        Self {
            table,
            cols: Columns::new(schema),
            rows: Vec::new(),
            keys: Vec::new(),
        }
    }
}

impl Collector {
    fn reject_row(
        &self,
        cols: &Columns,
        input: &AccessInput,
        pos: Pos,
        reason: &str,
        raw: &str,
        ingest: i64,
    ) -> Keyed {
        let mut raw = self.normaliser.tokens.scrub(raw).text;
        if raw.len() > MAX_REJECT_RAW {
            let mut cut = MAX_REJECT_RAW;
            while !raw.is_char_boundary(cut) {
                cut -= 1;
            }
            raw.truncate(cut);
        }
        let file = input.meta.file.clone().unwrap_or_default();
        let (line, index) = match pos {
            Pos::Line(n) => (i64::try_from(n).ok(), None),
            Pos::Index(i) => (None, i64::try_from(i).ok()),
        };
        let key = key_of(&[
            "reject",
            input.source.label(),
            &file,
            &format!("{pos:?}"),
            &raw,
        ]);
        let mut row = cols.row();
        cols.set(&mut row, TIME, Cell::Ts(ingest));
        cols.set(&mut row, INGEST_TIME, Cell::Ts(ingest));
        cols.set(&mut row, RECORD_KEY, Cell::Str(key.clone()));
        cols.set(&mut row, SOURCE, Cell::Str(input.source.label().into()));
        cols.set(&mut row, rejects::FILE, Cell::text(input.meta.file.clone()));
        cols.set(&mut row, rejects::LINE, line.map_or(Cell::Null, Cell::I64));
        cols.set(
            &mut row,
            rejects::RECORD_INDEX,
            index.map_or(Cell::Null, Cell::I64),
        );
        cols.set(&mut row, rejects::REASON, Cell::Str(reason.to_string()));
        cols.set(&mut row, RAW, Cell::Str(raw));
        Keyed { row, key }
    }

    /// Stores the records of one gateway or flow log input: decoded and normalised off the
    /// async workers ([`Collector::prepare_access`] on the blocking pool, at most one input
    /// per core at once), then checked for duplicates and made durable
    /// ([`Collector::store_access`]).
    ///
    /// # Errors
    /// [`IngestError::UnknownFormat`] for an input in no known format (nothing stored),
    /// [`IngestError::InvalidPayload`] for a `first_line` or `first_index` out of range, too
    /// many records, and the retryable errors of the write-ahead log.
    pub async fn ingest_access(
        self: &Arc<Self>,
        input: AccessInput,
    ) -> Result<AccessOutcome, IngestError> {
        self.ingest_access_with(move || Ok(input)).await
    }

    /// As [`Collector::ingest_access`], for an input that `make` builds (inflating a body,
    /// checking its text): `make` runs off the async workers too.
    ///
    /// # Errors
    /// As [`Collector::ingest_access`], and `make`'s.
    pub async fn ingest_access_with<F>(
        self: &Arc<Self>,
        make: F,
    ) -> Result<AccessOutcome, IngestError>
    where
        F: FnOnce() -> Result<AccessInput, IngestError> + Send + 'static,
    {
        self.ingest_access_inner(make, Vec::new(), None).await
    }

    /// As [`Collector::ingest_access_with`], with `extra` batches (a pulled source's
    /// positions) in the same write-ahead log entry as the rows, counted in `ingest_stats`
    /// under `label` (source name, transport) instead of the endpoint's.
    pub(crate) async fn ingest_access_inner<F>(
        self: &Arc<Self>,
        make: F,
        extra: Vec<(&'static str, arrow::record_batch::RecordBatch)>,
        label: Option<(&'static str, &'static str)>,
    ) -> Result<AccessOutcome, IngestError>
    where
        F: FnOnce() -> Result<AccessInput, IngestError> + Send + 'static,
    {
        self.check_open()?;
        let permit = DECODERS
            .acquire()
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        let c = Arc::clone(self);
        let prepared = tokio::task::spawn_blocking(move || -> Result<PreparedAccess, IngestError> {
            let _permit = permit;
            c.prepare_access(make()?)
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                tracing::error!(error = %e, "Decoding a gateway or flow log input panicked.");
                IngestError::InvalidPayload(
                    "the input could not be decoded: seam's decoder failed on it (a bug in seam; please report it)".into(),
                )
            } else {
                IngestError::ShuttingDown
            }
        })??;
        self.store_access_with(prepared, extra, label).await
    }

    /// Decodes and normalises one input into rows: the CPU-bound half of
    /// [`Collector::ingest_access`], synchronous so that it runs off the async workers.
    ///
    /// # Errors
    /// As [`Collector::ingest_access`], except the write-ahead log's.
    pub fn prepare_access(&self, mut input: AccessInput) -> Result<PreparedAccess, IngestError> {
        self.check_open()?;
        check_position("first_line", input.first_line, 1)?;
        check_position("first_index", input.first_index, 0)?;
        let ingest = now_ns();
        input.meta.window = self.normaliser.window;
        if input.meta.now_ns == 0 {
            input.meta.now_ns = ingest;
        }
        if let Some(f) = &input.format
            && !input.source.formats().contains(&f.as_str())
        {
            return Err(IngestError::UnknownFormat(format!(
                "format {f:?} is not one of {}",
                input.source.formats().join(", ")
            )));
        }
        let tokens = &self.normaliser.tokens;
        let meta = &input.meta;
        let mut gateway = Pending::new(gateway_logs::TABLE, gateway_logs::schema());
        let mut events = Pending::new(gateway_events::TABLE, gateway_events::schema());
        let mut flows = Pending::new(flow_logs::TABLE, flow_logs::schema());
        let mut rejected = Pending::new(rejects::TABLE, rejects::schema());
        let mut refusals: Vec<(Pos, String, String)> = Vec::new();
        let ctx = Ctx {
            meta,
            tokens,
            ingest_ns: ingest,
        };
        let forced = input.format.as_deref();
        let first_index = input.first_index;
        let shift = |p: Pos| match p {
            Pos::Index(i) => i.checked_add(first_index).map(Pos::Index).ok_or_else(|| {
                IngestError::InvalidPayload(format!(
                    "record index {i} from first_index {first_index} is out of range"
                ))
            }),
            line => Ok(line),
        };
        let wrong = |got: &str| {
            forced
                .filter(|f| *f != got)
                .map(|f| format!("record is {got}, not the forced format {f}"))
        };
        if let Some(m) = input.mapping.clone() {
            if input.format.is_some() {
                return Err(IngestError::InvalidPayload(
                    "format and mapping cannot be given together: a mapping names its own format"
                        .into(),
                ));
            }
            let strict = !meta.lenient_start;
            let items = match m.format {
                crate::mapping::Format::Json => {
                    crate::mapping::records::json(&input.text, input.first_line, strict, &m.name)?
                }
                crate::mapping::Format::Csv => {
                    crate::mapping::records::csv(&input.text, input.first_line, strict, &m.name)?
                }
            };
            self.check_count(items.len())?;
            for item in items {
                match item {
                    crate::mapping::records::Item::Record { pos, obj, raw } => {
                        let pos = shift(pos)?;
                        let (pending, is_gateway) = match m.table {
                            crate::mapping::Target::GatewayLogs => (&mut gateway, true),
                            crate::mapping::Target::GatewayEvents => (&mut events, false),
                            crate::mapping::Target::FlowLogs => (&mut flows, false),
                        };
                        match crate::mapping::row::build(
                            &m,
                            &pending.cols,
                            &obj,
                            raw.clone(),
                            pos,
                            ctx,
                            &self.traffic,
                        ) {
                            Ok(k) => push_keyed(pending, k, is_gateway),
                            Err(r) => refusals.push((
                                pos,
                                format!("mapping {}: {r}", m.name),
                                crate::mapping::row::redacted_raw(&m, &obj, raw, ctx),
                            )),
                        }
                    }
                    crate::mapping::records::Item::Reject { pos, reason, raw } => {
                        refusals.push((shift(pos)?, format!("mapping {}: {reason}", m.name), raw));
                    }
                }
            }
        } else {
            match input.source {
                AccessSource::Apim => {
                    let items =
                        apim::decode_with(&input.text, input.first_line, !meta.lenient_start)?;
                    self.check_count(items.len())?;
                    for item in items {
                        let is_gateway = matches!(item, ApimItem::Gateway { .. });
                        match item {
                            ApimItem::Gateway {
                                pos,
                                fields,
                                format,
                                raw,
                            }
                            | ApimItem::Event {
                                pos,
                                fields,
                                format,
                                raw,
                            } => {
                                let pos = shift(pos)?;
                                if let Some(r) = wrong(format) {
                                    refusals.push((pos, r, raw));
                                    continue;
                                }
                                let rec = Record {
                                    fields: &fields,
                                    format,
                                    line: line_of(pos),
                                };
                                let (pending, build): (&mut Pending, RowFn) = if is_gateway {
                                    (&mut gateway, gateway_row)
                                } else {
                                    (&mut events, event_row)
                                };
                                let result = build(&pending.cols, rec, raw.clone(), ctx);
                                match result {
                                    Ok(k) => push_keyed(pending, k, is_gateway),
                                    Err(r) => refusals.push((pos, r, raw)),
                                }
                            }
                            ApimItem::Reject { pos, reason, raw } => {
                                refusals.push((shift(pos)?, reason, raw));
                            }
                        }
                    }
                }
                AccessSource::Mule => {
                    let items =
                        mule::decode_with(&input.text, input.first_line, !meta.lenient_start)?;
                    self.check_count(items.len())?;
                    for item in items {
                        match item {
                            MuleItem::Event(mut ev) => {
                                let pos = shift(ev.pos.unwrap_or(Pos::Line(input.first_line)))?;
                                ev.pos = Some(pos);
                                if let Some(r) = wrong(ev.format) {
                                    refusals.push((pos, r, ev.raw));
                                    continue;
                                }
                                let raw = ev.raw.clone();
                                match flow_row(
                                    &flows.cols,
                                    *ev,
                                    meta,
                                    &self.traffic,
                                    tokens,
                                    ingest,
                                ) {
                                    Ok(k) => push_keyed(&mut flows, k, false),
                                    Err(r) => refusals.push((pos, r, raw)),
                                }
                            }
                            MuleItem::Reject { pos, reason, raw } => {
                                refusals.push((shift(pos)?, reason, raw));
                            }
                        }
                    }
                }
            }
        }
        let mut count = 0u64;
        let mut shown = Vec::new();
        for (pos, reason, raw) in refusals {
            count = count.saturating_add(1);
            if shown.len() < MAX_REFUSALS {
                shown.push(Refused {
                    at: at(meta, pos),
                    reason: reason.clone(),
                });
            }
            let k = self.reject_row(&rejected.cols, &input, pos, &reason, &raw, ingest);
            push_keyed(&mut rejected, k, false);
        }
        let signal = match (&input.mapping, input.source) {
            (Some(m), _) if m.table == crate::mapping::Target::FlowLogs => "flow_logs",
            (Some(_), _) | (None, AccessSource::Apim) => "gateway_logs",
            (None, AccessSource::Mule) => "flow_logs",
        };
        Ok(PreparedAccess {
            source: input.source,
            signal,
            ingest,
            rejected: count,
            refusals: shown,
            pending: [gateway, events, flows, rejected],
        })
    }

    /// Stores the rows of a prepared input: checks and commits them against the duplicate
    /// index and appends them to the write-ahead log, under one lock; answers once they are
    /// durable.
    ///
    /// # Errors
    /// The retryable errors of the write-ahead log.
    pub async fn store_access(
        &self,
        prepared: PreparedAccess,
    ) -> Result<AccessOutcome, IngestError> {
        self.store_access_with(prepared, Vec::new(), None).await
    }

    /// As [`Collector::store_access`], with `extra` batches in the same entry and the
    /// `ingest_stats` source and transport `label`.
    async fn store_access_with(
        &self,
        prepared: PreparedAccess,
        extra: Vec<(&'static str, arrow::record_batch::RecordBatch)>,
        label: Option<(&'static str, &'static str)>,
    ) -> Result<AccessOutcome, IngestError> {
        let PreparedAccess {
            source,
            signal,
            ingest,
            rejected,
            refusals,
            mut pending,
        } = prepared;
        let mut out = AccessOutcome {
            rejected,
            refusals,
            ..Default::default()
        };

        // Check, store and commit under one lock, so two inputs never both store a record.
        let _guard = self.access_lock.lock().await;
        for p in &mut pending {
            let mut seen: HashMap<u128, u64> = HashMap::new();
            let mut keep_rows = Vec::with_capacity(p.rows.len());
            let mut keep_keys = Vec::with_capacity(p.keys.len());
            for (row, (key, mask)) in p.rows.drain(..).zip(p.keys.drain(..)) {
                let local = seen.get(&key).copied().unwrap_or(0);
                // A duplicate of what is stored, or of an earlier record of this input.
                let duplicate = self.dedupe.check(key, mask) == Verdict::Duplicate
                    || (local != 0 && mask & !local == 0);
                if duplicate {
                    if p.table != rejects::TABLE {
                        out.duplicates += 1;
                    }
                    continue;
                }
                *seen.entry(key).or_default() |= mask;
                keep_rows.push(row);
                keep_keys.push((key, mask));
            }
            p.rows = keep_rows;
            p.keys = keep_keys;
        }
        // Every table this input fills is one write-ahead log entry: all or nothing.
        let mut parts = Vec::with_capacity(pending.len());
        for p in &pending {
            if p.rows.is_empty() {
                continue;
            }
            let batch = rows::batch(&p.cols, &p.rows)
                .map_err(|e| IngestError::Internal(format!("records could not be stored: {e}")))?;
            parts.push((p.table, batch));
        }
        parts.extend(extra);
        self.wal.append_all(parts).await?;
        for p in &pending {
            if p.rows.is_empty() {
                continue;
            }
            if let Err(e) = self.dedupe.commit(&p.keys, now_ns()) {
                tracing::warn!(error = %e, "Could not record stored keys in the duplicate index.");
            }
            if p.table != rejects::TABLE {
                out.accepted += p.rows.len() as u64;
            }
            out.tables.insert(p.table, p.rows.len() as u64);
        }
        drop(_guard);

        let (stats_source, transport) = label.unwrap_or((source.stats_source(), "http"));
        self.stats.answered(stats::Answered {
            at_ns: ingest,
            source: stats_source,
            signal,
            transport,
            counts: stats::Counts {
                requests: 1,
                received: (out.accepted + out.rejected + out.duplicates) as i64,
                accepted: out.accepted as i64,
                rejected: out.rejected as i64,
                duplicates: out.duplicates as i64,
                ..Default::default()
            },
            refused: None,
        });
        Ok(out)
    }

    /// Adds the keys of rows replayed from the write-ahead log to the duplicate index.
    pub fn seed_dedupe(&self, storage: &dyn seam_schemas::source::TableSource) {
        use arrow::array::{Array, StringArray};
        for table in [
            gateway_logs::TABLE,
            gateway_events::TABLE,
            flow_logs::TABLE,
            rejects::TABLE,
        ] {
            let snap = storage.snapshot(table);
            let mut keys = Vec::new();
            for b in &snap.recent {
                let Some(col) = b.column_by_name(RECORD_KEY) else {
                    continue;
                };
                let Some(s) = col.as_any().downcast_ref::<StringArray>() else {
                    continue;
                };
                keys.extend(
                    (0..s.len())
                        .filter(|i| s.is_valid(*i))
                        .filter_map(|i| parse_key(s.value(i))),
                );
            }
            if let Err(e) = self.dedupe.seed(keys.into_iter(), now_ns()) {
                tracing::warn!(error = %e, "Could not seed the duplicate index.");
            }
        }
    }
}

/// Columns that say how a copy arrived, not what it says: they never make a copy new.
const BOOKKEEPING: &[&str] = &[
    TIME,
    INGEST_TIME,
    RECORD_KEY,
    SOURCE_FORMAT,
    SOURCE_FILE,
    SOURCE_LINE,
    RAW,
];

fn push_keyed(p: &mut Pending, k: Keyed, fields_mask: bool) {
    let Some(key) = parse_key(&k.key) else {
        return;
    };
    let mask = if fields_mask {
        p.cols.mask(&k.row, BOOKKEEPING)
    } else {
        u64::MAX
    };
    p.rows.push(k.row);
    p.keys.push((key, mask));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::token::TokenConfig;
    use crate::sources::mule::normalise::TrafficRules;

    /// `first_index=18446744073709551615` wrapped record indices around: positions past
    /// 2^53 - 1, negative, fractional or not numbers are refused, naming the parameter.
    #[test]
    fn positions_are_checked() {
        assert_eq!(parse_position("first_line", None, 1).unwrap(), 1);
        assert_eq!(parse_position("first_index", Some(" "), 0).unwrap(), 0);
        assert_eq!(
            parse_position("first_index", Some("9007199254740991"), 0).unwrap(),
            MAX_FIRST_POSITION
        );
        for bad in [
            "18446744073709551615",
            "18446744073709551616",
            "9007199254740992",
            "-1",
            "1.5",
            "x",
        ] {
            let Err(IngestError::InvalidPayload(m)) = parse_position("first_index", Some(bad), 0)
            else {
                panic!("{bad} accepted")
            };
            assert!(
                m.contains("first_index must be a whole number from 0 to 9007199254740991"),
                "{m}"
            );
        }
        assert!(parse_position("first_line", Some("0"), 1).is_err());
        assert!(check_position("first_line", u64::MAX, 1).is_err());
        // The largest positions still fit the Int64 columns.
        assert_eq!(
            line_of(Pos::Index(MAX_FIRST_POSITION + 100_000)),
            Some((MAX_FIRST_POSITION + 100_000) as i64)
        );
        assert_eq!(line_of(Pos::Line(u64::MAX)), None);
    }

    /// Every sample, cut at many points and with bytes flipped: decoding and building rows
    /// never panics, and every batch fits its schema.
    #[test]
    fn mangled_inputs_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/");
        let tokens = TokenConfig::default();
        let meta = InputMeta::default();
        let ctx = Ctx {
            meta: &meta,
            tokens: &tokens,
            ingest_ns: 1,
        };
        let rules = TrafficRules::default();
        let gw = Columns::new(gateway_logs::schema());
        let ev = Columns::new(gateway_events::schema());
        let fl = Columns::new(flow_logs::schema());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for name in [
            "apim-gatewaylogs-eventhub.json",
            "apim-gatewaylogs-storage.jsonl",
            "apim-gatewaylogs-loganalytics.json",
            "apim-custom-eventhub.jsonl",
            "mule-log4j.log",
            "mule-json-logger.jsonl",
        ] {
            let original = std::fs::read(format!("{dir}{name}")).unwrap();
            for round in 0..60 {
                let mut bytes = original.clone();
                let cut = (next() as usize) % bytes.len();
                if round % 2 == 0 {
                    bytes.truncate(cut);
                } else {
                    for _ in 0..8 {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] = (next() & 0xff) as u8;
                    }
                }
                let text = String::from_utf8_lossy(&bytes);
                if let Ok(items) = apim::decode(&text, 1) {
                    let mut g = Vec::new();
                    let mut e = Vec::new();
                    for item in items {
                        match item {
                            ApimItem::Gateway {
                                fields,
                                format,
                                raw,
                                ..
                            } => {
                                let rec = Record {
                                    fields: &fields,
                                    format,
                                    line: None,
                                };
                                if let Ok(k) = gateway_row(&gw, rec, raw, ctx) {
                                    g.push(k.row);
                                }
                            }
                            ApimItem::Event {
                                fields,
                                format,
                                raw,
                                ..
                            } => {
                                let rec = Record {
                                    fields: &fields,
                                    format,
                                    line: None,
                                };
                                if let Ok(k) = event_row(&ev, rec, raw, ctx) {
                                    e.push(k.row);
                                }
                            }
                            ApimItem::Reject { .. } => {}
                        }
                    }
                    rows::batch(&gw, &g).unwrap();
                    rows::batch(&ev, &e).unwrap();
                }
                if let Ok(items) = mule::decode(&text, 1) {
                    let mut f = Vec::new();
                    for item in items {
                        if let MuleItem::Event(m) = item
                            && let Ok(k) = flow_row(&fl, *m, &meta, &rules, &tokens, 1)
                        {
                            f.push(k.row);
                        }
                    }
                    rows::batch(&fl, &f).unwrap();
                }
            }
        }
    }
}
