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

use crate::link::{Node, node_time};
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
    /// Flow records (request traffic).
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
    /// Spans by span id.
    by_id: BTreeMap<&'a str, &'a Span>,
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

        // The integration layer: the Mule app the run started in. With Mule spans, the app
        // of its root Mule span (no Mule span above it): the entry span when that is a
        // SERVER span (the request came in over HTTP), else (a scheduler's INTERNAL root
        // calling other apps) no entry span. Without, the app of its earliest line.
        let all: BTreeMap<&str, &'a Span> =
            spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
        let under_mule = |s: &Span| {
            let mut cur = s.parent_span_id.as_deref();
            for _ in 0..64 {
                let Some(p) = cur.and_then(|p| all.get(p)) else {
                    return false;
                };
                if p.is_mule() {
                    return true;
                }
                cur = p.parent_span_id.as_deref();
            }
            false
        };
        let roots: Vec<&'a Span> = mule_spans
            .iter()
            .copied()
            .filter(|s| !under_mule(s))
            .collect();
        let entry_span = roots
            .iter()
            .copied()
            .find(|s| s.kind.eq_ignore_ascii_case("server"));
        let root_app = match entry_span {
            Some(s) => s.service.clone(),
            None => roots.first().and_then(|s| s.service.clone()),
        };
        let entry_app: Option<String> =
            root_app.or_else(|| first(flows.iter().map(|f| f.mule_app.clone())));
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
                a.elapsed_ms
                    .unwrap_or(0.0)
                    .total_cmp(&b.elapsed_ms.unwrap_or(0.0))
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
            .or_else(|| start.and_then(|f| f.remote_address.as_deref().map(ip_of)))
            .or_else(|| entry_span.and_then(|s| s.client_ip.as_deref().map(ip_of)));
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
        let egress = client_ip
            .as_deref()
            .is_some_and(|ip| rules.gateway_egress.iter().any(|e| e == ip));
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
