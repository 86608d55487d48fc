//! The `seam` binary's library: configuration loading and the all-in-one server.
//!
//! Takes a [`config::SeamConfig`]; gives [`server::Server`], which binds the OTLP gRPC,
//! ingest HTTP and API listeners, runs the collector and the query service in one process
//! over one data directory, and shuts down in order (stop accepting, flush what was
//! acknowledged, exit). `main.rs` adds the command line (`serve`, `query`).

pub mod config;
pub mod server;
