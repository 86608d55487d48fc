//! seam's integration tests: one binary, one module per topic. Every test starts real
//! servers on 127.0.0.1 port 0 (in process, or the real `seam` binary) and talks to them with
//! real clients: the `opentelemetry-otlp` exporters, HTTP, `seam query`, and pyarrow.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests fail loudly, like the tests"
)]

mod access;
mod auth;
mod binary;
mod cluster;
mod correlation;
mod crash;
mod dashboards;
mod durability;
mod emulators;
mod explain;
mod export;
mod hardening;
mod lake;
mod limits;
mod loadgen;
mod mappings;
mod object_storage;
mod otlp_grpc;
mod otlp_http;
mod pgwire;
mod query_hardening;
mod querybench;
mod slt;
mod sources_blob;
mod sources_file;
mod sources_kafka;
mod sql_api;
mod support;
mod tokens;
