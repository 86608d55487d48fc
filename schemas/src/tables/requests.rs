//! The derived tables the correlator writes: `requests` (one row per end-to-end request),
//! `request_events` (every record of a request with its layer) and `probes` (health and
//! readiness probes, kept out of `requests`), plus the views over them (`tokens` and the
//! audit views).
//!
//! Takes nothing; gives the schemas and the views' SQL. Rows are recomputed from the raw
//! tables (never edited by hand): a minute bucket's rows are replaced whenever records for it
//! arrive. The rules are documented in `docs/correlation.md`.

use arrow_schema::{DataType, SchemaRef};

use super::{field, schema_of, text, timestamp_type};
use crate::columns::*;

/// SQL name of the requests table.
pub const TABLE: &str = "requests";
/// What one row is.
pub const DESCRIPTION: &str = "One row per end-to-end request, derived by seam's correlator \
     from gateway_logs, gateway_events, flow_logs and spans linked through any chain of shared \
     ids (APIM correlation id, Mule correlation id, forwarded X-Correlation-ID, W3C trace id). \
     Recomputed while records may still arrive (settled = false), final after the horizon. \
     Rules in docs/correlation.md.";

/// SQL name of the per-record timeline.
pub const EVENTS_TABLE: &str = "request_events";

/// `apim_correlation_id` column (`requests` / `request_events`).
pub const APIM_CORRELATION_ID: &str = "apim_correlation_id";
/// `backend_ms` column (`requests` / `request_events`).
pub const BACKEND_MS: &str = "backend_ms";
/// `bypassed_gateway` column (`requests` / `request_events`).
pub const BYPASSED_GATEWAY: &str = "bypassed_gateway";
/// `detail` column (`requests` / `request_events`).
pub const DETAIL: &str = "detail";
/// `error_reason` column (`requests` / `request_events`).
pub const ERROR_REASON: &str = "error_reason";
/// `gateway_ms` column (`requests` / `request_events`).
pub const GATEWAY_MS: &str = "gateway_ms";
/// `has_flow` column (`requests` / `request_events`).
pub const HAS_FLOW: &str = "has_flow";
/// `has_gateway` column (`requests` / `request_events`).
pub const HAS_GATEWAY: &str = "has_gateway";
/// `has_spans` column (`requests` / `request_events`).
pub const HAS_SPANS: &str = "has_spans";
/// `integration_ms` column (`requests` / `request_events`).
pub const INTEGRATION_MS: &str = "integration_ms";
/// `layer` column (`requests` / `request_events`).
pub const LAYER: &str = "layer";
/// `layers_disagree` column (`requests` / `request_events`).
pub const LAYERS_DISAGREE: &str = "layers_disagree";
/// `mule_correlation_id` column (`requests` / `request_events`).
pub const MULE_CORRELATION_ID: &str = "mule_correlation_id";
/// `network_ms` column (`requests` / `request_events`).
pub const NETWORK_MS: &str = "network_ms";
/// `outcome` column (`requests` / `request_events`).
pub const OUTCOME: &str = "outcome";
/// `records` column (`requests` / `request_events`).
pub const RECORDS: &str = "records";
/// `rejected_by` column (`requests` / `request_events`).
pub const REJECTED_BY: &str = "rejected_by";
/// `request_id` column (`requests` / `request_events`).
pub const REQUEST_ID: &str = "request_id";
/// `request_time` column (`requests` / `request_events`).
pub const REQUEST_TIME: &str = "request_time";
/// `service` column (`requests` / `request_events`).
pub const SERVICE: &str = "service";
/// `settled` column (`requests` / `request_events`).
pub const SETTLED: &str = "settled";
/// `total_ms` column (`requests` / `request_events`).
pub const TOTAL_MS: &str = "total_ms";
/// What one row of it is.
pub const EVENTS_DESCRIPTION: &str = "Every record of every request in `requests`, with its \
     layer, source, duration and outcome: the per-request timeline (SELECT * FROM \
     request_events WHERE request_id = '…' ORDER BY time).";

fn ms(name: &str, desc: &str) -> arrow_schema::Field {
    field(name, DataType::Float64, true, desc)
}

fn flag(name: &str, desc: &str) -> arrow_schema::Field {
    field(name, DataType::Boolean, false, desc)
}

/// Arrow schema of `requests`.
pub fn schema() -> SchemaRef {
    schema_of(
        vec![
            field(
                TIME,
                timestamp_type(),
                false,
                "When the request started: the earliest time of its records (UTC).",
            ),
            field(
                INGEST_TIME,
                timestamp_type(),
                false,
                "When the last of its records arrived at seam (UTC); `settled` counts from it.",
            ),
            field(
                REQUEST_ID,
                DataType::Utf8,
                false,
                "The request's id: the APIM correlation id when there is one, else the Mule correlation id, else the W3C trace id.",
            ),
            text(TRACE_ID, "W3C trace id (32 lower-case hex), when any record carried one."),
            text(
                APIM_CORRELATION_ID,
                "APIM's request id (gateway_logs.correlation_id); NULL without a gateway record.",
            ),
            text(
                MULE_CORRELATION_ID,
                "The Mule event correlation id of the integration flow; NULL when Mule was not reached.",
            ),
            text(API_ID, "APIM API id."),
            text(OPERATION_ID, "APIM operation id."),
            text(METHOD, "HTTP method the client used."),
            text(URL_PATH, "Path the client called (at the gateway, else at Mule)."),
            text(
                CLIENT_IP,
                "The client's address: the gateway's caller, else the caller Mule saw (without port).",
            ),
            text(USER_AGENT, "User-Agent the gateway logged."),
            text(SUBSCRIPTION_ID, "APIM subscription id."),
            text(
                GATEWAY,
                "The gateway that handled it: managed, or a self-hosted gateway's name (APIM); for another gateway read by a mapping, the ingest request's gateway parameter, else its product (kong, envoy, nginx, aws_apigateway, identity_proxy); NULL without a gateway record.",
            ),
        ]
        .into_iter()
        .chain(super::token_fields())
        .chain(vec![
            field(
                "token_expired",
                DataType::Boolean,
                true,
                "Whether the token had expired when the request started (token_expires_at < time); NULL without a token expiry.",
            ),
            field(
                STATUS_CODE,
                DataType::Int32,
                true,
                "Status the client got: the gateway's response code, else the integration flow's.",
            ),
            field(
                BACKEND_STATUS_CODE,
                DataType::Int32,
                true,
                "Status the gateway got from its backend (NULL when it called none).",
            ),
            text(
                REJECTED_BY,
                "Which layer refused the request: gateway, integration or backend; NULL when it succeeded (status < 400).",
            ),
            text(
                ERROR_REASON,
                "Why: the gateway's last error reason (e.g. TokenExpired), else the Mule error type (e.g. HTTP:UNAUTHORIZED), else the failing span's status.",
            ),
            ms(
                TOTAL_MS,
                "End-to-end time: APIM TotalTime, else the integration flow's time.",
            ),
            ms(
                GATEWAY_MS,
                "Time in the gateway: APIM TotalTime - BackendTime (all of TotalTime when no backend was called).",
            ),
            ms(
                NETWORK_MS,
                "Between gateway and integration: APIM BackendTime - the Mule flow time.",
            ),
            ms(
                INTEGRATION_MS,
                "Mule's own time: the flow time - backend_ms.",
            ),
            ms(
                BACKEND_MS,
                "Time the flow waited on downstream calls: the union (not the sum) of their intervals.",
            ),
            text(CACHE, "APIM cache involvement: none, hit or miss."),
            flag(
                BYPASSED_GATEWAY,
                "Integration evidence (flow logs or Mule spans) of a settled request with no gateway record under any id link, from a caller that is not a configured gateway egress address.",
            ),
            flag(HAS_GATEWAY, "A gateway_logs record belongs to it."),
            flag(HAS_FLOW, "flow_logs records belong to it."),
            flag(HAS_SPANS, "Spans belong to it."),
            text(MULE_APP, "The Mule app the request entered (the integration layer)."),
            text(FLOW, "The integration app's entry flow."),
            flag(
                LAYERS_DISAGREE,
                "The client saw one outcome and a layer behind it another (e.g. a gateway timeout while Mule answered 201).",
            ),
            flag(
                SETTLED,
                "false while records of this request may still arrive (the last arrived less than the horizon ago); true after.",
            ),
            field(
                RECORDS,
                DataType::Int64,
                false,
                "Number of records linked into the request.",
            ),
        ])
        .collect(),
    )
}

/// Arrow schema of `request_events`.
pub fn events_schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When the record started (UTC).",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When the record arrived at seam (UTC).",
        ),
        field(
            REQUEST_ID,
            DataType::Utf8,
            false,
            "The request (requests.request_id).",
        ),
        field(
            REQUEST_TIME,
            timestamp_type(),
            false,
            "requests.time of the request.",
        ),
        field(
            LAYER,
            DataType::Utf8,
            false,
            "client, gateway, integration or backend.",
        ),
        field(
            SOURCE,
            DataType::Utf8,
            false,
            "The table the record is in: gateway_logs, gateway_events, flow_logs or spans.",
        ),
        text(SERVICE, "APIM service, Mule app or span service.name."),
        text(
            NAME,
            "What happened: the span name, the JSON Logger trace point and message, the gateway operation.",
        ),
        ms(DURATION_MS, "How long it took, when the record says."),
        field(
            STATUS_CODE,
            DataType::Int32,
            true,
            "HTTP status the record reports.",
        ),
        text(
            OUTCOME,
            "ok, or error (status >= 400, an error type, a span in error).",
        ),
        text(DETAIL, "The error reason or message, when there is one."),
        text(TRACE_ID, "Trace id of the record."),
        text(SPAN_ID, "Span id (spans)."),
        text(
            RECORD_KEY,
            "The record's record_key (gateway and flow tables) or span id.",
        ),
    ])
}

/// SQL name of the probes table.
pub const PROBES_TABLE: &str = "probes";
/// What one row of it is.
pub const PROBES_DESCRIPTION: &str = "One row per health or readiness probe: a linked run \
     whose inbound record (gateway record, SERVER span, listener line) has a path in \
     correlation.probe_paths or a user agent in correlation.probe_user_agents. Probes are never \
     in `requests` and never a bypass; their records stay in the raw tables. Runs without \
     inbound HTTP evidence (schedulers, pollers, batch jobs) are in neither table.";
/// `probe_id` column (`probes`).
pub const PROBE_ID: &str = "probe_id";
/// `matched_by` column (`probes`).
pub const MATCHED_BY: &str = "matched_by";
/// `rule` column (`probes`).
pub const RULE: &str = "rule";
/// `external` column (`probes`).
pub const EXTERNAL: &str = "external";

/// Arrow schema of `probes`.
pub fn probes_schema() -> SchemaRef {
    schema_of(vec![
        field(
            TIME,
            timestamp_type(),
            false,
            "When the probe started: the earliest time of its records (UTC).",
        ),
        field(
            INGEST_TIME,
            timestamp_type(),
            false,
            "When the last of its records arrived (UTC); `settled` counts from it.",
        ),
        field(
            PROBE_ID,
            DataType::Utf8,
            false,
            "Its id, chosen as a request id is: the APIM correlation id, else the Mule correlation id, else the trace id.",
        ),
        text(
            MULE_APP,
            "The Mule app probed (when the probe reached one).",
        ),
        text(FLOW, "The flow that answered it."),
        text(METHOD, "HTTP method."),
        text(
            URL_PATH,
            "Path probed (the gateway's, else the listener's, else the span's).",
        ),
        text(CLIENT_IP, "The prober's address."),
        text(
            USER_AGENT,
            "The prober's user agent, when a record logged it.",
        ),
        field(
            MATCHED_BY,
            DataType::Utf8,
            false,
            "What made it a probe: path (correlation.probe_paths) or user_agent (correlation.probe_user_agents).",
        ),
        field(
            RULE,
            DataType::Utf8,
            false,
            "The configured path pattern or user-agent prefix that matched.",
        ),
        flag(HAS_GATEWAY, "A gateway record or event is part of it."),
        flag(HAS_FLOW, "Flow records are part of it."),
        flag(HAS_SPANS, "Spans are part of it."),
        flag(
            EXTERNAL,
            "The prober's address is known, outside correlation.internal_networks and not a gateway_egress address.",
        ),
        flag(
            SETTLED,
            "Final: its last record arrived more than the horizon ago.",
        ),
        field(
            RECORDS,
            DataType::Int64,
            false,
            "How many records were linked into it.",
        ),
    ])
}

/// The views over the derived tables: (name, description, SQL).
pub fn views() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "tokens",
            "One row per token_id seen in requests: who it belongs to, when and how often it was used, how often it failed, from how many client addresses, against which APIs.",
            // No DISTINCT aggregate runs per token: they cost hundreds of bytes per token and
            // ran out of the query memory limit at a million tokens (benches/README.md, query
            // benchmark). A token with one address and one API (min = max) is answered from
            // plain aggregates; only tokens with several get DISTINCT aggregates, over their
            // own requests (the small side of the join is built first).
            "SELECT b.token_id, b.subject, b.client_app, b.tenant_id, b.issuer, b.audience, \
             b.expires_at, b.first_seen, b.last_seen, b.requests, b.failures, \
             CASE WHEN m.token_id IS NOT NULL THEN m.distinct_client_ips \
             WHEN b.ip_lo IS NULL THEN 0 ELSE 1 END AS distinct_client_ips, \
             CASE WHEN m.token_id IS NOT NULL THEN m.apis \
             WHEN b.api_lo IS NULL THEN NULL ELSE make_array(b.api_lo) END AS apis \
             FROM (SELECT r.token_id, count(DISTINCT r.client_ip) AS distinct_client_ips, \
             array_sort(array_agg(DISTINCT r.api_id) FILTER (WHERE r.api_id IS NOT NULL)) AS apis \
             FROM (SELECT token_id FROM requests WHERE token_id IS NOT NULL GROUP BY token_id \
             HAVING min(client_ip) <> max(client_ip) OR min(api_id) <> max(api_id)) s \
             JOIN requests r ON r.token_id = s.token_id GROUP BY r.token_id) m \
             RIGHT JOIN (SELECT token_id, max(subject) AS subject, max(client_app) AS client_app, \
             max(tenant_id) AS tenant_id, max(token_issuer) AS issuer, \
             max(token_audience) AS audience, max(token_expires_at) AS expires_at, \
             min(time) AS first_seen, max(time) AS last_seen, count(*) AS requests, \
             sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS failures, \
             min(client_ip) AS ip_lo, min(api_id) AS api_lo \
             FROM requests WHERE token_id IS NOT NULL GROUP BY token_id) b \
             ON m.token_id = b.token_id"
                .to_string(),
        ),
        (
            "audit_gateway_bypass",
            "Requests that reached the integration layer without passing the gateway (settled only): who called, from where, with which token.",
            "SELECT time, request_id, mule_correlation_id, mule_app, flow, method, url_path, \
             client_ip, token_id, subject, client_app, status_code, trace_id \
             FROM requests WHERE bypassed_gateway"
                .to_string(),
        ),
        (
            "audit_external_probes",
            "Health probes that reached the integration layer from outside the cluster's networks without the gateway (settled only): not a bypass of an API, but an exposed endpoint worth seeing.",
            "SELECT time, probe_id, mule_app, flow, method, url_path, client_ip, user_agent, \
             matched_by, rule \
             FROM probes WHERE external AND NOT has_gateway AND settled"
                .to_string(),
        ),
        (
            "audit_denials",
            "Requests refused by some layer: which layer, why, and who asked.",
            "SELECT time, request_id, rejected_by, error_reason, status_code, \
             backend_status_code, api_id, operation_id, method, url_path, client_ip, token_id, \
             subject, client_app, token_expired, mule_app \
             FROM requests WHERE rejected_by IS NOT NULL"
                .to_string(),
        ),
        (
            "audit_expired_token_use",
            "Requests that succeeded although their token had expired when they started.",
            "SELECT time, request_id, token_id, token_expires_at, subject, client_app, \
             api_id, url_path, status_code, client_ip, has_gateway, mule_app \
             FROM requests WHERE token_expired AND status_code < 400"
                .to_string(),
        ),
        (
            "audit_token_sharing",
            "Tokens used from more than one client address or by more than one client app.",
            // A token has more than one distinct value exactly when its min and max differ:
            // shared tokens are found with plain aggregates, and the DISTINCT aggregates run
            // over those tokens' requests only (benches/README.md, query benchmark).
            "SELECT r.token_id, max(r.subject) AS subject, count(*) AS requests, \
             count(DISTINCT r.client_ip) AS client_ips, \
             count(DISTINCT r.client_app) AS client_apps, \
             array_sort(array_agg(DISTINCT r.client_ip) FILTER (WHERE r.client_ip IS NOT NULL)) AS ips, \
             min(r.time) AS first_seen, max(r.time) AS last_seen \
             FROM (SELECT token_id FROM requests WHERE token_id IS NOT NULL GROUP BY token_id \
             HAVING min(client_ip) <> max(client_ip) OR min(client_app) <> max(client_app)) s \
             JOIN requests r ON r.token_id = s.token_id GROUP BY r.token_id"
                .to_string(),
        ),
        (
            "latency_by_layer",
            "Per API and minute: requests and the p50, p95 and p99 of each layer's time (approximate percentiles).",
            "SELECT date_trunc('minute', time) AS time, api_id, count(*) AS requests, \
             approx_percentile_cont(total_ms, 0.5) AS total_p50, \
             approx_percentile_cont(total_ms, 0.95) AS total_p95, \
             approx_percentile_cont(total_ms, 0.99) AS total_p99, \
             approx_percentile_cont(gateway_ms, 0.5) AS gateway_p50, \
             approx_percentile_cont(gateway_ms, 0.95) AS gateway_p95, \
             approx_percentile_cont(gateway_ms, 0.99) AS gateway_p99, \
             approx_percentile_cont(network_ms, 0.5) AS network_p50, \
             approx_percentile_cont(network_ms, 0.95) AS network_p95, \
             approx_percentile_cont(network_ms, 0.99) AS network_p99, \
             approx_percentile_cont(integration_ms, 0.5) AS integration_p50, \
             approx_percentile_cont(integration_ms, 0.95) AS integration_p95, \
             approx_percentile_cont(integration_ms, 0.99) AS integration_p99, \
             approx_percentile_cont(backend_ms, 0.5) AS backend_p50, \
             approx_percentile_cont(backend_ms, 0.95) AS backend_p95, \
             approx_percentile_cont(backend_ms, 0.99) AS backend_p99 \
             FROM requests GROUP BY 1, 2"
                .to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column constant of this module names a column of `requests` or
    /// `request_events`, so a typo fails here instead of writing NULL.
    #[test]
    fn column_constants_name_columns() {
        let (r, e) = (schema(), events_schema());
        for c in [
            APIM_CORRELATION_ID,
            BACKEND_MS,
            BYPASSED_GATEWAY,
            DETAIL,
            ERROR_REASON,
            GATEWAY_MS,
            HAS_FLOW,
            HAS_GATEWAY,
            HAS_SPANS,
            INTEGRATION_MS,
            LAYER,
            LAYERS_DISAGREE,
            MULE_CORRELATION_ID,
            MATCHED_BY,
            PROBE_ID,
            RULE,
            EXTERNAL,
            NETWORK_MS,
            OUTCOME,
            RECORDS,
            REJECTED_BY,
            REQUEST_ID,
            REQUEST_TIME,
            SERVICE,
            SETTLED,
            TOTAL_MS,
        ] {
            assert!(
                r.field_with_name(c).is_ok()
                    || e.field_with_name(c).is_ok()
                    || probes_schema().field_with_name(c).is_ok(),
                "{c} is not a column"
            );
        }
    }
}
