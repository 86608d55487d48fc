//! OpenTelemetry: traces and logs over OTLP/gRPC ([`receive_grpc`]) and OTLP/HTTP
//! ([`receive_http`]), protobuf or JSON ([`decode_json`] for OTLP/JSON); normalised into
//! `spans` and `logs` by `crate::normalise::spans` / `crate::normalise::logs`.

pub mod decode_json;
pub mod receive_grpc;
pub mod receive_http;
