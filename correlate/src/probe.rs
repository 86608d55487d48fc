//! What a linked run is: a request, a health or readiness probe, or background work.
//!
//! [`Kind::of`] takes a component's [`Layers`] and the [`Rules`] and decides from evidence,
//! never from flow names:
//! - **background**: no inbound HTTP evidence on the run's entry (no gateway record or
//!   gateway event, no SERVER span of the entry app, no line of the entry app with a listener
//!   request path, method or caller address): schedulers, pollers, batch jobs, queue
//!   listeners, whatever their flows are called. Only in the raw tables.
//!   Also background: a run whose only apps with inbound evidence were called by an app of
//!   the run without any (a scheduler calling a listener: `Layers::started_by_caller`),
//!   unless a gateway record is linked.
//! - **probe**: an inbound record (a gateway record, the entry SERVER span, a line of the
//!   entry app) has a path matching [`Rules::probe_paths`] and no inbound record has another
//!   path; or a user agent beginning with one of [`Rules::probe_user_agents`] on a run with
//!   no gateway record, no token and at most one inbound path. Written to `probes`;
//!   `external` when the caller's address parses, lies outside [`Rules::internal_networks`]
//!   and is not the gateway's egress.
//! - **request**: the rest.
//!
//! Only the run's own inbound records count: a request whose backend call goes to a
//! `/status` endpoint is still a request, and the lines of outbound calls (`BEFORE_REQUEST`,
//! `AFTER_REQUEST`, request scopes: [`outbound`]) are not inbound evidence, whatever method
//! or path they log.

use std::net::IpAddr;

use crate::layers::{Layers, ip_of};
use crate::record::{Flow, Rules};

/// What a component is, and the evidence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// An end-to-end request; the inbound evidence.
    Request(Inbound),
    /// A probe; what matched.
    Probe(ProbeMatch),
    /// Background work (no inbound HTTP evidence).
    Background,
}

/// The record that shows a run was called over HTTP.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Inbound {
    /// In words (`gateway record`, `SERVER span`, `listener line (request path /x)`).
    pub(crate) what: String,
    /// Its record key (span id for spans).
    pub(crate) record: String,
}

/// What made a run a probe.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeMatch {
    /// `path` or `user_agent`.
    pub(crate) by: &'static str,
    /// The pattern (path) or prefix (user agent) that matched, as configured.
    pub(crate) rule: String,
    /// The value that matched.
    pub(crate) value: String,
    /// The record that carried it.
    pub(crate) record: String,
}

/// `p` as probe paths are compared: no query or fragment, lower case, no trailing slash.
pub fn normal_path(p: &str) -> String {
    let p = p.trim();
    let p = p.split(['?', '#']).next().unwrap_or(p);
    let p = p.trim_end_matches('/');
    if p.is_empty() {
        "/".to_string()
    } else {
        p.to_lowercase()
    }
}

/// Whether `path` (normalised) matches `pattern` (normalised; `*` matches any run of
/// characters, `/` included). Iterative, linear in practice: no input can make it slow.
fn glob(pattern: &str, path: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The probe path pattern `path` matches, if any. A path with a `..` or `.` segment never
/// matches (`/health/../orders` is not a health check).
pub(crate) fn probe_path<'r>(rules: &'r Rules, path: &str) -> Option<&'r str> {
    let path = normal_path(path);
    // Dot segments, also percent-encoded (`%2e%2e`) or with a path parameter (`..;x`), never
    // match: `/health/../orders` and `/health/%2e%2e/orders` are not health checks.
    let dot = |seg: &str| {
        let seg = seg.split(';').next().unwrap_or(seg).replace("%2e", ".");
        seg == ".." || seg == "."
    };
    if path.split('/').any(dot) {
        return None;
    }
    rules
        .probe_paths
        .iter()
        .find(|p| glob(p, &path))
        .map(String::as_str)
}

/// The probe user agent `ua` begins with, if any (case-insensitive).
pub(crate) fn probe_agent<'r>(rules: &'r Rules, ua: &str) -> Option<&'r str> {
    let ua = ua.trim().to_lowercase();
    rules
        .probe_user_agents
        .iter()
        .find(|p| !p.is_empty() && ua.starts_with(p.as_str()))
        .map(String::as_str)
}

/// The IP address of a logged caller: `10.1.2.3`, `/10.1.2.3:80`, `[::1]:80`, Java's
/// `host/10.1.2.3:80`, a zone (`fe80::1%eth0`), IPv4-mapped IPv6 (`::ffff:10.1.2.3`) as
/// IPv4. `None` when it is not an address.
pub(crate) fn parse_ip(addr: &str) -> Option<IpAddr> {
    let a = addr.trim();
    // Java's InetSocketAddress: `hostname/address:port`.
    let a = a.rsplit_once('/').map_or(a, |(_, rest)| rest);
    let ip = ip_of(a);
    let ip = ip.split('%').next().unwrap_or(&ip);
    let ip: IpAddr = ip.parse().ok()?;
    Some(ip.to_canonical())
}

/// Whether the address `a` lies in the cluster's own networks.
fn in_networks(rules: &Rules, a: IpAddr) -> bool {
    rules.internal_networks.iter().any(|n| n.contains(&a))
}

/// Whether the logged caller `ip` is one of the gateway's egress addresses (compared as
/// addresses, whatever form either is written in).
pub(crate) fn from_egress(rules: &Rules, ip: Option<&str>) -> bool {
    ip.and_then(parse_ip)
        .is_some_and(|a| rules.gateway_egress.iter().any(|e| parse_ip(e) == Some(a)))
}

/// Whether the address `ip` lies in the cluster's own networks.
#[cfg(test)]
pub(crate) fn internal(rules: &Rules, ip: &str) -> bool {
    parse_ip(ip).is_some_and(|a| in_networks(rules, a))
}

/// Whether a probe from `ip` is external: the address parses, lies outside the cluster's
/// networks and is not one of the gateway's egress addresses.
pub(crate) fn external(rules: &Rules, ip: Option<&str>) -> bool {
    ip.and_then(parse_ip)
        .is_some_and(|a| !in_networks(rules, a) && !from_egress(rules, ip))
}

/// Whether `f` logs an outbound call (`BEFORE_REQUEST`, `AFTER_REQUEST`, a request scope,
/// an `OUTBOUND_*` trace point): its method, path and address are the callee's, not the
/// run's caller's.
pub(crate) fn outbound(f: &Flow) -> bool {
    f.trace_point.as_deref().is_some_and(|tp| {
        let tp = tp.to_ascii_uppercase();
        tp == "BEFORE_REQUEST"
            || tp == "AFTER_REQUEST"
            || tp.contains("REQUEST_SCOPE")
            || tp.starts_with("OUTBOUND")
    })
}

/// Whether `f` is a line of the app's own listener: not an outbound call's, and it logged
/// the request path, the method or the caller.
pub(crate) fn listener_line(f: &Flow) -> bool {
    !outbound(f) && (f.request_path.is_some() || f.method.is_some() || f.remote_address.is_some())
}

/// The user agent a JSON Logger record logged (`userAgent`, `user-agent`, `User-Agent`,
/// `user_agent` in its content).
pub(crate) fn flow_user_agent(f: &Flow) -> Option<String> {
    let c = f.content.as_deref()?;
    if !c.to_ascii_lowercase().contains("agent") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(c).ok()?;
    v.as_object()?.iter().find_map(|(k, v)| {
        let k: String = k
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        (k == "useragent").then(|| v.as_str().map(str::to_string))?
    })
}

impl Kind {
    /// What the component in `l` is. A probe needs a probe path on an inbound record and
    /// no inbound record with another path (an id reused by a probe and a request is a
    /// request), or a probe user agent on a run with one inbound path at most, no gateway
    /// record and no token (a user agent is the caller's to choose: alone it never hides a
    /// request that went through the gateway or carried a token).
    pub(crate) fn of(l: &Layers<'_>, rules: &Rules) -> Self {
        // Probes: the inbound records' paths, then their user agents.
        // Inbound paths: (path, record, concrete). A span's route template (`/api/*`) is
        // evidence for a probe but never against one.
        let mut paths: Vec<(&str, String, bool)> = Vec::new();
        let mut agents: Vec<(String, String)> = Vec::new();
        for g in &l.gws {
            paths.extend(g.url_path.as_deref().map(|p| (p, g.key.clone(), true)));
        }
        if let Some(s) = l.entry_span {
            paths.extend(s.url_path.as_deref().map(|p| (p, s.span_id.clone(), true)));
            paths.extend(
                s.http_route
                    .as_deref()
                    .map(|p| (p, s.span_id.clone(), false)),
            );
            agents.extend(s.user_agent.clone().map(|u| (u, s.span_id.clone())));
        }
        for f in l.entry_flows.iter().filter(|f| !outbound(f)) {
            paths.extend(f.request_path.as_deref().map(|p| (p, f.key.clone(), true)));
            agents.extend(flow_user_agent(f).map(|u| (u, f.key.clone())));
        }
        let matched: Vec<Option<&str>> = paths.iter().map(|(p, ..)| probe_path(rules, p)).collect();
        // A concrete inbound path that is not a probe's: a request (an id a probe and a
        // request share makes a request, never a hidden one).
        let other_path = paths
            .iter()
            .zip(&matched)
            .any(|((_, _, concrete), m)| *concrete && m.is_none());
        if let Some(((p, record, _), rule)) = paths
            .iter()
            .zip(&matched)
            .find_map(|(p, m)| m.map(|m| (p, m)))
            .filter(|_| !other_path)
        {
            return Kind::Probe(ProbeMatch {
                by: "path",
                rule: rule.to_string(),
                value: (*p).to_string(),
                record: record.clone(),
            });
        }
        // A probe user agent: on one run (at most one concrete inbound path) that has no
        // gateway record and carries no token.
        let concrete: std::collections::BTreeSet<String> = paths
            .iter()
            .filter(|(_, _, c)| *c)
            .map(|(p, ..)| normal_path(p))
            .collect();
        let tokenless = l
            .flows
            .iter()
            .map(|f| &f.token)
            .chain(l.spans.iter().map(|s| &s.token))
            .all(|t| !t.is_some());
        if concrete.len() <= 1 && l.gws.is_empty() && l.evs.is_empty() && tokenless {
            for (ua, record) in &agents {
                if let Some(rule) = probe_agent(rules, ua) {
                    return Kind::Probe(ProbeMatch {
                        by: "user_agent",
                        rule: rule.to_string(),
                        value: ua.clone(),
                        record: record.clone(),
                    });
                }
            }
        }
        // Inbound HTTP evidence.
        if let Some(g) = l.gws.first() {
            return Kind::Request(Inbound {
                what: "gateway record".into(),
                record: g.key.clone(),
            });
        }
        if let Some(e) = l.evs.first() {
            return Kind::Request(Inbound {
                what: "gateway event".into(),
                record: e.key.clone(),
            });
        }
        if l.started_by_caller {
            return Kind::Background;
        }
        if let Some(s) = l.entry_span {
            return Kind::Request(Inbound {
                what: format!(
                    "SERVER span {:?} of {}",
                    s.name,
                    s.service.as_deref().unwrap_or("?")
                ),
                record: s.span_id.clone(),
            });
        }
        let listener = l.entry_flows.iter().find(|f| listener_line(f));
        match listener {
            Some(f) => {
                let what = match (&f.method, &f.request_path, &f.remote_address) {
                    (m, Some(p), _) => format!(
                        "listener line ({}{p})",
                        m.as_deref().map(|m| format!("{m} ")).unwrap_or_default()
                    ),
                    (Some(m), None, _) => format!("listener line (method {m})"),
                    (None, None, Some(a)) => format!("listener line (caller {})", ip_of(a)),
                    (None, None, None) => "listener line".into(),
                };
                Kind::Request(Inbound {
                    what,
                    record: f.key.clone(),
                })
            }
            None => Kind::Background,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_patterns_without_case_slash_or_query() {
        let r = Rules::default();
        assert_eq!(probe_path(&r, "/PING/"), Some("/ping"));
        assert_eq!(probe_path(&r, "/health/ready?x=1"), Some("/health/*"));
        assert_eq!(probe_path(&r, "/api/health/live"), Some("/api/health/*"));
        assert_eq!(probe_path(&r, "/orders/status"), None);
        assert_eq!(probe_path(&r, "/healthy-food"), None);
        assert!(glob("*/ping", "/a/b/ping"));
        assert!(!glob("/a*b", "/a/c"));
        assert!(glob("/a**", "/a"));
        // A long path against a pattern of many stars stays quick (no backtracking blow-up).
        let long = "/a".repeat(5_000);
        assert!(!glob("*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn agents_and_networks() {
        let r = Rules::default();
        assert_eq!(probe_agent(&r, "kube-probe/1.29"), Some("kube-probe/"));
        assert_eq!(probe_agent(&r, "Mozilla/5.0"), None);
        assert_eq!(probe_agent(&r, "MyAlwaysOnDashboard/1.0"), None);
        assert_eq!(probe_agent(&r, "curl/8 HealthCheck"), None);
        assert!(internal(&r, "10.1.2.3"));
        assert!(internal(&r, "fe80::1"));
        assert!(!internal(&r, "203.0.113.9"));
        assert!(!internal(&r, "not an ip"));
        for a in [
            "/[::ffff:10.1.1.1]:80",
            "/[0:0:0:0:0:ffff:a01:101]:80",
            "fe80::1%eth0",
            "localhost/127.0.0.1:8081",
        ] {
            assert!(internal(&r, a), "{a}");
            assert!(!external(&r, Some(a)), "{a}");
        }
        assert!(!external(&r, Some("garbage")));
        assert!(!external(&r, None));
        assert!(external(&r, Some("/203.0.113.9:443")));
        assert_eq!(probe_path(&r, "/health/../api/orders"), None);
        assert_eq!(probe_path(&r, "/health/%2E%2e/api/orders"), None);
        assert_eq!(probe_path(&r, "/health/..;/api/orders"), None);
        let f = Flow {
            content: Some(r#"{"requestPath":"/x","User-Agent":"AlwaysOn"}"#.into()),
            ..Flow::default()
        };
        assert_eq!(flow_user_agent(&f).as_deref(), Some("AlwaysOn"));
    }
}
