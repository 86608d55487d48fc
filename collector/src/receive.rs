//! Stage 1, receive: the network edge shared by every source: the size and encoding limits
//! of [`limits`], and the log ingest endpoint (`crate::sources::logs::receive_http`) through which gateway and flow
//! log files arrive (the OTLP receivers are in `crate::sources::otlp`).
//!
//! Takes requests from clients; gives decoded requests to [`crate::Collector`] and answers
//! with the OTLP status the outcome calls for (success with partial success, a permanent
//! error naming what is wrong, or a retryable overload status).

pub mod limits;
