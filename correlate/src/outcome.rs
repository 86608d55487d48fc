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
}

impl Outcome {
    /// The outcome of the request in `l`.
    pub(crate) fn of(l: &Layers<'_>) -> Self {
        let (g, has_integration) = (l.g, l.has_integration);
        let integration_status = l
            .end
            .and_then(|e| e.status_code)
            .or_else(|| l.entry_span.and_then(|s| s.status_code));
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
        let (rejected_by, error_reason) = match status_code {
            Some(c) if c >= 400 => {
                let gw_reject = g.is_some_and(|g| {
                    g.backend_status_code.is_none()
                        && (g.last_error_source.is_some() || !has_integration)
                });
                if gw_reject {
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
                    (Some("gateway"), g.and_then(|g| g.last_error_reason.clone()))
                }
            }
            _ => (None, None),
        };
        let layers_disagree = match (g.and_then(|g| g.status_code), integration_status) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        Self {
            status_code,
            rejected_by,
            error_reason,
            layers_disagree,
        }
    }
}
