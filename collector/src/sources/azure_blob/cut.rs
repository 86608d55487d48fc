//! How much of a range read is taken, and what a blob's position says.
//!
//! PT1H.json is JSON Lines that Azure Monitor appends to: a read that ends inside a record
//! takes up to the last newline and leaves the rest for a later read, when the record is
//! whole. A remainder without a newline is taken as it is only once the blob can no longer
//! grow (the caller decides: its hour is over and it has not changed for `settle`).
//!
//! A position also keeps a fingerprint of the last bytes taken ([`Tail`]). The next read
//! starts that many bytes before the offset, and [`past_tail`] checks them: a blob rewritten
//! under the same name (as long as the old one or longer) shows other bytes there.
//!
//! Takes bytes and facts about the blob; gives what to take. No I/O.

use serde::{Deserialize, Serialize};

/// Most lines taken in one step (the collector refuses inputs of more than 100,000 records).
pub(crate) const MAX_LINES: u64 = 50_000;

/// Most bytes before a blob's offset that its [`Tail`] covers (fewer near the blob's start).
pub(crate) const TAIL_LEN: usize = 256;

/// CRC-32 of the last bytes seam took of a blob, up to [`TAIL_LEN`]: they end at the offset.
/// Read again at the next read, they tell a blob that only grew from another blob written
/// under the same name since (the entity tag cannot: an append changes it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The checksum.
    pub crc: u32,
    /// How many bytes it covers (1 to [`TAIL_LEN`]).
    pub len: u64,
}

impl Tail {
    /// The fingerprint of the last (up to [`TAIL_LEN`]) bytes of `taken`, bytes that end at
    /// the offset; `None` when `taken` is empty.
    pub fn of(taken: &[u8]) -> Option<Self> {
        let from = taken.len().saturating_sub(TAIL_LEN);
        let bytes = taken.get(from..).unwrap_or(taken);
        if bytes.is_empty() {
            return None;
        }
        Some(Self {
            crc: crc32fast::hash(bytes),
            len: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        })
    }
}

/// How many of the bytes of a read that started `tail.len` bytes before the offset lie
/// before it (0 without a fingerprint): the bytes after them are the new ones. `None` when
/// those bytes are not the ones fingerprinted (or the read is shorter): the blob was
/// rewritten under the same name since seam took them.
pub(crate) fn past_tail(read: &[u8], tail: Option<Tail>) -> Option<usize> {
    let Some(t) = tail else {
        return Some(0);
    };
    let n = usize::try_from(t.len).ok()?;
    let before = read.get(..n)?;
    (crc32fast::hash(before) == t.crc).then_some(n)
}

/// What to do with the bytes read from a blob's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Take the first `len` bytes, which hold `lines` lines.
    Take {
        /// Bytes taken.
        len: usize,
        /// Lines they hold (a last line without its newline counts).
        lines: u64,
    },
    /// Nothing whole yet: wait for the blob to grow or settle.
    Wait,
    /// Not one newline in a read that did not reach the blob's end: read a wider range.
    Wider,
}

/// What to take of `chunk`, read from the blob's offset: whole lines, at most `max_lines`.
///
/// - `at_end`: the chunk reaches the blob's current end.
/// - `take_rest`: the blob can no longer grow, so a last line without a newline is whole.
/// - `widest`: the read was already as wide as allowed; a line longer than that is taken
///   in pieces rather than never.
pub(crate) fn cut(
    chunk: &[u8],
    at_end: bool,
    take_rest: bool,
    widest: bool,
    max_lines: u64,
) -> Cut {
    let mut lines = 0u64;
    let mut last_newline = None;
    for (i, &b) in chunk.iter().enumerate() {
        if b == b'\n' {
            lines = lines.saturating_add(1);
            last_newline = Some(i);
            if lines >= max_lines.max(1) {
                return Cut::Take {
                    len: i.saturating_add(1),
                    lines,
                };
            }
        }
    }
    match last_newline {
        Some(i) if i.saturating_add(1) == chunk.len() => Cut::Take {
            len: chunk.len(),
            lines,
        },
        Some(_) if at_end && take_rest => Cut::Take {
            len: chunk.len(),
            lines: lines.saturating_add(1),
        },
        Some(i) => Cut::Take {
            len: i.saturating_add(1),
            lines,
        },
        None if chunk.is_empty() => Cut::Wait,
        None if at_end => {
            if take_rest {
                Cut::Take {
                    len: chunk.len(),
                    lines: 1,
                }
            } else {
                Cut::Wait
            }
        }
        None if widest => Cut::Take {
            len: chunk.len(),
            lines: 0,
        },
        None => Cut::Wider,
    }
}

/// The `detail` of a blob's position in `source_positions` (JSON): what the blob was when
/// the position was written. No secret goes here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Detail {
    /// The blob's size when read.
    pub size: u64,
    /// Its entity tag then (without quotes).
    pub etag: Option<String>,
    /// Finished: its hour is over, all of it was taken and it had not changed for `settle`.
    pub done: bool,
    /// Lines taken (the next text starts at line `line + 1`).
    pub line: u64,
    /// [`Tail::crc`] of the last bytes taken; absent in positions of older versions (then
    /// nothing is checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_crc: Option<u32>,
    /// [`Tail::len`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail_len: Option<u64>,
}

impl Detail {
    /// As JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From a stored `detail`; what cannot be read counts as absent.
    pub fn parse(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// Sets the tail fingerprint (or clears it).
    pub fn with_tail(mut self, tail: Option<Tail>) -> Self {
        self.tail_crc = tail.map(|t| t.crc);
        self.tail_len = tail.map(|t| t.len);
        self
    }

    /// The stored tail fingerprint of a position at `offset`, when well formed: it covers
    /// 1 to [`TAIL_LEN`] bytes, no more than `offset`.
    pub fn tail(&self, offset: u64) -> Option<Tail> {
        let (crc, len) = (self.tail_crc?, self.tail_len?);
        let max = u64::try_from(TAIL_LEN).unwrap_or(u64::MAX);
        ((1..=max).contains(&len) && len <= offset).then_some(Tail { crc, len })
    }
}

/// An entity tag without the quotes that HTTP headers (but not every listing) put around it.
pub(crate) fn etag(raw: &str) -> String {
    raw.trim().trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(len: usize, lines: u64) -> Cut {
        Cut::Take { len, lines }
    }

    #[test]
    fn whole_lines_are_taken_and_a_cut_record_waits() {
        let c = b"{\"a\":1}\n{\"b\":2}\n{\"c\":";
        // Growing blob: up to the last newline.
        assert_eq!(cut(c, true, false, false, MAX_LINES), take(16, 2));
        // A read that stops before the end: the same.
        assert_eq!(cut(c, false, false, false, MAX_LINES), take(16, 2));
        // The remainder alone, later: it waits while the blob may grow...
        assert_eq!(cut(b"{\"c\":", true, false, false, MAX_LINES), Cut::Wait);
        // ...and is completed by the next append.
        assert_eq!(
            cut(b"{\"c\":3}\n", true, false, false, MAX_LINES),
            take(8, 1)
        );
        // Ending exactly at a newline takes everything.
        assert_eq!(cut(b"x\ny\n", true, false, false, MAX_LINES), take(4, 2));
    }

    #[test]
    fn a_settled_blob_gives_its_last_line_without_a_newline() {
        let c = b"{\"a\":1}\n{\"b\":2}";
        assert_eq!(cut(c, true, true, false, MAX_LINES), take(15, 2));
        assert_eq!(cut(b"{\"b\":2}", true, true, false, MAX_LINES), take(7, 1));
        // Not at the end: the rest of the line is still to be read.
        assert_eq!(cut(c, false, true, false, MAX_LINES), take(8, 1));
        assert_eq!(cut(b"", true, true, false, MAX_LINES), Cut::Wait);
    }

    #[test]
    fn a_line_longer_than_a_read_widens_the_read_then_is_taken_in_pieces() {
        assert_eq!(
            cut(b"{\"long\":", false, false, false, MAX_LINES),
            Cut::Wider
        );
        assert_eq!(
            cut(b"{\"long\":", false, false, true, MAX_LINES),
            take(8, 0)
        );
        assert_eq!(cut(b"{\"long\":", true, false, true, MAX_LINES), Cut::Wait);
    }

    #[test]
    fn at_most_max_lines_per_step() {
        assert_eq!(cut(b"a\nb\nc\nd", true, true, false, 2), take(4, 2));
        assert_eq!(cut(b"a\nb\n", true, true, false, 2), take(4, 2));
        assert_eq!(cut(b"a\nb\n", true, true, false, 0), take(2, 1));
    }

    #[test]
    fn details_round_trip_and_unreadable_ones_are_empty() {
        let d = Detail {
            size: 10,
            etag: Some("0x8DC".into()),
            done: true,
            line: 3,
            ..Detail::default()
        };
        assert_eq!(
            d.to_json(),
            r#"{"size":10,"etag":"0x8DC","done":true,"line":3}"#
        );
        // With a tail fingerprint.
        let t = Tail::of(b"0123456789").unwrap();
        let dt = d.clone().with_tail(Some(t));
        assert_eq!(
            dt.to_json(),
            format!(
                r#"{{"size":10,"etag":"0x8DC","done":true,"line":3,"tail_crc":{},"tail_len":10}}"#,
                t.crc
            )
        );
        assert_eq!(Detail::parse(Some(dt.to_json().as_str())), dt);
        assert_eq!(dt.tail(10), Some(t));
        // Covering more than the offset, or nothing: not trusted.
        assert_eq!(dt.tail(9), None);
        assert_eq!(
            d.clone().with_tail(Some(Tail { crc: 1, len: 0 })).tail(10),
            None
        );
        // Positions of older versions have none.
        assert_eq!(d.tail(10), None);
        assert_eq!(Detail::parse(Some(d.to_json().as_str())), d);
        assert_eq!(Detail::parse(Some("not json")), Detail::default());
        assert_eq!(Detail::parse(Some(r#"{"size":4}"#)).size, 4);
        assert_eq!(Detail::parse(None), Detail::default());
        assert_eq!(etag("\"0x8DC\""), "0x8DC");
        assert_eq!(etag("0x8DC"), "0x8DC");
    }

    #[test]
    fn the_tail_covers_the_last_bytes_taken() {
        assert_eq!(Tail::of(b""), None);
        let short = Tail::of(b"abc").unwrap();
        assert_eq!(short.len, 3);
        assert_eq!(short.crc, crc32fast::hash(b"abc"));
        let long: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let t = Tail::of(&long).unwrap();
        assert_eq!(t.len, TAIL_LEN as u64);
        assert_eq!(t.crc, crc32fast::hash(&long[1000 - TAIL_LEN..]));
    }

    #[test]
    fn a_blob_that_only_grew_passes_the_tail_check_and_a_rewritten_one_fails_it() {
        // seam took 100 records; the tail covers the end of what it took.
        let old: Vec<u8> = (0..100)
            .flat_map(|i| format!("{{\"old\":{i}}}\n").into_bytes())
            .collect();
        let tail = Tail::of(&old);
        let n = tail.unwrap().len as usize;
        let offset = old.len();
        // It grew: the read from offset - n starts with the same bytes.
        let mut grown = old.clone();
        grown.extend_from_slice(b"{\"new\":1}\n");
        let read = &grown[offset - n..];
        assert_eq!(past_tail(read, tail), Some(n));
        assert_eq!(&read[n..], b"{\"new\":1}\n");
        // Rewritten under the same name with 300 other records (longer than the offset).
        let new: Vec<u8> = (0..300)
            .flat_map(|i| format!("{{\"new\":{i}}}\n").into_bytes())
            .collect();
        assert!(new.len() > offset);
        assert_eq!(past_tail(&new[offset - n..], tail), None);
        // A read shorter than the fingerprint: not the same blob either.
        assert_eq!(past_tail(&old[offset - n + 1..], tail), None);
        // No fingerprint (a position of an older version): no check.
        assert_eq!(past_tail(b"anything", None), Some(0));
    }
}
