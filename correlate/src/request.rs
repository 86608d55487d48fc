//! Building one request: [`build`] takes one linked component (the window's [`Input`], the
//! component's [`Node`]s, the [`Rules`] and the time now) and gives its [`Request`] row with
//! its timeline of [`Event`]s, or nothing when the component is not a request (no gateway or
//! integration evidence, or no id); a probe gives a [`Probe`] row instead, background work
//! (no inbound HTTP evidence: `probe::Kind`) nothing.
//!
//! It sorts the records by layer and names the request ([`Layers`], [`Identity`]), times the
//! layers ([`Latency`]), decides the outcome ([`Outcome`]) and lays out the timeline
//! (`timeline`), then puts the parts together.

use seam_schemas::token::TokenColumns;

use crate::latency::Latency;
use crate::layers::{Identity, Layers, first};
use crate::link::Node;
use crate::outcome::Outcome;
use crate::probe::{Kind, ProbeMatch, external, flow_user_agent};
use crate::record::{Input, Rules};

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
    pub token: TokenColumns,
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

/// One health or readiness probe (a `probes` row): a linked run whose inbound record has a
/// probe path or user agent (`probe`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    /// Earliest record time (ns).
    pub time: i64,
    /// Latest arrival (ns).
    pub ingest_time: i64,
    /// Its id, chosen as a request's would be.
    pub probe_id: String,
    /// Integration app.
    pub mule_app: Option<String>,
    /// Entry flow.
    pub flow: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// Path.
    pub url_path: Option<String>,
    /// Caller address.
    pub client_ip: Option<String>,
    /// The caller's user agent.
    pub user_agent: Option<String>,
    /// `path` or `user_agent`.
    pub matched_by: &'static str,
    /// The configured pattern or prefix that matched.
    pub rule: String,
    /// A gateway record is part of it.
    pub has_gateway: bool,
    /// Flow records are part of it.
    pub has_flow: bool,
    /// Spans are part of it.
    pub has_spans: bool,
    /// The caller is outside the cluster's networks and not the gateway's egress.
    pub external: bool,
    /// Settled.
    pub settled: bool,
    /// Records linked.
    pub records: i64,
}

/// What one component became.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Built {
    /// A `requests` row.
    Request(Box<Request>),
    /// A `probes` row.
    Probe(Box<Probe>),
}

/// The request or probe of the component `members` of `input`; `now_ns` decides whether it
/// is settled. `None` when the component is background work or has no id.
pub(crate) fn build(input: &Input, members: &[Node], rules: &Rules, now_ns: i64) -> Option<Built> {
    let l = Layers::of(input, members)?;
    match Kind::of(&l, rules) {
        Kind::Background => None,
        Kind::Probe(m) => probe(&l, m, rules, now_ns).map(|p| Built::Probe(Box::new(p))),
        Kind::Request(_) => request(&l, rules, now_ns).map(|r| Built::Request(Box::new(r))),
    }
}

/// The probe row of `l`.
fn probe(l: &Layers<'_>, m: ProbeMatch, rules: &Rules, now_ns: i64) -> Option<Probe> {
    let who = Identity::of(l, rules, now_ns)?;
    let user_agent = first(l.gws.iter().map(|g| g.user_agent.clone()))
        .or_else(|| l.entry_span.and_then(|s| s.user_agent.clone()))
        .or_else(|| first(l.entry_flows.iter().map(|f| flow_user_agent(f))));
    let external = external(rules, who.client_ip.as_deref());
    Some(Probe {
        time: who.time,
        ingest_time: who.ingest_time,
        probe_id: who.request_id,
        mule_app: who.mule_app,
        flow: who.flow,
        method: who.method,
        url_path: who.url_path,
        client_ip: who.client_ip,
        user_agent,
        matched_by: m.by,
        rule: m.rule,
        has_gateway: !l.gws.is_empty() || !l.evs.is_empty(),
        has_flow: !l.flows.is_empty(),
        has_spans: !l.spans.is_empty(),
        external,
        settled: who.settled,
        records: l.members.len() as i64,
    })
}

/// The request row of `l`.
fn request(l: &Layers<'_>, rules: &Rules, now_ns: i64) -> Option<Request> {
    let latency = Latency::of(l);
    let outcome = Outcome::of(l);
    let who = Identity::of(l, rules, now_ns)?;
    let events = timeline(l);
    let g = l.g;
    Some(Request {
        time: who.time,
        ingest_time: who.ingest_time,
        request_id: who.request_id,
        trace_id: who.trace_id,
        apim_correlation_id: who.apim_correlation_id,
        mule_correlation_id: who.mule_correlation_id,
        api_id: g.and_then(|g| g.api_id.clone()),
        operation_id: g.and_then(|g| g.operation_id.clone()),
        method: who.method,
        url_path: who.url_path,
        client_ip: who.client_ip,
        user_agent: g.and_then(|g| g.user_agent.clone()),
        subscription_id: g.and_then(|g| g.subscription_id.clone()),
        gateway: g.and_then(|g| g.gateway.clone()),
        token: who.token,
        token_expired: who.token_expired,
        status_code: outcome.status_code,
        backend_status_code: g.and_then(|g| g.backend_status_code),
        rejected_by: outcome.rejected_by,
        error_reason: outcome.error_reason,
        total_ms: latency.total_ms,
        gateway_ms: latency.gateway_ms,
        network_ms: latency.network_ms,
        integration_ms: latency.integration_ms,
        backend_ms: latency.backend_ms,
        cache: g.and_then(|g| g.cache.clone()),
        bypassed_gateway: who.bypassed_gateway,
        has_gateway: !l.gws.is_empty(),
        has_flow: !l.flows.is_empty(),
        has_spans: !l.spans.is_empty(),
        mule_app: who.mule_app,
        flow: who.flow,
        layers_disagree: outcome.layers_disagree,
        settled: who.settled,
        records: l.members.len() as i64,
        events,
    })
}

/// The timeline of the request in `l`: one event per record, by time, source and record key.
pub(crate) fn timeline(l: &Layers<'_>) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    for g in &l.gws {
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
    for e in &l.evs {
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
    for f in &l.flows {
        let failed = f.error_type.is_some()
            || f.status_code.is_some_and(|c| c >= 400)
            || f.level.as_deref() == Some("ERROR");
        events.push(Event {
            time: f.time,
            ingest_time: f.ingest,
            layer: if l.in_entry(&f.mule_app) {
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
    for s in &l.spans {
        let failed =
            s.span_status.eq_ignore_ascii_case("error") || s.status_code.is_some_and(|c| c >= 400);
        events.push(Event {
            time: s.time,
            ingest_time: s.ingest,
            layer: l.span_layer(s),
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
    events
}
