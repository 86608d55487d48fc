//! seam's correlator: links the records of one end-to-end request across the gateway, the
//! integration platform and the traces, derives what the request was, and keeps the derived
//! tables `requests` and `request_events` up to date.
//!
//!
pub mod config;
pub mod error;
pub mod read;
pub mod schedule;
pub mod write;

pub use config::CorrelationConfig;
pub use error::{CorrelateError, ReadError};
pub use read::{Param, RecordSource};
pub use schedule::{Correlator, PENDING_FILE};

use std::collections::{BTreeMap, BTreeSet};

/// Token facts a record carried.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Token {
    /// `token_id` (fingerprint or `uti:`).
    pub token_id: Option<String>,
    /// `token_uti`.
    pub uti: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `token_object_id`.
    pub object_id: Option<String>,
    /// `client_app`.
    pub client_app: Option<String>,
    /// `tenant_id`.
    pub tenant_id: Option<String>,
    /// `token_issuer`.
    pub issuer: Option<String>,
    /// `token_audience`.
    pub audience: Option<String>,
    /// `token_issued_at` (ns).
    pub issued_at: Option<i64>,
    /// `token_expires_at` (ns).
    pub expires_at: Option<i64>,
    /// `token_scopes`.
    pub scopes: Vec<String>,
    /// `token_roles`.
    pub roles: Vec<String>,
    /// `token_type`.
    pub token_type: Option<String>,
}

impl Token {
    fn is_some(&self) -> bool {
        self.token_id.is_some() || self.uti.is_some()
    }
}

/// A `gateway_logs` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gateway {
    /// Event time (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest: i64,
    /// record_key.
    pub key: String,
    /// APIM correlation id.
    pub correlation_id: Option<String>,
    /// Trace id from a logged traceparent.
    pub trace_id: Option<String>,
    /// Forwarded X-Correlation-ID.
    pub forwarded_correlation_id: Option<String>,
    /// API id.
    pub api_id: Option<String>,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// URL path.
    pub url_path: Option<String>,
    /// Caller.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// APIM subscription.
    pub subscription_id: Option<String>,
    /// Status to the client.
    pub status_code: Option<i32>,
    /// Status from the backend.
    pub backend_status_code: Option<i32>,
    /// APIM TotalTime.
    pub total_ms: Option<f64>,
    /// APIM BackendTime.
    pub backend_ms: Option<f64>,
    /// Cache.
    pub cache: Option<String>,
    /// lastError source.
    pub last_error_source: Option<String>,
    /// lastError reason.
    pub last_error_reason: Option<String>,
    /// lastError message.
    pub last_error_message: Option<String>,
    /// APIM service.
    pub service: Option<String>,
    /// Gateway (managed or a self-hosted gateway's name).
    pub gateway: Option<String>,
    /// Token columns.
    pub token: Token,
}

/// A `gateway_events` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayEvent {
    /// Event time (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest: i64,
    /// record_key.
    pub key: String,
    /// APIM correlation id (RequestId).
    pub correlation_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Status.
    pub status_code: Option<i32>,
    /// Service.
    pub service: Option<String>,
    /// Policy section.
    pub section: Option<String>,
    /// Error reason.
    pub last_error_reason: Option<String>,
    /// Elapsed.
    pub elapsed_ms: Option<f64>,
    /// Token columns.
    pub token: Token,
}

/// A `flow_logs` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flow {
    /// Event time (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest: i64,
    /// record_key.
    pub key: String,
    /// Mule correlation id.
    pub correlation_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Mule app.
    pub mule_app: Option<String>,
    /// Flow.
    pub flow: Option<String>,
    /// JSON Logger trace point.
    pub trace_point: Option<String>,
    /// Level.
    pub level: Option<String>,
    /// JSON Logger elapsed.
    pub elapsed_ms: Option<f64>,
    /// JSON Logger scopeElapsed.
    pub scope_elapsed_ms: Option<f64>,
    /// Message.
    pub message: Option<String>,
    /// Mule error type.
    pub error_type: Option<String>,
    /// Caller address.
    pub remote_address: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// Request path.
    pub request_path: Option<String>,
    /// Status the app logged.
    pub status_code: Option<i32>,
    /// JSON Logger content (JSON text).
    pub content: Option<String>,
    /// Request traffic.
    pub is_request_traffic: bool,
    /// Token columns.
    pub token: Token,
}

/// A `spans` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// Start (ns).
    pub time: i64,
    /// End (ns).
    pub end: Option<i64>,
    /// Arrival (ns).
    pub ingest: i64,
    /// Trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Parent span id.
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// Kind (server, client, … in any case).
    pub kind: String,
    /// Status (unset, ok, error in any case).
    pub span_status: String,
    /// service.name.
    pub service: Option<String>,
    /// Scope name.
    pub scope: Option<String>,
    /// HTTP status.
    pub status_code: Option<i32>,
    /// Correlation id attribute.
    pub correlation_id: Option<String>,
    /// Client address.
    pub client_ip: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// URL path.
    pub url_path: Option<String>,
    /// Status message.
    pub status_message: Option<String>,
    /// Token columns.
    pub token: Token,
}

impl Span {
    fn duration_ms(&self) -> Option<f64> {
        self.end.map(|e| e.saturating_sub(self.time) as f64 / 1e6)
    }

    fn is_mule(&self) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.to_ascii_lowercase().contains("mule"))
    }
}

/// The records of a window.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// gateway_logs rows.
    pub gateway: Vec<Gateway>,
    /// gateway_events rows.
    pub events: Vec<GatewayEvent>,
    /// flow_logs rows.
    pub flows: Vec<Flow>,
    /// spans rows.
    pub spans: Vec<Span>,
}

/// Correlation settings.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Records linked by an id must lie at most this far apart in event time.
    pub max_link_distance_ns: i64,
    /// A request is settled once its last record arrived this long ago.
    pub horizon_ns: i64,
    /// Addresses the gateway calls the backends from: callers at these addresses are not a
    /// bypass even without a gateway record.
    pub gateway_egress: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            max_link_distance_ns: 5 * 60 * 1_000_000_000,
            horizon_ns: 15 * 60 * 1_000_000_000,
            gateway_egress: Vec::new(),
        }
    }
}

/// One derived request (a `requests` row) and its timeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Earliest record time (ns).
    pub time: i64,
    /// Latest arrival (ns).
    pub ingest_time: i64,
    /// Canonical id.
    pub request_id: String,
    /// Trace id.
    pub trace_id: Option<String>,
    /// APIM correlation id.
    pub apim_correlation_id: Option<String>,
    /// Mule correlation id.
    pub mule_correlation_id: Option<String>,
    /// API id.
    pub api_id: Option<String>,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// URL path.
    pub url_path: Option<String>,
    /// Client address.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// APIM subscription.
    pub subscription_id: Option<String>,
    /// The gateway that handled it.
    pub gateway: Option<String>,
    /// Token.
    pub token: Token,
    /// Token expired at request time.
    pub token_expired: Option<bool>,
    /// Status to the client.
    pub status_code: Option<i32>,
    /// Status the gateway got from its backend.
    pub backend_status_code: Option<i32>,
    /// gateway, integration or backend.
    pub rejected_by: Option<&'static str>,
    /// Why.
    pub error_reason: Option<String>,
    /// End to end.
    pub total_ms: Option<f64>,
    /// Gateway time.
    pub gateway_ms: Option<f64>,
    /// Network time.
    pub network_ms: Option<f64>,
    /// Integration time.
    pub integration_ms: Option<f64>,
    /// Backend time.
    pub backend_ms: Option<f64>,
    /// Cache.
    pub cache: Option<String>,
    /// Bypass.
    pub bypassed_gateway: bool,
    /// Gateway record present.
    pub has_gateway: bool,
    /// Flow records present.
    pub has_flow: bool,
    /// Spans present.
    pub has_spans: bool,
    /// Integration app.
    pub mule_app: Option<String>,
    /// Entry flow.
    pub flow: Option<String>,
    /// Layers disagree.
    pub layers_disagree: bool,
    /// Settled.
    pub settled: bool,
    /// Records linked.
    pub records: i64,
    /// Timeline.
    pub events: Vec<Event>,
}

/// One record of a request's timeline (a `request_events` row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    /// Start (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest_time: i64,
    /// client, gateway, integration, backend.
    pub layer: &'static str,
    /// Source table.
    pub source: &'static str,
    /// Service / app.
    pub service: Option<String>,
    /// What.
    pub name: Option<String>,
    /// Duration.
    pub duration_ms: Option<f64>,
    /// Status.
    pub status_code: Option<i32>,
    /// ok / error.
    pub outcome: &'static str,
    /// Error detail.
    pub detail: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Span id.
    pub span_id: Option<String>,
    /// record_key or span id.
    pub record_key: Option<String>,
}

/// Gateway records of the same service, path and status at most this far apart are twins
/// (the same request in two shapes, one without a correlation id); two records with
/// different correlation ids are never joined.
pub const TWIN_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Gateway(usize),
    Event(usize),
    Flow(usize),
    Span(usize),
}

struct Dsu {
    parent: Vec<usize>,
    apim: Vec<Option<String>>,
}

impl Dsu {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        if let (Some(x), Some(y)) = (&self.apim[ra], &self.apim[rb])
            && x != y
        {
            return;
        }
        let (keep, gone) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[gone] = keep;
        if self.apim[keep].is_none() {
            self.apim[keep] = self.apim[gone].take();
        }
    }
}

fn norm(id: &Option<String>) -> Option<String> {
    id.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
}

fn sort_input(input: &mut Input) {
    input
        .gateway
        .sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
    input
        .events
        .sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
    input
        .flows
        .sort_by(|a, b| (a.time, &a.key).cmp(&(b.time, &b.key)));
    input
        .spans
        .sort_by(|a, b| (a.time, &a.trace_id, &a.span_id).cmp(&(b.time, &b.trace_id, &b.span_id)));
}

/// The IP of an address such as `/10.20.4.17:49822` or `[::1]:80`.
pub fn ip_of(addr: &str) -> String {
    let a = addr.trim().trim_start_matches('/');
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host.to_string()
        }
        _ => a.to_string(),
    }
}

/// Length of the union of intervals (ns), in ms.
fn union_ms(mut iv: Vec<(i64, i64)>) -> Option<f64> {
    if iv.is_empty() {
        return None;
    }
    iv.sort();
    let mut total = 0i64;
    let (mut s, mut e) = iv[0];
    for &(a, b) in &iv[1..] {
        if a > e {
            total = total.saturating_add(e.saturating_sub(s));
            s = a;
            e = b;
        } else {
            e = e.max(b);
        }
    }
    total = total.saturating_add(e.saturating_sub(s));
    Some(total as f64 / 1e6)
}

fn content_num(content: &Option<String>, keys: &[&str]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(content.as_deref()?).ok()?;
    keys.iter().find_map(|k| match v.get(*k)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn first<T: Clone>(it: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    it.into_iter().flatten().next()
}

/// Links the records of `input` into requests; `now_ns` decides which are settled.
pub fn correlate(mut input: Input, rules: &Rules, now_ns: i64) -> Vec<Request> {
    sort_input(&mut input);
    let nodes: Vec<Node> = (0..input.gateway.len())
        .map(Node::Gateway)
        .chain((0..input.events.len()).map(Node::Event))
        .chain(
            (0..input.flows.len())
                .filter(|i| input.flows[*i].is_request_traffic)
                .map(Node::Flow),
        )
        .chain((0..input.spans.len()).map(Node::Span))
        .collect();
    let mut dsu = Dsu {
        parent: (0..nodes.len()).collect(),
        apim: nodes
            .iter()
            .map(|n| match n {
                Node::Gateway(i) => norm(&input.gateway[*i].correlation_id),
                Node::Event(i) => norm(&input.events[*i].correlation_id),
                _ => None,
            })
            .collect(),
    };
    // Keys of every node, with its time.
    let mut by_key: BTreeMap<String, Vec<(i64, usize)>> = BTreeMap::new();
    let mut add = |key: Option<String>, prefix: &str, time: i64, n: usize| {
        if let Some(k) = key {
            by_key
                .entry(format!("{prefix}{k}"))
                .or_default()
                .push((time, n));
        }
    };
    for (n, node) in nodes.iter().enumerate() {
        match *node {
            Node::Gateway(i) => {
                let g = &input.gateway[i];
                // Twins by service, path and status within a second (old records have no
                // correlation id); see TWIN_NS.
                let twin = g.url_path.as_ref().map(|p| {
                    format!(
                        "{}|{p}|{}",
                        g.service.as_deref().unwrap_or(""),
                        g.status_code.unwrap_or(0)
                    )
                });
                add(twin, "l:", g.time, n);
                add(norm(&g.correlation_id), "c:", g.time, n);
                add(norm(&g.forwarded_correlation_id), "c:", g.time, n);
                add(norm(&g.trace_id), "t:", g.time, n);
            }
            Node::Event(i) => {
                let e = &input.events[i];
                add(norm(&e.correlation_id), "c:", e.time, n);
                add(norm(&e.trace_id), "t:", e.time, n);
            }
            Node::Flow(i) => {
                let f = &input.flows[i];
                add(norm(&f.correlation_id), "c:", f.time, n);
                add(norm(&f.trace_id), "t:", f.time, n);
            }
            Node::Span(i) => {
                let s = &input.spans[i];
                add(norm(&Some(s.trace_id.clone())), "t:", s.time, n);
                add(norm(&s.correlation_id), "c:", s.time, n);
            }
        }
    }
    for (key, list) in by_key.iter_mut() {
        list.sort();
        let distance = if key.starts_with("l:") {
            TWIN_NS
        } else {
            rules.max_link_distance_ns
        };
        for w in list.windows(2) {
            if w[1].0.saturating_sub(w[0].0) <= distance {
                dsu.union(w[0].1, w[1].1);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<Node>> = BTreeMap::new();
    for (n, node) in nodes.iter().enumerate() {
        let r = dsu.find(n);
        groups.entry(r).or_default().push(*node);
    }
    let mut out: Vec<Request> = groups
        .into_values()
        .filter_map(|members| build(&input, &members, rules, now_ns))
        .collect();
    out.sort_by(|a, b| (a.time, &a.request_id).cmp(&(b.time, &b.request_id)));
    out
}

fn build(input: &Input, members: &[Node], rules: &Rules, now_ns: i64) -> Option<Request> {
    let mut gws: Vec<&Gateway> = Vec::new();
    let mut evs: Vec<&GatewayEvent> = Vec::new();
    let mut flows: Vec<&Flow> = Vec::new();
    let mut spans: Vec<&Span> = Vec::new();
    for m in members {
        match *m {
            Node::Gateway(i) => gws.push(&input.gateway[i]),
            Node::Event(i) => evs.push(&input.events[i]),
            Node::Flow(i) => flows.push(&input.flows[i]),
            Node::Span(i) => spans.push(&input.spans[i]),
        }
    }
    let mule_spans: Vec<&Span> = spans.iter().copied().filter(|s| s.is_mule()).collect();
    // A request needs gateway evidence or integration evidence; a trace of other services
    // alone is not one.
    if gws.is_empty() && evs.is_empty() && flows.is_empty() && mule_spans.is_empty() {
        return None;
    }
    // Of twin gateway records, the one with a correlation id speaks for the request.
    let g = gws
        .iter()
        .copied()
        .find(|g| g.correlation_id.is_some())
        .or_else(|| gws.first().copied());

    // The integration layer: the Mule app the request entered.
    let span_ids: BTreeSet<&str> = mule_spans.iter().map(|s| s.span_id.as_str()).collect();
    let entry_span = mule_spans
        .iter()
        .copied()
        .filter(|s| s.kind.eq_ignore_ascii_case("server"))
        .find(|s| {
            s.parent_span_id
                .as_deref()
                .is_none_or(|p| !span_ids.contains(p))
        });
    let entry_app: Option<String> = entry_span.and_then(|s| s.service.clone()).or_else(|| {
        first(
            flows
                .iter()
                .filter(|f| f.trace_point.as_deref() == Some("START"))
                .map(|f| f.mule_app.clone()),
        )
        .or_else(|| first(flows.iter().map(|f| f.mule_app.clone())))
    });
    let in_entry = |app: &Option<String>| entry_app.is_some() && app == &entry_app;
    let entry_flows: Vec<&Flow> = flows
        .iter()
        .copied()
        .filter(|f| in_entry(&f.mule_app))
        .collect();
    let start = entry_flows
        .iter()
        .copied()
        .find(|f| f.trace_point.as_deref() == Some("START"));
    let end = entry_flows
        .iter()
        .copied()
        .filter(|f| f.trace_point.as_deref() == Some("END"))
        .max_by(|a, b| {
            a.elapsed_ms
                .unwrap_or(0.0)
                .total_cmp(&b.elapsed_ms.unwrap_or(0.0))
        });
    let flow_ms = end
        .and_then(|e| e.elapsed_ms)
        .or_else(|| entry_span.and_then(Span::duration_ms));

    // Layers of spans: the entry app's spans are integration; spans below them backend;
    // the rest (callers) client.
    let by_id: BTreeMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let is_integration = |s: &Span| s.is_mule() && in_entry(&s.service);
    let span_layer = |s: &Span| -> &'static str {
        if is_integration(s) {
            return "integration";
        }
        let mut cur = s.parent_span_id.as_deref();
        for _ in 0..64 {
            let Some(p) = cur.and_then(|p| by_id.get(p)) else {
                break;
            };
            if is_integration(p) {
                return "backend";
            }
            cur = p.parent_span_id.as_deref();
        }
        if s.is_mule() { "backend" } else { "client" }
    };

    // Downstream waits of the integration layer.
    let client_iv: Vec<(i64, i64)> = spans
        .iter()
        .filter(|s| is_integration(s) && s.kind.eq_ignore_ascii_case("client"))
        .filter_map(|s| s.end.map(|e| (s.time, e)))
        .collect();
    let backend_ms = union_ms(client_iv).or_else(|| {
        let iv: Vec<(i64, i64)> = entry_flows
            .iter()
            .filter_map(|f| {
                let tp = f.trace_point.as_deref()?;
                let d = if tp == "AFTER_REQUEST" {
                    content_num(&f.content, &["durationMs", "duration", "elapsedMs"])
                } else if tp.ends_with("REQUEST_SCOPE_AFTER") {
                    f.scope_elapsed_ms
                } else {
                    None
                }?;
                // A logged duration is input: negative, NaN or absurd ones are ignored.
                let d_ns = d * 1e6;
                if !(0.0..1e15).contains(&d_ns) {
                    return None;
                }
                Some((f.time.saturating_sub(d_ns as i64), f.time))
            })
            .collect();
        union_ms(iv)
    });
    let integration_ms = match (flow_ms, backend_ms) {
        (Some(f), Some(b)) => Some(f - b),
        (Some(f), None) => Some(f),
        _ => None,
    };

    let has_integration = !entry_flows.is_empty() || entry_span.is_some();
    let gateway_ms = g.and_then(|g| {
        let total = g.total_ms?;
        Some(match g.backend_ms {
            Some(b) => total - b,
            None => total,
        })
    });
    let network_ms = match (g.and_then(|g| g.backend_ms), flow_ms) {
        (Some(b), Some(f)) if has_integration => Some(b - f),
        _ => None,
    };
    let total_ms = g.and_then(|g| g.total_ms).or(flow_ms);

    // Outcome.
    let integration_status = end
        .and_then(|e| e.status_code)
        .or_else(|| entry_span.and_then(|s| s.status_code));
    let status_code = g
        .and_then(|g| g.status_code)
        .or_else(|| first(evs.iter().map(|e| e.status_code)))
        .or(integration_status);
    let entry_error = first(entry_flows.iter().map(|f| f.error_type.clone()));
    let downstream_failed = spans
        .iter()
        .filter(|s| {
            span_layer(s) == "backend"
                || (is_integration(s) && s.kind.eq_ignore_ascii_case("client"))
        })
        .find(|s| {
            s.status_code.is_some_and(|c| c >= 400) || s.span_status.eq_ignore_ascii_case("error")
        })
        .copied();
    let backend_flow_failed = flows.iter().any(|f| {
        !in_entry(&f.mule_app)
            && (f.error_type.is_some() || f.status_code.is_some_and(|c| c >= 400))
    });
    let (rejected_by, error_reason) = match status_code {
        Some(c) if c >= 400 => {
            let gw_reject = g.is_some_and(|g| {
                g.backend_status_code.is_none()
                    && (g.last_error_source.is_some() || !has_integration)
            });
            if gw_reject {
                (
                    Some("gateway"),
                    first(gws.iter().map(|g| g.last_error_reason.clone()))
                        .or_else(|| first(evs.iter().map(|e| e.last_error_reason.clone()))),
                )
            } else if downstream_failed.is_some()
                || backend_flow_failed
                || entry_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("HTTP:"))
            {
                (
                    Some("backend"),
                    entry_error.clone().or_else(|| {
                        downstream_failed.map(|s| {
                            s.status_message.clone().unwrap_or_else(|| {
                                format!(
                                    "{} answered {}",
                                    s.service.clone().unwrap_or_default(),
                                    s.status_code.unwrap_or(0)
                                )
                            })
                        })
                    }),
                )
            } else if has_integration {
                (
                    Some("integration"),
                    entry_error.clone().or_else(|| {
                        first(
                            mule_spans
                                .iter()
                                .filter(|s| s.span_status.eq_ignore_ascii_case("error"))
                                .map(|s| s.status_message.clone()),
                        )
                    }),
                )
            } else {
                (Some("gateway"), g.and_then(|g| g.last_error_reason.clone()))
            }
        }
        _ => (None, None),
    };
    let layers_disagree = match (g.and_then(|g| g.status_code), integration_status) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };

    // Identity and who.
    let apim_cid = g
        .and_then(|g| g.correlation_id.clone())
        .or_else(|| first(evs.iter().map(|e| e.correlation_id.clone())));
    let mule_cid = start
        .and_then(|f| f.correlation_id.clone())
        .or_else(|| first(entry_flows.iter().map(|f| f.correlation_id.clone())))
        .or_else(|| entry_span.and_then(|s| s.correlation_id.clone()))
        .filter(|_| has_integration);
    let trace_id = g
        .and_then(|g| g.trace_id.clone())
        .or_else(|| entry_span.map(|s| s.trace_id.clone()))
        .or_else(|| first(spans.iter().map(|s| Some(s.trace_id.clone()))))
        .or_else(|| first(flows.iter().map(|f| f.trace_id.clone())))
        .or_else(|| first(evs.iter().map(|e| e.trace_id.clone())));
    let request_id = apim_cid
        .clone()
        .or_else(|| mule_cid.clone())
        .or_else(|| trace_id.clone())?;
    let token = evs
        .iter()
        .map(|e| &e.token)
        .chain(start.map(|f| &f.token))
        .chain(flows.iter().map(|f| &f.token))
        .chain(gws.iter().map(|g| &g.token))
        .chain(entry_span.map(|s| &s.token))
        .chain(spans.iter().map(|s| &s.token))
        .find(|t| t.is_some())
        .cloned()
        .unwrap_or_default();
    let client_ip = g
        .and_then(|g| g.client_ip.clone())
        .or_else(|| start.and_then(|f| f.remote_address.as_deref().map(ip_of)))
        .or_else(|| entry_span.and_then(|s| s.client_ip.as_deref().map(ip_of)));
    let time = members
        .iter()
        .map(|m| match *m {
            Node::Gateway(i) => input.gateway[i].time,
            Node::Event(i) => input.events[i].time,
            Node::Flow(i) => input.flows[i].time,
            Node::Span(i) => input.spans[i].time,
        })
        .min()
        .unwrap_or(0);
    let ingest_time = members
        .iter()
        .map(|m| match *m {
            Node::Gateway(i) => input.gateway[i].ingest,
            Node::Event(i) => input.events[i].ingest,
            Node::Flow(i) => input.flows[i].ingest,
            Node::Span(i) => input.spans[i].ingest,
        })
        .max()
        .unwrap_or(0);
    let settled = now_ns.saturating_sub(ingest_time) > rules.horizon_ns;
    let egress = client_ip
        .as_deref()
        .is_some_and(|ip| rules.gateway_egress.iter().any(|e| e == ip));
    let bypassed_gateway =
        gws.is_empty() && evs.is_empty() && has_integration && settled && !egress;

    // Timeline.
    let mut events: Vec<Event> = Vec::new();
    for g in &gws {
        events.push(Event {
            time: g.time,
            ingest_time: g.ingest,
            layer: "gateway",
            source: "gateway_logs",
            service: g.service.clone(),
            name: Some(
                [g.method.clone(), g.url_path.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            duration_ms: g.total_ms,
            status_code: g.status_code,
            outcome: if g.status_code.is_some_and(|c| c >= 400) {
                "error"
            } else {
                "ok"
            },
            detail: g
                .last_error_reason
                .clone()
                .or_else(|| g.last_error_message.clone()),
            trace_id: g.trace_id.clone(),
            span_id: None,
            record_key: Some(g.key.clone()),
        });
    }
    for e in &evs {
        events.push(Event {
            time: e.time,
            ingest_time: e.ingest,
            layer: "gateway",
            source: "gateway_events",
            service: e.service.clone(),
            name: e.section.clone().map(|s| format!("event ({s})")),
            duration_ms: e.elapsed_ms,
            status_code: e.status_code,
            outcome: if e.status_code.is_some_and(|c| c >= 400) {
                "error"
            } else {
                "ok"
            },
            detail: e.last_error_reason.clone(),
            trace_id: e.trace_id.clone(),
            span_id: None,
            record_key: Some(e.key.clone()),
        });
    }
    for f in &flows {
        let failed = f.error_type.is_some()
            || f.status_code.is_some_and(|c| c >= 400)
            || f.level.as_deref() == Some("ERROR");
        events.push(Event {
            time: f.time,
            ingest_time: f.ingest,
            layer: if in_entry(&f.mule_app) {
                "integration"
            } else {
                "backend"
            },
            source: "flow_logs",
            service: f.mule_app.clone(),
            name: Some(
                [f.trace_point.clone(), f.message.clone()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            ),
            duration_ms: f.scope_elapsed_ms.or(f.elapsed_ms),
            status_code: f.status_code,
            outcome: if failed { "error" } else { "ok" },
            detail: f.error_type.clone(),
            trace_id: f.trace_id.clone(),
            span_id: None,
            record_key: Some(f.key.clone()),
        });
    }
    for s in &spans {
        let failed =
            s.span_status.eq_ignore_ascii_case("error") || s.status_code.is_some_and(|c| c >= 400);
        events.push(Event {
            time: s.time,
            ingest_time: s.ingest,
            layer: span_layer(s),
            source: "spans",
            service: s.service.clone(),
            name: Some(s.name.clone()),
            duration_ms: s.duration_ms(),
            status_code: s.status_code,
            outcome: if failed { "error" } else { "ok" },
            detail: s.status_message.clone(),
            trace_id: Some(s.trace_id.clone()),
            span_id: Some(s.span_id.clone()),
            record_key: Some(s.span_id.clone()),
        });
    }
    events
        .sort_by(|a, b| (a.time, a.source, &a.record_key).cmp(&(b.time, b.source, &b.record_key)));

    let token_expired = token.expires_at.map(|e| e < time);
    Some(Request {
        time,
        ingest_time,
        request_id,
        trace_id,
        apim_correlation_id: apim_cid,
        mule_correlation_id: mule_cid,
        api_id: g.and_then(|g| g.api_id.clone()),
        operation_id: g.and_then(|g| g.operation_id.clone()),
        method: g
            .and_then(|g| g.method.clone())
            .or_else(|| start.and_then(|f| f.method.clone()))
            .or_else(|| entry_span.and_then(|s| s.method.clone())),
        url_path: g
            .and_then(|g| g.url_path.clone())
            .or_else(|| start.and_then(|f| f.request_path.clone()))
            .or_else(|| entry_span.and_then(|s| s.url_path.clone())),
        client_ip,
        user_agent: g.and_then(|g| g.user_agent.clone()),
        subscription_id: g.and_then(|g| g.subscription_id.clone()),
        gateway: g.and_then(|g| g.gateway.clone()),
        token,
        token_expired,
        status_code,
        backend_status_code: g.and_then(|g| g.backend_status_code),
        rejected_by,
        error_reason,
        total_ms,
        gateway_ms,
        network_ms,
        integration_ms: integration_ms.filter(|_| has_integration),
        backend_ms: backend_ms.filter(|_| has_integration),
        cache: g.and_then(|g| g.cache.clone()),
        bypassed_gateway,
        has_gateway: !gws.is_empty(),
        has_flow: !flows.is_empty(),
        has_spans: !spans.is_empty(),
        mule_app: entry_app.filter(|_| has_integration),
        flow: start
            .and_then(|f| f.flow.clone())
            .or_else(|| first(entry_flows.iter().map(|f| f.flow.clone()))),
        layers_disagree,
        settled,
        records: members.len() as i64,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn union_counts_parallel_calls_once() {
        assert_eq!(
            union_ms(vec![(0, 100 * S / 1000), (50 * S / 1000, 150 * S / 1000)]),
            Some(150.0)
        );
        assert_eq!(
            union_ms(vec![(0, 10_000_000), (20_000_000, 30_000_000)]),
            Some(20.0)
        );
        assert_eq!(ip_of("/10.20.4.17:49822"), "10.20.4.17");
        assert_eq!(ip_of("[::1]:80"), "::1");
        assert_eq!(ip_of("203.0.113.45"), "203.0.113.45");
    }

    fn gw(cid: &str, t: i64, fwd: Option<&str>) -> Gateway {
        Gateway {
            time: t,
            ingest: t,
            key: cid.into(),
            correlation_id: Some(cid.into()),
            forwarded_correlation_id: fwd.map(str::to_string),
            status_code: Some(200),
            ..Default::default()
        }
    }

    fn flow(cid: &str, t: i64) -> Flow {
        Flow {
            time: t,
            ingest: t,
            key: format!("{cid}-{t}"),
            correlation_id: Some(cid.into()),
            mule_app: Some("app".into()),
            trace_point: Some("START".into()),
            is_request_traffic: true,
            ..Default::default()
        }
    }

    #[test]
    fn two_gateway_requests_sharing_a_client_id_stay_apart_and_order_does_not_matter() {
        let input = Input {
            gateway: vec![gw("a", 0, Some("client-1")), gw("b", S, Some("client-1"))],
            flows: vec![flow("client-1", S / 2)],
            ..Default::default()
        };
        let mut reversed = input.clone();
        reversed.gateway.reverse();
        let r1 = correlate(input, &Rules::default(), 0);
        let r2 = correlate(reversed, &Rules::default(), 0);
        assert_eq!(r1.len(), 2);
        assert_eq!(r1, r2);
    }

    #[test]
    fn legacy_twins_join_and_egress_is_not_a_bypass() {
        let mut legacy = gw("x", 0, None);
        legacy.correlation_id = None;
        legacy.url_path = Some("/a".into());
        let mut twin = gw("c-1", 400_000_000, None);
        twin.url_path = Some("/a".into());
        let input = Input {
            gateway: vec![legacy, twin],
            ..Default::default()
        };
        assert_eq!(correlate(input, &Rules::default(), 0).len(), 1);

        let mut f = flow("m-1", 0);
        f.remote_address = Some("/198.51.100.23:4000".into());
        let input = Input {
            flows: vec![f],
            ..Default::default()
        };
        let late = 3_600 * S;
        let open = correlate(input.clone(), &Rules::default(), late);
        assert!(
            open[0].bypassed_gateway,
            "settled, no gateway, unknown caller"
        );
        let rules = Rules {
            gateway_egress: vec!["198.51.100.23".into()],
            ..Rules::default()
        };
        assert!(!correlate(input.clone(), &rules, late)[0].bypassed_gateway);
        assert!(
            !correlate(input, &Rules::default(), 0)[0].bypassed_gateway,
            "not settled"
        );
    }

    #[test]
    fn layers_disagree_when_the_gateway_and_mule_report_different_outcomes() {
        let mut g = gw("a", 0, None);
        g.status_code = Some(504);
        g.backend_status_code = None;
        g.last_error_source = Some("forward-request".into());
        let mut end = flow("a", 2 * S);
        end.trace_point = Some("END".into());
        end.status_code = Some(201);
        let input = Input {
            gateway: vec![g],
            flows: vec![flow("a", S / 10), end],
            ..Default::default()
        };
        let r = &correlate(input, &Rules::default(), 0)[0];
        assert!(r.layers_disagree);
        assert_eq!(r.status_code, Some(504));
        assert_eq!(r.rejected_by, Some("gateway"));
    }

    #[test]
    fn ids_reused_far_apart_do_not_merge() {
        let day = 86_400 * S;
        let input = Input {
            flows: vec![flow("same", 0), flow("same", day)],
            ..Default::default()
        };
        assert_eq!(correlate(input, &Rules::default(), 0).len(), 2);
    }
}
