//! Which file a position belongs to. A position's key is the file's `device:inode`; its
//! detail (JSON, stored in `source_positions.detail`) adds the path, a fingerprint of the
//! file's first bytes and the line number at the offset. The fingerprint tells a file that
//! still has its inode from another file that got the inode later (the first was deleted),
//! and a file that was truncated and written again past the offset (copy-truncate with a
//! fast writer) from one that only grew.
//!
//! Takes the stored position, the file's size and its first bytes now; gives where to start
//! reading it. Pure: the reading is done by `track`.

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

    /// As stored: 8 lower-case hex digits.
    pub(crate) fn hex(self) -> String {
        format!("{:08x}", self.crc)
    }
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
    /// A gzip file: the offset counts decompressed bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) gz: bool,
    /// A gzip file read to its end: never read again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) done: bool,
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
        if self.fp.len() != 8 || self.fp_len > FP_LEN {
            return None;
        }
        Some(Fingerprint {
            crc: u32::from_str_radix(&self.fp, 16).ok()?,
            len: self.fp_len,
        })
    }
}

/// Why a known file is read again from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// It is shorter than the stored offset.
    Truncated,
    /// Its first bytes changed: another file on a reused inode, or rewritten.
    Replaced,
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
/// now (`head` the raw first bytes, compressed for a gzip file).
pub(crate) fn resume(
    offset: i64,
    detail: Option<&Detail>,
    size: u64,
    head: &[u8],
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
        let s = resume(7, Some(&d), content.len() as u64, content, false);
        assert_eq!(s.offset, 7);
        assert_eq!(s.line, Some(2));
        assert_eq!(s.fp, Fingerprint::of(content));
        assert_eq!(s.note, None);
        // A reused inode: another file, read from the start.
        let other = b"ERROR z\n";
        let s = resume(7, Some(&d), other.len() as u64, other, false);
        assert_eq!(
            (s.offset, s.line, s.note),
            (0, Some(1), Some(Note::Replaced))
        );
        // Truncated below the offset.
        let s = resume(7, Some(&d), 3, b"INF", false);
        assert_eq!((s.offset, s.note), (0, Some(Note::Truncated)));
        // No identity stored: the offset is trusted when it fits, lines are counted.
        let s = resume(7, None, content.len() as u64, content, false);
        assert_eq!((s.offset, s.line), (7, None));
        // A negative offset is nonsense: from the start.
        assert_eq!(resume(-1, Some(&d), 21, content, false).offset, 0);
    }

    #[test]
    fn a_finished_gzip_file_stays_finished() {
        let head: [u8; 8] = [0x1f, 0x8b, 8, 0, 1, 2, 3, 4];
        let d = Detail {
            gz: true,
            done: true,
            ..detail_of(Fingerprint::of(&head), 900)
        };
        let s = resume(100_000, Some(&d), 8, &head, true);
        assert!(s.done);
        assert_eq!((s.offset, s.line), (100_000, Some(900)));
        // The same inode now holds another gzip file: read it.
        let s = resume(100_000, Some(&d), 8, &[0x1f, 0x8b, 8, 0, 9, 9, 9, 9], true);
        assert!(!s.done);
        assert_eq!(s.offset, 0);
    }
}
