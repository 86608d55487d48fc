//! Linking: takes the raw records of a window ([`Input`]) and the [`Rules`], groups them into
//! connected components (records that share a correlation id, a forwarded correlation id or
//! a trace id within `Rules::max_link_distance_ns`, and gateway twins within [`TWIN_NS`];
//! two different APIM correlation ids never join) and gives the [`Request`]s that
//! `request::build` makes of the components, sorted by time and request id.
//!
//! [`correlate`] is the entry point (re-exported at the crate root); each component goes to
//! `request::build` as a slice of [`Node`]s in window order.

use std::collections::BTreeMap;

use crate::record::{Input, Rules};
use crate::request::{Request, build};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Flow, Gateway};

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
