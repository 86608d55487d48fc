//! `seam-loadgen --target mixed`: issue 21's end-to-end aim. Sends realistic mixed traffic with
//! real-time timestamps through seam's ingest endpoints, at a paced rate (`--rate` requests/s)
//! or as fast as seam acknowledges, and measures how soon each request is in `requests` (and,
//! with `--settle`, settled).
//!
//! Traffic: `seam_tests::generator::generate` in chunks, as `crate::traffic::Bodies` (APIM
//! GatewayLogs records, some late and some twice, custom gateway events, Mule JSON Logger
//! lines, Mule log4j events, OTLP/JSON spans: 6.4 records a request, and the generator's noise
//! of probes, background runs and platform lines around them, which each chunk carries once:
//! about 7.5 records a request at 20 requests/s). A thread generates ahead into a bounded queue
//! (two seconds of chunks when paced, four chunks otherwise), so generating never stalls
//! sending and memory stays bounded.
//!
//! - Paced (`--rate R`): each second of event time gets `ceil(R / 1000)` chunks of at most
//!   1,000 requests (the generator's gap is whole milliseconds), each with its own seed and
//!   start offset so that they interleave: `R` requests a second, spread over the second as
//!   evenly as whole-millisecond gaps allow. A chunk is sent once its second is over (the
//!   second's chunks spread over the next second), so event time is at most about a second
//!   behind the clock, as from a shipper that flushes every second. A chunk that cannot go on
//!   time (seam acknowledges too slowly, or the generator is too slow) goes late:
//!   `behind_schedule_max_seconds`.
//! - Unpaced: chunks of 200 requests one millisecond apart, stamped with the time they are
//!   generated, sent as soon as a sender is free.
//!
//! The generator's seeds come from `--seed` and the start time, so that a second run against
//! the same seam does not repeat the first one's ids.
//!
//! `--clients` senders take the bodies from one queue (a chunk's late gateway records after
//! its other bodies) and post each, retrying while seam pushes back (429, 503). A chunk is
//! acknowledged when its last body is; `requests` counts the requests of acknowledged chunks.
//!
//! Visibility: at most once a second a chunk is sampled (paced: the first of each second): up
//! to 100 of its request ids (the generator's truth, so real requests, not its probes or
//! background runs), spread over the chunk and always its last one. From the acknowledgement
//! of the chunk's last body, a watcher polls `SELECT request_id, settled FROM requests WHERE
//! time … AND request_id IN (…)` (one statement per 40 pending samples, every 100 ms) until
//! every id is there; a sample's lag runs from that acknowledgement to the answer that shows
//! them all, so it includes the poll's resolution (100 ms plus the statement's time). With
//! `--settle`, the watcher also polls, once a second, until every sampled id is `settled`: that
//! takes the server's `correlation.horizon` (15 minutes by default; give the server a short
//! one, such as `"20s"`) plus the correlator's delay. After the load it waits up to 60 s (or
//! `--settle` seconds, if longer) and reports how long after the last acknowledgement every
//! sample was visible (and settled).
//!
//! `sustained` (paced runs): no chunk sent more than 1 s behind its schedule, no body refused,
//! and every sample in `requests` within 10 s of its acknowledgement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use seam_tests::generator::generate;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::{Counters, Options, Usage, micros, pct, usage_line};
use crate::traffic::{Bodies, Body, Target as Seam, chunk_seed, now_ns};

const NS: i64 = 1_000_000_000;
/// Requests a chunk, unpaced.
const UNPACED_CHUNK: usize = 200;
/// Chunks generated ahead, unpaced.
const UNPACED_AHEAD: usize = 4;
/// At most one sampled chunk per this long (ns of the schedule: when chunks are due).
const SAMPLE_EVERY_NS: i64 = NS;
/// Request ids looked for per sampled chunk.
const SAMPLE_IDS: usize = 100;
/// Samples per poll statement (4,000 ids, about 160 KB of SQL).
const SAMPLES_PER_QUERY: usize = 40;
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(100);
/// Pause between two polls for `settled`.
const SETTLE_POLL: Duration = Duration::from_secs(1);
/// How long after the load the watcher waits for the samples at least.
const VISIBLE_WAIT: Duration = Duration::from_secs(60);
/// The aim: every request in `requests` within this long of its last record.
const VISIBLE_AIM_MS: f64 = 10_000.0;
/// A paced run is sustained while no chunk goes out later than this after its due time.
const BEHIND_LIMIT_SECONDS: f64 = 1.0;

/// Which chunks to generate.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// `rate` requests a second of event time, the schedule's first second starting at
    /// `base_ns`.
    Paced { rate: u64, base_ns: i64 },
    /// Chunks of [`UNPACED_CHUNK`] requests one millisecond apart, stamped when generated.
    Unpaced,
}

/// One chunk to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    requests: usize,
    /// The first request's start, ns since the epoch.
    start_ns: i64,
    /// Between two requests' starts.
    gap_ms: i64,
    /// When to send it, ns since the epoch; `None`: at once.
    due_ns: Option<i64>,
}

impl Plan {
    /// Chunks per second of event time (paced).
    fn per_second(rate: u64) -> u64 {
        rate.max(1).div_ceil(1000)
    }

    /// Chunk `no`, made at `made_ns`.
    fn spec(self, no: u64, made_ns: i64) -> Spec {
        match self {
            Self::Unpaced => Spec {
                requests: UNPACED_CHUNK,
                start_ns: made_ns,
                gap_ms: 1,
                due_ns: None,
            },
            Self::Paced { rate, base_ns } => {
                let rate = rate.max(1);
                let k = Self::per_second(rate);
                let (second, j) = (no / k, no % k);
                let n = rate / k + u64::from(j < rate % k);
                // One gap for the second's chunks (at most 1,000 requests each, so at least a
                // millisecond): they interleave without two requests at the same instant.
                let gap_ms = 1000 / rate.div_ceil(k);
                let second_ns = base_ns + second as i64 * NS;
                Spec {
                    requests: n as usize,
                    // The second's chunks interleave: chunk j starts j/k of a gap later.
                    start_ns: second_ns + (j * gap_ms * 1_000_000 / k) as i64,
                    gap_ms: gap_ms as i64,
                    // Once its second is over; the second's chunks spread over the next.
                    due_ns: Some(second_ns + NS + j as i64 * NS / k as i64),
                }
            }
        }
    }

    /// Chunks generated ahead: two seconds of them paced.
    fn ahead(self) -> usize {
        match self {
            Self::Paced { rate, .. } => (2 * Self::per_second(rate)) as usize,
            Self::Unpaced => UNPACED_AHEAD,
        }
    }
}

/// Request ids of a chunk to look for in `requests`, and the event time its requests start
/// in.
#[derive(Debug, Clone)]
struct Pick {
    ids: Vec<String>,
    lo_ns: i64,
    hi_ns: i64,
}

/// A generated chunk, ready to send.
#[derive(Debug)]
struct Chunk {
    requests: usize,
    /// When to send it, ns since the epoch; `None`: at once.
    due_ns: Option<i64>,
    bodies: Bodies,
    /// What to look for if it is sampled.
    pick: Pick,
}

/// Generates the chunk `spec` says with generator seed `seed`.
fn make_chunk(spec: Spec, seed: u64) -> Chunk {
    let t = generate(seed, spec.requests, spec.start_ns, spec.gap_ms);
    let n = t.truth.len();
    let m = n.min(SAMPLE_IDS);
    // Spread over the chunk, its last request always among them.
    let ids = (0..m)
        .filter_map(|i| t.truth.get((i + 1) * n / m - 1))
        .map(|x| x.request_id.clone())
        .collect();
    Chunk {
        requests: n,
        due_ns: spec.due_ns,
        bodies: Bodies::of(&t),
        pick: Pick {
            ids,
            lo_ns: spec.start_ns,
            hi_ns: spec.start_ns + spec.requests as i64 * spec.gap_ms * 1_000_000,
        },
    }
}

/// The generator thread: makes the chunks of `plan` in order into `tx` until `stop` is set or
/// the receiver is gone; adds the time spent generating to `busy_ns`.
fn generate_ahead(
    plan: Plan,
    seed: u64,
    tx: &mpsc::Sender<Chunk>,
    stop: &AtomicBool,
    busy_ns: &AtomicU64,
) {
    let mut no = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let chunk = make_chunk(plan.spec(no, now_ns()), chunk_seed(seed, no));
        busy_ns.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if tx.blocking_send(chunk).is_err() {
            break;
        }
        no += 1;
    }
}

/// One body of chunk `chunk`, for a sender.
#[derive(Debug)]
struct Job {
    chunk: u64,
    body: Body,
}

/// The senders' queue of bodies.
type Jobs = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

/// A chunk with bodies not yet answered.
#[derive(Debug)]
struct InFlight {
    bodies: usize,
    requests: usize,
    /// A body of it failed for good.
    failed: bool,
    /// Sampled: what to look for.
    pick: Option<Pick>,
}

/// What the senders share: the counters and the chunks in flight.
#[derive(Default)]
struct Shared {
    counters: Counters,
    in_flight: std::sync::Mutex<HashMap<u64, InFlight>>,
}

impl Shared {
    fn register(&self, no: u64, chunk: InFlight) {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(no, chunk);
    }

    /// Notes the answer to one body of chunk `no`; gives the chunk when it was its last.
    fn answered(&self, no: u64, ok: bool) -> Option<InFlight> {
        let mut m = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let f = m.get_mut(&no)?;
        f.bodies = f.bodies.saturating_sub(1);
        f.failed |= !ok;
        if f.bodies == 0 { m.remove(&no) } else { None }
    }
}

/// A sampled chunk: when it was acknowledged, and when the watcher saw all its ids in
/// `requests` and settled.
#[derive(Debug)]
struct Sample {
    pick: Pick,
    acked: Instant,
    visible: Option<Instant>,
    settled: Option<Instant>,
}

/// One sender: posts queued bodies until the queue is closed and empty; hands each sampled
/// chunk to the watcher once its last body is acknowledged. Gives its acknowledgement
/// latencies (µs).
async fn sender(
    seam: Seam,
    client: reqwest::Client,
    jobs: Jobs,
    shared: Arc<Shared>,
    samples: mpsc::UnboundedSender<Sample>,
) -> Vec<u32> {
    let mut lat = Vec::new();
    let c = &shared.counters;
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else {
            break;
        };
        let sent = Instant::now();
        let ok = match seam.ingest(&client, &job.body).await {
            Ok(a) => {
                lat.push(micros(sent.elapsed()));
                c.retries.fetch_add(u64::from(a.retries), Ordering::Relaxed);
                c.rejected_records.fetch_add(a.rejected, Ordering::Relaxed);
                c.duplicates.fetch_add(a.duplicates, Ordering::Relaxed);
                c.records.fetch_add(
                    (job.body.records as u64).saturating_sub(a.rejected),
                    Ordering::Relaxed,
                );
                c.bytes
                    .fetch_add(job.body.text.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                c.failed_requests.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = c.first_error.lock() {
                    f.get_or_insert(e);
                }
                false
            }
        };
        if let Some(done) = shared.answered(job.chunk, ok)
            && !done.failed
        {
            c.requests
                .fetch_add(done.requests as u64, Ordering::Relaxed);
            if let Some(pick) = done.pick {
                // The watcher goes only after every sender.
                let _ = samples.send(Sample {
                    pick,
                    acked: Instant::now(),
                    visible: None,
                    settled: None,
                });
            }
        }
    }
    lat
}

/// What the watcher saw.
#[derive(Debug, Default)]
struct Watched {
    samples: Vec<Sample>,
    polls: u64,
    poll_errors: u64,
    first_poll_error: Option<String>,
}

/// `SELECT request_id, settled FROM requests` for `ids`, requests starting from `lo_ns` to
/// `hi_ns` (so that only those minutes' files are read).
fn presence_sql(ids: &[&str], lo_ns: i64, hi_ns: i64) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|id| format!("'{}'", id.replace('\'', "''")))
        .collect();
    format!(
        "SELECT request_id, settled FROM requests WHERE time >= to_timestamp_nanos({lo_ns}) \
         AND time < to_timestamp_nanos({hi_ns}) AND request_id IN ({})",
        list.join(", ")
    )
}

/// One statement for the samples of `group` still waiting (to be visible, or with
/// `settled_too` to be settled); notes on each sample what the answer shows.
async fn look(
    seam: &Seam,
    client: &reqwest::Client,
    group: &mut [Sample],
    settled_too: bool,
    w: &mut Watched,
) {
    let asked: Vec<&Sample> = group
        .iter()
        .filter(|s| s.visible.is_none() || settled_too)
        .collect();
    let (Some(lo), Some(hi)) = (
        asked.iter().map(|s| s.pick.lo_ns).min(),
        asked.iter().map(|s| s.pick.hi_ns).max(),
    ) else {
        return;
    };
    let ids: Vec<&str> = asked
        .iter()
        .flat_map(|s| s.pick.ids.iter().map(String::as_str))
        .collect();
    // A request starts with its earliest record: within its chunk's span (a margin kept).
    let sql = presence_sql(&ids, lo - NS, hi + 60 * NS);
    w.polls += 1;
    let rows = match seam.sql(client, &sql).await {
        Ok(rows) => rows,
        Err(e) => {
            w.poll_errors += 1;
            w.first_poll_error.get_or_insert(e);
            return;
        }
    };
    let now = Instant::now();
    let mut seen: HashMap<&str, bool> = HashMap::new();
    for r in &rows {
        if let Some(id) = r["request_id"].as_str() {
            *seen.entry(id).or_default() |= r["settled"].as_bool().unwrap_or(false);
        }
    }
    for s in group.iter_mut() {
        let ids = &s.pick.ids;
        if s.visible.is_none() && ids.iter().all(|id| seen.contains_key(id.as_str())) {
            s.visible = Some(now);
        }
        if settled_too
            && s.settled.is_none()
            && ids.iter().all(|id| seen.get(id.as_str()) == Some(&true))
        {
            s.settled = Some(now);
        }
    }
}

/// Polls `requests` for the samples handed over until the senders are done and every sample
/// is visible (and, with `settle`, settled), or the wait after the load runs out.
///
/// # Errors
/// The HTTP client cannot be built.
async fn watch(
    seam: Seam,
    mut picked: mpsc::UnboundedReceiver<Sample>,
    settle: Option<Duration>,
) -> Result<Watched, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("SQL client: {e}"))?;
    let wait = settle.map_or(VISIBLE_WAIT, |s| s.max(VISIBLE_WAIT));
    let mut w = Watched::default();
    let mut pending: Vec<Sample> = Vec::new();
    let mut closed: Option<Instant> = None;
    let mut settle_polled: Option<Instant> = None;
    loop {
        if pending.is_empty() && closed.is_none() {
            match picked.recv().await {
                Some(s) => pending.push(s),
                None => closed = Some(Instant::now()),
            }
        }
        while closed.is_none() {
            match picked.try_recv() {
                Ok(s) => pending.push(s),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => closed = Some(Instant::now()),
            }
        }
        if pending.is_empty() || closed.is_some_and(|c| c.elapsed() > wait) {
            break;
        }
        let settled_too =
            settle.is_some() && settle_polled.is_none_or(|t| t.elapsed() >= SETTLE_POLL);
        if settled_too {
            settle_polled = Some(Instant::now());
        }
        for group in pending.chunks_mut(SAMPLES_PER_QUERY) {
            look(&seam, &client, group, settled_too, &mut w).await;
        }
        let (done, waiting): (Vec<Sample>, Vec<Sample>) = pending
            .into_iter()
            .partition(|s| s.visible.is_some() && (settle.is_none() || s.settled.is_some()));
        w.samples.extend(done);
        pending = waiting;
        tokio::time::sleep(POLL).await;
    }
    w.samples.extend(pending);
    Ok(w)
}

/// Each sample's lag from its acknowledgement to `at` (µs, sorted), for those that got there.
fn lags(samples: &[Sample], at: impl Fn(&Sample) -> Option<Instant>) -> Vec<u32> {
    let mut v: Vec<u32> = samples
        .iter()
        .filter_map(|s| Some(micros(at(s)?.duration_since(s.acked))))
        .collect();
    v.sort_unstable();
    v
}

/// Seconds from `end` until the last sample got to `at` (0 when all did before); `None` when
/// there are no samples or one never got there.
fn after_load(
    samples: &[Sample],
    at: impl Fn(&Sample) -> Option<Instant>,
    end: Instant,
) -> Option<f64> {
    let times: Option<Vec<Instant>> = samples.iter().map(at).collect();
    let last = times?.into_iter().max()?;
    Some(last.saturating_duration_since(end).as_secs_f64())
}

/// The `p` quantile of sorted µs, in ms; `None` when empty.
fn quantile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| pct(sorted, p))
}

/// What a mixed run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MixedReport {
    /// `mixed`.
    pub target: &'static str,
    /// Concurrent senders.
    pub clients: usize,
    /// Requests per second asked for (`--rate`); `None`: as fast as seam acknowledges.
    pub rate: Option<u64>,
    /// Wall time from the start until the last body was acknowledged, at least `--seconds`
    /// (paced, the last second of traffic goes out at `--seconds` less one).
    pub seconds: f64,
    /// Requests whose every record seam acknowledged.
    pub requests: u64,
    /// `requests` per second.
    pub requests_per_second: f64,
    /// Records (gateway records and their copies, events, Mule lines, spans) acknowledged,
    /// less those refused.
    pub records_acknowledged: u64,
    /// Records acknowledged per second.
    pub records_per_second: f64,
    /// Records per request, the generator's noise (probes, background runs, platform lines)
    /// included.
    pub records_per_request: f64,
    /// Body bytes acknowledged per second, in MB.
    pub mb_per_second: f64,
    /// Median time from sending a body to its acknowledgement (retries included), in ms.
    pub ack_latency_p50_ms: f64,
    /// 99th percentile of the same.
    pub ack_latency_p99_ms: f64,
    /// Retries after seam pushed back.
    pub retries: u64,
    /// Records the server refused.
    pub rejected_records: u64,
    /// Records the server already held (the generator sends some twice).
    pub duplicates: u64,
    /// Bodies that failed for good (their chunks' requests are not counted or sampled).
    pub failed_bodies: u64,
    /// Paced: the latest a chunk went out after its due time, in seconds.
    pub behind_schedule_max_seconds: Option<f64>,
    /// Time the generator thread spent generating; near `seconds`, it was the bottleneck.
    pub generator_busy_seconds: f64,
    /// Sampled chunks (one a second at most).
    pub samples: usize,
    /// Request ids looked for in them.
    pub sampled_requests: usize,
    /// Median time from a sampled chunk's acknowledgement until all its ids were in
    /// `requests`, in ms.
    pub visible_lag_p50_ms: Option<f64>,
    /// 95th percentile of the same.
    pub visible_lag_p95_ms: Option<f64>,
    /// Slowest of the same.
    pub visible_lag_max_ms: Option<f64>,
    /// Samples not all in `requests` when the watcher gave up.
    pub not_visible: usize,
    /// Seconds from the last acknowledgement until every sample was in `requests` (0: all
    /// were by then); `None`: some never were.
    pub visible_after_load_seconds: Option<f64>,
    /// With `--settle`: median time from a sampled chunk's acknowledgement until all its ids
    /// were settled, in ms.
    pub settled_lag_p50_ms: Option<f64>,
    /// With `--settle`: slowest of the same.
    pub settled_lag_max_ms: Option<f64>,
    /// With `--settle`: samples not all settled when the watcher gave up.
    pub not_settled: Option<usize>,
    /// With `--settle`: seconds from the last acknowledgement until every sample was
    /// settled; `None`: some never were (or no `--settle`).
    pub settled_after_load_seconds: Option<f64>,
    /// Paced: at most 1 s behind schedule, no body failed, every sample in `requests` within
    /// 10 s of its acknowledgement.
    pub sustained: Option<bool>,
    /// SQL statements the watcher ran.
    pub polls: u64,
    /// Those that failed.
    pub poll_errors: u64,
    /// The first failure's message.
    pub first_poll_error: Option<String>,
    /// The server's CPU seconds during the load (with `pid`).
    pub server_cpu_seconds: Option<f64>,
    /// The server's peak resident memory (VmHWM) by the end of the watch, in MiB (with
    /// `pid`).
    pub server_peak_rss_mib: Option<f64>,
    /// This process's CPU seconds during the load.
    pub client_cpu_seconds: f64,
    /// The first error of a failed body.
    pub first_error: Option<String>,
}

/// `{v:.0}`, or `-`.
fn ms_text(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.0}"),
        None => "-".into(),
    }
}

/// `{v:.1} s`, or `never`.
fn after_text(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.1} s"),
        None => "never".into(),
    }
}

impl MixedReport {
    /// Human-readable lines.
    pub fn summary(&self) -> String {
        let pace = match (self.rate, self.behind_schedule_max_seconds) {
            (Some(r), Some(b)) => format!("paced at {r}/s, at most {b:.2} s behind schedule"),
            _ => "as fast as acknowledged".into(),
        };
        let mut s = format!(
            "mixed ({pace}): {} requests ({} records, {:.1} a request) in {:.1} s = {:.0} requests/s, {:.0} records/s ({:.1} MB/s); ack p50 {:.2} ms p99 {:.2} ms, {} retries, {} rejected, {} duplicates, {} failed bodies\n",
            self.requests,
            self.records_acknowledged,
            self.records_per_request,
            self.seconds,
            self.requests_per_second,
            self.records_per_second,
            self.mb_per_second,
            self.ack_latency_p50_ms,
            self.ack_latency_p99_ms,
            self.retries,
            self.rejected_records,
            self.duplicates,
            self.failed_bodies
        );
        s.push_str(&format!(
            "  visible in requests after the acknowledgement: p50 {} ms, p95 {} ms, max {} ms ({} samples, {} requests, {} not visible); all visible {} after the load\n",
            ms_text(self.visible_lag_p50_ms),
            ms_text(self.visible_lag_p95_ms),
            ms_text(self.visible_lag_max_ms),
            self.samples,
            self.sampled_requests,
            self.not_visible,
            after_text(self.visible_after_load_seconds)
        ));
        if let Some(n) = self.not_settled {
            s.push_str(&format!(
                "  settled after the acknowledgement: p50 {} ms, max {} ms ({n} samples not settled); all settled {} after the load\n",
                ms_text(self.settled_lag_p50_ms),
                ms_text(self.settled_lag_max_ms),
                after_text(self.settled_after_load_seconds)
            ));
        }
        if let Some(ok) = self.sustained {
            s.push_str(&format!(
                "  sustained: {} (at most 1 s behind schedule, no body failed, every sample visible within 10 s)\n",
                if ok { "yes" } else { "no" }
            ));
        }
        if let Some(e) = &self.first_poll_error {
            s.push_str(&format!(
                "  {} of {} polls failed; the first: {e}\n",
                self.poll_errors, self.polls
            ));
        }
        s.push_str(&usage_line(
            self.server_cpu_seconds,
            self.server_peak_rss_mib,
            self.seconds,
            self.client_cpu_seconds,
        ));
        s.push_str(&format!(
            "  generator: {:.1} s busy in {:.1} s\n",
            self.generator_busy_seconds, self.seconds
        ));
        s
    }
}

/// Runs mixed traffic as `args` says (`args.target` is not looked at; `batch` and `grpc` are
/// not used) and measures it.
///
/// # Errors
/// `args.api` is not set or `args.requests` is, the generator thread cannot start or fails,
/// a sender task fails.
pub async fn run(args: &Options) -> Result<MixedReport, String> {
    let api = args
        .api
        .clone()
        .ok_or("the mixed target needs --api (seam's SQL API): it looks for the requests there")?;
    if args.requests.is_some() {
        return Err("the mixed target runs for --seconds, not --requests".into());
    }
    let seam = Seam {
        ingest: args.http.clone(),
        api,
        token: args.token.clone(),
    };
    let clients = args.clients.max(1);
    let settle = args
        .settle
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    let usage = Usage::start(args.pid);
    let started = Instant::now();
    let start_ns = now_ns();
    let end_ns = start_ns.saturating_add((args.seconds * 1e9) as i64);
    // Paced, the schedule starts a second back: the first second's chunks are due now.
    let plan = match args.rate {
        Some(rate) => Plan::Paced {
            rate: rate.max(1),
            base_ns: start_ns - NS,
        },
        None => Plan::Unpaced,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicU64::new(0));
    let (tx, mut chunks) = mpsc::channel(plan.ahead());
    // The start time in the seed: a second run against the same seam must not repeat the
    // first one's ids (its requests would merge with the earlier ones).
    let seed = args.seed ^ (start_ns as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let generator = {
        let (stop, busy) = (Arc::clone(&stop), Arc::clone(&busy));
        std::thread::Builder::new()
            .name("loadgen-generator".into())
            .spawn(move || generate_ahead(plan, seed, &tx, &stop, &busy))
            .map_err(|e| format!("cannot start the generator thread: {e}"))?
    };
    let shared = Arc::new(Shared::default());
    let (jobs, queue) = mpsc::channel::<Job>(clients * 2);
    let queue: Jobs = Arc::new(tokio::sync::Mutex::new(queue));
    let (samples, picked) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(seam.clone(), picked, settle));
    let client = reqwest::Client::new();
    let senders: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(sender(
                seam.clone(),
                client.clone(),
                Arc::clone(&queue),
                Arc::clone(&shared),
                samples.clone(),
            ))
        })
        .collect();
    drop(samples);
    let mut behind_ns = 0i64;
    let mut last_pick: Option<i64> = None;
    let mut no = 0u64;
    while let Some(chunk) = chunks.recv().await {
        let due = chunk.due_ns.unwrap_or_else(now_ns);
        if due >= end_ns {
            break;
        }
        let wait = due - now_ns();
        if wait > 0 {
            tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
        }
        if chunk.due_ns.is_some() {
            behind_ns = behind_ns.max(now_ns() - due);
        }
        let Chunk {
            requests,
            bodies: Bodies { first, late },
            pick,
            ..
        } = chunk;
        if first.is_empty() && late.is_empty() {
            continue;
        }
        // By the schedule, so that paced, each second's first chunk is the sample.
        let sampled = last_pick.is_none_or(|t| due - t >= SAMPLE_EVERY_NS);
        if sampled {
            last_pick = Some(due);
        }
        shared.register(
            no,
            InFlight {
                bodies: first.len() + late.len(),
                requests,
                failed: false,
                pick: sampled.then_some(pick),
            },
        );
        // The late gateway records after the chunk's other bodies.
        for body in first.into_iter().chain(late) {
            if jobs.send(Job { chunk: no, body }).await.is_err() {
                return Err("the senders stopped".into());
            }
        }
        no += 1;
    }
    stop.store(true, Ordering::Relaxed);
    drop(chunks);
    drop(jobs);
    let mut lat = Vec::new();
    for s in senders {
        lat.extend(s.await.map_err(|e| format!("a sender failed: {e}"))?);
    }
    // Paced, `--seconds` of schedule hold `--seconds` of traffic, the last second's chunks
    // going out a second before the end.
    let seconds = started.elapsed().as_secs_f64().max(args.seconds);
    let load_end = Instant::now();
    let (server_cpu, _, client_cpu) = usage.since();
    let generated = tokio::task::spawn_blocking(move || generator.join()).await;
    if !matches!(generated, Ok(Ok(()))) {
        return Err("the generator thread failed".into());
    }
    let watched = watcher
        .await
        .map_err(|e| format!("the watcher failed: {e}"))??;
    let (_, server_rss, _) = usage.since();
    lat.sort_unstable();
    let c = &shared.counters;
    let requests = c.requests.load(Ordering::Relaxed);
    let records = c.records.load(Ordering::Relaxed);
    let failed_bodies = c.failed_requests.load(Ordering::Relaxed);
    let samples = &watched.samples;
    let visible = lags(samples, |s| s.visible);
    let settled = lags(samples, |s| s.settled);
    let not_visible = samples.iter().filter(|s| s.visible.is_none()).count();
    let visible_lag_max_ms = quantile_ms(&visible, 1.0);
    let behind = args.rate.map(|_| behind_ns as f64 / 1e9);
    let sustained = behind.map(|b| {
        b <= BEHIND_LIMIT_SECONDS
            && failed_bodies == 0
            && !samples.is_empty()
            && not_visible == 0
            && visible_lag_max_ms.is_some_and(|m| m <= VISIBLE_AIM_MS)
    });
    Ok(MixedReport {
        target: "mixed",
        clients,
        rate: args.rate,
        seconds,
        requests,
        requests_per_second: requests as f64 / seconds.max(1e-9),
        records_acknowledged: records,
        records_per_second: records as f64 / seconds.max(1e-9),
        records_per_request: records as f64 / requests.max(1) as f64,
        mb_per_second: c.bytes.load(Ordering::Relaxed) as f64 / seconds.max(1e-9) / 1e6,
        ack_latency_p50_ms: pct(&lat, 0.50),
        ack_latency_p99_ms: pct(&lat, 0.99),
        retries: c.retries.load(Ordering::Relaxed),
        rejected_records: c.rejected_records.load(Ordering::Relaxed),
        duplicates: c.duplicates.load(Ordering::Relaxed),
        failed_bodies,
        behind_schedule_max_seconds: behind,
        generator_busy_seconds: busy.load(Ordering::Relaxed) as f64 / 1e9,
        samples: samples.len(),
        sampled_requests: samples.iter().map(|s| s.pick.ids.len()).sum(),
        visible_lag_p50_ms: quantile_ms(&visible, 0.50),
        visible_lag_p95_ms: quantile_ms(&visible, 0.95),
        visible_lag_max_ms,
        not_visible,
        visible_after_load_seconds: after_load(samples, |s| s.visible, load_end),
        settled_lag_p50_ms: quantile_ms(&settled, 0.50),
        settled_lag_max_ms: quantile_ms(&settled, 1.0),
        not_settled: settle.map(|_| samples.iter().filter(|s| s.settled.is_none()).count()),
        settled_after_load_seconds: settle
            .and_then(|_| after_load(samples, |s| s.settled, load_end)),
        sustained,
        polls: watched.polls,
        poll_errors: watched.poll_errors,
        first_poll_error: watched.first_poll_error,
        server_cpu_seconds: server_cpu,
        server_peak_rss_mib: server_rss,
        client_cpu_seconds: client_cpu,
        first_error: c.first_error.lock().ok().and_then(|e| e.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_second_holds_the_rate_in_interleaved_chunks() {
        let base = 1_730_887_200_000_000_000i64;
        for rate in [1u64, 7, 20, 999, 1000, 1001, 2500, 4000] {
            let plan = Plan::Paced {
                rate,
                base_ns: base,
            };
            let k = Plan::per_second(rate);
            let specs: Vec<Spec> = (0..2 * k).map(|no| plan.spec(no, 0)).collect();
            for (second, chunk) in specs.chunks(k as usize).enumerate() {
                let from = base + second as i64 * NS;
                assert_eq!(
                    chunk.iter().map(|s| s.requests as u64).sum::<u64>(),
                    rate,
                    "{rate}/s"
                );
                let mut starts = std::collections::BTreeSet::new();
                for s in chunk {
                    assert!(s.gap_ms >= 1 && s.requests >= 1 && s.requests <= 1000);
                    assert!(s.start_ns >= from && s.start_ns < from + NS, "{s:?}");
                    let last = s.start_ns + (s.requests as i64 - 1) * s.gap_ms * 1_000_000;
                    assert!(last < from + NS, "{rate}/s: {s:?}");
                    // Sent once the second is over.
                    assert!(
                        s.due_ns
                            .is_some_and(|d| d >= from + NS && d < from + 2 * NS)
                    );
                    for i in 0..s.requests as i64 {
                        starts.insert(s.start_ns + i * s.gap_ms * 1_000_000);
                    }
                }
                // Interleaved: no two requests start at the same instant.
                assert_eq!(starts.len() as u64, rate, "{rate}/s");
            }
        }
        assert_eq!(Plan::Unpaced.spec(3, 42).start_ns, 42);
        assert_eq!(Plan::Unpaced.spec(3, 42).due_ns, None);
    }

    #[test]
    fn a_chunk_samples_real_requests_and_its_last() {
        let spec = Plan::Paced {
            rate: 300,
            base_ns: 1_730_887_200_000_000_000,
        }
        .spec(0, 0);
        let c = make_chunk(spec, 11);
        let t = generate(11, spec.requests, spec.start_ns, spec.gap_ms);
        assert_eq!(c.requests, 300);
        assert_eq!(c.pick.ids.len(), SAMPLE_IDS);
        assert_eq!(c.pick.ids.last(), t.truth.last().map(|x| &x.request_id));
        assert!(
            c.pick
                .ids
                .iter()
                .all(|id| t.truth.iter().any(|x| &x.request_id == id))
        );
        assert!(
            c.bodies.records() > 6 * c.requests,
            "{}",
            c.bodies.records()
        );
    }

    #[test]
    fn the_poll_statement_prunes_by_time_and_quotes_ids() {
        let sql = presence_sql(&["a", "b'c"], 1, 2);
        assert!(sql.contains("time >= to_timestamp_nanos(1)"), "{sql}");
        assert!(sql.contains("time < to_timestamp_nanos(2)"), "{sql}");
        assert!(sql.ends_with("request_id IN ('a', 'b''c')"), "{sql}");
    }
}
