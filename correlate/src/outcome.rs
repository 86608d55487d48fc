//! How a request ended.
//!
//! [`Outcome::of`] takes a request's [`Layers`] and gives the status the client got (the
//! gateway's, else a gateway event's, else the integration layer's), for a failed request
//! the layer that rejected it (gateway, backend or integration, decided in that order) and
//! why, and whether the gateway and the integration layer report different statuses.

use crate::layers::{Layers, first};

/// A request's status, who rejected it and why.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Status to the client.
    pub(crate) status_code: Option<i32>,
    /// gateway, integration or backend (only for a status of 400 or more).
    pub(crate) rejected_by: Option<&'static str>,
    /// Why.
    pub(crate) error_reason: Option<String>,
    /// The gateway's status and the integration layer's differ.
    pub(crate) layers_disagree: bool,
    /// Which record gave the status, in words, and its key.
    pub(crate) status_from: Option<(&'static str, String)>,
    /// The rule that decided `rejected_by` (None: not failed).
    pub(crate) rule: Option<&'static str>,
    /// The records that rule read.
    pub(crate) evidence: Vec<String>,
}

impl Outcome {
    /// The outcome of the request in `l`.
    pub(crate) fn of(l: &Layers<'_>) -> Self {
        let (g, has_integration) = (l.g, l.has_integration);
        let integration_status = l
            .end
            .and_then(|e| e.status_code)
            .or_else(|| l.entry_span.and_then(|s| s.status_code));
        let status_from: Option<(&'static str, String)> =
            if let Some(g) = g.filter(|g| g.status_code.is_some()) {
                Some(("the gateway record", g.key.clone()))
            } else if let Some(e) = l.evs.iter().find(|e| e.status_code.is_some()) {
                Some(("a gateway event", e.key.clone()))
            } else if let Some(e) = l.end.filter(|e| e.status_code.is_some()) {
                Some(("the integration layer's END line", e.key.clone()))
            } else {
                l.entry_span
                    .filter(|s| s.status_code.is_some())
                    .map(|s| ("the integration layer's SERVER span", s.span_id.clone()))
            };
        let status_code = g
            .and_then(|g| g.status_code)
            .or_else(|| first(l.evs.iter().map(|e| e.status_code)))
            .or(integration_status);
        let entry_error = first(l.entry_flows.iter().map(|f| f.error_type.clone()));
        let downstream_failed = l
            .spans
            .iter()
            .filter(|s| {
                l.span_layer(s) == "backend"
                    || (l.is_integration(s) && s.kind.eq_ignore_ascii_case("client"))
            })
            .find(|s| {
                s.status_code.is_some_and(|c| c >= 400)
                    || s.span_status.eq_ignore_ascii_case("error")
            })
            .copied();
        let backend_flow_failed = l.flows.iter().any(|f| {
            !l.in_entry(&f.mule_app)
                && (f.error_type.is_some() || f.status_code.is_some_and(|c| c >= 400))
        });
        let mut evidence: Vec<String> = status_from.iter().map(|(_, k)| k.clone()).collect();
        let mut rule = None;
        let (rejected_by, error_reason) = match status_code {
            Some(c) if c >= 400 => {
                let gw_reject = g.is_some_and(|g| {
                    g.backend_status_code.is_none()
                        && (g.last_error_source.is_some() || !has_integration)
                });
                if gw_reject {
                    rule = Some(
                        "the gateway answered without a backend status, and it logged an error \
                         source or the request never reached the integration layer",
                    );
                    evidence.extend(g.map(|g| g.key.clone()));
                    (
                        Some("gateway"),
                        first(l.gws.iter().map(|g| g.last_error_reason.clone()))
                            .or_else(|| first(l.evs.iter().map(|e| e.last_error_reason.clone()))),
                    )
                } else if downstream_failed.is_some()
                    || backend_flow_failed
                    || entry_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("HTTP:"))
                {
                    rule = Some(
                        "a downstream call failed: a backend span or requester span in error or \
                         >= 400, a backend app's error, or an HTTP: error type in the entry app",
                    );
                    evidence.extend(downstream_failed.map(|s| s.span_id.clone()));
                    evidence.extend(
                        l.flows
                            .iter()
                            .filter(|f| f.error_type.is_some())
                            .map(|f| f.key.clone()),
                    );
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
                    rule = Some(
                        "the request reached the integration layer and failed there: no gateway \
                         refusal and no downstream call failed",
                    );
                    evidence.extend(
                        l.entry_flows
                            .iter()
                            .filter(|f| {
                                f.error_type.is_some() || f.trace_point.as_deref() == Some("END")
                            })
                            .map(|f| f.key.clone()),
                    );
                    (
                        Some("integration"),
                        entry_error.clone().or_else(|| {
                            first(
                                l.mule_spans
                                    .iter()
                                    .filter(|s| s.span_status.eq_ignore_ascii_case("error"))
                                    .map(|s| s.status_message.clone()),
                            )
                        }),
                    )
                } else {
                    rule = Some("failed and never reached the integration layer");
                    (Some("gateway"), g.and_then(|g| g.last_error_reason.clone()))
                }
            }
            _ => (None, None),
        };
        let layers_disagree = match (g.and_then(|g| g.status_code), integration_status) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        evidence.sort();
        evidence.dedup();
        Self {
            status_code,
            rejected_by,
            error_reason,
            layers_disagree,
            status_from,
            rule,
            evidence,
        }
    }
}
