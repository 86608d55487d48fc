//! Leases held in a shared table store: each node's own lease, the correlation lease, and
//! the short commit lock of each table.
//!
//! Takes the table store, an object path and this node's id; gives a lease held in the store
//! itself (holder, host, expiry, whether it was released, which process), taken and renewed
//! with conditional writes (create-if-absent, or replace-if-unchanged by ETag), so that two
//! processes can never both believe they hold it. Three kinds use it:
//! - **the node lease** (`tables/_leases/node-<node id>.json`): several seam nodes write one
//!   store, each its own files, and each under its own node id (kept in its data directory);
//!   a second process under the same id (a copied data directory, or the node's previous
//!   process before its lease ended) waits for the live lease and then refuses to start.
//!   After a crash the node takes its own lease back once its previous process's lease
//!   ended. A node that fails to renew before its lease expires, or finds it rewritten, has
//!   lost it for good ([`WriterLease::check`] is false): it writes nothing more until
//!   restarted.
//! - **the correlation lease** ([`CORRELATION_LEASE_PATH`]): the one node that keeps the
//!   derived tables (`requests`, `request_events`) up to date; another node with the
//!   `correlate` role takes it over once the holder's lease ended (it died, or stopped).
//! - **a table's commit lock** ([`commit_lock_path`]): held for the few requests of one
//!   update of a table's manifest and Delta log, so that concurrent writers update them one
//!   after the other; a lock whose holder died ends with its time to live.
//!
//! A local directory needs none of them: an OS lock on it keeps a second seam out.

use std::sync::Mutex;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

/// The directory of the node and correlation leases, relative to the store's root.
pub const LEASES_DIR: &str = "tables/_leases";

/// The correlation lease (see the module docs).
pub const CORRELATION_LEASE_PATH: &str = "tables/_leases/correlation.json";

/// Where node `node`'s lease lives.
pub fn node_lease_path(node: &str) -> String {
    format!("{LEASES_DIR}/node-{node}.json")
}

/// Where table `table`'s commit lock lives (inside the table's directory, beside its
/// manifest; Delta readers ignore names starting with `_`).
pub fn commit_lock_path(table: &str) -> String {
    format!(
        "{}/{table}/_commit_lock.json",
        seam_schemas::layout::TABLES_DIR
    )
}

/// Whether `id` can name a node: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (it is part
/// of object names: the node lease and every file the node writes).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !id.starts_with('.')
}

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The node id of the holder.
    pub holder: String,
    /// The holder's host name (for people reading errors).
    pub host: String,
    /// When the lease ends unless renewed, milliseconds since the epoch.
    pub expires_ms: i64,
    /// The holder gave the lease up at a clean stop: everything it acknowledged is in the
    /// store, and any node may take over.
    #[serde(default)]
    pub released: bool,
    /// Which process of the holder wrote it (a copy of a node's data directory has the same
    /// node id, not the same process).
    #[serde(default)]
    pub process: String,
}

/// Why the lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process holds the lease.
    #[error(
        "{path} is held by {holder} on {host} until {} (renewed while it lives){}",
        rfc3339(*until_ms),
        if path.contains("/node-") {
            ": another process runs under this node id (a copy of its data directory, or its \
             previous process, whose lease ends within storage.lease_ttl); give each node its \
             own data directory"
        } else {
            ""
        }
    )]
    Held {
        /// The lease's object path.
        path: String,
        /// Its node id.
        holder: String,
        /// Its host.
        host: String,
        /// Its lease's expiry.
        until_ms: i64,
    },
    /// This node lost the lease (it could not renew in time, or another node took it): it
    /// writes nothing more until restarted.
    #[error(
        "this seam lost its lease in the table store ({0}); it writes nothing more to the \
         store: restart it (its acknowledged rows are safe in its write-ahead log)"
    )]
    Lost(String),
    /// The store failed.
    #[error("lease in the table store: {0}")]
    Store(#[from] object_store::Error),
    /// The lease object is not a lease.
    #[error("lease in the table store is unreadable: {0}")]
    Unreadable(String),
}

/// A held lease (see the module docs).
#[derive(Debug)]
pub struct WriterLease {
    store: std::sync::Arc<dyn ObjectStore>,
    /// The lease object's path.
    path: String,
    holder: String,
    host: String,
    ttl: Duration,
    /// The version of the lease object this node wrote last, and when it expires.
    held: Mutex<Option<(UpdateVersion, i64)>>,
    /// Set for good once the lease is lost or released.
    done: std::sync::atomic::AtomicBool,
    /// This process (see [`LeaseRecord::process`]).
    process: String,
}

/// This node's id: kept in `<data_dir>/node_id`, made on first use (after a crash, the same
/// node takes its own lease back once its previous process's lease ended).
///
/// # Errors
/// The file cannot be read or written.
pub fn node_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let seed = format!(
        "{}-{}-{:?}",
        crate::now_ns(),
        std::process::id(),
        std::thread::current().id()
    );
    let id = format!(
        "seam-{}",
        &crate::key_of(&[&seed, &data_dir.display().to_string()])[..16]
    );
    std::fs::write(&path, &id)?;
    Ok(id)
}

/// Whether the store refused the credentials (401, 403): waiting does not help.
fn refused(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => true,
        // object_store may hide the status number; the reason phrase and the services'
        // error codes stay.
        other => {
            let text = other.to_string();
            [
                "Unauthorized",
                "Forbidden",
                "AuthorizationFailure",
                "AuthenticationFailed",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
            ]
            .iter()
            .any(|w| text.contains(w))
        }
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time (for messages).
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| format!("{ms} ms since the epoch"), |t| t.to_rfc3339())
}

fn now_ms() -> i64 {
    crate::now_ns().div_euclid(1_000_000)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl WriterLease {
    /// Takes the lease at `path` for `holder`, waiting up to `wait` for another live
    /// holder's lease to expire (looking again every second at most), or for the store to
    /// answer. A lease another holder did not release (it died) is taken once it expired
    /// (every lease here may be: a node's own lease is contended only by processes under the
    /// same id).
    ///
    /// # Errors
    /// [`LeaseError::Held`] when another process still holds it after `wait`; store
    /// failures.
    pub async fn acquire(
        store: std::sync::Arc<dyn ObjectStore>,
        path: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Self, LeaseError> {
        Self::acquire_polling(store, path, holder, ttl, wait, Duration::from_secs(1)).await
    }

    /// [`WriterLease::acquire`], looking again at most every `poll` (a short commit lock is
    /// held for a fraction of a second).
    ///
    /// # Errors
    /// See [`WriterLease::acquire`].
    pub async fn acquire_polling(
        store: std::sync::Arc<dyn ObjectStore>,
        path: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        poll: Duration,
    ) -> Result<Self, LeaseError> {
        let lease = Self::new(store, path, holder, ttl);
        let give_up = now_ms().saturating_add(ms(wait));
        let poll = ms(poll).max(10);
        loop {
            let attempt = match lease.try_take().await {
                // The store unreachable (after the client's own retries): wait for it as for
                // a live holder, up to the same bound; refused credentials end it at once.
                Err(LeaseError::Store(e)) if now_ms() < give_up && !refused(&e) => {
                    tracing::warn!(error = %e, "The table store is not reachable yet; waiting for it.");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                other => other?,
            };
            match attempt {
                None => return Ok(lease),
                Some(other) => {
                    let now = now_ms();
                    if now >= give_up {
                        return Err(LeaseError::Held {
                            path: lease.path.clone(),
                            holder: other.holder,
                            host: other.host,
                            until_ms: other.expires_ms,
                        });
                    }
                    // A little jitter, so that waiting nodes do not knock in step.
                    let jitter = crate::now_ns().rem_euclid(poll.max(1) * 1_000_000) / 4_000_000;
                    let pause = (other.expires_ms.saturating_sub(now))
                        .clamp(poll.min(100), poll)
                        .saturating_add(jitter);
                    tokio::time::sleep(Duration::from_millis(pause.unsigned_abs())).await;
                }
            }
        }
    }

    /// One attempt at the lease at `path`, without waiting: `Ok(None)` when another
    /// process holds it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn try_acquire(
        store: std::sync::Arc<dyn ObjectStore>,
        path: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Self>, LeaseError> {
        let lease = Self::new(store, path, holder, ttl);
        Ok(match lease.try_take().await? {
            None => Some(lease),
            Some(_) => None,
        })
    }

    fn new(
        store: std::sync::Arc<dyn ObjectStore>,
        path: &str,
        holder: &str,
        ttl: Duration,
    ) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        Self {
            store,
            path: path.to_string(),
            holder: holder.to_string(),
            host,
            ttl,
            held: Mutex::new(None),
            done: std::sync::atomic::AtomicBool::new(false),
            process: crate::key_of(&[
                &crate::now_ns().to_string(),
                &std::process::id().to_string(),
                holder,
                path,
            ]),
        }
    }

    /// One attempt: `None` when the lease is now this process's, else the live holder's
    /// record.
    async fn try_take(&self) -> Result<Option<LeaseRecord>, LeaseError> {
        for _ in 0..16 {
            let path = Path::from(self.path.as_str());
            let current = match self.store.get(&path).await {
                Ok(got) => {
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = got.bytes().await?;
                    match serde_json::from_slice::<LeaseRecord>(&bytes) {
                        Ok(record) => Some((record, version)),
                        // Not a lease (damaged, or written by something else): replaced, as
                        // an expired one is (conditionally: a holder writing meanwhile wins).
                        Err(e) => {
                            tracing::warn!(path = %self.path, error = %e, "Replacing an unreadable lease object.");
                            Some((
                                LeaseRecord {
                                    holder: String::new(),
                                    host: String::new(),
                                    expires_ms: 0,
                                    released: true,
                                    process: String::new(),
                                },
                                version,
                            ))
                        }
                    }
                }
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let mode = match current {
                None => PutMode::Create,
                Some((record, version)) => {
                    let live = !record.released && record.expires_ms > now_ms();
                    // A live lease of another process waits, also under this node's id (a
                    // copied data directory, or this node's previous process that died: its
                    // lease ends within a time to live).
                    if live && (record.holder != self.holder || record.process != self.process) {
                        return Ok(Some(record));
                    }
                    if record.holder != self.holder && !record.released {
                        tracing::info!(path = %self.path, holder = %record.holder, host = %record.host, "Taking over a lease whose holder did not renew it.");
                    }
                    PutMode::Update(version)
                }
            };
            match self.write(mode, false).await {
                Ok(()) => return Ok(None),
                // Someone else wrote it between the read and the write: look again.
                Err(LeaseError::Store(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                )) => {}
                Err(e) => return Err(e),
            }
        }
        Err(LeaseError::Unreadable(format!(
            "{}: it changed at every attempt to take it",
            self.path
        )))
    }

    /// Writes this node's record with `mode` (expiring a time to live from now, or now when
    /// `released`), remembering the version written.
    async fn write(&self, mode: PutMode, released: bool) -> Result<(), LeaseError> {
        let now = now_ms();
        let expires_ms = if released {
            now
        } else {
            now.saturating_add(ms(self.ttl))
        };
        let record = LeaseRecord {
            holder: self.holder.clone(),
            host: self.host.clone(),
            expires_ms,
            released,
            process: self.process.clone(),
        };
        let body =
            serde_json::to_vec(&record).map_err(|e| LeaseError::Unreadable(e.to_string()))?;
        let path = Path::from(self.path.as_str());
        let result = self
            .store
            .put_opts(&path, PutPayload::from(body), PutOptions::from(mode))
            .await?;
        let version = UpdateVersion {
            e_tag: result.e_tag,
            version: result.version,
        };
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, expires_ms));
        Ok(())
    }

    /// Marks the lease lost for good (a write found the store changed under it).
    pub fn mark_lost(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Renews the lease (call every third of its time to live). A lease that expired (the
    /// store was unreachable) is renewed only if no other process took it meanwhile.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the lease is gone for good; store failures (the lease is
    /// still held until it expires: [`WriterLease::check`] tells).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        if self.done.load(std::sync::atomic::Ordering::Acquire) {
            return Err(LeaseError::Lost("released or lost earlier".into()));
        }
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((version, _)) = held else {
            self.mark_lost();
            return Err(LeaseError::Lost("never held".into()));
        };
        // Also after it expired (the store was unreachable for longer than its time to
        // live): the conditional write succeeds only if no other process wrote the lease
        // since, and nothing was written under it while it was expired ([`check`] was false).
        // Bounded by a third of the time to live (the store client itself retries for
        // minutes): a renewal stuck on a slow store gives way to the next one.
        let written =
            match tokio::time::timeout(self.ttl / 3, self.write(PutMode::Update(version), false))
                .await
            {
                Ok(w) => w,
                Err(_) => Err(LeaseError::Store(object_store::Error::Generic {
                    store: "lease",
                    source: "the renewal took longer than a third of the lease's time to live"
                        .into(),
                })),
            };
        match written {
            Err(LeaseError::Store(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            )) => {
                // A renewal whose answer was lost (a timeout after the store wrote it)
                // leaves this process's own record under a newer version: still held.
                if let Some(()) = self.adopt_own().await {
                    return Ok(());
                }
                self.mark_lost();
                Err(LeaseError::Lost("another node wrote the lease".into()))
            }
            other => other,
        }
    }

    /// When the lease object holds this very process's record, takes its version as the
    /// one held.
    async fn adopt_own(&self) -> Option<()> {
        let got = self.store.get(&Path::from(self.path.as_str())).await.ok()?;
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let record: LeaseRecord = serde_json::from_slice(&got.bytes().await.ok()?).ok()?;
        if record.holder != self.holder || record.process != self.process || record.released {
            return None;
        }
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((version, record.expires_ms));
        Some(())
    }

    /// Whether this node may write now: it holds the lease, and the lease has at least a
    /// third of its time to live left (a write that starts now ends before it expires).
    pub fn check(&self) -> bool {
        if self.done.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let margin = ms(self.ttl / 3);
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(_, until)| until.saturating_sub(margin) > now_ms())
    }

    /// Whether the lease is gone for good (lost or released).
    pub fn is_done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Gives the lease up at a clean stop (everything acknowledged is in the store), so that
    /// another node may take it at once; only if this node still holds it.
    pub async fn release(&self) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if self.done.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        if let Some((version, _)) = held {
            let _ = self.write(PutMode::Update(version), true).await;
        }
    }

    /// This node's id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How often to renew.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    #[tokio::test]
    async fn one_holder_at_a_time_taken_back_after_it_ends() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ttl = Duration::from_millis(900);
        let path = CORRELATION_LEASE_PATH;
        let take = |holder: &'static str, wait: u64| {
            WriterLease::acquire(
                Arc::clone(&store),
                path,
                holder,
                ttl,
                Duration::from_millis(wait),
            )
        };
        let a = take("node-a", 0).await.unwrap();
        assert!(a.check());
        // A second node is refused while the lease lives, and told who holds it.
        let e = take("node-b", 0).await.unwrap_err();
        assert!(
            matches!(e, LeaseError::Held { .. }) && e.to_string().contains("node-a"),
            "{e}"
        );
        assert!(
            WriterLease::try_acquire(Arc::clone(&store), path, "node-b", ttl)
                .await
                .unwrap()
                .is_none()
        );
        // Another process under the same node id waits for the live lease to end, then
        // takes it.
        let e = take("node-a", 0).await.unwrap_err();
        assert!(matches!(e, LeaseError::Held { .. }), "{e}");
        let a2 = take("node-a", 3_000).await.unwrap();
        assert!(!a.check() || a.renew().await.is_err());
        a2.renew().await.unwrap();
        // Not renewed, it expires; another node takes it, and the old holder can neither
        // renew nor take it back while the new one lives.
        tokio::time::sleep(ttl).await;
        assert!(!a2.check());
        let b = take("node-b", 0).await.unwrap();
        assert!(b.check());
        assert!(matches!(a2.renew().await, Err(LeaseError::Lost(_))));
        assert!(!a2.check());
        // A clean stop hands over at once.
        b.release().await;
        assert!(!b.check());
        let c = take("node-c", 0).await.unwrap();
        assert!(c.check());
        // A renewal that finds the lease rewritten by someone else loses it for good.
        let forged = LeaseRecord {
            holder: "node-d".into(),
            host: "elsewhere".into(),
            expires_ms: now_ms() + 60_000,
            released: false,
            process: "p".into(),
        };
        store
            .put(
                &Path::from(path),
                PutPayload::from(serde_json::to_vec(&forged).unwrap()),
            )
            .await
            .unwrap();
        assert!(matches!(c.renew().await, Err(LeaseError::Lost(_))));
        assert!(!c.check() && c.is_done());
    }

    #[tokio::test]
    async fn a_commit_lock_is_waited_for_and_handed_on_at_release() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = commit_lock_path("spans");
        let lock = |holder: &'static str| {
            WriterLease::acquire_polling(
                Arc::clone(&store),
                &path,
                holder,
                Duration::from_secs(60),
                Duration::from_secs(5),
                Duration::from_millis(20),
            )
        };
        let a = lock("node-a").await.unwrap();
        let waiting = tokio::spawn({
            let store = Arc::clone(&store);
            let path = path.clone();
            async move {
                WriterLease::acquire_polling(
                    store,
                    &path,
                    "node-b",
                    Duration::from_secs(60),
                    Duration::from_secs(5),
                    Duration::from_millis(20),
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "a held lock was taken");
        a.release().await;
        let b = waiting.await.unwrap().unwrap();
        assert!(b.check());
        // A damaged lock (not a lease) does not block the table for ever: it is replaced.
        b.release().await;
        store
            .put(&Path::from(path.as_str()), PutPayload::from("garbage"))
            .await
            .unwrap();
        let c = lock("node-c").await.unwrap();
        assert!(c.check());
        // Node ids name objects: only safe characters.
        assert!(valid_node_id("seam-0123abcd"));
        for bad in ["", "a/b", "../x", ".hidden", "a b", &"x".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad:?}");
        }
    }
}
