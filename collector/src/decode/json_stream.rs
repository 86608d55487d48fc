//! Splits a text body into JSON values and text lines, keeping each one's line number, in
//! time linear in the body's size.
//!
//! Takes the body (JSON Lines, one or more JSON documents, pretty-printed or compact, text
//! lines, or a mix) and the line number of its first line; gives [`Piece`]s in order. A JSON
//! value starts at `{` or `[` first on a line (or right after the value before it); anything
//! else is a text line for the caller to classify, and so is a line starting with `[` that is
//! not JSON from its first characters (`[Info] …`, `[11-05 09:14:03] …`).
//!
//! Cost: each value is checked by one forward scan with an explicit stack (no recursion, no
//! reading past its first error), and serde_json builds only what such a scan found complete.
//! No byte is checked twice nor parsed twice, so a body costs a small constant number of
//! passes whatever it holds ([`Split::work`] counts them).
//!
//! Broken values: the scan that found the error has seen every line inside the broken value,
//! so values that started first on one of those lines and closed before the error are kept (a
//! truncated `{"records":[…` keeps its whole records; a truncated line keeps the lines after
//! it), and the rest is one [`Piece::Bad`] that names its lines, the error's line, column and
//! byte offset, and why. Broken regions with nothing kept between them merge into one piece;
//! a line of nothing but closing brackets and commas (outside any value) is broken too. A
//! value nested deeper than [`MAX_DEPTH`] levels (serde_json's limit), counted from where its
//! scan started, is broken.

use serde_json::Value;

use crate::error::IngestError;

/// Deepest nesting of a JSON value: serde_json refuses a 128th level.
pub const MAX_DEPTH: usize = 127;

/// Longest text a [`Piece::Bad`] carries: the start of its first line, cut on a character
/// boundary.
pub const MAX_BAD_TEXT: usize = 64 * 1024;

/// One piece of a body.
#[derive(Debug)]
pub enum Piece<'a> {
    /// A JSON object or array starting on `line`.
    Json {
        /// Line number of its first character.
        line: u64,
        /// The value.
        value: Value,
        /// Its text.
        raw: &'a str,
    },
    /// A line that does not start a JSON value.
    Text {
        /// Line number.
        line: u64,
        /// The line, without its line break.
        text: &'a str,
    },
    /// A broken JSON region (one value, or several lines of broken values).
    Bad {
        /// Line number of its first character.
        line: u64,
        /// Its first line (at most [`MAX_BAD_TEXT`] bytes of it).
        text: &'a str,
        /// Why and where: the first error's line, column and byte offset, and the lines and
        /// byte offsets skipped when the region spans several lines.
        reason: String,
    },
}

/// The pieces of a body and the work spent finding them.
#[derive(Debug)]
pub struct Split<'a> {
    /// The pieces, in order.
    pub pieces: Vec<Piece<'a>>,
    /// Bytes visited by every pass together (the checking scans, serde_json, line and
    /// whitespace scanning): at most a small constant times the body's length.
    pub work: u64,
}

/// Splits `text`; `first_line` is the number of its first line.
pub fn pieces(text: &str, first_line: u64) -> Vec<Piece<'_>> {
    split(text, first_line).pieces
}

/// As [`pieces`], also counting the work spent.
pub fn split(text: &str, first_line: u64) -> Split<'_> {
    let mut s = Splitter {
        text,
        b: text.as_bytes(),
        out: Vec::new(),
        bad: None,
        work: 0,
        stack: Vec::new(),
        inner: Vec::new(),
    };
    s.run(first_line);
    s.flush();
    Split {
        pieces: s.out,
        work: s.work,
    }
}

/// Checks that every line of `text`, numbered from `first_line`, has a number that fits the
/// `Int64` columns storing line numbers (a body has fewer lines than bytes).
///
/// # Errors
/// [`IngestError::InvalidPayload`] when one would not.
pub fn check_first_line(text: &str, first_line: u64) -> Result<(), IngestError> {
    let len = u64::try_from(text.len()).unwrap_or(u64::MAX);
    match first_line.checked_add(len) {
        Some(last) if i64::try_from(last).is_ok() => Ok(()),
        _ => Err(IngestError::InvalidPayload(format!(
            "first line number {first_line} is out of range: the line numbers of this input would not fit a 64-bit signed integer"
        ))),
    }
}

/// Why a scan stopped short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Eof,
    Expected(&'static str),
    LineBreakInString,
    ControlInString,
    BadEscape,
    LoneSurrogate,
    BadNumber,
    BadLiteral,
    TooDeep,
}

impl Why {
    fn text(self) -> String {
        match self {
            Why::Eof => "the input ends inside the value".into(),
            Why::Expected(what) => format!("expected {what}"),
            Why::LineBreakInString => {
                "a line break inside a string (an unterminated string?)".into()
            }
            Why::ControlInString => "a control character inside a string".into(),
            Why::BadEscape => "an invalid escape sequence in a string".into(),
            Why::LoneSurrogate => "an unpaired UTF-16 surrogate in a \\u escape".into(),
            Why::BadNumber => "an invalid number".into(),
            Why::BadLiteral => "an invalid literal (true, false or null expected)".into(),
            Why::TooDeep => format!("nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Where (byte offset) and why a token is broken.
type Fail = (usize, Why);

/// A value that started first on its line inside a scanned value, and closed.
#[derive(Debug, Clone, Copy)]
struct Inner {
    start: usize,
    end: usize,
    line: u64,
}

/// Where and why a value is broken.
#[derive(Debug, Clone, Copy)]
struct Fault {
    why: Why,
    /// Byte offset (the body's length when it ends inside the value).
    at: usize,
    line: u64,
    /// In bytes, from 1.
    column: usize,
}

/// How a scan ended.
#[derive(Debug)]
enum Outcome {
    /// The value is complete and ends before `end`.
    Complete { end: usize },
    /// The value is broken.
    Broken(Fault),
}

/// What a scan found.
#[derive(Debug)]
struct Scan {
    outcome: Outcome,
    /// Bytes the scan visited.
    visited: usize,
}

/// An open container of a scan.
#[derive(Debug)]
struct Frame {
    obj: bool,
    /// Start, line and `inner.len()` of a container that is first on its line.
    mark: Option<(usize, u64, usize)>,
}

/// Checks the JSON value starting at `pos` (a `{` or `[` on line `line`, which starts at
/// byte `line_start`), reading no further than its end or its first error. Gives in `inner`
/// the outermost values that started first on a line inside it (not on its first line) and
/// closed before the scan ended, in order; `stack` is scratch space.
fn scan(
    b: &[u8],
    pos: usize,
    line: u64,
    line_start: usize,
    stack: &mut Vec<Frame>,
    inner: &mut Vec<Inner>,
) -> Scan {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Want {
        Value,
        ValueOrEnd,
        KeyOrEnd,
        Key,
        Colon,
        CommaOrEnd,
    }
    stack.clear();
    inner.clear();
    let mut want = Want::Value;
    let mut i = pos;
    let mut line = line;
    let mut line_start = line_start;
    let mut fresh_line = false;
    let (at, why) = loop {
        while let Some(&c) = b.get(i) {
            match c {
                b'\n' => {
                    line = line.saturating_add(1);
                    line_start = i + 1;
                    fresh_line = true;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => break,
            }
            i += 1;
        }
        let Some(&c) = b.get(i) else {
            break (i, Why::Eof);
        };
        let first_on_line = std::mem::take(&mut fresh_line);
        let mut close = false;
        match want {
            Want::CommaOrEnd => {
                let obj = stack.last().is_some_and(|f| f.obj);
                match c {
                    b',' => {
                        want = if obj { Want::Key } else { Want::Value };
                        i += 1;
                    }
                    b'}' if obj => close = true,
                    b']' if !obj => close = true,
                    _ if obj => break (i, Why::Expected("',' or '}'")),
                    _ => break (i, Why::Expected("',' or ']'")),
                }
            }
            Want::Colon => {
                if c != b':' {
                    break (i, Why::Expected("':'"));
                }
                want = Want::Value;
                i += 1;
            }
            Want::KeyOrEnd | Want::Key => match c {
                b'}' if want == Want::KeyOrEnd => close = true,
                b'"' => match string(b, i) {
                    Ok(next) => {
                        i = next;
                        want = Want::Colon;
                    }
                    Err(f) => break f,
                },
                _ if want == Want::KeyOrEnd => break (i, Why::Expected("a string key or '}'")),
                _ => break (i, Why::Expected("a string key")),
            },
            Want::Value | Want::ValueOrEnd => match c {
                b']' if want == Want::ValueOrEnd => close = true,
                b'{' | b'[' => {
                    if stack.len() >= MAX_DEPTH {
                        break (i, Why::TooDeep);
                    }
                    let mark = first_on_line.then_some((i, line, inner.len()));
                    stack.push(Frame {
                        obj: c == b'{',
                        mark,
                    });
                    want = if c == b'{' {
                        Want::KeyOrEnd
                    } else {
                        Want::ValueOrEnd
                    };
                    i += 1;
                }
                _ => {
                    let end = match c {
                        b'"' => string(b, i),
                        b'-' | b'0'..=b'9' => number(b, i),
                        b't' => literal(b, i, b"true"),
                        b'f' => literal(b, i, b"false"),
                        b'n' => literal(b, i, b"null"),
                        _ => Err((i, Why::Expected("a value"))),
                    };
                    match end {
                        Ok(next) => {
                            i = next;
                            want = Want::CommaOrEnd;
                        }
                        Err(f) => break f,
                    }
                }
            },
        }
        if close {
            i += 1;
            if let Some(Frame {
                mark: Some((start, l, keep)),
                ..
            }) = stack.pop()
            {
                // Values inside this one are part of it.
                inner.truncate(keep);
                inner.push(Inner {
                    start,
                    end: i,
                    line: l,
                });
            }
            if stack.is_empty() {
                return Scan {
                    outcome: Outcome::Complete { end: i },
                    visited: i.saturating_sub(pos),
                };
            }
            want = Want::CommaOrEnd;
        }
    };
    let at = if why == Why::Eof { b.len() } else { at };
    Scan {
        outcome: Outcome::Broken(Fault {
            why,
            at,
            line,
            column: at.saturating_sub(line_start).saturating_add(1),
        }),
        visited: at.saturating_sub(pos).saturating_add(1),
    }
}

/// The end of the string starting at `i` (a `"`).
fn string(b: &[u8], i: usize) -> Result<usize, Fail> {
    let mut i = i + 1;
    loop {
        let Some(&c) = b.get(i) else {
            return Err((i, Why::Eof));
        };
        match c {
            b'"' => return Ok(i + 1),
            b'\\' => i = escape(b, i)?,
            b'\n' | b'\r' => return Err((i, Why::LineBreakInString)),
            c if c < 0x20 => return Err((i, Why::ControlInString)),
            _ => i += 1,
        }
    }
}

/// The end of the escape sequence starting at `i` (a `\`), as strictly as serde_json reads
/// it into a string (surrogates paired).
fn escape(b: &[u8], i: usize) -> Result<usize, Fail> {
    let Some(&c) = b.get(i + 1) else {
        return Err((i + 1, Why::Eof));
    };
    match c {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 2),
        b'u' => {
            let n = hex4(b, i + 2)?;
            if (0xDC00..=0xDFFF).contains(&n) {
                return Err((i, Why::LoneSurrogate));
            }
            if !(0xD800..=0xDBFF).contains(&n) {
                return Ok(i + 6);
            }
            let j = i + 6;
            match (b.get(j), b.get(j + 1)) {
                (None, _) | (Some(b'\\'), None) => Err((j, Why::Eof)),
                (Some(b'\\'), Some(b'u')) => {
                    let low = hex4(b, j + 2)?;
                    if (0xDC00..=0xDFFF).contains(&low) {
                        Ok(j + 6)
                    } else {
                        Err((j, Why::LoneSurrogate))
                    }
                }
                _ => Err((j, Why::LoneSurrogate)),
            }
        }
        _ => Err((i + 1, Why::BadEscape)),
    }
}

/// Four hex digits at `at`.
fn hex4(b: &[u8], at: usize) -> Result<u32, Fail> {
    let mut n = 0u32;
    for j in at..at + 4 {
        let Some(&c) = b.get(j) else {
            return Err((j, Why::Eof));
        };
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err((j, Why::BadEscape)),
        };
        n = (n << 4) | u32::from(d);
    }
    Ok(n)
}

/// The end of the number starting at `i`.
fn number(b: &[u8], i: usize) -> Result<usize, Fail> {
    let mut i = i;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i)?,
        Some(_) => return Err((i, Why::BadNumber)),
        None => return Err((i, Why::Eof)),
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Ok(i)
}

/// The end of one or more digits starting at `i`.
fn digits(b: &[u8], i: usize) -> Result<usize, Fail> {
    match b.get(i) {
        Some(b'0'..=b'9') => {}
        Some(_) => return Err((i, Why::BadNumber)),
        None => return Err((i, Why::Eof)),
    }
    let mut i = i;
    while matches!(b.get(i), Some(b'0'..=b'9')) {
        i += 1;
    }
    Ok(i)
}

/// The end of `word` at `i`.
fn literal(b: &[u8], i: usize, word: &[u8]) -> Result<usize, Fail> {
    for (k, w) in word.iter().enumerate() {
        match b.get(i + k) {
            Some(c) if c == w => {}
            Some(_) => return Err((i + k, Why::BadLiteral)),
            None => return Err((i + k, Why::Eof)),
        }
    }
    Ok(i + word.len())
}

/// The reason of a broken region whose first error is `e`.
fn describe(e: Fault) -> String {
    let Fault {
        why,
        at,
        line,
        column,
    } = e;
    if why == Why::Eof {
        format!(
            "incomplete JSON record at the end of the input (a partial last line?): the input ends at line {line} (byte offset {at})"
        )
    } else {
        format!(
            "invalid JSON: {} at line {line} column {column} (byte offset {at})",
            why.text()
        )
    }
}

/// The reason of a complete value (bytes `start..end`, from line `line`) serde_json refused.
fn serde_reason(e: &serde_json::Error, line: u64, start: usize, end: usize) -> String {
    let full = e.to_string();
    let msg = full.split(" at line ").next().unwrap_or(full.as_str());
    let rel = u64::try_from(e.line()).unwrap_or(1).saturating_sub(1);
    format!(
        "invalid JSON: {msg} at line {} (in the value at byte offsets {start}-{end})",
        line.saturating_add(rel)
    )
}

/// A broken region being gathered.
#[derive(Debug)]
struct Broken<'a> {
    line: u64,
    last_line: u64,
    start: usize,
    end: usize,
    text: &'a str,
    why: String,
}

/// Where to go on: byte offset, its line number, and the offset where that line starts.
type Resume = (usize, u64, usize);

#[derive(Debug)]
struct Splitter<'a> {
    text: &'a str,
    b: &'a [u8],
    out: Vec<Piece<'a>>,
    bad: Option<Broken<'a>>,
    work: u64,
    /// Scratch space of the scans, kept between them.
    stack: Vec<Frame>,
    inner: Vec<Inner>,
}

impl<'a> Splitter<'a> {
    fn count(&mut self, n: usize) {
        self.work = self
            .work
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.text.get(from..to).unwrap_or_default()
    }

    /// The end of the line `from` is on: the offset of its `\n`, or the body's length.
    fn line_end(&mut self, from: usize) -> usize {
        let end = self
            .b
            .get(from..)
            .and_then(|r| r.iter().position(|&c| c == b'\n'))
            .map_or(self.b.len(), |n| from + n);
        self.count(end.saturating_sub(from));
        end
    }

    /// Line breaks in `from..to`, and the offset of the last one.
    fn newlines(&mut self, from: usize, to: usize) -> (u64, Option<usize>) {
        let mut n = 0u64;
        let mut last = None;
        for (k, &c) in self.b.get(from..to).unwrap_or_default().iter().enumerate() {
            if c == b'\n' {
                n = n.saturating_add(1);
                last = Some(from + k);
            }
        }
        self.count(to.saturating_sub(from));
        (n, last)
    }

    /// The line starting at `start`, at most [`MAX_BAD_TEXT`] bytes of it.
    fn first_line(&mut self, start: usize) -> &'a str {
        let limit = start.saturating_add(MAX_BAD_TEXT).min(self.b.len());
        let mut end = self
            .b
            .get(start..limit)
            .and_then(|r| r.iter().position(|&c| c == b'\n'))
            .map_or(limit, |n| start + n);
        self.count(end.saturating_sub(start));
        while end > start && !self.text.is_char_boundary(end) {
            end -= 1;
        }
        self.slice(start, end).trim_end_matches('\r')
    }

    fn flush(&mut self) {
        if let Some(bad) = self.bad.take() {
            let reason = if bad.last_line > bad.line {
                format!(
                    "{}; lines {}-{} (byte offsets {}-{}) skipped",
                    bad.why, bad.line, bad.last_line, bad.start, bad.end
                )
            } else {
                bad.why
            };
            self.out.push(Piece::Bad {
                line: bad.line,
                text: bad.text,
                reason,
            });
        }
    }

    fn emit(&mut self, p: Piece<'a>) {
        self.flush();
        self.out.push(p);
    }

    /// Adds bytes `start..end`, on lines `line..=last_line`, to the broken region; `why`
    /// gives the reason when they start a new one.
    fn broken(
        &mut self,
        start: usize,
        end: usize,
        line: u64,
        last_line: u64,
        why: impl FnOnce() -> String,
    ) {
        if let Some(bad) = &mut self.bad {
            bad.end = bad.end.max(end);
            bad.last_line = bad.last_line.max(last_line);
            return;
        }
        let text = self.first_line(start);
        self.bad = Some(Broken {
            line,
            last_line,
            start,
            end,
            text,
            why: why(),
        });
    }

    fn run(&mut self, first_line: u64) {
        let b = self.b;
        let mut pos = 0;
        let mut line = first_line;
        let mut line_start = 0;
        while let Some(&c) = b.get(pos) {
            match c {
                b'\n' => {
                    line = line.saturating_add(1);
                    pos += 1;
                    line_start = pos;
                    self.count(1);
                }
                b' ' | b'\t' | b'\r' => {
                    pos += 1;
                    self.count(1);
                }
                0xEF if b
                    .get(pos..)
                    .is_some_and(|r| r.starts_with(&[0xEF, 0xBB, 0xBF])) =>
                {
                    pos += 3;
                    self.count(3);
                }
                b'{' | b'[' => {
                    (pos, line, line_start) = self.value(pos, line, line_start);
                }
                _ => {
                    let end = self.line_end(pos);
                    let text = self.slice(pos, end).trim_end_matches('\r');
                    let closers = text
                        .bytes()
                        .all(|c| matches!(c, b']' | b'}' | b',' | b' ' | b'\t'));
                    if closers {
                        // Closing brackets outside any value (the end of a broken one).
                        let column = pos.saturating_sub(line_start).saturating_add(1);
                        self.broken(pos, end, line, line, || {
                            format!(
                                "invalid JSON: a closing bracket or separator outside any value at line {line} column {column} (byte offset {pos})"
                            )
                        });
                    } else {
                        self.emit(Piece::Text { line, text });
                    }
                    pos = end;
                }
            }
        }
    }

    /// Handles the value starting at `pos` (a `{` or `[` on line `line`, which starts at
    /// byte `line_start`).
    fn value(&mut self, pos: usize, line: u64, line_start: usize) -> Resume {
        let b = self.b;
        let opener = b.get(pos).copied();
        let mut stack = std::mem::take(&mut self.stack);
        let mut inner = std::mem::take(&mut self.inner);
        let scan = scan(b, pos, line, line_start, &mut stack, &mut inner);
        self.stack = stack;
        self.count(scan.visited);
        let resume = match scan.outcome {
            Outcome::Complete { end } => {
                let raw = self.slice(pos, end);
                self.count(raw.len());
                let (nl, last) = self.newlines(pos, end);
                let last_line = line.saturating_add(nl);
                match serde_json::from_str::<Value>(raw) {
                    Ok(value) => self.emit(Piece::Json { line, value, raw }),
                    Err(e) => {
                        let why = serde_reason(&e, line, pos, end);
                        self.broken(pos, end, line, last_line, || why);
                    }
                }
                (end, last_line, last.map_or(line_start, |n| n + 1))
            }
            Outcome::Broken(err) => {
                let root_end = self.line_end(pos);
                if opener == Some(b'[') && err.at <= root_end && err.why != Why::TooDeep {
                    // `[Info] …`, `[11-05 09:14:03] …`: a text line, not a broken array.
                    let text = self.slice(pos, root_end).trim_end_matches('\r');
                    self.emit(Piece::Text { line, text });
                    (root_end, line, line_start)
                } else {
                    self.region(pos, line, line_start, root_end, err, &inner)
                }
            }
        };
        self.inner = inner;
        resume
    }

    /// Handles a broken value that started at `root` (on line `line`, which starts at byte
    /// `line_start` and ends at `root_end`) and broke as `err` says: the values first on
    /// their lines inside it that closed (`inner`) are kept, the rest joins the broken
    /// region.
    fn region(
        &mut self,
        root: usize,
        line: u64,
        line_start: usize,
        root_end: usize,
        err: Fault,
        inner: &[Inner],
    ) -> Resume {
        let b = self.b;
        let at = err.at;
        self.broken(root, root_end, line, line, || describe(err));
        let mut p = root_end;
        let mut line = line;
        let mut line_start = line_start;
        let mut k = 0;
        loop {
            while let Some(&c) = b.get(p) {
                match c {
                    b'\n' => {
                        line = line.saturating_add(1);
                        line_start = p + 1;
                    }
                    b' ' | b'\t' | b'\r' => {}
                    _ => break,
                }
                p += 1;
                self.count(1);
            }
            if p >= at || p >= b.len() {
                return (p, line, line_start);
            }
            while inner.get(k).is_some_and(|v| v.start < p) {
                k += 1;
            }
            if let Some(v) = inner.get(k).copied()
                && v.start == p
            {
                k += 1;
                let raw = self.slice(v.start, v.end);
                self.count(raw.len());
                let (nl, last) = self.newlines(v.start, v.end);
                line = v.line.saturating_add(nl);
                if let Some(n) = last {
                    line_start = n + 1;
                }
                match serde_json::from_str::<Value>(raw) {
                    Ok(value) => self.emit(Piece::Json {
                        line: v.line,
                        value,
                        raw,
                    }),
                    Err(e) => {
                        let w = serde_reason(&e, v.line, v.start, v.end);
                        self.broken(v.start, v.end, v.line, line, || w);
                    }
                }
                // A separator may follow; then the line ends, or the error is there.
                let mut q = v.end;
                while matches!(b.get(q), Some(b' ' | b'\t' | b'\r')) {
                    q += 1;
                }
                if b.get(q) == Some(&b',') {
                    q += 1;
                    while matches!(b.get(q), Some(b' ' | b'\t' | b'\r')) {
                        q += 1;
                    }
                }
                self.count(q.saturating_sub(v.end));
                p = q;
                if q >= at || matches!(b.get(q), None | Some(b'\n')) {
                    continue;
                }
                let end = self.line_end(q);
                self.broken(q, end, line, line, || describe(err));
                p = end;
                continue;
            }
            // A line inside the broken value.
            let end = self.line_end(p);
            if b.get(p) == Some(&b'[') && at <= end && err.why != Why::TooDeep {
                // It breaks on its own line: `[Info] …` after a broken line.
                let text = self.slice(p, end).trim_end_matches('\r');
                self.emit(Piece::Text { line, text });
            } else {
                self.broken(p, end, line, line, || describe(err));
            }
            p = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &[Piece<'_>]) -> Vec<(u64, &'static str)> {
        p.iter()
            .map(|p| match p {
                Piece::Json { line, .. } => (*line, "json"),
                Piece::Text { line, .. } => (*line, "text"),
                Piece::Bad { line, .. } => (*line, "bad"),
            })
            .collect()
    }

    fn reasons(p: &[Piece<'_>]) -> Vec<String> {
        p.iter()
            .filter_map(|p| match p {
                Piece::Bad { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    /// Work stays within a small constant times the body's size.
    fn linear(s: &Split<'_>, len: usize) {
        let len = len as u64;
        assert!(
            s.work <= 4 * len + 16,
            "work {} for {len} bytes: not linear",
            s.work
        );
    }

    #[test]
    fn lines_documents_text_and_garbage() {
        let body = "{\"a\":1}\n{\"b\":\n  2}\nnot json\n{\"c\": oops}\n[1,2]\n{\"d\":";
        let s = split(body, 1);
        assert_eq!(
            kinds(&s.pieces),
            vec![
                (1, "json"),
                (2, "json"),
                (4, "text"),
                (5, "bad"),
                (6, "json"),
                (7, "bad")
            ]
        );
        let r = reasons(&s.pieces);
        assert!(
            r[0].contains("expected a value at line 5 column 7 (byte offset 34)"),
            "{r:?}"
        );
        assert!(r[1].contains("partial last line"), "{r:?}");
        linear(&s, body.len());
    }

    #[test]
    fn concatenated_documents_and_bracketed_text() {
        let body = "{\"a\":1}{\"b\":2} [3]\n[Info] 2024 [GatewayLogs], x: 1\n[11-05 09:14:03] INFO x\n\u{feff}{\"c\":3}";
        let s = split(body, 10);
        assert_eq!(
            kinds(&s.pieces),
            vec![
                (10, "json"),
                (10, "json"),
                (10, "json"),
                (11, "text"),
                (12, "text"),
                (13, "json")
            ]
        );
    }

    /// A truncated records document keeps its complete records; a truncated line keeps the
    /// lines after it.
    #[test]
    fn broken_values_keep_what_closed_inside_them() {
        let body = "{\"records\": [\n  {\"a\": 1},\n  {\"a\": 2},\n  {\"a\": 3";
        let s = split(body, 1);
        assert_eq!(
            kinds(&s.pieces),
            vec![(1, "bad"), (2, "json"), (3, "json"), (4, "bad")]
        );
        let body = "{\"a\":1,\"b\":\n{\"a\":2}\n{\"a\":3}\n[Info] text\n";
        let s = split(body, 1);
        assert_eq!(
            kinds(&s.pieces),
            vec![(1, "bad"), (2, "json"), (3, "json"), (4, "text")]
        );
        // A broken line followed by a bracketed text line.
        let s = split("{\"a\":\n[Info] x\n{\"b\":1}", 1);
        assert_eq!(kinds(&s.pieces), vec![(1, "bad"), (2, "text"), (3, "json")]);
        // Strings are checked as serde_json reads them.
        for bad in [
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"tab\there\"}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":tru}",
            "{\"a\":1,}",
            "{\"a\":[1 2]}",
        ] {
            let s = split(bad, 1);
            assert!(
                matches!(s.pieces.as_slice(), [Piece::Bad { .. }]),
                "{bad}: {:?}",
                s.pieces
            );
        }
        for good in [
            "{\"a\":\"\\ud83d\\ude00 \\u00e9\"}",
            "[-0.5e+3, true, null, {}]",
        ] {
            let s = split(good, 1);
            assert!(
                matches!(s.pieces.as_slice(), [Piece::Json { .. }]),
                "{good}: {:?}",
                s.pieces
            );
        }
        // Too large a number for serde_json: one broken value, skipped once (or a number,
        // should serde_json ever keep arbitrary precision).
        let s = split("{\"a\":1e999}\n{\"b\":1}", 1);
        assert_eq!(s.pieces.len(), 2);
        assert_eq!(kinds(&s.pieces)[1], (2, "json"));
        // Stray closing brackets are broken, not text.
        let s = split("{\"a\":1}\n]\n}, ]\n{\"b\":1},\n", 1);
        assert_eq!(
            kinds(&s.pieces),
            vec![(1, "json"), (2, "bad"), (4, "json"), (4, "bad")]
        );
    }

    /// The bodies of the review: one valid record, then lines of `[` and spaces (each line
    /// used to restart a parse that read 128 levels ahead); deep nesting on one line and on
    /// many; a million lines of `{`; a 50 MB unterminated string. Each is one broken region,
    /// the valid records around it are kept, and the work is linear in the size.
    #[test]
    fn pathological_bodies_cost_linear_work() {
        let record = "{\"category\":\"GatewayLogs\",\"correlationId\":\"x\"}";

        let mut body = format!("{record}\n");
        for _ in 0..200_000 {
            body.push_str("[     \n");
        }
        body.push_str(record);
        body.push('\n');
        for _ in 0..1000 {
            body.push_str("[  [  \n");
        }
        let s = split(&body, 1);
        assert_eq!(
            kinds(&s.pieces),
            vec![(1, "json"), (2, "bad"), (200_002, "json"), (200_003, "bad")]
        );
        let r = reasons(&s.pieces);
        assert!(r[0].contains("nested deeper than 127 levels"), "{r:?}");
        assert!(r[0].contains("lines 2-200001"), "{r:?}");
        assert!(r[1].contains("nested deeper than 127 levels"), "{r:?}");
        assert!(r[1].contains("lines 200003-201002"), "{r:?}");
        linear(&s, body.len());

        for body in [
            "[".repeat(1_000_000),
            "{".repeat(1_000_000),
            format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000)),
            format!("{record}\n{}{record}\n", "[\n".repeat(1_000_000)),
            format!(
                "{record}\n{}{}{record}\n",
                "[\n".repeat(500_000),
                "]\n".repeat(500_000)
            ),
            format!("{record}\n{}{record}\n", "{\n".repeat(1_000_000)),
        ] {
            let s = split(&body, 1);
            let bad = s
                .pieces
                .iter()
                .filter(|p| !matches!(p, Piece::Json { .. }))
                .count();
            let kept = s
                .pieces
                .iter()
                .filter(|p| matches!(p, Piece::Json { raw, .. } if *raw == record))
                .count();
            // One broken region (two when a valid nest of empty arrays ends the `[` lines).
            assert!((1..=2).contains(&bad), "{:?}", kinds(&s.pieces));
            assert_eq!(kept, body.matches(record).count(), "{:?}", kinds(&s.pieces));
            linear(&s, body.len());
        }

        let mut body = format!("{record}\n{{\"a\":\"");
        body.push_str(&"x".repeat(50 << 20));
        let s = split(&body, 1);
        assert_eq!(kinds(&s.pieces), vec![(1, "json"), (2, "bad")]);
        let Piece::Bad { text, reason, .. } = &s.pieces[1] else {
            panic!("{:?}", kinds(&s.pieces))
        };
        assert!(reason.contains("partial last line"), "{reason}");
        assert_eq!(text.len(), MAX_BAD_TEXT);
        linear(&s, body.len());
    }
}
