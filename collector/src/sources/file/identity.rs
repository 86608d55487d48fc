//! Which file a position belongs to. A position's key is the file's `device:inode`; its
//! detail (JSON, stored in `source_positions.detail`) adds the path, a fingerprint of the
//! file's first bytes, a fingerprint of the last bytes taken (just before the offset) and
//! the line number at the offset. The first tells a file that still has its inode from
//! another file that got the inode later (the first was deleted), and a file that was
//! truncated and written again past the offset (copy-truncate with a fast writer) from one
//! that only grew. The second catches a rewrite that starts with the same bytes (a fixed
//! banner longer than [`FP_LEN`]): the bytes before the offset are not the ones taken.
//!
//! Takes the stored position, the file's size, its first bytes and the bytes before the
//! offset now; gives where to start reading it. Pure: the reading is done by `track`.

use serde::{Deserialize, Serialize};

/// Bytes at the start of a file that its fingerprint covers (fewer while it is shorter).
pub(crate) const FP_LEN: u64 = 256;

/// CRC-32 of the first `len` bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// The checksum.
    pub(crate) crc: u32,
    /// How many bytes it covers (at most [`FP_LEN`]).
    pub(crate) len: u64,
}

impl Fingerprint {
    /// The fingerprint of `head`, the first bytes of a file (only the first [`FP_LEN`] count).
    pub(crate) fn of(head: &[u8]) -> Self {
        let n = usize::try_from(FP_LEN)
            .unwrap_or(usize::MAX)
            .min(head.len());
        let bytes = head.get(..n).unwrap_or(head);
        Self {
            crc: crc32fast::hash(bytes),
            len: u64::try_from(bytes.len()).unwrap_or(FP_LEN),
        }
    }

    /// The fingerprint of the last [`FP_LEN`] bytes of `bytes` (all of them when fewer).
    pub(crate) fn of_tail(bytes: &[u8]) -> Self {
        let n = usize::try_from(FP_LEN).unwrap_or(usize::MAX);
        let from = bytes.len().saturating_sub(n);
        Self::of(bytes.get(from..).unwrap_or(bytes))
    }

    /// As stored: 8 lower-case hex digits.
    pub(crate) fn hex(self) -> String {
        format!("{:08x}", self.crc)
    }

    /// Parses [`Fingerprint::hex`] and a length; `None` when not well formed.
    fn parse(hex: &str, len: u64) -> Option<Self> {
        if hex.len() != 8 || len > FP_LEN {
            return None;
        }
        Some(Self {
            crc: u32::from_str_radix(hex, 16).ok()?,
            len,
        })
    }
}

/// The bytes just before the offset once `taken` is taken after `tail` (the bytes before
/// the offset now): the last [`FP_LEN`] of them.
pub(crate) fn keep_tail(tail: &[u8], taken: &[u8]) -> Vec<u8> {
    let n = usize::try_from(FP_LEN).unwrap_or(usize::MAX);
    if taken.len() >= n {
        let from = taken.len().saturating_sub(n);
        return taken.get(from..).unwrap_or(taken).to_vec();
    }
    let keep = n.saturating_sub(taken.len());
    let from = tail.len().saturating_sub(keep);
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(tail.get(from..).unwrap_or(tail));
    out.extend_from_slice(taken);
    out
}

/// Whether `before`, the bytes just before the offset now (up to [`FP_LEN`] of them), end
/// with the bytes the `known` tail fingerprint was taken of.
pub(crate) fn tail_same(known: Fingerprint, before: &[u8]) -> bool {
    let n = usize::try_from(known.len).unwrap_or(usize::MAX);
    let Some(from) = before.len().checked_sub(n) else {
        return false;
    };
    before
        .get(from..)
        .is_some_and(|b| crc32fast::hash(b) == known.crc)
}

/// What is known about a file before reading it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The same file: read on from the offset. The fingerprint may now cover more bytes.
    Same(Fingerprint),
    /// Shorter than what was read: truncated (copy-truncate), read it again from the start.
    Truncated,
    /// Its first bytes are not what they were: another file on the same inode, or the file
    /// was truncated and written again past the offset. Read it from the start.
    Replaced,
}

/// Compares a known file (`known` fingerprint, `offset` read) with what it is now: `size`
/// bytes, starting with `head` (its first [`FP_LEN`] bytes or all of it when shorter).
/// `gz`: offsets count decompressed bytes, so the size says nothing about truncation.
pub(crate) fn check(known: Fingerprint, offset: u64, size: u64, head: &[u8], gz: bool) -> Check {
    if !gz && size < offset {
        return Check::Truncated;
    }
    let n = usize::try_from(known.len).unwrap_or(usize::MAX);
    match head.get(..n) {
        Some(prefix) if crc32fast::hash(prefix) == known.crc => Check::Same(Fingerprint::of(head)),
        _ => Check::Replaced,
    }
}

/// The detail JSON of a file position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Detail {
    /// The path the file had when the position was taken.
    #[serde(default)]
    pub(crate) path: String,
    /// [`Fingerprint::hex`].
    #[serde(default)]
    pub(crate) fp: String,
    /// [`Fingerprint::len`].
    #[serde(default)]
    pub(crate) fp_len: u64,
    /// Line number (from 1) of the line at the offset.
    #[serde(default)]
    pub(crate) line: u64,
    /// [`Fingerprint::hex`] of the last bytes taken, just before the offset (plain files;
    /// absent in positions written before it was kept: no check then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) tail: String,
    /// [`Fingerprint::len`] of `tail`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) tail_len: u64,
    /// A gzip file: the offset counts decompressed bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) gz: bool,
    /// A gzip file read to its end: never read again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) done: bool,
}

/// For `skip_serializing_if`.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Detail {
    /// Parses a stored detail; `None` when absent or not ours.
    pub(crate) fn parse(text: Option<&str>) -> Option<Self> {
        serde_json::from_str(text?).ok()
    }

    /// As stored.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The stored fingerprint, when well formed.
    pub(crate) fn fingerprint(&self) -> Option<Fingerprint> {
        Fingerprint::parse(&self.fp, self.fp_len)
    }

    /// The stored fingerprint of the bytes before the offset, when there is one (not for
    /// an offset of 0, a gzip file, or a position written before it was kept).
    pub(crate) fn tail(&self) -> Option<Fingerprint> {
        if self.tail_len == 0 {
            return None;
        }
        Fingerprint::parse(&self.tail, self.tail_len)
    }

    /// Sets the tail fingerprint to that of `before`, the bytes just before the offset
    /// (none when empty).
    pub(crate) fn set_tail(&mut self, before: &[u8]) {
        if before.is_empty() {
            self.tail = String::new();
            self.tail_len = 0;
        } else {
            let fp = Fingerprint::of_tail(before);
            self.tail = fp.hex();
            self.tail_len = fp.len;
        }
    }
}

/// Why a known file is read again from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// It is shorter than the stored offset.
    Truncated,
    /// Its first bytes changed: another file on a reused inode, or rewritten.
    Replaced,
    /// The bytes before the stored offset are not those taken: truncated and written again
    /// (with the same first bytes) past the offset.
    Rewritten,
}

/// Where to start a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Start {
    /// Byte offset (decompressed bytes for a gzip file).
    pub(crate) offset: u64,
    /// Line number at the offset; `None` when the stored position did not say (count it).
    pub(crate) line: Option<u64>,
    /// Fingerprint of the file now.
    pub(crate) fp: Fingerprint,
    /// A gzip file already read to its end.
    pub(crate) done: bool,
    /// Why a known file starts again from 0.
    pub(crate) note: Option<Note>,
}

impl Start {
    /// A file never seen: from its first byte.
    pub(crate) fn fresh(head: &[u8], note: Option<Note>) -> Self {
        Self {
            offset: 0,
            line: Some(1),
            fp: Fingerprint::of(head),
            done: false,
            note,
        }
    }
}

/// Where to start a file found with a stored position (`offset`, `detail`): on from the
/// offset when it is the same file, else from the start. `size` and `head` describe the file
/// now (`head` the raw first bytes, compressed for a gzip file); `before` holds the bytes
/// just before the offset now (up to [`FP_LEN`], fewer when the offset is smaller; ignored
/// for a gzip file), checked against the stored tail fingerprint when there is one.
pub(crate) fn resume(
    offset: i64,
    detail: Option<&Detail>,
    size: u64,
    head: &[u8],
    before: &[u8],
    gz: bool,
) -> Start {
    let Ok(offset) = u64::try_from(offset) else {
        return Start::fresh(head, None);
    };
    let known = detail.and_then(Detail::fingerprint);
    let Some(known) = known else {
        // A position without an identity (not written by this version): trust the offset
        // when the file is long enough for it, and count the lines up to it.
        if !gz && size < offset {
            return Start::fresh(head, Some(Note::Truncated));
        }
        return Start {
            offset,
            line: None,
            fp: Fingerprint::of(head),
            done: false,
            note: None,
        };
    };
    match check(known, offset, size, head, gz) {
        Check::Same(_)
            if !gz
                && detail
                    .and_then(Detail::tail)
                    .is_some_and(|t| !tail_same(t, before)) =>
        {
            Start::fresh(head, Some(Note::Rewritten))
        }
        Check::Same(fp) => Start {
            offset,
            line: detail.map(|d| d.line).filter(|l| *l >= 1),
            fp,
            done: gz && detail.is_some_and(|d| d.done),
            note: None,
        },
        Check::Truncated => Start::fresh(head, Some(Note::Truncated)),
        Check::Replaced => Start::fresh(head, Some(Note::Replaced)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail_of(fp: Fingerprint, line: u64) -> Detail {
        Detail {
            path: "/var/log/app.log".into(),
            fp: fp.hex(),
            fp_len: fp.len,
            line,
            tail: String::new(),
            tail_len: 0,
            gz: false,
            done: false,
        }
    }

    #[test]
    fn fingerprints_cover_at_most_256_bytes() {
        let long = vec![b'x'; 1000];
        let fp = Fingerprint::of(&long);
        assert_eq!(fp.len, 256);
        assert_eq!(fp, Fingerprint::of(&long[..256]));
        assert_eq!(Fingerprint::of(b"").len, 0);
        assert_eq!(fp.hex().len(), 8);
    }

    #[test]
    fn a_short_file_that_grows_is_the_same_file_with_a_longer_fingerprint() {
        let known = Fingerprint::of(b"INFO first line\n");
        let now = b"INFO first line\nINFO second line\n";
        match check(known, 16, now.len() as u64, now, false) {
            Check::Same(fp) => {
                assert_eq!(fp.len, now.len() as u64);
                assert_eq!(fp, Fingerprint::of(now));
            }
            other => panic!("{other:?}"),
        }
        // An empty file's fingerprint matches whatever it becomes.
        let empty = Fingerprint::of(b"");
        assert!(matches!(
            check(empty, 0, 5, b"hello", false),
            Check::Same(_)
        ));
    }

    #[test]
    fn truncation_and_rewrites_are_told_apart_from_growth() {
        let head = b"INFO 2024-11-05 line one\n";
        let known = Fingerprint::of(head);
        assert_eq!(
            check(known, 500, 10, b"INFO 2024-", false),
            Check::Truncated
        );
        // Truncated and written again past the offset: the start differs.
        let rewritten = b"WARN 2024-11-06 something else entirely\n";
        assert_eq!(
            check(known, 10, rewritten.len() as u64, rewritten, false),
            Check::Replaced
        );
        // Shorter than the fingerprint now, but not shorter than the offset: rewritten.
        assert_eq!(check(known, 3, 5, b"INFO ", false), Check::Replaced);
        // A gzip file's offset counts decompressed bytes: its size is no truncation.
        assert!(matches!(check(known, 5000, 25, head, true), Check::Same(_)));
    }

    #[test]
    fn details_round_trip_and_mark_gzip_files() {
        let fp = Fingerprint::of(b"abc");
        let d = detail_of(fp, 42);
        let text = d.to_json();
        assert!(text.contains("\"path\":\"/var/log/app.log\""), "{text}");
        assert!(text.contains("\"line\":42"), "{text}");
        assert!(!text.contains("gz"), "{text}");
        assert_eq!(Detail::parse(Some(&text)), Some(d.clone()));
        assert_eq!(d.fingerprint(), Some(fp));
        let g = Detail {
            gz: true,
            done: true,
            ..d
        };
        let text = g.to_json();
        assert!(
            text.contains("\"gz\":true") && text.contains("\"done\":true"),
            "{text}"
        );
        assert_eq!(Detail::parse(Some("not json")), None);
        assert_eq!(Detail::parse(None), None);
        let bad = Detail {
            fp: "xyz".into(),
            ..Detail::default()
        };
        assert_eq!(bad.fingerprint(), None);
    }

    #[test]
    fn a_stored_position_resumes_only_on_the_same_file() {
        let content = b"INFO a\nINFO b\nINFO c\n";
        let d = detail_of(Fingerprint::of(&content[..7]), 2);
        // Same file, grown: on from the offset with its line; the fingerprint grows.
        let s = resume(
            7,
            Some(&d),
            content.len() as u64,
            content,
            &content[..7],
            false,
        );
        assert_eq!(s.offset, 7);
        assert_eq!(s.line, Some(2));
        assert_eq!(s.fp, Fingerprint::of(content));
        assert_eq!(s.note, None);
        // A reused inode: another file, read from the start.
        let other = b"ERROR z\n";
        let s = resume(7, Some(&d), other.len() as u64, other, b"", false);
        assert_eq!(
            (s.offset, s.line, s.note),
            (0, Some(1), Some(Note::Replaced))
        );
        // Truncated below the offset.
        let s = resume(7, Some(&d), 3, b"INF", b"", false);
        assert_eq!((s.offset, s.note), (0, Some(Note::Truncated)));
        // No identity stored: the offset is trusted when it fits, lines are counted.
        let s = resume(7, None, content.len() as u64, content, b"", false);
        assert_eq!((s.offset, s.line), (7, None));
        // A negative offset is nonsense: from the start.
        assert_eq!(resume(-1, Some(&d), 21, content, b"", false).offset, 0);
    }

    #[test]
    fn a_finished_gzip_file_stays_finished() {
        let head: [u8; 8] = [0x1f, 0x8b, 8, 0, 1, 2, 3, 4];
        let d = Detail {
            gz: true,
            done: true,
            ..detail_of(Fingerprint::of(&head), 900)
        };
        let s = resume(100_000, Some(&d), 8, &head, b"", true);
        assert!(s.done);
        assert_eq!((s.offset, s.line), (100_000, Some(900)));
        // The same inode now holds another gzip file: read it.
        let s = resume(
            100_000,
            Some(&d),
            8,
            &[0x1f, 0x8b, 8, 0, 9, 9, 9, 9],
            b"",
            true,
        );
        assert!(!s.done);
        assert_eq!(s.offset, 0);
    }

    #[test]
    fn the_tail_keeps_the_last_256_bytes_taken() {
        // Short takes add up to 256 bytes, then the oldest fall off.
        let mut tail = Vec::new();
        for i in 0..100u8 {
            tail = keep_tail(&tail, &[i, b'\n']);
        }
        assert_eq!(tail.len(), 200);
        tail = keep_tail(&tail, &[7u8; 100]);
        assert_eq!(tail.len(), 256);
        assert_eq!(&tail[156..], &[7u8; 100][..]);
        assert_eq!(&tail[..2], &[22u8, b'\n'][..]);
        // A long take: only its own last 256 bytes.
        let long: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(keep_tail(&tail, &long), long[744..].to_vec());
        assert_eq!(Fingerprint::of_tail(&long), Fingerprint::of(&long[744..]));
        assert_eq!(Fingerprint::of_tail(b"abc"), Fingerprint::of(b"abc"));
    }

    #[test]
    fn the_tail_fingerprint_tells_a_rewrite_with_the_same_first_bytes() {
        // A banner longer than the head fingerprint, then entries.
        let banner = format!("{}\n", "=".repeat(300));
        let old = format!("{banner}INFO old 1\nINFO old 2\n");
        let new = format!("{banner}INFO new 1\nINFO new 2\nINFO new 3\n");
        let offset = old.len();
        let mut d = detail_of(Fingerprint::of(old.as_bytes()), 4);
        d.set_tail(&old.as_bytes()[..offset]);
        assert_eq!(d.tail_len, 256);
        assert_eq!(d.tail(), Some(Fingerprint::of_tail(old.as_bytes())));
        let text = d.to_json();
        assert!(
            text.contains("\"tail\":") && text.contains("\"tail_len\":256"),
            "{text}"
        );
        assert_eq!(Detail::parse(Some(&text)), Some(d.clone()));
        let before = |s: &str| s.as_bytes()[offset - 256..offset].to_vec();
        // The same file, grown: on from the offset.
        let grown = format!("{old}INFO old 3\n");
        let s = resume(
            offset as i64,
            Some(&d),
            grown.len() as u64,
            grown.as_bytes(),
            &before(grown.as_str()),
            false,
        );
        assert_eq!((s.offset, s.note), (offset as u64, None));
        // Rewritten, same first 256 bytes, longer than the offset: from the start.
        assert_eq!(
            Fingerprint::of(new.as_bytes()),
            Fingerprint::of(old.as_bytes())
        );
        let s = resume(
            offset as i64,
            Some(&d),
            new.len() as u64,
            new.as_bytes(),
            &before(new.as_str()),
            false,
        );
        assert_eq!(
            (s.offset, s.line, s.note),
            (0, Some(1), Some(Note::Rewritten))
        );
        // Fewer bytes before the offset than the fingerprint covers: not the same.
        assert!(!tail_same(d.tail().unwrap(), &before(old.as_str())[..10]));
        assert!(tail_same(d.tail().unwrap(), &before(old.as_str())));
        // A position written before the tail was kept: no check.
        d.set_tail(b"");
        assert_eq!(d.tail(), None);
        assert!(!d.to_json().contains("tail"), "{}", d.to_json());
        let s = resume(
            offset as i64,
            Some(&d),
            new.len() as u64,
            new.as_bytes(),
            &before(new.as_str()),
            false,
        );
        assert_eq!((s.offset, s.note), (offset as u64, None));
        let legacy = format!(
            "{{\"path\":\"/var/log/app.log\",\"fp\":\"{}\",\"fp_len\":256,\"line\":4}}",
            Fingerprint::of(old.as_bytes()).hex()
        );
        let legacy = Detail::parse(Some(&legacy)).unwrap();
        assert_eq!(legacy.tail(), None);
        assert!(legacy.fingerprint().is_some());
        // A malformed tail is no tail.
        let bad = Detail {
            tail: "nothex!!".into(),
            tail_len: 12,
            ..Detail::default()
        };
        assert_eq!(bad.tail(), None);
    }
}
