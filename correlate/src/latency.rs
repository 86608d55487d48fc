//! Where a request's time went.
//!
//! [`Latency::of`] takes a request's [`Layers`] and gives its end-to-end time and the time
//! of each layer: the gateway (APIM's total less its backend time), the network between the
//! gateway and the integration layer, the integration layer itself (its flow time less its
//! downstream waits) and those downstream waits (the union of the entry app's client spans,
//! else of its logged outbound durations, so that parallel calls count once). Integration and
//! backend times are given only when the request went through the integration layer.

use crate::layers::Layers;
use crate::record::Span;

/// A request's end-to-end and per-layer times (ms).
#[derive(Debug)]
pub(crate) struct Latency {
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
}

impl Latency {
    /// The times of the request in `l`.
    pub(crate) fn of(l: &Layers<'_>) -> Self {
        let (g, has_integration) = (l.g, l.has_integration);
        let flow_ms = l
            .end
            .and_then(|e| e.elapsed_ms)
            .or_else(|| l.entry_span.and_then(Span::duration_ms));

        // Downstream waits of the integration layer.
        let client_iv: Vec<(i64, i64)> = l
            .spans
            .iter()
            .filter(|s| l.is_integration(s) && s.kind.eq_ignore_ascii_case("client"))
            .filter_map(|s| s.end.map(|e| (s.time, e)))
            .collect();
        let backend_ms = union_ms(client_iv).or_else(|| {
            let iv: Vec<(i64, i64)> = l
                .entry_flows
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
        }
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
