//! Explanations: why the correlator said what it said about one request.
//!
//! Takes one linked component (the same one `request::build` turns into a `requests` row)
//! and gives an [`Explanation`]: every record by layer on a time axis, the ids that linked
//! each record to the others, the token identity, and for each verdict (what the component
//! is, bypass, status, `rejected_by`, each latency component, settled) the value, the rule
//! that decided it, the records that were its evidence, or why it is NULL. The rules are the
//! correlator's own: the verdicts are recorded while the request is built, never re-derived.
//!
//! [`Explanation`] is plain data (serde): `GET /api/v1/requests/{id}/explain` answers it as
//! JSON, and `text::render` (used by the same endpoint's `format=text` and by
//! `seam explain`) draws it as a terminal waterfall.

pub mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::latency::{FlowTime, Latency, WaitEvidence, content_num, ends_call, plausible_ms};
use crate::layers::{Identity, Layers};
use crate::link::{Node, components, node_keys};
use crate::outcome::Outcome;
use crate::probe::{Kind, external};
use crate::record::{Input, Rules};
use crate::request::timeline;

/// Why one request (or one probe or background run) got its row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The id asked for (`requests.request_id`, or a probe's `probe_id`).
    pub request_id: String,
    /// What the component is: `request`, `probe` (health or readiness probe: in `probes`,
    /// never in `requests`) or `background` (no inbound HTTP evidence: schedulers, pollers,
    /// batch jobs, queue listeners; only in the raw tables).
    pub kind: String,
    /// The earliest record's time (RFC 3339, UTC, nanoseconds).
    pub time: String,
    /// The earliest record's time, ns since the epoch (the waterfall's zero).
    pub time_ns: i64,
    /// The records of the component, by time, each with its offset from `time_ns`.
    pub records: Vec<ExplainedRecord>,
    /// The token identity the request carried (none: all fields null).
    pub token: ExplainedToken,
    /// One verdict per decided value: `kind`, then the request's columns (a probe's
    /// `external`), then `settled`.
    pub verdicts: Vec<Verdict>,
    /// Start times (RFC 3339) of the other stored requests or probes with the same id (a
    /// client that reuses its correlation id makes several): ask for one with `at`.
    #[serde(default)]
    pub others: Vec<String>,
}

/// One record of the component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainedRecord {
    /// The record's own time, ns since the epoch (a log line's time, a span's or gateway
    /// record's start).
    pub time_ns: i64,
    /// Start, ms after the component's first record. A log line that times something
    /// (`END`, `AFTER_REQUEST`, a request scope's end) is written when that time ends: its
    /// start is the line's time less the time.
    pub offset_ms: f64,
    /// Duration (ms) when the record has one: a span's, a gateway's total, what an `END`,
    /// `AFTER_REQUEST` or request-scope line timed (other lines: none, they are points).
    pub duration_ms: Option<f64>,
    /// `client`, `gateway`, `integration` or `backend`.
    pub layer: String,
    /// Source table: `gateway_logs`, `gateway_events`, `flow_logs`, `spans`.
    pub source: String,
    /// `record_key` (span id for spans): `SELECT * FROM <source> WHERE record_key = '…'`.
    pub record_key: String,
    /// Service or app.
    pub service: Option<String>,
    /// What it is (method and path, trace point and message, span name).
    pub name: Option<String>,
    /// HTTP status it logged.
    pub status_code: Option<i32>,
    /// `ok` or `error`.
    pub outcome: String,
    /// Error detail.
    pub detail: Option<String>,
    /// The ids this record shares with other records of the component (what linked it).
    pub linked_by: Vec<Link>,
}

/// One id a record shares with other records of its component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// `correlation id`, `forwarded correlation id`, `trace id` or `twin` (a gateway record of
    /// the same service, path and status within a second).
    pub by: String,
    /// The id's value (for a twin: `service|path|status`).
    pub value: String,
    /// How many other records of the component share it.
    pub shared_with: usize,
}

/// The token identity of the request (`requests`' token columns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExplainedToken {
    /// `token_id`.
    pub token_id: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `client_app`.
    pub client_app: Option<String>,
    /// `tenant_id`.
    pub tenant_id: Option<String>,
    /// `token_issuer`.
    pub issuer: Option<String>,
    /// `token_expires_at` (RFC 3339).
    pub expires_at: Option<String>,
    /// `token_expired`.
    pub expired: Option<bool>,
    /// `record_key` of the record the identity was taken from.
    pub from_record: Option<String>,
}

/// One decided value, its rule and its evidence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The column (`kind`, `bypassed_gateway`, `status_code`, `rejected_by`, `total_ms`,
    /// `gateway_ms`, `network_ms`, `integration_ms`, `backend_ms`, `settled`, …).
    pub name: String,
    /// The value as JSON (`null` when NULL).
    pub value: serde_json::Value,
    /// The rule that decided it, in words (docs/correlation.md has the same rules).
    pub rule: String,
    /// The `record_key`s of the records the rule read.
    pub evidence: Vec<String>,
    /// For a NULL (or a `false` that could have been `true`): what evidence is missing.
    pub why_null: Option<String>,
}

impl Verdict {
    /// A verdict with a value, a rule and evidence.
    pub fn new(
        name: &str,
        value: impl Into<serde_json::Value>,
        rule: impl Into<String>,
        evidence: Vec<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            value: value.into(),
            rule: rule.into(),
            evidence,
            why_null: None,
        }
    }

    /// A NULL verdict and why.
    pub fn null(name: &str, rule: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            value: serde_json::Value::Null,
            rule: rule.into(),
            evidence: Vec::new(),
            why_null: Some(why.into()),
        }
    }
}

/// RFC 3339 (UTC, nanoseconds) of `ns`.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn ms(v: Option<f64>) -> serde_json::Value {
    v.filter(|x| x.is_finite())
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The explanation of the component of `input` whose request (or probe) id is `id`; of
/// several, the one that starts at `at` (else the earliest).
pub(crate) fn explain_id(
    input: Input,
    rules: &Rules,
    now_ns: i64,
    id: &str,
    at: Option<i64>,
) -> Option<Explanation> {
    let (input, groups) = components(input, rules);
    // A request's id is one of its records' correlation or trace ids: only the components
    // holding such a record are explained, not the whole window.
    let norm = id.trim().to_ascii_lowercase();
    let keys = [format!("c:{norm}"), format!("t:{norm}")];
    let mut found: Vec<Explanation> = groups
        .iter()
        .filter(|members| {
            members
                .iter()
                .any(|m| node_keys(&input, *m).iter().any(|(_, k)| keys.contains(k)))
        })
        .filter_map(|members| explain(&input, members, rules, now_ns))
        .filter(|e| e.request_id == id)
        .collect();
    found.sort_by_key(|e| e.time_ns);
    let pick = at
        .and_then(|t| found.iter().position(|e| e.time_ns == t))
        .unwrap_or(0);
    (pick < found.len()).then(|| found.swap_remove(pick))
}

/// The explanation of the component `members` of `input` (`None`: background work, or no
/// id), by the same rules `request::build` applies.
pub(crate) fn explain(
    input: &Input,
    members: &[Node],
    rules: &Rules,
    now_ns: i64,
) -> Option<Explanation> {
    let l = Layers::of(input, members)?;
    let kind = Kind::of(&l, rules);
    let who = Identity::of(&l, rules, now_ns)?;
    let t0 = who.time;

    // What linked each record: its keys that another record of the component shares.
    let mut shared: BTreeMap<String, usize> = BTreeMap::new();
    let mut keys_by_record: BTreeMap<(&'static str, String), Vec<(&'static str, String)>> =
        BTreeMap::new();
    for m in members {
        let keys = node_keys(input, *m);
        for (_, k) in &keys {
            *shared.entry(k.clone()).or_default() += 1;
        }
        let (source, key) = match *m {
            Node::Gateway(i) => ("gateway_logs", input.gateway[i].key.clone()),
            Node::Event(i) => ("gateway_events", input.events[i].key.clone()),
            Node::Flow(i) => ("flow_logs", input.flows[i].key.clone()),
            Node::Span(i) => ("spans", input.spans[i].span_id.clone()),
        };
        keys_by_record
            .entry((source, key))
            .or_default()
            .extend(keys);
    }
    // Lines whose logged time is a duration ending at the line.
    // Lines that time something, and what they timed: an END its flow (elapsed), an
    // AFTER_REQUEST its call (the logged duration), a scope end its scope.
    let timed: BTreeMap<&str, f64> = l
        .flows
        .iter()
        .filter_map(|f| {
            let tp = f.trace_point.as_deref()?;
            let ms = if tp == "END" {
                f.elapsed_ms
            } else if tp == "AFTER_REQUEST" {
                content_num(&f.content, &["durationMs", "duration", "elapsedMs"])
            } else if ends_call(tp) {
                f.scope_elapsed_ms
            } else {
                None
            }?;
            Some((f.key.as_str(), plausible_ms(ms)?))
        })
        .collect();
    let records: Vec<ExplainedRecord> = timeline(&l)
        .into_iter()
        .map(|e| {
            let key = e.record_key.clone().unwrap_or_default();
            let linked_by = keys_by_record
                .get(&(e.source, key.clone()))
                .map(|ks| {
                    let mut seen = std::collections::BTreeSet::new();
                    ks.iter()
                        .filter(|(_, k)| seen.insert(k.clone()))
                        .filter_map(|(what, k)| {
                            let n = shared.get(k).copied().unwrap_or(0);
                            (n > 1).then(|| Link {
                                by: (*what).to_string(),
                                value: k.get(2..).unwrap_or("").to_string(),
                                shared_with: n - 1,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            // A log line that times something (END: the flow; AFTER_REQUEST, a request
            // scope's end: the call) is written when that time ends: its bar ends at the
            // line. Other lines' elapsed is only the time since the flow began: a point.
            let at_ms = e.time.saturating_sub(t0) as f64 / 1e6;
            let (offset_ms, duration_ms) = match (e.source, e.duration_ms) {
                ("flow_logs", _) => match timed.get(key.as_str()) {
                    Some(d) => (at_ms - d, Some(*d)),
                    None => (at_ms, None),
                },
                // A gateway event is logged by a policy when the request is done (outbound
                // section): its elapsed ends at it too.
                ("gateway_events", Some(d)) if d.is_finite() && d > 0.0 => (at_ms - d, Some(d)),
                _ => (at_ms, e.duration_ms),
            };
            ExplainedRecord {
                time_ns: e.time,
                offset_ms,
                duration_ms,
                layer: e.layer.to_string(),
                source: e.source.to_string(),
                record_key: key,
                service: e.service,
                name: e.name,
                status_code: e.status_code,
                outcome: e.outcome.to_string(),
                detail: e.detail,
                linked_by,
            }
        })
        .collect();

    let tok = &who.token;
    let token = ExplainedToken {
        token_id: tok.token_id.clone(),
        subject: tok.subject.clone(),
        client_app: tok.client_app.clone(),
        tenant_id: tok.tenant_id.clone(),
        issuer: tok.issuer.clone(),
        expires_at: tok.expires_at.map(rfc3339),
        expired: who.token_expired,
        from_record: who.token_from.clone(),
    };

    let settled = Verdict::new(
        "settled",
        who.settled,
        format!(
            "final once the last record arrived more than the horizon ({} s) ago; the last \
             arrived at {}",
            rules.horizon_ns / 1_000_000_000,
            rfc3339(who.ingest_time)
        ),
        Vec::new(),
    );
    let mut verdicts = Vec::new();
    let kind_name =
        match &kind {
            Kind::Request(inbound) => {
                verdicts.push(Verdict::new(
                    "kind",
                    "request",
                    format!(
                        "a request: inbound HTTP evidence ({}), and not a probe (no probe path \
                         without another path; no probe user agent on a run without gateway \
                         record, token or second path)",
                        inbound.what
                    ),
                    vec![inbound.record.clone()],
                ));
                request_verdicts(&l, &who, &mut verdicts);
                "request"
            }
            Kind::Probe(m) => {
                verdicts.push(Verdict::new(
                "kind",
                "probe",
                format!(
                    "a probe: its {} {:?} matches the probe {} rule {:?} (correlation.probe_{}); \
                     probes are in `probes`, never in `requests`, never a bypass",
                    m.by.replace('_', " "),
                    m.value,
                    m.by.replace('_', " "),
                    m.rule,
                    if m.by == "path" { "paths" } else { "user_agents" }
                ),
                vec![m.record.clone()],
            ));
                let external = external(rules, who.client_ip.as_deref());
                let mut v = Verdict::new(
                    "external",
                    external,
                    "the caller's address is outside correlation.internal_networks and not a \
                 gateway_egress address; with no gateway record, a settled external probe is \
                 in audit_external_probes",
                    Vec::new(),
                );
                if who.client_ip.is_none() {
                    v.why_null = Some("no record of the probe logged the caller's address".into());
                }
                verdicts.push(v);
                "probe"
            }
            Kind::Background => return None,
        };
    verdicts.push(settled);
    Some(Explanation {
        request_id: who.request_id.clone(),
        kind: kind_name.to_string(),
        time: rfc3339(t0),
        time_ns: t0,
        records,
        token,
        verdicts,
        others: Vec::new(),
    })
}

/// The verdicts of a request: bypass, status, rejection, and each latency component.
fn request_verdicts(l: &Layers<'_>, who: &Identity, out: &mut Vec<Verdict>) {
    let entry: Vec<String> = l
        .start
        .map(|f| f.key.clone())
        .into_iter()
        .chain(l.entry_span.map(|s| s.span_id.clone()))
        .collect();
    let gateway: Vec<String> = l
        .gws
        .iter()
        .map(|g| g.key.clone())
        .chain(l.evs.iter().map(|e| e.key.clone()))
        .collect();
    let bypass_rule = "true when the request entered the integration layer, no gateway record \
                       or gateway event is linked to it, it is settled, and its caller is not a \
                       correlation.gateway_egress address";
    let mut bypass = Verdict::new(
        "bypassed_gateway",
        who.bypassed_gateway,
        bypass_rule,
        if gateway.is_empty() {
            entry.clone()
        } else {
            gateway.clone()
        },
    );
    if !who.bypassed_gateway {
        bypass.why_null = Some(if !gateway.is_empty() {
            "false: gateway records are linked to it".to_string()
        } else if !l.has_integration {
            "false: it never reached the integration layer".to_string()
        } else if who.from_egress {
            format!(
                "false: the caller {} is a gateway egress address",
                who.client_ip.as_deref().unwrap_or("")
            )
        } else {
            "false for now: not settled (a late gateway record may still arrive)".to_string()
        });
    }
    out.push(bypass);

    let o = Outcome::of(l);
    out.push(match (&o.status_from, o.status_code) {
        (Some((from, key)), Some(c)) => Verdict::new(
            "status_code",
            c,
            format!("the status {from} logged (gateway first, then gateway events, then the integration layer)"),
            vec![key.clone()],
        ),
        _ => Verdict::null(
            "status_code",
            "the gateway's status, else a gateway event's, else the integration layer's",
            "no record of the request logged a status",
        ),
    });
    out.push(match (o.rejected_by, o.rule) {
        (Some(by), Some(rule)) => {
            let mut v = Verdict::new("rejected_by", by, rule, o.evidence.clone());
            if let Some(r) = &o.error_reason {
                v.rule = format!("{rule}; error_reason: {r}");
            }
            v
        }
        _ => Verdict::null(
            "rejected_by",
            "set for a status of 400 or more: gateway, backend or integration, decided in that order",
            match o.status_code {
                Some(c) => format!("status {c} is not a failure"),
                None => "no status".to_string(),
            },
        ),
    });

    let lat = Latency::of(l);
    let g = l.g;
    out.push(match (g.and_then(|g| g.total_ms), &lat.flow) {
        (Some(t), _) => Verdict::new(
            "total_ms",
            ms(Some(t)),
            "the gateway's total time",
            g.map(|g| vec![g.key.clone()]).unwrap_or_default(),
        ),
        (None, Some((f, src))) => Verdict::new(
            "total_ms",
            ms(Some(*f)),
            format!(
                "no gateway total: the integration layer's flow time ({})",
                flow_rule(src)
            ),
            vec![flow_key(src)],
        ),
        (None, None) => Verdict::null(
            "total_ms",
            "the gateway's total time, else the integration layer's flow time",
            "no gateway total time and no flow time",
        ),
    });
    out.push(match g.and_then(|g| g.total_ms.map(|t| (g, t))) {
        Some((g, _)) => Verdict::new(
            "gateway_ms",
            ms(lat.gateway_ms),
            if g.backend_ms.is_some() {
                "the gateway's total time less its backend time"
            } else {
                "the gateway's total time (it logged no backend time: the request never left it)"
            },
            vec![g.key.clone()],
        ),
        None => Verdict::null(
            "gateway_ms",
            "the gateway's total time less its backend time",
            if g.is_none() {
                "no gateway record"
            } else {
                "the gateway record has no total time"
            },
        ),
    });
    let flow_missing = "no flow time: no END line with an elapsed, no SERVER span of the entry \
                        app, and no failure line with an elapsed";
    out.push(
        match (g.and_then(|g| g.backend_ms), &lat.flow, lat.network_ms) {
            (Some(_), Some((_, src)), Some(n)) => Verdict::new(
                "network_ms",
                ms(Some(n)),
                format!(
                    "the gateway's backend time less the integration layer's flow time ({})",
                    flow_rule(src)
                ),
                g.map(|g| g.key.clone())
                    .into_iter()
                    .chain([flow_key(src)])
                    .collect(),
            ),
            (None, _, _) => Verdict::null(
                "network_ms",
                "the gateway's backend time less the integration layer's flow time",
                if g.is_none() {
                    "no gateway record"
                } else {
                    "the gateway logged no backend time"
                },
            ),
            _ => Verdict::null(
                "network_ms",
                "the gateway's backend time less the integration layer's flow time",
                if l.has_integration {
                    flow_missing
                } else {
                    "the request never reached the integration layer"
                },
            ),
        },
    );
    let wait_keys: Vec<String> = lat
        .waits
        .iter()
        .flat_map(|w| match w.how {
            WaitEvidence::ClientSpan(s) => vec![s.span_id.clone()],
            WaitEvidence::Logged(f) => vec![f.key.clone()],
            WaitEvidence::Failed { start, failure } => vec![start.key.clone(), failure.key.clone()],
        })
        .collect();
    let wait_rule = {
        let spans = lat
            .waits
            .iter()
            .any(|w| matches!(w.how, WaitEvidence::ClientSpan(_)));
        let logged = lat
            .waits
            .iter()
            .any(|w| matches!(w.how, WaitEvidence::Logged(_)));
        let failed = lat
            .waits
            .iter()
            .any(|w| matches!(w.how, WaitEvidence::Failed { .. }));
        let mut parts = Vec::new();
        if spans {
            parts.push("requester (CLIENT) spans of the entry app, start to end");
        }
        if logged {
            parts.push("AFTER_REQUEST durations / request scope elapsed");
        }
        if failed {
            parts.push("failed calls: BEFORE_REQUEST to the first failure the app logged after it");
        }
        format!(
            "the union of the downstream waits (parallel calls count once): {}",
            parts.join("; ")
        )
    };
    out.push(match (lat.integration_ms, &lat.flow) {
        (Some(i), Some((_, src))) => Verdict::new(
            "integration_ms",
            ms(Some(i)),
            format!(
                "the integration layer's flow time ({}) less backend_ms",
                flow_rule(src)
            ),
            vec![flow_key(src)],
        ),
        _ => Verdict::null(
            "integration_ms",
            "the integration layer's flow time less backend_ms",
            if l.has_integration {
                flow_missing
            } else {
                "the request never reached the integration layer"
            },
        ),
    });
    out.push(match lat.backend_ms {
        Some(b) => Verdict::new("backend_ms", ms(Some(b)), wait_rule, wait_keys),
        None => Verdict::null(
            "backend_ms",
            "the union of the entry app's downstream waits: requester spans, else AFTER_REQUEST \
             durations and failed calls (BEFORE_REQUEST to the failure)",
            if l.has_integration {
                "the entry app logged no downstream call (no requester span, no BEFORE_REQUEST \
                 or AFTER_REQUEST line)"
            } else {
                "the request never reached the integration layer"
            },
        ),
    });
}

fn flow_rule(src: &FlowTime<'_>) -> &'static str {
    match src {
        FlowTime::End(_) => "the END line's elapsed",
        FlowTime::EntrySpan(_) => "the entry SERVER span's duration",
        FlowTime::LastElapsed(_) => "no END line: the largest elapsed of a run that failed",
    }
}

fn flow_key(src: &FlowTime<'_>) -> String {
    match src {
        FlowTime::End(f) | FlowTime::LastElapsed(f) => f.key.clone(),
        FlowTime::EntrySpan(s) => s.span_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Flow, Gateway};

    const MS: i64 = 1_000_000;

    #[test]
    fn a_failed_call_is_explained_with_its_evidence() {
        let g = Gateway {
            time: 0,
            ingest: 0,
            key: "g1".into(),
            correlation_id: Some("c-1".into()),
            status_code: Some(502),
            backend_status_code: Some(502),
            total_ms: Some(60.0),
            backend_ms: Some(50.0),
            url_path: Some("/orders".into()),
            ..Gateway::default()
        };
        let line = |key: &str, t: i64, tp: &str| Flow {
            time: t,
            ingest: t,
            key: key.into(),
            correlation_id: Some("c-1".into()),
            mule_app: Some("orders".into()),
            trace_point: Some(tp.into()),
            ..Flow::default()
        };
        let mut start = line("f1", 2 * MS, "START");
        start.request_path = Some("/orders".into());
        let before = line("f2", 10 * MS, "BEFORE_REQUEST");
        let mut exc = line("f3", 45 * MS, "EXCEPTION");
        exc.error_type = Some("HTTP:TIMEOUT".into());
        exc.elapsed_ms = Some(47.0);
        let input = Input {
            gateway: vec![g],
            flows: vec![start, before, exc],
            ..Input::default()
        };
        let e = explain_id(input, &Rules::default(), 0, "c-1", None).expect("explained");
        assert_eq!(e.kind, "request");
        assert_eq!(e.records.len(), 4);
        assert!(e.records.iter().all(|r| !r.linked_by.is_empty()));
        assert_eq!(e.records[0].linked_by[0].by, "correlation id");
        let v = |n: &str| e.verdicts.iter().find(|v| v.name == n).expect(n).clone();
        assert_eq!(v("backend_ms").value, serde_json::json!(35.0));
        assert_eq!(v("backend_ms").evidence, ["f2", "f3"]);
        assert_eq!(v("rejected_by").value, serde_json::json!("backend"));
        assert_eq!(v("bypassed_gateway").value, serde_json::json!(false));
        assert!(v("bypassed_gateway").why_null.is_some());
        assert_eq!(v("network_ms").value, serde_json::json!(3.0));
        assert_eq!(e.time, "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_733_400_000_123_000_000),
            "2024-12-05T12:00:00.123000000Z"
        );
    }
}
