//! Gateway and flow log ingest: the path from a body of APIM or Mule logs to acknowledged
//! rows, shared by `POST /ingest/apim`, `POST /ingest/mule` and `seam ingest`.
//!
//! Takes the text of an input, where it came from ([`InputMeta`], first line number) and an
//! optional forced format; gives an [`AccessOutcome`] (accepted, rejected, duplicates, the
//! first refusals with file:line and reason) once every stored row is durable in the
//! write-ahead log. decode → normalise (rows, redaction, tokens) → dedupe → wal → dedupe
//! commit. One access ingest runs at a time (checking and committing the duplicate index
//! must not interleave); OTLP ingest is not affected.

use std::collections::HashMap;

use seam_schemas::tables::{flow_logs, gateway_events, gateway_logs, rejects};

use crate::buffer::rows::{self, Cell, Columns, Row};
use crate::decode::apim::{self, ApimItem, Pos};
use crate::decode::mule::{self, MuleItem};
use crate::dedupe::{Verdict, parse_key};
use crate::error::IngestError;
use crate::normalise::access::{InputMeta, key_of};
use crate::normalise::flow::flow_row;
use crate::normalise::gateway::{Ctx, Keyed, Record, event_row, gateway_row};
use crate::{Collector, now_ns, stats, telemetry};

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
        Pos::Line(n) | Pos::Index(n) => Some(n as i64),
    }
}

type RowFn = fn(&Columns, Record<'_>, String, Ctx<'_>) -> Result<Keyed, String>;

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
            Pos::Line(n) => (Some(n as i64), None),
            Pos::Index(i) => (None, Some(i as i64)),
        };
        let key = key_of(&[
            "reject",
            input.source.label(),
            &file,
            &format!("{pos:?}"),
            &raw,
        ]);
        let mut row = cols.row();
        cols.set(&mut row, "time", Cell::Ts(ingest));
        cols.set(&mut row, "ingest_time", Cell::Ts(ingest));
        cols.set(&mut row, "record_key", Cell::Str(key.clone()));
        cols.set(&mut row, "source", Cell::Str(input.source.label().into()));
        cols.set(&mut row, "file", Cell::text(input.meta.file.clone()));
        cols.set(&mut row, "line", line.map_or(Cell::Null, Cell::I64));
        cols.set(
            &mut row,
            "record_index",
            index.map_or(Cell::Null, Cell::I64),
        );
        cols.set(&mut row, "reason", Cell::Str(reason.to_string()));
        cols.set(&mut row, "raw", Cell::Str(raw));
        Keyed { row, key }
    }

    /// Stores the records of one gateway or flow log input.
    ///
    /// # Errors
    /// [`IngestError::UnknownFormat`] for an input in no known format (nothing stored),
    /// too many records, and the retryable errors of the write-ahead log.
    pub async fn ingest_access(
        &self,
        mut input: AccessInput,
    ) -> Result<AccessOutcome, IngestError> {
        self.check_open()?;
        let ingest = now_ns();
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
        let mut out = AccessOutcome::default();
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
            Pos::Index(i) => Pos::Index(i + first_index),
            line => line,
        };
        let wrong = |got: &str| {
            forced
                .filter(|f| *f != got)
                .map(|f| format!("record is {got}, not the forced format {f}"))
        };
        match input.source {
            AccessSource::Apim => {
                let items = apim::decode(&input.text, input.first_line)?;
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
                            let pos = shift(pos);
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
                            refusals.push((shift(pos), reason, raw));
                        }
                    }
                }
            }
            AccessSource::Mule => {
                let items = mule::decode(&input.text, input.first_line)?;
                self.check_count(items.len())?;
                for item in items {
                    match item {
                        MuleItem::Event(mut ev) => {
                            let pos = shift(ev.pos.unwrap_or(Pos::Line(input.first_line)));
                            ev.pos = Some(pos);
                            if let Some(r) = wrong(ev.format) {
                                refusals.push((pos, r, ev.raw));
                                continue;
                            }
                            let raw = ev.raw.clone();
                            match flow_row(&flows.cols, *ev, meta, &self.traffic, tokens, ingest) {
                                Ok(k) => push_keyed(&mut flows, k, false),
                                Err(r) => refusals.push((pos, r, raw)),
                            }
                        }
                        MuleItem::Reject { pos, reason, raw } => {
                            refusals.push((shift(pos), reason, raw));
                        }
                    }
                }
            }
        }
        for (pos, reason, raw) in refusals {
            out.rejected += 1;
            if out.refusals.len() < MAX_REFUSALS {
                out.refusals.push(Refused {
                    at: at(meta, pos),
                    reason: reason.clone(),
                });
            }
            let k = self.reject_row(&rejected.cols, &input, pos, &reason, &raw, ingest);
            push_keyed(&mut rejected, k, false);
        }

        // Check, store and commit under one lock, so two inputs never both store a record.
        let _guard = self.access_lock.lock().await;
        for p in [&mut gateway, &mut events, &mut flows, &mut rejected] {
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
        for p in [&gateway, &events, &flows, &rejected] {
            if p.rows.is_empty() {
                continue;
            }
            let batch = rows::batch(&p.cols, &p.rows).map_err(|e| {
                IngestError::InvalidPayload(format!("records could not be stored: {e}"))
            })?;
            self.wal.append(p.table, batch).await?;
            if let Err(e) = self.dedupe.commit(&p.keys, now_ns()) {
                tracing::warn!(error = %e, "Could not record stored keys in the duplicate index.");
            }
            if p.table != rejects::TABLE {
                out.accepted += p.rows.len() as u64;
            }
            out.tables.insert(p.table, p.rows.len() as u64);
        }
        drop(_guard);

        let signal = match input.source {
            AccessSource::Apim => "gateway_logs",
            AccessSource::Mule => "flow_logs",
        };
        self.stats.record(
            ingest,
            input.source.stats_source(),
            signal,
            stats::Counts {
                requests: 1,
                received: (out.accepted + out.rejected + out.duplicates) as i64,
                accepted: out.accepted as i64,
                rejected: out.rejected as i64,
                duplicates: out.duplicates as i64,
                ..Default::default()
            },
        );
        let l = [("signal", signal), ("transport", "http")];
        self.metrics.add(
            telemetry::RECORDS_RECEIVED,
            &l,
            out.accepted + out.rejected + out.duplicates,
        );
        self.metrics
            .add(telemetry::RECORDS_ACCEPTED, &l, out.accepted);
        if out.rejected > 0 {
            self.metrics.add(
                telemetry::RECORDS_REJECTED,
                &[
                    ("signal", signal),
                    ("transport", "http"),
                    ("reason", "invalid_record"),
                ],
                out.rejected,
            );
        }
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
                let Some(col) = b.column_by_name("record_key") else {
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
    "time",
    "ingest_time",
    "record_key",
    "source_format",
    "source_file",
    "source_line",
    "raw",
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
    use crate::normalise::flow::TrafficRules;
    use crate::normalise::token::TokenConfig;

    /// Every sample, cut at many points and with bytes flipped: decoding and building rows
    /// never panics, and every batch fits its schema.
    #[test]
    fn mangled_inputs_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/samples/");
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
