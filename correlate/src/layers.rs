//! Which layers a request went through, and who and what it was.
//!
//! [`Layers::of`] takes one linked component (the window's [`Input`] and the component's
//! [`Node`]s) and gives its records sorted by layer: the gateway records and the one of them
//! that speaks for the request, the integration layer's entry (the Mule app the request
//! entered, its entry span and entry flow records, START and END), and the questions asked
//! of every record later ([`Layers::in_entry`], [`Layers::is_integration`],
//! [`Layers::span_layer`]). It gives nothing for a component without gateway or integration
//! evidence.
//!
//! [`Identity::of`] takes the [`Layers`] and the [`Rules`] and gives the ids (request id,
//! correlation ids, trace id), the token, the caller ([`ip_of`]), method, path, app and
//! flow, when the request was and whether it is settled, and whether it bypassed the
//! gateway. It gives nothing when the component has no id at all.

use std::collections::BTreeMap;

use seam_schemas::token::TokenColumns;

use crate::latency::plausible_ms;
use crate::link::{Node, node_time};
use crate::probe::{from_egress, listener_line, outbound, parse_ip};
use crate::record::{Flow, Gateway, GatewayEvent, Input, Rules, Span};

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

/// A logged caller address as an IP (`/10.1.2.3:80`, Java's `host/10.1.2.3:80`, IPv4-mapped
/// IPv6 as IPv4), else as [`ip_of`] reads it.
fn caller_ip(addr: &str) -> String {
    parse_ip(addr).map_or_else(|| ip_of(addr), |ip| ip.to_string())
}

/// The first value an iterator of options holds.
pub(crate) fn first<T: Clone>(it: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    it.into_iter().flatten().next()
}

/// Whether a record of `app` belongs to the entry app (there is one and it is `app`).
fn entered(entry_app: &Option<String>, app: &Option<String>) -> bool {
    entry_app.is_some() && app == entry_app
}

/// The records of one linked component, by layer, and the integration layer's entry.
#[derive(Debug)]
pub(crate) struct Layers<'a> {
    /// The window the component's nodes index into.
    pub(crate) input: &'a Input,
    /// The component's nodes.
    pub(crate) members: &'a [Node],
    /// Gateway log records.
    pub(crate) gws: Vec<&'a Gateway>,
    /// Gateway event records.
    pub(crate) evs: Vec<&'a GatewayEvent>,
    /// Flow records (every linked line, whatever its `is_request_traffic` hint).
    pub(crate) flows: Vec<&'a Flow>,
    /// Spans.
    pub(crate) spans: Vec<&'a Span>,
    /// The spans of Mule apps.
    pub(crate) mule_spans: Vec<&'a Span>,
    /// The gateway record that speaks for the request.
    pub(crate) g: Option<&'a Gateway>,
    /// The server span by which the request entered the integration layer.
    pub(crate) entry_span: Option<&'a Span>,
    /// The Mule app the request entered.
    pub(crate) entry_app: Option<String>,
    /// The flow records of the entry app.
    pub(crate) entry_flows: Vec<&'a Flow>,
    /// The entry app's START record.
    pub(crate) start: Option<&'a Flow>,
    /// The entry app's END record (the longest elapsed one).
    pub(crate) end: Option<&'a Flow>,
    /// The request went through the integration layer.
    pub(crate) has_integration: bool,
    /// Every app with inbound evidence was called by an app of the run that has none (a
    /// scheduler calling a listener): background work, unless a gateway record says
    /// otherwise.
    pub(crate) started_by_caller: bool,
    /// Spans by span id.
    by_id: BTreeMap<&'a str, &'a Span>,
}

/// What one Mule app did in a run, for choosing the entry.
#[derive(Debug, Default)]
struct AppRun<'a> {
    /// Its earliest record.
    first: i64,
    /// Its root SERVER span (no Mule span above it), the earliest.
    server_root: Option<&'a Span>,
    /// A line of its own with a listener path, method or caller.
    listener: bool,
    /// It called out (an outbound line, a CLIENT span).
    calls_out: bool,
    /// It has a root Mule span that is not a SERVER span (a scheduler, a queue consumer).
    started_alone: bool,
    /// Its SERVER span is below another app's Mule span.
    called_by_span: bool,
}

impl AppRun<'_> {
    fn inbound(&self) -> bool {
        self.server_root.is_some() || self.listener
    }
}

/// The entry of a run: the app it entered, that app's root SERVER span, and whether every
/// app with inbound evidence was called by an app that has none (a scheduler's run).
///
/// The candidates are the apps with inbound evidence (a root SERVER span, a listener line)
/// that no other app of the run called (by spans: their SERVER span lies below another
/// app's Mule span; by lines, for an app that calls nothing itself: an app without inbound
/// evidence called out or started alone before it). Of the candidates, an app that called
/// out is preferred (an integration app calls its backends; a leaf app does not, whatever
/// the hosts' clocks say), then the earliest. Without candidates: the app of the earliest
/// root Mule span, else of the earliest line.
fn entry_of<'a>(
    flows: &[&'a Flow],
    spans: &[&'a Span],
    mule_spans: &[&'a Span],
) -> (Option<String>, Option<&'a Span>, bool) {
    let all: BTreeMap<&str, &'a Span> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let mule_above = |s: &Span| {
        let mut cur = s.parent_span_id.as_deref();
        for _ in 0..64 {
            let p = cur.and_then(|p| all.get(p))?;
            if p.is_mule() {
                return Some(p.service.clone());
            }
            cur = p.parent_span_id.as_deref();
        }
        None
    };
    let mut apps: BTreeMap<Option<String>, AppRun<'a>> = BTreeMap::new();
    fn touch<'m, 'a>(
        apps: &'m mut BTreeMap<Option<String>, AppRun<'a>>,
        app: &Option<String>,
        t: i64,
    ) -> &'m mut AppRun<'a> {
        let a = apps.entry(app.clone()).or_insert_with(|| AppRun {
            first: t,
            ..AppRun::default()
        });
        a.first = a.first.min(t);
        a
    }
    for s in mule_spans {
        let above = mule_above(s);
        let server = s.kind.eq_ignore_ascii_case("server");
        let a = touch(&mut apps, &s.service, s.time);
        if s.kind.eq_ignore_ascii_case("client") {
            a.calls_out = true;
        }
        match (above, server) {
            (None, true) if a.server_root.is_none_or(|r| s.time < r.time) => {
                a.server_root = Some(s);
            }
            (None, true) => {}
            (None, false) => a.started_alone = true,
            (Some(caller), true) if caller != s.service => a.called_by_span = true,
            _ => {}
        }
    }
    for f in flows {
        let a = touch(&mut apps, &f.mule_app, f.time);
        a.calls_out |= outbound(f);
        a.listener |= listener_line(f);
    }
    // The earliest an app without inbound evidence called out or started alone.
    let starter = apps
        .values()
        .filter(|a| !a.inbound() && (a.calls_out || a.started_alone))
        .map(|a| a.first)
        .min();
    let callee = |a: &AppRun<'_>| {
        a.called_by_span || (!a.calls_out && starter.is_some_and(|t| t <= a.first))
    };
    let entry = apps
        .iter()
        .filter(|(_, a)| a.inbound() && !callee(a))
        .min_by_key(|(_, a)| (!a.calls_out, a.first));
    if let Some((app, a)) = entry {
        return (app.clone(), a.server_root, false);
    }
    let started_by_caller = apps.values().any(AppRun::inbound);
    let app = mule_spans
        .iter()
        .filter(|s| mule_above(s).is_none())
        .min_by_key(|s| s.time)
        .map(|s| s.service.clone())
        .or_else(|| flows.first().map(|f| f.mule_app.clone()))
        .flatten();
    (app, None, started_by_caller)
}

impl<'a> Layers<'a> {
    /// Sorts the component `members` of `input` by layer; `None` when it has neither gateway
    /// nor integration evidence.
    pub(crate) fn of(input: &'a Input, members: &'a [Node]) -> Option<Self> {
        let mut gws: Vec<&'a Gateway> = Vec::new();
        let mut evs: Vec<&'a GatewayEvent> = Vec::new();
        let mut flows: Vec<&'a Flow> = Vec::new();
        let mut spans: Vec<&'a Span> = Vec::new();
        for m in members {
            match *m {
                Node::Gateway(i) => gws.push(&input.gateway[i]),
                Node::Event(i) => evs.push(&input.events[i]),
                Node::Flow(i) => flows.push(&input.flows[i]),
                Node::Span(i) => spans.push(&input.spans[i]),
            }
        }
        let mule_spans: Vec<&'a Span> = spans.iter().copied().filter(|s| s.is_mule()).collect();
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

        // The integration layer: the Mule app the run entered (`entry_of`).
        let (entry_app, entry_span, started_by_caller) = entry_of(&flows, &spans, &mule_spans);
        let entry_flows: Vec<&'a Flow> = flows
            .iter()
            .copied()
            .filter(|f| entered(&entry_app, &f.mule_app))
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
                let ms = |f: &Flow| f.elapsed_ms.and_then(plausible_ms).unwrap_or(-1.0);
                ms(a).total_cmp(&ms(b))
            });

        // Spans by id, for the layers of spans (see `span_layer`).
        let by_id: BTreeMap<&'a str, &'a Span> = spans
            .iter()
            .copied()
            .map(|s| (s.span_id.as_str(), s))
            .collect();
        let has_integration = !entry_flows.is_empty() || entry_span.is_some();
        Some(Self {
            input,
            members,
            gws,
            evs,
            flows,
            spans,
            mule_spans,
            g,
            entry_span,
            entry_app,
            entry_flows,
            start,
            end,
            has_integration,
            started_by_caller,
            by_id,
        })
    }

    /// Whether a record of `app` belongs to the entry app.
    pub(crate) fn in_entry(&self, app: &Option<String>) -> bool {
        entered(&self.entry_app, app)
    }

    /// Whether `s` is a span of the entry app (the integration layer).
    pub(crate) fn is_integration(&self, s: &Span) -> bool {
        s.is_mule() && self.in_entry(&s.service)
    }

    /// The layer of a span: the entry app's spans are integration; spans below them backend;
    /// the rest (callers) client.
    pub(crate) fn span_layer(&self, s: &Span) -> &'static str {
        if self.is_integration(s) {
            return "integration";
        }
        let mut cur = s.parent_span_id.as_deref();
        for _ in 0..64 {
            let Some(p) = cur.and_then(|p| self.by_id.get(p)) else {
                break;
            };
            if self.is_integration(p) {
                return "backend";
            }
            cur = p.parent_span_id.as_deref();
        }
        if s.is_mule() { "backend" } else { "client" }
    }
}

/// Who and what a request was, and when.
#[derive(Debug)]
pub(crate) struct Identity {
    /// Canonical id: the APIM correlation id, else the Mule one, else the trace id.
    pub(crate) request_id: String,
    /// APIM correlation id.
    pub(crate) apim_correlation_id: Option<String>,
    /// Mule correlation id (only with an integration layer).
    pub(crate) mule_correlation_id: Option<String>,
    /// Trace id.
    pub(crate) trace_id: Option<String>,
    /// The first token a record carried.
    pub(crate) token: TokenColumns,
    /// The record it was taken from.
    pub(crate) token_from: Option<String>,
    /// Token expired at request time.
    pub(crate) token_expired: Option<bool>,
    /// Caller address.
    pub(crate) client_ip: Option<String>,
    /// Method.
    pub(crate) method: Option<String>,
    /// URL path.
    pub(crate) url_path: Option<String>,
    /// Integration app (only with an integration layer).
    pub(crate) mule_app: Option<String>,
    /// Entry flow.
    pub(crate) flow: Option<String>,
    /// Earliest record time (ns).
    pub(crate) time: i64,
    /// Latest arrival (ns).
    pub(crate) ingest_time: i64,
    /// The last record arrived more than the horizon before now.
    pub(crate) settled: bool,
    /// Settled, integration without any gateway record, and not called from the gateway's
    /// egress.
    pub(crate) bypassed_gateway: bool,
    /// The caller is one of the gateway's egress addresses.
    pub(crate) from_egress: bool,
}

impl Identity {
    /// The identity of the request in `l`; `now_ns` decides whether it is settled. `None`
    /// when no record carries an id.
    pub(crate) fn of(l: &Layers<'_>, rules: &Rules, now_ns: i64) -> Option<Self> {
        let (input, members) = (l.input, l.members);
        let (g, start, entry_span) = (l.g, l.start, l.entry_span);
        let apim_cid = g
            .and_then(|g| g.correlation_id.clone())
            .or_else(|| first(l.evs.iter().map(|e| e.correlation_id.clone())));
        let mule_cid = start
            .and_then(|f| f.correlation_id.clone())
            .or_else(|| first(l.entry_flows.iter().map(|f| f.correlation_id.clone())))
            .or_else(|| entry_span.and_then(|s| s.correlation_id.clone()))
            .filter(|_| l.has_integration);
        let trace_id = g
            .and_then(|g| g.trace_id.clone())
            .or_else(|| entry_span.map(|s| s.trace_id.clone()))
            .or_else(|| first(l.spans.iter().map(|s| Some(s.trace_id.clone()))))
            .or_else(|| first(l.flows.iter().map(|f| f.trace_id.clone())))
            .or_else(|| first(l.evs.iter().map(|e| e.trace_id.clone())));
        let request_id = apim_cid
            .clone()
            .or_else(|| mule_cid.clone())
            .or_else(|| trace_id.clone())?;
        let (token, token_from) = l
            .evs
            .iter()
            .map(|e| (&e.token, &e.key))
            .chain(start.map(|f| (&f.token, &f.key)))
            .chain(l.flows.iter().map(|f| (&f.token, &f.key)))
            .chain(l.gws.iter().map(|g| (&g.token, &g.key)))
            .chain(entry_span.map(|s| (&s.token, &s.span_id)))
            .chain(l.spans.iter().map(|s| (&s.token, &s.span_id)))
            .find(|(t, _)| t.is_some())
            .map(|(t, k)| (t.clone(), Some(k.clone())))
            .unwrap_or_default();
        let client_ip = g
            .and_then(|g| g.client_ip.clone())
            .or_else(|| start.and_then(|f| f.remote_address.as_deref().map(caller_ip)))
            .or_else(|| entry_span.and_then(|s| s.client_ip.as_deref().map(caller_ip)));
        let time = members
            .iter()
            .map(|m| node_time(input, *m))
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
        let egress = from_egress(rules, client_ip.as_deref());
        let bypassed_gateway =
            l.gws.is_empty() && l.evs.is_empty() && l.has_integration && settled && !egress;

        let token_expired = token.expires_at.map(|e| e < time);
        Some(Self {
            request_id,
            apim_correlation_id: apim_cid,
            mule_correlation_id: mule_cid,
            trace_id,
            token,
            token_from,
            token_expired,
            client_ip,
            method: g
                .and_then(|g| g.method.clone())
                .or_else(|| start.and_then(|f| f.method.clone()))
                .or_else(|| entry_span.and_then(|s| s.method.clone())),
            url_path: g
                .and_then(|g| g.url_path.clone())
                .or_else(|| start.and_then(|f| f.request_path.clone()))
                .or_else(|| entry_span.and_then(|s| s.url_path.clone())),
            mule_app: l.entry_app.clone().filter(|_| l.has_integration),
            flow: start
                .and_then(|f| f.flow.clone())
                .or_else(|| first(l.entry_flows.iter().map(|f| f.flow.clone()))),
            time,
            ingest_time,
            settled,
            bypassed_gateway,
            from_egress: egress,
        })
    }
}
