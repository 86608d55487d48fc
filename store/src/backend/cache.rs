//! A bounded local disk cache of a remote table store's Parquet files.
//!
//! Takes the remote store; gives a store that answers reads of `.parquet` objects from local
//! copies. Table files are immutable (written once under a unique name, then only deleted),
//! so a copy never goes stale and needs no validation: the first read of a file downloads it
//! whole into the cache directory, later reads (the footer, then column chunks, query after
//! query) are local. Files seam writes are copied in as they are uploaded (the newest are the
//! most read). The cache holds at most `max_bytes`; past it the least recently used copies
//! go. A file larger than a quarter of the budget is never cached. Everything that is not a
//! plain read of a Parquet file (manifests, journals, conditional reads, listings, deletes)
//! goes straight to the store; a delete also drops the local copy.
//!
//! The cache is emptied at start (a copy from an earlier run may belong to a file since
//! deleted and written again under the same name by a restored store; starting empty costs
//! one download per file read).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, Result,
};
use tokio::io::AsyncWriteExt;

use crate::metrics as m;

/// One cached copy.
#[derive(Debug)]
struct Entry {
    file: PathBuf,
    meta: ObjectMeta,
    /// Tick of the last read (least recently used goes first).
    used: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Path, Entry>,
    bytes: u64,
    /// Downloads in flight, one lock per file, so concurrent first reads download once.
    loading: HashMap<Path, Arc<tokio::sync::Mutex<()>>>,
    /// Files found larger than a quarter of the budget: read from the store, never cached.
    too_large: std::collections::HashSet<Path>,
}

/// Removes a download's `loading` entry when the download ends, also when its reader is
/// dropped midway (a cancelled query).
struct Loading<'a> {
    state: &'a Mutex<State>,
    path: &'a Path,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        lock(self.state).loading.remove(self.path);
    }
}

/// A temporary file removed when dropped unless kept.
struct Temp(Option<PathBuf>);

impl Temp {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The caching store (see the module docs).
#[derive(Debug)]
pub struct CachedStore {
    inner: Arc<dyn ObjectStore>,
    dir: PathBuf,
    max_bytes: u64,
    state: Arc<Mutex<State>>,
    tick: AtomicU64,
    seq: AtomicU64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn local_err(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "cache",
        source: Box::new(e),
    }
}

impl std::fmt::Display for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cached({})", self.inner)
    }
}

/// Whether reads of `location` are cached: table files only.
fn cacheable(location: &Path) -> bool {
    location.as_ref().ends_with(".parquet")
}

/// Whether `options` ask for a plain read (no precondition, version or metadata-only read).
fn plain(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head
}

/// `range` of an object of `size` bytes as a plain range, or an error naming it.
fn resolve(range: Option<&GetRange>, size: u64, location: &Path) -> Result<Range<u64>> {
    let r = match range {
        None => 0..size,
        Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
        Some(GetRange::Offset(o)) => *o..size,
        Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
    };
    if r.start > r.end || (r.start >= size && size > 0) {
        return Err(object_store::Error::Generic {
            store: "cache",
            source: format!("range {r:?} is outside {location}, which has {size} bytes").into(),
        });
    }
    Ok(r)
}

/// Reads `ranges` of the file at `path`.
fn read_ranges(path: &std::path::Path, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
    let mut f = std::fs::File::open(path)?;
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let len = usize::try_from(r.end.saturating_sub(r.start))
            .map_err(|_| std::io::Error::other("range too large"))?;
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(r.start))?;
        f.read_exact(&mut buf)?;
        out.push(Bytes::from(buf));
    }
    Ok(out)
}

impl CachedStore {
    /// A cache of `inner` in `dir` (emptied now) holding at most `max_bytes`.
    ///
    /// # Errors
    /// The directory cannot be emptied or created.
    pub fn new(inner: Arc<dyn ObjectStore>, dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir)?;
        ::metrics::gauge!(m::CACHE_BYTES).set(0.0);
        Ok(Self {
            inner,
            dir,
            max_bytes,
            state: Arc::new(Mutex::new(State::default())),
            tick: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        })
    }

    fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    fn temp_file(&self) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{n:012}.part"))
    }

    /// The local copy of `location` and its metadata, when cached.
    fn lookup(&self, location: &Path) -> Option<(PathBuf, ObjectMeta)> {
        let tick = self.next_tick();
        let mut st = lock(&self.state);
        let e = st.entries.get_mut(location)?;
        e.used = tick;
        Some((e.file.clone(), e.meta.clone()))
    }

    /// Lists `file` (already complete on disk) as the copy of `meta.location`, then evicts
    /// least recently used copies while over the budget.
    fn admit(&self, file: PathBuf, meta: ObjectMeta) {
        let tick = self.next_tick();
        let mut doomed = Vec::new();
        {
            let mut st = lock(&self.state);
            let size = meta.size;
            if let Some(old) = st.entries.insert(
                meta.location.clone(),
                Entry {
                    file,
                    meta,
                    used: tick,
                },
            ) {
                st.bytes = st.bytes.saturating_sub(old.meta.size);
                doomed.push(old.file);
            }
            st.bytes = st.bytes.saturating_add(size);
            while st.bytes > self.max_bytes {
                let Some(victim) = st
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(p, _)| p.clone())
                else {
                    break;
                };
                if let Some(e) = st.entries.remove(&victim) {
                    st.bytes = st.bytes.saturating_sub(e.meta.size);
                    doomed.push(e.file);
                }
            }
            ::metrics::gauge!(m::CACHE_BYTES).set(st.bytes as f64);
        }
        for f in doomed {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Drops the copy of `location`, if any.
    fn evict(state: &Mutex<State>, location: &Path) {
        let gone = {
            let mut st = lock(state);
            let gone = st.entries.remove(location);
            if let Some(e) = &gone {
                st.bytes = st.bytes.saturating_sub(e.meta.size);
                ::metrics::gauge!(m::CACHE_BYTES).set(st.bytes as f64);
            }
            gone
        };
        if let Some(e) = gone {
            let _ = std::fs::remove_file(e.file);
        }
    }

    /// The local copy of `location`, downloading it on a miss; `None` when it is not to be
    /// cached (too large) or the cache directory failed (the caller reads the store).
    async fn ensure(&self, location: &Path) -> Result<Option<(PathBuf, ObjectMeta)>> {
        if let Some(hit) = self.lookup(location) {
            ::metrics::counter!(m::CACHE_READS, "result" => "hit").increment(1);
            return Ok(Some(hit));
        }
        let gate = {
            let mut st = lock(&self.state);
            if st.too_large.contains(location) {
                return Ok(None);
            }
            Arc::clone(st.loading.entry(location.clone()).or_default())
        };
        let _held = gate.lock().await;
        let _loading = Loading {
            state: &self.state,
            path: location,
        };
        self.download(location).await
    }

    async fn download(&self, location: &Path) -> Result<Option<(PathBuf, ObjectMeta)>> {
        if let Some(hit) = self.lookup(location) {
            // Another reader downloaded it while this one waited.
            ::metrics::counter!(m::CACHE_READS, "result" => "hit").increment(1);
            return Ok(Some(hit));
        }
        ::metrics::counter!(m::CACHE_READS, "result" => "miss").increment(1);
        let head = self.inner.head(location).await?;
        if head.size > self.max_bytes / 4 {
            lock(&self.state).too_large.insert(location.clone());
            return Ok(None);
        }
        let got = self.inner.get_opts(location, GetOptions::default()).await?;
        let meta = got.meta.clone();
        let tmp = Temp(Some(self.temp_file()));
        let path = tmp.0.clone().unwrap_or_default();
        let written = async {
            let mut f = tokio::fs::File::create(&path).await?;
            let mut stream = got.into_stream();
            let mut n: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                n = n.saturating_add(chunk.len() as u64);
                f.write_all(&chunk).await?;
            }
            f.flush().await?;
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        match written {
            Ok(n) if n == meta.size => {
                let file = tmp.keep();
                self.admit(file.clone(), meta.clone());
                Ok(Some((file, meta)))
            }
            Ok(n) => {
                drop(tmp);
                Err(object_store::Error::Generic {
                    store: "cache",
                    source: format!(
                        "{location}: read {n} bytes of {} (the object changed while read)",
                        meta.size
                    )
                    .into(),
                })
            }
            Err(e) => {
                // A full or failing local disk: read from the store instead.
                drop(tmp);
                tracing::warn!(path = %location, error = %e, "Could not cache a table file locally; reading it from the store.");
                Ok(None)
            }
        }
    }

    /// Copies an uploaded file into the cache (best effort).
    async fn keep_written(&self, location: &Path, payload: &PutPayload, e_tag: Option<String>) {
        let size = payload.content_length() as u64;
        if size > self.max_bytes / 4 {
            return;
        }
        let tmp = Temp(Some(self.temp_file()));
        let parts: Vec<Bytes> = payload.iter().cloned().collect();
        let path = tmp.0.clone().unwrap_or_default();
        // The write finishes even if this future is dropped; the guard then removes it.
        let ok = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            for p in parts {
                std::io::Write::write_all(&mut f, &p)?;
            }
            Ok(())
        })
        .await
        .is_ok_and(|r| r.is_ok());
        if ok {
            self.admit(
                tmp.keep(),
                ObjectMeta {
                    location: location.clone(),
                    last_modified: chrono::Utc::now(),
                    size,
                    e_tag,
                    version: None,
                },
            );
        }
    }
}

#[async_trait]
impl ObjectStore for CachedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        Self::evict(&self.state, location);
        let keep = cacheable(location).then(|| payload.clone());
        let result = self.inner.put_opts(location, payload, opts).await?;
        if let Some(p) = keep {
            self.keep_written(location, &p, result.e_tag.clone()).await;
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Self::evict(&self.state, location);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if !cacheable(location) || !plain(&options) {
            return self.inner.get_opts(location, options).await;
        }
        let Some((file, meta)) = self.ensure(location).await? else {
            return self.inner.get_opts(location, options).await;
        };
        let range = resolve(options.range.as_ref(), meta.size, location)?;
        let r = range.clone();
        let bytes = tokio::task::spawn_blocking(move || read_ranges(&file, &[r]))
            .await
            .map_err(local_err)?;
        let bytes = match bytes {
            Ok(mut b) => b.pop().unwrap_or_default(),
            Err(e) => {
                // The copy went missing (evicted under the reader): read the store.
                tracing::debug!(path = %location, error = %e, "A cached copy could not be read.");
                return self.inner.get_opts(location, options).await;
            }
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        if !cacheable(location) {
            return self.inner.get_ranges(location, ranges).await;
        }
        let Some((file, meta)) = self.ensure(location).await? else {
            return self.inner.get_ranges(location, ranges).await;
        };
        for r in ranges {
            if r.end > meta.size || r.start > r.end {
                return Err(object_store::Error::Generic {
                    store: "cache",
                    source: format!(
                        "range {r:?} is outside {location}, which has {} bytes",
                        meta.size
                    )
                    .into(),
                });
            }
        }
        let owned = ranges.to_vec();
        match tokio::task::spawn_blocking(move || read_ranges(&file, &owned))
            .await
            .map_err(local_err)?
        {
            Ok(b) => Ok(b),
            Err(_) => self.inner.get_ranges(location, ranges).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let state = Arc::clone(&self.state);
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                if let Ok(p) = &r {
                    Self::evict(&state, p);
                }
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        Self::evict(&self.state, to);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    fn file(n: usize, fill: u8) -> PutPayload {
        PutPayload::from(vec![fill; n])
    }

    #[tokio::test]
    async fn reads_are_served_locally_and_the_budget_holds() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let cache = CachedStore::new(Arc::clone(&inner), dir.path().join("c"), 4_000).unwrap();
        // Written behind the cache's back: the first read downloads it.
        let a = Path::from("tables/t/a.parquet");
        inner.put(&a, file(900, 1)).await.unwrap();
        assert_eq!(
            cache.get_range(&a, 10..20).await.unwrap(),
            Bytes::from(vec![1u8; 10])
        );
        // Now local: gone from the store, still readable (files are immutable).
        inner.delete(&a).await.unwrap();
        assert_eq!(cache.get_range(&a, 890..900).await.unwrap().len(), 10);
        let got = cache.get_ranges(&a, &[0..1, 5..9, 899..900]).await.unwrap();
        assert_eq!(
            got.iter().map(Bytes::len).collect::<Vec<_>>(),
            vec![1, 4, 1]
        );
        // Written through the cache: cached at once; the budget evicts the oldest.
        for (i, name) in ["b", "c", "d", "e"].iter().enumerate() {
            let p = Path::from(format!("tables/t/{name}.parquet"));
            cache.put(&p, file(900, i as u8 + 2)).await.unwrap();
        }
        assert!(lock(&cache.state).bytes <= 4_000);
        assert!(
            !lock(&cache.state).entries.contains_key(&a),
            "a was the least recently used"
        );
        // Past the end is an error, not a panic; manifests are never cached.
        assert!(
            cache
                .get_ranges(
                    &Path::from("tables/t/e.parquet"),
                    std::slice::from_ref(&(800..901))
                )
                .await
                .is_err()
        );
        let m = Path::from("tables/t/_manifest.json");
        cache.put(&m, PutPayload::from("v1")).await.unwrap();
        inner.put(&m, PutPayload::from("v2")).await.unwrap();
        assert_eq!(cache.get(&m).await.unwrap().bytes().await.unwrap(), "v2");
        // A delete drops the copy; a file over a quarter of the budget is read through.
        let e = Path::from("tables/t/e.parquet");
        cache.delete(&e).await.unwrap();
        assert!(cache.get_range(&e, 0..1).await.is_err());
        let big = Path::from("tables/t/big.parquet");
        inner.put(&big, file(1_500, 9)).await.unwrap();
        assert_eq!(cache.get_range(&big, 0..3).await.unwrap().len(), 3);
        assert!(!lock(&cache.state).entries.contains_key(&big));
    }
}
