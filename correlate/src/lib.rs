//! seam's correlator: links the records of one end-to-end request across the gateway, the
//! integration platform and the traces, derives what the request was, and keeps the derived
//! tables `requests` and `request_events` up to date.
//!
//! The rules, in the order they run: `record` (the input records and the settings), `link`
//! (linking a window's records into components: [`correlate`], [`correlate_all`]), `request`
//! (one component to one [`Request`] or [`Probe`]), which uses `layers` (which layers the
//! request went through, its ids and caller), `probe` (request, probe or background work,
//! from evidence), `latency` (the time of each layer) and `outcome` (status, who rejected it
//! and why); `explain` lays out why a component became what it did. The loop around them:
//! `config`, `read`, `schedule`, `write`, `error`.
pub mod config;
pub mod error;
pub mod explain;
pub mod read;
pub mod schedule;
pub mod write;

mod latency;
mod layers;
mod link;
mod outcome;
mod probe;
mod record;
mod request;

pub use config::CorrelationConfig;
pub use error::{CorrelateError, ReadError};
pub use layers::ip_of;
pub use link::{Correlated, TWIN_NS, correlate, correlate_all, correlate_all_unless};
pub use probe::normal_path;
pub use read::{Param, RecordSource};
pub use record::{Flow, Gateway, GatewayEvent, Input, Rules, Span};
pub use request::{Event, Probe, Request};
pub use schedule::{Correlator, PENDING_FILE};
pub use seam_schemas::token::TokenColumns;
