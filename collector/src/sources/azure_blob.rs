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
//!   `{"size","etag","done","line"}` (`line`: lines taken, so refused lines are reported with
//!   their real line numbers). A blob whose hour is over, all taken and unchanged for
//!   `settle` is *done*: its position is written once with `done = true` and it is not read
//!   again, unless a listing shows it changed.
//! - **Failures.** Network and authentication failures are reported (`network`, `auth`) and
//!   retried with a growing backoff; after an authentication failure the secret is read
//!   again (a rotated SAS token is picked up). A blob that shrank below seam's offset was
//!   rewritten: reported (`read`) and read again from its start.
//! - **Lag.** Bytes listed and not yet taken, and the age of the oldest blob with such bytes.
//!
//! Secrets (account keys, SAS tokens) come from the environment or files and appear in no
//! position, origin, message or log line.

mod connect;
mod cut;
mod layout;
mod state;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use object_store::azure::MicrosoftAzure;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use self::connect::Scrub;
use self::cut::{Cut, Detail, MAX_LINES};
use self::state::{Blob, restart_if_rewritten};
use super::pull::config::AzureBlobSource;
use super::pull::{Position, Pulled, SourceCtx, Stopped, next_backoff};

/// First wait after a failed poll (doubled up to 10 s while failures go on).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Widest range read while looking for the end of one line longer than `max_batch_bytes`.
const WIDEST_READ: u64 = 64 << 20;

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

    async fn list(
        &self,
        store: &MicrosoftAzure,
        prefix: Option<&Path>,
    ) -> Result<Vec<ObjectMeta>, Fail> {
        let listing = store.list(prefix).try_collect::<Vec<ObjectMeta>>();
        match or_stop(&self.ctx, listing).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failure(&format!("listing container {}", self.cfg.container), &e)),
        }
    }

    /// The whole prefix.
    async fn list_all(&self, store: &MicrosoftAzure) -> Result<Vec<ObjectMeta>, Fail> {
        let folder = layout::list_folder(&self.prefix).and_then(|f| Path::parse(f).ok());
        self.list(store, folder.as_ref()).await
    }

    /// The previous and current hour folders of every service seen.
    async fn list_recent(
        &self,
        store: &MicrosoftAzure,
        now: DateTime<Utc>,
    ) -> Result<Vec<ObjectMeta>, Fail> {
        let mut out = Vec::new();
        for folder in layout::recent_folders(self.services.iter().map(String::as_str), now) {
            let Ok(path) = Path::parse(&folder) else {
                continue;
            };
            out.extend(self.list(store, Some(&path)).await?);
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
            self.blobs.retain(|name, _| seen.contains(name));
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
        let mut b = Blob {
            location: meta.location,
            hour,
            size: meta.size,
            etag,
            last_modified: meta.last_modified,
            offset,
            line: detail.line,
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
    /// delivered step (one position) at a time.
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
            let location = b.location.clone();
            let options = GetOptions {
                range: Some(GetRange::Bounded(start..start.saturating_add(window))),
                ..GetOptions::default()
            };
            let read = async move {
                let got = store.get_opts(&location, options).await?;
                let meta = got.meta.clone();
                let bytes = got.bytes().await?;
                Ok::<_, object_store::Error>((meta, bytes))
            };
            let (meta, bytes) = match or_stop(&self.ctx, read).await? {
                Ok(v) => v,
                Err(object_store::Error::NotFound { .. }) => {
                    tracing::debug!(
                        source = self.ctx.name(),
                        blob = name,
                        "Blob deleted; forgetting it."
                    );
                    self.blobs.remove(name);
                    return Ok(());
                }
                Err(e) => return Err(self.failure(&format!("reading blob {name}"), &e)),
            };
            let Some(b) = self.blobs.get_mut(name) else {
                return Ok(());
            };
            b.observe(
                meta.size,
                meta.e_tag.as_deref().map(cut::etag),
                meta.last_modified,
            );
            let at_end = start.saturating_add(bytes.len() as u64) >= meta.size;
            let take_rest = b.take_rest(Utc::now(), settle);
            match cut::cut(&bytes, at_end, take_rest, window >= widest, MAX_LINES) {
                Cut::Wait => {
                    b.waiting = Some(b.size);
                    return Ok(());
                }
                Cut::Wider => {
                    window = window.saturating_mul(2).min(widest);
                }
                Cut::Take { len, lines } => {
                    let taken = bytes.get(..len).unwrap_or(&bytes[..]);
                    let offset = start.saturating_add(taken.len() as u64);
                    let line = b.line.saturating_add(lines);
                    let detail = Detail {
                        size: b.size,
                        etag: b.etag.clone(),
                        done: false,
                        line,
                    };
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
                        b.waiting = None;
                    }
                    window = base;
                    self.report_lag();
                }
            }
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
