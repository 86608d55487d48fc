//! Azure Storage blobs as a pulled source (`type = "azure_blob"`): the archives APIM's
//! diagnostic settings write to a storage account, or any container of JSON Lines or log
//! text.
//!
//! ```text
//! resourceId=/SUBSCRIPTIONS/<sub>/RESOURCEGROUPS/<rg>/PROVIDERS/MICROSOFT.APIMANAGEMENT/
//!     SERVICE/<name>/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json     (an append blob per hour)
//!
//!  list (full / recent hours) ─▶ per blob: range read from its offset ─▶ whole lines
//!        ─▶ Pulled{text, origin = blob name, position = (blob name, offset, detail)}
//!        ─▶ SourceCtx::deliver (records and position in one write-ahead log entry)
//! ```
//!
//! - **Growing blobs.** The current hour's `PT1H.json` is an append blob that keeps growing.
//!   Each blob is read from the offset seam took it to, in range reads of at most
//!   `max_batch_bytes`; what was taken is never read again. A read that ends inside a record
//!   takes up to its last newline; the rest waits for the next append. A last line without
//!   a newline is taken as it is only once the blob cannot grow any more: its hour is over
//!   (or its name has no hour) and it has not changed for `settle`.
//! - **Incremental listing.** The whole prefix is listed at start and every
//!   `relist_interval`; between those, only the previous and the current hour folder (UTC) of
//!   each APIM service seen. While a listed blob is outside that layout, or no service has
//!   been seen yet, every poll lists the whole prefix.
//! - **Positions.** Key = the blob's name, offset = bytes taken, detail =
//!   `{"size","etag","done","line","tail_crc","tail_len"}` (`line`: lines taken, so refused
//!   lines are reported with their real line numbers; `tail_*`: CRC-32 of the last up to
//!   256 bytes taken). A blob whose hour is over, all taken and unchanged for `settle` is
//!   *done*: its position is written once with `done = true` and it is not read again,
//!   unless a listing shows it changed.
//! - **Rewritten blobs.** Each read starts `tail_len` bytes before the offset and checks them
//!   against `tail_crc` (also after a restart, and once after the entity tag changed with no
//!   new bytes). Other bytes there, or a blob now shorter than the offset, mean a new blob
//!   under the same name: reported (`read`) and read again from its start.
//! - **Names the client cannot take.** A blob name with an empty segment (`a//b`) fails a
//!   whole listing; the listing then goes around it folder by folder, and only the folder
//!   holding that name is left out (reported once, `read`). A listed blob that reading does
//!   not find twice in a row (a name ending with `/` is listed without it) is reported once.
//! - **Failures.** Network and authentication failures are reported (`network`, `auth`) and
//!   retried with a growing backoff; after an authentication failure the secret is read
//!   again (a rotated SAS token is picked up).
//! - **Lag.** Bytes listed and not yet taken, and the age of the oldest blob with such bytes.
//!
//! Secrets (account keys, SAS tokens) come from the environment or files and appear in no
//! position, origin, message or log line.

mod connect;
mod cut;
mod layout;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use object_store::azure::MicrosoftAzure;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use self::connect::Scrub;
use self::cut::{Cut, Detail, MAX_LINES, Tail, past_tail};
use self::state::{Blob, restart_if_rewritten, restart_replaced};
use super::pull::config::AzureBlobSource;
use super::pull::{Position, Pulled, SourceCtx, Stopped, next_backoff};

/// First wait after a failed poll (doubled up to 10 s while failures go on).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Widest range read while looking for the end of one line longer than `max_batch_bytes`.
const WIDEST_READ: u64 = 64 << 20;

/// Most folders taken apart (one delimiter listing each) while one listing goes around
/// blob names the client cannot take; the folders left over are reported as not listed.
const MAX_SPLITS: usize = 64;

/// Runs the source until seam stops: lists, reads what grew, delivers it, sleeps
/// `poll_interval`; failures are reported and retried with backoff, never fatal.
pub async fn run(ctx: SourceCtx, cfg: AzureBlobSource) -> Stopped {
    let mut reader = Reader::new(ctx.clone(), cfg);
    let mut backoff = FIRST_BACKOFF;
    loop {
        reader.troubled = false;
        let wait = match reader.poll().await {
            Ok(()) => {
                if !reader.troubled {
                    ctx.ok();
                }
                backoff = FIRST_BACKOFF;
                reader.cfg.poll_interval
            }
            Err(Fail::Stopped) => return Stopped,
            Err(Fail::Error {
                kind,
                message,
                reconnect,
            }) => {
                ctx.error(kind, &message);
                if reconnect {
                    reader.store = None;
                }
                let wait = backoff;
                backoff = next_backoff(backoff);
                wait
            }
        };
        if ctx.sleep(wait).await.is_err() {
            return Stopped;
        }
    }
}

/// Why a poll ended early.
enum Fail {
    /// seam is stopping.
    Stopped,
    /// Reported with [`SourceCtx::error`] and retried after a backoff.
    Error {
        /// `auth`, `network`, `read`, `config`.
        kind: &'static str,
        /// Scrubbed of secrets.
        message: String,
        /// Drop the client: read the secrets again and build a new one.
        reconnect: bool,
    },
}

impl From<Stopped> for Fail {
    fn from(_: Stopped) -> Self {
        Fail::Stopped
    }
}

/// True when a listing failed on a blob name that `object_store` cannot turn into a path:
/// an empty segment (`a//b`, `a//`), a `.` or `..` segment. One such name fails the whole
/// page of results it is on.
fn bad_name(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::InvalidPath { .. })
}

/// A folder as messages name it.
fn shown(folder: &str) -> String {
    if folder.is_empty() {
        "the container's root".to_string()
    } else if folder.ends_with('/') {
        format!("folder {folder}")
    } else {
        format!("folder {folder}/")
    }
}

/// Awaits `fut`, or gives up when seam stops.
async fn or_stop<T>(ctx: &SourceCtx, fut: impl Future<Output = T>) -> Result<T, Fail> {
    let mut stop = ctx.stop_signal();
    if *stop.borrow() {
        return Err(Fail::Stopped);
    }
    tokio::select! {
        _ = stop.wait_for(|v| *v) => Err(Fail::Stopped),
        v = fut => Ok(v),
    }
}

/// The source's state between polls.
struct Reader {
    ctx: SourceCtx,
    cfg: AzureBlobSource,
    /// `cfg.prefix`, or empty.
    prefix: String,
    not_before: Option<DateTime<Utc>>,
    /// The client; `None` until built, and after an authentication failure.
    store: Option<Arc<MicrosoftAzure>>,
    scrub: Scrub,
    /// Blobs by name.
    blobs: BTreeMap<String, Blob>,
    /// Service folders seen (the part of names before `y=YYYY`).
    services: BTreeSet<String>,
    /// When the whole prefix was last listed.
    last_full: Option<Instant>,
    /// Folders reported as not listable (a blob name there the client cannot take), each
    /// reported once; emptied by a full listing that did not have to go around any name.
    blocked: BTreeSet<String>,
    /// Listed blobs that a read did not find, and how many times in a row.
    missing: HashMap<String, u32>,
    /// An error was reported during this poll: the status keeps it until a clean poll.
    troubled: bool,
}

impl Reader {
    fn new(ctx: SourceCtx, cfg: AzureBlobSource) -> Self {
        // Validated at start (`SourceConfig::validate`).
        let not_before = cfg
            .not_before
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let prefix = cfg.prefix.clone().unwrap_or_default();
        Self {
            ctx,
            cfg,
            prefix,
            not_before,
            store: None,
            scrub: Scrub::default(),
            blobs: BTreeMap::new(),
            services: BTreeSet::new(),
            last_full: None,
            blocked: BTreeSet::new(),
            missing: HashMap::new(),
            troubled: false,
        }
    }

    /// The client, built from the secrets when there is none.
    fn connect(&mut self) -> Result<Arc<MicrosoftAzure>, Fail> {
        if let Some(s) = &self.store {
            return Ok(Arc::clone(s));
        }
        let access = connect::access(&self.cfg).map_err(|e| Fail::Error {
            kind: "config",
            message: e.to_string(),
            reconnect: true,
        })?;
        self.scrub = Scrub::new(access.secrets());
        let store = match connect::build(&access, &self.cfg.container) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                return Err(Fail::Error {
                    kind: "config",
                    message: self
                        .scrub
                        .clean(&format!("cannot set up the Azure Storage client: {e}")),
                    reconnect: true,
                });
            }
        };
        tracing::debug!(
            source = self.ctx.name(),
            account = %access.account,
            container = %self.cfg.container,
            "Azure Storage client set up."
        );
        self.store = Some(Arc::clone(&store));
        Ok(store)
    }

    /// A failed request as a [`Fail`], scrubbed.
    fn failure(&self, what: &str, e: &object_store::Error) -> Fail {
        let kind = connect::kind(e);
        Fail::Error {
            kind,
            message: self.scrub.clean(&format!("{what}: {e}")),
            reconnect: kind == "auth",
        }
    }

    /// One poll: list, read everything that grew (oldest first), mark finished blobs.
    async fn poll(&mut self) -> Result<(), Fail> {
        let store = self.connect()?;
        let now = Utc::now();
        let full = self.full_listing_due();
        let listed = if full {
            self.list_all(&store).await?
        } else {
            self.list_recent(&store, now).await?
        };
        tracing::trace!(
            source = self.ctx.name(),
            full,
            listed = listed.len(),
            "Listed blobs."
        );
        self.reconcile(listed, full);
        // A folder left out of listings, or a blob that cannot be read, keeps the error in
        // the status (reported once) until a listing shows it gone.
        if !self.blocked.is_empty() || self.missing.values().any(|&n| n >= 2) {
            self.troubled = true;
        }
        self.report_lag();
        self.read_all(&store).await?;
        self.finish().await?;
        self.report_lag();
        Ok(())
    }

    fn full_listing_due(&self) -> bool {
        match self.last_full {
            None => true,
            Some(at) => {
                at.elapsed() >= self.cfg.relist_interval
                    || self.services.is_empty()
                    || self.blobs.values().any(|b| b.hour.is_none())
            }
        }
    }

    /// Lists `prefix` (the whole container when `None`). When a blob name the client cannot
    /// take fails the listing, goes around it ([`Reader::list_around`]); the flag says so.
    async fn list(
        &mut self,
        store: &MicrosoftAzure,
        prefix: Option<&Path>,
    ) -> Result<(Vec<ObjectMeta>, bool), Fail> {
        let listing = store.list(prefix).try_collect::<Vec<ObjectMeta>>();
        let listed = or_stop(&self.ctx, listing).await?;
        match listed {
            Ok(v) => Ok((v, false)),
            Err(e) if bad_name(&e) => Ok((self.list_around(store, prefix).await?, true)),
            Err(e) => Err(self.failure(&format!("listing container {}", self.cfg.container), &e)),
        }
    }

    /// Lists `prefix` around blob names the client cannot take, one folder level at a time:
    /// a delimiter listing of the folder gives its blobs and subfolders, then each subfolder
    /// is listed flat, and a subfolder that fails the same way is taken apart in turn. A
    /// folder whose own level cannot be listed (it holds the bad name, as `x` holds
    /// `x//y.json`) is left out: reported once (`read`, naming it) while everything else is
    /// listed. At most [`MAX_SPLITS`] folders are taken apart.
    async fn list_around(
        &mut self,
        store: &MicrosoftAzure,
        prefix: Option<&Path>,
    ) -> Result<Vec<ObjectMeta>, Fail> {
        let mut out = Vec::new();
        // (folder, why) of the folders left out.
        let mut left_out: Vec<(String, String)> = Vec::new();
        let mut pending: Vec<Path> = vec![prefix.cloned().unwrap_or_default()];
        let mut splits = 0usize;
        while let Some(folder) = pending.pop() {
            let here: &str = folder.as_ref();
            if splits >= MAX_SPLITS {
                left_out.push((
                    here.to_string(),
                    format!("more than {MAX_SPLITS} folders to go around"),
                ));
                continue;
            }
            splits = splits.saturating_add(1);
            let listed = or_stop(&self.ctx, store.list_with_delimiter(Some(&folder))).await?;
            let level = match listed {
                Ok(l) => l,
                Err(e) if bad_name(&e) => {
                    left_out.push((here.to_string(), e.to_string()));
                    continue;
                }
                Err(e) => {
                    let what = format!(
                        "listing {} of container {}",
                        shown(here),
                        self.cfg.container
                    );
                    return Err(self.failure(&what, &e));
                }
            };
            out.extend(level.objects);
            for sub in level.common_prefixes {
                let name: &str = sub.as_ref();
                if name.is_empty() || !layout::within(name, here) {
                    // Names starting with `/`, grouped under a folder with no name.
                    left_out.push((
                        format!("{here}/"),
                        "a blob name there starts with '/'".to_string(),
                    ));
                    continue;
                }
                let listing = store.list(Some(&sub)).try_collect::<Vec<ObjectMeta>>();
                let listed = or_stop(&self.ctx, listing).await?;
                match listed {
                    Ok(v) => out.extend(v),
                    Err(e) if bad_name(&e) => pending.push(sub),
                    Err(e) => {
                        let what = format!(
                            "listing {} of container {}",
                            shown(name),
                            self.cfg.container
                        );
                        return Err(self.failure(&what, &e));
                    }
                }
            }
        }
        self.report_left_out(left_out);
        Ok(out)
    }

    /// Reports folders a listing had to leave out, each once (`read`); while any is left
    /// out, no poll counts as clean.
    fn report_left_out(&mut self, left_out: Vec<(String, String)>) {
        for (folder, why) in left_out {
            self.troubled = true;
            if self.blocked.insert(folder.clone()) {
                let message = self.scrub.clean(&format!(
                    "cannot list the blobs in {} of container {}: a blob name there has an empty segment (as in a//b) or a '.' or '..' segment, which the storage client cannot take; the blobs there are not read until that blob is renamed or deleted, all others are ({why})",
                    shown(&folder),
                    self.cfg.container
                ));
                self.ctx.error("read", &message);
            }
        }
    }

    /// The whole prefix.
    async fn list_all(&mut self, store: &MicrosoftAzure) -> Result<Vec<ObjectMeta>, Fail> {
        let folder = layout::list_folder(&self.prefix).and_then(|f| Path::parse(f).ok());
        let (listed, went_around) = self.list(store, folder.as_ref()).await?;
        if !went_around {
            self.blocked.clear();
        }
        Ok(listed)
    }

    /// The previous and current hour folders of every service seen.
    async fn list_recent(
        &mut self,
        store: &MicrosoftAzure,
        now: DateTime<Utc>,
    ) -> Result<Vec<ObjectMeta>, Fail> {
        let mut out = Vec::new();
        for folder in layout::recent_folders(self.services.iter().map(String::as_str), now) {
            let Ok(path) = Path::parse(&folder) else {
                continue;
            };
            out.extend(self.list(store, Some(&path)).await?.0);
        }
        Ok(out)
    }

    /// Takes a listing in: new blobs (resuming from their stored positions), changed ones,
    /// and, after a full listing, forgets blobs that are gone.
    fn reconcile(&mut self, listed: Vec<ObjectMeta>, full: bool) {
        let mut seen: HashSet<String> = HashSet::new();
        for meta in listed {
            let name = meta.location.as_ref().to_string();
            if !name.starts_with(self.prefix.as_str()) {
                continue;
            }
            let placed = layout::place(&name);
            let hour = placed.map(|p| p.hour);
            if layout::skipped(hour, meta.last_modified, self.not_before) {
                continue;
            }
            if let Some(p) = placed
                && !self.services.contains(p.service)
            {
                self.services.insert(p.service.to_string());
            }
            if full {
                seen.insert(name.clone());
            }
            let etag = meta.e_tag.as_deref().map(cut::etag);
            if let Some(b) = self.blobs.get_mut(&name) {
                b.observe(meta.size, etag, meta.last_modified);
                if restart_if_rewritten(&self.ctx, &name, b) {
                    self.troubled = true;
                }
            } else {
                let b = self.start_blob(&name, meta, hour, etag);
                self.blobs.insert(name, b);
            }
        }
        if full {
            // Blobs in a folder left out of the listing are kept: they are still there.
            let blocked = &self.blocked;
            self.blobs.retain(|name, _| {
                seen.contains(name) || blocked.iter().any(|f| layout::within(name, f))
            });
            self.missing.retain(|name, _| seen.contains(name));
            self.last_full = Some(Instant::now());
        }
    }

    /// A blob seen for the first time since start, from its stored position if any.
    fn start_blob(
        &mut self,
        name: &str,
        meta: ObjectMeta,
        hour: Option<DateTime<Utc>>,
        etag: Option<String>,
    ) -> Blob {
        let (offset, detail) = match self.ctx.positions().get(name) {
            Some(p) => (
                u64::try_from(p.offset).unwrap_or(0),
                Detail::parse(p.detail.as_deref()),
            ),
            None => (0, Detail::default()),
        };
        let tail = detail.tail(offset);
        // Another entity tag than when the position was written: check the bytes before
        // the offset even when nothing was added.
        let verify =
            tail.is_some() && etag.is_some() && detail.etag.is_some() && detail.etag != etag;
        let mut b = Blob {
            location: meta.location,
            hour,
            size: meta.size,
            etag,
            last_modified: meta.last_modified,
            offset,
            line: detail.line,
            tail,
            verify,
            done: false,
            changed: Instant::now(),
            waiting: None,
        };
        if restart_if_rewritten(&self.ctx, name, &mut b) {
            self.troubled = true;
        } else if detail.done
            && detail.size == b.size
            && b.offset == b.size
            && (detail.etag.is_none() || b.etag.is_none() || detail.etag == b.etag)
        {
            b.done = true;
        }
        b
    }

    /// Reads every blob with something to read, oldest first (by hour, else last change).
    async fn read_all(&mut self, store: &MicrosoftAzure) -> Result<(), Fail> {
        let now = Utc::now();
        let settle = self.cfg.settle;
        let mut order: Vec<(DateTime<Utc>, String)> = self
            .blobs
            .iter()
            .filter(|(_, b)| b.wants_read(now, settle))
            .map(|(name, b)| (b.hour.unwrap_or(b.last_modified), name.clone()))
            .collect();
        order.sort();
        for (_, name) in order {
            self.read_blob(store, &name).await?;
        }
        Ok(())
    }

    /// Reads one blob from its offset until nothing whole is left: one range read and one
    /// delivered step (one position) at a time. Each read starts at the bytes before the
    /// offset that the blob's [`Tail`] covers; when they are not the ones taken, the blob was
    /// rewritten and is read again from its start.
    async fn read_blob(&mut self, store: &MicrosoftAzure, name: &str) -> Result<(), Fail> {
        let base = u64::try_from(self.cfg.max_batch_bytes)
            .unwrap_or(u64::MAX)
            .max(1);
        let widest = base.max(WIDEST_READ);
        let settle = self.cfg.settle;
        let mut window = base;
        loop {
            let Some(b) = self.blobs.get(name) else {
                return Ok(());
            };
            if !b.wants_read(Utc::now(), settle) {
                return Ok(());
            }
            let start = b.offset;
            // The fingerprinted bytes before the offset come first in the same read.
            let tail = b.tail.filter(|t| t.len <= start);
            let back = tail.map_or(0, |t| t.len);
            let location = b.location.clone();
            let options = GetOptions {
                range: Some(GetRange::Bounded(
                    start.saturating_sub(back)..start.saturating_add(window),
                )),
                ..GetOptions::default()
            };
            let read = async move {
                let got = store.get_opts(&location, options).await?;
                let meta = got.meta.clone();
                let bytes = got.bytes().await?;
                Ok::<_, object_store::Error>((meta, bytes))
            };
            let got = or_stop(&self.ctx, read).await?;
            let (meta, bytes) = match got {
                Ok(v) => v,
                Err(object_store::Error::NotFound { .. }) => {
                    self.blobs.remove(name);
                    self.not_found(name);
                    return Ok(());
                }
                Err(e) => return Err(self.failure(&format!("reading blob {name}"), &e)),
            };
            if !self.missing.is_empty() {
                self.missing.remove(name);
            }
            let Some(b) = self.blobs.get_mut(name) else {
                return Ok(());
            };
            b.observe(
                meta.size,
                meta.e_tag.as_deref().map(cut::etag),
                meta.last_modified,
            );
            let Some(skip) = past_tail(&bytes, tail) else {
                restart_replaced(&self.ctx, name, b);
                self.troubled = true;
                window = base;
                continue;
            };
            b.verify = false;
            let chunk: &[u8] = bytes.get(skip..).unwrap_or_default();
            let at_end = start.saturating_add(chunk.len() as u64) >= meta.size;
            let take_rest = b.take_rest(Utc::now(), settle);
            match cut::cut(chunk, at_end, take_rest, window >= widest, MAX_LINES) {
                Cut::Wait => {
                    b.waiting = Some(b.size);
                    return Ok(());
                }
                Cut::Wider => {
                    window = window.saturating_mul(2).min(widest);
                }
                Cut::Take { len, lines } => {
                    let taken = chunk.get(..len).unwrap_or(chunk);
                    let offset = start.saturating_add(taken.len() as u64);
                    let line = b.line.saturating_add(lines);
                    // The last bytes taken, with those before the offset when few were.
                    let upto = skip.saturating_add(taken.len());
                    let new_tail = Tail::of(bytes.get(..upto).unwrap_or(&bytes[..]));
                    let detail = Detail {
                        size: b.size,
                        etag: b.etag.clone(),
                        done: false,
                        line,
                        ..Detail::default()
                    }
                    .with_tail(new_tail);
                    let pulled = Pulled {
                        text: String::from_utf8_lossy(taken).into_owned(),
                        origin: name.to_string(),
                        first_line: b.line.saturating_add(1),
                        positions: vec![(
                            Position {
                                key: name.to_string(),
                                offset: i64::try_from(offset).unwrap_or(i64::MAX),
                                detail: Some(detail.to_json()),
                            },
                            lines,
                            taken.len() as u64,
                        )],
                        format: None,
                    };
                    self.ctx.deliver(pulled).await?;
                    // Durable now: move on.
                    if let Some(b) = self.blobs.get_mut(name) {
                        b.offset = offset;
                        b.line = line;
                        b.tail = new_tail;
                        b.waiting = None;
                    }
                    window = base;
                    self.report_lag();
                }
            }
        }
    }

    /// A listed blob that a read did not find: deleted since the listing (forgotten), or
    /// listed under a name that is not quite its own (the client drops a leading or trailing
    /// `/`: a blob named `dir/` is listed as `dir`, which does not exist). The second time
    /// in a row it is reported once; later listings keep showing it, so it stays reported.
    fn not_found(&mut self, name: &str) {
        let count = self.missing.entry(name.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        let count = *count;
        if count == 1 {
            tracing::debug!(
                source = self.ctx.name(),
                blob = name,
                "Blob deleted; forgetting it."
            );
            return;
        }
        self.troubled = true;
        if count == 2 {
            self.ctx.error(
                "read",
                &format!(
                    "blob {name} is listed but not found when read, twice in a row: its real name probably ends or starts with '/', which the storage client cannot read; rename it to have it read"
                ),
            );
        }
    }

    /// Marks finished blobs done: their hour is over, all of them taken, unchanged for
    /// `settle`. Their positions are written once with `done = true`.
    async fn finish(&mut self) -> Result<(), Fail> {
        let now = Utc::now();
        let settle = self.cfg.settle;
        let finished: Vec<String> = self
            .blobs
            .iter()
            .filter(|(_, b)| {
                !b.done
                    && !b.verify
                    && b.offset >= b.size
                    && b.hour.is_some_and(|h| layout::hour_over(h, now))
                    && b.settled(now, settle)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if finished.is_empty() {
            return Ok(());
        }
        let positions: Vec<Position> = finished
            .iter()
            .filter_map(|name| self.blobs.get(name).map(|b| b.position(name, true)))
            .collect();
        self.ctx.save_positions(positions).await?;
        for name in &finished {
            if let Some(b) = self.blobs.get_mut(name) {
                b.done = true;
            }
        }
        tracing::debug!(
            source = self.ctx.name(),
            blobs = finished.len(),
            "Blobs finished."
        );
        Ok(())
    }

    /// Bytes listed and not yet taken, and how old the oldest blob holding some is.
    fn report_lag(&self) {
        let now = Utc::now();
        let mut bytes = 0u64;
        let mut oldest: Option<DateTime<Utc>> = None;
        for b in self.blobs.values().filter(|b| !b.done) {
            let behind = b.size.saturating_sub(b.offset);
            if behind > 0 {
                bytes = bytes.saturating_add(behind);
                oldest = Some(oldest.map_or(b.last_modified, |o| o.min(b.last_modified)));
            }
        }
        let seconds = oldest.map_or(0.0, |t| {
            now.signed_duration_since(t).num_milliseconds().max(0) as f64 / 1000.0
        });
        self.ctx.lag(Some(seconds), None, Some(bytes));
    }
}
