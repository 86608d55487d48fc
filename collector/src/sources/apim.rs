//! Azure API Management gateway logs: [`decode`] reads every shape (Event Hubs records,
//! Log Analytics exports, Storage archives, custom events; Azure portal CSV exports through
//! [`csv`]) into records; [`normalise`] turns them into `gateway_log_copies`,
//! `gateway_events` and `rejects` rows. They arrive through the log ingest endpoint
//! (`crate::sources::logs::receive_http`).

pub mod csv;
pub mod decode;
pub mod normalise;
