//! Fuzz targets for every parser that reads untrusted input, and a small mutation fuzzer
//! that runs them on the stable toolchain.
//!
//! Takes bytes; gives each target's outcome as a short signature (`ok:<rows>`, `err:<kind>`),
//! which the fuzzer uses to keep inputs that lead somewhere new. A target must never panic:
//! any panic is a bug. Targets: OTLP/JSON and OTLP/protobuf decode and normalise (traces and
//! logs, to Arrow batches), the APIM decoder and row builder (every export shape), the Mule
//! decoder and row builder (log4j lines, JSON Logger), JWT claim reading and the secret
//! redactor.
//!
//! Why not cargo-fuzz: it needs a nightly toolchain for its sanitizer instrumentation, and
//! seam builds on stable only. The fuzzer here ([`mutate`], [`run`]) has no coverage
//! feedback; it keeps inputs whose outcome signature is new, mutates with byte-level and
//! dictionary operations, and starts from committed corpora of real samples. The targets
//! are plain `fn(&[u8])`, so a libFuzzer harness could call them unchanged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use seam_collector::decode::{self, Encoding};
use seam_collector::normalise::json::InputMeta;
use seam_collector::normalise::token::{TokenConfig, parse_keys, read_claims};
use seam_collector::normalise::{self, Normaliser};
use seam_collector::sources::apim::decode::{self as apim, ApimItem, Pos};
use seam_collector::sources::apim::normalise::{Ctx, Record, event_row, gateway_row};
use seam_collector::sources::mule::decode::{self as mule, MuleItem};
use seam_collector::sources::mule::normalise::{TrafficRules, flow_row};
use seam_schemas::tables;
use seam_store::rows::{Columns, batch};

/// One fuzz target: its name and the function under test.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name used on the command line and as the corpus directory.
    pub name: &'static str,
    /// Runs the input through the code under test; gives an outcome signature.
    pub run: fn(&[u8]) -> String,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "otlp_json_traces",
        run: otlp_json_traces,
    },
    Target {
        name: "otlp_json_logs",
        run: otlp_json_logs,
    },
    Target {
        name: "otlp_proto_traces",
        run: otlp_proto_traces,
    },
    Target {
        name: "apim",
        run: apim_records,
    },
    Target {
        name: "mule",
        run: mule_records,
    },
    Target {
        name: "jwt_claims",
        run: jwt_claims,
    },
    Target {
        name: "redact",
        run: redact,
    },
];

/// Looks a target up by name.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

fn tokens() -> TokenConfig {
    let mut t = TokenConfig::default();
    if let Ok(keys) = parse_keys("k1=fuzz-fingerprint-key-0123456789") {
        t.keys = std::sync::Arc::new(keys);
    }
    t
}

fn normaliser() -> Normaliser {
    Normaliser {
        tokens: tokens(),
        ..Default::default()
    }
}

/// "Now" for the fuzz targets' event-time window (2024-11-19).
const FUZZ_NOW_NS: i64 = 1_732_000_000_000_000_000;

fn err_kind(e: impl std::fmt::Display) -> String {
    // The first few words, without digits, so that positions do not make every error new.
    let s: String = e
        .to_string()
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect();
    format!("err:{s}")
}

fn spans(req: ExportTraceServiceRequest) -> String {
    let n = normalise::spans(req, FUZZ_NOW_NS, &normaliser());
    match seam_collector::buffer::spans_batch(&n.records, 1) {
        Ok(b) => format!("ok:{}:{}", b.num_rows().min(8), n.rejected.min(8)),
        Err(e) => err_kind(e),
    }
}

/// OTLP/JSON trace export: decode, normalise, Arrow batch.
pub fn otlp_json_traces(data: &[u8]) -> String {
    match decode::traces(data, Encoding::Json) {
        Ok(req) => spans(req),
        Err(e) => err_kind(e),
    }
}

/// OTLP/JSON logs export: decode, normalise, Arrow batch.
pub fn otlp_json_logs(data: &[u8]) -> String {
    match decode::logs(data, Encoding::Json) {
        Ok(req) => logs(req),
        Err(e) => err_kind(e),
    }
}

fn logs(req: ExportLogsServiceRequest) -> String {
    let n = normalise::logs(req, FUZZ_NOW_NS, &normaliser());
    match seam_collector::buffer::logs_batch(&n.records, 1) {
        Ok(b) => format!("ok:{}:{}", b.num_rows().min(8), n.rejected.min(8)),
        Err(e) => err_kind(e),
    }
}

/// OTLP/protobuf trace export: decode, normalise, Arrow batch.
pub fn otlp_proto_traces(data: &[u8]) -> String {
    match decode::traces(data, Encoding::Protobuf) {
        Ok(req) => spans(req),
        Err(e) => err_kind(e),
    }
}

/// APIM gateway logs in any export shape: decode, then build gateway and event rows.
pub fn apim_records(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else {
        return "err:utf8".into();
    };
    let items = match apim::decode(text, 1) {
        Ok(i) => i,
        Err(e) => return err_kind(e),
    };
    let meta = InputMeta {
        now_ns: FUZZ_NOW_NS,
        ..Default::default()
    };
    let tokens = tokens();
    let ctx = Ctx {
        meta: &meta,
        tokens: &tokens,
        ingest_ns: 1,
    };
    let gw = Columns::new(tables::gateway_logs::schema());
    let ev = Columns::new(tables::gateway_events::schema());
    let (mut gw_rows, mut ev_rows, mut refused) = (Vec::new(), Vec::new(), 0usize);
    for item in items {
        match item {
            ApimItem::Gateway {
                pos,
                fields,
                format,
                raw,
            } => {
                let rec = Record {
                    fields: &fields,
                    format,
                    line: line(pos),
                };
                match gateway_row(&gw, rec, raw, ctx) {
                    Ok(k) => gw_rows.push(k.row),
                    Err(_) => refused += 1,
                }
            }
            ApimItem::Event {
                pos,
                fields,
                format,
                raw,
            } => {
                let rec = Record {
                    fields: &fields,
                    format,
                    line: line(pos),
                };
                match event_row(&ev, rec, raw, ctx) {
                    Ok(k) => ev_rows.push(k.row),
                    Err(_) => refused += 1,
                }
            }
            ApimItem::Reject { .. } => refused += 1,
        }
    }
    match (batch(&gw, &gw_rows), batch(&ev, &ev_rows)) {
        (Ok(a), Ok(b)) => format!(
            "ok:{}:{}:{}",
            a.num_rows().min(8),
            b.num_rows().min(8),
            refused.min(8)
        ),
        (Err(e), _) | (_, Err(e)) => err_kind(e),
    }
}

fn line(pos: Pos) -> Option<i64> {
    match pos {
        Pos::Line(n) | Pos::Index(n) => i64::try_from(n).ok(),
    }
}

/// Mule logs (log4j lines and JSON Logger records): decode, then build flow rows.
pub fn mule_records(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else {
        return "err:utf8".into();
    };
    let items = match mule::decode(text, 1) {
        Ok(i) => i,
        Err(e) => return err_kind(e),
    };
    let meta = InputMeta {
        now_ns: FUZZ_NOW_NS,
        ..Default::default()
    };
    let tokens = tokens();
    let rules = TrafficRules::default();
    let cols = Columns::new(tables::flow_logs::schema());
    let (mut rows, mut refused) = (Vec::new(), 0usize);
    for item in items {
        match item {
            MuleItem::Event(ev) => match flow_row(&cols, *ev, &meta, &rules, &tokens, 1) {
                Ok(k) => rows.push(k.row),
                Err(_) => refused += 1,
            },
            MuleItem::Reject { .. } => refused += 1,
        }
    }
    match batch(&cols, &rows) {
        Ok(b) => format!("ok:{}:{}", b.num_rows().min(8), refused.min(8)),
        Err(e) => err_kind(e),
    }
}

/// JWT claim reading, and the identity seam derives from a token.
pub fn jwt_claims(data: &[u8]) -> String {
    let token = String::from_utf8_lossy(data);
    let identity = tokens().identify(&token);
    let id = identity.token_id().map_or("none", |_| "id");
    match read_claims(&token) {
        Ok(c) => format!("ok:{id}:{}", c.uti.is_some()),
        Err(e) => format!("err:{e}:{id}"),
    }
}

/// The redactor: finds and replaces tokens and secrets in free text. No JWT-shaped token
/// (`eyJ…​.eyJ…​.…`, parts of ten characters or more) may survive into the output.
pub fn redact(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let s = tokens().scrub(&text);
    if let Some(jwt) = find_jwt(&s.text) {
        panic!("redactor left a token in its output: {jwt:?}");
    }
    format!("ok:{}:{}", s.changed, s.token.is_some())
}

/// A JWT-shaped token in `text`: three base64url parts of ten characters or more, the first
/// two starting with `eyJ` (JSON).
pub fn find_jwt(text: &str) -> Option<&str> {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut from = 0;
    while let Some(p) = text[from..].find("eyJ") {
        let start = from + p;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| !(b64(c) || c == '.'))
            .unwrap_or(rest.len());
        let parts: Vec<&str> = rest[..end].split('.').collect();
        if parts.len() >= 3
            && parts[..3].iter().all(|p| p.len() >= 10)
            && parts[1].starts_with("eyJ")
        {
            return Some(&rest[..end]);
        }
        from = start + 3;
    }
    None
}

/// A deterministic pseudo-random generator (xorshift64*): reproducible runs from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Tokens the mutator inserts: JSON and log syntax, field names seam reads, boundary values.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\\u0000",
    "\\ud800",
    "\n",
    "\r\n",
    " ",
    "null",
    "true",
    "-1",
    "0",
    "1e308",
    "-9223372036854775809",
    "18446744073709551616",
    "NaN",
    "\"traceId\":",
    "\"spanId\":",
    "\"parentSpanId\":",
    "\"startTimeUnixNano\":",
    "\"endTimeUnixNano\":",
    "\"attributes\":",
    "\"resourceSpans\":",
    "\"resourceLogs\":",
    "\"scopeSpans\":",
    "\"spans\":",
    "\"logRecords\":",
    "\"timeUnixNano\":",
    "\"body\":",
    "\"stringValue\":",
    "\"intValue\":",
    "\"arrayValue\":",
    "\"kvlistValue\":",
    "\"values\":",
    "\"key\":",
    "\"value\":",
    "\"kind\":",
    "\"status\":",
    "\"records\":",
    "\"properties\":",
    "\"time\":",
    "\"TimeGenerated\":",
    "\"CorrelationId\":",
    "\"correlationId\":",
    "\"ResponseCode\":",
    "\"BackendTime\":",
    "\"TotalTime\":",
    "\"Url\":",
    "\"Method\":",
    "\"RequestHeaders\":",
    "\"Authorization\":",
    "\"Errors\":",
    "\"Category\":",
    "\"GatewayLogs\"",
    "\"OperationName\":",
    "\"tables\":",
    "\"rows\":",
    "\"columns\":",
    "\"message\":",
    "\"timestamp\":",
    "\"priority\":",
    "\"content\":",
    "2024-11-05T09:00:00.123Z",
    "2024-11-05 09:00:00,123",
    "1730797200000000000",
    "INFO ",
    "ERROR ",
    "[MuleRuntime]",
    "event: ",
    "correlationId=",
    "[processor: ",
    "Bearer ",
    "eyJhbGciOiJSUzI1NiJ9.eyJ1dGkiOiJ4In0.c2ln",
    "eyJ",
    "Ocp-Apim-Subscription-Key",
    "password=",
    "client_secret=",
    "%00",
    "\u{feff}",
    "\u{202e}",
    "Ω",
];

/// Applies one to eight random mutations to `input`, splicing from `other` sometimes.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(8) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'\\', b'\n'][rng.below(8)];
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                v.drain(a..b);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            4 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(512)).min(other.len());
                let at = rng.below(v.len() + 1);
                v.splice(at..at, other[a..b].iter().copied());
            }
            5 if len > 0 => v.truncate(rng.below(len)),
            6 if len > 0 => {
                // Repeat a chunk many times: deep nesting, long lines.
                let a = rng.below(len);
                let b = (a + 1 + rng.below(8)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                let times = 1 + rng.below(200);
                let rep: Vec<u8> = chunk
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk.len() * times)
                    .collect();
                v.splice(at..at, rep);
            }
            _ => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, word.iter().copied());
            }
        }
    }
    v.truncate(max_len);
    v
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs run.
    pub execs: u64,
    /// Distinct outcome signatures seen.
    pub signatures: usize,
    /// Inputs that panicked: (file written, panic message).
    pub crashes: Vec<(PathBuf, String)>,
    /// The slowest input, in milliseconds.
    pub slowest_ms: u128,
}

/// Reads every file under `dir` (missing: none).
pub fn read_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
        .collect();
    out.sort();
    out
}

/// Runs `input` through `t`, turning a panic into its message.
pub fn run_one(t: Target, input: &[u8]) -> Result<String, String> {
    std::panic::catch_unwind(|| (t.run)(input)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// Fuzzes `t` for `duration` from `seeds`; writes each panicking input to
/// `artifacts/<target>/crash-<hash>`.
pub fn run(
    t: Target,
    seeds: Vec<Vec<u8>>,
    duration: Duration,
    seed: u64,
    artifacts: &Path,
    max_len: usize,
) -> Report {
    let mut corpus: Vec<Vec<u8>> = if seeds.is_empty() {
        vec![Vec::new()]
    } else {
        seeds
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut report = Report::default();
    for s in &corpus {
        if let Ok(sig) = run_one(t, s) {
            seen.insert(sig);
        }
    }
    let mut rng = Rng::new(seed);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = mutate(&mut rng, &corpus[a], &corpus[b], max_len);
        let started = Instant::now();
        let outcome = run_one(t, &input);
        report.slowest_ms = report.slowest_ms.max(started.elapsed().as_millis());
        report.execs += 1;
        match outcome {
            Ok(sig) => {
                if seen.insert(sig) && corpus.len() < 10_000 {
                    corpus.push(input);
                }
            }
            Err(msg) => {
                let dir = artifacts.join(t.name);
                let digest = {
                    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                    for b in &input {
                        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                    }
                    h
                };
                let path = dir.join(format!("crash-{digest:016x}"));
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(&path, &input);
                report.crashes.push((path, msg));
                if report.crashes.len() >= 5 {
                    break;
                }
            }
        }
    }
    report.signatures = seen.len();
    report
}

/// The committed corpus and regression directories of `target` under `root` (the `fuzz/`
/// directory).
pub fn corpus_dirs(root: &Path, target: &str) -> [PathBuf; 2] {
    [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ]
}

/// Converts the OTLP/JSON sample to protobuf (the protobuf target's seed).
pub fn json_to_proto(json: &[u8]) -> Option<Vec<u8>> {
    let req: ExportTraceServiceRequest = decode::traces(json, Encoding::Json).ok()?;
    Some(prost::Message::encode_to_vec(&req))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Every committed corpus entry and every regression (each a crash once found) runs
    /// through its target without a panic; each target has a corpus.
    #[test]
    fn corpora_and_regressions_replay_without_panics() {
        let proto = root().join("corpus/otlp_proto_traces/sample.pb");
        if std::env::var_os("SEAM_BLESS").is_some() {
            let json = std::fs::read(root().join("corpus/otlp_json_traces/sample.json")).unwrap();
            std::fs::write(&proto, json_to_proto(&json).unwrap()).unwrap();
        }
        for t in TARGETS {
            let inputs: Vec<_> = corpus_dirs(&root(), t.name)
                .iter()
                .flat_map(|d| read_dir(d))
                .collect();
            assert!(!inputs.is_empty(), "{} has no corpus", t.name);
            for (path, data) in inputs {
                let sig = run_one(*t, &data)
                    .unwrap_or_else(|m| panic!("{}: {} panics: {m}", t.name, path.display()));
                assert!(!sig.is_empty());
            }
        }
        // The real samples are read, not refused.
        let traces = std::fs::read(root().join("corpus/otlp_json_traces/sample.json")).unwrap();
        assert!(
            otlp_json_traces(&traces).starts_with("ok:8:0"),
            "{}",
            otlp_json_traces(&traces)
        );
        assert_eq!(
            otlp_proto_traces(&std::fs::read(proto).unwrap()),
            otlp_json_traces(&traces)
        );
    }

    /// The fuzzer finds a planted bug quickly, and writes the input that triggers it.
    #[test]
    fn the_fuzzer_finds_a_planted_panic() {
        fn planted(data: &[u8]) -> String {
            assert!(!data.windows(2).any(|w| w == b"}{"), "planted bug");
            "ok".into()
        }
        let dir = std::env::temp_dir().join(format!("seam-fuzz-{}", std::process::id()));
        let t = Target {
            name: "planted",
            run: planted,
        };
        std::panic::set_hook(Box::new(|_| {}));
        let r = run(
            t,
            vec![b"{\"a\":1}".to_vec()],
            Duration::from_secs(5),
            7,
            &dir,
            1024,
        );
        let _ = std::panic::take_hook();
        assert!(!r.crashes.is_empty(), "{r:?}");
        let found = std::fs::read(&r.crashes[0].0).unwrap();
        assert!(found.windows(2).any(|w| w == b"}{"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
