//! `seam ingest`: sends gateway and flow log files to a running seam.
//!
//! Takes files, directories (walked recursively, in name order) and globs; gives, per file,
//! what the server accepted, rejected and recognised as duplicates.
//!
//! **Detection.** Each file's format, and so its endpoint (`/ingest/apim` or `/ingest/mule`),
//! is decided from a prefix of it: its first 64 KiB, read further (up to 1 MiB) while they
//! hold no complete record. A prefix may end inside a record: it is decided by its complete
//! records, the lines before its last line break or, for a single JSON document
//! (`{"records":[…]}`, Log Analytics `rows`, an array), the complete elements of its record
//! array re-wrapped in the document's own prefix. The first of them must be in a known shape
//! (the server refuses an input whose first record is not, so a later one cannot decide). An
//! Azure portal CSV export (its first line a header such as `TimeGenerated [UTC],
//! CorrelationId,…`) goes to `/ingest/apim`. `--format` forces a shape; `--mapping NAME` sends
//! every file to `/ingest/apim` with `mapping=NAME`, without detection.
//!
//! **Chunks.** A file larger than `--chunk-bytes` is sent in chunks cut at record boundaries:
//! before a line that starts a record in line formats (a log4j header for Mule text, so
//! multi-line events stay whole); between the elements of the record array of a single JSON
//! document, each chunk re-wrapped in the document's own prefix (the document is read through
//! once first: one that is not a single valid JSON value with nothing after its record array,
//! such as a truncated one, is cut as lines); and for CSV (portal exports, mapping inputs)
//! only outside quoted fields, each chunk after the first starting with the file's header
//! line. A chunk after the first never starts with a record the server cannot read (the
//! server refuses such an input as a whole): that record stays at the end of the chunk
//! before. So a file gives the same accepted, duplicate and rejected counts and the same
//! refusal positions whether it is sent whole or in chunks. Each chunk carries the file name,
//! the number of its first line (for a CSV chunk, of its repeated header: the line before its
//! first row, so rows keep their own numbers) and the index of its first record in the
//! document, so refusals name file:line or the record index.
//!
//! **Streaming.** A blocking task reads the file and hands each chunk over a channel that
//! holds two, while the async side sends them in order: a file of any size takes a few chunks
//! of memory. A chunk is answered only once its records are durable; a retryable refusal (503)
//! is retried with backoff. A refusal of a chunk, or an error reading the file, ends that file
//! with a message naming why; the other files are still sent.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _, Read, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use seam_collector::mapping::records as mapped;
use seam_collector::sources::apim::decode::{self as apim, ApimItem};
use seam_collector::sources::logs::AccessSource;
use seam_collector::sources::mule::decode::{self as mule, MuleItem};
use serde::Deserialize;

/// The prefix of a file read first to detect its format.
const SNIFF_FIRST: usize = 64 * 1024;

/// The longest prefix read to find a file's first complete record.
const SNIFF_MAX: usize = 1024 * 1024;

/// Bytes read from a file at once.
const READ_BLOCK: usize = 256 * 1024;

/// What `seam ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the ingest listener, e.g. `http://127.0.0.1:4318`.
    pub to: String,
    /// A forced format (also decides the endpoint).
    pub format: Option<String>,
    /// A mapping that reads the files (`[mappings.NAME]` in the server's config, or a
    /// preset): sent as `mapping=NAME` to `/ingest/apim`, without format detection. Never
    /// with `format`.
    pub mapping: Option<String>,
    /// Zone of zone-less times.
    pub timezone: Option<String>,
    /// Self-hosted gateway name.
    pub gateway: Option<String>,
    /// APIM service name.
    pub service: Option<String>,
    /// Mule app name.
    pub app: Option<String>,
    /// Largest body sent at once (a single record larger than this is sent alone).
    pub chunk_bytes: usize,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
}

/// One refusal the server reported.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Refused {
    /// Where.
    pub at: String,
    /// Why.
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    accepted: u64,
    rejected: u64,
    duplicates: u64,
    #[serde(default)]
    refusals: Vec<Refused>,
}

/// What happened to one file.
#[derive(Debug, Clone, Default)]
pub struct FileSummary {
    /// The file.
    pub path: PathBuf,
    /// Records stored.
    pub accepted: u64,
    /// Lines or records refused.
    pub rejected: u64,
    /// Records seam already had.
    pub duplicates: u64,
    /// The first refusals.
    pub refusals: Vec<Refused>,
    /// Why the file as a whole, or its rest, was not ingested.
    pub error: Option<String>,
}

/// Expands files, directories and globs into a sorted list of files.
///
/// # Errors
/// A path that matches nothing.
pub fn expand(paths: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if path.is_dir() {
            walk(path, &mut out).with_context(|| format!("cannot read directory {p}"))?;
        } else if path.is_file() {
            out.push(path.to_path_buf());
        } else {
            let mut matched: Vec<PathBuf> = glob::glob(p)
                .with_context(|| format!("invalid path or pattern {p}"))?
                .filter_map(Result::ok)
                .filter(|m| m.is_file())
                .collect();
            if matched.is_empty() {
                anyhow::bail!("{p}: no such file, directory or matching files");
            }
            matched.sort();
            out.append(&mut matched);
        }
    }
    Ok(out)
}

/// A part of a file ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The body.
    pub body: String,
    /// Line number of its first line.
    pub first_line: u64,
    /// Index of its first record in the document's record array.
    pub first_index: u64,
    /// Bytes of the file it carries (for the progress bar).
    pub src_bytes: u64,
}

/// Where a chunk goes, one at a time.
type ChunkSink<'a> = &'a mut dyn FnMut(Chunk) -> anyhow::Result<()>;

/// The kind of lines that may start a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Before a log4j event header.
    MuleHeader,
    /// Before any line that does not continue a JSON value (no indentation, no closer).
    Record,
    /// Before any non-blank line outside a quoted field (CSV rows).
    Csv,
}

/// Whether `line` (without its line break) may start a record for `cut`.
fn starts_record(line: &str, cut: Cut) -> bool {
    match cut {
        Cut::MuleHeader => mule::is_header(line),
        Cut::Record => {
            let t = line.trim_end();
            !t.is_empty() && !t.starts_with([' ', '\t', '}', ']', ',']) && !t.starts_with('"')
        }
        Cut::Csv => !line.trim().is_empty(),
    }
}

/// What the server reads the chunks of a file with, to tell which records may start one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The built-in APIM shapes (also Azure portal CSV exports).
    Apim,
    /// The built-in Mule shapes.
    Mule,
    /// A mapping over JSON records.
    MappedJson,
    /// A mapping over CSV with a header row.
    MappedCsv,
    /// Anything (unit tests of the cutting alone).
    #[cfg(test)]
    Any,
}

/// Whether the server reads `text` (the start of a chunk: its first record, after the header
/// of a CSV chunk) without refusing it as a whole: its first item is a record, not a refusal.
/// Stricter than the server where they differ (an array whose first element is refused but a
/// later one is not), which only costs a cut.
fn starts_readable(text: &str, check: Check) -> bool {
    const NAME: &str = "seam-ingest";
    match check {
        Check::Apim => match apim::decode_with(text, 1, true) {
            Ok(items) => items
                .first()
                .is_some_and(|i| !matches!(i, ApimItem::Reject { .. })),
            Err(_) => false,
        },
        Check::Mule => match mule::decode_with(text, 1, true) {
            Ok(items) => matches!(items.first(), Some(MuleItem::Event(_))),
            Err(_) => false,
        },
        Check::MappedJson => match mapped::json(text, 1, true, NAME) {
            Ok(items) => matches!(items.first(), Some(mapped::Item::Record { .. })),
            Err(_) => false,
        },
        Check::MappedCsv => match mapped::csv(text, 1, true, NAME) {
            Ok(items) => matches!(items.first(), Some(mapped::Item::Record { .. })),
            Err(_) => false,
        },
        #[cfg(test)]
        Check::Any => true,
    }
}

use seam_collector::sources::apim::csv::in_quotes_after as csv_in_quotes;

/// How a line-oriented file is cut.
#[derive(Debug, Clone)]
struct LinePlan {
    /// Which lines may start a chunk.
    cut: Cut,
    /// The CSV header line (without its line break), repeated at the start of every chunk
    /// after the first.
    header: Option<String>,
    /// What the server reads the chunks with.
    check: Check,
}

/// The chunk being filled.
#[derive(Debug)]
struct Part {
    body: String,
    first_line: u64,
    /// Bytes of the file in it.
    src: u64,
    /// It holds a record (a non-blank line other than the CSV header).
    rows: bool,
    /// CSV: it ends inside a quoted field ([`csv_in_quotes`]).
    quotes_odd: bool,
}

impl Part {
    fn push(&mut self, line: &str, row: bool, csv: bool) {
        self.body.push_str(line);
        self.src += line.len() as u64;
        self.rows |= row;
        if csv {
            self.quotes_odd = csv_in_quotes(self.quotes_odd, line);
        }
    }

    fn chunk(self) -> Chunk {
        Chunk {
            body: self.body,
            first_line: self.first_line,
            first_index: 0,
            src_bytes: self.src,
        }
    }
}

/// How the end of the record starting a chunk is found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// It is one line.
    #[default]
    Line,
    /// A JSON value: it ends with the line its brackets close on (or break on).
    Json,
    /// A CSV row: it ends with the line its quotes close on.
    Csv,
}

/// Where the record that would start a chunk ends.
#[derive(Debug, Default)]
struct RecordEnd {
    kind: EndKind,
    /// Open brackets of the JSON value.
    stack: Vec<u8>,
    in_str: bool,
    esc: bool,
    /// The JSON value closed.
    closed: bool,
    /// The JSON value cannot be complete (a line break inside a string, a closer that does
    /// not match): the server refuses it, whatever follows.
    broken: bool,
    quotes_odd: bool,
    lines: u64,
}

impl RecordEnd {
    fn feed(&mut self, line: &str) {
        self.lines += 1;
        match self.kind {
            EndKind::Line => {}
            EndKind::Csv => self.quotes_odd = csv_in_quotes(self.quotes_odd, line),
            EndKind::Json => self.feed_json(line.as_bytes()),
        }
    }

    fn feed_json(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.closed || self.broken {
                return;
            }
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                } else if b == b'\n' || b == b'\r' {
                    // A JSON string holds no line break.
                    self.broken = true;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.stack.push(b),
                b'}' | b']' => {
                    let opener = if b == b'}' { b'{' } else { b'[' };
                    if self.stack.pop() != Some(opener) {
                        self.broken = true;
                    } else if self.stack.is_empty() {
                        self.closed = true;
                    }
                }
                _ => {}
            }
        }
        // A last line without a line break may end inside a string.
        if self.in_str {
            self.broken = true;
        }
    }

    fn complete(&self) -> bool {
        match self.kind {
            EndKind::Line => self.lines > 0,
            EndKind::Csv => !self.quotes_odd,
            EndKind::Json => self.closed || self.broken,
        }
    }

    /// A JSON value still open.
    fn open_json(&self) -> bool {
        self.kind == EndKind::Json && !self.complete()
    }
}

/// A chunk start under consideration: the lines of its first record, read until the record
/// is complete.
#[derive(Debug)]
struct Tentative {
    text: String,
    /// Number of its first line.
    line: u64,
    end: RecordEnd,
}

impl Tentative {
    fn new(line: u64, bare: &str, cut: Cut) -> Self {
        let kind = match cut {
            Cut::Csv => EndKind::Csv,
            Cut::MuleHeader => EndKind::Line,
            Cut::Record if bare.trim_start().starts_with(['{', '[']) => EndKind::Json,
            Cut::Record => EndKind::Line,
        };
        Tentative {
            text: String::new(),
            line,
            end: RecordEnd {
                kind,
                ..RecordEnd::default()
            },
        }
    }

    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.end.feed(line);
    }
}

/// The buffer a line chunk is filled in: `max` and room for the line that ends it (at most
/// 64 MiB reserved ahead).
fn chunk_capacity(max: usize) -> usize {
    max.saturating_add(max / 8).min(64 << 20)
}

/// Whether a chunk may be cut before `bare` (a line without its break), `cur` being full.
fn may_cut(cur: &Part, bare: &str, cut: Cut, cap: usize) -> bool {
    match cut {
        // Outside quoted fields; past `cap` a stray quote is assumed (the server refuses its
        // row alone and reads on), and the readability check decides.
        Cut::Csv => (!cur.quotes_odd || cur.body.len() > cap) && starts_record(bare, Cut::Csv),
        c => starts_record(bare, c),
    }
}

/// Splits a line-oriented file into chunks of at most `max` bytes (a record larger than that
/// goes alone), cut before record starts (`plan.cut`) whose record the server reads
/// (`plan.check`); with a CSV header, every chunk after the first starts with it and numbers
/// it as the line before its first row.
fn line_chunks(
    mut reader: impl BufRead,
    plan: &LinePlan,
    max: usize,
    send: ChunkSink<'_>,
) -> anyhow::Result<()> {
    // The longest a record starting a chunk is read before it is judged (so memory stays
    // bounded on a value that never closes).
    let cap = max.max(1 << 20).saturating_mul(4);
    let csv = plan.cut == Cut::Csv;
    let mut cur = Part {
        body: String::with_capacity(chunk_capacity(max)),
        first_line: 1,
        src: 0,
        rows: false,
        quotes_odd: false,
    };
    let mut next: Option<Tentative> = None;
    let mut raw = Vec::new();
    let mut n = 0u64;
    loop {
        raw.clear();
        let got = reader
            .read_until(b'\n', &mut raw)
            .with_context(|| format!("reading line {}", n + 1))?;
        if got == 0 {
            break;
        }
        n += 1;
        let line = String::from_utf8_lossy(&raw);
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(mut t) = next.take() {
            if !(t.end.open_json() && starts_record(bare, Cut::Record)) {
                t.push(&line);
                if t.end.complete() || t.text.len() > cap {
                    settle(&mut cur, t, plan, max, send)?;
                } else {
                    next = Some(t);
                }
                continue;
            }
            // A record starts while the value before it is still open: that value is broken
            // and ends before this line, which may start a chunk itself.
            settle(&mut cur, t, plan, max, send)?;
        }
        if cur.rows && cur.body.len() + line.len() > max && may_cut(&cur, bare, plan.cut, cap) {
            let mut t = Tentative::new(n, bare, plan.cut);
            t.push(&line);
            if t.end.complete() || t.text.len() > cap {
                settle(&mut cur, t, plan, max, send)?;
            } else {
                next = Some(t);
            }
        } else {
            let header_line = plan.header.is_some() && n == 1;
            let row = !bare.trim().is_empty() && !header_line;
            cur.push(&line, row, csv);
        }
    }
    if let Some(t) = next.take() {
        // The file ends inside it: judged as it is (the server reads the same end).
        settle(&mut cur, t, plan, max, send)?;
    }
    if !cur.body.trim().is_empty() {
        send(cur.chunk())?;
    }
    Ok(())
}

/// Decides a chunk start `t` once its first record is complete: it starts the next chunk
/// (the current one is sent) when the server reads it, else it stays at the end of the
/// current chunk.
fn settle(
    cur: &mut Part,
    t: Tentative,
    plan: &LinePlan,
    max: usize,
    send: ChunkSink<'_>,
) -> anyhow::Result<()> {
    let mut body = match &plan.header {
        Some(h) => {
            let mut b = String::with_capacity(h.len() + 1 + t.text.len());
            b.push_str(h);
            b.push('\n');
            b
        }
        None => String::with_capacity(t.text.len()),
    };
    body.push_str(&t.text);
    let csv = plan.cut == Cut::Csv;
    if !starts_readable(&body, plan.check) {
        cur.push(&t.text, true, csv);
        return Ok(());
    }
    let first_line = if plan.header.is_some() {
        t.line.saturating_sub(1).max(1)
    } else {
        t.line
    };
    // Filled up to `max`: sized once, never regrown (and copied) on the way.
    body.reserve(chunk_capacity(max).saturating_sub(body.len()));
    let next = Part {
        body,
        first_line,
        src: t.text.len() as u64,
        rows: true,
        quotes_odd: csv && csv_in_quotes(false, &t.text),
    };
    send(std::mem::replace(cur, next).chunk())
}

#[derive(Debug)]
enum Frame {
    Obj {
        key: Option<String>,
        expect_key: bool,
    },
    Arr,
}

/// Which arrays of a single JSON document hold its records: those the server splits into
/// records (a document split at another array would give other records in chunks than whole).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum DocShape {
    /// Any of them (detection).
    #[default]
    Any,
    /// The APIM decoder's: the root array, root `records`, `tables[i].rows`.
    Apim,
    /// The Mule decoder's: the root array, root `data`.
    Mule,
    /// A mapping's: the root array, root `records`.
    Mapped,
}

impl DocShape {
    fn of(check: Check) -> Self {
        match check {
            Check::Apim => DocShape::Apim,
            Check::Mule => DocShape::Mule,
            Check::MappedJson | Check::MappedCsv => DocShape::Mapped,
            #[cfg(test)]
            Check::Any => DocShape::Any,
        }
    }
}

/// A streaming splitter of single JSON documents: finds the record array (the root array,
/// root `records` or `data`, or `tables[i].rows`, as `shape` allows), then yields its
/// elements.
#[derive(Debug, Default)]
struct DocSplitter {
    /// Which arrays hold records.
    shape: DocShape,
    stack: Vec<Frame>,
    in_str: bool,
    esc: bool,
    str_buf: String,
    capturing_key: bool,
    /// Bytes before the record array's first element.
    prefix: Vec<u8>,
    /// Depth of the record array once found.
    array_depth: Option<usize>,
    elem: Vec<u8>,
    /// The element being read has a non-blank byte.
    elem_nonblank: bool,
    /// Counts elements without keeping them (the checking pass).
    dry: bool,
    /// The record array closed.
    done: bool,
    /// Something other than closing brackets follows the record array.
    trailing: bool,
}

impl DocSplitter {
    fn path_is_records(&self) -> bool {
        let keys: Vec<Option<&str>> = self
            .stack
            .iter()
            .map(|f| match f {
                Frame::Obj { key, .. } => key.as_deref(),
                Frame::Arr => None,
            })
            .collect();
        let shape = self.shape;
        match self.stack.as_slice() {
            [] => true,
            [Frame::Obj { .. }] => keys[0].is_some_and(|k| match shape {
                DocShape::Any => {
                    k.eq_ignore_ascii_case("records") || k.eq_ignore_ascii_case("data")
                }
                DocShape::Apim | DocShape::Mapped => k.eq_ignore_ascii_case("records"),
                DocShape::Mule => k == "data",
            }),
            [Frame::Obj { .. }, Frame::Arr, Frame::Obj { .. }] => {
                matches!(shape, DocShape::Any | DocShape::Apim)
                    && keys[0].is_some_and(|k| k.eq_ignore_ascii_case("tables"))
                    && keys[2].is_some_and(|k| k.eq_ignore_ascii_case("rows"))
            }
            _ => false,
        }
    }

    /// A `{"records":[…]}` (or `{"data":[…]}`) envelope has no other key before its array:
    /// an object with more is one record with a field of that name, as the server reads it.
    fn envelope_only(&self) -> bool {
        if self.stack.len() != 1 {
            return true;
        }
        let keys = self
            .prefix
            .iter()
            .filter(|b| **b == b':' || **b == b',')
            .count();
        keys == 1
    }

    fn closers(&self) -> String {
        // The record array's frame is the `]`; then close what encloses it.
        let d = self.array_depth.unwrap_or(1).saturating_sub(1);
        let mut s = String::from("]");
        for f in self.stack[..d.min(self.stack.len())].iter().rev() {
            s.push(match f {
                Frame::Obj { .. } => '}',
                Frame::Arr => ']',
            });
        }
        s
    }

    /// Feeds bytes; completed elements go to `out` (counted only, when dry). Returns false
    /// when the text before the record array shows it is not a splittable document. After
    /// the array, notes anything but closing brackets and blanks (`trailing`).
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        for &b in bytes {
            if self.done {
                if !b.is_ascii_whitespace() && b != b'}' && b != b']' {
                    self.trailing = true;
                }
                continue;
            }
            // Track strings.
            if self.in_str {
                self.push_byte(b);
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                    if self.capturing_key {
                        self.capturing_key = false;
                        let k = std::mem::take(&mut self.str_buf);
                        if let Some(Frame::Obj { key, .. }) = self.stack.last_mut() {
                            *key = Some(k);
                        }
                    }
                } else if self.capturing_key {
                    self.str_buf.push(b as char);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_str = true;
                    if let Some(Frame::Obj { expect_key, .. }) = self.stack.last_mut()
                        && *expect_key
                    {
                        *expect_key = false;
                        self.capturing_key = self.array_depth.is_none();
                        self.str_buf.clear();
                    }
                    self.push_byte(b);
                }
                b'{' => {
                    self.push_byte(b);
                    self.stack.push(Frame::Obj {
                        key: None,
                        expect_key: true,
                    });
                }
                b'[' => {
                    if self.array_depth.is_none() && self.path_is_records() && self.envelope_only()
                    {
                        self.prefix.push(b);
                        self.stack.push(Frame::Arr);
                        self.array_depth = Some(self.stack.len());
                        continue;
                    }
                    self.push_byte(b);
                    self.stack.push(Frame::Arr);
                }
                b'}' | b']' => {
                    if Some(self.stack.len()) == self.array_depth && b == b']' {
                        self.flush_elem(out);
                        self.done = true;
                        continue;
                    }
                    self.push_byte(b);
                    self.stack.pop();
                    if self.stack.is_empty() && self.array_depth.is_none() {
                        return false;
                    }
                }
                b',' => {
                    if Some(self.stack.len()) == self.array_depth {
                        self.flush_elem(out);
                        continue;
                    }
                    self.push_byte(b);
                    if let Some(Frame::Obj { expect_key, .. }) = self.stack.last_mut() {
                        *expect_key = true;
                    }
                }
                _ => self.push_byte(b),
            }
        }
        true
    }

    fn push_byte(&mut self, b: u8) {
        match self.array_depth {
            None => self.prefix.push(b),
            Some(_) => {
                self.elem_nonblank |= !b.is_ascii_whitespace();
                if !self.dry {
                    self.elem.push(b);
                }
            }
        }
    }

    fn flush_elem(&mut self, out: &mut Vec<Vec<u8>>) {
        let e = std::mem::take(&mut self.elem);
        if self.elem_nonblank && !self.dry {
            out.push(e);
        }
        self.elem_nonblank = false;
    }
}

/// Whether `path` holds one JSON document that [`doc_chunks`] can split: a single valid JSON
/// value (checked by serde_json as the file streams past, nothing kept), whose record array
/// is followed by nothing but the closing brackets of what encloses it, and whose text before
/// that array is at most `max` bytes. Anything else (a truncated document, two documents, a
/// second table) is cut as lines, which the server reads as it would read the whole file.
fn splittable_document(path: &Path, max: usize, shape: DocShape) -> anyhow::Result<bool> {
    /// Hands the file to serde_json and, on the way, to a dry splitter; stops both once the
    /// splitter sees that the file is no document it can split.
    struct Tee<'a> {
        file: File,
        s: &'a mut DocSplitter,
        max: usize,
    }
    impl Read for Tee<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.file.read(buf)?;
            let mut none = Vec::new();
            let fits = self.s.feed(&buf[..n], &mut none)
                && (self.s.array_depth.is_some() || self.s.prefix.len() <= self.max);
            if fits {
                Ok(n)
            } else {
                Err(std::io::Error::other(
                    "not a document seam ingest can split",
                ))
            }
        }
    }
    let mut file = File::open(path).context("cannot open the file")?;
    // serde_json does not read a byte-order mark.
    let mut bom = Vec::with_capacity(3);
    (&mut file)
        .take(3)
        .read_to_end(&mut bom)
        .context("reading the file")?;
    if bom != b"\xEF\xBB\xBF" {
        file.seek(SeekFrom::Start(0)).context("reading the file")?;
    }
    let mut s = DocSplitter {
        shape,
        dry: true,
        ..DocSplitter::default()
    };
    let valid = {
        let tee = Tee {
            file,
            s: &mut s,
            max,
        };
        let mut de =
            serde_json::Deserializer::from_reader(BufReader::with_capacity(READ_BLOCK, tee));
        serde::de::IgnoredAny::deserialize(&mut de).is_ok() && de.end().is_ok()
    };
    Ok(valid && s.done && !s.trailing)
}

/// Splits a single-document file into chunks of at most `max` bytes (a larger element goes
/// alone) between the elements of its record array, each re-wrapped in the document's own
/// prefix; a chunk after the first starts with an element the server reads (`check`).
/// `Ok(false)`, nothing sent, when the file is not such a document ([`splittable_document`]).
fn doc_chunks(path: &Path, max: usize, check: Check, send: ChunkSink<'_>) -> anyhow::Result<bool> {
    let shape = DocShape::of(check);
    if !splittable_document(path, max, shape)? {
        return Ok(false);
    }
    let changed = || {
        anyhow::anyhow!(
            "the file changed while it was read: it is no longer the JSON document it was"
        )
    };
    let mut f = File::open(path).context("cannot open the file")?;
    let mut s = DocSplitter {
        shape,
        ..DocSplitter::default()
    };
    let mut buf = vec![0u8; READ_BLOCK];
    let mut elems: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut index = 0u64;
    let mut first_index = 0u64;
    let mut prefix_line = 1u64;
    while !s.done {
        let n = f.read(&mut buf).context("reading the file")?;
        if n == 0 {
            break;
        }
        if !s.feed(&buf[..n], &mut elems) {
            return Err(changed());
        }
        if s.array_depth.is_some() {
            prefix_line = 1 + s.prefix.iter().filter(|b| **b == b'\n').count() as u64;
        }
        for e in elems.drain(..) {
            if pending_bytes + e.len() > max
                && !pending.is_empty()
                && starts_readable(&wrap(&s, &[e.as_slice()], 1, 0).body, check)
            {
                send(wrap(&s, &pending, prefix_line, first_index))?;
                first_index = index;
                pending.clear();
                pending_bytes = 0;
            }
            pending_bytes += e.len() + 1;
            pending.push(e);
            index += 1;
        }
    }
    if !s.done {
        return Err(changed());
    }
    if !pending.is_empty() || index == 0 {
        send(wrap(&s, &pending, prefix_line, first_index))?;
    }
    Ok(true)
}

/// The document's prefix, `elems` and the closers: a document of its own.
fn wrap<E: AsRef<[u8]>>(s: &DocSplitter, elems: &[E], line: u64, first_index: u64) -> Chunk {
    let closers = s.closers();
    let size =
        s.prefix.len() + elems.iter().map(|e| e.as_ref().len() + 1).sum::<usize>() + closers.len();
    let mut body = String::with_capacity(size);
    body.push_str(&String::from_utf8_lossy(&s.prefix));
    let mut src_bytes = 0u64;
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let e = e.as_ref();
        body.push_str(&String::from_utf8_lossy(e));
        src_bytes += e.len() as u64 + 1;
    }
    body.push_str(&closers);
    Chunk {
        body,
        first_line: line,
        first_index,
        src_bytes,
    }
}

/// Which endpoint `text` (complete records) belongs to: the first item must be a record of a
/// known shape, as the server demands of an input's first record. Mule first (an event), then
/// APIM (a gateway record or custom event).
fn sniff_text(text: &str) -> Option<AccessSource> {
    if let Ok(items) = mule::decode_with(text, 1, false)
        && matches!(items.first(), Some(MuleItem::Event(_)))
    {
        return Some(AccessSource::Mule);
    }
    if let Ok(items) = apim::decode_with(text, 1, false)
        && items
            .first()
            .is_some_and(|i| !matches!(i, ApimItem::Reject { .. }))
    {
        return Some(AccessSource::Apim);
    }
    None
}

/// Which endpoint a file belongs to, from its first bytes `head` (`whole`: they are the whole
/// file); `None` when they hold no complete record of a known shape. A prefix that ends
/// inside a record is decided by its complete lines (before its last line break) or, for a
/// single JSON document, by the complete elements of its record array, re-wrapped in the
/// document's prefix.
fn sniff_prefix(head: &str, whole: bool) -> Option<AccessSource> {
    if whole {
        return sniff_text(head);
    }
    if let Some(end) = head.rfind('\n')
        && let Some(s) = sniff_text(&head[..=end])
    {
        return Some(s);
    }
    let t = head.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with(['{', '[']) {
        let mut s = DocSplitter::default();
        let mut elems = Vec::new();
        if s.feed(t.as_bytes(), &mut elems) && s.array_depth.is_some() && !elems.is_empty() {
            return sniff_text(&wrap(&s, &elems, 1, 0).body);
        }
    }
    None
}

/// The OTLP/HTTP endpoint of an OTLP/JSON export file, from its first bytes.
fn otlp_endpoint(head: &str) -> Option<&'static str> {
    let t = head.trim_start_matches('\u{feff}').trim_start();
    if !t.starts_with('{') {
        None
    } else if t.contains("\"resourceSpans\"") {
        Some("/v1/traces")
    } else if t.contains("\"resourceLogs\"") {
        Some("/v1/logs")
    } else {
        None
    }
}

/// The header line to repeat at the start of every chunk of a CSV file, from its first bytes:
/// its first line, when that is the header of an Azure portal export, or, with a mapping,
/// when the file is not JSON (a CSV mapping reads a header row, then one record per row).
fn csv_header(head: &str, mapping: bool) -> Option<String> {
    let text = head.strip_prefix('\u{feff}').unwrap_or(head);
    let line = text.split('\n').next().unwrap_or("").trim_end_matches('\r');
    if line.trim().is_empty() {
        return None;
    }
    let portal = seam_collector::sources::apim::csv::is_csv_header(line);
    let mapped = mapping && !text.trim_start().starts_with(['{', '[']);
    (portal || mapped).then(|| line.to_string())
}

/// Reads `file` on into `buf` until `buf` holds `limit` bytes; true when the file ended
/// first.
fn read_more(file: &mut File, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
    let want = limit.saturating_sub(buf.len());
    let got = (&mut *file).take(want as u64).read_to_end(buf)?;
    Ok(got < want)
}

/// How a file is sent.
#[derive(Debug)]
enum Plan {
    /// In one body.
    Whole,
    /// Split between the records of its single JSON document, else as lines.
    Document(LinePlan),
    /// Cut between lines.
    Lines(LinePlan),
}

/// Reads the file and hands its chunks to `send`, in order.
fn produce(path: &Path, plan: &Plan, max: usize, send: ChunkSink<'_>) -> anyhow::Result<()> {
    match plan {
        Plan::Whole => {
            let bytes = std::fs::read(path).context("cannot read the file")?;
            let src_bytes = bytes.len() as u64;
            let body = String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            send(Chunk {
                body,
                first_line: 1,
                first_index: 0,
                src_bytes,
            })
        }
        Plan::Document(lines) => {
            if doc_chunks(path, max, lines.check, send)? {
                return Ok(());
            }
            line_file(path, lines, max, send)
        }
        Plan::Lines(lines) => line_file(path, lines, max, send),
    }
}

fn line_file(path: &Path, plan: &LinePlan, max: usize, send: ChunkSink<'_>) -> anyhow::Result<()> {
    let f = File::open(path).context("cannot open the file")?;
    line_chunks(BufReader::with_capacity(READ_BLOCK, f), plan, max, send)
}

fn known_formats() -> String {
    format!(
        "APIM: {}; Mule: {}",
        AccessSource::Apim.formats().join(", "),
        AccessSource::Mule.formats().join(", ")
    )
}

fn source_of_format(f: &str) -> Option<AccessSource> {
    [AccessSource::Apim, AccessSource::Mule]
        .into_iter()
        .find(|s| s.formats().contains(&f))
}

/// Sends every file; gives one summary per file.
///
/// # Errors
/// `--mapping` with `--format`; the server cannot be reached, or answers with something other
/// than a refusal of the file's content.
pub async fn run(files: &[PathBuf], opts: &Options) -> anyhow::Result<Vec<FileSummary>> {
    if opts.mapping.is_some() && opts.format.is_some() {
        anyhow::bail!(
            "--mapping and --format cannot be given together: a mapping names its own format"
        );
    }
    if opts.mapping.as_deref().is_some_and(|m| m.trim().is_empty()) {
        anyhow::bail!("--mapping needs the name of a mapping");
    }
    let client = crate::client::http_client(Duration::from_secs(300))?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let forced_source = match &opts.format {
        Some(f) => Some(source_of_format(f).with_context(|| {
            format!("unknown --format {f:?}; known formats: {}", known_formats())
        })?),
        None => None,
    };
    let mut out = Vec::new();
    for path in files {
        let mut summary = FileSummary {
            path: path.clone(),
            ..Default::default()
        };
        if let Some(b) = &bar {
            b.set_message(path.display().to_string());
        }
        ingest_file(
            &client,
            opts,
            forced_source,
            path,
            &mut summary,
            bar.as_ref(),
        )
        .await?;
        out.push(summary);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}

/// Sends one file; what happened goes to `summary` (a file that cannot be read, is in no
/// known format or is refused gets its `error`).
///
/// # Errors
/// As [`run`]: the server cannot be reached, or fails otherwise than by refusing the content.
async fn ingest_file(
    client: &reqwest::Client,
    opts: &Options,
    forced: Option<AccessSource>,
    path: &Path,
    summary: &mut FileSummary,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            summary.error = Some(format!("cannot open it: {e}"));
            return Ok(());
        }
    };
    let size = file.metadata().map_or(0, |m| m.len());
    let mut head = Vec::new();
    let mut whole = match read_more(&mut file, &mut head, SNIFF_FIRST) {
        Ok(w) => w,
        Err(e) => {
            summary.error = Some(format!("cannot read it: {e}"));
            return Ok(());
        }
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        summary.error = Some(
            "a gzip file: seam ingest reads text, so decompress it first (gunzip -k); a `file` \
             source reads .gz files as they are"
                .into(),
        );
        return Ok(());
    }
    // OTLP/JSON export files go to the OTLP/HTTP receiver as they are.
    if forced.is_none()
        && opts.mapping.is_none()
        && let Some(endpoint) = otlp_endpoint(&String::from_utf8_lossy(&head))
    {
        drop(file);
        let body = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                summary.error = Some(format!("cannot read it: {e}"));
                return Ok(());
            }
        };
        let len = body.len() as u64;
        match send_otlp(client, opts, endpoint, body).await? {
            Ok(n) => summary.accepted += n,
            Err(msg) => summary.error = Some(msg),
        }
        if let Some(b) = bar {
            b.inc(len);
        }
        return Ok(());
    }
    let header = csv_header(&String::from_utf8_lossy(&head), opts.mapping.is_some());
    let source = if opts.mapping.is_some() {
        AccessSource::Apim
    } else if let Some(s) = forced {
        s
    } else if header.is_some() {
        // An Azure portal CSV export.
        AccessSource::Apim
    } else {
        loop {
            let found = sniff_prefix(&String::from_utf8_lossy(&head), whole);
            if let Some(s) = found {
                break s;
            }
            if whole || head.len() >= SNIFF_MAX {
                let mut msg = format!(
                    "unknown format: not a gateway or flow log shape seam knows; known formats: {}",
                    known_formats()
                );
                if !whole {
                    msg.push_str(&format!(
                        " (read its first {} KiB: they hold no complete record of a known shape)",
                        head.len() / 1024
                    ));
                }
                summary.error = Some(msg);
                return Ok(());
            }
            // No complete record yet (a record longer than the prefix): read more.
            let limit = head.len().saturating_mul(4).clamp(SNIFF_FIRST, SNIFF_MAX);
            whole = match read_more(&mut file, &mut head, limit) {
                Ok(w) => w,
                Err(e) => {
                    summary.error = Some(format!("cannot read it: {e}"));
                    return Ok(());
                }
            };
        }
    };
    drop(file);
    let plan = {
        let text = String::from_utf8_lossy(&head);
        let first = text.trim_start_matches('\u{feff}').trim_start();
        let is_json =
            first.starts_with(['{', '[']) && !mule::is_header(first.lines().next().unwrap_or(""));
        let check = match (&opts.mapping, source) {
            (Some(_), _) if is_json => Check::MappedJson,
            (Some(_), _) => Check::MappedCsv,
            (None, AccessSource::Apim) => Check::Apim,
            (None, AccessSource::Mule) => Check::Mule,
        };
        let cut = if header.is_some() {
            Cut::Csv
        } else if source == AccessSource::Mule && !is_json {
            Cut::MuleHeader
        } else {
            Cut::Record
        };
        let lines = LinePlan { cut, header, check };
        if size <= opts.chunk_bytes as u64 {
            Plan::Whole
        } else if is_json {
            Plan::Document(lines)
        } else {
            Plan::Lines(lines)
        }
    };
    stream(client, opts, source, path, plan, summary, bar).await
}

/// Sends the chunks of one file in order as a blocking task reads them (at most two wait in
/// between), adding the answers to `summary`. A refusal, or an error reading the file, ends
/// the file with `summary.error`.
///
/// # Errors
/// As [`run`].
async fn stream(
    client: &reqwest::Client,
    opts: &Options,
    source: AccessSource,
    path: &Path,
    plan: Plan,
    summary: &mut FileSummary,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let file_name = path.display().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let max = opts.chunk_bytes;
    let owned = path.to_path_buf();
    let producer = tokio::task::spawn_blocking(move || {
        let mut deliver = |c: Chunk| -> anyhow::Result<()> {
            tx.blocking_send(c)
                .map_err(|_| anyhow::anyhow!("stopped: the file's chunks are no longer sent"))
        };
        produce(&owned, &plan, max, &mut deliver)
    });
    let mut shown = 0u64;
    let mut fatal = None;
    while let Some(c) = rx.recv().await {
        let step = c.src_bytes;
        match send(client, opts, source, &file_name, c).await {
            Ok(Ok(a)) => {
                summary.accepted += a.accepted;
                summary.rejected += a.rejected;
                summary.duplicates += a.duplicates;
                let room = 100usize.saturating_sub(summary.refusals.len());
                summary.refusals.extend(a.refusals.into_iter().take(room));
            }
            Ok(Err(msg)) => {
                summary.error = Some(msg);
                break;
            }
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
        if let Some(b) = bar {
            let step = step.min(size.saturating_sub(shown));
            b.inc(step);
            shown += step;
        }
    }
    // A reader still at work stops at its next hand-over.
    drop(rx);
    let produced = producer.await;
    if let Some(e) = fatal {
        return Err(e);
    }
    if summary.error.is_some() {
        return Ok(());
    }
    match produced {
        Ok(Ok(())) => {
            if let Some(b) = bar {
                b.inc(size.saturating_sub(shown));
            }
        }
        Ok(Err(e)) => summary.error = Some(format!("{e:#}")),
        Err(e) => summary.error = Some(format!("reading the file failed: {e}")),
    }
    Ok(())
}

/// Posts an OTLP/JSON export file; gives the records accepted, or the refusal.
async fn send_otlp(
    client: &reqwest::Client,
    opts: &Options,
    endpoint: &str,
    body: Vec<u8>,
) -> anyhow::Result<Result<u64, String>> {
    let count = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .map_or(0, |v| count_otlp(&v));
    let url = format!("{}{endpoint}", opts.to.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach seam at {}", opts.to))?;
    let status = resp.status();
    let text = resp.text().await.context("reading seam's answer")?;
    if !status.is_success() {
        return Ok(Err(format!("refused ({status}): {text}")));
    }
    let rejected = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let p = v.get("partialSuccess")?;
            p.get("rejectedSpans")
                .or_else(|| p.get("rejectedLogRecords"))
                .and_then(|n| {
                    n.as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| n.as_u64())
                })
        })
        .unwrap_or(0);
    Ok(Ok(count.saturating_sub(rejected)))
}

fn count_otlp(v: &serde_json::Value) -> u64 {
    let mut n = 0;
    for (outer, mid, inner) in [
        ("resourceSpans", "scopeSpans", "spans"),
        ("resourceLogs", "scopeLogs", "logRecords"),
    ] {
        for r in v
            .get(outer)
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            for s in r.get(mid).and_then(|x| x.as_array()).into_iter().flatten() {
                n += s
                    .get(inner)
                    .and_then(|x| x.as_array())
                    .map_or(0, |a| a.len() as u64);
            }
        }
    }
    n
}

/// Posts one chunk; the inner error is the server's refusal of the content.
async fn send(
    client: &reqwest::Client,
    opts: &Options,
    source: AccessSource,
    file: &str,
    c: Chunk,
) -> anyhow::Result<Result<Answer, String>> {
    let mut url = url::Url::parse(&format!(
        "{}/ingest/{}",
        opts.to.trim_end_matches('/'),
        source.label()
    ))
    .with_context(|| format!("invalid --to {}", opts.to))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("file", file);
        q.append_pair("first_line", &c.first_line.to_string());
        q.append_pair("first_index", &c.first_index.to_string());
        for (k, v) in [
            ("format", &opts.format),
            ("mapping", &opts.mapping),
            ("timezone", &opts.timezone),
            ("gateway", &opts.gateway),
            ("service", &opts.service),
            ("app", &opts.app),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v.trim());
            }
        }
    }
    // Built once: a retry sends the same body again without copying it.
    let request = client
        .post(url)
        .header("content-type", "text/plain; charset=utf-8")
        .body(c.body)
        .build()
        .context("building the request")?;
    let mut delay = Duration::from_millis(200);
    for attempt in 0.. {
        let req = request
            .try_clone()
            .context("the request cannot be sent again")?;
        let resp = client
            .execute(req)
            .await
            .with_context(|| format!("cannot reach seam at {}", opts.to))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading seam's answer")?;
        if status.is_success() {
            let a: Answer = serde_json::from_slice(&body).context("reading seam's answer")?;
            return Ok(Ok(a));
        }
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        if status.as_u16() == 503 && attempt < 20 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        if status.is_client_error() {
            return Ok(Err(format!("refused ({status}): {msg}")));
        }
        anyhow::bail!("seam answered {status}: {msg}");
    }
    unreachable!("the retry loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &mut Vec<Chunk>) -> impl FnMut(Chunk) -> anyhow::Result<()> + '_ {
        move |c| {
            chunks.push(c);
            Ok(())
        }
    }

    fn apim_line(id: &str) -> String {
        format!(
            r#"{{"time":"2024-11-05T09:20:00Z","resourceId":"/X/SERVICE/APIM-T","category":"GatewayLogs","correlationId":"{id}","durationMs":5,"properties":{{"method":"GET","url":"https://p/a","responseCode":200}}}}"#
        )
    }

    #[test]
    fn documents_split_at_records_and_rewrap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        let doc = r#"{"tables":[{"name":"PrimaryResult","columns":[{"name":"a","type":"string"}],"rows":[["x,]}"],["y"],["z"]]}]}"#;
        std::fs::write(&p, doc).unwrap();
        let mut chunks = Vec::new();
        assert!(doc_chunks(&p, 10, Check::Any, &mut collect(&mut chunks)).unwrap());
        assert_eq!(chunks.len(), 3);
        for c in &chunks {
            let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
            assert_eq!(v["tables"][0]["rows"].as_array().unwrap().len(), 1);
        }
        assert_eq!(chunks[2].first_index, 2);
        let p2 = dir.path().join("lines.jsonl");
        std::fs::write(&p2, "{\"a\":1}\n{\"b\":2}\n").unwrap();
        assert!(!doc_chunks(&p2, 4, Check::Any, &mut collect(&mut Vec::new())).unwrap());
        // Truncated, two documents, or more after the record array: not split (nothing is
        // sent; the file is cut as lines, as the server reads it whole).
        for (name, text) in [
            ("cut.json", doc[..doc.len() - 3].to_string()),
            ("two.json", format!("{doc}\n{doc}\n")),
            (
                "more.json",
                r#"{"records":[{"a":1},{"b":2}],"next":"x"}"#.to_string(),
            ),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let mut sent = Vec::new();
            assert!(
                !doc_chunks(&p, 10, Check::Any, &mut collect(&mut sent)).unwrap(),
                "{name}"
            );
            assert!(sent.is_empty(), "{name}");
        }
        // A byte-order mark and blanks after the document are fine.
        let p3 = dir.path().join("bom.json");
        std::fs::write(&p3, format!("\u{feff}{doc}\n\n")).unwrap();
        assert!(doc_chunks(&p3, 10, Check::Any, &mut collect(&mut Vec::new())).unwrap());
    }

    #[test]
    fn a_document_chunk_starts_with_a_readable_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("batch.json");
        let recs = [
            apim_line("D-0"),
            "\"not a record\"".to_string(),
            "{\"neither\":1}".to_string(),
            apim_line("D-3"),
        ];
        std::fs::write(&p, format!("{{\"records\":[{}]}}", recs.join(","))).unwrap();
        let mut chunks = Vec::new();
        assert!(doc_chunks(&p, 10, Check::Apim, &mut collect(&mut chunks)).unwrap());
        let firsts: Vec<u64> = chunks.iter().map(|c| c.first_index).collect();
        assert_eq!(firsts, [0, 3]);
    }

    #[test]
    fn mule_text_is_cut_before_headers_only() {
        let text = "INFO  2024-11-05 09:10:02,611 [t] [processor: ; event: ] a.B: \n****\nx\n****\nINFO  2024-11-05 09:10:03,611 [t] [processor: ; event: ] a.B: y\n";
        let plan = LinePlan {
            cut: Cut::MuleHeader,
            header: None,
            check: Check::Mule,
        };
        let mut chunks = Vec::new();
        line_chunks(text.as_bytes(), &plan, 10, &mut collect(&mut chunks)).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].first_line, 5);
        assert!(chunks[0].body.ends_with("****\n"));
    }

    #[test]
    fn prefixes_cut_inside_a_record_are_decided_by_their_complete_records() {
        let recs: Vec<String> = (0..5).map(|i| apim_line(&format!("P-{i}"))).collect();
        // A compact Event Hubs body cut inside its third record.
        let doc = format!("{{\"records\":[{}]}}", recs.join(","));
        let at = "{\"records\":[".len() + recs[0].len() + 1 + recs[1].len() + 1 + 40;
        assert_eq!(sniff_prefix(&doc[..at], false), Some(AccessSource::Apim));
        assert_eq!(sniff_prefix(&doc, true), Some(AccessSource::Apim));
        // Pretty-printed, cut inside a line.
        let pretty = format!(
            "{{\n  \"records\": [\n    {}\n  ]\n}}\n",
            recs.join(",\n    ")
        );
        let at = pretty.len() / 2 + 7;
        assert_eq!(sniff_prefix(&pretty[..at], false), Some(AccessSource::Apim));
        // JSON Lines cut inside the third line.
        let lines = recs.join("\n");
        let at = recs[0].len() + recs[1].len() + 2 + 30;
        assert_eq!(sniff_prefix(&lines[..at], false), Some(AccessSource::Apim));
        // No complete record yet: undecided (a longer prefix is read).
        assert_eq!(sniff_prefix(&recs[0][..60], false), None);
        assert_eq!(sniff_prefix(&doc[..30], false), None);
        // Mule log4j cut inside a line.
        let mule = "INFO  2024-11-05 09:10:02,611 [t] [processor: p; event: c1] a.B: hello\nINFO  2024-11-05 09:10:03,611 [t] [proc";
        assert_eq!(sniff_prefix(mule, false), Some(AccessSource::Mule));
        // The first record decides: a known record after an unknown one does not.
        let late = format!("hello world\n{}\n", recs[0]);
        assert_eq!(sniff_prefix(&late, true), None);
        assert_eq!(sniff_prefix("hello world\nthis is not", false), None);
    }

    #[test]
    fn line_chunks_start_only_with_records_the_server_reads() {
        let mut lines = Vec::new();
        for i in 1..=60 {
            lines.push(match i {
                10..=14 => format!("not a record {i} {}", "x".repeat(150)),
                30 => r#"{"time":"2024-11-05T09:20:00Z","category":"GatewayLogs","correlationId":"#
                    .to_string(),
                31 => {
                    r#"{"time":"2024-11-05T09:20:00Z","category":"GatewayLogs","url":"https://a/b"#
                        .to_string()
                }
                45 => format!(
                    r#"{{"neither":"a gateway record","pad":"{}"}}"#,
                    "y".repeat(150)
                ),
                _ => apim_line(&format!("L-{i}")),
            });
        }
        let mut text = lines.join("\n");
        // A cut last line (61).
        text.push_str("\n{\"time\":\"2024-11-05T09:2");
        let plan = LinePlan {
            cut: Cut::Record,
            header: None,
            check: Check::Apim,
        };
        let mut chunks = Vec::new();
        line_chunks(text.as_bytes(), &plan, 600, &mut collect(&mut chunks)).unwrap();
        assert!(chunks.len() > 5, "{chunks:?}");
        // Every byte once, in order, each chunk numbered from its true first line.
        let joined: String = chunks.iter().map(|c| c.body.as_str()).collect();
        assert_eq!(joined, text);
        let mut line = 1u64;
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.first_line, line, "{c:?}");
            if i > 0 {
                let first = c.body.split_inclusive('\n').next().unwrap();
                assert!(starts_readable(first, Check::Apim), "{c:?}");
            }
            line += c.body.matches('\n').count() as u64;
        }
        assert!(chunks.last().unwrap().body.ends_with("09:2"));
    }

    #[test]
    fn csv_chunks_repeat_the_header_and_never_cut_a_quoted_field() {
        let header = "TimeGenerated [UTC],CorrelationId,Message";
        let mut text = format!("{header}\n");
        for i in 0..40 {
            if i % 7 == 3 {
                text.push_str(&format!(
                    "2024-11-05T09:20:{:02}Z,c-{i},\"two\nlines, \"\"quoted\"\"\"\n",
                    i % 60
                ));
            } else {
                text.push_str(&format!(
                    "2024-11-05T09:20:{:02}Z,c-{i},plain message {i}\n",
                    i % 60
                ));
            }
        }
        let plan = LinePlan {
            cut: Cut::Csv,
            header: Some(header.to_string()),
            check: Check::MappedCsv,
        };
        let mut chunks = Vec::new();
        line_chunks(text.as_bytes(), &plan, 200, &mut collect(&mut chunks)).unwrap();
        assert!(chunks.len() > 3, "{chunks:?}");
        let mut rebuilt = String::new();
        let mut line = 1u64;
        let repeated = format!("{header}\n");
        for (i, c) in chunks.iter().enumerate() {
            let rows = if i == 0 {
                assert_eq!(c.first_line, 1);
                c.body.as_str()
            } else {
                // The header is numbered as the line before the chunk's first row.
                assert_eq!(c.first_line + 1, line, "{c:?}");
                c.body.strip_prefix(repeated.as_str()).unwrap()
            };
            assert!(
                !csv_in_quotes(false, rows),
                "a chunk ends inside a quoted field: {rows:?}"
            );
            rebuilt.push_str(rows);
            line += rows.matches('\n').count() as u64;
        }
        assert_eq!(rebuilt, text);
    }

    #[test]
    fn csv_headers() {
        let portal = "\u{feff}TenantId,TimeGenerated [UTC],CorrelationId,ResponseCode\r\nx,y,z,1\n";
        assert_eq!(
            csv_header(portal, false).as_deref(),
            Some("TenantId,TimeGenerated [UTC],CorrelationId,ResponseCode")
        );
        assert_eq!(csv_header("a,b\n1,2\n", false), None);
        assert_eq!(csv_header("a,b\n1,2\n", true).as_deref(), Some("a,b"));
        assert_eq!(csv_header("{\"a\":1}\n", true), None);
        assert_eq!(csv_header("\n", true), None);
    }
}
