//! `seam ingest`: sends gateway and flow log files to a running seam.
//!
//! Takes files, directories (walked recursively, in name order) and globs; gives, per file,
//! what the server accepted, rejected and recognised as duplicates. Each file's format is
//! detected from its first records (`--format` forces one; the endpoint, `/ingest/apim` or
//! `/ingest/mule`, follows from it). Large files are sent in bounded chunks (`--chunk-bytes`)
//! cut only at record boundaries: before a line that starts a record in line formats (a log4j
//! header for Mule text, so multi-line events stay whole), and between the elements of the
//! record array of a single JSON document (`{"records":[…]}`, Log Analytics `rows`, CloudHub
//! arrays), each chunk re-wrapped in the document's own prefix. Each chunk carries its file
//! name, first line and first record index, so refusals name file:line. A chunk is answered
//! only once its records are durable; a retryable refusal (503) is retried with backoff.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal as _, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use seam_collector::sources::logs::{AccessSource, sniff};
use serde::Deserialize;

/// What `seam ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the ingest listener, e.g. `http://127.0.0.1:4318`.
    pub to: String,
    /// A forced format (also decides the endpoint).
    pub format: Option<String>,
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
    /// Why the file as a whole was not ingested.
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
}

/// The kind of lines that may start a chunk.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Before a log4j event header.
    MuleHeader,
    /// Before any line that does not continue a JSON value (no indentation, no closer).
    Record,
}

fn starts_record(line: &str, cut: Cut) -> bool {
    match cut {
        Cut::MuleHeader => seam_collector::sources::mule::decode::is_header(line),
        Cut::Record => {
            let t = line.trim_end();
            !t.is_empty() && !t.starts_with([' ', '\t', '}', ']', ',']) && !t.starts_with('"')
        }
    }
}

/// Splits a line-oriented file into chunks of at most `max` bytes, cut before record starts.
fn line_chunks(
    reader: impl BufRead,
    cut: Cut,
    max: usize,
    mut send: impl FnMut(Chunk) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut body = String::new();
    let mut first_line = 1u64;
    let mut n = 0u64;
    for line in reader.split(b'\n') {
        let line = line.context("reading the file")?;
        n += 1;
        let line = String::from_utf8_lossy(&line).into_owned();
        if body.len() + line.len() + 1 > max && !body.is_empty() && starts_record(&line, cut) {
            send(Chunk {
                body: std::mem::take(&mut body),
                first_line,
                first_index: 0,
            })?;
            first_line = n;
        }
        body.push_str(&line);
        body.push('\n');
    }
    if !body.trim().is_empty() {
        send(Chunk {
            body,
            first_line,
            first_index: 0,
        })?;
    }
    Ok(())
}

#[derive(Debug)]
enum Frame {
    Obj {
        key: Option<String>,
        expect_key: bool,
    },
    Arr,
}

/// A streaming splitter of single JSON documents: finds the record array (the root array,
/// root `records` or `data`, or `tables[i].rows`), then yields its elements in groups.
#[derive(Debug, Default)]
struct DocSplitter {
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
    done: bool,
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
        match self.stack.as_slice() {
            [] => true,
            [Frame::Obj { .. }] => keys[0].is_some_and(|k| {
                k.eq_ignore_ascii_case("records") || k.eq_ignore_ascii_case("data")
            }),
            [Frame::Obj { .. }, Frame::Arr, Frame::Obj { .. }] => {
                keys[0].is_some_and(|k| k.eq_ignore_ascii_case("tables"))
                    && keys[2].is_some_and(|k| k.eq_ignore_ascii_case("rows"))
            }
            _ => false,
        }
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

    /// Feeds bytes; completed elements go to `out`. Returns false when the text before the
    /// record array shows it is not a splittable document.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) -> bool {
        for &b in bytes {
            if self.done {
                return true;
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
                    if self.array_depth.is_none() && self.path_is_records() {
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
                        return true;
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
            Some(_) => self.elem.push(b),
        }
    }

    fn flush_elem(&mut self, out: &mut Vec<Vec<u8>>) {
        let e = std::mem::take(&mut self.elem);
        if e.iter().any(|b| !b.is_ascii_whitespace()) {
            out.push(e);
        }
    }
}

/// Splits a single-document file into chunks; `Ok(false)` when it is not one.
fn doc_chunks(
    path: &Path,
    max: usize,
    mut send: impl FnMut(Chunk) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut s = DocSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut elems: Vec<Vec<u8>> = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut index = 0u64;
    let mut first_index = 0u64;
    let mut prefix_line = 1u64;
    loop {
        let n = f.read(&mut buf).context("reading the file")?;
        if n == 0 {
            break;
        }
        if !s.feed(&buf[..n], &mut elems) {
            return Ok(false);
        }
        if s.array_depth.is_none() && s.prefix.len() > max {
            return Ok(false);
        }
        prefix_line = 1 + s.prefix.iter().filter(|b| **b == b'\n').count() as u64;
        for e in elems.drain(..) {
            if pending_bytes + e.len() > max && !pending.is_empty() {
                send(wrap(&s, &pending, prefix_line, first_index))?;
                first_index = index;
                pending.clear();
                pending_bytes = 0;
            }
            pending_bytes += e.len() + 1;
            pending.push(e);
            index += 1;
        }
        if s.done {
            break;
        }
    }
    if s.array_depth.is_none() {
        return Ok(false);
    }
    if !pending.is_empty() || index == 0 {
        send(wrap(&s, &pending, prefix_line, first_index))?;
    }
    Ok(true)
}

fn wrap(s: &DocSplitter, elems: &[Vec<u8>], line: u64, first_index: u64) -> Chunk {
    let mut body = String::from_utf8_lossy(&s.prefix).into_owned();
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&String::from_utf8_lossy(e));
    }
    body.push_str(&s.closers());
    Chunk {
        body,
        first_line: line,
        first_index,
    }
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
/// The server cannot be reached, or answers with something other than a refusal of the
/// file's content.
pub async fn run(files: &[PathBuf], opts: &Options) -> anyhow::Result<Vec<FileSummary>> {
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
        let mut head = vec![0u8; 64 * 1024];
        let n = File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .with_context(|| format!("cannot read {}", path.display()))?;
        head.truncate(n);
        let head_text = String::from_utf8_lossy(&head);
        // OTLP/JSON export files go to the OTLP/HTTP receiver as they are.
        let otlp = if forced_source.is_none() {
            let t = head_text.trim_start();
            if !t.starts_with('{') {
                None
            } else if t.contains("\"resourceSpans\"") {
                Some("/v1/traces")
            } else if t.contains("\"resourceLogs\"") {
                Some("/v1/logs")
            } else {
                None
            }
        } else {
            None
        };
        if let Some(endpoint) = otlp {
            let body =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let len = body.len() as u64;
            match send_otlp(&client, opts, endpoint, body).await? {
                Ok(n) => summary.accepted += n,
                Err(msg) => summary.error = Some(msg),
            }
            if let Some(b) = &bar {
                b.inc(len);
            }
            out.push(summary);
            continue;
        }
        let source = match forced_source.or_else(|| sniff(&head_text)) {
            Some(s) => s,
            None => {
                summary.error = Some(format!(
                    "unknown format: not a gateway or flow log shape seam knows; known formats: {}",
                    known_formats()
                ));
                out.push(summary);
                continue;
            }
        };
        let file_name = path.display().to_string();
        let mut chunks = Vec::new();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) as usize;
        let first = head_text.trim_start_matches('\u{feff}').trim_start();
        let is_json = first.starts_with(['{', '['])
            && !seam_collector::sources::mule::decode::is_header(
                first.lines().next().unwrap_or(""),
            );
        if size <= opts.chunk_bytes {
            let mut body = String::new();
            File::open(path)
                .and_then(|mut f| {
                    let mut bytes = Vec::new();
                    f.read_to_end(&mut bytes)?;
                    body = String::from_utf8_lossy(&bytes).into_owned();
                    Ok(())
                })
                .with_context(|| format!("cannot read {}", path.display()))?;
            chunks.push(Chunk {
                body,
                first_line: 1,
                first_index: 0,
            });
        } else {
            let document = is_json
                && doc_chunks(path, opts.chunk_bytes, |c| {
                    chunks.push(c);
                    Ok(())
                })?;
            if !document {
                chunks.clear();
                let cut = if source == AccessSource::Mule && !is_json {
                    Cut::MuleHeader
                } else {
                    Cut::Record
                };
                let f =
                    File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                line_chunks(BufReader::new(f), cut, opts.chunk_bytes, |c| {
                    chunks.push(c);
                    Ok(())
                })?;
            }
        }
        for c in chunks {
            let len = c.body.len() as u64;
            match send(&client, opts, source, &file_name, c).await? {
                Ok(a) => {
                    summary.accepted += a.accepted;
                    summary.rejected += a.rejected;
                    summary.duplicates += a.duplicates;
                    let room = 100usize.saturating_sub(summary.refusals.len());
                    summary.refusals.extend(a.refusals.into_iter().take(room));
                }
                Err(msg) => {
                    summary.error = Some(msg);
                    break;
                }
            }
            if let Some(b) = &bar {
                b.inc(len);
            }
        }
        out.push(summary);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
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
            ("timezone", &opts.timezone),
            ("gateway", &opts.gateway),
            ("service", &opts.service),
            ("app", &opts.app),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let mut delay = Duration::from_millis(200);
    for attempt in 0.. {
        let resp = client
            .post(url.clone())
            .header("content-type", "text/plain; charset=utf-8")
            .body(c.body.clone())
            .send()
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

    #[test]
    fn documents_split_at_records_and_rewrap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("doc.json");
        let doc = r#"{"tables":[{"name":"PrimaryResult","columns":[{"name":"a","type":"string"}],"rows":[["x,]}"],["y"],["z"]]}]}"#;
        std::fs::write(&p, doc).unwrap();
        let mut chunks = Vec::new();
        assert!(
            doc_chunks(&p, 10, |c| {
                chunks.push(c);
                Ok(())
            })
            .unwrap()
        );
        assert_eq!(chunks.len(), 3);
        for c in &chunks {
            let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
            assert_eq!(v["tables"][0]["rows"].as_array().unwrap().len(), 1);
        }
        assert_eq!(chunks[2].first_index, 2);
        let p2 = dir.path().join("lines.jsonl");
        std::fs::write(&p2, "{\"a\":1}\n{\"b\":2}\n").unwrap();
        assert!(!doc_chunks(&p2, 4, |_| Ok(())).unwrap());
    }

    #[test]
    fn mule_text_is_cut_before_headers_only() {
        let text = "INFO  2024-11-05 09:10:02,611 [t] [processor: ; event: ] a.B: \n****\nx\n****\nINFO  2024-11-05 09:10:03,611 [t] [processor: ; event: ] a.B: y\n";
        let mut chunks = Vec::new();
        line_chunks(text.as_bytes(), Cut::MuleHeader, 10, |c| {
            chunks.push(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].first_line, 5);
        assert!(chunks[0].body.ends_with("****\n"));
    }
}
