//! Stage 1, receive: the network edge. OTLP over gRPC ([`otlp_grpc`]) and over HTTP
//! ([`otlp_http`]), gateway and flow logs over HTTP ([`access_http`]), with the size limits
//! of [`limits`].
//!
//! Takes requests from clients; gives decoded requests to [`crate::Collector`] and answers
//! with the OTLP status the outcome calls for (success with partial success, a permanent
//! error naming what is wrong, or a retryable overload status).

pub mod access_http;
pub mod limits;
pub mod otlp_grpc;
pub mod otlp_http;
