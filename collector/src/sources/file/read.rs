//! Reading files for the file source: bounded reads at an offset (`pread`, so a step never
//! moves a shared file position), the first bytes and the bytes before an offset for the
//! fingerprints, line counts, and gzip streams opened and skipped to a decompressed offset.
//!
//! Takes open files and offsets; gives bytes. Blocking.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::identity::FP_LEN;

/// Read size when counting or skipping.
const PIECE: usize = 64 * 1024;

/// The position key of a file: `device:inode`.
pub(super) fn key_of(md: &Metadata) -> String {
    format!("{}:{}", md.dev(), md.ino())
}

/// A gzip file, by its name (`*.gz`).
pub(super) fn is_gz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// A length as `u64`.
pub(super) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Newlines in `bytes`.
pub(super) fn count_newlines(bytes: &[u8]) -> u64 {
    len_u64(bytes.iter().filter(|&&b| b == b'\n').count())
}

/// Reads up to `want` bytes at `offset`: the bytes, and whether the file ended first.
pub(super) fn read_at_most(file: &File, offset: u64, want: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = vec![0u8; want];
    let mut filled = 0usize;
    let mut eof = false;
    while filled < want {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match file.read_at(rest, offset.saturating_add(len_u64(filled))) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok((buf, eof))
}

/// The first bytes of a file of `size` bytes, for its fingerprint.
pub(super) fn read_head(file: &File, size: u64) -> io::Result<Vec<u8>> {
    let want = usize::try_from(size.min(FP_LEN)).unwrap_or(0);
    Ok(read_at_most(file, 0, want)?.0)
}

/// The bytes just before `offset`: at most [`FP_LEN`], fewer when the offset is smaller (or
/// the file shorter than the offset now), for the tail fingerprint.
pub(super) fn read_before(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let n = offset.min(FP_LEN);
    let want = usize::try_from(n).unwrap_or(0);
    Ok(read_at_most(file, offset.saturating_sub(n), want)?.0)
}

/// Newlines in the first `upto` bytes of a file (for a position stored without its line).
pub(super) fn count_lines_upto(file: &File, upto: u64) -> io::Result<u64> {
    let mut lines = 0u64;
    let mut at = 0u64;
    while at < upto {
        let want = usize::try_from(upto.saturating_sub(at))
            .unwrap_or(PIECE)
            .min(PIECE);
        let (got, eof) = read_at_most(file, at, want)?;
        lines = lines.saturating_add(count_newlines(&got));
        at = at.saturating_add(len_u64(got.len()));
        if eof || got.is_empty() {
            break;
        }
    }
    Ok(lines)
}

/// Reads and drops `n` bytes of `r`: how many there were, and the newlines among them.
pub(super) fn skip(r: &mut impl Read, n: u64) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; PIECE];
    let mut left = n;
    let mut lines = 0u64;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(PIECE).min(PIECE);
        let Some(piece) = buf.get_mut(..want) else {
            break;
        };
        match r.read(piece) {
            Ok(0) => break,
            Ok(got) => {
                lines = lines.saturating_add(count_newlines(piece.get(..got).unwrap_or_default()));
                left = left.saturating_sub(len_u64(got));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n.saturating_sub(left), lines))
}

/// The name an open file has now (Linux), when it still has one.
pub(super) fn current_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    let p = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    if p.to_string_lossy().ends_with(" (deleted)") {
        return None;
    }
    Some(p)
}

/// An opened gzip stream, the decompressed bytes skipped and the newlines among them.
pub(super) type Opened = (MultiGzDecoder<File>, u64, u64);

/// Opens a gzip file's stream (by name unless `file` is open) and skips the `offset`
/// decompressed bytes already taken: the stream, the bytes skipped and their newlines.
/// `None` when the file is no longer there under its name.
pub(super) fn open_gz(
    key: &str,
    path: &Path,
    file: Option<File>,
    offset: u64,
) -> io::Result<Option<Opened>> {
    let mut f = match file {
        Some(f) => f,
        None => match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    if key_of(&f.metadata()?) != key {
        return Ok(None);
    }
    f.rewind()?;
    let mut dec = MultiGzDecoder::new(f);
    let (skipped, lines) = skip(&mut dec, offset)?;
    Ok(Some((dec, skipped, lines)))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        (dir, f)
    }

    #[test]
    fn reads_are_bounded_and_say_when_the_file_ended() {
        let (_d, f) = file_with(b"0123456789");
        assert_eq!(read_at_most(&f, 2, 3).unwrap(), (b"234".to_vec(), false));
        assert_eq!(read_at_most(&f, 8, 5).unwrap(), (b"89".to_vec(), true));
        assert_eq!(read_at_most(&f, 20, 5).unwrap(), (Vec::new(), true));
        assert_eq!(read_head(&f, 10).unwrap(), b"0123456789".to_vec());
    }

    #[test]
    fn the_bytes_before_an_offset_are_at_most_256() {
        let (_d, f) = file_with(b"0123456789");
        assert_eq!(read_before(&f, 4).unwrap(), b"0123".to_vec());
        assert_eq!(read_before(&f, 0).unwrap(), Vec::<u8>::new());
        // Past the end now: fewer bytes than asked.
        assert_eq!(read_before(&f, 12).unwrap(), b"0123456789".to_vec());
        let long: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let (_d, f) = file_with(&long);
        assert_eq!(read_before(&f, 900).unwrap(), long[644..900].to_vec());
    }

    #[test]
    fn lines_are_counted_up_to_an_offset() {
        let (_d, f) = file_with(b"a\nb\nc\n");
        assert_eq!(count_lines_upto(&f, 4).unwrap(), 2);
        assert_eq!(count_lines_upto(&f, 100).unwrap(), 3);
    }

    #[test]
    fn a_gzip_stream_is_skipped_to_a_decompressed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"l1\nl2\nl3\n").unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let key = key_of(&std::fs::metadata(&p).unwrap());
        let (mut dec, skipped, lines) = open_gz(&key, &p, None, 3).unwrap().unwrap();
        assert_eq!((skipped, lines), (3, 1));
        let mut rest = String::new();
        dec.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "l2\nl3\n");
        // Past its end: fewer bytes skipped than asked.
        let (_, skipped, _) = open_gz(&key, &p, None, 100).unwrap().unwrap();
        assert_eq!(skipped, 9);
        // Another file under the name: not this one.
        assert!(open_gz("0:0", &p, None, 0).unwrap().is_none());
        assert!(
            open_gz(&key, &dir.path().join("gone.gz"), None, 0)
                .unwrap()
                .is_none()
        );
    }
}
