//! Table storage: accepted batches to Parquet files listed in a per-table manifest, and
//! the consistent view of them that queries read.
//!
//! Takes `RecordBatch`es in a table's schema ([`Storage::push_recent`] through the write-ahead log); gives Parquet files under
//! the data directory's object store (`seam_schemas::layout`) and, through
//! [`TableSource`], snapshots of persisted files plus rows not yet flushed, so that accepted
//! data is queryable at once.
//!
//! Invariants:
//! - a row is either in `recent` or in a file listed in the manifest, never both: the swap
//!   from memory to file happens under the table's lock;
//! - files are written whole through `object_store` (the local store writes a temporary file
//!   and renames it), then listed in the manifest, which is rewritten the same way; a file not
//!   in the manifest is not part of the table and is removed at start;
//! - rows inside a file are sorted by `time`; files are cut per UTC hour of `time`, so a
//!   time-range query opens only the files whose `[min_time, max_time]` overlaps it;
//! - flushes and compactions are serialised by one I/O lock, so manifest writes never race;
//! - memory is bounded: past `max_buffer_bytes` of unflushed rows, [`Storage::admit`]
//!   refuses with a retryable error and the flusher is woken;
//! - a failed write leaves the rows in memory and is retried (a full disk becomes a retryable
//!   refusal, never a loss of accepted rows while the process lives).
//!
//! Compaction: files written by flushes are level 0. When an hour partition holds
//! `compaction_fanout` files of one level, they are merged into one file of the next level;
//! once a partition has seen no new file for `compaction_idle`, all its files are merged into
//! one. Replaced files are deleted after `delete_grace`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, RecordBatch, StructArray,
    TimestampNanosecondArray, new_null_array,
};
use arrow::compute::{cast, interleave};
use arrow::datatypes::TimestampNanosecondType;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use seam_schemas::layout::{self, FileEntry, MANIFEST_VERSION, Manifest};
use seam_schemas::source::{TableSnapshot, TableSource};
use seam_schemas::{SCHEMA_VERSION, columns, tables};
use tokio::sync::Notify;

use crate::config::StorageConfig;
use crate::error::AppendError;
pub use crate::error::StorageError;
use crate::metrics as m;

/// Where a replacement of derived rows across tables is recorded before its manifests are
/// written ([`Storage::commit_minutes`]).
pub const REPLACE_JOURNAL: &str = "tables/_replace_journal.json";

/// A replacement of one minute's files across derived tables.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Replacement {
    /// The file-name prefix of the minute's files (`M<minute ns>-`).
    tag: String,
    /// Per table, the minute's new file (none when the minute has no rows now).
    files: Vec<(String, Option<FileEntry>)>,
    /// Further new files of the minute, by table (a minute recomputed in several steps
    /// writes one file per step; every table here is also in `files`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more: Vec<(String, FileEntry)>,
}

impl Replacement {
    /// The minute's new files of `table`.
    fn new_files<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a FileEntry> + 'a {
        self.files
            .iter()
            .filter(move |(t, _)| t == table)
            .filter_map(|(_, e)| e.as_ref())
            .chain(
                self.more
                    .iter()
                    .filter(move |(t, _)| t == table)
                    .map(|(_, e)| e),
            )
    }
}

/// The file-name prefix of a minute's derived files.
fn minute_tag(minute_ns: i64) -> String {
    format!("M{minute_ns}-")
}

type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug)]
struct TableState {
    schema: SchemaRef,
    recent: Vec<RecordBatch>,
    /// WAL sequence number of each batch in `recent` (same order; increasing).
    recent_seqs: Vec<u64>,
    /// Highest WAL sequence number whose rows are all in listed files.
    wal_seq: u64,
    /// The `wal_seq` of the manifest last written and fsynced: what the write-ahead log may
    /// delete up to. It trails `wal_seq` between a flush and its manifest write, so a crash
    /// in between never loses rows whose file the manifest does not list yet.
    durable_wal_seq: u64,
    recent_rows: usize,
    recent_bytes: usize,
    files: Vec<FileEntry>,
    manifest_dirty: bool,
    /// The files the table's Delta log lists at `delta_version` (by path).
    published: BTreeMap<String, FileEntry>,
    /// The Delta log version that lists exactly `published`; `None`: no log yet (the next
    /// manifest write commits version 0 with every file).
    delta_version: Option<u64>,
    /// The next Delta commit carries the table's schema (a newer seam wrote it, or a log
    /// without one).
    delta_metadata_due: bool,
    /// The Delta log could not be read at start: no commits until the next start (the
    /// manifest stays the truth for seam; the reason was logged).
    delta_off: bool,
    /// The version of the manifest object this node read or wrote last (conditional
    /// replacement on a shared store).
    manifest_tag: Option<UpdateVersion>,
    /// Rows changed since the last Delta commit (a flush, a replacement, retention); only
    /// compactions otherwise, which the commit marks `dataChange: false`.
    data_changed: bool,
    /// Other nodes' write-ahead-log watermarks, kept as found (see `Manifest::other_wal_seqs`).
    other_wal_seqs: BTreeMap<String, u64>,
    /// On a shared store: the paths the manifest listed when this node last read or wrote
    /// it. What `files` adds to it and removes from it is this node's change, applied to
    /// the manifest as it is at the next update (other nodes' changes kept).
    base: std::collections::HashSet<String>,
    /// On a shared store: the minute tags (`M<minute>-`) this node replaced since its last
    /// update of the manifest. The update drops every file of such a minute that it does
    /// not add itself, also those a previous correlating node listed after this node last
    /// read the manifest.
    replaced_tags: std::collections::BTreeSet<String>,
    /// When a file was last added to each hour partition (by partition directory).
    last_write: HashMap<String, Instant>,
}

/// The table store: in-memory recent rows plus Parquet files, per table.
#[derive(Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The local directory behind `store`, when there is one (fsync after writes).
    local_root: Option<PathBuf>,
    config: StorageConfig,
    tables: BTreeMap<&'static str, Mutex<TableState>>,
    buffered_bytes: AtomicUsize,
    flush_wanted: Notify,
    io: tokio::sync::Mutex<()>,
    pending_delete: Mutex<Vec<(Instant, Path)>>,
    seq: AtomicU64,
    arrivals: std::sync::OnceLock<Hook>,
    /// This node's lease in a shared store ([`Storage::open_shared`]); none on a store of
    /// its own.
    lease: std::sync::OnceLock<Arc<crate::lease::WriterLease>>,
    /// This node's id on a shared store.
    node: Option<String>,
    /// On a shared store: the correlation lease while this node holds it (derived rows are
    /// written only under it).
    correlation: Mutex<Option<Arc<crate::lease::WriterLease>>>,
}

/// The shortest time a table's commit lock lives unless released (its holder died
/// mid-update); it is `storage.lease_ttl` when that is longer.
const COMMIT_LOCK_TTL: Duration = Duration::from_secs(10);

/// How long an update waits for another node's commit lock on the table before failing (and
/// being tried again at the next flush).
const COMMIT_LOCK_WAIT: Duration = Duration::from_secs(120);

struct Hook(ArrivalHook);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArrivalHook")
    }
}

/// Called with the table and the event times of every batch that becomes visible: the
/// correlator's trigger.
pub type ArrivalHook = Box<dyn Fn(&str, &TimestampNanosecondArray) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the state is still consistent because
    // every critical section only swaps whole vectors.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn os_err(path: &Path, source: object_store::Error) -> StorageError {
    StorageError::ObjectStore {
        path: path.to_string(),
        source,
    }
}

impl Storage {
    /// Opens every table: reads its manifest and removes files the manifest does not list.
    ///
    /// # Errors
    /// A manifest that cannot be parsed, or Parquet files without a manifest.
    ///
    /// `local_root` is the directory behind `store` when it is the local file system: every
    /// file and manifest written is then fsynced (with its directory) before the WAL entries
    /// it covers may be deleted. Object stores make writes durable themselves.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        local_root: Option<PathBuf>,
        config: StorageConfig,
    ) -> Result<Arc<Self>> {
        Self::open_as(store, local_root, config, None).await
    }

    /// [`Storage::open`] for the node `node` of a shared store (its id; `None`: a seam on its
    /// own data directory): the write-ahead-log watermark read and written is this node's
    /// own, so that rows a node acknowledged are replayed against its own progress even after
    /// another node wrote the store.
    ///
    /// # Errors
    /// See [`Storage::open`].
    pub async fn open_as(
        store: Arc<dyn ObjectStore>,
        local_root: Option<PathBuf>,
        config: StorageConfig,
        node: Option<String>,
    ) -> Result<Arc<Self>> {
        Self::open_inner(store, local_root, config, node, None).await
    }

    /// Opens a store shared with other nodes, as the node holding `lease` (its node lease:
    /// [`crate::lease::node_lease_path`]). Every node writes its own files; each update of
    /// a table's manifest and Delta log is made under the table's commit lock from the
    /// manifest as it is in the store then, so that no node's change is lost; other nodes'
    /// flushed rows become visible at [`Storage::refresh`].
    ///
    /// # Errors
    /// See [`Storage::open`].
    pub async fn open_shared(
        store: Arc<dyn ObjectStore>,
        config: StorageConfig,
        lease: Arc<crate::lease::WriterLease>,
    ) -> Result<Arc<Self>> {
        let node = lease.holder().to_string();
        Self::open_inner(store, None, config, Some(node), Some(lease)).await
    }

    async fn open_inner(
        store: Arc<dyn ObjectStore>,
        local_root: Option<PathBuf>,
        config: StorageConfig,
        node: Option<String>,
        lease: Option<Arc<crate::lease::WriterLease>>,
    ) -> Result<Arc<Self>> {
        if let Some(n) = &node
            && !crate::lease::valid_node_id(n)
        {
            return Err(StorageError::NodeId(n.clone()));
        }
        let mut tables = BTreeMap::new();
        let mut fresh = Vec::new();
        for def in tables::all() {
            let loaded = load_manifest(&store, def.name).await?;
            let files = loaded.files;
            let loaded_paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
            // This node's watermark (0: nothing of its log is in the store) and the others'.
            let (own, others) = split_watermarks(
                loaded.wal_node.as_deref(),
                loaded.wal_seq,
                loaded.other_wal_seqs,
                node.as_deref(),
            );
            let wal_seq = own.unwrap_or(0);
            if !loaded.existed {
                fresh.push(def.name);
            }
            ::metrics::gauge!(m::TABLE_FILES, "table" => def.name).set(files.len() as f64);
            tables.insert(
                def.name,
                Mutex::new(TableState {
                    schema: def.schema,
                    recent: Vec::new(),
                    recent_seqs: Vec::new(),
                    wal_seq,
                    durable_wal_seq: wal_seq,
                    recent_rows: 0,
                    recent_bytes: 0,
                    files,
                    manifest_dirty: false,
                    published: BTreeMap::new(),
                    delta_version: loaded.delta_version,
                    delta_metadata_due: loaded.schema_version < SCHEMA_VERSION,
                    delta_off: false,
                    manifest_tag: loaded.tag,
                    data_changed: false,
                    other_wal_seqs: others,
                    base: loaded_paths.into_iter().collect(),
                    replaced_tags: std::collections::BTreeSet::new(),
                    last_write: HashMap::new(),
                }),
            );
        }
        let storage = Arc::new(Self {
            store,
            local_root,
            config,
            tables,
            buffered_bytes: AtomicUsize::new(0),
            flush_wanted: Notify::new(),
            io: tokio::sync::Mutex::new(()),
            pending_delete: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            arrivals: std::sync::OnceLock::new(),
            lease: std::sync::OnceLock::new(),
            node,
            correlation: Mutex::new(None),
        });
        if let Some(l) = lease {
            let _ = storage.lease.set(l);
        }
        // A new table gets its (empty) manifest at once: a crash during its first flush then
        // leaves files the manifest does not list, which are removed as orphans at the next
        // start (their rows are still in the write-ahead log), instead of files with no
        // manifest at all, which seam refuses to guess about.
        for name in fresh {
            if let Some(t) = storage.table(name) {
                lock(t).manifest_dirty = true;
            }
        }
        // Each table's Delta log is brought up to its manifest (a stop between the two
        // leaves the log ahead or behind by one commit; a store seam wrote before it kept a
        // log gets one now). On a shared store every update does that from the manifest as
        // it is then: one update per table at start.
        for def in tables::all() {
            if storage.shared() {
                if let Some(t) = storage.table(def.name)
                    && !storage.delta_at_manifest(def.name).await?
                {
                    lock(t).manifest_dirty = true;
                }
            } else {
                storage.catch_up_delta(def.name).await?;
            }
            storage.write_manifest_if_dirty(def.name).await?;
        }
        storage.finish_replacement().await?;
        Ok(storage)
    }

    /// Whether `table`'s Delta log is at its manifest's version, as read at open: the
    /// manifest exists and names a version, the table's schema is current, that version's
    /// commit is there and no later one is (a node stopped between its Delta commit and its
    /// manifest update leaves one). Then a start on a shared store has nothing to bring up to
    /// date and takes no commit lock for the table.
    async fn delta_at_manifest(&self, table: &str) -> Result<bool> {
        let Some(t) = self.table(table) else {
            return Ok(true);
        };
        let (version, due, dirty) = {
            let st = lock(t);
            (st.delta_version, st.delta_metadata_due, st.manifest_dirty)
        };
        let Some(v) = version.filter(|_| !due && !dirty) else {
            return Ok(false);
        };
        let Some(next) = v.checked_add(1) else {
            return Ok(false);
        };
        for (version, wanted) in [(v, true), (next, false)] {
            let path = Path::from(crate::delta::commit_path(table, version));
            let there = match self.store.head(&path).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(os_err(&path, e)),
            };
            if there != wanted {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Installs the hook told of every batch that becomes visible (once; later calls are
    /// ignored).
    pub fn set_arrival_hook(&self, hook: ArrivalHook) {
        let _ = self.arrivals.set(Hook(hook));
    }

    /// Whether the store is shared with other nodes (opened with [`Storage::open_shared`],
    /// or with a node id).
    pub fn shared(&self) -> bool {
        self.node.is_some()
    }

    /// This node's id on a shared store.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Whether this node wrote the file at `path` (every file, on a store of its own). Each
    /// node compacts only its own files, and removes only its own unlisted ones.
    fn owned(&self, path: &str) -> bool {
        match &self.node {
            None => true,
            // The whole writer part of the name: node `b` does not own `a-b`'s files.
            Some(n) => path.ends_with(".parquet") && writer_of(path) == n,
        }
    }

    /// Hands over (or, with `None`, takes back) the correlation lease: on a shared store
    /// derived rows are committed only while it is held.
    pub fn set_correlation_lease(&self, lease: Option<Arc<crate::lease::WriterLease>>) {
        *lock(&self.correlation) = lease;
    }

    /// Whether this node may write derived rows now: always on a store of its own; on a
    /// shared store while it holds the correlation lease.
    pub fn correlating(&self) -> bool {
        !self.shared() || lock(&self.correlation).as_ref().is_some_and(|l| l.check())
    }

    /// The object at `rel` (relative to the store's root); `None` when there is none. For
    /// small state objects next to the tables (not table files).
    ///
    /// # Errors
    /// Store failures.
    pub async fn read_object(&self, rel: &str) -> Result<Option<Bytes>> {
        let path = Path::from(rel);
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(|e| os_err(&path, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(os_err(&path, e)),
        }
    }

    /// Writes the object at `rel` whole (see [`Storage::read_object`]).
    ///
    /// # Errors
    /// Store failures.
    pub async fn write_object(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let path = Path::from(rel);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| os_err(&path, e))?;
        self.sync_local(rel).await
    }

    /// Deletes the object at `rel` (none there is fine).
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete_object(&self, rel: &str) -> Result<()> {
        let path = Path::from(rel);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(os_err(&path, e)),
        }
    }

    /// Where this node's replacement journal lives (one per node on a shared store).
    fn journal_path(&self) -> String {
        match &self.node {
            None => REPLACE_JOURNAL.to_string(),
            Some(n) => format!("{}/_replace_journal-{n}.json", layout::TABLES_DIR),
        }
    }

    /// Writes `batch` as one more file of the minute starting at `minute_ns` in the derived
    /// table `table`, not listed yet: [`Storage::commit_minutes`] lists a minute's new files
    /// and drops its earlier ones in one update, so a minute can be written a part at a
    /// time. A file never committed (a recomputation that failed or was stopped, a crash)
    /// is never read: [`Storage::discard`] removes it, or the next start does (an orphan).
    ///
    /// # Errors
    /// An unknown table; encoding or object-store failures.
    pub async fn write_minute_part(
        &self,
        table: &'static str,
        minute_ns: i64,
        batch: RecordBatch,
    ) -> Result<FileEntry> {
        if self.table(table).is_none() {
            return Err(StorageError::UnknownTable(table.to_string()));
        }
        self.write_named(
            table,
            layout::hour_of(minute_ns),
            &minute_tag(minute_ns),
            Rows::of(batch),
        )
        .await
    }

    /// Replaces the minute starting at `minute_ns` of every table of `parts` with the files
    /// [`Storage::write_minute_part`] wrote for it (none: the minute has no rows in that
    /// table now): together or not at all, also across a crash (the replacement is recorded
    /// in a journal, `tables/_replace_journal.json`, before any manifest is written, and a
    /// start after a crash finishes it from there).
    ///
    /// # Errors
    /// An unknown table; object-store failures before the journal is written (nothing
    /// changed), or after it (the next start completes the replacement).
    pub async fn commit_minutes(
        &self,
        minute_ns: i64,
        parts: Vec<(&'static str, Vec<FileEntry>)>,
    ) -> Result<()> {
        let _io = self.io.lock().await;
        if !self.correlating() {
            return Err(StorageError::NotCorrelating);
        }
        let mut files = Vec::with_capacity(parts.len());
        let mut more = Vec::new();
        for (table, entries) in parts {
            if self.table(table).is_none() {
                return Err(StorageError::UnknownTable(table.to_string()));
            }
            let mut entries = entries.into_iter();
            files.push((table.to_string(), entries.next()));
            more.extend(entries.map(|e| (table.to_string(), e)));
        }
        self.replace(Replacement {
            tag: minute_tag(minute_ns),
            files,
            more,
        })
        .await
    }

    /// Removes files written by [`Storage::write_minute_part`] that will not be committed
    /// (best effort: what is left is removed as an orphan at the next start).
    pub async fn discard(&self, files: &[FileEntry]) {
        for f in files {
            let path = Path::from(f.path.as_str());
            if let Err(e) = self.store.delete(&path).await {
                tracing::debug!(path = %f.path, error = %e, "An uncommitted file stays until the next start.");
            }
        }
    }

    /// Records `journal`, applies it, and removes the record (the caller holds `io`).
    async fn replace(&self, journal: Replacement) -> Result<()> {
        let jpath = Path::from(self.journal_path());
        let json = serde_json::to_vec(&journal).map_err(|e| StorageError::Manifest {
            path: self.journal_path(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&jpath, PutPayload::from(json))
            .await
            .map_err(|e| os_err(&jpath, e))?;
        self.sync_local(jpath.as_ref()).await?;
        self.apply_replacement(&journal).await?;
        self.store
            .delete(&jpath)
            .await
            .map_err(|e| os_err(&jpath, e))?;
        Ok(())
    }

    /// Applies a recorded replacement to the tables' file lists and writes their manifests.
    /// Idempotent: applying it twice gives the same lists.
    async fn apply_replacement(&self, r: &Replacement) -> Result<()> {
        let mut old = Vec::new();
        for (table, _) in &r.files {
            let Some(t) = self.table(table) else {
                continue;
            };
            let new: Vec<FileEntry> = r.new_files(table).cloned().collect();
            let mut st = lock(t);
            let (gone, keep): (Vec<FileEntry>, Vec<FileEntry>) =
                st.files.drain(..).partition(|f| {
                    f.path
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with(&r.tag))
                });
            st.files = keep;
            st.files.extend(new.iter().cloned());
            st.replaced_tags.insert(r.tag.clone());
            st.manifest_dirty = true;
            st.data_changed = true;
            old.extend(gone.into_iter().filter(|f| !new.contains(f)));
        }
        for (table, _) in &r.files {
            self.write_manifest_if_dirty(table).await?;
        }
        let at = Instant::now() + self.config.delete_grace;
        lock(&self.pending_delete).extend(old.iter().map(|f| (at, Path::from(f.path.as_str()))));
        Ok(())
    }

    /// Finishes a replacement a crash interrupted (see [`Storage::commit_minutes`]).
    async fn finish_replacement(&self) -> Result<()> {
        let jpath = Path::from(self.journal_path());
        let bytes = match self.store.get(&jpath).await {
            Ok(got) => got.bytes().await.map_err(|e| os_err(&jpath, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(os_err(&jpath, e)),
        };
        match serde_json::from_slice::<Replacement>(&bytes) {
            // On a shared store derived rows are written only under the correlation lease,
            // which a node starting does not hold: its unfinished replacement is dropped (its
            // files are this node's unlisted ones, removed as orphans) and the correlating
            // node recomputes the minute (it looks for recent work at take-over).
            Ok(r) if self.shared() => {
                tracing::warn!(minute = %r.tag, "Dropped a replacement of derived rows that a stop interrupted; the correlating node recomputes the minute.");
            }
            Ok(mut r) => {
                // A journal that outlived its replacement (a lost delete) may name files
                // removed since: list only files that exist, never a table that cannot be read.
                for (table, entry) in &mut r.files {
                    if let Some(f) = entry
                        && !self.exists(table, f).await
                    {
                        *entry = None;
                    }
                }
                let mut more = Vec::with_capacity(r.more.len());
                for (table, f) in std::mem::take(&mut r.more) {
                    if self.exists(&table, &f).await {
                        more.push((table, f));
                    }
                }
                r.more = more;
                tracing::warn!(minute = %r.tag, "Finishing a replacement of derived rows that a stop interrupted.");
                self.apply_replacement(&r).await?;
            }
            // Written whole before any manifest changed: an unreadable journal means the
            // replacement never started; the correlator recomputes the minute anyway.
            Err(e) => {
                tracing::warn!(error = %e, "Ignored an unreadable replacement journal (the replacement had not started).");
            }
        }
        self.store
            .delete(&jpath)
            .await
            .map_err(|e| os_err(&jpath, e))?;
        Ok(())
    }

    /// Whether a file a replacement journal names is still there (a warning when not).
    async fn exists(&self, table: &str, f: &FileEntry) -> bool {
        let path = Path::from(f.path.as_str());
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(table = %table, path = %f.path, "A replacement journal names a file that no longer exists; it is left out.");
                false
            }
            _ => true,
        }
    }

    fn table(&self, name: &str) -> Option<&Mutex<TableState>> {
        self.tables.get(name)
    }

    /// Checks that `size` more bytes of unflushed rows fit in the memory budget.
    ///
    /// # Errors
    /// [`AppendError::Overloaded`] (retryable) when unflushed rows already hold
    /// `max_buffer_bytes`; the flusher is woken.
    ///
    /// On success the bytes are reserved: pass `reserved = true` to [`Storage::push_recent`],
    /// or give them back with [`Storage::release`] if the rows are not stored after all.
    pub fn admit(&self, size: usize) -> Result<(), AppendError> {
        // A node whose lease another process under its id took stores nothing more: it
        // refuses (retryably: a load balancer sends the data to another node).
        if self.lease.get().is_some_and(|l| l.is_done()) {
            return Err(AppendError::Overloaded(
                "this node no longer holds its lease in the table store (another process runs under its node id); send to another node".into(),
            ));
        }
        let max = self.config.max_buffer_bytes;
        let reserved =
            self.buffered_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                    (held + size <= max).then_some(held + size)
                });
        match reserved {
            Ok(_) => Ok(()),
            Err(held) => {
                self.flush_wanted.notify_one();
                Err(AppendError::Overloaded(format!(
                    "{held} bytes of accepted rows are waiting to be written to Parquet"
                )))
            }
        }
    }

    /// Gives back bytes reserved by [`Storage::admit`].
    pub fn release(&self, size: usize) {
        self.buffered_bytes.fetch_sub(size, Ordering::AcqRel);
    }

    /// Adds a batch that is durable in the WAL under `seq` to `table`'s in-memory rows;
    /// visible to queries on return. Batches of one table must arrive in increasing `seq`
    /// order (the WAL writer and replay guarantee it). A batch whose `seq` is already in
    /// Parquet (replay after a crash that followed the flush) is ignored.
    /// `reserved` says whether [`Storage::admit`] already counted the batch's bytes.
    pub fn push_recent(&self, table: &str, batch: RecordBatch, seq: u64, reserved: bool) {
        // The batch as stored (whole microseconds) is what the budget counts from here on, as
        // the flush gives back what the stored batches hold; a reservation made for the
        // batch as received is adjusted to it.
        let received = batch.get_array_memory_size();
        let batch = to_micros(batch);
        let size = batch.get_array_memory_size();
        if reserved && size != received {
            if size > received {
                self.buffered_bytes
                    .fetch_add(size - received, Ordering::AcqRel);
            } else {
                self.release(received - size);
            }
        }
        let Some(t) = self.table(table) else {
            if reserved {
                self.release(size);
            }
            return;
        };
        let rows = {
            let mut st = lock(t);
            if seq <= st.wal_seq {
                drop(st);
                if reserved {
                    self.release(size);
                }
                return;
            }
            st.recent_rows += batch.num_rows();
            st.recent_bytes += size;
            if let Some(hook) = self.arrivals.get()
                && let Some(times) = time_column(&batch)
            {
                (hook.0)(table, times);
            }
            st.recent.push(batch);
            st.recent_seqs.push(seq);
            st.recent_rows
        };
        let total = if reserved {
            self.buffered_bytes.load(Ordering::Relaxed)
        } else {
            self.buffered_bytes.fetch_add(size, Ordering::Relaxed) + size
        };
        ::metrics::gauge!(m::BUFFERED_BYTES).set(total as f64);
        ::metrics::gauge!(m::BUFFERED_ROWS, "table" => table.to_string()).set(rows as f64);
        if rows >= self.config.flush_rows {
            self.flush_wanted.notify_one();
        }
    }

    /// For every table, the highest WAL sequence number whose rows are all in Parquet files
    /// listed in a manifest: WAL entries at or below it are no longer needed.
    pub fn wal_watermarks(&self) -> BTreeMap<&'static str, u64> {
        self.tables
            .iter()
            .map(|(name, t)| (*name, lock(t).durable_wal_seq))
            .collect()
    }

    /// Names of all tables.
    pub fn table_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tables.keys().copied()
    }

    /// Writes `table`'s in-memory rows to Parquet (one file per hour partition) and publishes
    /// them in the manifest. Returns the number of rows written.
    ///
    /// # Errors
    /// Encoding or object-store failures; the rows then stay in memory.
    pub async fn flush_table(&self, table: &'static str) -> Result<usize> {
        let Some(t) = self.table(table) else {
            return Ok(0);
        };
        let _io = self.io.lock().await;
        // A node that lost the store's lease uploads nothing more (its rows stay in memory
        // and in the write-ahead log).
        if self.lease.get().is_some_and(|l| l.is_done()) {
            return Err(StorageError::LeaseLost);
        }
        let (schema, batches) = {
            let st = lock(t);
            (st.schema.clone(), st.recent.clone())
        };
        if batches.is_empty() {
            return self.write_manifest_if_dirty(table).await.map(|_| 0);
        }
        let taken = batches.len();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut written: Vec<FileEntry> = Vec::new();
        // No copy of the buffered rows is made here: each hour's file is encoded straight
        // from the buffered batches, one row group's worth of sorted rows at a time.
        let batches = Arc::new(batches);
        for (hour, part) in rows_by_hour(table, &batches)? {
            let input = Rows {
                schema: schema.clone(),
                batches: Arc::clone(&batches),
                rows: Some(part),
            };
            match self.write_file(table, hour, 0, input).await {
                Ok(entry) => written.push(entry),
                Err(e) => {
                    for f in &written {
                        let _ = self.store.delete(&Path::from(f.path.as_str())).await;
                    }
                    ::metrics::counter!(m::FLUSH_ERRORS, "table" => table.to_string()).increment(1);
                    return Err(e);
                }
            }
        }
        let now = Instant::now();
        let freed = {
            let mut st = lock(t);
            let drained: Vec<RecordBatch> = st.recent.drain(..taken).collect();
            let flushed_seq = st.recent_seqs.drain(..taken).max().unwrap_or(0);
            st.wal_seq = st.wal_seq.max(flushed_seq);
            let freed: usize = drained.iter().map(|b| b.get_array_memory_size()).sum();
            st.recent_rows = st
                .recent_rows
                .saturating_sub(drained.iter().map(|b| b.num_rows()).sum::<usize>());
            st.recent_bytes = st.recent_bytes.saturating_sub(freed);
            for f in &written {
                st.last_write.insert(partition_of(&f.path).to_string(), now);
            }
            st.files.extend(written.iter().cloned());
            st.manifest_dirty = true;
            st.data_changed = true;
            ::metrics::gauge!(m::BUFFERED_ROWS, "table" => table.to_string())
                .set(st.recent_rows as f64);
            freed
        };
        let left = self.buffered_bytes.fetch_sub(freed, Ordering::Relaxed) - freed;
        ::metrics::gauge!(m::BUFFERED_BYTES).set(left as f64);
        ::metrics::counter!(m::FLUSHES, "table" => table.to_string())
            .increment(written.len() as u64);
        self.write_manifest_if_dirty(table).await?;
        Ok(rows)
    }

    /// Flushes every table; returns the first error after trying all.
    ///
    /// # Errors
    /// The first flush failure.
    pub async fn flush_all(&self) -> Result<()> {
        let mut first = None;
        for name in self.tables.keys() {
            if let Err(e) = self.flush_table(name).await {
                tracing::error!(table = name, error = %e, "Flush failed; rows stay in memory.");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn write_file(
        &self,
        table: &str,
        hour: i64,
        level: u32,
        input: Rows,
    ) -> Result<FileEntry> {
        let mut e = self
            .write_named(table, hour, &format!("L{level}-"), input)
            .await?;
        e.level = level;
        Ok(e)
    }

    /// Writes `input` as a new file `<prefix><stamp>-<seq>.parquet` in the partition of the
    /// hour starting at `hour` (seconds).
    async fn write_named(
        &self,
        table: &str,
        hour: i64,
        prefix: &str,
        input: Rows,
    ) -> Result<FileEntry> {
        let level = 0;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // On a shared store the node's id ends the name: no two nodes write the same path,
        // and each knows its own files.
        let node = self
            .node
            .as_deref()
            .map(|n| format!("-{n}"))
            .unwrap_or_default();
        let path = format!(
            "{}/{prefix}{stamp:020}-{seq:06}{node}.parquet",
            layout::partition_dir(table, hour)
        );
        let cfg = self.config.clone();
        let table_name = table.to_string();
        let p = path.clone();
        let (bytes, rows, min, max) =
            tokio::task::spawn_blocking(move || encode_rows(&table_name, &p, &input, &cfg))
                .await
                .map_err(|e| StorageError::Join(e.to_string()))??;
        let size = bytes.len() as u64;
        let opath = Path::from(path.as_str());
        self.store
            .put(&opath, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| os_err(&opath, e))?;
        self.sync_local(&path).await?;
        ::metrics::counter!(m::PARQUET_BYTES, "table" => table.to_string()).increment(size);
        Ok(FileEntry {
            path,
            size,
            rows,
            min_time_ns: min,
            max_time_ns: max,
            level,
        })
    }

    /// fsyncs a file written through the local store, and its directory (so the rename that
    /// published it is durable too).
    async fn sync_local(&self, rel: &str) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = root.join(rel);
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?;
        res.map_err(|e| StorageError::ObjectStore {
            path: rel.to_string(),
            source: object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            },
        })
    }

    async fn write_manifest_if_dirty(&self, table: &str) -> Result<()> {
        if self.shared() {
            return self.commit_shared(table).await;
        }
        let Some(t) = self.table(table) else {
            return Ok(());
        };
        let (mut manifest, published, base, metadata_due, off, data_change) = {
            let st = lock(t);
            if !st.manifest_dirty {
                return Ok(());
            }
            (
                Manifest {
                    version: MANIFEST_VERSION,
                    table: table.to_string(),
                    schema_version: SCHEMA_VERSION,
                    wal_seq: st.wal_seq,
                    wal_node: self.node.clone(),
                    other_wal_seqs: st.other_wal_seqs.clone(),
                    files: st.files.clone(),
                    delta_version: st.delta_version,
                },
                st.published.clone(),
                st.delta_version,
                st.delta_metadata_due,
                st.delta_off,
                st.data_changed,
            )
        };
        if off {
            // The log was not readable at start: the next start reads all of it again.
            manifest.delta_version = None;
        } else {
            // The log first, then the manifest: a Delta reader never sees a file seam's
            // manifest does not list for longer than one manifest write.
            let (adds, removes) = crate::delta::diff(&published, &manifest.files);
            if base.is_none() || metadata_due || !adds.is_empty() || !removes.is_empty() {
                let v = self
                    .commit_delta(
                        table,
                        base,
                        published,
                        &manifest.files,
                        metadata_due,
                        data_change,
                        manifest.wal_seq,
                    )
                    .await?;
                let mut st = lock(t);
                st.delta_version = Some(v);
                st.delta_metadata_due = false;
                st.data_changed = false;
                st.published = manifest
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.clone()))
                    .collect();
                manifest.delta_version = Some(v);
            }
        }
        let count = manifest.files.len();
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StorageError::Manifest {
            path: layout::manifest_path(table),
            reason: e.to_string(),
        })?;
        let path = Path::from(layout::manifest_path(table));
        // A store of one's own (a shared one goes through `commit_shared`): overwritten.
        let written = self
            .store
            .put_opts(
                &path,
                PutPayload::from(json),
                PutOptions::from(PutMode::Overwrite),
            )
            .await
            .map_err(|e| os_err(&path, e))?;
        self.sync_local(path.as_ref()).await?;
        let mut st = lock(t);
        st.manifest_tag = Some(UpdateVersion {
            e_tag: written.e_tag,
            version: written.version,
        });
        // Only clear the flag if nothing changed meanwhile (the I/O lock makes that certain).
        st.manifest_dirty = false;
        st.durable_wal_seq = st.durable_wal_seq.max(manifest.wal_seq);
        drop(st);
        ::metrics::gauge!(m::TABLE_FILES, "table" => table.to_string()).set(count as f64);
        Ok(())
    }

    /// [`Storage::write_manifest_if_dirty`] on a shared store: this node's change since the
    /// manifest it last read or wrote (files it added, files it removed) is applied to the
    /// manifest as it is in the store now, under the table's commit lock: the Delta log is
    /// read from the manifest's version on and a commit makes it list the new files, then
    /// the manifest is replaced if unchanged since it was read. Other nodes' files and
    /// write-ahead-log watermarks are kept; this node's watermark is its own entry.
    async fn commit_shared(&self, table: &str) -> Result<()> {
        let Some(t) = self.table(table) else {
            return Ok(());
        };
        let node = self.node.clone().unwrap_or_default();
        let (adds, removes, tags, wal_seq, data_change) = {
            let st = lock(t);
            if !st.manifest_dirty {
                return Ok(());
            }
            if self.lease.get().is_some_and(|l| !l.check()) {
                return Err(StorageError::LeaseLost);
            }
            let adds: Vec<FileEntry> = st
                .files
                .iter()
                .filter(|f| !st.base.contains(&f.path))
                .cloned()
                .collect();
            let kept: std::collections::HashSet<&str> =
                st.files.iter().map(|f| f.path.as_str()).collect();
            let removes: std::collections::HashSet<String> = st
                .base
                .iter()
                .filter(|p| !kept.contains(p.as_str()))
                .cloned()
                .collect();
            (
                adds,
                removes,
                st.replaced_tags.clone(),
                st.wal_seq,
                st.data_changed,
            )
        };
        if !tags.is_empty() && !self.correlating() {
            return self.drop_derived_change(table).await;
        }
        let asked = Instant::now();
        let commit_lock = crate::lease::WriterLease::acquire_polling(
            Arc::clone(&self.store),
            &crate::lease::commit_lock_path(table),
            &node,
            COMMIT_LOCK_TTL.max(self.config.lease_ttl),
            COMMIT_LOCK_WAIT,
            Duration::from_millis(50),
        )
        .await
        .map_err(|source| StorageError::Lock {
            table: table.to_string(),
            source,
        })?;
        let waited = asked.elapsed().as_secs_f64();
        let result = self
            .commit_locked(table, &node, adds, &removes, &tags, wal_seq, data_change)
            .await;
        commit_lock.release().await;
        ::metrics::counter!(m::STORE_COMMITS, "table" => table.to_string()).increment(1);
        ::metrics::gauge!(m::STORE_COMMIT_LOCK_WAIT_SECONDS, "table" => table.to_string())
            .increment(waited);
        ::metrics::gauge!(m::STORE_COMMIT_SECONDS, "table" => table.to_string())
            .increment(asked.elapsed().as_secs_f64());
        result
    }

    /// A derived table's change that can no longer be committed (the correlation lease
    /// moved): forgotten, the table taken back to its manifest in the store; the files it
    /// wrote go after the grace (the new correlating node recomputes those minutes).
    async fn drop_derived_change(&self, table: &str) -> Result<()> {
        let Some(t) = self.table(table) else {
            return Ok(());
        };
        let latest = load_manifest(&self.store, table).await?;
        let dropped: Vec<FileEntry> = {
            let mut st = lock(t);
            let dropped = st
                .files
                .iter()
                .filter(|f| !st.base.contains(&f.path) && self.owned(&f.path))
                .cloned()
                .collect();
            st.base = latest.files.iter().map(|f| f.path.clone()).collect();
            st.files = latest.files;
            st.manifest_tag = latest.tag;
            st.delta_version = latest.delta_version;
            st.replaced_tags.clear();
            st.manifest_dirty = false;
            st.data_changed = false;
            dropped
        };
        tracing::warn!(
            table,
            files = dropped.len(),
            "Dropped derived rows written after this node stopped correlating."
        );
        let at = Instant::now() + self.config.delete_grace;
        lock(&self.pending_delete)
            .extend(dropped.iter().map(|f| (at, Path::from(f.path.as_str()))));
        Ok(())
    }

    /// The part of [`Storage::commit_shared`] made under the table's commit lock.
    #[allow(clippy::too_many_arguments)]
    async fn commit_locked(
        &self,
        table: &str,
        node: &str,
        adds: Vec<FileEntry>,
        removes: &std::collections::HashSet<String>,
        tags: &std::collections::BTreeSet<String>,
        wal_seq: u64,
        data_change: bool,
    ) -> Result<()> {
        let Some(t) = self.table(table) else {
            return Ok(());
        };
        let latest = load_manifest(&self.store, table).await?;
        let gone = removes
            .iter()
            .filter(|p| !latest.files.iter().any(|f| &f.path == *p))
            .count();
        if gone > 0 {
            tracing::debug!(
                table,
                files = gone,
                "Files this node removed were already removed by another node."
            );
        }
        // A replaced minute keeps only the files this change adds for it.
        let added_paths: std::collections::HashSet<&str> =
            adds.iter().map(|f| f.path.as_str()).collect();
        let replaced = |path: &str| {
            let name = path.rsplit('/').next().unwrap_or(path);
            !added_paths.contains(path) && tags.iter().any(|t| name.starts_with(t.as_str()))
        };
        let mut files: Vec<FileEntry> = latest
            .files
            .iter()
            .filter(|f| !removes.contains(&f.path) && !replaced(&f.path))
            .cloned()
            .collect();
        let mut present: std::collections::HashSet<String> =
            files.iter().map(|f| f.path.clone()).collect();
        let added = !adds.is_empty();
        for f in adds {
            if present.insert(f.path.clone()) {
                files.push(f);
            }
        }
        // Watermarks: every other node's as the manifest has them, this node's own.
        let (recorded, others) = split_watermarks(
            latest.wal_node.as_deref(),
            latest.wal_seq,
            latest.other_wal_seqs.clone(),
            Some(node),
        );
        // The Delta log first (as on a store of one's own): from the manifest's version on.
        let mut delta_version = latest.delta_version;
        let mut committed = false;
        match self
            .read_delta_from(table, latest.delta_version, &latest.files)
            .await
        {
            Ok(snap) => {
                let (published, base, metadata) = match snap {
                    None => (BTreeMap::new(), None, true),
                    Some(s) => {
                        let metadata = (s.schema_string.is_none() && s.version == Some(0))
                            || latest.schema_version < SCHEMA_VERSION;
                        (s.files, s.version, metadata)
                    }
                };
                let (a, r) = crate::delta::diff(&published, &files);
                if base.is_none() || metadata || !a.is_empty() || !r.is_empty() {
                    let v = self
                        .commit_delta(
                            table,
                            base,
                            published,
                            &files,
                            metadata,
                            data_change,
                            wal_seq,
                        )
                        .await?;
                    delta_version = Some(v);
                    committed = true;
                } else {
                    delta_version = base;
                }
            }
            Err(e @ StorageError::Delta { .. }) => {
                tracing::error!(table, error = %e, "The table's Delta log cannot be read; it is not updated (seam's manifest is).");
            }
            Err(e) => return Err(e),
        }
        let unchanged = !added
            && removes.is_empty()
            && tags.is_empty()
            && !committed
            && recorded == Some(wal_seq)
            && delta_version == latest.delta_version
            && latest.existed;
        let tag = if unchanged {
            latest.tag.clone()
        } else {
            let manifest = Manifest {
                version: MANIFEST_VERSION,
                table: table.to_string(),
                schema_version: SCHEMA_VERSION,
                wal_seq,
                wal_node: Some(node.to_string()),
                other_wal_seqs: others.clone(),
                files: files.clone(),
                delta_version,
            };
            let json =
                serde_json::to_vec_pretty(&manifest).map_err(|e| StorageError::Manifest {
                    path: layout::manifest_path(table),
                    reason: e.to_string(),
                })?;
            let path = Path::from(layout::manifest_path(table));
            let mode = match &latest.tag {
                Some(tag) => PutMode::Update(tag.clone()),
                None => PutMode::Create,
            };
            if self.lease.get().is_some_and(|l| !l.check()) {
                return Err(StorageError::LeaseLost);
            }
            if !tags.is_empty() && !self.correlating() {
                return Err(StorageError::NotCorrelating);
            }
            match self
                .store
                .put_opts(&path, PutPayload::from(json), PutOptions::from(mode))
                .await
            {
                Ok(r) => Some(UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                }),
                // The commit lock outlived its time to live and another node updated the
                // table meanwhile: nothing of this change is lost, it is applied again.
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => {
                    ::metrics::counter!(m::STORE_COMMIT_CONFLICTS, "table" => table.to_string())
                        .increment(1);
                    return Err(StorageError::Conflict {
                        table: table.to_string(),
                    });
                }
                Err(e) => return Err(os_err(&path, e)),
            }
        };
        let foreign = {
            let mut st = lock(t);
            let foreign = unseen_rows(&st.files, &files, |p| self.owned(p));
            st.base = files.iter().map(|f| f.path.clone()).collect();
            st.replaced_tags.clear();
            st.published = files.iter().map(|f| (f.path.clone(), f.clone())).collect();
            st.files = files;
            st.manifest_tag = tag;
            st.manifest_dirty = false;
            st.data_changed = false;
            st.delta_metadata_due = false;
            st.delta_version = delta_version;
            st.other_wal_seqs = others;
            st.durable_wal_seq = st.durable_wal_seq.max(wal_seq);
            ::metrics::gauge!(m::TABLE_FILES, "table" => table.to_string())
                .set(st.files.len() as f64);
            foreign
        };
        self.announce(table, &foreign);
        Ok(())
    }

    /// Tells the arrival hook of rows other nodes stored that this node had not seen
    /// ([`unseen_rows`]): the minutes each of their files spans.
    fn announce(&self, table: &str, files: &[FileEntry]) {
        let Some(hook) = self.arrivals.get() else {
            return;
        };
        const MINUTE: i64 = 60_000_000_000;
        for f in files {
            // A file holds one hour partition: at most about sixty minutes.
            let first = f.min_time_ns.div_euclid(MINUTE).saturating_mul(MINUTE);
            let minutes: Vec<i64> = std::iter::successors(Some(first), |m| m.checked_add(MINUTE))
                .take_while(|m| *m <= f.max_time_ns)
                .take(120)
                .collect();
            (hook.0)(table, &TimestampNanosecondArray::from(minutes));
        }
    }

    /// On a shared store: reads every table's manifest again when it changed (another
    /// node flushed, compacted or removed files), so that queries see every node's flushed
    /// rows; a table with a change of this node's own waiting is left to that update, which
    /// reads it anyway. Returns how many tables changed.
    ///
    /// # Errors
    /// Store failures; an unreadable manifest.
    pub async fn refresh(&self) -> Result<usize> {
        if !self.shared() {
            return Ok(0);
        }
        let started = Instant::now();
        let result = self.refresh_tables().await;
        ::metrics::counter!(m::STORE_REFRESHES).increment(1);
        ::metrics::gauge!(m::STORE_REFRESH_SECONDS).increment(started.elapsed().as_secs_f64());
        result
    }

    /// The pass of [`Storage::refresh`] over every table.
    async fn refresh_tables(&self) -> Result<usize> {
        let mut changed = 0;
        // The manifests are read without the I/O lock (flushes go on meanwhile); one is
        // taken only if the table did not change here since (else the next refresh does).
        for (name, t) in &self.tables {
            let (dirty, tag) = {
                let st = lock(t);
                (st.manifest_dirty, st.manifest_tag.clone())
            };
            if dirty {
                continue;
            }
            let path = Path::from(layout::manifest_path(name));
            let opts = object_store::GetOptions {
                if_none_match: tag.as_ref().and_then(|t| t.e_tag.clone()),
                ..Default::default()
            };
            let got = match self.store.get_opts(&path, opts).await {
                Ok(got) => got,
                Err(
                    object_store::Error::NotModified { .. } | object_store::Error::NotFound { .. },
                ) => continue,
                Err(e) => return Err(os_err(&path, e)),
            };
            let now_tag = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            if tag.as_ref() == Some(&now_tag) && now_tag.e_tag.is_some() {
                continue;
            }
            let bytes = got.bytes().await.map_err(|e| os_err(&path, e))?;
            let m = parse_manifest(&path, &bytes)?;
            let node = self.node.clone().unwrap_or_default();
            let _io = self.io.lock().await;
            let foreign = {
                let mut st = lock(t);
                if st.manifest_dirty || st.manifest_tag != tag {
                    continue;
                }
                let foreign = unseen_rows(&st.files, &m.files, |p| self.owned(p));
                let (_, others) = split_watermarks(
                    m.wal_node.as_deref(),
                    m.wal_seq,
                    m.other_wal_seqs,
                    Some(&node),
                );
                st.other_wal_seqs = others;
                st.base = m.files.iter().map(|f| f.path.clone()).collect();
                st.published = m
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.clone()))
                    .collect();
                st.files = m.files;
                st.delta_version = m.delta_version;
                st.manifest_tag = Some(now_tag);
                ::metrics::gauge!(m::TABLE_FILES, "table" => name.to_string())
                    .set(st.files.len() as f64);
                foreign
            };
            ::metrics::counter!(m::STORE_REFRESHED_MANIFESTS, "table" => name.to_string())
                .increment(1);
            self.announce(name, &foreign);
            changed += 1;
        }
        Ok(changed)
    }

    /// What `table`'s Delta log lists at its latest version, from `base` (a version known
    /// to list exactly `files`) on, reading the commits after it one by one; the whole log
    /// when there is no base. `None` when there is no log.
    async fn read_delta_from(
        &self,
        table: &str,
        base: Option<u64>,
        files: &[FileEntry],
    ) -> Result<Option<crate::delta::Snapshot>> {
        use crate::delta;
        let derr = |source| StorageError::Delta {
            table: table.to_string(),
            source,
        };
        let Some(v0) = base else {
            return self.read_delta_all(table).await;
        };
        // The base version must still be there (a log removed or cut short is read whole).
        let base_path = Path::from(delta::commit_path(table, v0));
        match self.store.head(&base_path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return self.read_delta_all(table).await,
            Err(e) => return Err(os_err(&base_path, e)),
        }
        let mut snap = delta::Snapshot {
            version: Some(v0),
            files: files.iter().map(|f| (f.path.clone(), f.clone())).collect(),
            ..delta::Snapshot::default()
        };
        let mut v = v0;
        loop {
            let Some(next) = v.checked_add(1) else {
                return Err(derr(delta::DeltaError::VersionOverflow));
            };
            let path = Path::from(delta::commit_path(table, next));
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(os_err(&path, e)),
            };
            let bytes = got.bytes().await.map_err(|e| os_err(&path, e))?;
            snap.apply(table, next, &bytes).map_err(derr)?;
            v = next;
        }
        // A schema is known from the manifest's version on only if a later commit carried
        // one; version 0 always does.
        if snap.schema_string.is_none() {
            snap.schema_string = Some(String::new());
        }
        Ok(Some(snap))
    }

    /// Commits the next version of `table`'s Delta log so that it lists exactly `current`,
    /// given that version `base` lists `published`: `remove`s and `add`s
    /// (`dataChange: data_change`; false when only compactions moved rows between files), the
    /// schema when `metadata` or when the log is new, and the WAL watermark as this writer's
    /// `txn`. Each version is created only if absent: when it is taken, it is read; if it is
    /// this very commit (an answer lost after the write), that is the version; otherwise it
    /// is applied to what the log lists and the difference computed again for the next
    /// version. Returns the version written.
    #[allow(clippy::too_many_arguments)]
    async fn commit_delta(
        &self,
        table: &str,
        base: Option<u64>,
        published: BTreeMap<String, FileEntry>,
        current: &[FileEntry],
        metadata: bool,
        data_change: bool,
        wal_seq: u64,
    ) -> Result<u64> {
        use crate::delta;
        let derr = |source| StorageError::Delta {
            table: table.to_string(),
            source,
        };
        let schema = self
            .table(table)
            .map(|t| lock(t).schema.clone())
            .ok_or_else(|| StorageError::UnknownTable(table.to_string()))?;
        let mut snap = delta::Snapshot {
            version: base,
            files: published,
            ..delta::Snapshot::default()
        };
        let mut version = base.map_or(0, |v| v.saturating_add(1));
        // A commit id in commitInfo tells this writer's own commit from any other.
        let commit_id = crate::key_of(&[table, &crate::now_ns().to_string(), &wal_seq.to_string()]);
        for _ in 0..1_000 {
            let now_ms = crate::now_ns().div_euclid(1_000_000);
            let (adds, removes) = delta::diff(&snap.files, current);
            let operation = if version == 0 {
                "CREATE TABLE"
            } else if !data_change {
                "OPTIMIZE"
            } else if adds.is_empty() && !removes.is_empty() {
                "DELETE"
            } else {
                "WRITE"
            };
            let mut info = delta::commit_info(operation, now_ms, removes.is_empty());
            if let Some(obj) = info.get_mut("commitInfo").and_then(|v| v.as_object_mut()) {
                obj.insert(
                    "seam.commitId".into(),
                    serde_json::Value::from(commit_id.clone()),
                );
            }
            let mut actions = vec![info];
            if version == 0 {
                actions.push(delta::protocol());
            }
            if version == 0 || metadata {
                let id = delta_table_id(table);
                actions.push(delta::metadata(&id, &file_schema(&schema), now_ms).map_err(derr)?);
            }
            for f in &removes {
                actions.push(delta::remove(f, table, now_ms, data_change).map_err(derr)?);
            }
            for f in &adds {
                actions.push(delta::add(f, table, now_ms, data_change).map_err(derr)?);
            }
            actions.push(delta::txn(
                self.node.as_deref().unwrap_or(DELTA_APP_ID),
                wal_seq,
                now_ms,
            ));
            let body = Bytes::from(delta::encode_commit(&actions));
            let path = Path::from(delta::commit_path(table, version));
            let put = self
                .store
                .put_opts(
                    &path,
                    PutPayload::from_bytes(body),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => {
                    self.sync_local(path.as_ref()).await?;
                    ::metrics::counter!(m::DELTA_COMMITS, "table" => table.to_string())
                        .increment(1);
                    if version > 0 && version.is_multiple_of(delta::CHECKPOINT_INTERVAL) {
                        let mut txns = snap.txns.clone();
                        if let Some(t) = self.table(table) {
                            txns.extend(lock(t).other_wal_seqs.clone());
                        }
                        txns.retain(|app, _| !app.is_empty());
                        txns.insert(
                            self.node.as_deref().unwrap_or(DELTA_APP_ID).to_string(),
                            wal_seq,
                        );
                        self.write_checkpoint(table, version, &schema, current, &txns, now_ms)
                            .await;
                    }
                    return Ok(version);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let taken = self.get_bytes(&path).await?;
                    if String::from_utf8_lossy(&taken).contains(&commit_id) {
                        return Ok(version);
                    }
                    snap.apply(table, version, &taken).map_err(derr)?;
                    version = version
                        .checked_add(1)
                        .ok_or_else(|| derr(delta::DeltaError::VersionOverflow))?;
                }
                Err(e) => return Err(os_err(&path, e)),
            }
        }
        Err(derr(delta::DeltaError::VersionOverflow))
    }

    /// Writes the checkpoint of `table` at `version` (which lists exactly `files`, with the
    /// writers' watermarks `txns`) and points `_last_checkpoint` at it, then removes log
    /// entries past the retention ([`Storage::clean_delta_log`]). Best effort: readers
    /// without it replay the JSON commits since the previous checkpoint; a failure is logged.
    async fn write_checkpoint(
        &self,
        table: &str,
        version: u64,
        schema: &SchemaRef,
        files: &[FileEntry],
        txns: &BTreeMap<String, u64>,
        now_ms: i64,
    ) {
        use crate::delta;
        let actions = (|| -> std::result::Result<Vec<serde_json::Value>, delta::DeltaError> {
            let mut actions = vec![
                delta::protocol(),
                delta::metadata(&delta_table_id(table), &file_schema(schema), now_ms)?,
            ];
            for (app, v) in txns {
                actions.push(delta::txn(app, *v, now_ms));
            }
            for f in files {
                actions.push(delta::add(f, table, now_ms, false)?);
            }
            Ok(actions)
        })();
        let bytes = match actions.and_then(|a| Ok((delta::encode_checkpoint(&a)?, a.len()))) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(table, version, error = %e, "Could not encode a Delta checkpoint; readers replay the commits.");
                return;
            }
        };
        let (parquet, size) = bytes;
        let path = Path::from(delta::checkpoint_path(table, version));
        let last = Path::from(delta::last_checkpoint_path(table));
        let result = async {
            self.store
                .put(&path, PutPayload::from(parquet))
                .await
                .map_err(|e| os_err(&path, e))?;
            self.sync_local(path.as_ref()).await?;
            self.store
                .put(
                    &last,
                    PutPayload::from(delta::last_checkpoint(version, size)),
                )
                .await
                .map_err(|e| os_err(&last, e))?;
            self.sync_local(last.as_ref()).await
        }
        .await;
        match result {
            Ok(()) => {
                ::metrics::counter!(m::DELTA_CHECKPOINTS, "table" => table.to_string())
                    .increment(1);
                self.clean_delta_log(table, version).await;
            }
            Err(e) => {
                tracing::warn!(table, version, error = %e, "Could not write a Delta checkpoint; readers replay the commits.");
            }
        }
    }

    /// Deletes old entries of `table`'s Delta log, as Delta's own log cleanup does: the
    /// newest checkpoint that is older than `storage.delta_log_retention` and at least one
    /// checkpoint interval before `version` (the one just written) is found, and every entry
    /// (JSON commit, checkpoint) before it is deleted; that checkpoint and everything after
    /// it stay, so every version within the retention can still be rebuilt, and a reader that
    /// read `_last_checkpoint` a moment ago still finds its files. At most
    /// [`MAX_LOG_DELETES`] per pass (a long log left by an earlier version goes over several
    /// checkpoints, never holding a flush up for long). Best effort: a failure is logged and
    /// the entries wait for the next checkpoint.
    async fn clean_delta_log(&self, table: &str, version: u64) {
        use crate::delta;
        let limit = version.saturating_sub(delta::CHECKPOINT_INTERVAL);
        let retention = chrono::Duration::from_std(self.config.delta_log_retention)
            .unwrap_or(chrono::Duration::MAX);
        let Some(cutoff) = chrono::Utc::now().checked_sub_signed(retention) else {
            return;
        };
        // The entries older than the cutoff and at most `limit`: on an object store, which
        // lists in name (= version) order, the listing stops at the first newer one.
        let ordered = self.local_root.is_none();
        let dir = Path::from(delta::log_dir(table));
        let mut listing = self.store.list(Some(&dir));
        let mut old: Vec<(u64, bool, Path)> = Vec::new();
        let mut last_version = None;
        loop {
            let meta = match listing.try_next().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(table, error = %e, "Could not list the Delta log to remove old entries; trying again at the next checkpoint.");
                    return;
                }
            };
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let Some(v) = delta::entry_version(name) else {
                continue;
            };
            // A listing out of order is read whole.
            let in_order = ordered && last_version.is_none_or(|l| v >= l);
            last_version = Some(v);
            if v > limit || meta.last_modified >= cutoff {
                if in_order {
                    break;
                }
                continue;
            }
            old.push((v, name.ends_with(".checkpoint.parquet"), meta.location));
        }
        let Some(keep) = old
            .iter()
            .filter(|(_, cp, _)| *cp)
            .map(|(v, _, _)| *v)
            .max()
        else {
            return;
        };
        old.retain(|(v, _, _)| *v < keep);
        old.sort_by_key(|(v, _, _)| *v);
        let mut removed = 0u64;
        for (_, _, path) in old.iter().take(MAX_LOG_DELETES) {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => {
                    tracing::warn!(table, error = %e, "Could not remove an old Delta log entry; trying again at the next checkpoint.");
                    break;
                }
            }
        }
        if removed > 0 {
            ::metrics::counter!(m::DELTA_LOG_REMOVED, "table" => table.to_string())
                .increment(removed);
            tracing::debug!(
                table,
                removed,
                before = keep,
                "Old Delta log entries removed."
            );
        }
    }

    /// Reads `table`'s Delta log past the version its manifest names (all of it when the
    /// manifest names none) and records what it lists; marks the manifest dirty when that
    /// differs from the manifest's files, so that the next write commits the difference.
    /// A log that cannot be read turns Delta commits off for the table until the next start
    /// (logged): seam's own manifest stays the truth and ingest goes on.
    async fn catch_up_delta(&self, table: &str) -> Result<()> {
        let Some(t) = self.table(table) else {
            return Ok(());
        };
        match self.read_delta(table).await {
            Ok(None) => {
                // No log: version 0 lists every file.
                let mut st = lock(t);
                st.delta_version = None;
                st.published.clear();
                st.manifest_dirty = true;
                st.data_changed = true;
            }
            Ok(Some(snap)) => {
                let mut st = lock(t);
                let same = snap.files.len() == st.files.len()
                    && st.files.iter().all(|f| snap.files.contains_key(&f.path));
                if !same {
                    st.manifest_dirty = true;
                    st.data_changed = true;
                }
                if snap.schema_string.is_none() && snap.version == Some(0) {
                    st.delta_metadata_due = true;
                }
                st.delta_version = snap.version;
                st.published = snap.files;
            }
            // A log seam cannot follow (a commit it cannot parse, a protocol another engine
            // raised): Delta commits stop for the table; the store failing stops the start
            // like any manifest read would.
            Err(e @ StorageError::Delta { .. }) => {
                tracing::error!(table, error = %e, "The table's Delta log cannot be read; it is not updated until the next start (seam's manifest is unaffected).");
                let mut st = lock(t);
                st.delta_off = true;
                st.delta_version = None;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// What `table`'s Delta log lists at its latest version, starting from the manifest's
    /// files at the manifest's version when it names one; `None` when there is no log.
    async fn read_delta(&self, table: &str) -> Result<Option<crate::delta::Snapshot>> {
        let Some(t) = self.table(table) else {
            return Ok(None);
        };
        let (files, base) = {
            let st = lock(t);
            (st.files.clone(), st.delta_version)
        };
        self.read_delta_from(table, base, &files).await
    }

    /// The whole object at `path`.
    async fn get_bytes(&self, path: &Path) -> Result<Bytes> {
        self.store
            .get(path)
            .await
            .map_err(|e| os_err(path, e))?
            .bytes()
            .await
            .map_err(|e| os_err(path, e))
    }

    /// What `table`'s whole Delta log lists at its latest version: every commit read from
    /// version 0, or, when the first commits were removed (log cleanup), from the newest
    /// checkpoint on; `None` when there is no log.
    async fn read_delta_all(&self, table: &str) -> Result<Option<crate::delta::Snapshot>> {
        use crate::delta;
        let derr = |source| StorageError::Delta {
            table: table.to_string(),
            source,
        };
        let dir = Path::from(delta::log_dir(table));
        let names: Vec<String> = self
            .store
            .list(Some(&dir))
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| os_err(&dir, e))?
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect();
        let commits: std::collections::BTreeSet<u64> =
            names.iter().filter_map(|n| delta::version_of(n)).collect();
        let Some(&latest) = commits.last() else {
            return Ok(None);
        };
        let mut snap = delta::Snapshot::default();
        let mut from = 0;
        if !commits.contains(&0) {
            // Cleaned: start at the newest checkpoint from which every later commit is there.
            let start = names
                .iter()
                .filter(|n| n.ends_with(".checkpoint.parquet"))
                .filter_map(|n| delta::entry_version(n))
                .filter(|&c| {
                    c > 0
                        && c <= latest
                        && (c.saturating_add(1)..=latest).all(|v| commits.contains(&v))
                })
                .max();
            let Some(c) = start else {
                return Err(derr(delta::DeltaError::OutOfOrder {
                    version: latest,
                    applied: None,
                }));
            };
            let path = Path::from(delta::checkpoint_path(table, c));
            let bytes = self.get_bytes(&path).await?;
            let actions = delta::decode_checkpoint(bytes).map_err(derr)?;
            snap.version = Some(c - 1);
            snap.apply(table, c, &actions).map_err(derr)?;
            from = c.saturating_add(1);
        }
        for v in from..=latest {
            let path = Path::from(delta::commit_path(table, v));
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(derr(delta::DeltaError::OutOfOrder {
                        version: latest,
                        applied: snap.version,
                    }));
                }
                Err(e) => return Err(os_err(&path, e)),
            };
            let bytes = got.bytes().await.map_err(|e| os_err(&path, e))?;
            snap.apply(table, v, &bytes).map_err(derr)?;
        }
        Ok(Some(snap))
    }

    /// Merges small files of `table` (see the module docs). Returns the number of merges.
    ///
    /// # Errors
    /// Encoding or object-store failures; the old files then stay listed.
    pub async fn compact_table(&self, table: &'static str) -> Result<usize> {
        let Some(t) = self.table(table) else {
            return Ok(0);
        };
        if tables::is_derived(table) {
            // One file per minute bucket, replaced whole by the correlator.
            return Ok(0);
        }
        let _io = self.io.lock().await;
        let (schema, plans) = {
            let st = lock(t);
            (
                st.schema.clone(),
                plan_compaction(&st, &self.config, |p| self.owned(p)),
            )
        };
        let mut merged = 0;
        for (inputs, level) in plans {
            let mut batches = Vec::new();
            for f in &inputs {
                batches.extend(self.read_file(&f.path, &schema).await?);
            }
            let hour = layout::hour_of(inputs.iter().map(|f| f.min_time_ns).min().unwrap_or(0));
            let input = Rows {
                schema: schema.clone(),
                batches: Arc::new(batches),
                rows: None,
            };
            let entry = self.write_file(table, hour, level, input).await?;
            {
                let mut st = lock(t);
                st.files
                    .retain(|f| !inputs.iter().any(|i| i.path == f.path));
                st.files.push(entry);
                st.manifest_dirty = true;
            }
            self.write_manifest_if_dirty(table).await?;
            let at = Instant::now() + self.config.delete_grace;
            lock(&self.pending_delete)
                .extend(inputs.iter().map(|f| (at, Path::from(f.path.as_str()))));
            ::metrics::counter!(m::COMPACTIONS, "table" => table.to_string()).increment(1);
            merged += 1;
        }
        Ok(merged)
    }

    async fn read_file(&self, path: &str, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        let opath = Path::from(path);
        let bytes: Bytes = self
            .store
            .get(&opath)
            .await
            .map_err(|e| os_err(&opath, e))?
            .bytes()
            .await
            .map_err(|e| os_err(&opath, e))?;
        let schema = schema.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || {
            let perr = |source| StorageError::Parquet {
                path: path.clone(),
                source,
            };
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(perr)?
                .build()
                .map_err(perr)?;
            let mut out = Vec::new();
            for b in reader {
                let b = b.map_err(|source| StorageError::Arrow {
                    table: path.clone(),
                    source,
                })?;
                out.push(adapt(&b, &schema).map_err(|source| StorageError::Arrow {
                    table: path.clone(),
                    source,
                })?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Join(e.to_string()))?
    }

    async fn delete_due(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<Path> = {
            let mut pending = lock(&self.pending_delete);
            let (due, keep): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(at, _)| all || *at <= now);
            *pending = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for p in due {
            match self.store.delete(&p).await {
                // Another node of a shared store removed the same file (retention).
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(path = %p, error = %e, "Could not delete a replaced file.");
                }
            }
        }
    }

    /// Schedules the deletion, `delete_grace` from now, of files under each table's
    /// directory that its manifest does not list (left by a flush or compaction that stopped
    /// before publishing, or replaced files whose grace a stop cut short). Returns how many.
    ///
    /// # Errors
    /// Listing failures.
    pub async fn remove_orphans(&self) -> Result<usize> {
        let mut removed = 0;
        for (name, t) in &self.tables {
            let listed: std::collections::HashSet<String> =
                lock(t).files.iter().map(|f| f.path.clone()).collect();
            let prefix = Path::from(format!("{}/{name}", layout::TABLES_DIR));
            let objects: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| os_err(&prefix, e))?;
            let manifest = layout::manifest_path(name);
            let log = format!("{}/", crate::delta::log_dir(name));
            for o in objects {
                let p = o.location.to_string();
                // Only table files, and on a shared store only this node's own: another
                // node's file may be one it has written and not listed yet.
                let mine = if self.shared() {
                    p.ends_with(".parquet") && self.owned(&p)
                } else {
                    true
                };
                if mine && p != manifest && !p.starts_with(&log) && !listed.contains(&p) {
                    // Deleted after the grace, not now: it may be a file the last run replaced
                    // (compaction, retention) that another engine's query, planned on an
                    // older Delta version, still reads.
                    tracing::debug!(path = %p, grace = ?self.config.delete_grace, "A file no manifest lists is deleted after the grace.");
                    lock(&self.pending_delete)
                        .push((Instant::now() + self.config.delete_grace, o.location));
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Runs flushes, compactions and deferred deletes until `stop` resolves, then flushes
    /// everything one last time.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let tick = Duration::from_millis(500).min(self.config.flush_interval);
        let mut last_flush = Instant::now();
        let mut last_retention: Option<Instant> = None;
        let mut last_refresh = Instant::now();
        let mut lease_lost_said = false;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = self.flush_wanted.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let due = last_flush.elapsed() >= self.config.flush_interval;
            for name in self.tables.keys() {
                let (rows, dirty) = self
                    .table(name)
                    .map(|t| {
                        let st = lock(t);
                        (st.recent_rows, st.manifest_dirty)
                    })
                    .unwrap_or((0, false));
                let over_budget =
                    self.buffered_bytes.load(Ordering::Relaxed) >= self.config.max_buffer_bytes / 2;
                if ((rows > 0 && (due || rows >= self.config.flush_rows || over_budget)) || dirty)
                    && let Err(e) = self.flush_table(name).await
                {
                    if matches!(e, StorageError::LeaseLost) {
                        // Said once (the lease's loss is logged where it happens).
                        if !lease_lost_said {
                            lease_lost_said = true;
                            tracing::error!(error = %e, "Nothing is published to the table store while this node does not hold its lease; rows stay in the write-ahead log.");
                        }
                        continue;
                    }
                    tracing::error!(table = name, error = %e, "Flush failed; rows stay in memory and will be retried.");
                }
                if self.lease.get().is_some_and(|l| l.is_done()) {
                    continue;
                }
                if let Err(e) = self.compact_table(name).await {
                    tracing::error!(table = name, error = %e, "Compaction failed; files stay as they are.");
                }
            }
            if due {
                last_flush = Instant::now();
            }
            if self.shared() && last_refresh.elapsed() >= self.config.refresh_interval {
                last_refresh = Instant::now();
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "Could not read other nodes' changes to the tables; tried again at the next refresh.");
                }
            }
            if last_retention.is_none_or(|t| t.elapsed() >= self.config.retention.check_interval) {
                last_retention = Some(Instant::now());
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0);
                if let Err(e) = self.enforce_retention(now).await {
                    tracing::error!(error = %e, "Retention failed; files stay as they are.");
                }
            }
            self.delete_due(false).await;
        }
        if let Err(e) = self.flush_all().await {
            tracing::error!(error = %e, "Final flush failed.");
        }
        // Files still in their grace stay: the next start deletes them after a full grace.
        self.delete_due(false).await;
        // Released only when everything acknowledged is in the store (a process started
        // again under this node id then need not wait for the lease to end).
        if let Some(lease) = self.lease.get() {
            if self.fully_persisted() {
                lease.release().await;
            } else {
                tracing::error!(
                    "This node's lease in the table store is kept (not released): acknowledged rows are not all in the store; start this node again to store them."
                );
            }
        }
    }

    /// Removes files past their table's retention, then, while all files together exceed
    /// the disk budget, the oldest hour partitions (across tables). Returns the number of
    /// files removed.
    ///
    /// # Errors
    /// A manifest that cannot be written; the files then stay listed.
    pub async fn enforce_retention(&self, now_ns: i64) -> Result<usize> {
        let _io = self.io.lock().await;
        let cfg = &self.config.retention;
        // (table, path, reason) of every file to remove.
        let mut doomed: Vec<(&'static str, FileEntry, &'static str)> = Vec::new();
        let mut kept: Vec<(&'static str, FileEntry)> = Vec::new();
        for (name, t) in &self.tables {
            let cutoff = cfg
                .for_table(name)
                .map(|d| now_ns.saturating_sub(d.as_nanos().min(i64::MAX as u128) as i64));
            for f in &lock(t).files {
                match cutoff {
                    Some(c) if f.max_time_ns < c => doomed.push((name, f.clone(), "retention")),
                    _ => kept.push((name, f.clone())),
                }
            }
        }
        if cfg.max_data_bytes > 0 {
            // The budget is for the evidence; derived tables (rebuilt from it by the
            // correlator, a small fraction of its size) follow their own retention, and so
            // does the audit trail, which ingest volume must never push out.
            kept.retain(|(name, _)| {
                !tables::is_derived(name) && !tables::is_admin_only(name) && !tables::is_state(name)
            });
            let mut total: u64 = kept.iter().map(|(_, f)| f.size).sum();
            if total > cfg.max_data_bytes {
                kept.sort_by_key(|(_, f)| (layout::hour_of(f.min_time_ns), f.max_time_ns));
                let mut i = 0;
                while total > cfg.max_data_bytes && i < kept.len() {
                    // Remove whole hours: every file of the oldest remaining hour.
                    let hour = layout::hour_of(kept[i].1.min_time_ns);
                    while i < kept.len() && layout::hour_of(kept[i].1.min_time_ns) == hour {
                        total -= kept[i].1.size;
                        doomed.push((kept[i].0, kept[i].1.clone(), "disk_budget"));
                        i += 1;
                    }
                }
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let at = Instant::now() + self.config.delete_grace;
        for (name, t) in &self.tables {
            let mine: Vec<&(&str, FileEntry, &str)> =
                doomed.iter().filter(|(n, _, _)| n == name).collect();
            if mine.is_empty() {
                continue;
            }
            {
                let mut st = lock(t);
                st.files
                    .retain(|f| !mine.iter().any(|(_, d, _)| d.path == f.path));
                st.manifest_dirty = true;
                st.data_changed = true;
            }
            self.write_manifest_if_dirty(name).await?;
            for (_, f, reason) in &mine {
                ::metrics::counter!(m::RETENTION_FILES, "table" => name.to_string(), "reason" => *reason)
                    .increment(1);
                ::metrics::counter!(m::RETENTION_ROWS, "table" => name.to_string(), "reason" => *reason)
                    .increment(f.rows);
                tracing::info!(
                    table = name,
                    path = %f.path,
                    rows = f.rows,
                    reason,
                    "Removed a file by retention policy."
                );
            }
            lock(&self.pending_delete).extend(
                mine.iter()
                    .map(|(_, f, _)| (at, Path::from(f.path.as_str()))),
            );
        }
        Ok(doomed.len())
    }

    /// Whether everything accepted is in files listed in written manifests (no rows in
    /// memory, no manifest waiting to be written).
    pub fn fully_persisted(&self) -> bool {
        self.tables.values().all(|t| {
            let st = lock(t);
            st.recent_rows == 0 && !st.manifest_dirty
        })
    }

    /// Rows not yet in Parquet, all tables.
    pub fn buffered_rows(&self) -> usize {
        self.tables.values().map(|t| lock(t).recent_rows).sum()
    }
}

impl TableSource for Storage {
    fn snapshot(&self, table: &str) -> TableSnapshot {
        match self.table(table) {
            Some(t) => {
                let st = lock(t);
                TableSnapshot {
                    files: st.files.clone(),
                    recent: st.recent.clone(),
                }
            }
            None => TableSnapshot::default(),
        }
    }
}

/// The write-ahead-log watermarks a manifest records (`wal_node`'s `wal_seq`, and `others`),
/// split into `node`'s own (`None`: the manifest has none of it) and every other node's, by
/// node id (`""`: a seam on its own data directory, which writes no node id).
fn split_watermarks(
    wal_node: Option<&str>,
    wal_seq: u64,
    mut others: BTreeMap<String, u64>,
    node: Option<&str>,
) -> (Option<u64>, BTreeMap<String, u64>) {
    if wal_node == node {
        if let Some(n) = node {
            others.remove(n);
        }
        return (Some(wal_seq), others);
    }
    match wal_node {
        Some(w) => {
            others.insert(w.to_string(), wal_seq);
        }
        None if wal_seq > 0 => {
            others.insert(String::new(), wal_seq);
        }
        None => {}
    }
    let own = node.and_then(|n| others.remove(n));
    (own, others)
}

/// What a table's manifest says.
struct Loaded {
    files: Vec<FileEntry>,
    wal_seq: u64,
    wal_node: Option<String>,
    other_wal_seqs: BTreeMap<String, u64>,
    /// Whether the manifest exists.
    existed: bool,
    delta_version: Option<u64>,
    schema_version: u32,
    /// The manifest object's version as read.
    tag: Option<UpdateVersion>,
}

/// The most Delta log entries one cleanup pass deletes (one pass per checkpoint, every tenth
/// version; a pass needs about eleven once the log is trimmed).
const MAX_LOG_DELETES: usize = 100;

/// The `writer` (`appId`) of the `txn` actions of a seam on its own data directory (a node of
/// a shared store writes its id).
const DELTA_APP_ID: &str = "seam";

/// A stable Delta table id (UUID-shaped) for `table`: every `metaData` of the table carries
/// the same one.
fn delta_table_id(table: &str) -> String {
    let h = crate::key_of(&["seam-delta-table", table]);
    let part = |a: usize, b: usize| h.get(a..b).unwrap_or("0");
    format!(
        "{}-{}-{}-{}-{}",
        part(0, 8),
        part(8, 12),
        part(12, 16),
        part(16, 20),
        part(20, 32)
    )
}

/// The node that wrote a file of a shared store, from its name (`<prefix>-<stamp>-<seq>-<node
/// id>.parquet`); empty for a file written before nodes shared stores.
fn writer_of(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let name = name.strip_suffix(".parquet").unwrap_or(name);
    name.splitn(4, '-').nth(3).unwrap_or("")
}

/// Of the files `new` lists and `old` did not, written by other nodes, those holding rows
/// `old` had nowhere: per hour partition and writer, the added files when they hold more
/// rows than the files of that writer and partition that `new` no longer lists. A flush
/// adds rows; a compaction moves rows between files (as many out as in), so its output is
/// new only when this node never saw some of its inputs (they were written and merged
/// between two of its reads).
fn unseen_rows(
    old: &[FileEntry],
    new: &[FileEntry],
    owned: impl Fn(&str) -> bool,
) -> Vec<FileEntry> {
    let old_paths: std::collections::HashSet<&str> = old.iter().map(|f| f.path.as_str()).collect();
    let new_paths: std::collections::HashSet<&str> = new.iter().map(|f| f.path.as_str()).collect();
    // (partition, writer) → (rows added, rows removed, files added)
    let mut groups: BTreeMap<(&str, &str), (u64, u64, Vec<&FileEntry>)> = BTreeMap::new();
    for f in new
        .iter()
        .filter(|f| !old_paths.contains(f.path.as_str()) && !owned(&f.path))
    {
        let g = groups
            .entry((partition_of(&f.path), writer_of(&f.path)))
            .or_default();
        g.0 = g.0.saturating_add(f.rows);
        g.2.push(f);
    }
    for f in old
        .iter()
        .filter(|f| !new_paths.contains(f.path.as_str()) && !owned(&f.path))
    {
        if let Some(g) = groups.get_mut(&(partition_of(&f.path), writer_of(&f.path))) {
            g.1 = g.1.saturating_add(f.rows);
        }
    }
    groups
        .into_values()
        .filter(|(added, removed, _)| added > removed)
        .flat_map(|(_, _, files)| files.into_iter().cloned())
        .collect()
}

/// A manifest's bytes, checked to be one this seam understands.
fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| StorageError::Manifest {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    if m.version > MANIFEST_VERSION {
        return Err(StorageError::Manifest {
            path: path.to_string(),
            reason: format!(
                "manifest version {} is newer than this seam understands ({MANIFEST_VERSION})",
                m.version
            ),
        });
    }
    Ok(m)
}

/// A table's manifest; an empty one when it does not exist.
async fn load_manifest(store: &Arc<dyn ObjectStore>, table: &str) -> Result<Loaded> {
    let path = Path::from(layout::manifest_path(table));
    match store.get(&path).await {
        Ok(r) => {
            let tag = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            let bytes = r.bytes().await.map_err(|e| os_err(&path, e))?;
            let m = parse_manifest(&path, &bytes)?;
            Ok(Loaded {
                files: m.files,
                wal_seq: m.wal_seq,
                wal_node: m.wal_node,
                other_wal_seqs: m.other_wal_seqs,
                existed: true,
                delta_version: m.delta_version,
                schema_version: m.schema_version,
                tag: Some(tag),
            })
        }
        Err(object_store::Error::NotFound { .. }) => {
            let prefix = Path::from(format!("{}/{table}", layout::TABLES_DIR));
            let any_parquet = store
                .list(Some(&prefix))
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| os_err(&prefix, e))?
                .iter()
                .any(|o| o.location.as_ref().ends_with(".parquet"));
            if any_parquet {
                return Err(StorageError::MissingManifest {
                    table: table.into(),
                    prefix: prefix.to_string(),
                    manifest: path.to_string(),
                });
            }
            Ok(Loaded {
                files: Vec::new(),
                wal_seq: 0,
                wal_node: None,
                other_wal_seqs: BTreeMap::new(),
                existed: false,
                delta_version: None,
                schema_version: SCHEMA_VERSION,
                tag: None,
            })
        }
        Err(e) => Err(os_err(&path, e)),
    }
}

fn partition_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Decides which files to merge: (inputs, output level) per merge.
fn plan_compaction(
    st: &TableState,
    cfg: &StorageConfig,
    owned: impl Fn(&str) -> bool,
) -> Vec<(Vec<FileEntry>, u32)> {
    let mut by_partition: BTreeMap<&str, Vec<&FileEntry>> = BTreeMap::new();
    for f in st.files.iter().filter(|f| owned(&f.path)) {
        by_partition
            .entry(partition_of(&f.path))
            .or_default()
            .push(f);
    }
    let mut plans = Vec::new();
    for (part, files) in by_partition {
        if files.len() < 2 {
            continue;
        }
        let total: u64 = files.iter().map(|f| f.size).sum();
        let idle = st
            .last_write
            .get(part)
            .is_none_or(|t| t.elapsed() >= cfg.compaction_idle);
        let max_level = files.iter().map(|f| f.level).max().unwrap_or(0);
        if idle && total <= cfg.compaction_max_bytes {
            plans.push((files.into_iter().cloned().collect(), max_level + 1));
            continue;
        }
        let mut by_level: BTreeMap<u32, Vec<&FileEntry>> = BTreeMap::new();
        for f in files {
            by_level.entry(f.level).or_default().push(f);
        }
        for (level, group) in by_level {
            let size: u64 = group.iter().map(|f| f.size).sum();
            if group.len() >= cfg.compaction_fanout && size <= cfg.compaction_max_bytes {
                plans.push((group.into_iter().cloned().collect(), level + 1));
            }
        }
    }
    plans
}

/// The rows of `batches` grouped by the UTC hour of their `time`, as (batch, row) indices.
/// (batch index, row index) of a row among several batches.
pub type RowRef = (u32, u32);

fn rows_by_hour(table: &str, batches: &[RecordBatch]) -> Result<Vec<(i64, Vec<RowRef>)>> {
    let mut groups: BTreeMap<i64, Vec<RowRef>> = BTreeMap::new();
    for (b, batch) in batches.iter().enumerate() {
        let times = time_column(batch).ok_or_else(|| StorageError::Arrow {
            table: table.into(),
            source: arrow::error::ArrowError::SchemaError("no time column".into()),
        })?;
        for (i, t) in times.values().iter().enumerate() {
            groups
                .entry(layout::hour_of(*t))
                .or_default()
                .push((b as u32, i as u32));
        }
    }
    Ok(groups.into_iter().collect())
}

/// Rows to encode into one file: all rows of `batches`, or the listed (batch, row) ones.
/// Every batch has `schema`.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The schema of every batch.
    pub schema: SchemaRef,
    /// The batches (shared, never copied whole).
    pub batches: Arc<Vec<RecordBatch>>,
    /// The rows to take, or `None` for every row.
    pub rows: Option<Vec<RowRef>>,
}

impl Rows {
    /// Every row of one batch.
    pub fn of(batch: RecordBatch) -> Self {
        Self {
            schema: batch.schema(),
            batches: Arc::new(vec![batch]),
            rows: None,
        }
    }
}

/// Rows copied per step when encoding: the only copy of the input an encode makes.
const ENCODE_CHUNK_ROWS: usize = 8_192;

fn time_column(batch: &RecordBatch) -> Option<&TimestampNanosecondArray> {
    batch
        .column_by_name(columns::TIME)?
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
}

/// Makes `batch` match `schema`: columns by name, missing ones as NULL, other types cast.
///
/// # Errors
/// A column that cannot be cast.
pub fn adapt(
    batch: &RecordBatch,
    schema: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(schema.clone(), batch.columns().to_vec());
    }
    let cols: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), cols)
}

/// The Arrow type a column of type `dt` is written to Parquet as: every timestamp in
/// microseconds (the unit Spark, Fabric, Databricks, Trino, DuckDB and delta-rs all read;
/// nanosecond Parquet timestamps fail in Spark and are truncated or refused by the others),
/// and map entries named `key` and `value` (the Parquet specification's names, which
/// DuckDB's Delta reader requires), nested types included. Reading casts back.
pub fn file_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        DataType::List(f) => DataType::List(Arc::new(file_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(file_field(f))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| file_field(f)).collect::<Fields>())
        }
        DataType::Map(entries, sorted) => {
            let renamed = match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => {
                    let key = Field::new("key", file_type(kv[0].data_type()), kv[0].is_nullable());
                    let value =
                        Field::new("value", file_type(kv[1].data_type()), kv[1].is_nullable());
                    Field::new(
                        entries.name(),
                        DataType::Struct(Fields::from(vec![key, value])),
                        entries.is_nullable(),
                    )
                }
                _ => file_field(entries),
            };
            DataType::Map(Arc::new(renamed), *sorted)
        }
        other => other.clone(),
    }
}

fn file_field(f: &Field) -> Field {
    f.clone().with_data_type(file_type(f.data_type()))
}

/// The schema table files are written with ([`file_type`] of every column).
pub fn file_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| file_field(f))
            .collect::<Fields>(),
        schema.metadata().clone(),
    ))
}

/// Whether `dt` holds a timestamp, at any depth.
fn has_timestamp(dt: &DataType) -> bool {
    match dt {
        DataType::Timestamp(..) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => {
            has_timestamp(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| has_timestamp(f.data_type())),
        _ => false,
    }
}

/// `v` nanoseconds cut down to a whole microsecond (toward the past; the earliest
/// representable instant stays as it is rather than overflow).
fn floor_micros(v: i64) -> i64 {
    v.checked_sub(v.rem_euclid(1_000)).unwrap_or(v)
}

/// `a` with every timestamp, at any depth, cut down to a whole microsecond (types, nulls
/// and every other child unchanged and shared, not copied).
fn micros_array(a: &ArrayRef) -> ArrayRef {
    if !has_timestamp(a.data_type()) {
        return Arc::clone(a);
    }
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            let t = a.as_primitive::<TimestampNanosecondType>();
            Arc::new(
                t.unary::<_, TimestampNanosecondType>(floor_micros)
                    .with_timezone_opt(tz.clone()),
            )
        }
        // Rebuilt with checked constructors: an array they refuse stays as it was.
        DataType::List(f) => {
            let l = a.as_list::<i32>();
            ListArray::try_new(
                Arc::clone(f),
                l.offsets().clone(),
                micros_array(l.values()),
                l.nulls().cloned(),
            )
            .map_or_else(|_| Arc::clone(a), |x| Arc::new(x) as ArrayRef)
        }
        DataType::Struct(fields) => {
            let st = a.as_struct();
            StructArray::try_new(
                fields.clone(),
                st.columns().iter().map(micros_array).collect(),
                st.nulls().cloned(),
            )
            .map_or_else(|_| Arc::clone(a), |x| Arc::new(x) as ArrayRef)
        }
        DataType::Map(f, sorted) => {
            let m = a.as_map();
            let entries = micros_array(&(Arc::new(m.entries().clone()) as ArrayRef));
            MapArray::try_new(
                Arc::clone(f),
                m.offsets().clone(),
                entries.as_struct().clone(),
                m.nulls().cloned(),
                *sorted,
            )
            .map_or_else(|_| Arc::clone(a), |x| Arc::new(x) as ArrayRef)
        }
        // Timestamps in other units already hold no sub-microsecond part or are left alone.
        _ => Arc::clone(a),
    }
}

/// `batch` with every timestamp cut down to a whole microsecond, so that rows in memory and
/// rows read back from Parquet ([`file_type`]) hold the same values.
pub fn to_micros(batch: RecordBatch) -> RecordBatch {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| has_timestamp(f.data_type()))
    {
        return batch;
    }
    let cols: Vec<ArrayRef> = batch.columns().iter().map(micros_array).collect();
    // Same schema, same lengths: this cannot fail; keep the original if it somehow does.
    RecordBatch::try_new(batch.schema(), cols).unwrap_or(batch)
}

/// Sorts a batch by `time` and encodes it as Parquet with seam's writer settings. Returns
/// bytes, rows, min and max time. `path` only names the file in errors.
///
/// # Errors
/// A batch without a `time` column, or an encoder failure.
pub fn encode_parquet(
    table: &str,
    path: &str,
    batch: RecordBatch,
    cfg: &StorageConfig,
) -> Result<(Bytes, u64, i64, i64)> {
    encode_rows(table, path, &Rows::of(batch), cfg)
}

/// Encodes `input` sorted by `time` as Parquet with seam's writer settings, streaming: the
/// sort is over (time, batch, row) keys, and rows are gathered into the writer
/// `ENCODE_CHUNK_ROWS` at a time, so the only copies held are one chunk, the writer's open
/// row group and the encoded file. Returns bytes, rows, min and max time. `path` only names
/// the file in errors.
///
/// # Errors
/// A batch without a `time` column, or an encoder failure.
pub fn encode_rows(
    table: &str,
    path: &str,
    input: &Rows,
    cfg: &StorageConfig,
) -> Result<(Bytes, u64, i64, i64)> {
    let arrow_err = |source| StorageError::Arrow {
        table: table.into(),
        source,
    };
    let perr = |source| StorageError::Parquet {
        path: path.into(),
        source,
    };
    let times: Vec<&TimestampNanosecondArray> = input
        .batches
        .iter()
        .map(|b| {
            time_column(b).ok_or_else(|| {
                arrow_err(arrow::error::ArrowError::SchemaError(
                    "no time column".into(),
                ))
            })
        })
        .collect::<Result<_>>()?;
    // (time, batch, row): sorting the keys orders by time, ties in arrival order.
    let mut keys: Vec<(i64, u32, u32)> = match &input.rows {
        Some(rows) => rows
            .iter()
            .filter_map(|&(b, r)| {
                let t = times.get(b as usize)?;
                ((r as usize) < t.len()).then(|| (t.value(r as usize), b, r))
            })
            .collect(),
        None => times
            .iter()
            .enumerate()
            .flat_map(|(b, t)| {
                t.values()
                    .iter()
                    .enumerate()
                    .map(move |(r, v)| (*v, b as u32, r as u32))
            })
            .collect(),
    };
    keys.sort_unstable();
    let n = keys.len();
    // The bounds of what the file holds: whole microseconds.
    let (min, max) = match (keys.first(), keys.last()) {
        (Some(a), Some(b)) => (floor_micros(a.0), floor_micros(b.0)),
        _ => (0, 0),
    };
    let zstd = ZstdLevel::try_new(cfg.zstd_level).map_err(perr)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        .set_column_bloom_filter_enabled(ColumnPath::from(columns::TRACE_ID), true)
        .set_column_bloom_filter_enabled(ColumnPath::from(columns::CORRELATION_ID), true)
        .set_key_value_metadata(Some(vec![
            KeyValue::new("seam.table".to_string(), table.to_string()),
            KeyValue::new(
                "seam.schema_version".to_string(),
                SCHEMA_VERSION.to_string(),
            ),
        ]));
    // Sorted (or nearly sorted) timestamps: deltas of a few bits instead of dictionary or
    // plain 8-byte values (5.2 to 1.0 bytes per row for `time`). Span ids never repeat, so a
    // dictionary only costs a fallback. Measured in benches/README.md ("Bytes on disk").
    let mut props = props;
    for c in [columns::TIME, "end_time", columns::INGEST_TIME] {
        if input.schema.column_with_name(c).is_some() {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(c), false)
                .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
        }
    }
    for c in [columns::SPAN_ID, columns::PARENT_SPAN_ID] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    let props = props.build();
    let mut buf = Vec::new();
    let on_disk = file_schema(&input.schema);
    let mut writer =
        ArrowWriter::try_new(&mut buf, Arc::clone(&on_disk), Some(props)).map_err(perr)?;
    let columns: Vec<Vec<&dyn Array>> = (0..input.schema.fields().len())
        .map(|c| input.batches.iter().map(|b| b.column(c).as_ref()).collect())
        .collect();
    let mut idx: Vec<(usize, usize)> = Vec::with_capacity(ENCODE_CHUNK_ROWS.min(n));
    for chunk in keys.chunks(ENCODE_CHUNK_ROWS) {
        idx.clear();
        idx.extend(chunk.iter().map(|&(_, b, r)| (b as usize, r as usize)));
        let cols: Vec<ArrayRef> = columns
            .iter()
            .zip(on_disk.fields())
            .map(|(arrays, f)| {
                // Floored first (a cast alone would round negative times toward zero).
                let c = micros_array(&interleave(arrays, &idx)?);
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<Result<_, _>>()
            .map_err(arrow_err)?;
        let part = RecordBatch::try_new(Arc::clone(&on_disk), cols).map_err(arrow_err)?;
        writer.write(&part).map_err(perr)?;
    }
    writer.close().map_err(perr)?;
    Ok((Bytes::from(buf), n as u64, min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{MapBuilder, StringArray, StringBuilder};
    use arrow::datatypes::{Field, Schema};

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn watermarks_split_into_own_and_others() {
        let marks = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        // Written last by this node: the manifest's watermark is its own.
        assert_eq!(
            split_watermarks(Some("a"), 7, marks(&[("b", 3), ("a", 1)]), Some("a")),
            (Some(7), marks(&[("b", 3)]))
        );
        // Written last by another: that one joins the others, this node's entry is taken.
        assert_eq!(
            split_watermarks(Some("b"), 9, marks(&[("a", 4), ("c", 2)]), Some("a")),
            (Some(4), marks(&[("b", 9), ("c", 2)]))
        );
        assert_eq!(
            split_watermarks(Some("b"), 9, BTreeMap::new(), Some("a")),
            (None, marks(&[("b", 9)])),
            "nothing of this node's log is in the store yet"
        );
        // Written by a seam on its own data directory (no node id), now shared.
        assert_eq!(
            split_watermarks(None, 5, BTreeMap::new(), Some("a")),
            (None, marks(&[("", 5)]))
        );
        assert_eq!(
            split_watermarks(None, 0, BTreeMap::new(), Some("a")),
            (None, BTreeMap::new())
        );
        // A store of one's own reads its own watermark.
        assert_eq!(
            split_watermarks(None, 5, BTreeMap::new(), None),
            (Some(5), BTreeMap::new())
        );
    }

    fn batch(schema: &SchemaRef, rows: &[(i64, &str)]) -> RecordBatch {
        let times = TimestampNanosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
            .with_timezone("UTC");
        let names = StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        let mut attrs = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for (_, name) in rows {
            attrs.keys().append_value("name");
            attrs.values().append_value(name);
            attrs.append(true).unwrap();
        }
        let attrs = cast(&attrs.finish(), schema.field(2).data_type()).unwrap();
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(times), Arc::new(names), attrs],
        )
        .unwrap()
    }

    fn read(bytes: Bytes) -> Vec<(i64, String, String)> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for b in reader {
            let b = b.unwrap();
            // Microseconds on disk, and map entries named key/value.
            let t = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                .unwrap();
            let n = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            let m = b.column(2).as_any().downcast_ref::<MapArray>().unwrap();
            for i in 0..b.num_rows() {
                let v = m.value(i);
                let vals = v.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                out.push((
                    t.value(i) * 1_000,
                    n.value(i).to_string(),
                    vals.value(0).to_string(),
                ));
            }
        }
        out
    }

    #[test]
    fn rows_from_several_batches_are_split_by_hour_and_written_sorted() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new(columns::TIME, tables::timestamp_type(), false),
            Field::new("name", DataType::Utf8, true),
            Field::new("attrs", tables::attribute_map_type(), true),
        ]));
        let batches = Arc::new(vec![
            // Whole microseconds (what push_recent keeps): the files hold microseconds.
            batch(
                &schema,
                &[(HOUR + 5_000, "b"), (7_000, "x"), (HOUR + 1_000, "a")],
            ),
            batch(
                &schema,
                &[(HOUR + 3_000, "c"), (2_000, "w"), (HOUR + 9_000, "d")],
            ),
        ]);
        let groups = rows_by_hour("t", &batches).unwrap();
        assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 3600]);
        let cfg = StorageConfig {
            row_group_rows: 1024,
            ..StorageConfig::default()
        };
        let mut got = Vec::new();
        for (_, rows) in groups {
            let input = Rows {
                schema: schema.clone(),
                batches: Arc::clone(&batches),
                rows: Some(rows),
            };
            let (bytes, n, min, max) = encode_rows("t", "p", &input, &cfg).unwrap();
            let rows = read(bytes);
            assert_eq!(n as usize, rows.len());
            assert_eq!((min, max), (rows[0].0, rows[rows.len() - 1].0));
            got.push(rows);
        }
        let names = |v: &Vec<(i64, String, String)>| {
            v.iter()
                .map(|r| {
                    // The map travelled with its row.
                    assert_eq!(r.1, r.2);
                    r.1.as_str()
                })
                .collect::<String>()
        };
        assert_eq!(names(&got[0]), "wx");
        assert_eq!(names(&got[1]), "acbd");
        // Every row of one batch, more rows than one encode chunk, out of order.
        let many: Vec<(i64, String)> = (0..20_000)
            .map(|i| {
                let n = (i * 7919) % 20_000;
                (n * 1_000, format!("n{n}"))
            })
            .collect();
        let refs: Vec<(i64, &str)> = many.iter().map(|(t, n)| (*t, n.as_str())).collect();
        let (bytes, n, ..) = encode_parquet("t", "p", batch(&schema, &refs), &cfg).unwrap();
        let rows = read(bytes);
        assert_eq!(n, 20_000);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| r.0 == i as i64 * 1_000 && r.1 == format!("n{i}"))
        );
    }

    /// One row of derived `table` at `t` (NULL where allowed, false in flags).
    fn derived(table: &str, t: i64) -> RecordBatch {
        let schema = tables::get(table).expect("table").schema;
        let cols: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.data_type() {
                    DataType::Timestamp(..) if !f.is_nullable() || f.name() == columns::TIME => {
                        Arc::new(TimestampNanosecondArray::from(vec![t]).with_timezone("UTC"))
                    }
                    DataType::Boolean if !f.is_nullable() => {
                        Arc::new(arrow::array::BooleanArray::from(vec![false]))
                    }
                    DataType::Utf8 if !f.is_nullable() => Arc::new(StringArray::from(vec!["x"])),
                    DataType::Int64 if !f.is_nullable() => {
                        Arc::new(arrow::array::Int64Array::from(vec![1]))
                    }
                    DataType::Int32 if !f.is_nullable() => {
                        Arc::new(arrow::array::Int32Array::from(vec![1]))
                    }
                    other => new_null_array(other, 1),
                }
            })
            .collect();
        RecordBatch::try_new(schema, cols).expect("batch")
    }

    /// Storage over the local directory `root`, default settings.
    async fn open_local(root: &std::path::Path) -> Arc<Storage> {
        let store =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).expect("store"));
        Storage::open(store, Some(root.to_path_buf()), StorageConfig::default())
            .await
            .expect("open")
    }

    fn listed(s: &Storage, table: &str) -> Vec<String> {
        let t = s.table(table).expect("table");
        lock(t).files.iter().map(|f| f.path.clone()).collect()
    }

    #[tokio::test]
    async fn a_minute_written_in_parts_replaces_all_its_earlier_files_at_once() {
        use seam_schemas::tables::requests::{EVENTS_TABLE, TABLE};
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().to_path_buf();
        let open = || open_local(&root);
        let minute = 29_000_001 * 60_000_000_000_i64;
        let s = open().await;
        let mut parts = Vec::new();
        for t in [minute + 1, minute + 2, minute + 3] {
            parts.push(
                s.write_minute_part(TABLE, minute, derived(TABLE, t))
                    .await
                    .expect("part"),
            );
        }
        // Written but not committed: not listed, so not read.
        assert!(listed(&s, TABLE).is_empty());
        let event = s
            .write_minute_part(EVENTS_TABLE, minute, derived(EVENTS_TABLE, minute + 4))
            .await
            .expect("part");
        s.commit_minutes(
            minute,
            vec![(TABLE, parts.clone()), (EVENTS_TABLE, vec![event])],
        )
        .await
        .expect("commit");
        assert_eq!(
            (listed(&s, TABLE).len(), listed(&s, EVENTS_TABLE).len()),
            (3, 1)
        );
        assert!(!root.join(REPLACE_JOURNAL).exists());
        // The same after a restart (the manifests list every part).
        drop(s);
        let s = open().await;
        assert_eq!(listed(&s, TABLE).len(), 3);

        // A part written then discarded is gone; the next commit of one file replaces the
        // three parts, and an empty list empties the other table's minute.
        let dropped = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 5))
            .await
            .expect("part");
        s.discard(std::slice::from_ref(&dropped)).await;
        assert!(!root.join(&dropped.path).exists());
        let one = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 6))
            .await
            .expect("part");
        s.commit_minutes(
            minute,
            vec![(TABLE, vec![one.clone()]), (EVENTS_TABLE, Vec::new())],
        )
        .await
        .expect("commit");
        assert_eq!(listed(&s, TABLE), vec![one.path]);
        assert!(listed(&s, EVENTS_TABLE).is_empty());

        // A journal with several files per table, left by a stop before any manifest: the
        // next start lists them all.
        let a = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 7))
            .await
            .expect("part");
        let b = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 8))
            .await
            .expect("part");
        let journal = Replacement {
            tag: minute_tag(minute),
            files: vec![(TABLE.to_string(), Some(a.clone()))],
            more: vec![(TABLE.to_string(), b.clone())],
        };
        std::fs::write(
            root.join(REPLACE_JOURNAL),
            serde_json::to_vec(&journal).expect("json"),
        )
        .expect("journal");
        drop(s);
        let s = open().await;
        let mut got = listed(&s, TABLE);
        got.sort();
        let mut want = vec![a.path, b.path];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn other_nodes_rows_are_new_when_a_flush_adds_them_or_a_compaction_hides_inputs() {
        let f = |name: &str, rows: u64, level: u32| FileEntry {
            path: format!("tables/spans/date=2026-12-05/hour=10/{name}.parquet"),
            size: rows * 10,
            rows,
            min_time_ns: 0,
            max_time_ns: 1,
            level,
        };
        let mine = |p: &str| writer_of(p) == "seam-me";
        assert_eq!(
            writer_of("tables/t/d/h/L0-123-000004-seam-abc.parquet"),
            "seam-abc"
        );
        assert_eq!(writer_of("tables/t/d/h/M60000-123-000004-x.parquet"), "x");
        assert_eq!(writer_of("tables/t/d/h/L0-123-000004.parquet"), "");
        let a1 = f("L0-1-000001-seam-a", 10, 0);
        let a2 = f("L0-2-000002-seam-a", 20, 0);
        let own = f("L0-3-000003-seam-me", 5, 0);
        // A flush of another node: new.
        let got = unseen_rows(std::slice::from_ref(&own), &[own.clone(), a1.clone()], mine);
        assert_eq!(got, vec![a1.clone()]);
        // Its compaction of files this node saw: nothing new.
        let merged = f("L1-4-000004-seam-a", 30, 1);
        let old = [own.clone(), a1.clone(), a2.clone()];
        let got = unseen_rows(&old, &[own.clone(), merged.clone()], mine);
        assert!(got.is_empty(), "{got:?}");
        // Its compaction of a file this node never saw: the output holds new rows.
        let got = unseen_rows(
            &[own.clone(), a1.clone()],
            &[own.clone(), merged.clone()],
            mine,
        );
        assert_eq!(got, vec![merged]);
        // This node's own files are never news to it.
        let got = unseen_rows(&[], &[own], mine);
        assert!(got.is_empty());
    }

    /// Node `node` of the shared store `store`.
    async fn open_node(store: &Arc<dyn ObjectStore>, node: &str) -> Arc<Storage> {
        Storage::open_as(
            Arc::clone(store),
            None,
            StorageConfig::default(),
            Some(node.to_string()),
        )
        .await
        .expect("open")
    }

    #[tokio::test]
    async fn each_node_replays_against_its_own_watermark_after_another_wrote_the_store() {
        use seam_schemas::tables::requests::TABLE;
        // A shared store needs conditional replacement (object stores have it; the local
        // file system does not, and is never shared).
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let t = 29_000_003 * 60_000_000_000_i64;
        // Node a stores its entries up to 7; node b (a take-over) its own up to 3.
        let a = open_node(&store, "a").await;
        a.push_recent(TABLE, derived(TABLE, t), 7, false);
        a.flush_table(TABLE).await.expect("flush");
        assert_eq!(a.wal_watermarks()[TABLE], 7);
        drop(a);
        let b = open_node(&store, "b").await;
        assert_eq!(b.wal_watermarks()[TABLE], 0, "a's numbers are not b's");
        b.push_recent(TABLE, derived(TABLE, t + 1_000), 3, false);
        b.flush_table(TABLE).await.expect("flush");
        drop(b);
        // Back on a: its own watermark, untouched by b's writes; b's kept for b.
        let a = open_node(&store, "a").await;
        assert_eq!(a.wal_watermarks()[TABLE], 7);
        a.push_recent(TABLE, derived(TABLE, t + 2_000), 8, false);
        a.flush_table(TABLE).await.expect("flush");
        drop(a);
        let b = open_node(&store, "b").await;
        assert_eq!(b.wal_watermarks()[TABLE], 3);
        assert_eq!(listed(&b, TABLE).len(), 3);
    }

    #[tokio::test]
    async fn nodes_flushing_one_table_at_once_lose_none_of_each_others_files() {
        use seam_schemas::tables::requests::TABLE;
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (a, b, c) = (
            open_node(&store, "node-a").await,
            open_node(&store, "node-b").await,
            open_node(&store, "node-c").await,
        );
        let t = 29_000_007 * 60_000_000_000_i64;
        for i in 0..12_i64 {
            let seq = u64::try_from(i + 1).expect("seq");
            a.push_recent(TABLE, derived(TABLE, t + i), seq, false);
            b.push_recent(TABLE, derived(TABLE, t + 100 + i), seq, false);
            c.push_recent(TABLE, derived(TABLE, t + 200 + i), seq, false);
            let (x, y, z) = tokio::join!(
                a.flush_table(TABLE),
                b.flush_table(TABLE),
                c.flush_table(TABLE)
            );
            x.expect("a flush");
            y.expect("b flush");
            z.expect("c flush");
        }
        for s in [&a, &b, &c] {
            s.refresh().await.expect("refresh");
        }
        let mut all = listed(&a, TABLE);
        all.sort();
        assert_eq!(all.len(), 36, "a file of some node was lost: {all:?}");
        for s in [&b, &c] {
            let mut other = listed(s, TABLE);
            other.sort();
            assert_eq!(other, all);
        }
        // Each file names its node; the Delta log lists exactly the same files.
        for n in ["node-a", "node-b", "node-c"] {
            assert_eq!(
                all.iter()
                    .filter(|p| p.ends_with(&format!("-{n}.parquet")))
                    .count(),
                12
            );
        }
        let mut delta = a.read_delta_all(TABLE).await.expect("log").expect("a log");
        let mut in_log: Vec<String> = std::mem::take(&mut delta.files).into_keys().collect();
        in_log.sort();
        assert_eq!(in_log, all);
        // Every node's watermark is kept, each for its own node.
        let m = load_manifest(&store, TABLE).await.expect("manifest");
        let mut marks = m.other_wal_seqs.clone();
        if let Some(w) = m.wal_node {
            marks.insert(w, m.wal_seq);
        }
        for n in ["node-a", "node-b", "node-c"] {
            assert_eq!(marks.get(n), Some(&12), "{marks:?}");
        }
        // A node started again after the others wrote sees every file and its own mark.
        drop(b);
        let b = open_node(&store, "node-b").await;
        assert_eq!(b.wal_watermarks()[TABLE], 12);
        assert_eq!(listed(&b, TABLE).len(), 36);
        // A node owns exactly the files naming it: not another node's whose id ends with
        // its own.
        assert!(b.owned("tables/spans/date=x/hour=y/L0-1-2-node-b.parquet"));
        assert!(!b.owned("tables/spans/date=x/hour=y/L0-1-2-x-node-b.parquet"));
        assert!(!b.owned("tables/spans/date=x/hour=y/L0-1-2.parquet"));
        // Derived rows are written only under the correlation lease on a shared store.
        let e = b
            .commit_minutes(t, vec![(TABLE, Vec::new())])
            .await
            .expect_err("no lease");
        assert!(matches!(e, StorageError::NotCorrelating), "{e}");
        // A node taking the correlation over replaces a minute whole, also the files of it
        // the previous correlating node listed after this node last read the manifest.
        let lease = |n: &'static str| {
            let store = Arc::clone(&store);
            async move {
                Arc::new(
                    crate::lease::WriterLease::acquire(
                        store,
                        crate::lease::CORRELATION_LEASE_PATH,
                        n,
                        Duration::from_secs(30),
                        Duration::ZERO,
                    )
                    .await
                    .expect("lease"),
                )
            }
        };
        b.refresh().await.expect("refresh");
        let la = lease("node-a").await;
        a.set_correlation_lease(Some(Arc::clone(&la)));
        let part = a
            .write_minute_part(TABLE, t, derived(TABLE, t + 5))
            .await
            .expect("part");
        a.commit_minutes(t, vec![(TABLE, vec![part])])
            .await
            .expect("a commits its minute");
        la.release().await;
        a.set_correlation_lease(None);
        b.set_correlation_lease(Some(lease("node-b").await));
        let part = b
            .write_minute_part(TABLE, t, derived(TABLE, t + 6))
            .await
            .expect("part");
        b.commit_minutes(t, vec![(TABLE, vec![part.clone()])])
            .await
            .expect("b commits the minute");
        a.refresh().await.expect("refresh");
        let tag = minute_tag(t);
        let of_minute: Vec<String> = listed(&a, TABLE)
            .into_iter()
            .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(&tag)))
            .collect();
        assert_eq!(of_minute, vec![part.path]);
    }

    /// The paths `table`'s Delta log lists at its latest version.
    async fn in_delta(s: &Storage, table: &str) -> Vec<String> {
        let snap = s.read_delta(table).await.expect("log").expect("a log");
        snap.files.into_keys().collect()
    }

    #[tokio::test]
    async fn old_delta_log_entries_go_after_the_retention_and_the_log_still_reads() {
        use seam_schemas::tables::requests::TABLE;
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().to_path_buf();
        let open = |retention: Duration| {
            let root = root.clone();
            async move {
                let store = Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&root).expect("store"),
                );
                let config = StorageConfig {
                    delta_log_retention: retention,
                    ..StorageConfig::default()
                };
                Storage::open(store, Some(root.clone()), config)
                    .await
                    .expect("open")
            }
        };
        let log = |root: &std::path::Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(root.join(crate::delta::log_dir(TABLE)))
                .expect("log dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let minute = 29_000_003 * 60_000_000_000_i64;
        // Twenty-five replacements of one minute: versions 1 to 25, checkpoints at 10 and 20.
        let replace = |s: Arc<Storage>, i: i64| async move {
            let part = s
                .write_minute_part(TABLE, minute, derived(TABLE, minute + i))
                .await
                .expect("part");
            s.commit_minutes(minute, vec![(TABLE, vec![part.clone()])])
                .await
                .expect("commit");
            part
        };
        // With the default (a day) nothing goes.
        let s = open(StorageConfig::default().delta_log_retention).await;
        for i in 1..=12 {
            replace(Arc::clone(&s), i).await;
        }
        assert!(
            log(&root).contains(
                &crate::delta::commit_path(TABLE, 0)
                    .rsplit('/')
                    .next()
                    .expect("name")
                    .to_string()
            )
        );
        drop(s);
        // With no retention, the checkpoint at 20 removes every entry before version 10.
        let s = open(Duration::ZERO).await;
        let mut last = None;
        for i in 13..=25 {
            last = Some(replace(Arc::clone(&s), i).await);
        }
        let names = log(&root);
        let versions: Vec<u64> = names
            .iter()
            .filter_map(|n| crate::delta::entry_version(n))
            .collect();
        assert_eq!(versions.iter().min(), Some(&10), "{names:?}");
        assert!(
            names.contains(&format!("{:020}.checkpoint.parquet", 10))
                && names.contains(&format!("{:020}.checkpoint.parquet", 20)),
            "{names:?}"
        );
        assert!(names.contains(&"_last_checkpoint".to_string()), "{names:?}");
        let last = last.expect("a part");
        assert_eq!(in_delta(&s, TABLE).await, vec![last.path.clone()]);
        // Read whole (as when a manifest names no version), the log starts at the newest
        // checkpoint its later commits all follow, and lists the same.
        let whole = s.read_delta_all(TABLE).await.expect("log").expect("a log");
        assert_eq!(whole.version, Some(25));
        assert_eq!(
            whole.files.into_keys().collect::<Vec<_>>(),
            vec![last.path.clone()]
        );
        assert!(
            whole.schema_string.is_some(),
            "the checkpoint's metadata was read"
        );
        // seam opens the table again from its manifest's version, and goes on committing.
        drop(s);
        let s = open(Duration::ZERO).await;
        assert_eq!(listed(&s, TABLE), vec![last.path.clone()]);
        let next = replace(Arc::clone(&s), 26).await;
        assert_eq!(in_delta(&s, TABLE).await, vec![next.path.clone()]);
    }

    #[tokio::test]
    async fn the_delta_log_lists_the_manifests_files_also_after_a_stop_between_them() {
        use seam_schemas::tables::requests::TABLE;
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().to_path_buf();
        let open = || open_local(&root);
        let minute = 29_000_002 * 60_000_000_000_i64;
        let s = open().await;
        // Every table starts with version 0 (schema, no files).
        for def in tables::all() {
            assert!(
                root.join(crate::delta::commit_path(def.name, 0)).exists(),
                "{}",
                def.name
            );
        }
        let a = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 1_000))
            .await
            .expect("part");
        s.commit_minutes(minute, vec![(TABLE, vec![a.clone()])])
            .await
            .expect("commit");
        assert_eq!(in_delta(&s, TABLE).await, vec![a.path.clone()]);
        let manifest = root.join(layout::manifest_path(TABLE));
        let before = std::fs::read(&manifest).expect("manifest");

        // A stop after the log's commit and before the manifest: the log is one version
        // ahead; the next start commits the difference back.
        let b = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 2_000))
            .await
            .expect("part");
        s.commit_minutes(minute, vec![(TABLE, vec![b.clone()])])
            .await
            .expect("commit");
        assert_eq!(in_delta(&s, TABLE).await, vec![b.path.clone()]);
        drop(s);
        std::fs::write(&manifest, &before).expect("old manifest");
        let s = open().await;
        assert_eq!(listed(&s, TABLE), vec![a.path.clone()]);
        assert_eq!(in_delta(&s, TABLE).await, vec![a.path.clone()]);

        // A log removed (or a store from before seam kept one): rebuilt from the manifest.
        drop(s);
        std::fs::remove_dir_all(root.join(crate::delta::log_dir(TABLE))).expect("rm log");
        let s = open().await;
        assert_eq!(in_delta(&s, TABLE).await, vec![a.path.clone()]);
        // And the files are microseconds with key/value maps: the types lake engines read.
        let bytes = std::fs::read(root.join(&a.path)).expect("file");
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).expect("parquet");
        let on_disk = reader.schema().clone();
        assert_eq!(
            on_disk
                .field_with_name(columns::TIME)
                .expect("time")
                .data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
    }

    #[tokio::test]
    async fn a_minute_is_replaced_in_both_derived_tables_or_in_neither() {
        use seam_schemas::tables::requests::{EVENTS_TABLE, TABLE};
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().to_path_buf();
        let open = || open_local(&root);
        let minute = 29_000_000 * 60_000_000_000_i64;
        let s = open().await;
        let r = s
            .write_minute_part(TABLE, minute, derived(TABLE, minute + 1))
            .await
            .expect("part");
        let e = s
            .write_minute_part(EVENTS_TABLE, minute, derived(EVENTS_TABLE, minute + 2))
            .await
            .expect("part");
        s.commit_minutes(minute, vec![(TABLE, vec![r]), (EVENTS_TABLE, vec![e])])
            .await
            .expect("replace");
        let (r1, e1) = (listed(&s, TABLE), listed(&s, EVENTS_TABLE));
        assert_eq!((r1.len(), e1.len()), (1, 1));
        assert!(!root.join(REPLACE_JOURNAL).exists());

        // A stop right after the journal was written, before any manifest: the next start
        // lists the new files in both tables and neither old one.
        let tag = format!("M{minute}-");
        let hour = layout::hour_of(minute);
        let mut files = Vec::new();
        for (table, t) in [(TABLE, minute + 3), (EVENTS_TABLE, minute + 4)] {
            let e = s
                .write_named(table, hour, &tag, Rows::of(derived(table, t)))
                .await
                .expect("file");
            files.push((table.to_string(), Some(e)));
        }
        let journal = serde_json::to_vec(&Replacement {
            tag,
            files,
            more: Vec::new(),
        })
        .expect("json");
        std::fs::write(root.join(REPLACE_JOURNAL), journal).expect("journal");
        drop(s);
        let s = open().await;
        let (r2, e2) = (listed(&s, TABLE), listed(&s, EVENTS_TABLE));
        assert_eq!((r2.len(), e2.len()), (1, 1));
        assert_ne!(r2, r1);
        assert_ne!(e2, e1);
        assert!(!root.join(REPLACE_JOURNAL).exists());
        // Manifests on disk agree with memory.
        drop(s);
        let s = open().await;
        assert_eq!(
            (listed(&s, TABLE), listed(&s, EVENTS_TABLE)),
            (r2, e2.clone())
        );

        // A journal that outlived its replacement and names a file removed since (a lost
        // delete, then retention): the next start leaves the missing file out, so the table
        // stays readable.
        let mut gone = s
            .table(TABLE)
            .map(|t| lock(t).files[0].clone())
            .expect("file");
        gone.path = format!("{}-missing.parquet", gone.path.trim_end_matches(".parquet"));
        let stale = Replacement {
            tag: format!("M{minute}-"),
            files: vec![(TABLE.to_string(), Some(gone))],
            more: Vec::new(),
        };
        std::fs::write(
            root.join(REPLACE_JOURNAL),
            serde_json::to_vec(&stale).expect("json"),
        )
        .expect("journal");
        drop(s);
        let s = open().await;
        assert!(listed(&s, TABLE).is_empty());
        assert_eq!(listed(&s, EVENTS_TABLE), e2);
        assert!(!root.join(REPLACE_JOURNAL).exists());
    }
}
