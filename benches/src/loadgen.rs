//! The load generator behind `seam-loadgen`: drives a running seam with pre-encoded,
//! realistic payloads and reports what it acknowledged, how fast, and what it cost the server.
//!
//! ```text
//! seam-loadgen --target otlp-grpc|otlp-http|apim|mule [--clients 4] [--seconds 20 | --requests N]
//!              [--batch 512] [--grpc 127.0.0.1:4317] [--http 127.0.0.1:4318] [--pid PID]
//!              [--seed 42] [--api 127.0.0.1:7317] [--json]
//! seam-loadgen --target mixed --api 127.0.0.1:7317 [--rate N] [--settle SECONDS] [--clients 4]
//!              [--seconds 20] [--http 127.0.0.1:4318] [--pid PID] [--seed 42] [--json]
//! ```
//! Payloads: OTLP requests of `--batch` spans (random 16-byte trace ids and 8-byte span ids,
//! UUID correlation ids, the samples' attribute sets), encoded once; APIM storage-archive
//! bodies of `--batch` records and Mule log4j bodies of about `--batch` lines, whose ids are
//! renewed for each request (seam drops duplicates). Clients retry on retryable answers (HTTP
//! 429/502/503/504, gRPC UNAVAILABLE and RESOURCE_EXHAUSTED) with exponential backoff, as OTLP
//! exporters do. With `--pid` (seam's process id), the server's CPU seconds and peak RSS come
//! from /proc. The key for a seam with keys is read from `SEAM_TOKEN`.
//!
//! After the load, the same payloads are decoded in this process (protobuf decode, or JSON
//! parse of each record, or line splitting for log4j) for the same number of requests on one
//! thread: the decode-only ceiling each figure is stated against.
//!
//! With `--api` (seam's SQL API address), a probe measures ingest-to-visible latency under the
//! load: once a second it sends one span with a fresh trace id over OTLP/HTTP JSON and polls
//! `SELECT count(*) FROM spans WHERE trace_id = …` every 20 ms until the span is there; the
//! latency runs from sending the probe to the first answer that shows it.
//!
//! `--target mixed` ([`mixed`]) sends realistic mixed traffic with real-time timestamps (APIM
//! records and custom events, Mule JSON Logger and log4j lines, OTLP spans, 6.4 to 8 records a
//! request with the noise around them) and measures how long the requests take to show in
//! `requests`: issue 21's end-to-end aim.

pub mod mixed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Rng, Template, apim_template, mule_template, trace_request};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

/// What to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// OTLP/gRPC `TraceService` (`--grpc`).
    OtlpGrpc,
    /// OTLP/HTTP protobuf `/v1/traces` (`--http`).
    OtlpHttp,
    /// `/ingest/apim` with storage-archive JSON Lines.
    Apim,
    /// `/ingest/mule` with log4j lines.
    Mule,
    /// Generated requests through every ingest path, timed until they are in `requests`
    /// ([`mixed`]).
    Mixed,
}

impl Target {
    /// The name `--target` takes and reports carry.
    pub fn name(self) -> &'static str {
        match self {
            Self::OtlpGrpc => "otlp-grpc",
            Self::OtlpHttp => "otlp-http",
            Self::Apim => "apim",
            Self::Mule => "mule",
            Self::Mixed => "mixed",
        }
    }
}

/// The run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to drive.
    pub target: Target,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to run (unless `requests` is set).
    pub seconds: f64,
    /// A fixed number of requests instead of a duration.
    pub requests: Option<u64>,
    /// Spans (OTLP), records (APIM) or lines (Mule) per request.
    pub batch: usize,
    /// OTLP/gRPC address.
    pub grpc: String,
    /// Ingest HTTP address.
    pub http: String,
    /// The server's process id, for its CPU time and peak RSS.
    pub pid: Option<u32>,
    /// Seed of the payload generator.
    pub seed: u64,
    /// Key sent as `Authorization: Bearer` (seam with keys).
    pub token: Option<String>,
    /// SQL API address: probe ingest-to-visible latency during the load (`mixed`: required,
    /// to see the requests in `requests`).
    pub api: Option<String>,
    /// `mixed`: requests per second, paced; `None`: as fast as seam acknowledges.
    pub rate: Option<u64>,
    /// `mixed`: after the load, wait up to this many seconds for every sampled request to be
    /// settled; `None`: do not wait for settled.
    pub settle: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            target: Target::OtlpGrpc,
            clients: 4,
            seconds: 20.0,
            requests: None,
            batch: 512,
            grpc: "127.0.0.1:4317".into(),
            http: "127.0.0.1:4318".into(),
            pid: None,
            seed: 42,
            token: None,
            api: None,
            rate: None,
            settle: None,
        }
    }
}

/// gRPC path of `TraceService/Export`.
fn export_path() -> tonic::codegen::http::uri::PathAndQuery {
    tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    )
}

/// A gRPC codec that sends pre-encoded protobuf bytes as they are and hands the response
/// back as bytes: the load generator never re-encodes a request.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// A duration in whole microseconds, at most `u32::MAX`.
fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// (CPU seconds, peak RSS bytes) of `pid` from /proc.
pub fn proc_usage(pid: &str) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / TICKS;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some((cpu, hwm * 1024))
}

/// The server's (`--pid`) and this process's CPU time and peak RSS over a run, from /proc.
struct Usage {
    pid: Option<String>,
    server: Option<(f64, u64)>,
    client: Option<(f64, u64)>,
}

impl Usage {
    fn start(pid: Option<u32>) -> Self {
        let pid = pid.map(|p| p.to_string());
        Self {
            server: pid.as_deref().and_then(proc_usage),
            client: proc_usage("self"),
            pid,
        }
    }

    /// (the server's CPU seconds, its peak RSS in MiB, this process's CPU seconds) since
    /// [`Usage::start`].
    fn since(&self) -> (Option<f64>, Option<f64>, f64) {
        let (server, client) = (self.pid.as_deref().and_then(proc_usage), proc_usage("self"));
        let (cpu, rss) = match (self.server, server) {
            (Some(b), Some(a)) => (Some(a.0 - b.0), Some(a.1 as f64 / 1_048_576.0)),
            _ => (None, None),
        };
        let client_cpu = match (self.client, client) {
            (Some(b), Some(a)) => a.0 - b.0,
            _ => 0.0,
        };
        (cpu, rss, client_cpu)
    }
}

/// The summary line of the server's CPU time and peak RSS and this process's CPU time (empty
/// without `--pid`).
fn usage_line(cpu: Option<f64>, rss: Option<f64>, seconds: f64, client_cpu: f64) -> String {
    match (cpu, rss) {
        (Some(c), Some(r)) => format!(
            "  server: {c:.1} CPU s ({:.2} cores), peak RSS {r:.0} MiB; loadgen: {client_cpu:.1} CPU s\n",
            c / seconds.max(1e-9)
        ),
        _ => String::new(),
    }
}

enum Payloads {
    /// Protobuf bodies with fresh ids per request (sent as they are over HTTP, and over gRPC
    /// with a pass-through codec, so the client never re-encodes), spans per request.
    Otlp(Vec<Template>, usize),
    Access(Template, &'static str),
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
    rejected_records: AtomicU64,
    duplicates: AtomicU64,
    failed_requests: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

fn retryable_http(s: u16) -> bool {
    matches!(s, 429 | 502 | 503 | 504)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((5u64 << attempt.min(8)).min(1000))
}

/// One client: sends until the deadline or the request budget; gives its latencies (µs).
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    args: Options,
    payloads: Arc<Payloads>,
    counters: Arc<Counters>,
    budget: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    token: Option<String>,
) -> Result<Vec<u32>, String> {
    let mut lat = Vec::new();
    let mut rng = Rng::new(args.seed ^ ((id as u64 + 1) * 0x51_7cc1));
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| e.to_string())?;
    let mut grpc = if args.target == Target::OtlpGrpc {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", args.grpc))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", args.grpc))?;
        Some(tonic::client::Grpc::new(channel))
    } else {
        None
    };
    let mut n: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if args.requests.is_some() && budget.fetch_sub(1, Ordering::Relaxed) == 0 {
            budget.store(0, Ordering::Relaxed);
            break;
        }
        n += 1;
        let counter = ((id as u64) << 40) | n;
        let (body, records): (Vec<u8>, usize) = match &*payloads {
            Payloads::Otlp(v, spans) => (
                v[(n as usize + id) % v.len()].fill(&mut rng, counter),
                *spans,
            ),
            Payloads::Access(t, _) => (t.fill(&mut rng, counter), t.records),
        };
        let started = Instant::now();
        let mut attempt = 0;
        let outcome: Result<(u64, u64), String> = loop {
            let r = match (&*payloads, args.target) {
                (Payloads::Otlp(..), Target::OtlpGrpc) => {
                    let Some(g) = grpc.as_mut() else {
                        break Err("no gRPC client".into());
                    };
                    let mut r = tonic::Request::new(bytes::Bytes::from(body.clone()));
                    if let Some(t) = &token
                        && let Ok(v) = format!("Bearer {t}").parse()
                    {
                        r.metadata_mut().insert("authorization", v);
                    }
                    if let Err(e) = g.ready().await {
                        break Err(format!("gRPC channel: {e}"));
                    }
                    match g.unary(r, export_path(), RawCodec).await {
                        Ok(resp) => Ok(ExportTraceServiceResponse::decode(resp.into_inner())
                            .ok()
                            .and_then(|r| r.partial_success)
                            .map_or(0, |p| p.rejected_spans.max(0) as u64)),
                        Err(s)
                            if matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                            ) =>
                        {
                            Err(None)
                        }
                        Err(s) => Err(Some(format!("{:?}: {}", s.code(), s.message()))),
                    }
                    .map(|rej| (rej, 0))
                }
                _ => {
                    let (url, ct) = match (&*payloads, args.target) {
                        (Payloads::Access(_, path), _) => {
                            (format!("http://{}{path}", args.http), "text/plain")
                        }
                        _ => (
                            format!("http://{}/v1/traces", args.http),
                            "application/x-protobuf",
                        ),
                    };
                    let mut rb = http.post(url).header("content-type", ct).body(body.clone());
                    if let Some(t) = &token {
                        rb = rb.bearer_auth(t);
                    }
                    match rb.send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let bytes = resp.bytes().await.unwrap_or_default();
                            if status == 200 {
                                Ok(match &*payloads {
                                    Payloads::Otlp(..) => (
                                        ExportTraceServiceResponse::decode(bytes.as_ref())
                                            .ok()
                                            .and_then(|r| r.partial_success)
                                            .map_or(0, |p| p.rejected_spans.max(0) as u64),
                                        0,
                                    ),
                                    Payloads::Access(..) => {
                                        let v: serde_json::Value =
                                            serde_json::from_slice(&bytes).unwrap_or_default();
                                        (
                                            v["rejected"].as_u64().unwrap_or(0),
                                            v["duplicates"].as_u64().unwrap_or(0),
                                        )
                                    }
                                })
                            } else if retryable_http(status) {
                                Err(None)
                            } else {
                                Err(Some(format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&bytes)
                                )))
                            }
                        }
                        Err(_) => Err(None),
                    }
                }
            };
            match r {
                Ok(x) => break Ok(x),
                Err(None) if attempt < 12 && !stop.load(Ordering::Relaxed) => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(None) => break Err("gave up after retries".into()),
                Err(Some(e)) => break Err(e),
            }
        };
        match outcome {
            Ok((rejected, duplicates)) => {
                lat.push(micros(started.elapsed()));
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.records.fetch_add(
                    records as u64 - rejected.min(records as u64),
                    Ordering::Relaxed,
                );
                counters
                    .rejected_records
                    .fetch_add(rejected, Ordering::Relaxed);
                counters.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                counters.failed_requests.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = counters.first_error.lock() {
                    f.get_or_insert(e);
                }
            }
        }
    }
    Ok(lat)
}

/// Decode-only ceiling: requests per second on one thread over the same payloads (bodies
/// with fresh ids made before the clock starts, so only decoding is timed).
fn ceiling(payloads: &Payloads, requests: u64, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let bodies: Vec<Vec<u8>> = (0..16u64)
        .map(|i| match payloads {
            Payloads::Otlp(v, _) => v[i as usize % v.len()].fill(&mut rng, i),
            Payloads::Access(t, _) => t.fill(&mut rng, i),
        })
        .collect();
    let apim = matches!(payloads, Payloads::Access(_, path) if path.ends_with("apim"));
    let started = Instant::now();
    let mut sink = 0usize;
    for i in 0..requests.max(1) {
        let body = &bodies[i as usize % bodies.len()];
        match payloads {
            Payloads::Otlp(..) => {
                sink += ExportTraceServiceRequest::decode(body.as_slice())
                    .map_or(0, |r| r.resource_spans.len());
            }
            Payloads::Access(..) => {
                let text = std::str::from_utf8(body).unwrap_or("");
                if apim {
                    for l in text.lines() {
                        sink += serde_json::from_str::<serde_json::Value>(l)
                            .map_or(0, |v| v.as_object().map_or(0, |o| o.len()));
                    }
                } else {
                    sink += text.lines().count();
                }
            }
        }
    }
    std::hint::black_box(sink);
    requests.max(1) as f64 / started.elapsed().as_secs_f64()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// What a run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// `otlp-grpc`, `otlp-http`, `apim` or `mule`.
    pub target: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Wall time of the load phase.
    pub seconds: f64,
    /// Requests acknowledged.
    pub requests: u64,
    /// Records (spans, APIM records, Mule lines) acknowledged.
    pub records_acknowledged: u64,
    /// Records acknowledged per second.
    pub records_per_second: f64,
    /// Request bytes acknowledged per second, in MB.
    pub mb_per_second: f64,
    /// Median time from send to acknowledgement (retries included), in ms.
    pub ack_latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub ack_latency_p99_ms: f64,
    /// Retries after retryable answers.
    pub retries: u64,
    /// Records the server refused (partial success, rejected lines).
    pub rejected_records: u64,
    /// Records the server recognised as duplicates.
    pub duplicates: u64,
    /// Requests that failed for good.
    pub failed_requests: u64,
    /// The server's CPU seconds during the load (with `pid`).
    pub server_cpu_seconds: Option<f64>,
    /// The server's peak resident memory (VmHWM), in MiB (with `pid`).
    pub server_peak_rss_mib: Option<f64>,
    /// This process's CPU seconds during the load.
    pub client_cpu_seconds: f64,
    /// Records per second one thread decodes from the same payloads (protobuf decode, JSON
    /// parse per record, or line splitting) and nothing else.
    pub decode_ceiling_records_per_second_one_core: f64,
    /// `records_per_second` over that ceiling.
    pub fraction_of_ceiling_one_core: f64,
    /// Visibility probes that became visible (with `api`).
    pub visible_probes: usize,
    /// Median time from sending a probe span to SQL showing it, in ms (with `api`).
    pub visible_p50_ms: Option<f64>,
    /// Slowest probe, in ms (with `api`); a probe not visible within 30 s counts as 30 s.
    pub visible_max_ms: Option<f64>,
    /// The first error of a failed request.
    pub first_error: Option<String>,
}

impl Report {
    /// Human-readable lines.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} records in {:.1} s = {:.0}/s ({:.1} MB/s), ack p50 {:.2} ms p99 {:.2} ms, {} retries, {} rejected, {} duplicates, {} failed requests\n",
            self.target,
            self.records_acknowledged,
            self.seconds,
            self.records_per_second,
            self.mb_per_second,
            self.ack_latency_p50_ms,
            self.ack_latency_p99_ms,
            self.retries,
            self.rejected_records,
            self.duplicates,
            self.failed_requests
        );
        s.push_str(&usage_line(
            self.server_cpu_seconds,
            self.server_peak_rss_mib,
            self.seconds,
            self.client_cpu_seconds,
        ));
        if let (Some(p50), Some(max)) = (self.visible_p50_ms, self.visible_max_ms) {
            s.push_str(&format!(
                "  ingest to visible in SQL: p50 {p50:.0} ms, max {max:.0} ms ({} probes)\n",
                self.visible_probes
            ));
        }
        s.push_str(&format!(
            "  decode-only ceiling (same payloads, one thread): {:.0} records/s; ingest = {:.0} % of one core's ceiling\n",
            self.decode_ceiling_records_per_second_one_core,
            100.0 * self.fraction_of_ceiling_one_core
        ));
        s
    }
}

/// Once a second until `stop`: sends one span with a fresh trace id to `/v1/traces` (JSON)
/// and polls the SQL API until it is visible. Gives each probe's latency in ms.
async fn probe_visibility(
    http: String,
    api: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<f64>, String> {
    let client = reqwest::Client::new();
    let with_token = |b: reqwest::RequestBuilder| match &token {
        Some(t) => b.bearer_auth(t),
        None => b,
    };
    let mut rng = Rng::new(0x05ee_d0f9_a0be);
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let trace = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "seam-loadgen-probe"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": format!("{:016x}", rng.next_u64()), "name": "probe",
            "kind": 1, "startTimeUnixNano": now.to_string(), "endTimeUnixNano": (now + 1_000).to_string(),
        }]}]}]});
        let sent = Instant::now();
        let resp = with_token(client.post(format!("http://{http}/v1/traces")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        if !resp.as_ref().is_ok_and(|r| r.status().is_success()) {
            // Pushed back under load: try again with the next probe.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let sql = format!("SELECT count(*) AS n FROM spans WHERE trace_id = '{trace}'");
        loop {
            let seen = with_token(client.post(format!("http://{api}/api/v1/sql")))
                .header("content-type", "application/json")
                .body(serde_json::json!({ "sql": sql }).to_string())
                .send()
                .await
                .map_err(|e| format!("probe query: {e}"))?
                .json::<serde_json::Value>()
                .await
                .map_err(|e| format!("probe answer: {e}"))?;
            if seen[0]["n"].as_i64().unwrap_or(0) > 0 {
                out.push(sent.elapsed().as_secs_f64() * 1e3);
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                out.push(30_000.0);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed())).await;
    }
    Ok(out)
}

/// Runs the load described by `args` and measures it (the `mixed` target: [`mixed::run`]).
///
/// # Errors
/// The samples cannot be read, a client cannot connect, or the target is `mixed`.
pub async fn run(args: Options) -> Result<Report, String> {
    let mut rng = Rng::new(args.seed);
    let payloads = match args.target {
        Target::OtlpGrpc | Target::OtlpHttp => Payloads::Otlp(
            (0..4)
                .map(|_| Template::otlp(&trace_request(&mut rng, args.batch)))
                .collect(),
            args.batch,
        ),
        Target::Apim => Payloads::Access(
            apim_template(&mut rng, args.batch)
                .map_err(|e| format!("cannot read the APIM sample: {e}"))?,
            "/ingest/apim",
        ),
        Target::Mule => Payloads::Access(
            mule_template(&mut rng, args.batch)
                .map_err(|e| format!("cannot read the Mule sample: {e}"))?,
            "/ingest/mule",
        ),
        Target::Mixed => return Err("the mixed target runs with loadgen::mixed::run".into()),
    };
    let payloads = Arc::new(payloads);
    let token = args.token.clone();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(args.requests.unwrap_or(u64::MAX)));
    let usage = Usage::start(args.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..args.clients {
        tasks.push(tokio::spawn(client(
            id,
            args.clone(),
            Arc::clone(&payloads),
            Arc::clone(&counters),
            Arc::clone(&budget),
            Arc::clone(&stop),
            token.clone(),
        )));
    }
    let probe = args.api.clone().map(|api| {
        tokio::spawn(probe_visibility(
            args.http.clone(),
            api,
            token.clone(),
            Arc::clone(&stop),
        ))
    });
    if args.requests.is_none() {
        tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut lat = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("a client failed: {e}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut visible = match probe {
        Some(p) => p.await.map_err(|e| format!("the probe failed: {e}"))??,
        None => Vec::new(),
    };
    visible.sort_by(f64::total_cmp);
    let (server_cpu, server_rss, client_cpu) = usage.since();
    lat.sort_unstable();
    let requests = counters.requests.load(Ordering::Relaxed);
    let records = counters.records.load(Ordering::Relaxed);
    let bytes = counters.bytes.load(Ordering::Relaxed);
    let per_request = match &*payloads {
        Payloads::Otlp(_, n) => *n,
        Payloads::Access(t, _) => t.records,
    } as f64;
    let ceiling_rps = ceiling(&payloads, requests.clamp(50, 2000), args.seed);
    let rate = records as f64 / elapsed;
    let ceiling_records = ceiling_rps * per_request;
    Ok(Report {
        target: args.target.name(),
        clients: args.clients,
        seconds: elapsed,
        requests,
        records_acknowledged: records,
        records_per_second: rate,
        mb_per_second: bytes as f64 / elapsed / 1e6,
        ack_latency_p50_ms: pct(&lat, 0.50),
        ack_latency_p99_ms: pct(&lat, 0.99),
        retries: counters.retries.load(Ordering::Relaxed),
        rejected_records: counters.rejected_records.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        failed_requests: counters.failed_requests.load(Ordering::Relaxed),
        server_cpu_seconds: server_cpu,
        server_peak_rss_mib: server_rss,
        client_cpu_seconds: client_cpu,
        decode_ceiling_records_per_second_one_core: ceiling_records,
        fraction_of_ceiling_one_core: rate / ceiling_records,
        visible_probes: visible.len(),
        visible_p50_ms: (!visible.is_empty()).then(|| visible[visible.len() / 2]),
        visible_max_ms: visible.last().copied(),
        first_error: counters.first_error.lock().ok().and_then(|e| e.clone()),
    })
}
