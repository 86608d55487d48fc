//! The input records of the correlator: one type per raw table row ([`Gateway`],
//! [`GatewayEvent`], [`Flow`], [`Span`], with their [`TokenColumns`]), the window of them
//! that is linked at once ([`Input`]), and the settings of the linking ([`Rules`]).
//!
//! Pure data: the read side fills these, the link and build stages only read them. The few
//! small predicates on them (`Span::is_mule`, `Span::duration_ms`) are crate-internal; the
//! token columns are the one stored form of `seam_schemas::token` (`TokenColumns::is_some`).

use seam_schemas::token::TokenColumns;

/// A `gateway_logs` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gateway {
    /// Event time (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest: i64,
    /// record_key.
    pub key: String,
    /// APIM correlation id.
    pub correlation_id: Option<String>,
    /// Trace id from a logged traceparent.
    pub trace_id: Option<String>,
    /// Forwarded X-Correlation-ID.
    pub forwarded_correlation_id: Option<String>,
    /// API id.
    pub api_id: Option<String>,
    /// Operation id.
    pub operation_id: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// URL path.
    pub url_path: Option<String>,
    /// Caller.
    pub client_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// APIM subscription.
    pub subscription_id: Option<String>,
    /// Status to the client.
    pub status_code: Option<i32>,
    /// Status from the backend.
    pub backend_status_code: Option<i32>,
    /// APIM TotalTime.
    pub total_ms: Option<f64>,
    /// APIM BackendTime.
    pub backend_ms: Option<f64>,
    /// Cache.
    pub cache: Option<String>,
    /// lastError source.
    pub last_error_source: Option<String>,
    /// lastError reason.
    pub last_error_reason: Option<String>,
    /// lastError message.
    pub last_error_message: Option<String>,
    /// APIM service.
    pub service: Option<String>,
    /// Gateway (managed or a self-hosted gateway's name).
    pub gateway: Option<String>,
    /// Token columns.
    pub token: TokenColumns,
}

/// A `gateway_events` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayEvent {
    /// Event time (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest: i64,
    /// record_key.
    pub key: String,
    /// APIM correlation id (RequestId).
    pub correlation_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Status.
    pub status_code: Option<i32>,
    /// Service.
    pub service: Option<String>,
    /// Policy section.
    pub section: Option<String>,
    /// Error reason.
    pub last_error_reason: Option<String>,
    /// Elapsed.
    pub elapsed_ms: Option<f64>,
    /// Token columns.
    pub token: TokenColumns,
}

/// A `flow_logs` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flow {
    /// Event time (ns).
    pub time: i64,
    /// Arrival (ns).
    pub ingest: i64,
    /// record_key.
    pub key: String,
    /// Mule correlation id.
    pub correlation_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Mule app.
    pub mule_app: Option<String>,
    /// Flow.
    pub flow: Option<String>,
    /// JSON Logger trace point.
    pub trace_point: Option<String>,
    /// Level.
    pub level: Option<String>,
    /// JSON Logger elapsed.
    pub elapsed_ms: Option<f64>,
    /// JSON Logger scopeElapsed.
    pub scope_elapsed_ms: Option<f64>,
    /// Message.
    pub message: Option<String>,
    /// Mule error type.
    pub error_type: Option<String>,
    /// Caller address.
    pub remote_address: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// Request path.
    pub request_path: Option<String>,
    /// Status the app logged.
    pub status_code: Option<i32>,
    /// JSON Logger content (JSON text).
    pub content: Option<String>,
    /// Request traffic.
    pub is_request_traffic: bool,
    /// Token columns.
    pub token: TokenColumns,
}

/// A `spans` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// Start (ns).
    pub time: i64,
    /// End (ns).
    pub end: Option<i64>,
    /// Arrival (ns).
    pub ingest: i64,
    /// Trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Parent span id.
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// Kind (server, client, … in any case).
    pub kind: String,
    /// Status (unset, ok, error in any case).
    pub span_status: String,
    /// service.name.
    pub service: Option<String>,
    /// Scope name.
    pub scope: Option<String>,
    /// HTTP status.
    pub status_code: Option<i32>,
    /// Correlation id attribute.
    pub correlation_id: Option<String>,
    /// Client address.
    pub client_ip: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// URL path.
    pub url_path: Option<String>,
    /// HTTP route (the listener's path template).
    pub http_route: Option<String>,
    /// The caller's user agent.
    pub user_agent: Option<String>,
    /// Status message.
    pub status_message: Option<String>,
    /// Token columns.
    pub token: TokenColumns,
}

impl Span {
    pub(crate) fn duration_ms(&self) -> Option<f64> {
        self.end.map(|e| e.saturating_sub(self.time) as f64 / 1e6)
    }

    pub(crate) fn is_mule(&self) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.to_ascii_lowercase().contains("mule"))
    }
}

/// The records of a window.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// gateway_logs rows.
    pub gateway: Vec<Gateway>,
    /// gateway_events rows.
    pub events: Vec<GatewayEvent>,
    /// flow_logs rows.
    pub flows: Vec<Flow>,
    /// spans rows.
    pub spans: Vec<Span>,
}

/// Correlation settings.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Records linked by an id must lie at most this far apart in event time.
    pub max_link_distance_ns: i64,
    /// A request is settled once its last record arrived this long ago.
    pub horizon_ns: i64,
    /// Addresses the gateway calls the backends from: callers at these addresses are not a
    /// bypass even without a gateway record.
    pub gateway_egress: Vec<String>,
    /// Probe path patterns, normalised (lower case, no trailing slash; `*` any run).
    pub probe_paths: Vec<String>,
    /// Probe user agents (lower case prefixes).
    pub probe_user_agents: Vec<String>,
    /// The cluster's own networks.
    pub internal_networks: Vec<ipnet::IpNet>,
}

impl Default for Rules {
    fn default() -> Self {
        crate::CorrelationConfig::default().rules()
    }
}
