//! The writer lease of a shared table store: one seam writes a store's tables at a time.
//!
//! Takes the table store and this node's id; gives a lease held in the store itself
//! (`tables/_writer_lease.json`: holder, host, expiry, whether it was released), taken and
//! renewed with conditional writes (create-if-absent, or replace-if-unchanged by ETag), so
//! that two processes pointed at one container cannot both write it: the second waits for a
//! live holder's lease to end and then refuses to start, naming the holder; so does another
//! process under the same node id (a copied data directory). After a crash, the node (same
//! id, kept in its data directory) takes its own lease back once its previous process's lease
//! ended. A holder that died without releasing leaves rows it acknowledged in its own
//! write-ahead log: another node takes such a lease over only when told to
//! (`storage.take_over`). A holder
//! that fails to renew before its lease expires, or finds it rewritten, has lost it for good
//! ([`WriterLease::check`] is false): it writes nothing more until restarted, and seam's
//! manifests are written with replace-if-unchanged too, so a write racing a takeover fails.
//!
//! A local directory needs no lease: an OS lock on it keeps a second seam out.

use std::sync::Mutex;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

/// Where the lease lives, relative to the store's root.
pub const LEASE_PATH: &str = "tables/_writer_lease.json";

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
    /// Another node holds the lease.
    #[error(
        "another seam ({holder} on {host}) writes the tables of this store (its lease runs \
         until {}, renewed while it lives); several writers on one store are not supported \
         yet: point each at its own storage.url, or stop the other", rfc3339(*until_ms)
    )]
    Held {
        /// Its node id.
        holder: String,
        /// Its host.
        host: String,
        /// Its lease's expiry.
        until_ms: i64,
    },
    /// The last holder died without giving the lease up: rows it acknowledged may still be
    /// only in its write-ahead log.
    #[error(
        "the last seam writing this store ({holder} on {host}) stopped without releasing it; \
         rows it acknowledged may still be only in its write-ahead log. Start that node again \
         on its data directory (it takes its lease back and stores them), or set \
         storage.take_over = true on this one (those rows are then missing until that node \
         runs again)"
    )]
    Abandoned {
        /// Its node id.
        holder: String,
        /// Its host.
        host: String,
    },
    /// This node lost the lease (it could not renew in time, or another node took it): it
    /// writes nothing more until restarted.
    #[error(
        "this seam lost the table store's writer lease ({0}); it writes nothing more to the \
         store: restart it (its acknowledged rows are safe in its write-ahead log)"
    )]
    Lost(String),
    /// The store failed.
    #[error("writer lease {LEASE_PATH}: {0}")]
    Store(#[from] object_store::Error),
    /// The lease object is not a lease.
    #[error("writer lease {LEASE_PATH} is unreadable: {0}")]
    Unreadable(String),
}

/// A held lease (see the module docs).
#[derive(Debug)]
pub struct WriterLease {
    store: std::sync::Arc<dyn ObjectStore>,
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
    /// Takes the lease for `holder`, waiting up to `wait` for another live holder's lease to
    /// expire, or for the store to answer. A lease its holder did not release (it died) is taken over only when
    /// `take_over`.
    ///
    /// # Errors
    /// [`LeaseError::Held`] when another process still holds it after `wait`,
    /// [`LeaseError::Abandoned`] for a dead holder without `take_over`; store failures.
    pub async fn acquire(
        store: std::sync::Arc<dyn ObjectStore>,
        holder: &str,
        ttl: Duration,
        wait: Duration,
        take_over: bool,
    ) -> Result<Self, LeaseError> {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let lease = Self {
            store,
            holder: holder.to_string(),
            host,
            ttl,
            held: Mutex::new(None),
            done: std::sync::atomic::AtomicBool::new(false),
            process: crate::key_of(&[
                &crate::now_ns().to_string(),
                &std::process::id().to_string(),
                holder,
            ]),
        };
        let give_up = now_ms().saturating_add(ms(wait));
        loop {
            let attempt = match lease.try_take(take_over).await {
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
                            holder: other.holder,
                            host: other.host,
                            until_ms: other.expires_ms,
                        });
                    }
                    let pause = (other.expires_ms.saturating_sub(now)).clamp(100, 1_000);
                    tokio::time::sleep(Duration::from_millis(pause.unsigned_abs())).await;
                }
            }
        }
    }

    /// One attempt: `None` when the lease is now this node's, else the live holder's record.
    async fn try_take(&self, take_over: bool) -> Result<Option<LeaseRecord>, LeaseError> {
        for _ in 0..16 {
            let path = Path::from(LEASE_PATH);
            let current = match self.store.get(&path).await {
                Ok(got) => {
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    let bytes = got.bytes().await?;
                    let record: LeaseRecord = serde_json::from_slice(&bytes)
                        .map_err(|e| LeaseError::Unreadable(e.to_string()))?;
                    Some((record, version))
                }
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let mode = match current {
                None => PutMode::Create,
                Some((record, version)) => {
                    let mine = record.holder == self.holder;
                    let live = !record.released && record.expires_ms > now_ms();
                    // A live lease of another process waits, also under this node's id (a
                    // copied data directory, or this node's previous process that died: its
                    // lease ends within a time to live).
                    if live && (!mine || record.process != self.process) {
                        return Ok(Some(record));
                    }
                    if !mine && !record.released {
                        if !take_over {
                            return Err(LeaseError::Abandoned {
                                holder: record.holder,
                                host: record.host,
                            });
                        }
                        tracing::warn!(holder = %record.holder, host = %record.host, "Taking over the table store from a seam that stopped without releasing it (storage.take_over); rows only in its write-ahead log are missing until it runs again.");
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
        Err(LeaseError::Unreadable(
            "it changed at every attempt to take it".into(),
        ))
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
        let path = Path::from(LEASE_PATH);
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

    /// Renews the lease (call every third of its time to live). A lease not renewed before
    /// it expired is not taken back: another node may have written meanwhile.
    ///
    /// # Errors
    /// [`LeaseError::Lost`] when the lease is gone for good; store failures (the lease is
    /// still held until it expires: [`WriterLease::check`] tells).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        if self.done.load(std::sync::atomic::Ordering::Acquire) {
            return Err(LeaseError::Lost("released or lost earlier".into()));
        }
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((version, until)) = held else {
            self.mark_lost();
            return Err(LeaseError::Lost("never held".into()));
        };
        if until <= now_ms() {
            self.mark_lost();
            return Err(LeaseError::Lost(
                "it expired before it could be renewed".into(),
            ));
        }
        match self.write(PutMode::Update(version), false).await {
            Err(LeaseError::Store(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            )) => {
                self.mark_lost();
                Err(LeaseError::Lost("another node wrote the lease".into()))
            }
            other => other,
        }
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
    async fn one_holder_at_a_time_and_no_silent_takeover() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ttl = Duration::from_millis(900);
        let take = |holder: &'static str, wait: u64, take_over: bool| {
            WriterLease::acquire(
                Arc::clone(&store),
                holder,
                ttl,
                Duration::from_millis(wait),
                take_over,
            )
        };
        let a = take("node-a", 0, false).await.unwrap();
        assert!(a.check());
        // A second node is refused while the lease lives, and told who holds it.
        let e = take("node-b", 0, false).await.unwrap_err();
        assert!(
            matches!(e, LeaseError::Held { .. }) && e.to_string().contains("node-a"),
            "{e}"
        );
        // Another process under the same node id (a copied data directory, or this node's
        // next process after a crash) waits for the live lease to end, then takes it without
        // take_over: its write-ahead log is this node's.
        let e = take("node-a", 0, false).await.unwrap_err();
        assert!(matches!(e, LeaseError::Held { .. }), "{e}");
        let a2 = take("node-a", 3_000, false).await.unwrap();
        assert!(!a.check() || a.renew().await.is_err());
        a2.renew().await.unwrap();
        // Not renewed, it expires; a dead holder's lease is not taken over silently...
        tokio::time::sleep(ttl).await;
        let e = take("node-b", 0, false).await.unwrap_err();
        assert!(matches!(e, LeaseError::Abandoned { .. }), "{e}");
        assert!(!a2.check());
        // ...only when told to; the old holder then cannot renew, nor take it back.
        let b = take("node-b", 0, true).await.unwrap();
        assert!(b.check());
        assert!(matches!(a2.renew().await, Err(LeaseError::Lost(_))));
        assert!(!a2.check());
        // A clean stop hands over at once, without take_over.
        b.release().await;
        assert!(!b.check());
        let c = take("node-c", 0, false).await.unwrap();
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
                &Path::from(LEASE_PATH),
                PutPayload::from(serde_json::to_vec(&forged).unwrap()),
            )
            .await
            .unwrap();
        assert!(matches!(c.renew().await, Err(LeaseError::Lost(_))));
        assert!(!c.check() && c.is_done());
    }
}
