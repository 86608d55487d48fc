//! The duplicate index of gateway and flow log records: which record keys seam has stored,
//! and (for gateway copies) which fields the stored copies had.
//!
//! Takes record keys (32 hex) and field masks from the ingest path; gives a verdict per
//! record (new, adds fields, duplicate). Commits happen after the write-ahead log
//! acknowledged the rows, and are appended to `<data-dir>/dedupe.idx` (fixed 32-byte entries:
//! key, mask, when) so the index survives restarts. Entries older than `max_age` (by when
//! seam stored them) are dropped at start, which bounds the file and the memory: a re-import
//! of the same data within `max_age` stores nothing new. Rows replayed from the write-ahead
//! log at start are added back by [`DedupeIndex::seed`], which closes the gap between an
//! acknowledgement and its index entry.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const ENTRY: usize = 32;

/// What the index says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen.
    New,
    /// Seen, and this copy has fields the stored ones lacked.
    AddsFields,
    /// Seen with every field this copy has.
    Duplicate,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<u128, (u64, i64)>,
    file: Option<File>,
}

/// The index.
#[derive(Debug, Default)]
pub struct DedupeIndex {
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
}

/// Parses a 32-hex key.
pub fn parse_key(hex_key: &str) -> Option<u128> {
    u128::from_str_radix(hex_key, 16).ok()
}

impl DedupeIndex {
    /// An index kept in memory only (tests, benchmarks).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Opens (or creates) the index at `path`, dropping entries stored before
    /// `now_ns - max_age_ns` and rewriting the file without them.
    ///
    /// # Errors
    /// The file cannot be read or written.
    pub fn open(path: &Path, now_ns: i64, max_age_ns: i64) -> std::io::Result<Self> {
        let mut map: HashMap<u128, (u64, i64)> = HashMap::new();
        let mut dropped = 0usize;
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(path)?.read_to_end(&mut bytes)?;
            // A torn last entry (crash mid-write) is ignored.
            for e in bytes.chunks_exact(ENTRY) {
                let mut k = [0u8; 16];
                k.copy_from_slice(&e[..16]);
                let mut m = [0u8; 8];
                m.copy_from_slice(&e[16..24]);
                let mut t = [0u8; 8];
                t.copy_from_slice(&e[24..32]);
                let (key, mask, when) = (
                    u128::from_le_bytes(k),
                    u64::from_le_bytes(m),
                    i64::from_le_bytes(t),
                );
                if when < now_ns.saturating_sub(max_age_ns) {
                    dropped += 1;
                    continue;
                }
                let slot = map.entry(key).or_insert((0, when));
                slot.0 |= mask;
                slot.1 = slot.1.max(when);
            }
            if dropped > 0 || bytes.len() % ENTRY != 0 {
                let tmp = path.with_extension("idx.tmp");
                let mut f = File::create(&tmp)?;
                let mut buf = Vec::with_capacity(map.len() * ENTRY);
                for (k, (m, t)) in &map {
                    encode(&mut buf, *k, *m, *t);
                }
                f.write_all(&buf)?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        tracing::info!(entries = map.len(), dropped, "Duplicate index loaded.");
        Ok(Self {
            inner: Mutex::new(Inner {
                map,
                file: Some(file),
            }),
            path: Some(path.to_path_buf()),
        })
    }

    /// Where the index is kept.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.map.len())
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The verdict on a record with `key` and field `mask`.
    pub fn check(&self, key: u128, mask: u64) -> Verdict {
        let Ok(inner) = self.inner.lock() else {
            return Verdict::New;
        };
        match inner.map.get(&key) {
            None => Verdict::New,
            Some((m, _)) if mask & !m != 0 => Verdict::AddsFields,
            Some(_) => Verdict::Duplicate,
        }
    }

    /// Records stored rows.
    ///
    /// # Errors
    /// The index file could not be written (the rows are stored; a re-import may then store
    /// them again).
    pub fn commit(&self, entries: &[(u128, u64)], now_ns: i64) -> std::io::Result<()> {
        let Ok(mut inner) = self.inner.lock() else {
            return Ok(());
        };
        let mut buf = Vec::with_capacity(entries.len() * ENTRY);
        for (k, m) in entries {
            let slot = inner.map.entry(*k).or_insert((0, now_ns));
            slot.0 |= m;
            slot.1 = now_ns;
            encode(&mut buf, *k, *m, now_ns);
        }
        if let Some(f) = inner.file.as_mut() {
            f.write_all(&buf)?;
            f.sync_data()?;
        }
        Ok(())
    }

    /// Adds keys of rows that are stored but may be missing from the file (replayed from the
    /// write-ahead log), with every field marked present.
    pub fn seed(&self, keys: impl Iterator<Item = u128>, now_ns: i64) -> std::io::Result<()> {
        let entries: Vec<(u128, u64)> = keys.map(|k| (k, u64::MAX)).collect();
        let missing: Vec<(u128, u64)> = {
            let Ok(inner) = self.inner.lock() else {
                return Ok(());
            };
            entries
                .into_iter()
                .filter(|(k, _)| !inner.map.contains_key(k))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.commit(&missing, now_ns)
    }
}

fn encode(buf: &mut Vec<u8>, k: u128, m: u64, t: i64) {
    buf.extend_from_slice(&k.to_le_bytes());
    buf.extend_from_slice(&m.to_le_bytes());
    buf.extend_from_slice(&t.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dedupe.idx");
        let idx = DedupeIndex::open(&p, 1_000, 10_000).unwrap();
        assert_eq!(idx.check(7, 0b11), Verdict::New);
        idx.commit(&[(7, 0b01)], 1_000).unwrap();
        assert_eq!(idx.check(7, 0b01), Verdict::Duplicate);
        assert_eq!(idx.check(7, 0b11), Verdict::AddsFields);
        drop(idx);
        let idx = DedupeIndex::open(&p, 2_000, 10_000).unwrap();
        assert_eq!(idx.check(7, 0b01), Verdict::Duplicate);
        drop(idx);
        let idx = DedupeIndex::open(&p, 100_000, 10_000).unwrap();
        assert_eq!(idx.check(7, 0b01), Verdict::New);
    }
}
