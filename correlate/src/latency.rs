//! Where a request's time went.
//!
//! [`Latency::of`] takes a request's [`Layers`] and gives its end-to-end time and the time
//! of each layer: the gateway (APIM's total less its backend time), the network between the
//! gateway and the integration layer, the integration layer itself (its flow time less its
//! downstream waits) and those downstream waits (the union of the entry app's client spans,
//! else of its logged outbound durations and failed calls, so that parallel calls count
//! once). Integration and backend times are given only when the request went through the
//! integration layer. [`Latency`] keeps what each time was computed from ([`FlowTime`],
//! [`Wait`]), for explanations.

use crate::layers::Layers;
use crate::record::{Flow, Span};

/// Where the integration layer's flow time came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FlowTime<'a> {
    /// The entry app's END record's elapsed.
    End(&'a Flow),
    /// The entry SERVER span's duration.
    EntrySpan(&'a Span),
    /// No END (an error propagated): the largest elapsed the entry app logged, when it
    /// logged a failure.
    LastElapsed(&'a Flow),
}

/// One downstream wait of the integration layer and its evidence.
#[derive(Debug, Clone)]
pub(crate) struct Wait<'a> {
    /// Start (ns).
    pub(crate) start: i64,
    /// End (ns).
    pub(crate) end: i64,
    /// How it was timed.
    pub(crate) how: WaitEvidence<'a>,
}

/// How a downstream wait was timed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WaitEvidence<'a> {
    /// A requester (CLIENT) span of the entry app, from its start to its end (failed or not).
    ClientSpan(&'a Span),
    /// An `AFTER_REQUEST` line's logged duration, or a `*REQUEST_SCOPE_AFTER` line's
    /// scope elapsed, ending at the line.
    Logged(&'a Flow),
    /// A call that failed: its start line (`BEFORE_REQUEST`, `*REQUEST_SCOPE_BEFORE`) to the
    /// first failure the app logged after it (an error type, an ERROR line, `EXCEPTION`).
    Failed {
        /// The start line.
        start: &'a Flow,
        /// The failure.
        failure: &'a Flow,
    },
}

/// A request's end-to-end and per-layer times (ms), and what they were computed from.
#[derive(Debug)]
pub(crate) struct Latency<'a> {
    /// End to end.
    pub(crate) total_ms: Option<f64>,
    /// Gateway time.
    pub(crate) gateway_ms: Option<f64>,
    /// Network time.
    pub(crate) network_ms: Option<f64>,
    /// Integration time (only with an integration layer).
    pub(crate) integration_ms: Option<f64>,
    /// Backend time (only with an integration layer).
    pub(crate) backend_ms: Option<f64>,
    /// The integration layer's flow time and its source.
    pub(crate) flow: Option<(f64, FlowTime<'a>)>,
    /// The downstream waits counted in `backend_ms` (their union).
    pub(crate) waits: Vec<Wait<'a>>,
}

/// A logged duration (ms) as evidence: finite, not negative, at most a day; anything else
/// is input seam does not believe.
pub(crate) fn plausible_ms(ms: f64) -> Option<f64> {
    (ms.is_finite() && (0.0..=86_400_000.0).contains(&ms)).then_some(ms)
}

impl<'a> FlowTime<'a> {
    /// The flow time of the request in `l`.
    fn of(l: &Layers<'a>) -> Option<(f64, Self)> {
        if let Some(e) = l.end
            && let Some(ms) = e.elapsed_ms.and_then(plausible_ms)
        {
            return Some((ms, FlowTime::End(e)));
        }
        if let Some(s) = l.entry_span
            && let Some(ms) = s.duration_ms()
        {
            return Some((ms, FlowTime::EntrySpan(s)));
        }
        // Without an END, only a run that failed ended: its largest elapsed is its time.
        if l.end.is_some() || !l.entry_flows.iter().any(|f| is_failure(f)) {
            return None;
        }
        l.entry_flows
            .iter()
            .copied()
            .filter_map(|f| Some((f.elapsed_ms.and_then(plausible_ms)?, f)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(ms, f)| (ms, FlowTime::LastElapsed(f)))
    }
}

/// Whether a flow line reports a failure.
pub(crate) fn is_failure(f: &Flow) -> bool {
    f.error_type.is_some()
        || f.level.as_deref() == Some("ERROR")
        || f.trace_point.as_deref() == Some("EXCEPTION")
}

fn starts_call(tp: &str) -> bool {
    tp == "BEFORE_REQUEST" || tp.ends_with("REQUEST_SCOPE_BEFORE")
}

pub(crate) fn ends_call(tp: &str) -> bool {
    tp == "AFTER_REQUEST" || tp.ends_with("REQUEST_SCOPE_AFTER")
}

/// The downstream waits of the entry app's flow lines: logged durations, and failed calls
/// (a start line no end line closes, up to the first failure after it).
fn flow_waits<'a>(l: &Layers<'a>) -> Vec<Wait<'a>> {
    let mut waits = Vec::new();
    let mut open: Vec<&'a Flow> = Vec::new();
    for f in l.entry_flows.iter().copied() {
        let Some(tp) = f.trace_point.as_deref() else {
            continue;
        };
        if starts_call(tp) {
            open.push(f);
            continue;
        }
        if !ends_call(tp) {
            continue;
        }
        // The earliest open call is the one this line closes.
        if !open.is_empty() {
            open.remove(0);
        }
        let d = if tp == "AFTER_REQUEST" {
            content_num(&f.content, &["durationMs", "duration", "elapsedMs"])
        } else {
            f.scope_elapsed_ms
        };
        // A logged duration is input: negative, NaN or absurd ones are ignored.
        let Some(d_ns) = d.and_then(plausible_ms).map(|d| d * 1e6) else {
            continue;
        };
        waits.push(Wait {
            start: f.time.saturating_sub(d_ns as i64),
            end: f.time,
            how: WaitEvidence::Logged(f),
        });
    }
    // Calls never closed: the first failure the app logged after their start, and before
    // its END, ends them.
    let flow_end = l.end.map_or(i64::MAX, |e| e.time);
    for start in open {
        let failure = l
            .flows
            .iter()
            .copied()
            .filter(|f| f.mule_app.is_none() || l.in_entry(&f.mule_app))
            .filter(|f| f.time >= start.time && f.time <= flow_end && !std::ptr::eq(*f, start))
            .filter(|f| !f.trace_point.as_deref().is_some_and(starts_call))
            .find(|f| is_failure(f));
        if let Some(failure) = failure {
            waits.push(Wait {
                start: start.time,
                end: failure.time,
                how: WaitEvidence::Failed { start, failure },
            });
        }
    }
    waits
}

impl<'a> Latency<'a> {
    /// The times of the request in `l`.
    pub(crate) fn of(l: &Layers<'a>) -> Self {
        let (g, has_integration) = (l.g, l.has_integration);
        let flow = FlowTime::of(l);
        let flow_ms = flow.map(|(ms, _)| ms);

        // Downstream waits of the integration layer: its requester spans, else its lines.
        let mut waits: Vec<Wait<'a>> = l
            .spans
            .iter()
            .copied()
            .filter(|s| l.is_integration(s) && s.kind.eq_ignore_ascii_case("client"))
            .filter_map(|s| {
                s.end.map(|e| Wait {
                    start: s.time,
                    end: e,
                    how: WaitEvidence::ClientSpan(s),
                })
            })
            .collect();
        if waits.is_empty() {
            waits = flow_waits(l);
        }
        // A wait lies within the run: a logged duration longer than the flow, or a span
        // outside it, is cut to the flow's start and end where they are known.
        let (run_start, run_end) = run_bounds(l, flow);
        for w in &mut waits {
            w.start = w.start.max(run_start);
            w.end = w.end.min(run_end).max(w.start);
        }
        let backend_ms = union_ms(waits.iter().map(|w| (w.start, w.end)).collect());
        let integration_ms = match (flow_ms, backend_ms) {
            (Some(f), Some(b)) => Some(f - b),
            (Some(f), None) => Some(f),
            _ => None,
        };

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
        Self {
            total_ms,
            gateway_ms,
            network_ms,
            integration_ms: integration_ms.filter(|_| has_integration),
            backend_ms: backend_ms.filter(|_| has_integration),
            flow,
            waits,
        }
    }
}

/// The integration run's start and end (ns) where known: its entry span, else its START
/// line and its END line (or START plus the flow time); unbounded otherwise.
fn run_bounds(l: &Layers<'_>, flow: Option<(f64, FlowTime<'_>)>) -> (i64, i64) {
    if let Some(s) = l.entry_span
        && let Some(e) = s.end
    {
        return (s.time, e.max(s.time));
    }
    let start = l.start.map(|f| f.time).or_else(|| {
        // No START: the END less the flow time it logged.
        let e = l.end?;
        let ms = e.elapsed_ms.and_then(plausible_ms)?;
        e.time.checked_sub((ms * 1e6) as i64)
    });
    let end = l.end.map(|f| f.time).or_else(|| {
        let (ms, _) = flow?;
        start?.checked_add((ms * 1e6) as i64)
    });
    (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX))
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

pub(crate) fn content_num(content: &Option<String>, keys: &[&str]) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(content.as_deref()?).ok()?;
    keys.iter().find_map(|k| match v.get(*k)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::ip_of;

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
}
