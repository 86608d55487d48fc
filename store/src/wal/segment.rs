//! WAL segment format: a header, then length-prefixed, checksummed entries.
//!
//! ```text
//! header  = magic "SEAMWAL1" (8 bytes) | version u32 LE (2; 1 is read) | segment id u64 LE (20 bytes)
//! entry   = payload length u32 LE | crc32 u32 LE | seq u64 LE | table length u8 | table | payload
//! crc32   = CRC-32 (IEEE) over seq, table length, table and payload
//! payload = one Arrow IPC stream holding the record batch of one request for one table
//!
//! A request that fills several tables is one entry (written and checksummed whole, so it is
//! replayed whole or not at all), under the reserved table name `+`:
//! payload = part*, part = table length u8 | table | IPC length u32 LE | Arrow IPC stream
//! ```
//!
//! Takes bytes read from a segment file; gives the entries and, for a bad one, whether it is a
//! torn tail (an entry cut short at the end of the file: a write interrupted by a crash) or
//! corruption (a bad entry with more data after it).

/// Magic bytes that open every segment.
pub const MAGIC: &[u8; 8] = b"SEAMWAL1";
/// Segment format version written. Version 2 added multi-table entries ([`MULTI`]); a
/// seam that knows only version 1 refuses such a segment (under `wal.on_corrupt = "fail"`)
/// instead of skipping entries it cannot read and deleting them as persisted.
pub const VERSION: u32 = 2;
/// Versions read: 1 (single-table entries only) and 2.
pub const READABLE: [u32; 2] = [1, 2];
/// Size of the segment header.
pub const HEADER_LEN: usize = 20;
/// Fixed bytes of an entry before its table name.
pub const ENTRY_FIXED: usize = 4 + 4 + 8 + 1;
/// Largest payload accepted when reading (a length beyond it is corruption).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// The segment header.
pub fn header(segment_id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&segment_id.to_le_bytes());
    h
}

fn crc(seq: u64, table: &str, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&[table.len() as u8]);
    h.update(table.as_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one encoded entry to `out`.
pub fn encode_entry(out: &mut Vec<u8>, seq: u64, table: &str, payload: &[u8]) {
    let name = &table.as_bytes()[..table.len().min(255)];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc(seq, table, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(payload);
}

/// One entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Table name.
    pub table: &'a str,
    /// Arrow IPC payload.
    pub payload: &'a [u8],
    /// Offset of the entry in the segment.
    pub offset: usize,
}

/// What went wrong with a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The last entry is incomplete or fails its checksum and nothing follows it: a write
    /// interrupted by a crash. Cut the file at `offset`.
    TornTail {
        /// Where the good part ends.
        offset: usize,
    },
    /// A bad entry with data after it, or a bad header.
    Corrupt {
        /// Where the bad entry starts.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The table name of an entry that holds parts for several tables.
pub const MULTI: &str = "+";

/// Encodes the payload of a [`MULTI`] entry.
pub fn encode_parts(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|(t, p)| t.len() + p.len() + 5).sum());
    for (table, payload) in parts {
        let name = &table.as_bytes()[..table.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}

/// The `(table, payload)` parts of `entry`: itself for a single-table entry, each part of a
/// [`MULTI`] one.
///
/// # Errors
/// A multi-table payload whose parts do not add up (the checksum passed, so a bug or an
/// entry written by another program).
pub fn parts<'a>(entry: &Entry<'a>) -> Result<Vec<(&'a str, &'a [u8])>, &'static str> {
    if entry.table != MULTI {
        return Ok(vec![(entry.table, entry.payload)]);
    }
    let mut out = Vec::new();
    let mut rest = entry.payload;
    while !rest.is_empty() {
        let n = rest[0] as usize;
        let name = rest.get(1..1 + n).ok_or("part name cut short")?;
        let table = std::str::from_utf8(name).map_err(|_| "part name is not UTF-8")?;
        let len = rest.get(1 + n..5 + n).ok_or("part length cut short")?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let body = rest
            .get(5 + n..(5 + n).saturating_add(len))
            .ok_or("part payload cut short")?;
        out.push((table, body));
        rest = &rest[(5 + n).saturating_add(len)..];
    }
    Ok(out)
}

/// Parses a whole segment. Returns the good entries up to the first damage, and the damage.
pub fn parse(bytes: &[u8]) -> (Option<u64>, Vec<Entry<'_>>, Option<Damage>) {
    if bytes.len() < HEADER_LEN {
        // A segment whose header was never completely written holds no entries.
        return (None, Vec::new(), Some(Damage::TornTail { offset: 0 }));
    }
    if &bytes[..8] != MAGIC {
        let d = Damage::Corrupt {
            offset: 0,
            reason: "bad magic number",
        };
        return (None, Vec::new(), Some(d));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if !READABLE.contains(&version) {
        let d = Damage::Corrupt {
            offset: 8,
            reason: "unknown segment version",
        };
        return (None, Vec::new(), Some(d));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[12..20]);
    let id = u64::from_le_bytes(id);
    let mut entries = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < bytes.len() {
        match parse_entry(bytes, pos) {
            Ok((entry, next)) => {
                entries.push(entry);
                pos = next;
            }
            Err((claimed_end, reason)) => {
                // Torn when the bad entry reaches (or claims to reach past) the end of the
                // file: nothing was written after it.
                let damage = if claimed_end >= bytes.len() {
                    Damage::TornTail { offset: pos }
                } else {
                    Damage::Corrupt {
                        offset: pos,
                        reason,
                    }
                };
                return (Some(id), entries, Some(damage));
            }
        }
    }
    (Some(id), entries, None)
}

fn parse_entry(bytes: &[u8], pos: usize) -> Result<(Entry<'_>, usize), (usize, &'static str)> {
    let rest = &bytes[pos..];
    if rest.len() < ENTRY_FIXED {
        return Err((usize::MAX, "entry header cut short"));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let sum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&rest[8..16]);
    let seq = u64::from_le_bytes(s);
    let name_len = rest[16] as usize;
    let end = pos
        .saturating_add(ENTRY_FIXED)
        .saturating_add(name_len)
        .saturating_add(len);
    if len > MAX_PAYLOAD {
        return Err((usize::MAX, "entry length out of range"));
    }
    if end > bytes.len() {
        return Err((end, "entry cut short"));
    }
    let name = &rest[ENTRY_FIXED..ENTRY_FIXED + name_len];
    let payload = &rest[ENTRY_FIXED + name_len..ENTRY_FIXED + name_len + len];
    let Ok(table) = std::str::from_utf8(name) else {
        return Err((end, "table name is not UTF-8"));
    };
    if crc(seq, table, payload) != sum {
        return Err((end, "checksum mismatch"));
    }
    Ok((
        Entry {
            seq,
            table,
            payload,
            offset: pos,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_one_segments_are_still_read() {
        let mut buf = header(3).to_vec();
        buf[8..12].copy_from_slice(&1u32.to_le_bytes());
        encode_entry(&mut buf, 5, "spans", b"x");
        let (id, entries, damage) = parse(&buf);
        assert_eq!((id, entries.len(), damage), (Some(3), 1, None));
        buf[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(parse(&buf).2, Some(Damage::Corrupt { .. })));
    }

    #[test]
    fn multi_table_entries_round_trip() {
        let payload = encode_parts(&[("logs", b"abc".as_slice()), ("flow_logs", b"".as_slice())]);
        let mut buf = header(7).to_vec();
        encode_entry(&mut buf, 42, MULTI, &payload);
        let (_, entries, damage) = parse(&buf);
        assert!(damage.is_none());
        let got = parts(&entries[0]).expect("parts");
        assert_eq!(
            got,
            vec![("logs", b"abc".as_slice()), ("flow_logs", b"".as_slice())]
        );
        let bad = Entry {
            seq: 1,
            table: MULTI,
            payload: &[4, b'l'],
            offset: 0,
        };
        assert!(parts(&bad).is_err());
    }

    use super::*;

    fn segment(entries: &[(u64, &str, &[u8])]) -> Vec<u8> {
        let mut b = header(7).to_vec();
        for (seq, t, p) in entries {
            encode_entry(&mut b, *seq, t, p);
        }
        b
    }

    #[test]
    fn round_trip() {
        let b = segment(&[(1, "spans", b"abc"), (2, "logs", b"")]);
        let (id, entries, damage) = parse(&b);
        assert_eq!(id, Some(7));
        assert_eq!(damage, None);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[0].seq, entries[0].table, entries[0].payload),
            (1, "spans", &b"abc"[..])
        );
        assert_eq!((entries[1].seq, entries[1].table), (2, "logs"));
    }

    #[test]
    fn torn_tail_is_told_from_corruption() {
        let full = segment(&[(1, "spans", b"abcdef"), (2, "spans", b"ghijkl")]);
        let second = HEADER_LEN + ENTRY_FIXED + 5 + 6;
        for cut in second + 1..full.len() {
            let (_, entries, damage) = parse(&full[..cut]);
            assert_eq!(entries.len(), 1, "cut at {cut}");
            assert_eq!(
                damage,
                Some(Damage::TornTail { offset: second }),
                "cut at {cut}"
            );
        }
        // A flipped byte in the last entry's payload, with nothing after it: torn.
        let mut torn = full.clone();
        let last = torn.len() - 1;
        torn[last] ^= 1;
        assert_eq!(parse(&torn).2, Some(Damage::TornTail { offset: second }));
        // A flipped byte in the first entry, with a good entry after it: corruption.
        let mut bad = full.clone();
        bad[HEADER_LEN + ENTRY_FIXED + 5] ^= 1;
        let (_, entries, damage) = parse(&bad);
        assert!(entries.is_empty());
        assert!(matches!(
            damage,
            Some(Damage::Corrupt {
                offset: HEADER_LEN,
                ..
            })
        ));
        let mut magic = full;
        magic[0] = b'X';
        assert!(matches!(
            parse(&magic).2,
            Some(Damage::Corrupt { offset: 0, .. })
        ));
    }
}
