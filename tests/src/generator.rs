//! A generator of end-to-end traffic with known truth, for the correlation tests and the
//! correlation benchmark.
//!
//! [`generate`] takes a seed, a request count, a start time and the gap between requests;
//! gives the inputs seam ingests (APIM storage JSON Lines, custom gateway events, Mule JSON
//! Logger lines, Mule runtime log4j events, OTLP/JSON spans) and what seam must make of
//! them: per request its `requests` row ([`Truth`]), per probe its `probes` row
//! ([`ProbeTruth`]), and the background runs and platform lines that stay in the raw tables
//! only.
//!
//! Requests cycle through the eleven [`KINDS`]: successes through the gateway (with and
//! without spans), bypasses, denials by the gateway, the integration and the backend,
//! successes with an expired token, one token shared by two client addresses, parallel
//! backend calls (the union counts once), requests linked by trace id only (the gateway did
//! not forward a correlation id), and failed downstream calls: the requester's
//! `BEFORE_REQUEST` is never closed by an `AFTER_REQUEST`, the call fails with
//! `HTTP:CONNECTIVITY` (connection refused, 1 to 30 ms) or `HTTP:TIMEOUT` (1 to 3 s), and in
//! turn: a JSON Logger `EXCEPTION` then an `END` 502 (on-error-continue); an `EXCEPTION`
//! alone, the gateway answering 504 (on-error-propagate: no `END`, the flow's time is the
//! `EXCEPTION`'s `elapsed`); Mule's log4j error block (`Error type : HTTP:CONNECTIVITY`, the
//! correlation id in the `event:` of the processor bracket) then an `END` 502. Their
//! `backend_ms` runs from the `BEFORE_REQUEST` to the failure, no spans. Every fifth gateway
//! record comes late, every seventh twice.
//!
//! Around the requests, the noise of a real estate, deterministic from the seed:
//! - **Kubernetes probes** of six Mule apps (`gen-papi` among them), each pod probed by the
//!   kubelet of its node (`10.240.0.x`, user agent `kube-probe/1.29`) for liveness and
//!   readiness, each probe of a pod every 10 to 60 s (drawn per pod and probe). Two pods per
//!   app, and one more per app (up to [`MAX_REPLICAS`]) until the probes outnumber the
//!   requests: 2,000 requests 500 ms apart (about 17 minutes) get five pods per app and
//!   about 2,100 kubelet probes (2,058 with seed 42); short runs get up to sixteen. A probe
//!   is JSON Logger `START`/`END` lines of the app's probe flow (`api-ping-handler`,
//!   `health-flow`, …; `requestPath`, `method`,
//!   `remoteAddress` and the user agent under `userAgent`, `user-agent` or `User-Agent` in
//!   `content`) and, in traced apps, a Mule SERVER span (`url.path`, `http.route`,
//!   `user_agent.original`, `client.address`, `correlation.id`); one app traces its probes
//!   but logs none. Paths: `/ping`, `/api/health/ready`, `/healthz`, `/actuator/health/…`, …;
//!   one app's (`/api/v1/alive`, `/api/v1/ready-state`) are on no probe path list: only the
//!   user agent tells.
//! - **External probes**: uptime monitors on public addresses (198.18.7.20 and .21,
//!   203.0.113.250) calling `/health` of two apps directly every 60 s, no gateway record:
//!   what `audit_external_probes` lists.
//! - **Gateway probes**: Azure Traffic Manager's `GET /status-0123456789abcdef` on APIM (user
//!   agent `Azure Traffic Manager Endpoint Monitor`, in `requestHeaders`) from three public
//!   addresses every 30 s, answered by the gateway itself; every fifth also comes late.
//! - **Background runs**: scheduled and polling flows with arbitrary names
//!   (`rating-tables-sync`, `nightly-ledger-export`, `sfdc-account-poller`,
//!   `invoice-batch-step`, `stock-snapshot-sync`; [`background_flows`]): `START`, a
//!   `BEFORE_REQUEST` and `AFTER_REQUEST` per downstream call, `END`, with correlation ids but
//!   no request path, method or caller; in traced apps an INTERNAL root span and CLIENT
//!   requester spans (and the called service's own SERVER span), never a Mule SERVER span.
//! - **Platform lines**: Mule runtime log4j events without a correlation id: deployment
//!   banners (`Started app '…'`), `Mule is up and kicking`, a connectivity warning, agent
//!   heartbeats every 30 s, DEBUG lines every 7 s.
//! - **Delivery**: Mule lines in time order but a few out of order; every thirteenth probe
//!   `START` line shipped a second time ([`Traffic::mule_duplicates`]).
//!
//! A `/ingest/mule` body is JSON or log4j text, not both (the lines of a multi-line log4j
//! event inside a JSON Lines body are refused): the log4j events are apart, in
//! [`Traffic::mule_log4j`]. [`Traffic::gateway_lines`] holds every gateway record once.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What a generated request must become.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// `requests.request_id`.
    pub request_id: String,
    /// Mule correlation id, when Mule saw it.
    pub mule_correlation_id: Option<String>,
    /// Kind of request (one of [`KINDS`]).
    pub kind: &'static str,
    /// `status_code`.
    pub status: i32,
    /// `rejected_by`.
    pub rejected_by: Option<&'static str>,
    /// `bypassed_gateway`.
    pub bypass: bool,
    /// `token_expired` and succeeded.
    pub expired_success: bool,
    /// `token_id`.
    pub token_id: String,
    /// `has_gateway`: a gateway record of it exists.
    pub has_gateway: bool,
    /// `backend_ms`, when known: the downstream calls' union, or from a failed call's
    /// `BEFORE_REQUEST` to its failure.
    pub backend_ms: Option<f64>,
    /// `gateway_ms`, when a gateway record exists.
    pub gateway_ms: Option<f64>,
    /// `integration_ms`, when Mule saw it: the flow's time less `backend_ms`.
    pub integration_ms: Option<f64>,
    /// `network_ms`: the gateway's backend time less the Mule flow's time, when the request
    /// went through both.
    pub network_ms: Option<f64>,
    /// `total_ms`: the gateway's total time, else (a bypass) the Mule flow's time.
    pub total_ms: Option<f64>,
}

/// What a generated probe must become in `probes` (never a request, never a bypass).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTruth {
    /// `probe_id`: a gateway probe's APIM correlation id, else the probe's Mule correlation
    /// id.
    pub probe_id: String,
    /// `time`: when the probe started (ns since the epoch).
    pub time_ns: i64,
    /// `mule_app`: the app probed; `None` for a gateway probe.
    pub mule_app: Option<String>,
    /// `flow`: the probe flow, when the app logs its probes.
    pub flow: Option<String>,
    /// `url_path`.
    pub url_path: String,
    /// `client_ip`: the kubelet's node, the monitor's or Traffic Manager's address.
    pub client_ip: String,
    /// `user_agent`.
    pub user_agent: String,
    /// `matched_by`: `path` when the path is on the default probe path list (paths are
    /// looked at first), else `user_agent`.
    pub matched_by: &'static str,
    /// `external`: the caller's address is public (not internal, not the gateway's egress).
    pub external: bool,
    /// `has_gateway`: a gateway record is part of it (a gateway probe).
    pub has_gateway: bool,
    /// `has_flow`: it logged JSON Logger lines.
    pub has_flow: bool,
    /// `has_spans`: it has a Mule SERVER span.
    pub has_spans: bool,
}

impl ProbeTruth {
    /// Whether `audit_external_probes` lists it (settled): external, no gateway record.
    pub fn audited(&self) -> bool {
        self.external && !self.has_gateway
    }
}

/// Generated inputs.
#[derive(Debug, Default)]
pub struct Traffic {
    /// APIM storage-archive lines, each record once (requests and gateway probes; sent first,
    /// the late ones are apart).
    pub gateway_lines: Vec<String>,
    /// Gateway records delivered late (after everything else), in a `{"records":[…]}` body:
    /// some sent for the first time, some a second time.
    pub late_gateway: Vec<Value>,
    /// Custom gateway events (JSON lines).
    pub events: Vec<String>,
    /// Mule JSON Logger lines (requests, probes, background runs), each once, in time order
    /// but a few out of order.
    pub mule_lines: Vec<String>,
    /// Mule runtime log4j events in time order, one string per event (banners and error
    /// blocks span several lines): the platform lines and the error blocks of failed calls.
    /// Sent in bodies of their own (text, not JSON).
    pub mule_log4j: Vec<String>,
    /// Lines of [`Traffic::mule_lines`] shipped a second time (sent after them).
    pub mule_duplicates: Vec<String>,
    /// OTLP/JSON `ExportTraceServiceRequest` bodies.
    pub otlp: Vec<Value>,
    /// The truth, one per request.
    pub truth: Vec<Truth>,
    /// The probes: each must be in `probes`, none in `requests`.
    pub probes: Vec<ProbeTruth>,
    /// The correlation ids of the background runs: neither a request nor a probe.
    pub background_correlation_ids: Vec<String>,
    /// How many background runs (scheduler and poller executions) there are.
    pub background_runs: usize,
    /// How many of [`Traffic::mule_log4j`] are platform lines (no correlation id).
    pub platform_lines: usize,
    /// The token shared by two client addresses.
    pub shared_token: String,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::new();
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn iso(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MS: i64 = 1_000_000;
const MULE_APP: &str = "gen-papi";
const BACKEND: &str = "gen-sapi";
/// The instrumentation scope of the Mule runtime's spans.
const MULE_SCOPE: &str = "mule-tracer";
/// The instrumentation scope of the Java services' spans.
const JAVA_SCOPE: &str = "io.opentelemetry.java";
/// The ARM id of the APIM service of [`generate`].
const GEN_APIM_RESOURCE_ID: &str =
    "/SUBSCRIPTIONS/G/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/GEN-APIM";

/// The address APIM calls the integration layer from (its egress, `correlation.
/// gateway_egress`): the caller Mule logs for every request that came through the gateway.
pub const GATEWAY_EGRESS: &str = "198.51.100.23";

/// The kinds of request [`generate`] cycles through: request `i` is of kind `i % 11`.
pub const KINDS: [&str; 11] = [
    "bypass",
    "gateway_denial",
    "integration_denial",
    "backend_denial",
    "expired_success",
    "parallel",
    "trace_only",
    "shared_token",
    "no_spans",
    "ok",
    "failed_call",
];

/// The kubelet's user agent.
pub const KUBE_PROBE_AGENT: &str = "kube-probe/1.29";
/// Azure Traffic Manager's probe user agent and the APIM path it probes.
const ATM_AGENT: &str = "Azure Traffic Manager Endpoint Monitor";
const ATM_PATH: &str = "/status-0123456789abcdef";
/// Addresses Traffic Manager probes from (public).
const ATM_PROBE_IPS: [&str; 3] = ["40.68.30.66", "13.65.92.252", "52.173.90.107"];
/// Pods per probed app, at least.
const MIN_REPLICAS: usize = 2;
/// Pods per probed app, at most (more pods are added only while the probes do not yet
/// outnumber the requests).
pub const MAX_REPLICAS: usize = 16;
/// The service the background runs call (a Java service with its own spans).
const NOISE_BACKEND: &str = "tables-api";

/// An app whose pods Kubernetes probes: its probe flow and paths, whether it logs its
/// probes (JSON Logger) and traces (Mule spans), and the `content` key its probe lines log
/// the user agent under.
struct ProbedApp {
    app: &'static str,
    flow: &'static str,
    liveness: &'static str,
    readiness: &'static str,
    logs: bool,
    traced: bool,
    agent_key: &'static str,
}

static PROBED_APPS: [ProbedApp; 6] = [
    ProbedApp {
        app: MULE_APP,
        flow: "api-ping-handler",
        liveness: "/ping",
        readiness: "/api/health/ready",
        logs: true,
        traced: true,
        agent_key: "userAgent",
    },
    ProbedApp {
        app: "customer-sapi",
        flow: "health-flow",
        liveness: "/health/live",
        readiness: "/health/ready",
        logs: true,
        traced: false,
        agent_key: "userAgent",
    },
    ProbedApp {
        app: "orders-eapi",
        flow: "k8s-status-listener",
        liveness: "/healthz",
        readiness: "/readyz",
        logs: true,
        traced: false,
        agent_key: "user-agent",
    },
    ProbedApp {
        app: "rating-engine-papi",
        flow: "get:\\alive:rating-engine-config",
        liveness: "/api/v1/alive",
        readiness: "/api/v1/ready-state",
        logs: true,
        traced: true,
        agent_key: "User-Agent",
    },
    ProbedApp {
        app: "ledger-sapi",
        flow: "actuator-health",
        liveness: "/actuator/health/liveness",
        readiness: "/actuator/health/readiness",
        logs: false,
        traced: true,
        agent_key: "userAgent",
    },
    ProbedApp {
        app: "notification-papi",
        flow: "heartbeat-flow",
        liveness: "/api/ping",
        readiness: "/heartbeat",
        logs: true,
        traced: false,
        agent_key: "userAgent",
    },
];

/// Uptime monitors calling `/health` of an app directly from a public address: (index in
/// `PROBED_APPS`, address, user agent).
const EXTERNAL_MONITORS: [(usize, &str, &str); 3] = [
    (
        1,
        "198.18.7.20",
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    ),
    (
        1,
        "198.18.7.21",
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    ),
    (
        0,
        "203.0.113.250",
        "UptimeRobot/2.0 (http://www.uptimerobot.com/)",
    ),
];

/// Scheduled and polling flows: (app, flow, period in seconds, downstream calls per run).
/// Their spans follow the app's tracing (`PROBED_APPS`).
const BACKGROUND: [(&str, &str, i64, usize); 5] = [
    ("rating-engine-papi", "rating-tables-sync", 60, 2),
    ("ledger-sapi", "nightly-ledger-export", 240, 3),
    ("customer-sapi", "sfdc-account-poller", 15, 1),
    ("ledger-sapi", "invoice-batch-step", 20, 1),
    (MULE_APP, "stock-snapshot-sync", 45, 1),
];

/// The flows of the background runs (scheduler and poller flows).
pub fn background_flows() -> Vec<&'static str> {
    BACKGROUND.iter().map(|b| b.1).collect()
}

/// The default probe paths of `correlation.probe_paths` the generated paths are checked
/// against (`/*`: anything below).
const DEFAULT_PROBE_PATHS: &[&str] = &[
    "/ping",
    "/health",
    "/health/*",
    "/healthz",
    "/ready",
    "/readyz",
    "/live",
    "/livez",
    "/liveness",
    "/readiness",
    "/heartbeat",
    "/status",
    "/api/ping",
    "/api/health",
    "/api/health/*",
    "/actuator/health",
    "/actuator/health/*",
    "/status-0123456789abcdef",
];

/// `path` when `path` is on the default probe path list (case, a trailing slash and the
/// query ignored), else `user_agent`.
fn matched_by(path: &str) -> &'static str {
    let p = path.split(['?', '#']).next().unwrap_or(path);
    let p = p.trim_end_matches('/').to_ascii_lowercase();
    let listed = DEFAULT_PROBE_PATHS
        .iter()
        .any(|pattern| match pattern.strip_suffix("/*") {
            Some(prefix) => p.starts_with(prefix) && p[prefix.len()..].starts_with('/'),
            None => p == *pattern,
        });
    if listed { "path" } else { "user_agent" }
}

fn attr(k: &str, v: &str) -> Value {
    json!({"key": k, "value": {"stringValue": v}})
}

/// One generated span.
struct SpanSpec<'a> {
    trace: &'a str,
    id: &'a str,
    parent: Option<&'a str>,
    name: &'a str,
    kind: i32,
    start: i64,
    end: i64,
    attrs: Vec<Value>,
    error: bool,
}

fn span(s: SpanSpec<'_>) -> Value {
    json!({
        "traceId": s.trace, "spanId": s.id, "parentSpanId": s.parent.unwrap_or(""),
        "name": s.name, "kind": s.kind, "startTimeUnixNano": s.start.to_string(),
        "endTimeUnixNano": s.end.to_string(), "attributes": s.attrs,
        "status": {"code": if s.error { 2 } else { 0 }}
    })
}

fn resource_spans(service: &str, scope: &str, spans: Vec<Value>) -> Value {
    json!({
        "resource": {"attributes": [attr("service.name", service)]},
        "scopeSpans": [{"scope": {"name": scope, "version": "1.0.0"}, "spans": spans}]
    })
}

/// Generates `n` requests starting at `start_ns`, one every `gap_ms` milliseconds, and the
/// noise around them over the same time (see the module documentation).
pub fn generate(seed: u64, n: usize, start_ns: i64, gap_ms: i64) -> Traffic {
    let mut rng = Rng(seed | 1);
    let mut t = Traffic {
        shared_token: "uti:gen-shared-token".into(),
        ..Default::default()
    };
    // Mule lines and log4j events with their times: delivered in time order at the end.
    let mut mule: Vec<(i64, String)> = Vec::new();
    let mut log4j: Vec<(i64, String)> = Vec::new();
    let mut mule_spans: Vec<Value> = Vec::new();
    let mut backend_spans: Vec<Value> = Vec::new();
    for i in 0..n {
        let t0 = start_ns + i as i64 * gap_ms * MS;
        let kind = KINDS[i % KINDS.len()];
        let round = i / KINDS.len();
        let apim = rng.uuid();
        let trace = rng.hex(32);
        let uti = if kind == "shared_token" {
            "gen-shared-token".to_string()
        } else {
            format!("gen-{}", rng.hex(12))
        };
        let token_id = format!("uti:{uti}");
        let exp_s = if kind == "expired_success" {
            t0 / 1_000_000_000 - 600
        } else {
            t0 / 1_000_000_000 + 3600
        };
        let client_ip = if kind == "shared_token" {
            format!("192.0.2.{}", 10 + round % 2)
        } else {
            format!("203.0.113.{}", rng.below(200) + 1)
        };
        let caller = json!({"uti": uti, "azp": "gen-client", "tid": "gen-tenant", "exp": exp_s});
        let has_gateway = kind != "bypass";
        let reaches_mule = kind != "gateway_denial";
        // Mule's correlation id: the gateway's, except without forwarding.
        let mule_cid = if kind == "bypass" || kind == "trace_only" {
            rng.uuid()
        } else {
            apim.clone()
        };
        // How a failed call fails, in turn: 0 connection refused, a JSON Logger EXCEPTION,
        // on-error-continue answering 502; 1 a timeout, an EXCEPTION, on-error-propagate
        // (no END, the gateway answers 504); 2 connection refused, Mule's log4j error block,
        // on-error-continue answering 502.
        let failed = kind == "failed_call";
        let failure = round % 3;
        let timed_out = failed && failure == 1;
        // Timings (ms).
        let gw_overhead = 5 + rng.below(20) as i64;
        let network = 3 + rng.below(10) as i64;
        let own = 10 + rng.below(40) as i64;
        let (call_a, call_b) = (20 + rng.below(80) as i64, 20 + rng.below(80) as i64);
        let parallel = kind == "parallel";
        let downstream = if parallel {
            // Two calls started together: the union is the longer.
            call_a.max(call_b)
        } else if timed_out {
            // The requester's response timeout.
            1000 + rng.below(2000) as i64
        } else if failed {
            // Refused at once.
            1 + rng.below(30) as i64
        } else {
            call_a
        };
        // Time in the flow before the downstream call.
        let before = own / 2;
        // Without an END the flow's time is the EXCEPTION's elapsed: it ends at the failure.
        let flow_ms = if timed_out {
            before + downstream
        } else {
            own + downstream
        };
        let backend_time = flow_ms + network;
        let total = backend_time + gw_overhead;
        let (status, backend_status, rejected_by): (i32, Option<i32>, Option<&'static str>) =
            match kind {
                "gateway_denial" => (401, None, Some("gateway")),
                "integration_denial" => (500, Some(500), Some("integration")),
                "backend_denial" => (403, Some(403), Some("backend")),
                "failed_call" if timed_out => (504, Some(504), Some("backend")),
                "failed_call" => (502, Some(502), Some("backend")),
                _ => (200, Some(200), None),
            };
        let mule_start = t0 + (gw_overhead / 2) * MS;
        let with_spans = kind != "no_spans" && !failed && reaches_mule;
        let mule_span = rng.hex(16);
        if has_gateway {
            let mut props = json!({
                "method": "GET", "url": format!("https://gen-apim.azure-api.net/gen/v1/items/{i}"),
                "responseCode": status, "apiId": "gen-api", "operationId": "get-item",
                "apimSubscriptionId": "gen-sub",
                "requestHeaders": {"traceparent": format!("00-{trace}-{}-01", rng.hex(16))},
            });
            if reaches_mule {
                props["backendResponseCode"] = json!(backend_status);
                props["backendTime"] = json!(backend_time);
                let mut bh = json!({"traceparent": format!("00-{trace}-{}-01", rng.hex(16))});
                if kind != "trace_only" {
                    bh["X-Correlation-ID"] = json!(apim);
                }
                props["backendRequestHeaders"] = bh;
            } else {
                props["lastError"] = json!({"source": "validate-jwt", "reason": "TokenNotPresent", "section": "inbound"});
            }
            let rec = json!({
                "time": iso(t0), "resourceId": GEN_APIM_RESOURCE_ID,
                "category": "GatewayLogs", "operationName": "Microsoft.ApiManagement/GatewayLogs",
                "durationMs": total, "callerIpAddress": client_ip, "correlationId": apim,
                "properties": props
            });
            // Every fifth gateway record comes late; every seventh also comes twice.
            if i % 5 == 1 {
                t.late_gateway.push(rec.clone());
            } else {
                t.gateway_lines.push(rec.to_string());
            }
            if i % 7 == 3 {
                t.late_gateway.push(rec);
            }
            t.events.push(
                json!({"EventTime": iso(t0 + total * MS), "ServiceName": "gen-apim.azure-api.net",
                       "RequestId": apim, "StatusCode": status, "Section": "outbound",
                       "Jwt": caller.clone()})
                .to_string(),
            );
        }
        if reaches_mule {
            let remote = if has_gateway {
                format!("/{GATEWAY_EGRESS}:40000")
            } else {
                "/10.20.4.17:50000".to_string()
            };
            let mut content = json!({"method": "GET", "requestPath": format!("/api/items/{i}"), "remoteAddress": remote});
            content["caller"] = caller.clone();
            let line = |tp: &str, priority: &str, at: i64, elapsed: i64, content: Value| {
                let text =
                    json_logger_line(&mule_cid, "gen-main", tp, priority, at, elapsed, content);
                (at, text)
            };
            mule.push(line("START", "INFO", mule_start, 0, content));
            let end_status = if kind == "integration_denial" || kind == "backend_denial" {
                status
            } else {
                200
            };
            if failed {
                // The call starts and fails; nothing closes it.
                let t1 = mule_start + before * MS;
                let t2 = t1 + downstream * MS;
                let path = format!("/api/stock/{i}");
                let target = format!("http://{BACKEND}.internal:8081{path}");
                mule.push(line(
                    "BEFORE_REQUEST",
                    "INFO",
                    t1,
                    before,
                    json!({"target": target, "method": "GET"}),
                ));
                let (error_type, reason) = if timed_out {
                    ("HTTP:TIMEOUT", "Timeout exceeded")
                } else {
                    ("HTTP:CONNECTIVITY", "Connection refused")
                };
                let description = format!("HTTP GET on resource '{target}' failed: {reason}.");
                if failure == 2 {
                    let block = error_block(&ErrorBlock {
                        at: t2,
                        cid: &mule_cid,
                        app: MULE_APP,
                        flow: "gen-main",
                        error_type,
                        message: &description,
                        path: &path,
                    });
                    log4j.push((t2, block));
                } else {
                    mule.push(line(
                        "EXCEPTION",
                        "ERROR",
                        t2,
                        before + downstream,
                        json!({"errorType": error_type, "errorDescription": description}),
                    ));
                }
                if !timed_out {
                    mule.push(line(
                        "END",
                        "WARN",
                        mule_start + flow_ms * MS,
                        flow_ms,
                        json!({"statusCode": status}),
                    ));
                }
            } else {
                if !with_spans {
                    // Downstream evidence from JSON Logger alone.
                    let at = mule_start + (own / 2 + downstream) * MS;
                    mule.push(line(
                        "AFTER_REQUEST",
                        "INFO",
                        at,
                        own / 2 + downstream,
                        json!({"statusCode": backend_status, "durationMs": downstream}),
                    ));
                }
                let mut end = json!({"statusCode": end_status});
                if kind == "backend_denial" {
                    end["errorType"] = json!("HTTP:FORBIDDEN");
                }
                mule.push(line("END", "INFO", mule_start + flow_ms * MS, flow_ms, end));
            }
            if with_spans {
                let mut attrs = vec![attr("correlation.id", &mule_cid)];
                attrs.push(attr("http.status_code", &end_status.to_string()));
                let server_parent = if has_gateway { Some(rng.hex(16)) } else { None };
                mule_spans.push(span(SpanSpec {
                    trace: &trace,
                    id: &mule_span,
                    parent: server_parent.as_deref(),
                    name: "GET /api/*",
                    kind: 2,
                    start: mule_start,
                    end: mule_start + flow_ms * MS,
                    attrs,
                    error: kind == "integration_denial",
                }));
                let calls: Vec<i64> = if parallel {
                    vec![call_a, call_b]
                } else {
                    vec![call_a]
                };
                for (k, dur) in calls.into_iter().enumerate() {
                    let cid = rng.hex(16);
                    let cs = mule_start + (own / 2) * MS;
                    let code = if kind == "backend_denial" { 403 } else { 200 };
                    mule_spans.push(span(SpanSpec {
                        trace: &trace,
                        id: &cid,
                        parent: Some(&mule_span),
                        name: "GET",
                        kind: 3,
                        start: cs,
                        end: cs + dur * MS,
                        attrs: vec![attr("http.status_code", &code.to_string())],
                        error: code >= 400,
                    }));
                    let backend_id = rng.hex(16);
                    let name = format!("GET /stock/{k}");
                    backend_spans.push(span(SpanSpec {
                        trace: &trace,
                        id: &backend_id,
                        parent: Some(&cid),
                        name: &name,
                        kind: 2,
                        start: cs + MS,
                        end: cs + (dur - 1) * MS,
                        attrs: vec![attr("http.response.status_code", &code.to_string())],
                        error: false,
                    }));
                }
            }
        }
        let request_id = if has_gateway {
            apim.clone()
        } else {
            mule_cid.clone()
        };
        let total_ms = if has_gateway { total } else { flow_ms };
        t.truth.push(Truth {
            request_id,
            mule_correlation_id: reaches_mule.then(|| mule_cid.clone()),
            kind,
            status,
            rejected_by,
            bypass: kind == "bypass",
            expired_success: kind == "expired_success",
            token_id,
            has_gateway,
            backend_ms: reaches_mule.then_some(downstream as f64),
            gateway_ms: has_gateway.then_some(if reaches_mule {
                gw_overhead as f64
            } else {
                total as f64
            }),
            integration_ms: reaches_mule.then_some((flow_ms - downstream) as f64),
            network_ms: (has_gateway && reaches_mule).then_some(network as f64),
            total_ms: Some(total_ms as f64),
        });
        if mule_spans.len() >= 300 || i + 1 == n {
            t.otlp.push(json!({"resourceSpans": [
                resource_spans(MULE_APP, MULE_SCOPE, std::mem::take(&mut mule_spans)),
                resource_spans(BACKEND, JAVA_SCOPE, std::mem::take(&mut backend_spans)),
            ]}));
        }
    }
    let mut noise = Noise::new(seed, start_ns, start_ns + n as i64 * gap_ms * MS);
    noise.add_all(&mut t, n);
    mule.append(&mut noise.mule);
    log4j.append(&mut noise.log4j);
    t.mule_lines = in_time_order(mule, true);
    t.mule_log4j = in_time_order(log4j, false);
    noise.spans_into(&mut t);
    t
}

/// `lines` sorted by time (stable: lines of one instant keep their order); with `shuffle`,
/// a few out of order: every 97th line swapped with the one 40 lines on.
fn in_time_order(mut lines: Vec<(i64, String)>, shuffle: bool) -> Vec<String> {
    lines.sort_by_key(|(at, _)| *at);
    let mut out: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    if shuffle {
        let mut k = 50;
        while k + 40 < out.len() {
            out.swap(k, k + 40);
            k += 97;
        }
    }
    out
}

/// A log4j time as Mule's default pattern writes it (`%d`, the JVM's zone: UTC here):
/// `2024-11-06 10:00:00,150`.
fn log4j_time(ns: i64) -> String {
    let c = civil_of(ns);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}",
        c.y, c.m, c.d, c.hh, c.mm, c.ss, c.ms
    )
}

/// The first line of a log4j event in Mule 4's default pattern (`%-5p %d [%t] [processor:
/// …; event: …] %c: %m`), up to its message.
fn log4j_header(
    level: &str,
    at: i64,
    thread: &str,
    processor: &str,
    event: &str,
    logger: &str,
) -> String {
    format!(
        "{level:<5} {} [{thread}] [processor: {processor}; event: {event}] {logger}: ",
        log4j_time(at)
    )
}

/// A Mule 4 event thread of `app`'s `flow`.
fn mule_thread(app: &str, flow: &str) -> String {
    format!("[MuleRuntime].uber.03: [{app}].{flow}.CPU_LITE @2a9b1c3d")
}

/// A runtime banner: an INFO event with an empty message, then the block of `lines`
/// between two rules of stars.
fn banner(at: i64, logger: &str, lines: &[String]) -> String {
    let rule = "*".repeat(70);
    let mut out = log4j_header("INFO", at, "WrapperListener_start_runner", "", "", logger);
    out.push('\n');
    out.push_str(&rule);
    for l in lines {
        out.push_str(&format!("\n* {l:<66} *"));
    }
    out.push('\n');
    out.push_str(&rule);
    out
}

/// A failed HTTP request as Mule 4's error handler logs it.
struct ErrorBlock<'a> {
    at: i64,
    cid: &'a str,
    app: &'a str,
    flow: &'a str,
    error_type: &'a str,
    message: &'a str,
    path: &'a str,
}

/// The log4j error block of `b` (on-error-continue): an ERROR event with an empty message,
/// then `Key : value` lines between two rules of stars.
fn error_block(b: &ErrorBlock<'_>) -> String {
    let rule = "*".repeat(80);
    let processor = format!("{}/processors/2", b.flow);
    let element = format!("{processor} @ {}:gen.xml:41 (Request stock)", b.app);
    [
        log4j_header(
            "ERROR",
            b.at,
            &mule_thread(b.app, b.flow),
            &processor,
            b.cid,
            "org.mule.runtime.core.internal.exception.OnErrorContinueHandler",
        ),
        rule.clone(),
        format!("Message               : {}", b.message),
        format!("Element               : {element}"),
        format!(
            "Element DSL           : <http:request method=\"GET\" doc:name=\"Request stock\" config-ref=\"Stock_API_Config\" path=\"{}\"></http:request>",
            b.path
        ),
        format!("Error type            : {}", b.error_type),
        format!("FlowStack             : at {}({element})", b.flow),
        String::new(),
        "  (set debug level logging or '-Dmule.verbose.exceptions=true' for everything)"
            .to_string(),
        rule,
    ]
    .join("\n")
}

/// One probe as the probed app records it.
struct MuleProbe<'a> {
    app: &'a ProbedApp,
    path: &'a str,
    client: &'a str,
    user_agent: &'a str,
    external: bool,
    at: i64,
}

/// One run of a scheduled or polling flow.
struct BackgroundRun<'a> {
    app: &'static str,
    flow: &'static str,
    calls: usize,
    traced: bool,
    at: i64,
    cid: &'a str,
}

/// The noise of a real estate between `start` and `end` (module documentation), drawn from
/// its own generator so that the requests are what they would be without it.
struct Noise {
    rng: Rng,
    start: i64,
    end: i64,
    /// JSON Logger lines with their times.
    mule: Vec<(i64, String)>,
    /// log4j events with their times.
    log4j: Vec<(i64, String)>,
    /// Spans by (service, scope).
    spans: BTreeMap<(&'static str, &'static str), Vec<Value>>,
    /// Probe START lines written so far (every thirteenth is shipped twice).
    logged: usize,
}

impl Noise {
    fn new(seed: u64, start: i64, end: i64) -> Self {
        Self {
            rng: Rng((seed ^ 0x6E6F_6973_655F_7365) | 1),
            start,
            end,
            mule: Vec::new(),
            log4j: Vec::new(),
            spans: BTreeMap::new(),
            logged: 0,
        }
    }

    /// Every kind of noise, around `n` requests.
    fn add_all(&mut self, t: &mut Traffic, n: usize) {
        self.kube_probes(t, n);
        self.external_probes(t);
        self.gateway_probes(t);
        self.background(t);
        self.platform(t);
    }

    /// Times every `period_ms` from a random phase within the first period, up to the end.
    fn ticks(&mut self, period_ms: i64) -> Vec<i64> {
        let period_ms = period_ms.max(1);
        let mut at = self.start + self.rng.below(period_ms as u64) as i64 * MS;
        let mut out = Vec::new();
        while at < self.end {
            out.push(at);
            at += period_ms * MS;
        }
        out
    }

    fn add_span(&mut self, service: &'static str, scope: &'static str, s: Value) {
        self.spans.entry((service, scope)).or_default().push(s);
    }

    /// The kubelet probes: pods of every probed app, one more per app at a time, until the
    /// probes outnumber the `n` requests (at least `MIN_REPLICAS`, at most `MAX_REPLICAS`
    /// pods per app).
    fn kube_probes(&mut self, t: &mut Traffic, n: usize) {
        let mut replica = 0usize;
        let mut probes = 0usize;
        while replica < MIN_REPLICAS || (probes < n && replica < MAX_REPLICAS) {
            for (a, app) in PROBED_APPS.iter().enumerate() {
                // The pod's node: its kubelet probes it from the node's address.
                let node = format!("10.240.0.{}", 4 + (a * 5 + replica * 3) % 24);
                for path in [app.liveness, app.readiness] {
                    let period = 1000 * (10 + self.rng.below(51) as i64);
                    for at in self.ticks(period) {
                        self.mule_probe(
                            t,
                            &MuleProbe {
                                app,
                                path,
                                client: &node,
                                user_agent: KUBE_PROBE_AGENT,
                                external: false,
                                at,
                            },
                        );
                        probes += 1;
                    }
                }
            }
            replica += 1;
        }
    }

    /// Uptime monitors calling `/health` directly, every 60 s.
    fn external_probes(&mut self, t: &mut Traffic) {
        for (app, client, user_agent) in EXTERNAL_MONITORS {
            for at in self.ticks(60_000) {
                self.mule_probe(
                    t,
                    &MuleProbe {
                        app: &PROBED_APPS[app],
                        path: "/health",
                        client,
                        user_agent,
                        external: true,
                        at,
                    },
                );
            }
        }
    }

    /// One probe of a Mule app: its JSON Logger lines, its SERVER span, its truth.
    fn mule_probe(&mut self, t: &mut Traffic, p: &MuleProbe<'_>) {
        let app = p.app;
        let cid = self.rng.uuid();
        let took = 1 + self.rng.below(4) as i64;
        let end = p.at + took * MS;
        if app.logs {
            let port = 30_000 + self.rng.below(30_000);
            let mut content = json!({"method": "GET", "requestPath": p.path,
                                     "remoteAddress": format!("/{}:{port}", p.client)});
            content[app.agent_key] = json!(p.user_agent);
            let jl = |trace_point: &'static str, at: i64, elapsed: i64| JlLine {
                app: app.app,
                cid: &cid,
                flow: app.flow,
                trace_point,
                priority: "INFO",
                at,
                elapsed,
            };
            let start = jl("START", p.at, 0).with(content);
            if self.logged % 13 == 5 {
                t.mule_duplicates.push(start.clone());
            }
            self.logged += 1;
            self.mule.push((p.at, start));
            let end_line = jl("END", end, took).with(json!({"statusCode": 200}));
            self.mule.push((end, end_line));
        }
        if app.traced {
            let (trace, id) = (self.rng.hex(32), self.rng.hex(16));
            let name = format!("GET {}", p.path);
            let attrs = vec![
                attr("correlation.id", &cid),
                attr("http.request.method", "GET"),
                attr("url.path", p.path),
                attr("http.route", p.path),
                attr("user_agent.original", p.user_agent),
                attr("client.address", p.client),
                attr("http.response.status_code", "200"),
            ];
            let s = span(SpanSpec {
                trace: &trace,
                id: &id,
                parent: None,
                name: &name,
                kind: 2,
                start: p.at,
                end,
                attrs,
                error: false,
            });
            self.add_span(app.app, MULE_SCOPE, s);
        }
        t.probes.push(ProbeTruth {
            probe_id: cid,
            time_ns: p.at,
            mule_app: Some(app.app.to_string()),
            flow: app.logs.then(|| app.flow.to_string()),
            url_path: p.path.to_string(),
            client_ip: p.client.to_string(),
            user_agent: p.user_agent.to_string(),
            matched_by: matched_by(p.path),
            external: p.external,
            has_gateway: false,
            has_flow: app.logs,
            has_spans: app.traced,
        });
    }

    /// Traffic Manager probing APIM's status endpoint, answered by the gateway.
    fn gateway_probes(&mut self, t: &mut Traffic) {
        let mut k = 0usize;
        for client in ATM_PROBE_IPS {
            for at in self.ticks(30_000) {
                let cid = self.rng.uuid();
                let took = self.rng.below(2);
                let rec = json!({
                    "time": iso(at), "resourceId": GEN_APIM_RESOURCE_ID,
                    "category": "GatewayLogs", "operationName": "Microsoft.ApiManagement/GatewayLogs",
                    "durationMs": took, "callerIpAddress": client, "correlationId": cid,
                    "properties": {
                        "method": "GET", "url": format!("https://gen-apim.azure-api.net{ATM_PATH}"),
                        "responseCode": 200, "clientProtocol": "HTTP/1.1",
                        "requestHeaders": {"User-Agent": ATM_AGENT, "Connection": "close"}
                    }
                });
                t.gateway_lines.push(rec.to_string());
                if k % 5 == 2 {
                    // A second copy, late.
                    t.late_gateway.push(rec);
                }
                k += 1;
                t.probes.push(ProbeTruth {
                    probe_id: cid,
                    time_ns: at,
                    mule_app: None,
                    flow: None,
                    url_path: ATM_PATH.to_string(),
                    client_ip: client.to_string(),
                    user_agent: ATM_AGENT.to_string(),
                    matched_by: matched_by(ATM_PATH),
                    external: true,
                    has_gateway: true,
                    has_flow: false,
                    has_spans: false,
                });
            }
        }
    }

    /// The runs of the scheduled and polling flows.
    fn background(&mut self, t: &mut Traffic) {
        for (app, flow, period_s, calls) in BACKGROUND {
            let traced = PROBED_APPS.iter().any(|a| a.app == app && a.traced);
            for at in self.ticks(period_s * 1000) {
                let cid = self.rng.uuid();
                self.background_run(&BackgroundRun {
                    app,
                    flow,
                    calls,
                    traced,
                    at,
                    cid: &cid,
                });
                t.background_correlation_ids.push(cid);
            }
        }
        t.background_runs = t.background_correlation_ids.len();
    }

    /// One background run: START, each downstream call's BEFORE_REQUEST and AFTER_REQUEST,
    /// END; traced, an INTERNAL root span, CLIENT spans and the called service's spans.
    fn background_run(&mut self, r: &BackgroundRun<'_>) {
        let jl = |trace_point: &'static str, at: i64, content: Value| {
            JlLine {
                app: r.app,
                cid: r.cid,
                flow: r.flow,
                trace_point,
                priority: "INFO",
                at,
                elapsed: (at - r.at) / MS,
            }
            .with(content)
        };
        let (trace, root) = (self.rng.hex(32), self.rng.hex(16));
        let start = jl(
            "START",
            r.at,
            json!({"job": r.flow, "trigger": "scheduler"}),
        );
        self.mule.push((r.at, start));
        let host = format!("{NOISE_BACKEND}.contoso.example");
        let mut at = r.at + (2 + self.rng.below(10) as i64) * MS;
        for call in 0..r.calls {
            let target = format!("https://{host}/api/v2/{}?page={call}", r.flow);
            let took = 20 + self.rng.below(200) as i64;
            let done = at + took * MS;
            let before = jl("BEFORE_REQUEST", at, json!({"target": target}));
            self.mule.push((at, before));
            let after = jl(
                "AFTER_REQUEST",
                done,
                json!({"statusCode": 200, "durationMs": took, "target": target}),
            );
            self.mule.push((done, after));
            if r.traced {
                let (client, server) = (self.rng.hex(16), self.rng.hex(16));
                let requester = span(SpanSpec {
                    trace: &trace,
                    id: &client,
                    parent: Some(&root),
                    name: "GET",
                    kind: 3,
                    start: at,
                    end: done,
                    attrs: vec![
                        attr("http.request.method", "GET"),
                        attr("url.full", &target),
                        attr("server.address", &host),
                        attr("http.response.status_code", "200"),
                    ],
                    error: false,
                });
                self.add_span(r.app, MULE_SCOPE, requester);
                let name = format!("GET /api/v2/{}", r.flow);
                let called = span(SpanSpec {
                    trace: &trace,
                    id: &server,
                    parent: Some(&client),
                    name: &name,
                    kind: 2,
                    start: at + MS,
                    end: done - MS,
                    attrs: vec![attr("http.response.status_code", "200")],
                    error: false,
                });
                self.add_span(NOISE_BACKEND, JAVA_SCOPE, called);
            }
            at = done + (1 + self.rng.below(8) as i64) * MS;
        }
        let records = self.rng.below(500);
        let end = jl("END", at, json!({"records": records}));
        self.mule.push((at, end));
        if r.traced {
            let root_span = span(SpanSpec {
                trace: &trace,
                id: &root,
                parent: None,
                name: r.flow,
                kind: 1,
                start: r.at,
                end: at,
                attrs: vec![attr("correlation.id", r.cid)],
                error: false,
            });
            self.add_span(r.app, MULE_SCOPE, root_span);
        }
    }

    /// The Mule runtime's own lines, without a correlation id.
    fn platform(&mut self, t: &mut Traffic) {
        const LOG_UTIL: &str = "org.mule.runtime.core.internal.logging.LogUtil";
        let mut events: Vec<(i64, String)> = Vec::new();
        for (a, app) in PROBED_APPS.iter().enumerate() {
            let at = self.start + (20 + 150 * a as i64) * MS;
            let lines = [
                format!("Started app '{}'", app.app),
                "Application plugins:".to_string(),
                " - HTTP : 1.9.3".to_string(),
                " - APIKit : 1.10.4".to_string(),
                " - JSON Logger : 2.1.0".to_string(),
            ];
            events.push((at, banner(at, LOG_UTIL, &lines)));
        }
        let up = self.start + 1_000 * MS;
        let kicking = ["Mule is up and kicking (every 5000ms)".to_string()];
        events.push((up, banner(up, LOG_UTIL, &kicking)));
        let warn = self.start + 600 * MS;
        let head = log4j_header(
            "WARN",
            warn,
            "WrapperListener_start_runner",
            "",
            "",
            "org.mule.runtime.module.extension.internal.runtime.config.LifecycleAwareConfigurationInstance",
        );
        events.push((
            warn,
            format!(
                "{head}Connectivity test failed for config 'SFDC_Config'. Application deployment will continue. Error was: Connection refused"
            ),
        ));
        for at in self.ticks(30_000) {
            let head = log4j_header(
                "INFO",
                at,
                "agent-heartbeat-scheduler-1",
                "",
                "",
                "com.mulesoft.agent.services.heartbeat.DefaultHeartbeatService",
            );
            events.push((
                at,
                format!(
                    "{head}Heartbeat sent to Anypoint Runtime Manager (6 applications RUNNING)"
                ),
            ));
        }
        let debug = [
            "Validating connection of config 'HTTP_Listener_config'",
            "Closing cursor provider of a released event",
            "Evicting idle connections of config 'Stock_API_Config'",
        ];
        for (k, at) in self.ticks(7_000).into_iter().enumerate() {
            let app = &PROBED_APPS[k % PROBED_APPS.len()];
            let head = log4j_header(
                "DEBUG",
                at,
                &mule_thread(app.app, app.flow),
                "",
                "",
                "org.mule.runtime.core.internal.connection.ConnectionManagerAdapter",
            );
            events.push((at, format!("{head}{}", debug[k % debug.len()])));
        }
        t.platform_lines = events.len();
        self.log4j.append(&mut events);
    }

    /// The spans as OTLP/JSON bodies: per service, at most 400 spans a body.
    fn spans_into(&mut self, t: &mut Traffic) {
        for ((service, scope), spans) in std::mem::take(&mut self.spans) {
            for chunk in spans.chunks(400) {
                t.otlp.push(
                    json!({"resourceSpans": [resource_spans(service, scope, chunk.to_vec())]}),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Other gateways and user-defined event shapes (mappings).
// ---------------------------------------------------------------------------------------

/// The gateway products [`generate_gateways`] writes: (`gateway_product`, the mapping preset
/// a file of that product is ingested with; `None`: seam reads APIM's own shape without one).
pub const GATEWAY_PRODUCTS: &[(&str, Option<&str>)] = &[
    ("apim", None),
    ("kong", Some("kong")),
    ("envoy", Some("envoy")),
    ("nginx", Some("nginx")),
    ("aws_apigateway", Some("aws-apigateway")),
    ("identity_proxy", Some("identity-proxy")),
];

/// The kinds of request [`generate_gateways`] cycles through, per product.
const GATEWAY_KINDS: &[&str] = &[
    "ok",
    "gateway_rejection",
    "backend_failure",
    "ok",
    "bypass",
    "integration_failure",
    "ok",
];

/// `client_app` (azp) of the bearer token some Kong records log.
pub const KONG_TOKEN_CLIENT_APP: &str = "gen-kong-client";
/// `subject` (sub) of the bearer token some Kong records log.
pub const KONG_TOKEN_SUBJECT: &str = "gen-kong-subject";
/// The header row of [`GatewayTraffic::contoso_csv`].
pub const CONTOSO_CSV_HEADER: &str =
    "EventTime,Service,RequestId,ClientIp,Operation,Status,ElapsedMs,Scopes,Fingerprint,Channel";

const USER_AGENT: &str = "contoso-partner-client/2.3 (+https://contoso.example)";
/// The ARM id of the generated APIM service, as diagnostic settings write it (upper case).
const APIM_RESOURCE_ID: &str =
    "/SUBSCRIPTIONS/G/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/GEN-APIM";
/// The Log Analytics workspace the APIM records are queried from (`TenantId`).
const LA_WORKSPACE_ID: &str = "5b1f3c2a-7d4e-4f6a-9b8c-0d1e2f3a4b5c";
/// The columns of the `ApiManagementGatewayLogs` rows [`generate_gateways`] writes (name,
/// Log Analytics type), in the table's order: those that carry what the storage archive
/// records hold, and Log Analytics' own (`TenantId`, `SourceSystem`, `Type`, `_ResourceId`).
pub const APIM_LA_COLUMNS: &[(&str, &str)] = &[
    ("TenantId", "string"),
    ("TimeGenerated", "datetime"),
    ("OperationName", "string"),
    ("CorrelationId", "string"),
    ("Region", "string"),
    ("IsRequestSuccess", "bool"),
    ("Category", "string"),
    ("TotalTime", "long"),
    ("CallerIpAddress", "string"),
    ("Method", "string"),
    ("Url", "string"),
    ("ClientProtocol", "string"),
    ("ResponseCode", "int"),
    ("BackendMethod", "string"),
    ("BackendUrl", "string"),
    ("BackendResponseCode", "int"),
    ("Cache", "string"),
    ("BackendTime", "long"),
    ("ClientTime", "long"),
    ("ApiId", "string"),
    ("OperationId", "string"),
    ("ApimSubscriptionId", "string"),
    ("LastErrorSource", "string"),
    ("LastErrorSection", "string"),
    ("LastErrorReason", "string"),
    ("LastErrorMessage", "string"),
    ("RequestHeaders", "dynamic"),
    ("BackendRequestHeaders", "dynamic"),
    ("SourceSystem", "string"),
    ("Type", "string"),
    ("_ResourceId", "string"),
];
const KONG_SERVICE_ID: &str = "fb4eecf8-dec2-40ef-b779-16de7e2384c7";
const KONG_ROUTE_ID: &str = "0f1a4101-3327-4274-b1e4-484a4ab0c030";
const KONG_CONSUMER_ID: &str = "3391944b-2c84-4eda-95d0-20fb21f16c1b";
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// What a request of [`generate_gateways`] must become in `requests`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayTruth {
    /// `requests.request_id`: the gateway record's `correlation_id` (what the product's
    /// preset maps to it), else (a bypass) the Mule correlation id.
    pub request_id: String,
    /// `gateway_logs.gateway_product` of its gateway record; `None` for a bypass.
    pub product: Option<&'static str>,
    /// `ok`, `gateway_rejection`, `backend_failure`, `integration_failure` or `bypass`.
    pub kind: &'static str,
    /// `status_code`: what the client got.
    pub status: i32,
    /// `rejected_by`.
    pub rejected_by: Option<&'static str>,
    /// `bypassed_gateway`.
    pub bypass: bool,
    /// The gateway record's `correlation_id`; `None` for a bypass.
    pub gateway_correlation_id: Option<String>,
    /// `mule_correlation_id`: the Mule event correlation id, when Mule saw the request.
    pub mule_correlation_id: Option<String>,
    /// The W3C trace id the client started (logged by the gateways that log traceparent,
    /// and by Mule).
    pub trace_id: String,
    /// The client's address.
    pub client_ip: String,
    /// `total_ms`: the gateway record's total time, else (a bypass) the Mule flow's time (its
    /// END record's `elapsed`).
    pub total_ms: Option<f64>,
    /// `gateway_ms`: the gateway record's total time less its backend time when it logged one
    /// (none: a rejection without an upstream call, or the identity proxy, which logs only
    /// the whole duration), else its total; `None` for a bypass.
    pub gateway_ms: Option<f64>,
    /// `network_ms`: the gateway record's backend time less the Mule flow's time, when both
    /// exist (the request reached Mule through a gateway that logs a backend time).
    pub network_ms: Option<f64>,
}

/// What [`generate_gateways`] writes: per product the records (JSON Lines, one string a
/// line; APIM in its storage-archive shape), the same APIM records in every other shape seam
/// reads them in (Event Hubs bodies, the portal's CSV and JSON exports and the Log Analytics
/// query result of `ApiManagementGatewayLogs`: the same values, times to the millisecond),
/// the Mule JSON Logger lines of the integration layer, a team's custom events in JSON and
/// CSV, and the truth per request.
#[derive(Debug, Default)]
pub struct GatewayTraffic {
    /// APIM GatewayLogs records (storage archive lines; read without a mapping).
    pub apim: Vec<String>,
    /// The same APIM records (each once) as Event Hubs message bodies, `{"records":[…]}`
    /// (`apim_records`): 1 to 40 records a body (the sizes cycle through every count), every
    /// third body pretty-printed with tab indentation as pre-2018 storage blobs were. Each is
    /// one `POST /ingest/apim` body.
    pub apim_eventhub_batches: Vec<String>,
    /// The same APIM records (each once) as the Azure portal's "Export to CSV" of a Log
    /// Analytics query over `ApiManagementGatewayLogs` (`apim_loganalytics_csv`): a UTF-8
    /// byte-order mark, the header line of [`APIM_LA_COLUMNS`] (`TimeGenerated [UTC]`), one
    /// RFC 4180 row per record with CRLF line ends, locale times (`11/6/2024, 10:00:00.150
    /// AM`), `dynamic` header columns as JSON text with doubled quotes, empty fields for
    /// missing values, lower-case `_ResourceId`.
    pub apim_portal_csv: String,
    /// The same APIM records (each once) as a Log Analytics query API result over
    /// `ApiManagementGatewayLogs` (`apim_loganalytics`): `{"tables":[{"name":"PrimaryResult",
    /// "columns":[{"name","type"}…],"rows":[[…]…]}]}` with [`APIM_LA_COLUMNS`], times with 7
    /// fractional digits, `dynamic` cells as JSON text, `null` and `""` for missing values.
    pub apim_loganalytics_json: String,
    /// The same APIM records (each once) as the Azure portal's "Export to JSON" of that query
    /// (`apim_loganalytics_json`): an array of flat objects keyed by the CSV header's names,
    /// times as in the CSV export.
    pub apim_portal_json: String,
    /// Kong file-log / http-log records (preset `kong`).
    pub kong: Vec<String>,
    /// Envoy JSON access log lines with Istio's keys (preset `envoy`).
    pub envoy: Vec<String>,
    /// NGINX `log_format seam escape=json` lines (preset `nginx`).
    pub nginx: Vec<String>,
    /// AWS API Gateway JSON access log lines (preset `aws-apigateway`).
    pub aws_apigateway: Vec<String>,
    /// Identity-aware proxy events, Pomerium-like (preset `identity-proxy`).
    pub identity_proxy: Vec<String>,
    /// Mule JSON Logger lines (START, AFTER_REQUEST, END per request; scheduler noise).
    pub mule_lines: Vec<String>,
    /// A team's own gateway events with nested fields (JSON lines), one per APIM request,
    /// for a `contoso-events` mapping: `ts`, `requestId`, `api`, `op.name`, `status`,
    /// `caller.ip`, `http.method`, `http.url`, `timing.elapsedSeconds`, `token.fp`,
    /// `token.azp` / `token.appid` / `token.cid`, `token.scp` (text or array), `token.sub`,
    /// `token.tid`, `token.exp`, `token.roles`, `error.reason`, and unmapped `channel`,
    /// `retries`, `op.version`, `caller.country`.
    pub contoso_events: Vec<String>,
    /// The same kind of event as CSV ([`CONTOSO_CSV_HEADER`] first), time as
    /// `%d/%m/%Y %H:%M:%S%.3f` (UTC), `Channel` quoted when it holds a comma.
    pub contoso_csv: Vec<String>,
    /// The truth, one per request.
    pub truth: Vec<GatewayTruth>,
    /// A compact JWT that some Kong records log as `Authorization: Bearer …`.
    pub kong_bearer: String,
    /// The `correlation_id` (Kong `request.id`) of each Kong record that logged it.
    pub kong_bearer_requests: Vec<String>,
    /// Correlation ids of Mule scheduler lines: never a request.
    pub scheduler_correlation_ids: Vec<String>,
}

impl GatewayTraffic {
    /// The records of `product` (a name of [`GATEWAY_PRODUCTS`]); empty for another name.
    pub fn lines(&self, product: &str) -> &[String] {
        match product {
            "apim" => self.apim.as_slice(),
            "kong" => self.kong.as_slice(),
            "envoy" => self.envoy.as_slice(),
            "nginx" => self.nginx.as_slice(),
            "aws_apigateway" => self.aws_apigateway.as_slice(),
            "identity_proxy" => self.identity_proxy.as_slice(),
            _ => &[],
        }
    }

    /// The records of `product` as one JSON Lines text.
    pub fn text(&self, product: &str) -> String {
        lines_text(self.lines(product))
    }

    /// The Mule lines as one JSON Lines text.
    pub fn mule_text(&self) -> String {
        lines_text(&self.mule_lines)
    }

    fn lines_mut(&mut self, product: &str) -> &mut Vec<String> {
        match product {
            "apim" => &mut self.apim,
            "kong" => &mut self.kong,
            "envoy" => &mut self.envoy,
            "nginx" => &mut self.nginx,
            "aws_apigateway" => &mut self.aws_apigateway,
            _ => &mut self.identity_proxy,
        }
    }
}

/// `lines` joined by newlines, with a final newline.
pub fn lines_text(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// One request as its gateway saw it.
struct GwReq<'a> {
    i: usize,
    j: usize,
    t0: i64,
    status: i32,
    /// The status the gateway got from its upstream; `None`: it called none.
    backend_status: Option<i32>,
    total: i64,
    backend_time: i64,
    correlation_id: &'a str,
    /// The X-Correlation-ID the gateway passed upstream (and Mule adopted), when any.
    forwarded: Option<&'a str>,
    /// The X-Correlation-ID the client sent, when any.
    client_sent: Option<&'a str>,
    trace: &'a str,
    traceparent: &'a str,
    client_ip: &'a str,
    path: &'a str,
    bearer: Option<&'a str>,
}

impl GwReq<'_> {
    fn called(&self) -> bool {
        self.backend_status.is_some()
    }
}

struct Civil {
    y: i64,
    m: u32,
    d: u32,
    hh: i64,
    mm: i64,
    ss: i64,
    ms: i64,
}

fn civil_of(ns: i64) -> Civil {
    let secs = ns.div_euclid(1_000_000_000);
    let ms = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    Civil {
        y,
        m,
        d,
        hh: rem / 3600,
        mm: rem % 3600 / 60,
        ss: rem % 60,
        ms,
    }
}

/// NGINX `$time_iso8601`: seconds, with the offset.
fn iso_offset(ns: i64) -> String {
    let c = civil_of(ns);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        c.y, c.m, c.d, c.hh, c.mm, c.ss
    )
}

/// Common Log Format time (AWS `$context.requestTime`): `06/Nov/2024:10:00:00 +0000`.
fn clf(ns: i64) -> String {
    let c = civil_of(ns);
    let month = MONTHS[(c.m as usize).saturating_sub(1) % 12];
    format!(
        "{:02}/{month}/{:04}:{:02}:{:02}:{:02} +0000",
        c.d, c.y, c.hh, c.mm, c.ss
    )
}

/// The CSV events' time: `06/11/2024 10:00:00.150` (UTC).
fn csv_time(ns: i64) -> String {
    let c = civil_of(ns);
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}:{:02}.{:03}",
        c.d, c.m, c.y, c.hh, c.mm, c.ss, c.ms
    )
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk[0]);
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let n = (b0 << 16) | (b1 << 8) | b2;
        for k in 0..=chunk.len() {
            let idx = (n >> (18 - 6 * k)) & 63;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

/// A compact JWT (unsigned: a random signature) with Entra-like claims.
fn bearer_jwt(rng: &mut Rng, iat: i64) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "gen-signing-key"});
    let uti = format!("kong{}", rng.hex(18));
    let payload = json!({
        "aud": "api://orders-platform",
        "iss": "https://login.microsoftonline.com/gen-tenant/v2.0",
        "iat": iat, "nbf": iat, "exp": iat + 7200,
        "azp": KONG_TOKEN_CLIENT_APP, "sub": KONG_TOKEN_SUBJECT, "tid": "gen-tenant",
        "uti": uti, "scp": "orders.read", "ver": "2.0"
    });
    let mut sig: Vec<u8> = Vec::with_capacity(64);
    while sig.len() < 64 {
        sig.extend_from_slice(&rng.next().to_le_bytes());
    }
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes()),
        b64url(&sig)
    )
}

/// One Mule JSON Logger record's envelope (v2: numbers as numbers); [`JlLine::with`] adds
/// its content and gives the line.
struct JlLine<'a> {
    app: &'a str,
    cid: &'a str,
    flow: &'a str,
    trace_point: &'a str,
    priority: &'a str,
    at: i64,
    elapsed: i64,
}

impl JlLine<'_> {
    /// The record with `content`, as one JSON line.
    fn with(&self, content: Value) -> String {
        json!({"correlationId": self.cid, "tracePoint": self.trace_point,
               "priority": self.priority, "elapsed": self.elapsed,
               "message": self.trace_point, "timestamp": iso(self.at),
               "locationInfo": {"rootContainer": self.flow, "fileName": "gen.xml", "lineInFile": "1"},
               "applicationName": self.app, "content": content})
        .to_string()
    }
}

/// One Mule JSON Logger record of [`MULE_APP`].
fn json_logger_line(
    cid: &str,
    flow: &str,
    trace_point: &str,
    priority: &str,
    at: i64,
    elapsed: i64,
    content: Value,
) -> String {
    JlLine {
        app: MULE_APP,
        cid,
        flow,
        trace_point,
        priority,
        at,
        elapsed,
    }
    .with(content)
}

/// An APIM GatewayLogs record (storage archive shape), as `generate` writes them, with the
/// fields Log Analytics also has (`isRequestSuccess`, `location`, `cache`, `clientTime`,
/// `lastError.message`), so that every shape of [`GatewayTraffic`] carries the same values.
fn apim_record(r: &GwReq<'_>, rng: &mut Rng) -> Value {
    let url = format!("https://gen-apim.azure-api.net{}", r.path);
    // Time spent sending the response to the client (no random draw: the other products'
    // records stay as they were).
    let client_time = (1 + (r.i % 3) as i64).min(r.total);
    let mut props = json!({
        "method": "GET", "url": url, "responseCode": r.status,
        "apiId": "orders-api", "operationId": "get-item", "apimSubscriptionId": "gen-sub",
        "clientProtocol": "HTTP/1.1", "cache": "none", "clientTime": client_time,
        "requestHeaders": {"traceparent": r.traceparent, "User-Agent": USER_AGENT},
    });
    match r.backend_status {
        Some(code) => {
            let backend_tp = format!("00-{}-{}-01", r.trace, rng.hex(16));
            let backend_url = format!("http://orders-papi.mule.internal:8081/api/items/{}", r.i);
            props["backendResponseCode"] = json!(code);
            props["backendTime"] = json!(r.backend_time);
            props["backendMethod"] = json!("GET");
            props["backendUrl"] = json!(backend_url);
            props["backendRequestHeaders"] = json!({
                "traceparent": backend_tp,
                "X-Correlation-ID": r.forwarded.unwrap_or(r.correlation_id),
            });
        }
        None => {
            // The messages hold commas and quotes: the portal CSV export quotes them.
            let (source, reason, message) = match r.status {
                401 => ("validate-jwt", "TokenNotPresent", "JWT not present."),
                403 => (
                    "validate-jwt",
                    "TokenClaimValueNotAllowed",
                    "Claim value of \"roles\" is not allowed, expected \"Orders.Read\".",
                ),
                _ => (
                    "rate-limit-by-key",
                    "RateLimitExceeded",
                    "Rate limit is exceeded, try again in 30 seconds.",
                ),
            };
            props["lastError"] = json!({"source": source, "reason": reason, "section": "inbound",
                                        "message": message});
        }
    }
    json!({
        "time": iso(r.t0),
        "resourceId": APIM_RESOURCE_ID,
        "category": "GatewayLogs", "operationName": "Microsoft.ApiManagement/GatewayLogs",
        "durationMs": r.total, "callerIpAddress": r.client_ip, "correlationId": r.correlation_id,
        "isRequestSuccess": r.status < 400, "location": "West Europe",
        "properties": props
    })
}

/// Log Analytics' datetime text: `2024-11-06T10:00:00.1500000Z` (7 fractional digits, to the
/// millisecond as every other shape).
fn la_time(ns: i64) -> String {
    let c = civil_of(ns);
    let frac = c.ms * 10_000;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{frac:07}Z",
        c.y, c.m, c.d, c.hh, c.mm, c.ss
    )
}

/// The Azure portal's export time (en-US locale, UTC): `11/6/2024, 2:04:55.301 PM`.
fn portal_time(ns: i64) -> String {
    let c = civil_of(ns);
    let (hour, half) = match c.hh {
        0 => (12, "AM"),
        h @ 1..=11 => (h, "AM"),
        12 => (12, "PM"),
        h => (h - 12, "PM"),
    };
    format!(
        "{}/{}/{}, {hour}:{:02}:{:02}.{:03} {half}",
        c.m, c.d, c.y, c.mm, c.ss, c.ms
    )
}

/// One APIM record of the storage archive (as [`apim_record`] writes it) as the cells of an
/// `ApiManagementGatewayLogs` row, in [`APIM_LA_COLUMNS`] order, `time` in the time column:
/// the same values under Log Analytics' names (`durationMs` → `TotalTime`, `location` →
/// `Region`, `lastError.reason` → `LastErrorReason`, …). As Log Analytics writes them: `""`
/// for a missing text, `null` for a missing number (`BackendResponseCode` when no backend
/// was called, when `BackendTime` is 0), header maps as JSON text.
fn apim_la_cells(rec: &Value, time: &str) -> Vec<Value> {
    let p = &rec["properties"];
    let err = &p["lastError"];
    let text = |v: &Value| Value::String(v.as_str().unwrap_or_default().to_string());
    let dynamic = |v: &Value| {
        if v.is_object() {
            Value::String(v.to_string())
        } else {
            Value::Null
        }
    };
    let called = !p["backendResponseCode"].is_null();
    APIM_LA_COLUMNS
        .iter()
        .map(|&(name, _)| match name {
            "TenantId" => json!(LA_WORKSPACE_ID),
            "TimeGenerated" => json!(time),
            "OperationName" => rec["operationName"].clone(),
            "CorrelationId" => rec["correlationId"].clone(),
            "Region" => rec["location"].clone(),
            "IsRequestSuccess" => rec["isRequestSuccess"].clone(),
            "Category" => rec["category"].clone(),
            "TotalTime" => rec["durationMs"].clone(),
            "CallerIpAddress" => rec["callerIpAddress"].clone(),
            "Method" => p["method"].clone(),
            "Url" => p["url"].clone(),
            "ClientProtocol" => p["clientProtocol"].clone(),
            "ResponseCode" => p["responseCode"].clone(),
            "BackendMethod" => text(&p["backendMethod"]),
            "BackendUrl" => text(&p["backendUrl"]),
            "BackendResponseCode" => p["backendResponseCode"].clone(),
            "Cache" => p["cache"].clone(),
            "BackendTime" if called => p["backendTime"].clone(),
            "BackendTime" => json!(0),
            "ClientTime" => p["clientTime"].clone(),
            "ApiId" => p["apiId"].clone(),
            "OperationId" => p["operationId"].clone(),
            "ApimSubscriptionId" => p["apimSubscriptionId"].clone(),
            "LastErrorSource" => text(&err["source"]),
            "LastErrorSection" => text(&err["section"]),
            "LastErrorReason" => text(&err["reason"]),
            "LastErrorMessage" => text(&err["message"]),
            "RequestHeaders" => dynamic(&p["requestHeaders"]),
            "BackendRequestHeaders" => dynamic(&p["backendRequestHeaders"]),
            "SourceSystem" => json!("Azure"),
            "Type" => json!("ApiManagementGatewayLogs"),
            "_ResourceId" => json!(
                rec["resourceId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
            ),
            _ => Value::Null,
        })
        .collect()
}

/// The column names of a portal export: datetime columns carry their unit (`TimeGenerated
/// [UTC]`).
fn portal_header() -> Vec<String> {
    APIM_LA_COLUMNS
        .iter()
        .map(|&(name, ty)| {
            if ty == "datetime" {
                format!("{name} [UTC]")
            } else {
                name.to_string()
            }
        })
        .collect()
}

/// A JSON value pretty-printed with tab indentation (serde_json indents with two spaces;
/// strings hold no raw line breaks, so every leading space is indentation).
fn pretty_tabs(v: &Value) -> String {
    let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::with_capacity(pretty.len());
    for line in pretty.lines() {
        let body = line.trim_start_matches(' ');
        out.push_str(&"\t".repeat((line.len() - body.len()) / 2));
        out.push_str(body);
        out.push('\n');
    }
    out
}

/// The APIM records as Event Hubs bodies (`{"records":[…]}`): body `k` holds `1 + 13k mod
/// 40` records (every count from 1 to 40 in turn; the last body the rest), every third one
/// pretty-printed with tabs.
fn eventhub_batches(records: &[(i64, Value)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = records;
    let mut k = 0usize;
    while !rest.is_empty() {
        let size = (1 + (k * 13) % 40).min(rest.len());
        let (batch, tail) = rest.split_at(size);
        let list: Vec<Value> = batch.iter().map(|(_, r)| r.clone()).collect();
        let body = json!({ "records": list });
        out.push(if k % 3 == 1 {
            pretty_tabs(&body)
        } else {
            body.to_string()
        });
        rest = tail;
        k += 1;
    }
    out
}

/// A field of a portal CSV export: empty for a missing value, quoted (RFC 4180, `"`
/// doubled) when it holds a comma, a quote or a line break.
fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The APIM records as the Azure portal's CSV export of a Log Analytics query over
/// `ApiManagementGatewayLogs`.
fn portal_csv(records: &[(i64, Value)]) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str(&portal_header().join(","));
    out.push_str("\r\n");
    for (t0, rec) in records {
        let cells = apim_la_cells(rec, &portal_time(*t0));
        let fields: Vec<String> = cells.iter().map(csv_field).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The APIM records as a Log Analytics query API result over `ApiManagementGatewayLogs`.
fn loganalytics_json(records: &[(i64, Value)]) -> String {
    let columns: Vec<Value> = APIM_LA_COLUMNS
        .iter()
        .map(|&(name, ty)| json!({"name": name, "type": ty}))
        .collect();
    let rows: Vec<Value> = records
        .iter()
        .map(|(t0, rec)| Value::Array(apim_la_cells(rec, &la_time(*t0))))
        .collect();
    json!({"tables": [{"name": "PrimaryResult", "columns": columns, "rows": rows}]}).to_string()
}

/// The APIM records as the Azure portal's JSON export of that query.
fn portal_json(records: &[(i64, Value)]) -> String {
    let header = portal_header();
    let rows: Vec<Value> = records
        .iter()
        .map(|(t0, rec)| {
            let cells = apim_la_cells(rec, &portal_time(*t0));
            Value::Object(header.iter().cloned().zip(cells).collect())
        })
        .collect();
    serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default()
}

/// A Kong `kong.log.serialize()` record (file-log / http-log), Kong 3.x.
fn kong_record(r: &GwReq<'_>, rng: &mut Rng) -> Value {
    let called = r.called();
    let mut req_headers = json!({
        "host": "api.contoso.example:8443",
        "user-agent": USER_AGENT,
        "accept": "application/json",
        "accept-encoding": "gzip, deflate",
        "traceparent": r.traceparent,
    });
    if let Some(f) = r.forwarded {
        req_headers["x-correlation-id"] = json!(f);
    }
    if let Some(b) = r.bearer {
        req_headers["authorization"] = json!(format!("Bearer {b}"));
    }
    let size = 180 + rng.below(900);
    let mut resp_headers = json!({
        "content-type": "application/json",
        "content-length": size.to_string(),
        "x-kong-request-id": r.correlation_id,
        "via": "1.1 kong/3.8.0.0-enterprise-edition",
        "date": "Wed, 06 Nov 2024 10:00:00 GMT",
    });
    if let Some(f) = r.forwarded {
        resp_headers["x-correlation-id"] = json!(f);
    }
    let (proxy, kong_ms) = if called {
        (r.backend_time, r.total - r.backend_time)
    } else {
        (-1, r.total)
    };
    if called {
        resp_headers["x-kong-upstream-latency"] = json!(r.backend_time.to_string());
        resp_headers["x-kong-proxy-latency"] = json!(kong_ms.to_string());
    } else if r.status == 429 {
        resp_headers["retry-after"] = json!("30");
        resp_headers["ratelimit-limit"] = json!("60");
        resp_headers["ratelimit-remaining"] = json!("0");
        resp_headers["x-ratelimit-limit-minute"] = json!("60");
        resp_headers["x-ratelimit-remaining-minute"] = json!("0");
    }
    let started = r.t0 / MS;
    let url = format!("https://api.contoso.example:8443{}", r.path);
    let upstream_uri = if called {
        format!("/api/items/{}", r.i)
    } else {
        String::new()
    };
    let request_size = 240 + rng.below(300);
    let mut rec = json!({
        "request": {
            "id": r.correlation_id, "method": "GET", "uri": r.path, "url": url,
            "querystring": {}, "size": request_size, "headers": req_headers,
            "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "client_verify": "NONE"}
        },
        "response": {"status": r.status, "size": size, "headers": resp_headers},
        "latencies": {"request": r.total, "kong": kong_ms, "proxy": proxy},
        "upstream_uri": upstream_uri,
        "client_ip": r.client_ip,
        "started_at": started,
        "service": {
            "id": KONG_SERVICE_ID, "name": "orders-papi", "host": "orders-papi.mule.internal",
            "port": 8081, "protocol": "http", "path": "/api", "retries": 5,
            "connect_timeout": 60000, "read_timeout": 60000, "write_timeout": 60000,
            "created_at": 1_726_782_477, "updated_at": 1_726_782_477, "tags": []
        },
        "route": {
            "id": KONG_ROUTE_ID, "name": "orders-items", "paths": ["/orders/v1"],
            "protocols": ["https"], "strip_path": true, "preserve_host": false,
            "https_redirect_status_code": 426, "path_handling": "v0",
            "service": {"id": KONG_SERVICE_ID}
        },
        "workspace": "f381e34e-5c25-4e65-b91b-3c0a86cfc393",
        "workspace_name": "default",
    });
    if let Some(code) = r.backend_status {
        rec["upstream_status"] = json!(code.to_string());
        rec["tries"] = json!([{
            "balancer_start": started + 1, "ip": "10.20.1.15", "port": 8081,
            "balancer_latency": 0
        }]);
    }
    if r.status != 401 {
        // Authenticated (a 403 comes from the acl plugin, a 429 from rate-limiting).
        rec["consumer"] = json!({
            "id": KONG_CONSUMER_ID, "username": "partner-a", "custom_id": "partner-a-0001",
            "created_at": 1_726_782_477, "tags": []
        });
        rec["authenticated_entity"] = json!({"id": "8fcd11f9-3358-40b4-a494-131c3bd1d25e"});
    }
    rec
}

/// An Envoy access log line in Istio's default JSON keys, plus traceparent and
/// x_correlation_id.
fn envoy_record(r: &GwReq<'_>, rng: &mut Rng) -> Value {
    let called = r.called();
    let (flags, details) = match (called, r.status) {
        (true, _) => ("-", "via_upstream"),
        (false, 429) => ("RL", "request_rate_limited"),
        (false, _) => ("UAEX", "ext_authz_denied"),
    };
    let (service_time, upstream_host, upstream_local) = if called {
        (
            json!(r.backend_time.to_string()),
            json!("10.20.1.15:8081"),
            json!(format!("10.20.0.7:{}", 30000 + rng.below(20000))),
        )
    } else {
        (Value::Null, Value::Null, Value::Null)
    };
    let remote = format!("{}:{}", r.client_ip, 30000 + rng.below(30000));
    let bytes_sent = 120 + rng.below(900);
    json!({
        "start_time": iso(r.t0),
        "route_name": "orders-items",
        "method": "GET",
        "path": r.path,
        "protocol": "HTTP/1.1",
        "response_code": r.status,
        "response_flags": flags,
        "response_code_details": details,
        "connection_termination_details": null,
        "upstream_transport_failure_reason": null,
        "bytes_received": 0,
        "bytes_sent": bytes_sent,
        "duration": r.total,
        "upstream_service_time": service_time,
        "x_forwarded_for": r.client_ip,
        "user_agent": USER_AGENT,
        "request_id": r.correlation_id,
        "authority": "api.contoso.example",
        "upstream_host": upstream_host,
        "upstream_cluster": "outbound|8081||orders-papi.mule.svc.cluster.local",
        "upstream_local_address": upstream_local,
        "downstream_local_address": "10.20.0.7:8443",
        "downstream_remote_address": remote,
        "requested_server_name": "api.contoso.example",
        "traceparent": r.traceparent,
        "x_correlation_id": r.forwarded,
    })
}

/// Seconds with milliseconds, as NGINX writes `$request_time`.
fn secs3(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    format!("{s:.3}")
}

/// An NGINX line of the `log_format seam escape=json` of the `nginx` preset.
fn nginx_record(r: &GwReq<'_>, rng: &mut Rng) -> Value {
    let end = r.t0 + r.total * MS;
    // Unset variables: "" under escape=json, "-" under the default escaping.
    let missing = if r.j.is_multiple_of(2) { "" } else { "-" };
    let (addr, upstream_status, upstream_time, connect_time) = match (r.backend_status, r.j % 4) {
        (None, _) => (
            missing.to_string(),
            missing.to_string(),
            missing.to_string(),
            missing.to_string(),
        ),
        (Some(200), 3) => (
            // The first upstream failed, the second answered.
            "10.20.1.16:8081, 10.20.1.15:8081".to_string(),
            "502, 200".to_string(),
            format!("0.002, {}", secs3(r.backend_time)),
            "0.001, 0.001".to_string(),
        ),
        (Some(200), 1) => (
            // An internal redirect: groups separated by " : ".
            "10.20.1.15:8081 : 10.20.1.15:8081".to_string(),
            "200 : 200".to_string(),
            format!("0.001 : {}", secs3(r.backend_time)),
            "0.000 : 0.001".to_string(),
        ),
        (Some(code), _) => (
            "10.20.1.15:8081".to_string(),
            code.to_string(),
            secs3(r.backend_time),
            "0.001".to_string(),
        ),
    };
    let msec = (end / MS) as f64 / 1000.0;
    let request_length = (250 + rng.below(400)).to_string();
    let bytes_sent = (200 + rng.below(900)).to_string();
    json!({
        "msec": msec,
        "time_iso8601": iso_offset(end),
        "request_id": r.correlation_id,
        "seam_correlation_id": r.forwarded.unwrap_or(r.correlation_id),
        "http_x_correlation_id": r.client_sent.unwrap_or(""),
        "http_traceparent": r.traceparent,
        "remote_addr": r.client_ip,
        "http_x_forwarded_for": "",
        "remote_user": "",
        "request_method": "GET",
        "scheme": "https",
        "host": "api.contoso.example",
        "server_name": "api.contoso.example",
        "request_uri": r.path,
        "server_protocol": "HTTP/1.1",
        "ssl_protocol": "TLSv1.3",
        "status": r.status.to_string(),
        "request_length": request_length,
        "bytes_sent": bytes_sent,
        "request_time": secs3(r.total),
        "upstream_addr": addr,
        "upstream_status": upstream_status,
        "upstream_response_time": upstream_time,
        "upstream_connect_time": connect_time,
        "http_user_agent": USER_AGENT,
    })
}

/// An AWS API Gateway access log line in the JSON format of the `aws-apigateway` preset.
fn aws_record(r: &GwReq<'_>, rng: &mut Rng) -> Value {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let (error_message, error_type) = match (r.called(), r.status) {
        (true, _) => ("-", "-"),
        (false, 401) => ("Unauthorized", "UNAUTHORIZED"),
        (false, 403) => (
            "User is not authorized to access this resource",
            "ACCESS_DENIED",
        ),
        (false, _) => ("Too Many Requests", "THROTTLED"),
    };
    // The authorizer's claims, when it accepted the token (throttling comes after it).
    let authenticated = r.called() || r.status == 429;
    let (sub, client_id) = if authenticated {
        (
            format!("gen-aws-user-{}", r.j % 5),
            "gen-aws-app-client".to_string(),
        )
    } else {
        ("-".to_string(), "-".to_string())
    };
    let integration_latency = dash(r.called().then(|| r.backend_time.to_string()));
    let integration_status = dash(r.backend_status.map(|s| s.to_string()));
    let extended = format!("{}=", rng.hex(15));
    let path = format!("/prod{}", r.path);
    let response_length = (120 + rng.below(900)).to_string();
    let mut rec = json!({
        "requestId": r.correlation_id,
        "extendedRequestId": extended,
        "ip": r.client_ip,
        "caller": "-",
        "user": "-",
        "userAgent": USER_AGENT,
        "requestTime": clf(r.t0),
        "httpMethod": "GET",
        "resourcePath": "/orders/v1/items/{id}",
        "path": path,
        "status": r.status.to_string(),
        "protocol": "HTTP/1.1",
        "responseLength": response_length,
        "responseLatency": r.total.to_string(),
        "integrationLatency": integration_latency,
        "integrationStatus": integration_status,
        "apiId": "a1b2c3d4e5",
        "stage": "prod",
        "domainName": "api.contoso.example",
        "apiKeyId": "k3y1d2e3f4",
        "principalId": "-",
        "sub": sub,
        "clientId": client_id,
        "error.message": error_message,
        "error.responseType": error_type,
        "xrayTraceId": "-",
    });
    // Older stage formats lack requestTimeEpoch: the CLF requestTime is read instead.
    if r.j % 3 != 2 {
        rec["requestTimeEpoch"] = json!(r.t0 / MS);
    }
    rec
}

/// An identity-aware proxy event (Pomerium-like access log with the user and decision).
fn identity_proxy_record(r: &GwReq<'_>, rng: &mut Rng) -> Value {
    let called = r.called();
    let user = r.j % 5;
    let duration_s = r.total as f64 / 1000.0;
    let size = 100 + rng.below(900);
    let mut rec = json!({
        "level": "info",
        "service": "proxy",
        "message": "http-request",
        "time": iso(r.t0),
        "request-id": r.correlation_id,
        "user": format!("gen-idp-user-{user}"),
        "email": format!("user{user}@contoso.example"),
        "ip": r.client_ip,
        "method": "GET",
        "authority": "orders.corp.contoso.example",
        "path": r.path,
        "user-agent": USER_AGENT,
        "response-code": r.status,
        "size": size,
        "duration": duration_s,
        "headers.traceparent": r.traceparent,
        "allow": called,
    });
    if let Some(c) = r.forwarded {
        rec["headers.x-correlation-id"] = json!(c);
    }
    if called {
        rec["upstream-cluster"] = json!("route-orders-papi");
        rec["response-code-details"] = json!("via_upstream");
    } else {
        let reason = match r.status {
            401 => "unauthenticated",
            429 => "rate-limited",
            _ => "policy-denied",
        };
        rec["deny_reason"] = json!(reason);
        rec["response-code-details"] = json!("ext_authz_denied");
    }
    rec
}

/// Whether `product`'s record logs the time its upstream took (APIM `backendTime`, Kong
/// `latencies.proxy`, Envoy `upstream_service_time`, NGINX `upstream_response_time`, AWS
/// `integrationLatency`); the identity proxy logs only the whole `duration`.
fn logs_backend_time(product: &str) -> bool {
    product != "identity_proxy"
}

/// `(total_ms, gateway_ms, network_ms)` as seam computes them (correlate's `Latency::of`)
/// from the gateway record's total and backend times (ms; `None`: no gateway record, or it
/// logged none) and the Mule flow's time (`None`: the request never reached Mule, so it has
/// no integration layer): the gateway's time is its total less its backend time when it
/// logged one, else its total; the network's the gateway's backend time less the flow's
/// time; the end-to-end time the gateway's total, else the flow's time.
fn expected_latency(
    gateway_total: Option<f64>,
    gateway_backend: Option<f64>,
    mule_flow: Option<f64>,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let gateway = gateway_total.map(|total| gateway_backend.map_or(total, |b| total - b));
    let network = match (gateway_backend, mule_flow) {
        (Some(b), Some(f)) => Some(b - f),
        _ => None,
    };
    (gateway_total.or(mule_flow), gateway, network)
}

/// A team's custom event for the request (JSON, nested fields) and its CSV row.
fn contoso_event(r: &GwReq<'_>, rng: &mut Rng) -> (String, String) {
    let at = r.t0 + r.total * MS;
    let fp = format!("hmac-sha256:k1:{}", rng.hex(32));
    let exp = r.t0.div_euclid(1_000_000_000) + 3600;
    let sub = format!("gen-contoso-sub-{}", r.j % 9);
    let mut token =
        json!({"fp": fp, "sub": sub, "tid": "gen-tenant", "exp": exp, "roles": ["Orders.Read"]});
    token["scp"] = if r.j.is_multiple_of(5) {
        json!(["orders.read"])
    } else {
        json!("orders.read orders.write")
    };
    // The client application under whichever claim the issuer uses; azp wins over appid.
    match r.j % 4 {
        0 => {
            token["azp"] = json!("contoso-web");
        }
        1 => {
            token["appid"] = json!("contoso-batch");
        }
        2 => {
            token["cid"] = json!("0oa-contoso-okta");
        }
        _ => {
            token["azp"] = json!("contoso-mobile");
            token["appid"] = json!("contoso-legacy");
        }
    }
    let channel = ["partner-portal", "partner, eu", "batch"][r.j % 3];
    let elapsed_s = r.total as f64 / 1000.0;
    let url = format!("https://apim-contoso.azure-api.net{}", r.path);
    let mut ev = json!({
        "ts": iso(at),
        "requestId": r.correlation_id,
        "api": "orders",
        "op": {"name": "get-item", "version": "v1"},
        "status": r.status,
        "caller": {"ip": r.client_ip, "country": "NL"},
        "http": {"method": "GET", "url": url},
        "timing": {"elapsedSeconds": elapsed_s},
        "token": token,
        "channel": channel,
        "retries": r.j % 2,
    });
    if !r.called() {
        let reason = match r.status {
            401 => "TokenNotPresent",
            403 => "TokenClaimValueNotAllowed",
            _ => "RateLimitExceeded",
        };
        ev["error"] = json!({"reason": reason, "source": "inbound-policy"});
    }
    let csv_channel = if channel.contains(',') {
        format!("\"{}\"", channel.replace('"', "\"\""))
    } else {
        channel.to_string()
    };
    let row = format!(
        "{},contoso-apim,{},{},get-item,{},{},orders.read orders.write,{fp},{csv_channel}",
        csv_time(at),
        r.correlation_id,
        r.client_ip,
        r.status,
        r.total
    );
    (ev.to_string(), row)
}

/// Generates `n` requests starting at `start_ns`, one every `gap_ms` milliseconds, each
/// entering through one gateway product of [`GATEWAY_PRODUCTS`] in turn (APIM, Kong, Envoy,
/// NGINX, AWS API Gateway, an identity-aware proxy), its gateway record in that product's
/// shape (the one its preset reads), and the integration layer's Mule JSON Logger lines
/// sharing the id the gateway forwards (Kong: the correlation-id plugin's X-Correlation-ID;
/// Envoy, AWS: the request id; NGINX: the client's X-Correlation-ID, else `$request_id`;
/// the identity proxy: the client's X-Correlation-ID, else only the W3C trace id).
///
/// Per product the kinds cycle: successes, gateway rejections (401/403/429, no upstream
/// call: Kong `latencies.proxy` -1, NGINX upstream fields `""` or `-`, AWS
/// `integrationLatency` `-`, Envoy `UAEX`/`RL`), backend failures (502, Mule error type
/// `HTTP:SERVICE_UNAVAILABLE`), integration failures (500, `MULE:EXPRESSION`) and bypasses
/// (Mule lines without any gateway record). Noise: every seventh gateway record and every
/// eleventh Mule START appear twice, and Mule scheduler lines that are never requests.
/// Also writes a team's custom events (JSON with nested fields, and CSV) for the APIM
/// requests, for user-defined mappings, and the APIM records (each once, without the
/// duplicate noise) in the other shapes Azure delivers them in: Event Hubs bodies, the Azure
/// portal's CSV and JSON exports and the Log Analytics query result
/// ([`GatewayTraffic::apim_eventhub_batches`], …). Every shape writes times to the
/// millisecond, as the storage archive lines always did, so they are the same in all.
///
/// Durations are whole milliseconds in every product's unit (NGINX's and the identity
/// proxy's seconds with three decimals); some NGINX records list several upstream times
/// (`0.002, 0.047`, or `0.001 : 0.047` across an internal redirect: the last counts). Each
/// [`GatewayTruth`] holds the `total_ms`, `gateway_ms` and `network_ms` seam must compute
/// from them and the Mule flow's time.
pub fn generate_gateways(seed: u64, n: usize, start_ns: i64, gap_ms: i64) -> GatewayTraffic {
    let mut rng = Rng(seed | 1);
    let mut t = GatewayTraffic {
        kong_bearer: bearer_jwt(&mut rng, start_ns.div_euclid(1_000_000_000) - 60),
        contoso_csv: vec![CONTOSO_CSV_HEADER.to_string()],
        ..Default::default()
    };
    let bearer_token = t.kong_bearer.clone();
    let products = GATEWAY_PRODUCTS.len();
    // The APIM records (each once) and their times, for the other shapes.
    let mut apim_records: Vec<(i64, Value)> = Vec::new();
    for i in 0..n {
        let t0 = start_ns + i as i64 * gap_ms * MS;
        let product: &'static str = GATEWAY_PRODUCTS[i % products].0;
        let j = i / products;
        let kind: &'static str = GATEWAY_KINDS[j % GATEWAY_KINDS.len()];
        let bypass = kind == "bypass";
        let rejected = kind == "gateway_rejection";
        let trace = rng.hex(32);
        let client_tp = format!("00-{trace}-{}-01", rng.hex(16));
        let client_ip = format!("203.0.113.{}", rng.below(200) + 1);
        let path = format!("/orders/v1/items/{i}");
        // Timings (ms).
        let gw_overhead = 3 + rng.below(12) as i64;
        let network = 2 + rng.below(6) as i64;
        let own = 8 + rng.below(30) as i64;
        let downstream = 15 + rng.below(60) as i64;
        let flow_ms = own + downstream;
        let backend_time = flow_ms + network;
        let total = if rejected {
            1 + rng.below(4) as i64
        } else {
            backend_time + gw_overhead
        };
        let (status, backend_status, rejected_by): (i32, Option<i32>, Option<&'static str>) =
            match kind {
                "gateway_rejection" => ([401, 403, 429][j % 3], None, Some("gateway")),
                "backend_failure" => (502, Some(502), Some("backend")),
                "integration_failure" => (500, Some(500), Some("integration")),
                _ => (200, Some(200), None),
            };
        // Ids: the gateway's own request id, the id it passed upstream (Mule adopts it),
        // and the X-Correlation-ID the client sent.
        let mut client_cid: Option<String> = None;
        let (gw_cid, forwarded): (String, Option<String>) = match product {
            "kong" => {
                let own_id = rng.hex(32);
                (own_id, Some(rng.uuid()))
            }
            "nginx" => {
                let own_id = rng.hex(32);
                if j.is_multiple_of(3) {
                    let c = rng.uuid();
                    client_cid = Some(c.clone());
                    (own_id, Some(c))
                } else {
                    (own_id.clone(), Some(own_id))
                }
            }
            "identity_proxy" => {
                let own_id = rng.uuid();
                if j.is_multiple_of(2) {
                    let c = rng.uuid();
                    client_cid = Some(c.clone());
                    (own_id, Some(c))
                } else {
                    (own_id, None)
                }
            }
            // apim, envoy, aws_apigateway: the gateway's request id is forwarded.
            _ => {
                let c = rng.uuid();
                (c.clone(), Some(c))
            }
        };
        let mule_cid = match (&forwarded, bypass) {
            (Some(f), false) => f.clone(),
            _ => rng.uuid(),
        };
        let bearer = (product == "kong" && kind == "ok" && j.is_multiple_of(2))
            .then_some(bearer_token.as_str());
        if !bypass {
            let r = GwReq {
                i,
                j,
                t0,
                status,
                backend_status,
                total,
                backend_time,
                correlation_id: &gw_cid,
                forwarded: forwarded.as_deref(),
                client_sent: client_cid.as_deref(),
                trace: &trace,
                traceparent: &client_tp,
                client_ip: &client_ip,
                path: &path,
                bearer,
            };
            let record = match product {
                "apim" => apim_record(&r, &mut rng),
                "kong" => kong_record(&r, &mut rng),
                "envoy" => envoy_record(&r, &mut rng),
                "nginx" => nginx_record(&r, &mut rng),
                "aws_apigateway" => aws_record(&r, &mut rng),
                _ => identity_proxy_record(&r, &mut rng),
            };
            let line = record.to_string();
            let out = t.lines_mut(product);
            out.push(line.clone());
            if i % 7 == 3 {
                // Noise: the same record delivered twice.
                out.push(line);
            }
            if bearer.is_some() {
                t.kong_bearer_requests.push(gw_cid.clone());
            }
            if product == "apim" {
                let (event, row) = contoso_event(&r, &mut rng);
                t.contoso_events.push(event);
                t.contoso_csv.push(row);
                apim_records.push((t0, record));
            }
        }
        if !rejected {
            let remote = if bypass {
                format!("/10.20.4.{}:{}", 10 + j % 20, 40000 + i)
            } else {
                "/198.51.100.23:40000".to_string()
            };
            let mule_start = t0 + (gw_overhead / 2 + 1) * MS;
            let mule_tp = format!("00-{trace}-{}-01", rng.hex(16));
            let start = json_logger_line(
                &mule_cid,
                "gen-main",
                "START",
                "INFO",
                mule_start,
                0,
                json!({"method": "GET", "requestPath": format!("/api/items/{i}"),
                       "remoteAddress": remote,
                       "headers": {"traceparent": mule_tp, "user-agent": USER_AGENT}}),
            );
            t.mule_lines.push(start.clone());
            if i % 11 == 5 {
                // Noise: a line shipped twice.
                t.mule_lines.push(start);
            }
            let call_status = if kind == "backend_failure" { 503 } else { 200 };
            let after = own / 2 + downstream;
            t.mule_lines.push(json_logger_line(
                &mule_cid,
                "gen-main",
                "AFTER_REQUEST",
                if call_status >= 400 { "ERROR" } else { "INFO" },
                mule_start + after * MS,
                after,
                json!({"statusCode": call_status, "durationMs": downstream, "target": "sap-erp"}),
            ));
            let (end_status, error_type) = match kind {
                "backend_failure" => (502, Some("HTTP:SERVICE_UNAVAILABLE")),
                "integration_failure" => (500, Some("MULE:EXPRESSION")),
                _ => (200, None),
            };
            let mut end = json!({"statusCode": end_status});
            if let Some(e) = error_type {
                end["errorType"] = json!(e);
            }
            t.mule_lines.push(json_logger_line(
                &mule_cid,
                "gen-main",
                "END",
                if end_status >= 400 { "ERROR" } else { "INFO" },
                mule_start + flow_ms * MS,
                flow_ms,
                end,
            ));
        }
        if i % 10 == 9 {
            // Noise: a scheduler flow (not request traffic), with its own correlation id.
            let sid = rng.uuid();
            for (tp, off, elapsed) in [("START", 5, 0), ("END", 45, 40)] {
                t.mule_lines.push(json_logger_line(
                    &sid,
                    "gen-inventory-sync-scheduler",
                    tp,
                    "INFO",
                    t0 + off * MS,
                    elapsed,
                    json!({"job": "inventory-sync", "items": 25}),
                ));
            }
            t.scheduler_correlation_ids.push(sid);
        }
        // The times seam must compute, from what the records above hold: the gateway's total
        // and, when it called its upstream and its product logs it, its backend time (NGINX:
        // the last of a list; Kong logs -1 without an upstream call), and the Mule flow's
        // time (END `elapsed`). All are whole milliseconds below one second, so NGINX's
        // seconds text ("0.047") and the identity proxy's seconds (0.047) times 1000 give
        // them back exactly in f64.
        let gateway_total = (!bypass).then_some(total as f64);
        let gateway_backend = (!bypass && backend_status.is_some() && logs_backend_time(product))
            .then_some(backend_time as f64);
        let mule_flow = (!rejected).then_some(flow_ms as f64);
        let (total_ms, gateway_ms, network_ms) =
            expected_latency(gateway_total, gateway_backend, mule_flow);
        t.truth.push(GatewayTruth {
            request_id: if bypass {
                mule_cid.clone()
            } else {
                gw_cid.clone()
            },
            product: (!bypass).then_some(product),
            kind,
            status,
            rejected_by: if bypass { None } else { rejected_by },
            bypass,
            gateway_correlation_id: (!bypass).then(|| gw_cid.clone()),
            mule_correlation_id: (!rejected).then(|| mule_cid.clone()),
            trace_id: trace,
            client_ip,
            total_ms,
            gateway_ms,
            network_ms,
        });
    }
    t.apim_eventhub_batches = eventhub_batches(&apim_records);
    t.apim_portal_csv = portal_csv(&apim_records);
    t.apim_loganalytics_json = loganalytics_json(&apim_records);
    t.apim_portal_json = portal_json(&apim_records);
    t
}
