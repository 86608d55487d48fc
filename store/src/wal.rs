//! Write-ahead log: nothing is acknowledged before it is durable.
//!
//! Takes one request's `RecordBatch` for one table ([`Wal::append`]); gives back success only
//! once the batch is written to the current segment and fsynced (under the default
//! `fsync = "always"`), and hands the batch to [`Storage`] so queries see it. Concurrent
//! appends share one write and one fsync (group commit): a dedicated writer thread takes
//! every append queued while the previous fsync ran.
//!
//! On start, [`Wal::open`] replays every segment: entries whose sequence number is above the
//! table's watermark (the highest sequence number already in Parquet, kept in the manifest)
//! go back into memory, so each acknowledged row ends up stored exactly once. A torn tail (an
//! entry cut short by a crash) is cut off; corruption in the middle follows
//! `wal.on_corrupt`: `fail` (default: seam refuses to start and names the segment and
//! offset) or `quarantine` (the segment is moved to `wal/quarantine/`, the entries before the
//! damage are kept, and the loss is logged and counted). Segments whose entries are all in
//! Parquet are deleted.
//!
//! A write that fails (full disk, unwritable directory) is undone (the segment is truncated
//! back to its last good length) and the requests get a retryable error; seam goes on when
//! space returns.

pub mod segment;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use crate::error::{AppendError, WalError};
use crate::metrics as m;
use crate::storage::{Storage, adapt};

/// When the WAL calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Before every acknowledgement (shared by concurrent requests). The default.
    Always,
    /// Never: acknowledged data survives a crash of seam but not of the machine. For
    /// benchmarks and throwaway setups only.
    Never,
}

/// What to do with a segment that is corrupt in the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorruptPolicy {
    /// Refuse to start, naming the segment and offset. The default.
    Fail,
    /// Move the segment to `wal/quarantine/`, keep the entries before the damage, log and
    /// count the loss, and start.
    Quarantine,
}

/// Write-ahead log settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// `always` (default) or `never`.
    pub fsync: FsyncPolicy,
    /// Start a new segment once the current one holds this many bytes. Default 64 MiB.
    pub segment_bytes: u64,
    /// Appends that may wait for the writer; past it receivers answer with a retryable
    /// status. Default 1024.
    pub queue_depth: usize,
    /// Most bytes one group commit writes before its fsync. Default 16 MiB.
    pub group_max_bytes: usize,
    /// `fail` (default) or `quarantine`.
    pub on_corrupt: CorruptPolicy,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            queue_depth: 1024,
            group_max_bytes: 16 << 20,
            on_corrupt: CorruptPolicy::Fail,
        }
    }
}

impl WalConfig {
    /// Checks ranges, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 4096 {
            return Err("wal.segment_bytes must be at least 4096".into());
        }
        if self.queue_depth == 0 {
            return Err("wal.queue_depth must be at least 1".into());
        }
        if self.group_max_bytes == 0 {
            return Err("wal.group_max_bytes must be at least 1".into());
        }
        Ok(())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The last pass every batch goes through before it is logged, and again when it is
/// replayed: the collector's redaction, value caps and event-time window. The store only
/// calls it; what is secret or plausible is the collector's knowledge.
pub trait Sanitise: Send + Sync + std::fmt::Debug {
    /// `batch` of `table` with every secret replaced and every value capped.
    ///
    /// # Errors
    /// The batch cannot be rebuilt.
    fn batch(&self, table: &str, batch: RecordBatch) -> Result<RecordBatch, ArrowError>;

    /// Splits off the rows of a replayed `batch` whose event time is outside the accepted
    /// window at `now_ns`: gives the kept rows and the refused ones with their reasons.
    ///
    /// # Errors
    /// The batch cannot be filtered.
    fn split_window(
        &self,
        batch: RecordBatch,
        now_ns: i64,
    ) -> Result<(RecordBatch, Vec<Refused>), ArrowError>;
}

/// A replayed row refused by [`Sanitise::split_window`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Row index in the batch.
    pub row: usize,
    /// Why it was refused.
    pub reason: String,
}

/// Stores batches as they are (tests and tools that hold no secrets).
#[derive(Debug, Default, Clone, Copy)]
pub struct AsIs;

impl Sanitise for AsIs {
    fn batch(&self, _table: &str, batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
        Ok(batch)
    }

    fn split_window(
        &self,
        batch: RecordBatch,
        _now_ns: i64,
    ) -> Result<(RecordBatch, Vec<Refused>), ArrowError> {
        Ok((batch, Vec::new()))
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segments read.
    pub segments: usize,
    /// Entries put back in memory (not yet in Parquet).
    pub replayed_entries: usize,
    /// Rows put back in memory.
    pub replayed_rows: usize,
    /// Entries skipped because they were already in Parquet.
    pub skipped_entries: usize,
    /// Torn tails cut.
    pub torn_tails: usize,
    /// Segments quarantined.
    pub quarantined: usize,
    /// Rows (or unreadable entries) moved to `rejects` at replay.
    pub refused_rows: usize,
}

struct Append {
    /// The entry's table name: a table, or [`segment::MULTI`] for several.
    table: &'static str,
    payload: Vec<u8>,
    /// The batches to hand to storage once durable, by table.
    batches: Vec<(&'static str, RecordBatch)>,
    /// Bytes reserved in storage's memory budget for these batches.
    size: usize,
    reply: oneshot::Sender<Result<(), AppendError>>,
}

enum Job {
    Append(Append),
    Close(oneshot::Sender<()>),
}

/// The write-ahead log's handle; cheap to share.
#[derive(Debug)]
pub struct Wal {
    tx: mpsc::Sender<Job>,
    dir: PathBuf,
    storage: Arc<Storage>,
    /// Table schemas without field metadata, for compact IPC payloads.
    wire: HashMap<&'static str, (SchemaRef, SchemaRef)>,
    /// The last pass every stored batch goes through (redaction, value caps).
    sanitiser: Arc<dyn Sanitise>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Append(_) => "Append",
            Job::Close(_) => "Close",
        })
    }
}

fn strip(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    ))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.wal"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Replays `dir` into `storage` and starts the writer.
    ///
    /// # Errors
    /// I/O failures, or a corrupt segment under `on_corrupt = "fail"`.
    pub fn open(
        dir: PathBuf,
        config: WalConfig,
        storage: Arc<Storage>,
    ) -> Result<(Arc<Self>, ReplayReport), WalError> {
        Self::open_with(dir, config, storage, Arc::new(AsIs))
    }

    /// Like [`Wal::open`], with the sanitiser every appended and replayed batch goes
    /// through (seam's configured token rules, value cap and event-time window).
    ///
    /// # Errors
    /// I/O failures, or a corrupt segment under `on_corrupt = "fail"`.
    pub fn open_with(
        dir: PathBuf,
        config: WalConfig,
        storage: Arc<Storage>,
        sanitiser: Arc<dyn Sanitise>,
    ) -> Result<(Arc<Self>, ReplayReport), WalError> {
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let wire: HashMap<&'static str, (SchemaRef, SchemaRef)> = seam_schemas::tables::all()
            .into_iter()
            .map(|t| (t.name, (strip(&t.schema), t.schema)))
            .collect();
        let (report, closed, next_seq, next_id) =
            replay(&dir, &config, &storage, &wire, sanitiser.as_ref())?;
        tracing::info!(
            fsync = ?config.fsync,
            segments = report.segments,
            replayed_rows = report.replayed_rows,
            torn_tails = report.torn_tails,
            quarantined = report.quarantined,
            "Write-ahead log ready (fsync policy: {}).",
            match config.fsync {
                FsyncPolicy::Always => "fsync before every acknowledgement",
                FsyncPolicy::Never => "NO fsync: acknowledged data is lost if the machine crashes",
            }
        );
        let file = Writer::create_segment(&dir, next_id)?;
        let wal_dir = dir.clone();
        let (tx, rx) = mpsc::channel(config.queue_depth);
        let mut writer = Writer {
            dir,
            config,
            file,
            segment_id: next_id,
            segment_len: segment::HEADER_LEN as u64,
            next_seq,
            current_max: BTreeMap::new(),
            closed,
            storage: Arc::clone(&storage),
        };
        writer.cleanup();
        std::thread::Builder::new()
            .name("seam-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| WalError::Io {
                path: PathBuf::from("seam-wal thread"),
                source: e,
            })?;
        Ok((
            Arc::new(Self {
                tx,
                dir: wal_dir,
                storage,
                wire,
                sanitiser,
            }),
            report,
        ))
    }

    /// Makes `batch` durable and visible. Returns once it is fsynced (policy `always`).
    ///
    /// # Errors
    /// Retryable when the queue or the memory budget is full, the WAL cannot be written
    /// (full disk), or seam is stopping.
    pub async fn append(&self, table: &'static str, batch: RecordBatch) -> Result<(), AppendError> {
        self.append_all(vec![(table, batch)]).await
    }

    /// Makes the batches of one request durable and visible together, as one entry: after a
    /// crash they are all replayed or none is. Returns once fsynced (policy `always`).
    /// Empty batches are left out; nothing to store is a success.
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub async fn append_all(
        &self,
        parts: Vec<(&'static str, RecordBatch)>,
    ) -> Result<(), AppendError> {
        let mut batches = Vec::with_capacity(parts.len());
        let mut payloads = Vec::with_capacity(parts.len());
        for (table, batch) in parts {
            if batch.num_rows() == 0 {
                continue;
            }
            let Some((wire, _)) = self.wire.get(table) else {
                return Err(AppendError::Internal(format!("unknown table {table}")));
            };
            let batch = self
                .sanitiser
                .batch(table, batch)
                .map_err(|e| AppendError::Internal(format!("records cannot be redacted: {e}")))?;
            let payload = encode_ipc(wire, &batch)
                .map_err(|e| AppendError::Internal(format!("records cannot be encoded: {e}")))?;
            payloads.push((table, payload));
            batches.push((table, batch));
        }
        let (table, payload) = match payloads.len() {
            0 => return Ok(()),
            1 => payloads.swap_remove(0),
            _ => {
                let refs: Vec<(&str, &[u8])> =
                    payloads.iter().map(|(t, p)| (*t, p.as_slice())).collect();
                (segment::MULTI, segment::encode_parts(&refs))
            }
        };
        let size = batches.iter().map(|(_, b)| b.get_array_memory_size()).sum();
        self.storage.admit(size)?;
        let (reply, rx) = oneshot::channel();
        let sent = self.tx.try_send(Job::Append(Append {
            table,
            payload,
            batches,
            size,
            reply,
        }));
        if let Err(e) = sent {
            self.storage.release(size);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => {
                    AppendError::Overloaded("the write-ahead log queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => AppendError::ShuttingDown,
            });
        }
        // The writer releases the reservation itself when its write fails.
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }

    /// After [`Wal::close`] and a final flush: deletes the segments whose entries are all in
    /// Parquet (at or below their table's watermark), so that a graceful stop leaves no log
    /// to read at the next start. A segment with damage or an entry above its watermark is
    /// kept. Gives the number deleted.
    ///
    /// # Errors
    /// The directory or a segment cannot be read.
    pub fn remove_persisted(&self) -> Result<usize, WalError> {
        let marks = self.storage.wal_watermarks();
        let mut removed = 0;
        for (_, path) in list_segments(&self.dir)? {
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let (_, entries, damage) = segment::parse(&bytes);
            let persisted = damage.is_none()
                && entries.iter().all(|e| {
                    segment::parts(e).is_ok_and(|parts| {
                        parts
                            .iter()
                            .all(|(t, _)| marks.get(t).is_some_and(|m| e.seq <= *m))
                    })
                });
            if persisted {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(removed)
    }

    /// Finishes every queued append, then stops the writer.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn encode_ipc(schema: &SchemaRef, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let batch = RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())?;
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2 + 1024);
    let mut w = StreamWriter::try_new(&mut buf, schema)?;
    w.write(&batch)?;
    w.finish()?;
    drop(w);
    Ok(buf)
}

fn decode_ipc(payload: &[u8], schema: &SchemaRef) -> Result<Vec<RecordBatch>, String> {
    let reader =
        StreamReader::try_new(std::io::Cursor::new(payload), None).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| e.to_string())?;
        out.push(adapt(&b, schema).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[derive(Debug)]
struct ClosedSegment {
    path: PathBuf,
    /// Highest sequence number per table in the segment.
    max_seq: BTreeMap<String, u64>,
}

type Replayed = (ReplayReport, Vec<ClosedSegment>, u64, u64);

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            segs.push((id, path));
        }
    }
    segs.sort();
    Ok(segs)
}

fn replay(
    dir: &Path,
    config: &WalConfig,
    storage: &Storage,
    wire: &HashMap<&'static str, (SchemaRef, SchemaRef)>,
    sanitiser: &dyn Sanitise,
) -> Result<Replayed, WalError> {
    let now = crate::now_ns();
    let segs = list_segments(dir)?;
    let watermarks = storage.wal_watermarks();
    let mut report = ReplayReport::default();
    let mut closed = Vec::new();
    let mut max_seq = watermarks.values().copied().max().unwrap_or(0);
    let mut max_id = 0;
    let count = segs.len();
    for (i, (id, path)) in segs.into_iter().enumerate() {
        max_id = max_id.max(id);
        report.segments += 1;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let (_, entries, damage) = segment::parse(&bytes);
        let mut seg_max: BTreeMap<String, u64> = BTreeMap::new();
        // One entry may hold several tables' batches (one request); each part is replayed
        // against its own table's watermark.
        let mut items: Vec<(&segment::Entry<'_>, &str, &[u8])> = Vec::new();
        for e in &entries {
            max_seq = max_seq.max(e.seq);
            match segment::parts(e) {
                Ok(parts) => items.extend(parts.into_iter().map(|(t, p)| (e, t, p))),
                Err(reason) => {
                    tracing::error!(segment = %path.display(), offset = e.offset, reason, "Skipped a write-ahead log entry whose parts cannot be read; its bytes are kept under wal/quarantine.");
                    keep_entry(dir, &path, e);
                    ::metrics::counter!(m::WAL_QUARANTINED).increment(1);
                    report.refused_rows += 1;
                    let r = replay_reject("wal", e.seq, None, 0, reason);
                    match replay_rejects_batch(&[r], now) {
                        Ok(b) => storage.push_recent(
                            seam_schemas::tables::rejects::TABLE,
                            b,
                            e.seq,
                            false,
                        ),
                        Err(err) => {
                            tracing::error!(error = %err, "Could not record the refused entry in rejects.")
                        }
                    }
                }
            }
        }
        for (e, table, payload) in items {
            let m = seg_max.entry(table.to_string()).or_insert(0);
            *m = (*m).max(e.seq);
            let Some((name, (_, schema))) = wire.get_key_value(table) else {
                tracing::warn!(
                    table = table,
                    seq = e.seq,
                    "WAL entry for an unknown table skipped."
                );
                continue;
            };
            if e.seq <= watermarks.get(name).copied().unwrap_or(0) {
                report.skipped_entries += 1;
                continue;
            }
            // Startup never dies on one record: an entry that cannot be read back, or rows
            // that no longer pass the event-time window (written by an older seam), go to
            // `rejects` with the reason, and the rest is replayed.
            let mut refused = Vec::new();
            match decode_ipc(payload, schema) {
                Ok(batches) => {
                    report.replayed_entries += 1;
                    for b in batches {
                        let b = match sanitiser.batch(name, b.clone()) {
                            Ok(clean) => clean,
                            Err(err) => {
                                tracing::warn!(table = name, error = %err, "A replayed batch could not be redacted; it is kept as it was.");
                                b
                            }
                        };
                        let (kept, out) = match sanitiser.split_window(b.clone(), now) {
                            Ok(split) => split,
                            Err(_) => (b.clone(), Vec::new()),
                        };
                        refused.extend(
                            out.into_iter()
                                .map(|o| replay_reject(name, e.seq, Some(&b), o.row, &o.reason)),
                        );
                        report.replayed_rows += kept.num_rows();
                        storage.push_recent(name, kept, e.seq, false);
                    }
                }
                Err(reason) => {
                    let reason = format!("write-ahead log entry could not be read back: {reason}");
                    tracing::error!(segment = %path.display(), offset = e.offset, table = name, reason, "Skipped an unreadable write-ahead log entry; its bytes are kept under wal/quarantine.");
                    keep_entry(dir, &path, e);
                    ::metrics::counter!(m::WAL_QUARANTINED).increment(1);
                    refused.push(replay_reject(name, e.seq, None, 0, &reason));
                }
            }
            if !refused.is_empty() {
                report.refused_rows += refused.len();
                tracing::warn!(table = name, rows = refused.len(), first = %refused[0].reason, "Moved replayed rows that cannot be processed to the rejects table.");
                match replay_rejects_batch(&refused, now) {
                    Ok(b) => {
                        storage.push_recent(seam_schemas::tables::rejects::TABLE, b, e.seq, false)
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "Could not record the refused rows in rejects.")
                    }
                }
            }
        }
        let last = i + 1 == count;
        match damage {
            None => {}
            Some(segment::Damage::TornTail { offset }) if last => {
                tracing::warn!(segment = %path.display(), offset, "Cut a torn write-ahead log tail (a write interrupted by a crash; it was never acknowledged).");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(offset as u64).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                report.torn_tails += 1;
                ::metrics::counter!(m::WAL_TORN_TAILS).increment(1);
            }
            Some(d) => {
                let (offset, reason) = match d {
                    segment::Damage::TornTail { offset } => {
                        (offset, "cut short in a segment that is not the last")
                    }
                    segment::Damage::Corrupt { offset, reason } => (offset, reason),
                };
                match config.on_corrupt {
                    CorruptPolicy::Fail => {
                        return Err(WalError::Corrupt {
                            path,
                            offset,
                            reason: reason.into(),
                        });
                    }
                    CorruptPolicy::Quarantine => {
                        let qdir = dir.join("quarantine");
                        std::fs::create_dir_all(&qdir).map_err(io_err(&qdir))?;
                        let target = qdir.join(path.file_name().unwrap_or_default());
                        std::fs::rename(&path, &target).map_err(io_err(&path))?;
                        tracing::error!(
                            segment = %target.display(),
                            offset,
                            reason,
                            kept_entries = entries.len(),
                            "Quarantined a corrupt write-ahead log segment: records after the damage are lost."
                        );
                        report.quarantined += 1;
                        ::metrics::counter!(m::WAL_QUARANTINED).increment(1);
                        continue;
                    }
                }
            }
        }
        closed.push(ClosedSegment {
            path,
            max_seq: seg_max,
        });
    }
    Ok((report, closed, max_seq + 1, max_id + 1))
}

/// Keeps the bytes of an entry that cannot be replayed under `wal/quarantine/<segment>-<offset>.entry`.
fn keep_entry(dir: &Path, segment: &Path, e: &segment::Entry<'_>) {
    let qdir = dir.join("quarantine");
    let target = qdir.join(format!(
        "{}-{}.entry",
        segment
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("segment"),
        e.offset
    ));
    if let Err(err) =
        std::fs::create_dir_all(&qdir).and_then(|()| std::fs::write(&target, e.payload))
    {
        tracing::error!(error = %err, "The unreadable entry could not be kept.");
    }
}

/// One row for `rejects`, refused at replay.
#[derive(Debug)]
struct ReplayReject {
    key: String,
    table: String,
    row: usize,
    reason: String,
    raw: Option<String>,
}

/// A refused row of entry `seq` of `table` (`batch` row `row`, when the entry was readable).
fn replay_reject(
    table: &str,
    seq: u64,
    batch: Option<&RecordBatch>,
    row: usize,
    reason: &str,
) -> ReplayReject {
    let raw = batch.and_then(|b| {
        let one = b.slice(row, 1);
        let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
        w.write(&one).ok()?;
        w.finish().ok()?;
        let mut text = String::from_utf8(w.into_inner()).ok()?;
        let _ = crate::truncate(&mut text, 4096);
        Some(text.trim_end().to_string())
    });
    ReplayReject {
        key: crate::key_of(&["replay", table, &seq.to_string(), &row.to_string()]),
        table: table.to_string(),
        row,
        reason: format!("refused at write-ahead log replay: {reason}"),
        raw,
    }
}

/// The `rejects` rows of replayed records that could not be processed.
fn replay_rejects_batch(rows: &[ReplayReject], now: i64) -> Result<RecordBatch, ArrowError> {
    use crate::rows::{Cell, Columns, batch};
    let cols = Columns::new(seam_schemas::tables::rejects::schema());
    let built: Vec<_> = rows
        .iter()
        .map(|r| {
            let mut row = cols.row();
            cols.set(&mut row, "time", Cell::Ts(now));
            cols.set(&mut row, "ingest_time", Cell::Ts(now));
            cols.set(&mut row, "record_key", Cell::Str(r.key.clone()));
            cols.set(&mut row, "source", Cell::Str(r.table.clone()));
            cols.set(
                &mut row,
                "record_index",
                Cell::I64(i64::try_from(r.row).unwrap_or(i64::MAX)),
            );
            cols.set(&mut row, "reason", Cell::Str(r.reason.clone()));
            cols.set(&mut row, "raw", Cell::text(r.raw.clone()));
            row
        })
        .collect();
    batch(&cols, &built)
}

struct Writer {
    dir: PathBuf,
    config: WalConfig,
    file: File,
    segment_id: u64,
    segment_len: u64,
    next_seq: u64,
    current_max: BTreeMap<String, u64>,
    closed: Vec<ClosedSegment>,
    storage: Arc<Storage>,
}

impl Writer {
    fn create_segment(dir: &Path, id: u64) -> Result<File, WalError> {
        let path = segment_path(dir, id);
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&segment::header(id)).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
        sync_dir(dir).map_err(io_err(dir))?;
        Ok(f)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut closing = None;
        while closing.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            match first {
                Job::Append(a) => group.push(a),
                Job::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            let mut bytes = group[0].payload.len();
            while bytes < self.config.group_max_bytes {
                match rx.try_recv() {
                    Ok(Job::Append(a)) => {
                        bytes += a.payload.len();
                        group.push(a);
                    }
                    Ok(Job::Close(done)) => {
                        closing = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
            ::metrics::gauge!(m::WAL_QUEUE_DEPTH).set(rx.len() as f64);
            if self.segment_len >= self.config.segment_bytes {
                self.rotate();
            }
            self.cleanup();
        }
        if let Err(e) = self.file.sync_all() {
            tracing::error!(error = %e, "Final write-ahead log sync failed.");
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn commit(&mut self, group: Vec<Append>) {
        let start = self.segment_len;
        let mut buf = Vec::with_capacity(group.iter().map(|a| a.payload.len() + 64).sum());
        let mut seqs = Vec::with_capacity(group.len());
        for a in &group {
            let seq = self.next_seq;
            self.next_seq += 1;
            segment::encode_entry(&mut buf, seq, a.table, &a.payload);
            seqs.push(seq);
        }
        let t = Instant::now();
        let mut result = self.file.write_all(&buf);
        if result.is_ok() && self.config.fsync == FsyncPolicy::Always {
            result = self.file.sync_data();
            ::metrics::counter!(m::WAL_FSYNCS).increment(1);
            ::metrics::gauge!(m::WAL_FSYNC_SECONDS).increment(t.elapsed().as_secs_f64());
        }
        match result {
            Ok(()) => {
                self.segment_len += buf.len() as u64;
                ::metrics::counter!(m::WAL_BYTES).increment(buf.len() as u64);
                ::metrics::counter!(m::WAL_GROUPS).increment(1);
                for (a, seq) in group.into_iter().zip(seqs) {
                    // Each batch's own size is its share of the reservation.
                    for (table, batch) in a.batches {
                        let m = self.current_max.entry(table.to_string()).or_insert(0);
                        *m = (*m).max(seq);
                        self.storage.push_recent(table, batch, seq, true);
                    }
                    let _ = a.reply.send(Ok(()));
                }
            }
            Err(e) => {
                ::metrics::counter!(m::WAL_WRITE_ERRORS).increment(1);
                tracing::error!(error = %e, "Write-ahead log write failed; the requests are refused with a retryable status.");
                // Undo the partial write so the segment stays a clean sequence of entries.
                let undone = self
                    .file
                    .set_len(start)
                    .and_then(|()| self.file.seek(SeekFrom::Start(start)).map(|_| ()));
                if let Err(e2) = undone {
                    tracing::error!(error = %e2, "Could not undo a partial write-ahead log write; starting a new segment.");
                    self.rotate();
                }
                for a in group {
                    self.storage.release(a.size);
                    let _ = a.reply.send(Err(AppendError::Overloaded(format!(
                        "the write-ahead log cannot be written ({e})"
                    ))));
                }
            }
        }
    }

    fn rotate(&mut self) {
        let id = self.segment_id + 1;
        match Self::create_segment(&self.dir, id) {
            Ok(f) => {
                let old = std::mem::replace(&mut self.file, f);
                let _ = old.sync_all();
                self.closed.push(ClosedSegment {
                    path: segment_path(&self.dir, self.segment_id),
                    max_seq: std::mem::take(&mut self.current_max),
                });
                self.segment_id = id;
                self.segment_len = segment::HEADER_LEN as u64;
            }
            Err(e) => {
                // Keep writing to the current segment; try again after the next group.
                let _ = std::fs::remove_file(segment_path(&self.dir, id));
                tracing::error!(error = %e, "Could not start a new write-ahead log segment.");
            }
        }
    }

    /// Deletes closed segments whose entries are all in Parquet.
    fn cleanup(&mut self) {
        if self.closed.is_empty() {
            ::metrics::gauge!(m::WAL_SEGMENTS).set(1.0);
            return;
        }
        let marks = self.storage.wal_watermarks();
        self.closed.retain(|seg| {
            let persisted = seg
                .max_seq
                .iter()
                .all(|(t, max)| marks.get(t.as_str()).is_none_or(|m| max <= m));
            if persisted {
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "Could not delete a persisted WAL segment.");
                    return true;
                }
                false
            } else {
                true
            }
        });
        ::metrics::gauge!(m::WAL_SEGMENTS).set((self.closed.len() + 1) as f64);
    }
}
