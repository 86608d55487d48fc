//! What seam knows of one blob between polls: its size and entity tag as last listed or
//! read, the offset and line seam took it to, and whether it is finished; and the rules on
//! that state (settled, can still grow, something to read, rewritten).
//!
//! Takes listings, read results and the clock; gives decisions. No I/O.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path;

use super::cut::Detail;
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
    /// still waits for its end.
    pub fn wants_read(&self, now: DateTime<Utc>, settle: Duration) -> bool {
        !self.done
            && self.offset < self.size
            && (self.waiting != Some(self.size) || self.take_rest(now, settle))
    }

    /// Takes what a listing or a read says the blob is now; a change ends `done`.
    pub fn observe(&mut self, size: u64, etag: Option<String>, last_modified: DateTime<Utc>) {
        let changed = size != self.size || (etag.is_some() && etag != self.etag);
        if changed {
            self.changed = Instant::now();
            self.done = false;
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
        };
        Position {
            key: key.to_string(),
            offset: i64::try_from(self.offset).unwrap_or(i64::MAX),
            detail: Some(detail.to_json()),
        }
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
    b.offset = 0;
    b.line = 0;
    b.done = false;
    b.waiting = None;
    b.changed = Instant::now();
    true
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
    }
}
