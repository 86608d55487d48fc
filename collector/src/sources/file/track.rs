//! The files a file source follows: found by glob patterns at each scan, known by
//! `device:inode`, read from their offset in steps of at most `max_batch_bytes`.
//!
//! Takes the settings and the stored positions; gives, per step of one file, the text to
//! deliver with the position after it ([`Step::Take`]), which [`Tracker::commit`] applies once
//! it is stored. Everything here is blocking file I/O: the source runs it on the blocking pool.
//!
//! - **Identity.** A file keeps its identity across renames (its inode), so a rotated
//!   `app.log.1` is not read again, and a file renamed to a name no pattern matches is read to
//!   its end through the handle kept open, then dropped. A reused inode and a file truncated
//!   and written again are told apart by a fingerprint of the first bytes and one of the last
//!   bytes taken (`identity`), checked when a file is found with a stored position and
//!   whenever a followed file changed: one read of the first bytes and one of at most 256
//!   bytes before the offset.
//! - **Truncation.** A file shorter than its offset, whose first bytes changed, or whose bytes
//!   before the offset are not those taken (truncated and written again past the offset with
//!   the same first bytes) is read again from its start, and reported.
//! - **Gzip.** `*.gz` files are decompressed as a stream, once, one at a time; the offset
//!   counts decompressed bytes, and a finished one is marked `done` and never read again.
//! - **Bounded.** One step reads at most `max_batch_bytes`. At most [`MAX_OPEN`] handles are
//!   kept open (one more while a file is looked at): a closed file that changed is opened
//!   again by name (the same `device:inode`) when there is room, made by closing a file read
//!   to its end (the least recently changed first), else one unchanged for five minutes;
//!   otherwise it waits its turn, still followed and counted in the lag. A file renamed away
//!   keeps its handle until it is read to its end. Files unchanged for five minutes are also
//!   closed between steps once read to their end.
//! - **Scans.** A followed file a scan does not find is gone (read to its end, then dropped)
//!   only when that is certain: when the listing failed somewhere (a directory that cannot
//!   be read, too many open files), the file is looked at by its path instead.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use flate2::read::MultiGzDecoder;

use super::cut::{self, Mode};
use super::identity::{self, Check, Detail, Fingerprint, Note, Start};
use super::read::{
    count_lines_upto, count_newlines, current_path, is_gz, key_of, len_u64, open_gz, read_at_most,
    read_before, read_head,
};
use crate::sources::pull::Position;
use crate::sources::pull::config::FileSource;

/// A file unchanged this long, and not renamed away, is closed once read to its end.
const CLOSE_AFTER: Duration = Duration::from_secs(300);

/// Most handles one source keeps open at once (one more while a file is looked at). A file
/// that needs one when there is no room waits its turn ([`Tracker::make_room`]).
const MAX_OPEN: usize = 256;

/// What the tracker needs of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Glob patterns of the files to read.
    pub(crate) patterns: Vec<String>,
    /// Patterns of paths to leave out (matched against the whole path).
    pub(crate) exclude: Vec<glob::Pattern>,
    /// How the end of a read is held back.
    pub(crate) mode: Mode,
    /// Most bytes per step.
    pub(crate) max: usize,
    /// How long an unchanged file's last entry or line waits.
    pub(crate) timeout: Duration,
}

impl Settings {
    /// From a validated configuration.
    pub(crate) fn new(cfg: &FileSource) -> Self {
        Self {
            patterns: cfg.paths.clone(),
            exclude: cfg
                .exclude
                .iter()
                .filter_map(|p| glob::Pattern::new(p).ok())
                .collect(),
            mode: Mode::of(cfg.format),
            max: cfg.max_batch_bytes.max(1),
            timeout: cfg.multiline_timeout,
        }
    }
}

/// A gzip file's reading state.
struct Gz {
    /// The stream, while it is being read.
    decoder: Option<MultiGzDecoder<File>>,
    /// Decompressed bytes read and not taken yet (at most `max_batch_bytes`).
    pending: Vec<u8>,
    /// The stream ended.
    eof: bool,
    /// Read to its end and stored as such.
    done: bool,
    /// Size and change time unchanged across two scans: complete (not being written).
    stable: bool,
    /// Size and change time at the last scan.
    listed: (u64, Option<SystemTime>),
}

impl fmt::Debug for Gz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gz")
            .field("open", &self.decoder.is_some())
            .field("pending", &self.pending.len())
            .field("eof", &self.eof)
            .field("done", &self.done)
            .field("stable", &self.stable)
            .finish()
    }
}

/// One followed file.
#[derive(Debug)]
struct Tracked {
    /// Its name (the last one seen).
    path: PathBuf,
    /// Open while it is active or renamed away, and there is room.
    file: Option<File>,
    /// Gzip state, for `*.gz` files.
    gz: Option<Gz>,
    /// Bytes taken (decompressed bytes for gzip).
    offset: u64,
    /// Line number at the offset (0: not known yet, counted when a gzip stream opens).
    line: u64,
    /// Fingerprint of its first bytes.
    fp: Fingerprint,
    /// The bytes just before the offset, as taken (at most 256; plain files only, empty at
    /// offset 0): a rewrite with the same first bytes changes them.
    tail: Vec<u8>,
    /// Found by the last scan (or still at its path when the scan could not tell).
    seen: bool,
    /// Size at the last look.
    size: u64,
    /// Change time at the last look.
    mtime: Option<SystemTime>,
    /// When a change was last seen (or when it was found).
    since: Instant,
    /// How long it had been unchanged when found (0 after a change).
    before: Duration,
    /// A gzip file that cannot be read (damaged): left alone until seam restarts.
    failed: bool,
}

impl Tracked {
    /// How long it has been unchanged, as far as seen.
    fn idle_for(&self) -> Duration {
        self.before.saturating_add(self.since.elapsed())
    }

    /// Whether its size or change time differ from the last look.
    fn changed(&self, size: u64, mtime: Option<SystemTime>) -> bool {
        size != self.size || mtime != self.mtime
    }

    /// Records its size and change time now (a change when they differ).
    fn observe(&mut self, size: u64, mtime: Option<SystemTime>) {
        if !self.changed(size, mtime) {
            return;
        }
        self.size = size;
        self.mtime = mtime;
        self.since = Instant::now();
        self.before = Duration::ZERO;
    }

    /// Back to its start (truncated or replaced).
    fn restart(&mut self, head: &[u8]) {
        self.offset = 0;
        self.line = 1;
        self.fp = Fingerprint::of(head);
        self.tail.clear();
    }

    /// Whether it holds an open handle (its file, or its gzip stream).
    fn holds_handle(&self) -> bool {
        self.file.is_some() || self.gz.as_ref().is_some_and(|g| g.decoder.is_some())
    }

    /// Its position at `offset`/`line`; `tail`: the bytes just before `offset`.
    fn position(&self, key: &str, offset: u64, line: u64, done: bool, tail: &[u8]) -> Position {
        let mut detail = Detail {
            path: self.path.display().to_string(),
            fp: self.fp.hex(),
            fp_len: self.fp.len,
            line,
            tail: String::new(),
            tail_len: 0,
            gz: self.gz.is_some(),
            done,
        };
        detail.set_tail(tail);
        Position {
            key: key.to_string(),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            detail: Some(detail.to_json()),
        }
    }

    /// The step that takes `taken` (read from the offset). `gz`: decompressed bytes taken
    /// from the pending buffer, and whether that finishes the stream.
    fn take(&self, key: &str, taken: &[u8], more: bool, gz: Option<(usize, bool)>) -> Take {
        let newlines = count_newlines(taken);
        let n = len_u64(taken.len());
        let offset = self.offset.saturating_add(n);
        let line = self.line.saturating_add(newlines);
        let done = gz.is_some_and(|(_, d)| d);
        // The bytes before the new offset (plain files): a later rewrite changes them.
        let tail = if self.gz.is_some() {
            Vec::new()
        } else {
            identity::keep_tail(&self.tail, taken)
        };
        Take {
            text: String::from_utf8_lossy(taken).into_owned(),
            origin: self.path.display().to_string(),
            first_line: self.line.max(1),
            records: newlines.saturating_add(u64::from(!taken.ends_with(b"\n"))),
            bytes: n,
            position: self.position(key, offset, line, done, &tail),
            more: more && !done,
            commit: Commit {
                key: key.to_string(),
                from: self.offset,
                offset,
                line,
                tail,
                gz_taken: gz.map_or(0, |(k, _)| k),
                gz_done: done,
            },
        }
    }

    /// Bytes not taken yet (compressed bytes for a gzip file not finished).
    fn left(&self) -> u64 {
        match &self.gz {
            Some(g) if g.done || self.failed => 0,
            Some(g) => match &g.decoder {
                Some(d) => {
                    let mut f: &File = d.get_ref();
                    f.stream_position()
                        .map_or(self.size, |p| self.size.saturating_sub(p))
                }
                None => self.size,
            },
            None => self.size.saturating_sub(self.offset),
        }
    }
}

/// Text taken from one file: deliver it, then [`Tracker::commit`] its `commit`.
#[derive(Debug)]
pub(crate) struct Take {
    /// The lines (invalid UTF-8 replaced; offsets count the raw bytes).
    pub(crate) text: String,
    /// The file's path.
    pub(crate) origin: String,
    /// Line number of the text's first line in the file.
    pub(crate) first_line: u64,
    /// Lines taken.
    pub(crate) records: u64,
    /// Bytes taken (decompressed bytes for gzip).
    pub(crate) bytes: u64,
    /// The position after the text.
    pub(crate) position: Position,
    /// More of this file can be taken right away.
    pub(crate) more: bool,
    /// What to apply once stored.
    pub(crate) commit: Commit,
}

/// What [`Tracker::commit`] applies once a step is stored.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    key: String,
    from: u64,
    offset: u64,
    line: u64,
    /// The bytes just before `offset` (plain files).
    tail: Vec<u8>,
    gz_taken: usize,
    gz_done: bool,
}

/// What one step of one file gives.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing to take now.
    Nothing,
    /// Text to deliver.
    Take(Take),
    /// A position to store alone (a gzip file found finished), then commit.
    Save {
        /// The position.
        position: Position,
        /// What to apply once stored.
        commit: Commit,
    },
    /// The file went away (deleted, or renamed to a name no pattern matches) and was read
    /// to its end: no longer followed.
    Dropped,
}

/// What one listing of the patterns found.
#[derive(Debug, Default)]
struct Listing {
    /// The files found, by key: the path each is followed under, and its metadata.
    found: BTreeMap<String, (PathBuf, Metadata)>,
    /// Problems met (path and error).
    errors: Vec<String>,
    /// Some directory or path could not be looked at: a followed file not found may still
    /// be there.
    partial: bool,
}

/// The followed files of one source.
#[derive(Debug)]
pub(crate) struct Tracker {
    settings: Settings,
    files: HashMap<String, Tracked>,
    /// Stored positions of files not followed (yet): used when such a file is found.
    stored: HashMap<String, Position>,
    /// The gzip file being decompressed (one at a time).
    gz_active: Option<String>,
    /// Most handles kept open ([`MAX_OPEN`]).
    max_open: usize,
    /// Keys of deleted files read to their end, for the source to forget.
    pub(crate) forgotten: Vec<String>,
}

impl Tracker {
    /// A tracker that resumes from `stored` (the newest durable positions, by key).
    pub(crate) fn new(settings: Settings, stored: HashMap<String, Position>) -> Self {
        Self {
            settings,
            files: HashMap::new(),
            stored,
            gz_active: None,
            max_open: MAX_OPEN,
            forgotten: Vec::new(),
        }
    }

    /// Number of followed files.
    pub(crate) fn followed(&self) -> usize {
        self.files.len()
    }

    /// Looks for files: new ones are followed, renamed ones get their new name, and those
    /// no pattern finds any more are marked gone (read to their end, then dropped). Gives
    /// the problems met (path and error).
    pub(crate) fn scan(&mut self) -> Vec<String> {
        let listing = self.list();
        self.apply(listing)
    }

    /// The files the patterns match now, less the excluded ones.
    fn list(&self) -> Listing {
        let mut l = Listing::default();
        for pattern in &self.settings.patterns {
            let paths = match glob::glob(pattern) {
                Ok(p) => p,
                Err(e) => {
                    // Not a pattern: it matches nothing.
                    l.errors.push(format!("{pattern}: {e}"));
                    continue;
                }
            };
            for entry in paths {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        // A directory that cannot be read: what it holds is not known.
                        l.errors
                            .push(format!("{}: {}", e.path().display(), e.error()));
                        l.partial = true;
                        continue;
                    }
                };
                if self.settings.exclude.iter().any(|x| x.matches_path(&path)) {
                    continue;
                }
                // Symbolic links are followed: the target's identity.
                let md = match std::fs::metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        l.errors.push(format!("{}: {e}", path.display()));
                        l.partial = true;
                        continue;
                    }
                };
                if !md.is_file() {
                    continue;
                }
                let key = key_of(&md);
                // One file under two names (links, overlapping patterns): the name it is
                // followed under, else the first found.
                let keep_new = match l.found.get(&key) {
                    None => true,
                    Some(_) => self.files.get(&key).is_some_and(|t| t.path == path),
                };
                if keep_new {
                    l.found.insert(key, (path, md));
                }
            }
        }
        l
    }

    /// Applies a listing: new files are followed, renamed ones get their new name, and those
    /// not found are marked gone when that is certain (a partial listing: when their path no
    /// longer leads to them). Gives the listing's problems and those met opening new files.
    fn apply(&mut self, listing: Listing) -> Vec<String> {
        let Listing {
            found,
            mut errors,
            partial,
        } = listing;
        let patterns: Vec<glob::Pattern> = if partial {
            self.settings
                .patterns
                .iter()
                .filter_map(|p| glob::Pattern::new(p).ok())
                .collect()
        } else {
            Vec::new()
        };
        for (key, t) in &mut self.files {
            if found.contains_key(key) {
                continue;
            }
            t.seen = partial && still_there(key, t, &patterns, &self.settings.exclude);
        }
        let mut open = self.open_handles();
        for (key, (path, md)) in found {
            if let Some(t) = self.files.get_mut(&key) {
                t.seen = true;
                t.path = path;
                if let Some(g) = t.gz.as_mut() {
                    let now = (md.len(), md.modified().ok());
                    if !g.stable {
                        g.stable = g.listed == now;
                        g.listed = now;
                    }
                    t.size = md.len();
                }
                continue;
            }
            if self.adopt(&key, path, open < self.max_open, &mut errors) {
                open = open.saturating_add(1);
            }
        }
        for t in self.files.values_mut().filter(|t| !t.seen) {
            if let Some(p) = t.file.as_ref().and_then(current_path) {
                t.path = p;
            }
        }
        errors
    }

    /// Starts following a file found at `path` with identity `key`, from its stored position
    /// when it is still the file taken. `room`: its handle may be kept open. True when it is
    /// followed with its handle kept open.
    fn adopt(&mut self, key: &str, path: PathBuf, room: bool, errors: &mut Vec<String>) -> bool {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                // Permission denied and the like: reported, retried at the next scan.
                errors.push(format!("{}: {e}", path.display()));
                return false;
            }
        };
        let md = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                return false;
            }
        };
        if key_of(&md) != key {
            // Replaced since it was listed: the next scan finds the new file.
            return false;
        }
        let size = md.len();
        let head = match read_head(&file, size) {
            Ok(h) => h,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                return false;
            }
        };
        let gz = is_gz(&path);
        let stored = self.stored.get(key);
        // The bytes before the stored offset (plain files), for the tail fingerprint.
        let stored_offset = stored
            .and_then(|p| u64::try_from(p.offset).ok())
            .filter(|o| !gz && *o <= size);
        let before = match stored_offset.map(|o| read_before(&file, o)) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                errors.push(format!("{}: {e}", path.display()));
                return false;
            }
            None => Vec::new(),
        };
        let start = match stored {
            Some(p) => identity::resume(
                p.offset,
                Detail::parse(p.detail.as_deref()).as_ref(),
                size,
                &head,
                &before,
                gz,
            ),
            None => Start::fresh(&head, None),
        };
        let line = match start.line {
            Some(l) => l,
            None if gz => 0,
            None => match count_lines_upto(&file, start.offset) {
                Ok(n) => n.saturating_add(1),
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    return false;
                }
            },
        };
        match start.note {
            Some(Note::Truncated) => errors.push(format!(
                "{}: truncated to {size} bytes, below its stored position: reading it again from the start",
                path.display()
            )),
            Some(Note::Rewritten) => errors.push(format!(
                "{}: truncated and written again (the bytes before its stored position changed, its first bytes did not): reading it again from the start",
                path.display()
            )),
            Some(Note::Replaced) => tracing::info!(
                path = %path.display(),
                "A file read before had this device and inode; this is another file: reading it from the start."
            ),
            None => {}
        }
        self.stored.remove(key);
        // On from the stored offset: the bytes before it, as checked.
        let tail = if start.offset > 0 && !gz {
            before
        } else {
            Vec::new()
        };
        let mtime = md.modified().ok();
        let unchanged = mtime
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        let gz_state = gz.then(|| Gz {
            decoder: None,
            pending: Vec::new(),
            eof: false,
            done: start.done,
            stable: false,
            listed: (size, mtime),
        });
        // Gzip files are opened when their turn comes; old files, and any when there is no
        // room, when they are read.
        let keep_open = room && !gz && unchanged < CLOSE_AFTER;
        self.files.insert(
            key.to_string(),
            Tracked {
                path,
                file: keep_open.then_some(file),
                gz: gz_state,
                offset: start.offset,
                line,
                fp: start.fp,
                tail,
                seen: true,
                size,
                mtime,
                since: Instant::now(),
                before: unchanged,
                failed: false,
            },
        );
        keep_open
    }

    /// The followed files' keys, oldest change first (rotated files before the current
    /// one), then by name.
    pub(crate) fn order(&self) -> Vec<String> {
        let mut v: Vec<(Option<SystemTime>, &PathBuf, &String)> = self
            .files
            .iter()
            .map(|(k, t)| (t.mtime, &t.path, k))
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, k)| k.clone()).collect()
    }

    /// Steps the files of `keys` from index `from` on until one gives something: its index
    /// and step, or `keys.len()` and [`Step::Nothing`].
    pub(crate) fn next(
        &mut self,
        keys: &[String],
        from: usize,
        errors: &mut Vec<String>,
    ) -> (usize, Step) {
        let mut i = from;
        while let Some(key) = keys.get(i) {
            let step = self.step(key, errors);
            if !matches!(step, Step::Nothing) {
                return (i, step);
            }
            i = i.saturating_add(1);
        }
        (keys.len(), Step::Nothing)
    }

    /// Handles open now.
    fn open_handles(&self) -> usize {
        self.files.values().filter(|t| t.holds_handle()).count()
    }

    /// Closes handles until one more can be opened within `max_open`: that of a file read
    /// to its end first, then of one unchanged for [`CLOSE_AFTER`], the least recently
    /// changed first; never `except`'s, a gzip stream's, or that of a file renamed away (it
    /// has no name to be opened again by). False when none can be closed: the file waits.
    fn make_room(&mut self, except: &str) -> bool {
        let mut open = self.open_handles();
        while open >= self.max_open {
            let victim = self
                .files
                .iter()
                .filter(|(k, t)| {
                    k.as_str() != except && t.gz.is_none() && t.file.is_some() && t.seen
                })
                .filter_map(|(k, t)| {
                    let idle = t.idle_for();
                    let rank: u8 = if t.offset >= t.size {
                        0
                    } else if idle >= CLOSE_AFTER {
                        1
                    } else {
                        return None;
                    };
                    Some((rank, Reverse(idle), k))
                })
                .min()
                .map(|(_, _, k)| k.clone());
            let Some(victim) = victim else {
                return false;
            };
            if let Some(t) = self.files.get_mut(&victim) {
                t.file = None;
            }
            open = open.saturating_sub(1);
        }
        true
    }

    /// Gives the file `key` the handle its step needs, within `max_open`: a closed plain
    /// file that changed is opened again by name, a gzip file whose turn it is gets room for
    /// its stream. False when its step has nothing to do now: unchanged, waiting for room,
    /// or an error (reported).
    fn handle_for(&mut self, key: &str, errors: &mut Vec<String>) -> bool {
        let turn = self.gz_active.as_deref().is_none_or(|k| k == key);
        let Some(t) = self.files.get(key) else {
            return false;
        };
        let needs = match &t.gz {
            Some(g) => g.decoder.is_none() && !g.done && !t.failed && turn && (g.stable || !t.seen),
            // A closed file renamed away or deleted: its step drops it.
            None => t.file.is_none() && t.seen,
        };
        if !needs {
            return true;
        }
        if t.gz.is_none() {
            match changed_by_name(key, t) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    errors.push(format!("{}: {e}", t.path.display()));
                    return false;
                }
            }
        }
        if !self.make_room(key) {
            return false;
        }
        match self.files.get_mut(key) {
            Some(t) if t.gz.is_none() => match open_by_name(key, t) {
                Ok(opened) => opened,
                Err(e) => {
                    errors.push(format!("{}: {e}", t.path.display()));
                    false
                }
            },
            Some(_) => true,
            None => false,
        }
    }

    /// One step of the file `key`: at most `max_batch_bytes`.
    fn step(&mut self, key: &str, errors: &mut Vec<String>) -> Step {
        if !self.handle_for(key, errors) {
            return Step::Nothing;
        }
        let settings = &self.settings;
        let Some(t) = self.files.get_mut(key) else {
            return Step::Nothing;
        };
        let step = if t.gz.is_some() {
            let turn = self.gz_active.as_deref().is_none_or(|k| k == key);
            step_gz(key, t, settings, turn, errors)
        } else {
            step_plain(key, t, settings, errors)
        };
        if let Some(t) = self.files.get(key) {
            let open =
                t.gz.as_ref()
                    .is_some_and(|g| g.decoder.is_some() && !g.done);
            if open {
                self.gz_active = Some(key.to_string());
            } else if self.gz_active.as_deref() == Some(key) {
                self.gz_active = None;
            }
        }
        if matches!(step, Step::Dropped) {
            if self.gz_active.as_deref() == Some(key) {
                self.gz_active = None;
            }
            if let Some(t) = self.files.remove(key) {
                // Renamed away rather than deleted: remember where it was, in case a
                // pattern finds it again.
                let deleted = t
                    .file
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .is_some_and(|m| m.nlink() == 0);
                if deleted {
                    self.forgotten.push(key.to_string());
                } else {
                    let done = t.gz.as_ref().is_some_and(|g| g.done);
                    self.stored.insert(
                        key.to_string(),
                        t.position(key, t.offset, t.line, done, &t.tail),
                    );
                }
            }
        }
        step
    }

    /// Applies a step once it is stored: the file's offset and line move on.
    pub(crate) fn commit(&mut self, c: &Commit) {
        let Some(t) = self.files.get_mut(&c.key) else {
            return;
        };
        if t.offset != c.from {
            return;
        }
        t.offset = c.offset;
        t.line = c.line;
        t.tail.clone_from(&c.tail);
        if let Some(g) = t.gz.as_mut() {
            let n = c.gz_taken.min(g.pending.len());
            g.pending.drain(..n);
            if c.gz_done {
                g.done = true;
                g.decoder = None;
                g.pending = Vec::new();
                t.file = None;
                if self.gz_active.as_deref() == Some(c.key.as_str()) {
                    self.gz_active = None;
                }
            }
        }
    }

    /// Bytes not taken yet over all followed files, and the change time of the oldest file
    /// that has some.
    pub(crate) fn lag(&self) -> (u64, Option<SystemTime>) {
        let mut bytes = 0u64;
        let mut oldest: Option<SystemTime> = None;
        for t in self.files.values() {
            let left = t.left();
            if left == 0 {
                continue;
            }
            bytes = bytes.saturating_add(left);
            if let Some(m) = t.mtime {
                oldest = Some(oldest.map_or(m, |o| o.min(m)));
            }
        }
        (bytes, oldest)
    }
}

/// Whether a followed file that a partial listing did not find is still there: its path
/// still leads to it and the patterns still match that path. Not when the path leads
/// nowhere or to another file; as it was when the path cannot be looked at.
fn still_there(
    key: &str,
    t: &Tracked,
    patterns: &[glob::Pattern],
    exclude: &[glob::Pattern],
) -> bool {
    let matched = |p: &Path| {
        patterns.iter().any(|x| x.matches_path(p)) && !exclude.iter().any(|x| x.matches_path(p))
    };
    match std::fs::metadata(&t.path) {
        Ok(md) => md.is_file() && key_of(&md) == key && matched(&t.path),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            false
        }
        Err(_) => t.seen,
    }
}

/// Whether a closed file has something new under its name: the name still leads to `key`,
/// and its size or change time differ from what was taken (a file closed before its end
/// has something at once).
fn changed_by_name(key: &str, t: &Tracked) -> io::Result<bool> {
    let md = match std::fs::metadata(&t.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(key_of(&md) == key && (md.len() != t.offset || md.modified().ok() != t.mtime))
}

/// Opens a closed file again by name, when the name still leads to `key`.
fn open_by_name(key: &str, t: &mut Tracked) -> io::Result<bool> {
    let f = match File::open(&t.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if key_of(&f.metadata()?) != key {
        return Ok(false);
    }
    t.file = Some(f);
    Ok(true)
}

/// Checks that a plain file that changed is still the one taken before reading on from its
/// offset: not shorter than the offset, the same first bytes, and the same bytes just before
/// the offset (one read of at most 256 bytes). Otherwise it starts again from 0, reported in
/// `errors`.
///
/// # Errors
/// A read failed: nothing was changed.
fn verify(t: &mut Tracked, size: u64, errors: &mut Vec<String>) -> io::Result<()> {
    let Some(f) = t.file.as_ref() else {
        return Ok(());
    };
    let head = read_head(f, size)?;
    let why = match identity::check(t.fp, t.offset, size, &head, false) {
        Check::Same(fp) => {
            let same = t.tail.is_empty() || {
                let at = t.offset.saturating_sub(len_u64(t.tail.len()));
                read_at_most(f, at, t.tail.len())?.0 == t.tail
            };
            if same {
                t.fp = fp;
                return Ok(());
            }
            format!(
                "{}: truncated and written again (the bytes before the {} already read changed, its first bytes did not): reading it again from the start",
                t.path.display(),
                t.offset
            )
        }
        Check::Truncated => format!(
            "{}: truncated to {size} bytes, below the {} already read: reading it again from the start",
            t.path.display(),
            t.offset
        ),
        Check::Replaced => format!(
            "{}: its first bytes changed (truncated and written again, or replaced): reading it again from the start",
            t.path.display()
        ),
    };
    errors.push(why);
    t.restart(&head);
    Ok(())
}

/// One step of a plain file.
fn step_plain(key: &str, t: &mut Tracked, s: &Settings, errors: &mut Vec<String>) -> Step {
    let md = match t.file.as_ref().map(File::metadata) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errors.push(format!("{}: {e}", t.path.display()));
            return Step::Nothing;
        }
        // Closed: waiting for a change or its turn, or gone (renamed away, deleted).
        None => return if t.seen { Step::Nothing } else { Step::Dropped },
    };
    let size = md.len();
    let mtime = md.modified().ok();
    if t.changed(size, mtime) {
        // Still the file taken? Checked before reading on from the offset.
        if let Err(e) = verify(t, size, errors) {
            errors.push(format!("{}: {e}", t.path.display()));
            return Step::Nothing;
        }
        t.observe(size, mtime);
    }
    let idle_for = t.idle_for();
    let idle = idle_for >= s.timeout;
    let avail = size.saturating_sub(t.offset);
    if avail == 0 {
        if !t.seen && idle {
            return Step::Dropped;
        }
        if t.seen && idle_for >= CLOSE_AFTER {
            t.file = None;
        }
        return Step::Nothing;
    }
    let want = usize::try_from(avail).unwrap_or(usize::MAX).min(s.max);
    let read = match t.file.as_ref().map(|f| read_at_most(f, t.offset, want)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            errors.push(format!("{}: {e}", t.path.display()));
            return Step::Nothing;
        }
        None => return Step::Nothing,
    };
    let (buf, eof) = read;
    let at_end = eof || t.offset.saturating_add(len_u64(buf.len())) >= size;
    let c = cut::cut(&buf, s.mode, at_end, idle, s.max);
    let read_to_end = len_u64(c.take) >= avail;
    if t.seen && idle_for >= CLOSE_AFTER && read_to_end {
        // An old file read to its end: closed, reopened by name when it changes.
        t.file = None;
    }
    if c.take == 0 {
        return Step::Nothing;
    }
    let taken = buf.get(..c.take).unwrap_or(&buf);
    Step::Take(t.take(key, taken, c.more, None))
}

/// One step of a gzip file. `turn`: no other gzip file is being read.
fn step_gz(key: &str, t: &mut Tracked, s: &Settings, turn: bool, errors: &mut Vec<String>) -> Step {
    let Some(g) = t.gz.as_mut() else {
        return Step::Nothing;
    };
    if g.done || t.failed {
        return if t.seen { Step::Nothing } else { Step::Dropped };
    }
    // A gzip file is read once it is complete: the same size at two scans (one that is gone
    // will not change any more), and when no other one is being read.
    let ready = g.stable || !t.seen;
    if !ready || !turn {
        return Step::Nothing;
    }
    if g.decoder.is_none() {
        let opened = open_gz(key, &t.path, t.file.take(), t.offset);
        match opened {
            Ok(Some((dec, skipped, lines))) if skipped == t.offset => {
                if t.line == 0 {
                    t.line = lines.saturating_add(1);
                }
                g.decoder = Some(dec);
            }
            Ok(Some(_)) => {
                errors.push(format!(
                    "{}: the decompressed file is shorter than its stored position ({} bytes): leaving it",
                    t.path.display(),
                    t.offset
                ));
                t.failed = true;
                return Step::Nothing;
            }
            Ok(None) => {
                return if t.seen { Step::Nothing } else { Step::Dropped };
            }
            Err(e) => {
                errors.push(format!(
                    "{}: {e} (a damaged gzip file): leaving it",
                    t.path.display()
                ));
                t.failed = true;
                return Step::Nothing;
            }
        }
    }
    if !g.eof && g.pending.len() < s.max {
        let need = s.max.saturating_sub(g.pending.len());
        let Some(dec) = g.decoder.as_mut() else {
            return Step::Nothing;
        };
        let read = dec.by_ref().take(len_u64(need)).read_to_end(&mut g.pending);
        match read {
            Ok(got) if got < need => g.eof = true,
            Ok(_) => {}
            Err(e) => {
                errors.push(format!(
                    "{}: {e} (a damaged or unfinished gzip file): leaving it",
                    t.path.display()
                ));
                g.decoder = None;
                g.pending = Vec::new();
                t.failed = true;
                return Step::Nothing;
            }
        }
    }
    if g.pending.is_empty() && g.eof {
        // Read to its end: stored as finished, never read again.
        let commit = Commit {
            key: key.to_string(),
            from: t.offset,
            offset: t.offset,
            line: t.line,
            gz_taken: 0,
            gz_done: true,
            tail: Vec::new(),
        };
        return Step::Save {
            position: t.position(key, t.offset, t.line, true, &t.tail),
            commit,
        };
    }
    let Some(g) = t.gz.as_ref() else {
        return Step::Nothing;
    };
    let c = cut::cut(&g.pending, s.mode, g.eof, g.eof, s.max);
    if c.take == 0 {
        return Step::Nothing;
    }
    let done = g.eof && c.take >= g.pending.len();
    let taken = g.pending.get(..c.take).unwrap_or(&g.pending);
    Step::Take(t.take(key, taken, c.more, Some((c.take, done))))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn settings(dir: &Path, pattern: &str, mode: Mode, max: usize, timeout: Duration) -> Settings {
        Settings {
            patterns: vec![dir.join(pattern).display().to_string()],
            exclude: Vec::new(),
            mode,
            max,
            timeout,
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// What a drain saw.
    #[derive(Default)]
    struct Seen {
        /// (origin, first line, text) per take.
        takes: Vec<(String, u64, String)>,
        /// The newest position per key.
        positions: HashMap<String, Position>,
        errors: Vec<String>,
    }

    impl Seen {
        fn text(&self) -> String {
            self.takes.iter().map(|t| t.2.as_str()).collect()
        }
    }

    /// Steps every file until none gives anything, committing each step as if stored.
    fn drain(t: &mut Tracker) -> Seen {
        let mut seen = Seen::default();
        for _ in 0..10_000 {
            let keys = t.order();
            let mut i = 0;
            let mut progressed = false;
            loop {
                let (at, step) = t.next(&keys, i, &mut seen.errors);
                assert!(
                    t.open_handles() <= t.max_open,
                    "{} handles open",
                    t.open_handles()
                );
                match step {
                    Step::Take(take) => {
                        t.commit(&take.commit);
                        seen.positions
                            .insert(take.position.key.clone(), take.position.clone());
                        seen.takes.push((take.origin, take.first_line, take.text));
                        progressed = true;
                    }
                    Step::Save { position, commit } => {
                        t.commit(&commit);
                        seen.positions.insert(position.key.clone(), position);
                        progressed = true;
                    }
                    Step::Dropped => progressed = true,
                    Step::Nothing => {}
                }
                if at >= keys.len() {
                    break;
                }
                i = at + 1;
            }
            if !progressed {
                return seen;
            }
        }
        panic!("drain did not settle");
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn growth_is_read_with_line_numbers_and_a_cut_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        append(&a, "{\"n\":1}\n{\"n\":2}\n{\"n\":");
        let mut t = Tracker::new(
            settings(dir.path(), "*.log", Mode::Lines, 1 << 20, HOUR),
            HashMap::new(),
        );
        assert!(t.scan().is_empty());
        let s = drain(&mut t);
        assert_eq!(s.takes.len(), 1);
        assert_eq!(s.takes[0].1, 1);
        assert_eq!(s.takes[0].2, "{\"n\":1}\n{\"n\":2}\n");
        assert_eq!(s.takes[0].0, a.display().to_string());
        append(&a, "3}\n{\"n\":4}\n");
        let s = drain(&mut t);
        assert_eq!(s.text(), "{\"n\":3}\n{\"n\":4}\n");
        assert_eq!(s.takes[0].1, 3);
        let p = s.positions.values().next().unwrap();
        assert_eq!(p.offset, 32);
        let d = Detail::parse(p.detail.as_deref()).unwrap();
        assert_eq!(d.line, 5);
        assert_eq!(d.path, a.display().to_string());
        // A new file is picked up at the next scan.
        let b = dir.path().join("b.log");
        append(&b, "{\"n\":5}\n");
        assert!(t.scan().is_empty());
        assert_eq!(drain(&mut t).text(), "{\"n\":5}\n");
        assert_eq!(t.followed(), 2);
        assert_eq!(t.lag().0, 0);
    }

    #[test]
    fn a_stack_trace_at_the_end_waits_for_the_next_entry() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("app.log");
        let h = |lvl: &str, msg: &str| {
            format!(
                "{lvl} 2024-11-05 09:14:03,139 [main] [processor: f/processors/0; event: e1] org.example.Logger: {msg}\n"
            )
        };
        append(&a, &h("INFO ", "one"));
        append(&a, &h("ERROR", "failed"));
        append(
            &a,
            "java.lang.IllegalStateException: boom\n\tat com.example.A.run(A.java:10)\n",
        );
        let mut t = Tracker::new(
            settings(dir.path(), "app.log", Mode::Entries, 1 << 20, HOUR),
            HashMap::new(),
        );
        t.scan();
        assert_eq!(drain(&mut t).text(), h("INFO ", "one"));
        append(&a, "\tat com.example.B.run(B.java:20)\n");
        assert_eq!(drain(&mut t).text(), "");
        append(&a, &h("INFO ", "two"));
        let s = drain(&mut t);
        assert_eq!(s.takes.len(), 1);
        assert_eq!(s.takes[0].1, 2);
        assert!(s.text().starts_with(&h("ERROR", "failed")));
        assert!(s.text().ends_with("\tat com.example.B.run(B.java:20)\n"));
    }

    #[test]
    fn rotation_by_rename_reads_the_old_file_to_its_end_once() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.log");
        append(&live, "a1\na2\n");
        let mut t = Tracker::new(
            settings(dir.path(), "app.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        assert_eq!(drain(&mut t).text(), "a1\na2\n");
        // Written just before the rename: read through the open handle.
        append(&live, "a3\n");
        std::fs::rename(&live, dir.path().join("app.log.1")).unwrap();
        append(&live, "b1\n");
        assert!(t.scan().is_empty());
        let text = drain(&mut t).text();
        let mut got: Vec<&str> = text.lines().collect();
        got.sort_unstable();
        assert_eq!(got, ["a3", "b1"]);
        // The renamed file was read to its end and dropped.
        assert_eq!(t.followed(), 1);
        t.scan();
        assert_eq!(drain(&mut t).text(), "");
    }

    #[test]
    fn rotation_by_rename_under_a_matching_name_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("app.log");
        append(&live, "a1\n");
        let mut t = Tracker::new(
            settings(dir.path(), "app.log*", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        assert_eq!(drain(&mut t).text(), "a1\n");
        std::fs::rename(&live, dir.path().join("app.log.1")).unwrap();
        append(&live, "b1\n");
        t.scan();
        assert_eq!(drain(&mut t).text(), "b1\n");
        assert_eq!(t.followed(), 2);
    }

    #[test]
    fn copy_truncate_is_detected_and_read_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("app.log");
        append(&a, "x1 first line of the file\nx2\nx3\n");
        let mut t = Tracker::new(
            settings(dir.path(), "app.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        drain(&mut t);
        // Truncated, then written less than was read.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&a, "y1\n");
        let s = drain(&mut t);
        assert_eq!(s.text(), "y1\n");
        assert_eq!(s.takes[0].1, 1);
        assert!(
            s.errors.iter().any(|e| e.contains("truncated")),
            "{:?}",
            s.errors
        );
        // Truncated and written again past the offset before seam looked.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&a, "z1 another start\nz2\n");
        let s = drain(&mut t);
        assert_eq!(s.text(), "z1 another start\nz2\n");
        assert!(
            s.errors.iter().any(|e| e.contains("first bytes changed")),
            "{:?}",
            s.errors
        );
    }

    #[test]
    fn a_restart_resumes_and_a_reused_inode_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("app.log");
        append(&a, "l1\nl2\n");
        let st = || settings(dir.path(), "app.log", Mode::Lines, 1 << 20, Duration::ZERO);
        let mut t = Tracker::new(st(), HashMap::new());
        t.scan();
        let first = drain(&mut t);
        append(&a, "l3\n");
        // A new process resumes from the stored positions.
        let mut t = Tracker::new(st(), first.positions.clone());
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.text(), "l3\n");
        assert_eq!(s.takes[0].1, 3);
        // The same key, another file (its stored fingerprint differs): from the start.
        let mut stored = s.positions.clone();
        for p in stored.values_mut() {
            let mut d = Detail::parse(p.detail.as_deref()).unwrap();
            d.fp = "00000000".into();
            p.detail = Some(d.to_json());
        }
        let mut t = Tracker::new(st(), stored);
        t.scan();
        assert_eq!(drain(&mut t).text(), "l1\nl2\nl3\n");
        // A position without detail: the offset is trusted and lines are counted.
        let mut stored = s.positions.clone();
        for p in stored.values_mut() {
            p.detail = None;
            p.offset = 3;
        }
        let mut t = Tracker::new(st(), stored);
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.text(), "l2\nl3\n");
        assert_eq!(s.takes[0].1, 2);
    }

    #[test]
    fn gzip_files_are_read_once_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("app.log.1.gz");
        let mut expected = String::new();
        for i in 0..300 {
            expected.push_str(&format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}}\n"));
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(expected.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        let st = || settings(dir.path(), "app.log*", Mode::Entries, 1000, Duration::ZERO);
        let mut t = Tracker::new(st(), HashMap::new());
        t.scan();
        // Not read until it is seen unchanged at two scans.
        assert_eq!(drain(&mut t).takes.len(), 0);
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.text(), expected);
        assert!(s.takes.len() > 5);
        assert!(s.takes.iter().all(|x| x.2.len() <= 1000));
        assert_eq!(s.takes[1].1, 1 + s.takes[0].2.matches('\n').count() as u64);
        let p = s.positions.values().next().unwrap().clone();
        assert_eq!(p.offset, expected.len() as i64);
        let d = Detail::parse(p.detail.as_deref()).unwrap();
        assert!(d.gz && d.done, "{d:?}");
        // Never again: neither now nor after a restart.
        t.scan();
        t.scan();
        assert_eq!(drain(&mut t).takes.len(), 0);
        let mut t = Tracker::new(st(), s.positions.clone());
        t.scan();
        t.scan();
        assert_eq!(drain(&mut t).takes.len(), 0);
        // Resumed mid-way after a restart: on from the decompressed offset.
        let mut mid = s.positions.clone();
        for v in mid.values_mut() {
            let mut d = Detail::parse(v.detail.as_deref()).unwrap();
            d.done = false;
            d.line = 11;
            v.detail = Some(d.to_json());
            v.offset = expected.lines().take(10).map(|l| l.len() as i64 + 1).sum();
        }
        let mut t = Tracker::new(st(), mid);
        t.scan();
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.takes[0].1, 11);
        let rest: String = expected
            .lines()
            .skip(10)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(s.text(), rest);
    }

    #[test]
    fn a_damaged_gzip_file_is_reported_and_left() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
        let mut t = Tracker::new(
            settings(dir.path(), "*.gz", Mode::Lines, 1000, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        t.scan();
        let s = drain(&mut t);
        assert!(
            s.errors.iter().any(|e| e.contains("gzip")),
            "{:?}",
            s.errors
        );
        assert_eq!(drain(&mut t).errors.len(), 0);
    }

    #[test]
    fn excluded_paths_are_skipped_and_links_are_followed_once() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.log"), "a\n");
        append(&dir.path().join("a.skip.log"), "skip\n");
        let target = dir.path().join("target.dat");
        append(&target, "t\n");
        std::os::unix::fs::symlink(&target, dir.path().join("link.log")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.log"), dir.path().join("twin.log")).unwrap();
        let mut st = settings(dir.path(), "*.log", Mode::Lines, 1 << 20, Duration::ZERO);
        st.exclude = vec![glob::Pattern::new("*.skip.log").unwrap()];
        let mut t = Tracker::new(st, HashMap::new());
        assert!(t.scan().is_empty());
        let text = drain(&mut t).text();
        let mut got: Vec<&str> = text.lines().collect();
        got.sort_unstable();
        assert_eq!(got, ["a", "t"]);
    }

    #[test]
    fn a_line_longer_than_the_limit_does_not_wedge_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let content = format!("{}\nshort\n", "y".repeat(45));
        append(&dir.path().join("a.log"), &content);
        let mut t = Tracker::new(
            settings(
                dir.path(),
                "a.log",
                Mode::Lines,
                10,
                Duration::from_secs(3600),
            ),
            HashMap::new(),
        );
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.text(), content);
        assert!(s.takes.iter().all(|x| x.2.len() <= 10));
    }

    #[test]
    fn invalid_utf8_is_replaced_but_offsets_count_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, b"caf\xe9\nok\n").unwrap();
        let mut t = Tracker::new(
            settings(dir.path(), "a.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.text(), "caf\u{fffd}\nok\n");
        assert_eq!(s.positions.values().next().unwrap().offset, 8);
    }

    #[test]
    fn otlp_json_lines_go_together() {
        let dir = tempfile::tempdir().unwrap();
        append(
            &dir.path().join("t.json"),
            "{\"resourceSpans\":[]}\n{\"resourceSpans\":[]}\n{\"resou",
        );
        let mut t = Tracker::new(
            settings(dir.path(), "*.json", Mode::Lines, 1 << 20, HOUR),
            HashMap::new(),
        );
        t.scan();
        let s = drain(&mut t);
        assert_eq!(s.takes.len(), 1);
        assert_eq!(s.takes[0].2.lines().count(), 2);
    }

    #[test]
    fn a_deleted_file_read_to_its_end_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        append(&a, "x\n");
        let mut t = Tracker::new(
            settings(dir.path(), "a.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        drain(&mut t);
        std::fs::remove_file(&a).unwrap();
        t.scan();
        drain(&mut t);
        assert_eq!(t.followed(), 0);
        assert!(t.stored.is_empty(), "a deleted file's position is not kept");
    }

    /// A banner line longer than the head fingerprint, then `n` entries named `tag`.
    fn bannered(tag: &str, n: usize) -> String {
        let mut s = format!("{}\n", "#".repeat(300));
        for i in 0..n {
            s.push_str(&format!("{{\"entry\":\"{tag}\",\"n\":{i:04}}}\n"));
        }
        s
    }

    fn key_of_path(p: &Path) -> String {
        key_of(&std::fs::metadata(p).unwrap())
    }

    #[test]
    fn a_rewrite_with_the_same_first_bytes_past_the_offset_is_read_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("app.log");
        let old = bannered("old", 100);
        std::fs::write(&a, &old).unwrap();
        let st = || settings(dir.path(), "app.log", Mode::Lines, 1 << 20, Duration::ZERO);
        let mut t = Tracker::new(st(), HashMap::new());
        t.scan();
        let first = drain(&mut t);
        assert_eq!(first.text(), old);
        let d = Detail::parse(first.positions.values().next().unwrap().detail.as_deref()).unwrap();
        assert_eq!(d.tail_len, 256);
        // Truncated and written again (same inode) before seam looked: the same first 256
        // bytes, longer than the offset.
        let new = bannered("new", 300);
        std::fs::write(&a, &new).unwrap();
        let s = drain(&mut t);
        assert_eq!(s.text(), new);
        assert_eq!(s.takes[0].1, 1);
        assert!(
            s.errors
                .iter()
                .any(|e| e.contains("truncated and written again")),
            "{:?}",
            s.errors
        );
        // Growth after that is read on as usual, without a report.
        append(&a, "{\"entry\":\"new\",\"n\":9999}\n");
        let s = drain(&mut t);
        assert_eq!(s.text(), "{\"entry\":\"new\",\"n\":9999}\n");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let grown = format!("{new}{{\"entry\":\"new\",\"n\":9999}}\n");

        // The same while seam was stopped: found at start with its stored position.
        let stored = s.positions.clone();
        let again = bannered("again", 400);
        std::fs::write(&a, &again).unwrap();
        let mut t = Tracker::new(st(), stored.clone());
        let errors = t.scan();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("truncated and written again")),
            "{errors:?}"
        );
        assert_eq!(drain(&mut t).text(), again);

        // Unchanged while stopped: on from the stored position.
        std::fs::write(&a, &grown).unwrap();
        append(&a, "tail\n");
        let mut t = Tracker::new(st(), stored.clone());
        assert!(t.scan().is_empty());
        assert_eq!(drain(&mut t).text(), "tail\n");

        // A position stored before the tail was kept: no tail check, on from the offset.
        let mut legacy = stored;
        for p in legacy.values_mut() {
            let mut d = Detail::parse(p.detail.as_deref()).unwrap();
            d.set_tail(b"");
            p.detail = Some(d.to_json());
        }
        std::fs::write(&a, &grown).unwrap();
        append(&a, "more\n");
        let mut t = Tracker::new(st(), legacy);
        assert!(t.scan().is_empty());
        assert_eq!(drain(&mut t).text(), "more\n");
    }

    #[test]
    fn short_takes_keep_a_tail_of_the_bytes_before_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("app.log");
        let mut t = Tracker::new(
            settings(dir.path(), "app.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        let mut content = String::new();
        for i in 0..40 {
            let line = format!("line {i:03}\n");
            append(&a, &line);
            content.push_str(&line);
            t.scan();
            assert_eq!(drain(&mut t).text(), line);
        }
        let tr = t.files.values().next().unwrap();
        let start = content.len() - 256;
        assert_eq!(tr.tail, content.as_bytes()[start..].to_vec());
        // Written again with the same first 256 bytes but other last ones, longer: read
        // again.
        let mut other = content[..300].to_string();
        other.push_str(&"x".repeat(100));
        other.push('\n');
        std::fs::write(&a, &other).unwrap();
        let s = drain(&mut t);
        assert_eq!(s.text(), other);
        assert!(
            s.errors
                .iter()
                .any(|e| e.contains("the bytes before the 360 already read changed")),
            "{:?}",
            s.errors
        );
    }

    #[test]
    fn open_files_stay_under_the_cap_and_the_others_wait_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(
            settings(dir.path(), "*.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.max_open = 3;
        let mut want = Vec::new();
        let mut total = 0;
        for i in 0..10 {
            let line = format!("f{i:02} first\n");
            total += line.len() as u64;
            append(&dir.path().join(format!("f{i:02}.log")), &line);
            want.push(line.trim_end().to_string());
        }
        assert!(t.scan().is_empty());
        assert_eq!(t.followed(), 10);
        assert!(t.open_handles() <= 3);
        // Files not open yet are followed and counted in the lag.
        assert_eq!(t.lag().0, total);
        let text = drain(&mut t).text();
        let mut got: Vec<&str> = text.lines().collect();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(t.lag().0, 0);
        // All of them grow: closed ones are opened again by name, in turn.
        let mut want = Vec::new();
        for i in 0..10 {
            let line = format!("f{i:02} second\n");
            append(&dir.path().join(format!("f{i:02}.log")), &line);
            want.push(line.trim_end().to_string());
        }
        assert!(t.scan().is_empty());
        let s = drain(&mut t);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let text = s.text();
        let mut got: Vec<&str> = text.lines().collect();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(t.followed(), 10);
        assert!(t.open_handles() <= 3);
    }

    #[test]
    fn a_file_renamed_away_keeps_its_handle_until_read_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, "a1\n");
        append(&b, "b1\n");
        let mut t = Tracker::new(
            settings(dir.path(), "*.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.max_open = 2;
        t.scan();
        assert_eq!(t.open_handles(), 2);
        drain(&mut t);
        let (ka, kb) = (key_of_path(&a), key_of_path(&b));
        // Written to, then renamed to a name no pattern matches; a new file waits for room.
        append(&a, "a2\n");
        std::fs::rename(&a, dir.path().join("a.old")).unwrap();
        append(&dir.path().join("c.log"), "c1\n");
        assert!(t.scan().is_empty());
        assert!(!t.files[&ka].seen);
        assert_eq!(t.open_handles(), 2);
        // Room is made by closing the file read to its end, never the renamed one.
        assert!(t.make_room("none"));
        assert!(t.files[&ka].file.is_some());
        assert!(t.files[&kb].file.is_none());
        let text = drain(&mut t).text();
        let mut got: Vec<&str> = text.lines().collect();
        got.sort_unstable();
        assert_eq!(got, ["a2", "c1"]);
        assert_eq!(t.followed(), 2);
        // No file read to its end nor old: a file needing a handle waits its turn.
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("x.log"), "x\n");
        append(&dir.path().join("y.log"), "y\n");
        let mut t = Tracker::new(
            settings(dir.path(), "*.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.max_open = 1;
        t.scan();
        assert_eq!(t.open_handles(), 1);
        let k = t
            .files
            .iter()
            .find(|(_, x)| x.file.is_some())
            .map(|(k, _)| k.clone())
            .unwrap();
        assert!(!t.make_room("none"));
        // Nor when the open one, read to its end, was renamed away.
        let x = t.files.get_mut(&k).unwrap();
        x.offset = x.size;
        x.seen = false;
        assert!(!t.make_room("none"));
        assert!(t.files[&k].file.is_some());
    }

    #[test]
    fn a_listing_that_failed_does_not_make_files_look_gone() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        let b = dir.path().join("b.log");
        append(&a, "a\n");
        append(&b, "b\n");
        let mut t = Tracker::new(
            settings(dir.path(), "*.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        t.scan();
        drain(&mut t);
        let (ka, kb) = (key_of_path(&a), key_of_path(&b));
        // A listing that failed somewhere and did not find `a`: it is still at its path.
        let mut l = t.list();
        l.found.remove(&ka);
        l.partial = true;
        t.apply(l);
        assert!(t.files[&ka].seen);
        drain(&mut t);
        assert_eq!(t.followed(), 2);
        // A file whose path leads nowhere is gone, even after a failed listing.
        std::fs::remove_file(&b).unwrap();
        let mut l = t.list();
        assert!(!l.found.contains_key(&kb));
        l.partial = true;
        t.apply(l);
        assert!(!t.files[&kb].seen);
        drain(&mut t);
        assert_eq!(t.followed(), 1);
        // A complete listing is certain.
        let mut l = t.list();
        l.found.remove(&ka);
        t.apply(l);
        assert!(!t.files[&ka].seen);
    }

    #[test]
    fn an_unreadable_directory_does_not_drop_the_files_in_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        let locked = dir.path().join("locked");
        std::fs::create_dir(&ok).unwrap();
        std::fs::create_dir(&locked).unwrap();
        append(&ok.join("a.log"), "a\n");
        append(&locked.join("b.log"), "b\n");
        let mut t = Tracker::new(
            settings(dir.path(), "*/*.log", Mode::Lines, 1 << 20, Duration::ZERO),
            HashMap::new(),
        );
        assert!(t.scan().is_empty());
        assert_eq!(drain(&mut t).takes.len(), 2);
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        // As root the directory is still read; otherwise the listing fails there.
        let errors = t.scan();
        let s = drain(&mut t);
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(t.files.values().all(|x| x.seen), "{errors:?}");
        assert_eq!(t.followed(), 2, "{errors:?} {:?}", s.errors);
        append(&locked.join("b.log"), "b2\n");
        assert!(t.scan().is_empty());
        assert_eq!(drain(&mut t).text(), "b2\n");
    }
}
