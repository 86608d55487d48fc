//! The one metrics registry: the Prometheus recorder of the `metrics` facade, installed once
//! per process. Every crate emits through the facade under its own declared names
//! (`seam_collector::telemetry`, `seam_store::metrics`, `seam_query`); `/metrics` renders
//! this registry and nothing else.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The registry's handle, installing it (and describing every metric) on first use.
pub fn registry() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("A metrics recorder was already installed; /metrics shows seam's only.");
        }
        seam_collector::telemetry::describe();
        seam_store::metrics::describe();
        seam_query::session::describe_metrics();
        seam_correlate::schedule::metrics::describe();
        handle
    })
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    registry().render()
}
