//! Linking: takes the raw records of a window ([`Input`]) and the [`Rules`], groups them into
//! connected components (records that share a correlation id, a forwarded correlation id or
//! a trace id within `Rules::max_link_distance_ns`, and gateway twins within [`TWIN_NS`];
//! two different APIM correlation ids never join) and gives the [`Request`]s and
//! [`Probe`]s that `request::build` makes of the components ([`correlate_all`]; background
//! runs give nothing), sorted by time and id.
//!
//! [`correlate`] is the entry point (re-exported at the crate root); each component goes to
//! `request::build` as a slice of [`Node`]s in window order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::record::{Input, Rules};
use crate::request::{Built, Probe, Request, build};

/// Gateway records of the same service, path and status at most this far apart are twins
/// (the same request in two shapes, one without a correlation id); two records with
/// different correlation ids are never joined.
pub const TWIN_NS: i64 = 1_000_000_000;

/// One record of the window: its table and its index in the matching [`Input`] vector
/// (after `sort_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Node {
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

/// What a window's records became: requests and probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Correlated {
    /// `requests` rows, by time and request id.
    pub requests: Vec<Request>,
    /// `probes` rows, by time and probe id.
    pub probes: Vec<Probe>,
}

/// The event time of `node`.
pub(crate) fn node_time(input: &Input, node: Node) -> i64 {
    match node {
        Node::Gateway(i) => input.gateway[i].time,
        Node::Event(i) => input.events[i].time,
        Node::Flow(i) => input.flows[i].time,
        Node::Span(i) => input.spans[i].time,
    }
}

/// The keys `node` links by: (what it is, the key: a prefix and the normalised id).
/// Correlation ids and forwarded correlation ids share the `c:` prefix (a forwarded id is
/// the Mule correlation id), trace ids `t:`, gateway twins `l:` (service, path and status;
/// they link within [`TWIN_NS`] only).
pub(crate) fn node_keys(input: &Input, node: Node) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    let mut add = |what: &'static str, prefix: &str, id: Option<String>| {
        if let Some(id) = id {
            keys.push((what, format!("{prefix}{id}")));
        }
    };
    match node {
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
            add("twin", "l:", twin);
            add("correlation id", "c:", norm(&g.correlation_id));
            add(
                "forwarded correlation id",
                "c:",
                norm(&g.forwarded_correlation_id),
            );
            add("trace id", "t:", norm(&g.trace_id));
        }
        Node::Event(i) => {
            let e = &input.events[i];
            add("correlation id", "c:", norm(&e.correlation_id));
            add("trace id", "t:", norm(&e.trace_id));
        }
        Node::Flow(i) => {
            let f = &input.flows[i];
            add("correlation id", "c:", norm(&f.correlation_id));
            add("trace id", "t:", norm(&f.trace_id));
        }
        Node::Span(i) => {
            let s = &input.spans[i];
            add("trace id", "t:", norm(&Some(s.trace_id.clone())));
            add("correlation id", "c:", norm(&s.correlation_id));
        }
    }
    keys
}

/// Links the records of `input` into requests; `now_ns` decides which are settled.
pub fn correlate(input: Input, rules: &Rules, now_ns: i64) -> Vec<Request> {
    correlate_all(input, rules, now_ns).requests
}

/// Links the records of `input` into requests and probes (background runs give nothing);
/// `now_ns` decides which are settled.
pub fn correlate_all(input: Input, rules: &Rules, now_ns: i64) -> Correlated {
    let never = AtomicBool::new(false);
    correlate_all_unless(input, rules, now_ns, &never).unwrap_or_default()
}

/// [`correlate_all`] that gives up (`None`) as soon as it sees `cancelled` set: it is
/// checked between components, so a stop never waits for a whole window's work.
pub fn correlate_all_unless(
    input: Input,
    rules: &Rules,
    now_ns: i64,
    cancelled: &AtomicBool,
) -> Option<Correlated> {
    if cancelled.load(Ordering::Relaxed) {
        return None;
    }
    let (input, groups) = components(input, rules);
    let mut out = Correlated::default();
    for (i, members) in groups.into_iter().enumerate() {
        if i % 1024 == 0 && cancelled.load(Ordering::Relaxed) {
            return None;
        }
        match build(&input, &members, rules, now_ns) {
            Some(Built::Request(r)) => out.requests.push(*r),
            Some(Built::Probe(p)) => out.probes.push(*p),
            None => {}
        }
    }
    out.requests
        .sort_by(|a, b| (a.time, &a.request_id).cmp(&(b.time, &b.request_id)));
    out.probes
        .sort_by(|a, b| (a.time, &a.probe_id).cmp(&(b.time, &b.probe_id)));
    Some(out)
}

/// The window's records, sorted, and its linked components (each a list of nodes in
/// window order).
pub(crate) fn components(mut input: Input, rules: &Rules) -> (Input, Vec<Vec<Node>>) {
    sort_input(&mut input);
    let nodes: Vec<Node> = (0..input.gateway.len())
        .map(Node::Gateway)
        .chain((0..input.events.len()).map(Node::Event))
        .chain(
            // Every line of a flow run (it has an id) whatever its ingest-time flag: what the
            // run is, request, probe or background, is decided from the whole run (`probe`).
            (0..input.flows.len())
                .filter(|i| {
                    let f = &input.flows[*i];
                    norm(&f.correlation_id).is_some() || norm(&f.trace_id).is_some()
                })
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
    for (n, node) in nodes.iter().enumerate() {
        let time = node_time(&input, *node);
        for (_, key) in node_keys(&input, *node) {
            by_key.entry(key).or_default().push((time, n));
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
    (input, groups.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Flow, Gateway, Span};

    const S: i64 = 1_000_000_000;

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
            method: Some("GET".into()),
            request_path: Some("/items/1".into()),
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

    fn line(cid: &str, t: i64, tp: &str, app: &str) -> Flow {
        Flow {
            time: t,
            ingest: t,
            key: format!("{cid}-{tp}-{t}"),
            correlation_id: Some(cid.into()),
            mule_app: Some(app.into()),
            trace_point: Some(tp.into()),
            elapsed_ms: Some(((t / 1_000_000) % 100_000) as f64),
            ..Default::default()
        }
    }

    #[test]
    fn probes_and_schedulers_are_not_requests_whatever_their_names() {
        let ms = S / 1000;
        // A kubelet probe: a flow with an ordinary name, path /ping, internal caller.
        let mut probe = line("p-1", 0, "START", "orders");
        probe.request_path = Some("/ping".into());
        probe.remote_address = Some("/10.1.0.5:40000".into());
        // An outside probe by user agent only.
        let mut outside = line("p-2", 0, "START", "orders");
        outside.request_path = Some("/api/v1/alive".into());
        outside.remote_address = Some("/203.0.113.7:5000".into());
        outside.content = Some(r#"{"userAgent":"kube-probe/1.29"}"#.into());
        // A scheduler with an arbitrary name: no path, method or caller of its own (its
        // outbound call logs the callee's).
        let mut call = line("s-1", 5 * ms, "BEFORE_REQUEST", "rating");
        call.method = Some("POST".into());
        call.request_path = Some("/rates".into());
        let sched = [
            line("s-1", 0, "START", "rating"),
            call,
            line("s-1", 9 * ms, "END", "rating"),
        ];
        // A real request without the gateway: a bypass.
        let mut bypass = line("r-1", 0, "START", "orders");
        bypass.request_path = Some("/orders/7/status".into());
        bypass.remote_address = Some("/10.20.4.17:5000".into());
        let input = Input {
            flows: [probe, outside, bypass].into_iter().chain(sched).collect(),
            ..Default::default()
        };
        let out = correlate_all(input, &Rules::default(), 3_600 * S);
        let ids: Vec<&str> = out.requests.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["r-1"]);
        assert!(out.requests[0].bypassed_gateway);
        let probes: Vec<(&str, &str, bool)> = out
            .probes
            .iter()
            .map(|p| (p.probe_id.as_str(), p.matched_by, p.external))
            .collect();
        assert_eq!(
            probes,
            [("p-1", "path", false), ("p-2", "user_agent", true)]
        );
    }

    #[test]
    fn a_failed_downstream_call_is_timed_from_its_start_to_the_failure() {
        let ms = S / 1000;
        let mut start = line("f-1", 0, "START", "orders");
        start.request_path = Some("/orders".into());
        start.elapsed_ms = Some(0.0);
        let mut before = line("f-1", 10 * ms, "BEFORE_REQUEST", "orders");
        before.elapsed_ms = Some(10.0);
        let mut exc = line("f-1", 45 * ms, "EXCEPTION", "orders");
        exc.error_type = Some("HTTP:CONNECTIVITY".into());
        exc.elapsed_ms = Some(47.0);
        let mut g = gw("f-1", 0, None);
        g.status_code = Some(502);
        g.backend_status_code = Some(502);
        g.total_ms = Some(60.0);
        g.backend_ms = Some(50.0);
        let input = Input {
            gateway: vec![g],
            flows: vec![start, before, exc],
            ..Default::default()
        };
        let r = &correlate(input, &Rules::default(), 0)[0];
        assert_eq!(r.backend_ms, Some(35.0));
        assert_eq!(r.integration_ms, Some(12.0));
        assert_eq!(r.network_ms, Some(3.0));
        assert_eq!(r.gateway_ms, Some(10.0));
        assert_eq!(r.rejected_by, Some("backend"));
    }

    #[test]
    fn the_run_is_judged_by_where_it_started_and_a_user_agent_hides_nothing() {
        let ms = S / 1000;
        let late = 3_600 * S;
        // A gateway request whose integration app logs no START, calling an app whose
        // listener is at /health: a request.
        let mut g = gw("g-1", 0, None);
        g.url_path = Some("/orders/v1/orders/ORD-7".into());
        let mut papi = line("g-1", ms, "FLOW", "orders-papi");
        papi.trace_point = None;
        let mut health = line("g-1", 5 * ms, "START", "inventory");
        health.request_path = Some("/health".into());
        let input = Input {
            gateway: vec![g.clone()],
            flows: vec![papi, health],
            ..Default::default()
        };
        let out = correlate_all(input, &Rules::default(), late);
        assert_eq!((out.requests.len(), out.probes.len()), (1, 0));
        // A scheduler (no START of its own) calling another app's listener: background.
        let sched = line("s-1", 0, "BEFORE_REQUEST", "sched-app");
        let mut rates = line("s-1", 3 * ms, "START", "rates");
        rates.request_path = Some("/api/rates".into());
        rates.remote_address = Some("/10.4.4.4:5000".into());
        let input = Input {
            flows: vec![sched, rates.clone()],
            ..Default::default()
        };
        assert_eq!(
            correlate_all(input, &Rules::default(), late),
            Correlated::default()
        );
        // The same with the scheduler's spans only: its root is an INTERNAL Mule span.
        let span = |id: &str, parent: Option<&str>, kind: &str, service: &str| Span {
            time: 0,
            end: Some(5 * ms),
            trace_id: "t-1".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            kind: kind.into(),
            service: Some(service.into()),
            scope: Some("mule".into()),
            ..Default::default()
        };
        rates.trace_id = Some("t-1".into());
        let input = Input {
            flows: vec![rates],
            spans: vec![
                span("a", None, "INTERNAL", "sched-app"),
                span("b", Some("a"), "CLIENT", "sched-app"),
                span("c", Some("b"), "SERVER", "rates"),
            ],
            ..Default::default()
        };
        assert_eq!(
            correlate_all(input, &Rules::default(), late),
            Correlated::default()
        );
        // A probe's user agent on a gateway request hides nothing.
        g.user_agent = Some("kube-probe/1.29 (exfil-tool)".into());
        g.status_code = Some(401);
        let input = Input {
            gateway: vec![g],
            ..Default::default()
        };
        assert_eq!(correlate(input, &Rules::default(), late).len(), 1);
        // A correlation id a probe reuses after a bypass: still the bypass.
        let mut secret = line("m-1", 0, "START", "orders");
        secret.request_path = Some("/api/orders/secret-export".into());
        secret.remote_address = Some("/10.20.4.17:5000".into());
        let mut ping = line("m-1", 30 * S, "START", "orders");
        ping.request_path = Some("/ping".into());
        let input = Input {
            flows: vec![secret, ping],
            ..Default::default()
        };
        let r = correlate(input, &Rules::default(), late);
        assert!(r.len() == 1 && r[0].bypassed_gateway, "{r:?}");
    }

    #[test]
    fn the_entry_survives_clock_skew_and_partial_tracing() {
        let ms = S / 1000;
        let late = 3_600 * S;
        let listener = |cid: &str, t: i64, path: &str| {
            let mut f = line(cid, t, "START", "orders-papi");
            f.request_path = Some(path.into());
            f.remote_address = Some("/10.20.4.17:5000".into());
            f
        };
        // The backend's clock runs 3 ms ahead: its plain line comes "first".
        let input = Input {
            flows: vec![
                line("k-1", 0, "LOG", "inventory"),
                listener("k-1", 3 * ms, "/api/orders/secret-export"),
                line("k-1", 4 * ms, "BEFORE_REQUEST", "orders-papi"),
            ],
            ..Default::default()
        };
        let r = correlate(input, &Rules::default(), late);
        assert_eq!(r.len(), 1);
        assert!(r[0].bypassed_gateway);
        assert_eq!(r[0].mule_app.as_deref(), Some("orders-papi"));
        // Only the called app exports spans: its SERVER span at /health is not the entry.
        let health = Span {
            time: 5 * ms,
            end: Some(8 * ms),
            trace_id: "t-9".into(),
            span_id: "h".into(),
            kind: "SERVER".into(),
            service: Some("inventory".into()),
            scope: Some("mule".into()),
            correlation_id: Some("k-2".into()),
            url_path: Some("/health".into()),
            ..Default::default()
        };
        let input = Input {
            flows: vec![
                listener("k-2", 0, "/api/orders/secret-export"),
                line("k-2", ms, "BEFORE_REQUEST", "orders-papi"),
            ],
            spans: vec![health.clone()],
            ..Default::default()
        };
        let out = correlate_all(input, &Rules::default(), late);
        assert_eq!(out.probes, Vec::new());
        assert!(out.requests.len() == 1 && out.requests[0].bypassed_gateway);
        // A scheduler's INTERNAL root and an orphan SERVER span of the app it called.
        let mut root = health.clone();
        root.span_id = "r".into();
        root.time = 0;
        root.kind = "INTERNAL".into();
        root.service = Some("sched-app".into());
        let mut orphan = health;
        orphan.parent_span_id = Some("missing".into());
        orphan.url_path = Some("/api/rates".into());
        let input = Input {
            spans: vec![root, orphan],
            ..Default::default()
        };
        assert_eq!(
            correlate_all(input, &Rules::default(), late),
            Correlated::default()
        );
        // The gateway's egress in the forms Java and IPv6 stacks log it is not a bypass.
        for caller in ["apim-gw/198.51.100.23:443", "/[::ffff:198.51.100.23]:443"] {
            let mut f = listener("k-3", 0, "/api/orders");
            f.remote_address = Some(caller.into());
            let rules = Rules {
                gateway_egress: vec!["198.51.100.23".into()],
                ..Rules::default()
            };
            let input = Input {
                flows: vec![f],
                ..Default::default()
            };
            let r = correlate(input, &rules, late);
            assert!(!r[0].bypassed_gateway, "{caller}");
            assert_eq!(r[0].client_ip.as_deref(), Some("198.51.100.23"));
        }
    }

    #[test]
    fn waits_stay_inside_the_run() {
        let ms = S / 1000;
        let mut start = line("w-1", 0, "START", "orders");
        start.request_path = Some("/orders".into());
        let before = line("w-1", 10 * ms, "BEFORE_REQUEST", "orders");
        let mut end = line("w-1", 100 * ms, "END", "orders");
        end.elapsed_ms = Some(100.0);
        // An unrelated error four minutes later ends nothing.
        let mut error = line("w-1", 240 * S, "LOG", "orders");
        error.level = Some("ERROR".into());
        let input = Input {
            flows: vec![start.clone(), before, end.clone(), error],
            ..Default::default()
        };
        let r = &correlate(input, &Rules::default(), 0)[0];
        assert_eq!((r.backend_ms, r.integration_ms), (None, Some(100.0)));
        // A logged call longer than the run counts only within it.
        let mut after = line("w-1", 40 * ms, "AFTER_REQUEST", "orders");
        after.content = Some(r#"{"durationMs": 5000}"#.into());
        let input = Input {
            flows: vec![start.clone(), after, end.clone()],
            ..Default::default()
        };
        let r = &correlate(input, &Rules::default(), 0)[0];
        assert_eq!((r.backend_ms, r.integration_ms), (Some(40.0), Some(60.0)));
        // Without a START the run starts at its END less the flow time.
        let mut after = line("w-1", 40 * ms, "AFTER_REQUEST", "orders");
        after.content = Some(r#"{"durationMs": 500}"#.into());
        let mut g = gw("w-1", 0, None);
        g.status_code = Some(200);
        let input = Input {
            gateway: vec![g],
            flows: vec![after, end.clone()],
            ..Default::default()
        };
        let r = &correlate(input, &Rules::default(), 0)[0];
        assert_eq!((r.backend_ms, r.integration_ms), (Some(40.0), Some(60.0)));
        // A negative elapsed is not a time.
        end.elapsed_ms = Some(-10.0);
        let input = Input {
            flows: vec![start, end],
            ..Default::default()
        };
        let r = &correlate(input, &Rules::default(), 0)[0];
        assert_eq!((r.total_ms, r.integration_ms), (None, None));
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
