//! What seam knows of one blob between polls: its size and entity tag as last listed or
//! read, the offset and line seam took it to with the fingerprint of the bytes before that
//! offset, and whether it is finished; and the rules on that state (settled, can still grow,
//! something to read, rewritten).
//!
//! Takes listings, read results and the clock; gives decisions. No I/O.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path;

use super::cut::{Detail, Tail};
use super::layout;
use crate::sources::pull::{Position, SourceCtx};

/// What seam knows of one blob.
#[derive(Debug)]
pub(super) struct Blob {
    /// Its path in the container.
    pub location: Path,
    /// Its hour, from the diagnostic-setting layout of its name.
    pub hour: Option<DateTime<Utc>>,
    /// Size when last listed or read.
    pub size: u64,
    /// Entity tag then (without quotes).
    pub etag: Option<String>,
    /// Last change then (the storage service's clock).
    pub last_modified: DateTime<Utc>,
    /// Bytes taken (durable: only moved after `deliver` returned).
    pub offset: u64,
    /// Lines taken.
    pub line: u64,
    /// Fingerprint of the last bytes taken (they end at `offset`); `None` at offset 0 and
    /// for a position of an older version.
    pub tail: Option<Tail>,
    /// The entity tag changed while nothing new is past the offset (same size): read the
    /// bytes before the offset once to check they are still the ones taken.
    pub verify: bool,
    /// Finished: not read again while listings show it unchanged.
    pub done: bool,
    /// When seam last saw its size or entity tag change (or first saw it).
    pub changed: Instant,
    /// The size at which only a cut record was left: no read until the size changes or
    /// the blob settles.
    pub waiting: Option<u64>,
}

impl Blob {
    /// Unchanged for `settle`: by seam's own observation, or by the service's last-modified
    /// time (which also holds across restarts).
    pub fn settled(&self, now: DateTime<Utc>, settle: Duration) -> bool {
        if self.changed.elapsed() >= settle {
            return true;
        }
        now.signed_duration_since(self.last_modified)
            .to_std()
            .is_ok_and(|quiet| quiet >= settle)
    }

    /// The blob can no longer grow: a last line without a newline is whole.
    pub fn take_rest(&self, now: DateTime<Utc>, settle: Duration) -> bool {
        self.settled(now, settle) && self.hour.is_none_or(|h| layout::hour_over(h, now))
    }

    /// Something to read: bytes past the offset, unless they are only a cut record that
    /// still waits for its end; or a check of the bytes before the offset is due
    /// ([`Blob::verify`]).
    pub fn wants_read(&self, now: DateTime<Utc>, settle: Duration) -> bool {
        if self.done {
            return false;
        }
        let grown = self.offset < self.size
            && (self.waiting != Some(self.size) || self.take_rest(now, settle));
        grown || self.check_due()
    }

    /// A read only to check the bytes before the offset is due: the entity tag changed and
    /// there is a fingerprint to check.
    pub fn check_due(&self) -> bool {
        self.verify && self.offset > 0 && self.tail.is_some()
    }

    /// Takes what a listing or a read says the blob is now; a change ends `done`. A new
    /// entity tag asks for a check of the bytes before the offset ([`Blob::verify`]).
    pub fn observe(&mut self, size: u64, etag: Option<String>, last_modified: DateTime<Utc>) {
        let new_etag = etag.is_some() && etag != self.etag;
        let changed = size != self.size || new_etag;
        if changed {
            self.changed = Instant::now();
            self.done = false;
        }
        if new_etag && self.etag.is_some() {
            self.verify = true;
        }
        self.size = size;
        if etag.is_some() {
            self.etag = etag;
        }
        self.last_modified = last_modified;
    }

    /// Its position row.
    pub fn position(&self, key: &str, done: bool) -> Position {
        let detail = Detail {
            size: self.size,
            etag: self.etag.clone(),
            done,
            line: self.line,
            ..Detail::default()
        }
        .with_tail(self.tail);
        Position {
            key: key.to_string(),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            detail: Some(detail.to_json()),
        }
    }

    /// From its first byte again.
    fn restart(&mut self) {
        self.offset = 0;
        self.line = 0;
        self.tail = None;
        self.verify = false;
        self.done = false;
        self.waiting = None;
        self.changed = Instant::now();
    }
}

/// When a blob is now shorter than what seam took, it was rewritten (Azure Monitor never
/// shrinks an append blob; a shorter blob is a new one under the same name): reports it and
/// starts the blob again from 0. Choice: read it again rather than skip it, because the new
/// blob holds records seam has never seen; records it has in common with the old one have
/// the same record keys and are recognised as duplicates, not stored twice. True when so.
pub(super) fn restart_if_rewritten(ctx: &SourceCtx, name: &str, b: &mut Blob) -> bool {
    if b.size >= b.offset {
        return false;
    }
    ctx.error(
        "read",
        &format!(
            "blob {name} is {} bytes now, fewer than the {} seam took: it was rewritten; reading it again from the start",
            b.size, b.offset
        ),
    );
    b.restart();
    true
}

/// When the bytes before a blob's offset are no longer the ones seam took (the [`Tail`]
/// check failed), it was rewritten under the same name with at least as many bytes: reports
/// it and starts the blob again from 0, for the same reasons as [`restart_if_rewritten`].
pub(super) fn restart_replaced(ctx: &SourceCtx, name: &str, b: &mut Blob) {
    ctx.error(
        "read",
        &format!(
            "blob {name} was rewritten: its bytes before offset {} are not the ones seam took; reading it again from the start",
            b.offset
        ),
    );
    b.restart();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(size: u64, offset: u64, hour: Option<&str>, modified_ago_s: i64) -> Blob {
        let now = Utc::now();
        Blob {
            location: Path::from("a/b"),
            hour: hour.map(|h| DateTime::parse_from_rfc3339(h).unwrap().with_timezone(&Utc)),
            size,
            etag: None,
            last_modified: now - chrono::TimeDelta::seconds(modified_ago_s),
            offset,
            line: 0,
            tail: None,
            verify: false,
            done: false,
            changed: Instant::now(),
            waiting: None,
        }
    }

    #[test]
    fn a_cut_record_waits_until_the_blob_can_no_longer_grow() {
        let settle = Duration::from_secs(300);
        let now = Utc::now();
        // The current hour (its hour is not over): waits however quiet it is.
        let current = layout::hour_of(now).to_rfc3339();
        let mut b = blob(100, 90, Some(&current), 3600);
        b.waiting = Some(100);
        assert!(!b.take_rest(now, settle));
        assert!(!b.wants_read(now, settle));
        // It grew: read again.
        b.observe(120, None, now);
        assert!(b.wants_read(now, settle));
        // A past hour, quiet for longer than settle: the rest is whole.
        let mut b = blob(100, 90, Some("2024-11-05T09:00:00Z"), 3600);
        b.waiting = Some(100);
        assert!(b.take_rest(now, settle));
        assert!(b.wants_read(now, settle));
        // A past hour still being written (changed a minute ago): waits.
        let b = blob(100, 90, Some("2024-11-05T09:00:00Z"), 60);
        assert!(!b.take_rest(now, settle));
        // No hour in its name: settled is enough.
        let b = blob(100, 90, None, 3600);
        assert!(b.take_rest(now, settle));
    }

    #[test]
    fn positions_carry_offset_lines_and_done() {
        let mut b = blob(42, 42, None, 0);
        b.line = 7;
        b.etag = Some("0x1".into());
        let p = b.position("resourceId=/x/PT1H.json", true);
        assert_eq!(p.key, "resourceId=/x/PT1H.json");
        assert_eq!(p.offset, 42);
        assert_eq!(
            p.detail.as_deref(),
            Some(r#"{"size":42,"etag":"0x1","done":true,"line":7}"#)
        );
        // A change ends done.
        b.done = true;
        b.observe(42, Some("0x2".into()), Utc::now());
        assert!(!b.done);
        // The tail fingerprint goes with the position.
        b.tail = Tail::of(b"{\"a\":1}\n");
        let p = b.position("k", false);
        let d = Detail::parse(p.detail.as_deref());
        assert_eq!(d.tail(42), b.tail);
    }

    #[test]
    fn a_new_etag_without_new_bytes_asks_for_a_check_of_the_bytes_before_the_offset() {
        let now = Utc::now();
        let settle = Duration::from_secs(300);
        let mut b = blob(42, 42, None, 0);
        b.etag = Some("0x1".into());
        b.tail = Tail::of(b"{\"a\":1}\n");
        assert!(!b.wants_read(now, settle));
        // The same entity tag again: nothing to do.
        b.observe(42, Some("0x1".into()), now);
        assert!(!b.wants_read(now, settle));
        // Unknown before: nothing to compare with.
        let mut fresh = blob(42, 42, None, 0);
        fresh.tail = b.tail;
        fresh.observe(42, Some("0x1".into()), now);
        assert!(!fresh.verify);
        // Rewritten with the same size: a check is due, even on a finished blob.
        b.done = true;
        b.observe(42, Some("0x2".into()), now);
        assert!(b.verify && b.check_due() && b.wants_read(now, settle));
        // Without a fingerprint there is nothing to check.
        b.tail = None;
        assert!(!b.wants_read(now, settle));
    }

    #[test]
    fn a_restart_forgets_offset_lines_and_tail() {
        let mut b = blob(10, 42, None, 0);
        b.line = 3;
        b.tail = Tail::of(b"abc");
        b.verify = true;
        b.done = true;
        b.waiting = Some(10);
        b.restart();
        assert_eq!((b.offset, b.line, b.tail, b.verify), (0, 0, None, false));
        assert!(!b.done && b.waiting.is_none());
    }
}
