//! Schedule: keeps `requests` and `request_events` up to date inside `seam serve`.
//!
//! Takes arrivals (every batch that becomes visible in `gateway_log_copies`,
//! `gateway_events`, `flow_logs` or `spans`, through the storage's arrival hook); gives, per
//! minute bucket of request start time, the requests of that minute, recomputed from the
//! stored raw records of the minute and its neighbourhood (read through
//! [`crate::read::Reader`], linked and built by [`crate::correlate`]) and written as the
//! minute's files of each derived table ([`crate::write::minute_parts`], one file per
//! slice of a busy minute, listed together by `Storage::commit_minutes`, replacing the
//! previous ones). A bucket is recomputed a couple of seconds after records for it arrive
//! (freshness), and once more when its last request settles (horizon after its last
//! arrival); under load a minute is recomputed at most every four times what it costs. It
//! holds only the set of dirty minutes; the records of one window at a time are read, so
//! memory does not grow with ingest. At shutdown ([`Correlator::drain`]) the minutes still
//! waiting are recomputed for a bounded time and the rest kept in [`PENDING_FILE`] for the
//! next start ([`Correlator::recover`]). [`Correlator::rebuild_since`] recomputes every
//! minute with raw records since a time (after a rule change, or for data older than the
//! horizon); it is idempotent. Recomputations never run concurrently.
//!
//! On a store shared by several nodes only the node holding the correlation lease
//! recomputes ([`Correlator::set_active`]); it is told of other nodes' flushed rows as they
//! become visible to it. The others drop what they were told; a node that takes the lease
//! over looks for the work its predecessor may have left ([`Correlator::take_over`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seam_store::{Storage, StorageError, now_ns};
use tokio::sync::Notify;

use crate::Rules;
use crate::config::CorrelationConfig;
use crate::error::CorrelateError;
use crate::explain::Explanation;
use crate::read::{RAW, Reader, RecordSource};

/// One minute bucket, in nanoseconds.
pub const MINUTE_NS: i64 = 60_000_000_000;

/// File in the data directory holding the minutes a shutdown left to correlate.
pub const PENDING_FILE: &str = "correlation_pending.json";

/// On a shared store: the object (relative to the store's root) holding the minutes the
/// correlating node's stop left to correlate, for whichever node correlates next.
pub const SHARED_PENDING: &str = "tables/_leases/correlation_pending.json";

/// Most minutes one arrival or rebuild step marks (two weeks): a bound on memory whatever
/// the times and the configured link distance.
const MAX_MINUTES_PER_STEP: usize = 14 * 24 * 60;

/// How long before a minute's last recomputation started a record may have been accepted
/// and still not have been visible to it (acknowledged, but not yet in the table when the
/// recomputation read): such records count as new to that minute.
const VISIBILITY_MARGIN_NS: i64 = 10_000_000_000;

/// The correlator's metrics (`GET /metrics`).
pub mod metrics {
    /// Minute recomputations, by `outcome` (`ok`, `failed`, `stopped`).
    pub const STEPS: &str = "seam_correlation_steps_total";
    /// Seconds spent in recomputations, by `phase` (`read`, `link`, `write`); grows by
    /// fractions, so exposed as a gauge that only grows.
    pub const SECONDS: &str = "seam_correlation_seconds_total";
    /// Raw records read by recomputations.
    pub const RECORDS: &str = "seam_correlation_records_read_total";
    /// Slices recomputed (one per minute, more for a minute above `max_step_records`).
    pub const SLICES: &str = "seam_correlation_slices_total";
    /// Minutes waiting for a recomputation (dirty, due or not).
    pub const WAITING: &str = "seam_correlation_minutes_waiting";
    /// Raw records of the last recomputation (how much one step holds).
    pub const LAST_RECORDS: &str = "seam_correlation_last_step_records";

    /// Describes them to the installed registry.
    pub fn describe() {
        use ::metrics::{describe_counter, describe_gauge};
        describe_counter!(
            STEPS,
            "Minute recomputations of the correlator, by outcome."
        );
        describe_gauge!(
            SECONDS,
            "Seconds the correlator spent recomputing minutes, by phase (read, link, write)."
        );
        describe_counter!(RECORDS, "Raw records the correlator read.");
        describe_counter!(
            SLICES,
            "Time slices the correlator recomputed (a busy minute is done in several)."
        );
        describe_gauge!(
            WAITING,
            "Minutes waiting for the correlator (records arrived, or requests to settle)."
        );
        describe_gauge!(
            LAST_RECORDS,
            "Raw records the correlator's last recomputation read and held."
        );
    }
}

/// Sets its flag when dropped: a recomputation's future dropped at a stop tells its work
/// thread to give up.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What one slice's link step gives: the rows to write, how many requests, when the
/// unsettled ones settle, and the earlier minutes owning requests the slice's records belong
/// to (with the latest arrival of each such request).
struct Linked {
    parts: Vec<(&'static str, arrow::record_batch::RecordBatch)>,
    requests: usize,
    settle: Option<i64>,
    earlier: BTreeMap<i64, i64>,
}

/// What a minute's slices gave so far: its files per derived table (written, not listed
/// yet), requests, settle time and earlier minutes (as in [`Linked`]).
#[derive(Default)]
struct Done {
    files: Vec<(&'static str, Vec<seam_schemas::layout::FileEntry>)>,
    requests: usize,
    settle: Option<i64>,
    earlier: BTreeMap<i64, i64>,
}

/// The time slices `[lo, hi)` a minute holding `own` records of its own is recomputed in:
/// one when `own` ≤ `max`, else as many equal slices as make about `max` records each (at
/// most 60, one a second).
fn slices(minute: i64, own: u64, max: u64) -> Vec<(i64, i64)> {
    let k = own.div_ceil(max.max(1)).clamp(1, 60);
    let k = i64::try_from(k).unwrap_or(60);
    let end = minute.saturating_add(MINUTE_NS);
    (0..k)
        .map(|i| {
            let lo = minute.saturating_add(MINUTE_NS / k * i);
            let hi = if i + 1 == k {
                end
            } else {
                minute.saturating_add(MINUTE_NS / k * (i + 1))
            };
            (lo, hi)
        })
        .collect()
}

/// The start of the minute bucket holding `t` (ns).
pub fn minute_of(t: i64) -> i64 {
    t.div_euclid(MINUTE_NS) * MINUTE_NS
}

/// The minute starts from the minute of `from` to the minute of `to`, both included, with
/// checked arithmetic (no step past `i64::MAX`) and at most [`MAX_MINUTES_PER_STEP`] of them:
/// stored times lie in the event-time window, so a longer span means a bug, not data.
fn minutes_between(from: i64, to: i64) -> impl Iterator<Item = i64> {
    let first = minute_of(from);
    std::iter::successors(Some(first), |x| x.checked_add(MINUTE_NS))
        .take_while(move |x| *x <= to)
        .take(MAX_MINUTES_PER_STEP)
}

/// The instant to recompute a minute whose unsettled requests settle at `settle_at_ns`:
/// one second after, and at most a day ahead (an `Instant` past the clock's range would
/// panic).
fn settle_instant(settle_at_ns: i64) -> Instant {
    let wait = settle_at_ns
        .saturating_sub(now_ns())
        .clamp(0, 86_400_000_000_000);
    Instant::now() + Duration::from_nanos(wait.unsigned_abs()) + Duration::from_secs(1)
}

/// The correlator.
#[derive(Debug)]
pub struct Correlator {
    reader: Reader,
    storage: Arc<Storage>,
    config: CorrelationConfig,
    rules: Arc<Rules>,
    /// Minute (ns) → when its last recomputation started (wall clock, ns).
    last_start: Mutex<BTreeMap<i64, i64>>,
    /// Minute (ns) → when to recompute it.
    dirty: Mutex<BTreeMap<i64, Instant>>,
    wake: Notify,
    /// Serialises recomputations (live loop and rebuilds).
    busy: tokio::sync::Mutex<()>,
    /// Where minutes left at shutdown are kept for the next start.
    pending: PathBuf,
    /// Minutes being recomputed by the live loop (a stop may cancel it mid-way).
    in_flight: Mutex<BTreeSet<i64>>,
    /// Whether this node recomputes (always on a store of its own; on a shared store while
    /// it holds the correlation lease).
    active: AtomicBool,
    /// How long after its acknowledgement a record may become visible to a recomputation
    /// (ns): [`VISIBILITY_MARGIN_NS`], or more on a shared store (another node's rows are seen
    /// after its flush and this node's next refresh).
    visibility_margin: std::sync::atomic::AtomicI64,
}

impl Correlator {
    /// A correlator over `storage`, reading raw records through `source`.
    /// Minutes left over at shutdown are kept in `pending` (a JSON array of minute starts in
    /// nanoseconds).
    pub fn new(
        source: Arc<dyn RecordSource>,
        storage: Arc<Storage>,
        config: CorrelationConfig,
        pending: PathBuf,
    ) -> Arc<Self> {
        let rules = Arc::new(config.rules());
        Arc::new(Self {
            reader: Reader::new(source),
            storage,
            config,
            rules,
            last_start: Mutex::new(BTreeMap::new()),
            pending,
            in_flight: Mutex::new(BTreeSet::new()),
            dirty: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            busy: tokio::sync::Mutex::new(()),
            active: AtomicBool::new(true),
            visibility_margin: std::sync::atomic::AtomicI64::new(VISIBILITY_MARGIN_NS),
        })
    }

    /// Widens how long after its acknowledgement a record may first be visible to a
    /// recomputation (never below the built-in 10 s): on a shared store, another node's
    /// flush interval plus this node's refresh interval.
    pub fn set_visibility_margin(&self, margin: Duration) {
        let ns = i64::try_from(margin.as_nanos()).unwrap_or(i64::MAX);
        self.visibility_margin
            .store(ns.max(VISIBILITY_MARGIN_NS), Ordering::Relaxed);
    }

    fn visibility_margin_ns(&self) -> i64 {
        self.visibility_margin.load(Ordering::Relaxed)
    }

    /// Turns recomputation on or off (on a shared store: whether this node holds the
    /// correlation lease). Off, the minutes it is told of are dropped: the node that
    /// correlates is told of them too.
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Release);
        if !on && let Ok(mut d) = self.dirty.lock() {
            d.clear();
            ::metrics::gauge!(metrics::WAITING).set(0.0);
        }
        self.wake.notify_one();
    }

    /// Whether this node recomputes (see [`Correlator::set_active`]).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// On taking the correlation over from another node: turns recomputation on and marks
    /// what the last holder may have left undone: unsettled requests, and every minute with
    /// records that arrived within the horizon plus `gap` (how long the lease may have been
    /// without a live holder, plus how late other nodes' rows become visible).
    ///
    /// # Errors
    /// A read failure (recomputation is on anyway).
    pub async fn take_over(&self, gap: Duration) -> Result<usize, CorrelateError> {
        self.set_active(true);
        // What the last correlating node's stop left, whatever its age.
        let left: Vec<i64> = match self.storage.read_object(SHARED_PENDING).await? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "Unreadable list of minutes left to correlate ignored.");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let now = Instant::now();
        for m in &left {
            self.schedule(minute_of(*m), now);
        }
        let gap = i64::try_from(gap.as_nanos()).unwrap_or(i64::MAX);
        let n = self.recover_within(gap).await?;
        if !left.is_empty() {
            self.storage.delete_object(SHARED_PENDING).await?;
        }
        Ok(n + left.len())
    }

    /// Installs the arrival hook on the storage.
    pub fn attach(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.storage.set_arrival_hook(Box::new(move |table, times| {
            if let Some(c) = me.upgrade()
                && RAW.contains(&table)
            {
                let minutes: BTreeSet<i64> = times.iter().flatten().map(minute_of).collect();
                c.arrived(minutes);
            }
        }));
    }

    /// Marks the minutes of arrived records for recomputation. A request starts with its
    /// earliest record, so records of a minute belong to requests of that minute or of
    /// earlier ones: the recomputation of the minute finds the latter (it reads the records
    /// linked to the minute's own) and marks their minutes in turn.
    pub fn arrived(&self, minutes: BTreeSet<i64>) {
        let due = Instant::now() + self.config.delay;
        if let Ok(mut d) = self.dirty.lock() {
            for m in minutes {
                let e = d.entry(m).or_insert(due);
                *e = (*e).min(due);
            }
            ::metrics::gauge!(metrics::WAITING).set(d.len() as f64);
        }
        self.wake.notify_one();
    }

    fn schedule(&self, minute: i64, at: Instant) {
        if let Ok(mut d) = self.dirty.lock() {
            let e = d.entry(minute).or_insert(at);
            *e = (*e).min(at);
        }
    }

    /// Marks for recomputation what a restart may have left stale: unsettled requests, and
    /// records that arrived within the horizon.
    ///
    /// # Errors
    /// A read failure.
    pub async fn recover(&self) -> Result<usize, CorrelateError> {
        self.recover_within(0).await
    }

    /// [`Correlator::recover`] with arrivals looked for `extra_ns` further back.
    async fn recover_within(&self, extra_ns: i64) -> Result<usize, CorrelateError> {
        if !self.is_active() {
            return Ok(0);
        }
        let since = now_ns()
            .saturating_sub(self.rules.horizon_ns)
            .saturating_sub(MINUTE_NS)
            .saturating_sub(extra_ns);
        let mut minutes = self.reader.unsettled_minutes().await?;
        for t in RAW {
            let arrived = self.reader.minutes_arrived_since(t, since).await?;
            self.arrived(arrived);
        }
        // Minutes the last shutdown left (its drain ran out of time).
        minutes.extend(self.pending_minutes().into_iter().map(minute_of));
        let n = minutes.len();
        let now = Instant::now();
        for m in minutes {
            self.schedule(m, now);
        }
        self.wake.notify_one();
        Ok(n)
    }

    /// Recomputes due minutes until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if !self.is_active() {
                if let Ok(mut d) = self.dirty.lock() {
                    d.clear();
                }
                continue;
            }
            let now = Instant::now();
            let due: Vec<i64> = match self.dirty.lock() {
                Ok(mut d) => {
                    let due: Vec<i64> = d
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(m, _)| *m)
                        .collect();
                    for m in &due {
                        d.remove(m);
                    }
                    ::metrics::gauge!(metrics::WAITING).set(d.len() as f64);
                    due
                }
                Err(_) => Vec::new(),
            };
            for m in due {
                let started = Instant::now();
                if let Ok(mut f) = self.in_flight.lock() {
                    f.insert(m);
                }
                let result = self.recompute_minute(m).await;
                if let Ok(mut f) = self.in_flight.lock() {
                    f.remove(&m);
                }
                // Under heavy ingest a minute is dirty again at once: recompute it at most
                // every four times what it costs, so correlation never takes over the CPU.
                let pace = started.elapsed() * 4;
                if pace > self.config.delay
                    && let Ok(mut d) = self.dirty.lock()
                    && let Some(at) = d.get_mut(&m)
                {
                    *at = (*at).max(Instant::now() + pace);
                }
                match result {
                    Ok(Some(settle_at)) => self.schedule(m, settle_instant(settle_at)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(minute = m, error = %e, "Correlation failed; retrying in 5 s.");
                        self.schedule(m, Instant::now() + Duration::from_secs(5));
                    }
                }
            }
        }
    }

    /// At shutdown: recomputes dirty minutes for up to `shutdown_drain`, then writes the
    /// minutes left (and those that failed) to the pending file, which [`Correlator::recover`]
    /// schedules at the next start.
    pub async fn drain(&self) {
        if !self.is_active() {
            // Another node correlates: nothing of this node's is left to it.
            let _ = std::fs::remove_file(&self.pending);
            return;
        }
        let mut minutes: BTreeSet<i64> = BTreeSet::new();
        // Minutes whose recomputation the stop cancelled.
        if let Ok(mut f) = self.in_flight.lock() {
            minutes.append(&mut f);
        }
        let until = Instant::now() + self.config.shutdown_drain;
        let mut left = Vec::new();
        loop {
            // Recomputing a minute can mark earlier ones: take them too.
            if let Ok(mut d) = self.dirty.lock() {
                minutes.extend(std::mem::take(&mut *d).into_keys());
            }
            let Some(m) = minutes.pop_first() else {
                break;
            };
            // A recomputation cut short by the deadline writes nothing it has not published
            // whole (files appear by rename; an unlisted file is removed at the next start).
            let remaining = until.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                left.push(m);
                left.extend(std::mem::take(&mut minutes));
                break;
            }
            match tokio::time::timeout(remaining, self.recompute_minute(m)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(minute = m, error = %e, "Correlation at shutdown failed; it runs again at the next start.");
                    left.push(m);
                }
                Err(_) => left.push(m),
            }
        }
        let path = &self.pending;
        if left.is_empty() {
            let _ = std::fs::remove_file(path);
            return;
        }
        // On a shared store the next correlating node may be another: the minutes go to the
        // store (added to any left before), not to this node's data directory.
        if self.storage.shared() {
            let mut all: BTreeSet<i64> = left.iter().copied().collect();
            if let Ok(Some(bytes)) = self.storage.read_object(SHARED_PENDING).await
                && let Ok(before) = serde_json::from_slice::<Vec<i64>>(&bytes)
            {
                all.extend(before);
            }
            let all: Vec<i64> = all.into_iter().collect();
            match serde_json::to_vec(&all) {
                Ok(bytes) => match self.storage.write_object(SHARED_PENDING, bytes).await {
                    Ok(()) => tracing::info!(
                        minutes = left.len(),
                        "Correlation of some minutes left for the next correlating node (shutdown_drain reached)."
                    ),
                    Err(e) => {
                        tracing::warn!(minutes = left.len(), error = %e, "Could not keep the minutes left to correlate; the next correlating node recomputes those within its look-back.")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "Could not encode the minutes left to correlate.")
                }
            }
            return;
        }
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&left)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut f = std::fs::File::create(&tmp)?;
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)
            });
        match written {
            Ok(()) => tracing::info!(
                minutes = left.len(),
                file = %path.display(),
                "Correlation of some minutes left for the next start (shutdown_drain reached)."
            ),
            Err(e) => tracing::warn!(
                minutes = left.len(),
                error = %e,
                "Could not keep the minutes left to correlate; records that arrived within the horizon are recomputed at the next start."
            ),
        }
    }

    /// The minutes the last shutdown left to correlate (empty without a pending file).
    fn pending_minutes(&self) -> Vec<i64> {
        let path = &self.pending;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "Unreadable correlation pending file ignored.");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Recomputes every minute holding raw records with event time at or after `since_ns`.
    /// Gives the number of requests written.
    ///
    /// # Errors
    /// The first failure.
    pub async fn rebuild_since(&self, since_ns: i64) -> Result<usize, CorrelateError> {
        if !self.is_active() {
            return Err(CorrelateError::Storage(StorageError::NotCorrelating));
        }
        let minutes = self.reader.minutes_with_records_since(since_ns).await?;
        // Minutes whose requests may start up to a link distance before their records.
        let mut all = BTreeSet::new();
        for m in minutes {
            let from = m
                .saturating_sub(self.rules.max_link_distance_ns)
                .max(since_ns);
            all.extend(minutes_between(from, m));
        }
        // Derived minutes that no longer have records are emptied too.
        all.extend(self.reader.derived_minutes_since(since_ns).await?);
        let mut written = 0;
        for m in all {
            let (n, settle_at) = self.recompute(m).await?;
            written += n;
            if let Some(at) = settle_at {
                self.schedule(m, settle_instant(at));
            }
        }
        Ok(written)
    }

    /// Recomputes one minute; gives when its unsettled requests settle.
    ///
    /// # Errors
    /// Reading or writing failed.
    pub async fn recompute_minute(&self, minute: i64) -> Result<Option<i64>, CorrelateError> {
        Ok(self.recompute(minute).await?.1)
    }

    /// Recomputes one minute; gives how many requests it wrote and when its unsettled
    /// requests settle.
    ///
    /// A minute holding more than `max_step_records` records of its own is done in time
    /// slices, each read, linked and written on its own (its files are listed only when
    /// the whole minute is done, in one update), so one step's memory stays bounded. Reading
    /// is async (the query runtime); linking the records and building the rows run on a
    /// blocking thread, never on the async workers, and give up as soon as this future is
    /// dropped (a stop). The requests of earlier minutes that the minute's records belong
    /// to are left to those minutes: each is marked for recomputation when such a request
    /// has records its minute's last recomputation may not have seen.
    async fn recompute(&self, minute: i64) -> Result<(usize, Option<i64>), CorrelateError> {
        let _busy = self.busy.lock().await;
        let started_ns = now_ns();
        let mut done = Done::default();
        if let Err(e) = self.recompute_slices(minute, &mut done).await {
            let outcome = match e {
                CorrelateError::Stopped => "stopped",
                _ => "failed",
            };
            ::metrics::counter!(metrics::STEPS, "outcome" => outcome).increment(1);
            // Written, never listed: removed now (else at the next start).
            let files: Vec<_> = done.files.into_iter().flat_map(|(_, f)| f).collect();
            self.storage.discard(&files).await;
            return Err(e);
        }
        // A failed commit keeps its files: once its journal is written they may be listed,
        // and the next start completes it.
        let committed = self
            .storage
            .commit_minutes(minute, std::mem::take(&mut done.files))
            .await;
        if let Err(e) = committed {
            ::metrics::counter!(metrics::STEPS, "outcome" => "failed").increment(1);
            return Err(e.into());
        }
        ::metrics::counter!(metrics::STEPS, "outcome" => "ok").increment(1);
        let new_to = {
            let mut last = self
                .last_start
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            last.insert(minute, started_ns);
            while last.len() > MAX_MINUTES_PER_STEP {
                last.pop_first();
            }
            done.earlier
                .iter()
                .filter(|(m, ingest)| {
                    last.get(m)
                        .is_none_or(|s| **ingest >= s.saturating_sub(self.visibility_margin_ns()))
                })
                .map(|(m, _)| *m)
                .collect::<Vec<i64>>()
        };
        let now = Instant::now();
        for m in new_to {
            self.schedule(m, now);
        }
        Ok((done.requests, done.settle))
    }

    /// The steps of [`Correlator::recompute`]: each slice of the minute read, linked, and
    /// its rows written as files of the minute (not listed yet), into `done`.
    async fn recompute_slices(&self, minute: i64, done: &mut Done) -> Result<(), CorrelateError> {
        let end = minute.saturating_add(MINUTE_NS);
        let t0 = Instant::now();
        let own = self.reader.count(minute, end).await?;
        ::metrics::gauge!(metrics::SECONDS, "phase" => "read")
            .increment(t0.elapsed().as_secs_f64());
        let d = self.rules.max_link_distance_ns;
        for (lo, hi) in slices(minute, own, self.config.max_step_records) {
            let t0 = Instant::now();
            let input = self
                .reader
                // The slice's own records run a twin distance past its end: a gateway copy
                // without a correlation id just before the edge pairs up with its twin just
                // after it (`crate::TWIN_NS`), and only the slice owning the pair reads both.
                .read_linked(
                    lo.saturating_sub(d),
                    hi.saturating_add(d),
                    lo,
                    hi.saturating_add(crate::TWIN_NS),
                )
                .await?;
            ::metrics::counter!(metrics::SLICES).increment(1);
            let records =
                input.gateway.len() + input.events.len() + input.flows.len() + input.spans.len();
            ::metrics::counter!(metrics::RECORDS).increment(records as u64);
            ::metrics::gauge!(metrics::LAST_RECORDS).set(records as f64);
            let t1 = Instant::now();
            ::metrics::gauge!(metrics::SECONDS, "phase" => "read")
                .increment(t1.duration_since(t0).as_secs_f64());
            let cancelled = Arc::new(AtomicBool::new(false));
            let _cancel = CancelOnDrop(Arc::clone(&cancelled));
            let rules = Arc::clone(&self.rules);
            let linked = tokio::task::spawn_blocking(move || {
                link_slice(input, &rules, minute, (lo, hi), &cancelled)
            })
            .await
            .map_err(|e| CorrelateError::Task(e.to_string()))??
            .ok_or(CorrelateError::Stopped)?;
            let t2 = Instant::now();
            ::metrics::gauge!(metrics::SECONDS, "phase" => "link")
                .increment(t2.duration_since(t1).as_secs_f64());
            done.requests += linked.requests;
            done.settle = done.settle.max(linked.settle);
            for (m, ingest) in linked.earlier {
                let e = done.earlier.entry(m).or_insert(ingest);
                *e = (*e).max(ingest);
            }
            for (table, batch) in linked.parts {
                let at = match done.files.iter().position(|(t, _)| *t == table) {
                    Some(at) => at,
                    None => {
                        done.files.push((table, Vec::new()));
                        done.files.len() - 1
                    }
                };
                if batch.num_rows() > 0 {
                    let file = self.storage.write_minute_part(table, minute, batch).await?;
                    if let Some((_, files)) = done.files.get_mut(at) {
                        files.push(file);
                    }
                }
            }
            ::metrics::gauge!(metrics::SECONDS, "phase" => "write")
                .increment(t2.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The records that can belong to requests starting in `minute`: the minute's own and
    /// those within the link distance around it that share their ids.
    async fn read_minute(&self, minute: i64) -> Result<crate::Input, CorrelateError> {
        let d = self.rules.max_link_distance_ns;
        let end = minute.saturating_add(MINUTE_NS);
        let (a, b) = (minute.saturating_sub(d), end.saturating_add(d));
        Ok(self.reader.read_linked(a, b, minute, end).await?)
    }

    /// Why the stored request (or probe) `id` is what it is: its minute's records are read
    /// again and linked by the same rules, and the component with that id explained. Of
    /// several stored with the same id (a reused correlation id), the one starting closest
    /// to `at` (ns), else the earliest; the others' start times are listed in
    /// [`Explanation::others`]. `None` when no stored request or probe has that id (or its
    /// records are gone).
    ///
    /// # Errors
    /// Reading failed.
    pub async fn explain(
        &self,
        id: &str,
        at: Option<i64>,
    ) -> Result<Option<Explanation>, CorrelateError> {
        let times = self.reader.times_of(id).await?;
        let chosen = match at {
            Some(at) => times.iter().min_by_key(|t| t.abs_diff(at)),
            None => times.first(),
        };
        let Some(&t) = chosen else {
            return Ok(None);
        };
        let minute = minute_of(t);
        let input = self.read_minute(minute).await?;
        let mut e = crate::explain::explain_id(input, &self.rules, now_ns(), id, Some(t));
        if let Some(e) = e.as_mut() {
            e.others = times
                .iter()
                .filter(|x| **x != e.time_ns)
                .map(|x| crate::explain::rfc3339(*x))
                .collect();
        }
        Ok(e)
    }
}

/// Links a slice's records (read by [`crate::read::Reader::read_linked`]) and builds the
/// rows of the requests and probes of `minute` starting in the slice `[lo, hi)`; `None`
/// when `cancelled` was set meanwhile. Runs on a blocking thread.
fn link_slice(
    input: crate::Input,
    rules: &Rules,
    minute: i64,
    (lo, hi): (i64, i64),
    cancelled: &AtomicBool,
) -> Result<Option<Linked>, CorrelateError> {
    let Some(all) = crate::correlate_all_unless(input, rules, now_ns(), cancelled) else {
        return Ok(None);
    };
    let mut earlier: BTreeMap<i64, i64> = BTreeMap::new();
    // Requests of this slice are kept; those of earlier minutes are noted for their
    // minutes; those of the minute's other slices are theirs.
    let mut keep = |t: i64, ingest: i64| {
        if (lo..hi).contains(&t) {
            return true;
        }
        // A request of an earlier minute: its minute, and those between (rows there may
        // have been requests this one now merges with), are recomputed if its records are
        // new to them.
        for m in minutes_between(t, minute.saturating_sub(1)) {
            let e = earlier.entry(m).or_insert(ingest);
            *e = (*e).max(ingest);
        }
        false
    };
    let reqs: Vec<_> = all
        .requests
        .into_iter()
        .filter(|r| keep(r.time, r.ingest_time))
        .collect();
    let probes: Vec<_> = all
        .probes
        .into_iter()
        .filter(|p| keep(p.time, p.ingest_time))
        .collect();
    let settle = reqs
        .iter()
        .filter(|r| !r.settled)
        .map(|r| r.ingest_time)
        .chain(probes.iter().filter(|p| !p.settled).map(|p| p.ingest_time))
        .map(|t| t.saturating_add(rules.horizon_ns))
        .max();
    if cancelled.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let parts = crate::write::minute_parts(&reqs, &probes)?;
    Ok(Some(Linked {
        parts,
        requests: reqs.len(),
        settle,
        earlier,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_bounded_and_floor_negative_times() {
        assert_eq!(minute_of(-1), -MINUTE_NS);
        assert_eq!(minute_of(MINUTE_NS + 1), MINUTE_NS);
        assert_eq!(minutes_between(0, 3 * MINUTE_NS).count(), 4);
        assert_eq!(minutes_between(0, i64::MAX).count(), MAX_MINUTES_PER_STEP);
        assert_eq!(minutes_between(i64::MAX - 1, i64::MAX).count(), 1);
    }

    #[test]
    fn a_big_minute_is_done_in_slices_covering_it_once() {
        let m = 7 * MINUTE_NS;
        assert_eq!(slices(m, 0, 200_000), vec![(m, m + MINUTE_NS)]);
        assert_eq!(slices(m, 200_000, 200_000), vec![(m, m + MINUTE_NS)]);
        let s = slices(m, 1_000_001, 200_000);
        assert_eq!(s.len(), 6);
        assert_eq!(s.first().map(|x| x.0), Some(m));
        assert_eq!(s.last().map(|x| x.1), Some(m + MINUTE_NS));
        assert!(s.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
        assert_eq!(slices(m, u64::MAX, 1).len(), 60);
        assert_eq!(slices(m, 10, 0).len(), 10);
    }
}
