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
//!   and written again are told apart by a fingerprint of the first bytes (`identity`).
//! - **Truncation.** A file shorter than its offset, or whose first bytes changed, is read
//!   again from its start (copy-truncate), and reported.
//! - **Gzip.** `*.gz` files are decompressed as a stream, once, one at a time; the offset
//!   counts decompressed bytes, and a finished one is marked `done` and never read again.
//! - **Bounded.** One step reads at most `max_batch_bytes`; files unchanged for five minutes
//!   are closed between steps (reopened by name), so open handles follow the active files.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use flate2::read::MultiGzDecoder;

use super::cut::{self, Mode};
use super::identity::{self, Check, Detail, Fingerprint, Note, Start};
use super::read::{
    count_lines_upto, count_newlines, current_path, is_gz, key_of, len_u64, open_gz, read_at_most,
    read_head,
};
use crate::sources::pull::Position;
use crate::sources::pull::config::FileSource;

/// A file unchanged this long, and not renamed away, is closed between steps.
const CLOSE_AFTER: Duration = Duration::from_secs(300);

/// More open files than this: files unchanged for [`CLOSE_AFTER`] are closed between steps
/// even when not read to their end.
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
    /// Open while it is active or renamed away.
    file: Option<File>,
    /// Gzip state, for `*.gz` files.
    gz: Option<Gz>,
    /// Bytes taken (decompressed bytes for gzip).
    offset: u64,
    /// Line number at the offset (0: not known yet, counted when a gzip stream opens).
    line: u64,
    /// Fingerprint of its first bytes.
    fp: Fingerprint,
    /// Found by the last scan.
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

    /// Records its size and change time now; true when they changed.
    fn observe(&mut self, size: u64, mtime: Option<SystemTime>) -> bool {
        if size == self.size && mtime == self.mtime {
            return false;
        }
        self.size = size;
        self.mtime = mtime;
        self.since = Instant::now();
        self.before = Duration::ZERO;
        true
    }

    /// Back to its start (truncated or replaced).
    fn restart(&mut self, head: &[u8]) {
        self.offset = 0;
        self.line = 1;
        self.fp = Fingerprint::of(head);
    }

    /// Its position at `offset`/`line`.
    fn position(&self, key: &str, offset: u64, line: u64, done: bool) -> Position {
        let detail = Detail {
            path: self.path.display().to_string(),
            fp: self.fp.hex(),
            fp_len: self.fp.len,
            line,
            gz: self.gz.is_some(),
            done,
        };
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
        Take {
            text: String::from_utf8_lossy(taken).into_owned(),
            origin: self.path.display().to_string(),
            first_line: self.line.max(1),
            records: newlines.saturating_add(u64::from(!taken.ends_with(b"\n"))),
            bytes: n,
            position: self.position(key, offset, line, done),
            more: more && !done,
            commit: Commit {
                key: key.to_string(),
                from: self.offset,
                offset,
                line,
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

/// The followed files of one source.
#[derive(Debug)]
pub(crate) struct Tracker {
    settings: Settings,
    files: HashMap<String, Tracked>,
    /// Stored positions of files not followed (yet): used when such a file is found.
    stored: HashMap<String, Position>,
    /// The gzip file being decompressed (one at a time).
    gz_active: Option<String>,
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
        let mut errors = Vec::new();
        let mut found: BTreeMap<String, (PathBuf, Metadata)> = BTreeMap::new();
        for pattern in &self.settings.patterns {
            let paths = match glob::glob(pattern) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{pattern}: {e}"));
                    continue;
                }
            };
            for entry in paths {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push(format!("{}: {}", e.path().display(), e.error()));
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
                        errors.push(format!("{}: {e}", path.display()));
                        continue;
                    }
                };
                if !md.is_file() {
                    continue;
                }
                let key = key_of(&md);
                // One file under two names (links, overlapping patterns): the name it is
                // followed under, else the first found.
                let keep_new = match found.get(&key) {
                    None => true,
                    Some(_) => self.files.get(&key).is_some_and(|t| t.path == path),
                };
                if keep_new {
                    found.insert(key, (path, md));
                }
            }
        }
        for t in self.files.values_mut() {
            t.seen = false;
        }
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
            self.adopt(&key, path, &mut errors);
        }
        for t in self.files.values_mut().filter(|t| !t.seen) {
            if let Some(p) = t.file.as_ref().and_then(current_path) {
                t.path = p;
            }
        }
        errors
    }

    /// Starts following a file found at `path` with identity `key`.
    fn adopt(&mut self, key: &str, path: PathBuf, errors: &mut Vec<String>) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                // Permission denied and the like: reported, retried at the next scan.
                errors.push(format!("{}: {e}", path.display()));
                return;
            }
        };
        let md = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                return;
            }
        };
        if key_of(&md) != key {
            // Replaced since it was listed: the next scan finds the new file.
            return;
        }
        let size = md.len();
        let head = match read_head(&file, size) {
            Ok(h) => h,
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                return;
            }
        };
        let gz = is_gz(&path);
        let start = match self.stored.get(key) {
            Some(p) => identity::resume(
                p.offset,
                Detail::parse(p.detail.as_deref()).as_ref(),
                size,
                &head,
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
                    return;
                }
            },
        };
        match start.note {
            Some(Note::Truncated) => errors.push(format!(
                "{}: truncated to {size} bytes, below its stored position: reading it again from the start",
                path.display()
            )),
            Some(Note::Replaced) => tracing::info!(
                path = %path.display(),
                "A file read before had this device and inode; this is another file: reading it from the start."
            ),
            None => {}
        }
        self.stored.remove(key);
        let mtime = md.modified().ok();
        let before = mtime
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
        // Gzip files are opened when their turn comes; old files when they are read.
        let keep_open = !gz && before < CLOSE_AFTER;
        self.files.insert(
            key.to_string(),
            Tracked {
                path,
                file: keep_open.then_some(file),
                gz: gz_state,
                offset: start.offset,
                line,
                fp: start.fp,
                seen: true,
                size,
                mtime,
                since: Instant::now(),
                before,
                failed: false,
            },
        );
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
        let crowded = self.files.values().filter(|t| t.file.is_some()).count() > MAX_OPEN;
        let mut i = from;
        while let Some(key) = keys.get(i) {
            let step = self.step(key, crowded, errors);
            if !matches!(step, Step::Nothing) {
                return (i, step);
            }
            i = i.saturating_add(1);
        }
        (keys.len(), Step::Nothing)
    }

    /// One step of the file `key`: at most `max_batch_bytes`. `crowded`: more than
    /// [`MAX_OPEN`] files are open.
    fn step(&mut self, key: &str, crowded: bool, errors: &mut Vec<String>) -> Step {
        let settings = &self.settings;
        let Some(t) = self.files.get_mut(key) else {
            return Step::Nothing;
        };
        let step = if t.gz.is_some() {
            let turn = self.gz_active.as_deref().is_none_or(|k| k == key);
            step_gz(key, t, settings, turn, errors)
        } else {
            step_plain(key, t, settings, crowded, errors)
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
                    self.stored
                        .insert(key.to_string(), t.position(key, t.offset, t.line, done));
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

/// Opens a closed file again by name, when it is still `key` and has something new.
fn reopen(key: &str, t: &mut Tracked) -> io::Result<bool> {
    let md = match std::fs::metadata(&t.path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if key_of(&md) != key || (md.len() == t.offset && md.modified().ok() == t.mtime) {
        return Ok(false);
    }
    let f = File::open(&t.path)?;
    if key_of(&f.metadata()?) != key {
        return Ok(false);
    }
    t.file = Some(f);
    Ok(true)
}

/// One step of a plain file. `crowded`: too many files are open, close this one after the
/// step when it is old.
fn step_plain(
    key: &str,
    t: &mut Tracked,
    s: &Settings,
    crowded: bool,
    errors: &mut Vec<String>,
) -> Step {
    if t.file.is_none() {
        if !t.seen {
            return Step::Dropped;
        }
        match reopen(key, t) {
            Ok(true) => {}
            Ok(false) => return Step::Nothing,
            Err(e) => {
                errors.push(format!("{}: {e}", t.path.display()));
                return Step::Nothing;
            }
        }
    }
    let md = match t.file.as_ref().map(File::metadata) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errors.push(format!("{}: {e}", t.path.display()));
            return Step::Nothing;
        }
        None => return Step::Nothing,
    };
    let size = md.len();
    if t.observe(size, md.modified().ok()) {
        let head = match t.file.as_ref().map(|f| read_head(f, size)) {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                errors.push(format!("{}: {e}", t.path.display()));
                return Step::Nothing;
            }
            None => return Step::Nothing,
        };
        match identity::check(t.fp, t.offset, size, &head, false) {
            Check::Same(fp) => t.fp = fp,
            Check::Truncated => {
                errors.push(format!(
                    "{}: truncated to {size} bytes, below the {} already read: reading it again from the start",
                    t.path.display(),
                    t.offset
                ));
                t.restart(&head);
            }
            Check::Replaced => {
                errors.push(format!(
                    "{}: its first bytes changed (truncated and written again, or replaced): reading it again from the start",
                    t.path.display()
                ));
                t.restart(&head);
            }
        }
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
    if t.seen && idle_for >= CLOSE_AFTER && (read_to_end || crowded) {
        // An old file: closed, reopened by name when it changes (or at its next step).
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
        };
        return Step::Save {
            position: t.position(key, t.offset, t.line, true),
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
    use std::path::Path;

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
}
