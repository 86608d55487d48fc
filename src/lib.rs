//! The `seam` binary's library: configuration loading and the all-in-one server.
//!
//! Takes a [`config::SeamConfig`]; gives [`server::Server`], which binds the OTLP gRPC,
//! ingest HTTP and API listeners, runs the collector and the query service in one process
//! over one data directory, and shuts down in order (stop accepting, flush what was
//! acknowledged, exit). [`ingest`] is the client behind `seam ingest`. `main.rs` adds the command line (`serve`,
//! `ingest`, `query`).

pub mod config;
pub mod correlator;
pub mod ingest;
pub mod server;
