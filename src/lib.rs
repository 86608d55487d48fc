//! The `seam` binary's library: configuration loading and the all-in-one server.
//!
//! Takes a [`config::SeamConfig`]; gives [`server::Server`], which binds the OTLP gRPC,
//! ingest HTTP and API listeners, runs the collector and the query service in one process
//! over one data directory, and shuts down in order (stop accepting, flush what was
//! acknowledged, exit). [`ingest`] is the client behind `seam ingest`; [`client`] gives
//! the commands their key and CA from the environment. [`sources`] wires the pulled sources
//! (`[[sources]]`) to the query service and the API. `main.rs` adds the command line (`serve`,
//! `ingest`, `query`, `correlate`, `explain`, `export`, `sources`, `auth`).

pub mod client;
pub mod config;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod records;
pub mod server;
pub mod sources;
