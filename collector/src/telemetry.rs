//! The collector's metrics: one constant per name, described once in [`describe`], emitted
//! through the `metrics` facade ([`add`], [`set`]). The binary installs the one registry
//! (the Prometheus recorder) that renders every crate's metrics on `/metrics`; the storage
//! engine's names live in `seam_store::metrics`, the query engine's in `seam_query`.

/// Records received in export or ingest requests, by `signal` and `transport`.
pub const RECORDS_RECEIVED: &str = "seam_records_received_total";
/// Records accepted (stored), by `signal` and `transport`.
pub const RECORDS_ACCEPTED: &str = "seam_records_accepted_total";
/// Records refused, by `signal`, `transport` and `reason`.
pub const RECORDS_REJECTED: &str = "seam_records_rejected_total";
/// Requests answered, by `signal`, `transport` and `outcome`.
pub const REQUESTS: &str = "seam_ingest_requests_total";
/// Request bytes received (as sent), by `transport`.
pub const BYTES_RECEIVED: &str = "seam_ingest_bytes_total";
/// Attribute values, log bodies or attribute lists cut to the limits, by `table`.
pub const ATTRIBUTES_TRUNCATED: &str = "seam_attributes_truncated_total";

/// Tokens identified by fingerprint only, by `table` and `reason` (`opaque`,
/// `bad_base64`, `not_json`, `oversized`).
pub const TOKENS_UNREADABLE: &str = "seam_tokens_unreadable_total";

/// Describes every collector metric to the installed registry.
pub fn describe() {
    use ::metrics::describe_counter;
    describe_counter!(
        TOKENS_UNREADABLE,
        "Bearer tokens whose claims could not be read (fingerprint only), by reason."
    );
    describe_counter!(
        RECORDS_RECEIVED,
        "Records received in export or ingest requests."
    );
    describe_counter!(RECORDS_ACCEPTED, "Records accepted and stored.");
    describe_counter!(RECORDS_REJECTED, "Records refused, by reason.");
    describe_counter!(REQUESTS, "Ingest requests answered, by outcome.");
    describe_counter!(BYTES_RECEIVED, "Request body bytes received, as sent.");
    describe_counter!(
        ATTRIBUTES_TRUNCATED,
        "Attribute values, bodies or attribute lists cut to the limits."
    );
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<::metrics::Label> {
    pairs
        .iter()
        .map(|(k, v)| ::metrics::Label::new(*k, v.to_string()))
        .collect()
}

/// Adds `by` to the counter `name` with labels `pairs`.
pub fn add(name: &'static str, pairs: &[(&'static str, &str)], by: u64) {
    ::metrics::counter!(name, labels(pairs)).increment(by);
}

/// Sets the gauge `name` with labels `pairs`.
pub fn set(name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
    ::metrics::gauge!(name, labels(pairs)).set(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_reach_the_installed_registry() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            add(
                RECORDS_ACCEPTED,
                &[("signal", "spans"), ("transport", "http")],
                3,
            );
            add(
                RECORDS_ACCEPTED,
                &[("signal", "spans"), ("transport", "http")],
                2,
            );
        });
        let text = handle.render();
        assert!(
            text.contains("seam_records_accepted_total{signal=\"spans\",transport=\"http\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("# HELP seam_records_accepted_total Records accepted and stored."),
            "{text}"
        );
    }
}
