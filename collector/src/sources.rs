//! One folder per source of evidence, each holding what is particular to it: how it is
//! received, decoded and normalised into rows of seam's tables. What every source shares
//! (edge limits, the streaming JSON reader, attribute flattening, redaction, token identity,
//! event-time parsing) stays in `receive`, `decode` and `normalise`; the ingest core
//! (`Collector`) takes the rows and makes them one write-ahead log entry.
//!
//! - [`otlp`]: OpenTelemetry traces and logs over gRPC and HTTP (protobuf, JSON).
//! - [`apim`]: Azure API Management gateway logs (Event Hubs, Log Analytics, Storage
//!   archives, custom events).
//! - [`mule`]: MuleSoft Mule 4 flow logs (JSON Logger, log4j text, OTLP logs from a runtime).
//! - [`logs`]: the way gateway and flow log inputs arrive (the log ingest endpoint, `seam
//!   ingest`): format detection, then [`apim`] or [`mule`], duplicates, one entry per input.
//!
//! - [`pull`]: what pulled sources share (`[[sources]]`): positions stored with the records
//!   they stand for, backpressure, status; [`kafka`] (Event Hubs), [`azure_blob`] (Storage
//!   archives) and [`file`](mod@file) (log files) each read their place.
//!
//! A new gateway or a pulled source gets its own folder here.

pub mod apim;
pub mod azure_blob;
pub mod file;
pub mod kafka;
pub mod logs;
pub mod mule;
pub mod otlp;
pub mod pull;
