//! Collector settings: receiver limits and storage behaviour.
//!
//! Takes values from the `seam` binary's configuration loader; gives validated structs with
//! documented defaults. Durations are written like `"5s"` or `"500ms"` in TOML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits applied by every receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes, as sent (compressed). Default 16 MiB.
    pub max_request_bytes: usize,
    /// Largest body after gzip decompression, in bytes. Default 64 MiB. A body that would
    /// inflate past it is refused without being inflated further.
    pub max_decompressed_bytes: usize,
    /// Most records (spans or log records) in one request. Default 100000. A larger request
    /// is refused whole (HTTP 413, gRPC INVALID_ARGUMENT): split it.
    pub max_records_per_request: usize,
    /// Attributes kept per record (resource, span, event, link, log record). Default 128.
    /// The rest are dropped and their number is stored under `seam.dropped_attributes`.
    pub max_attributes: usize,
    /// Bytes kept of one attribute value or log body. Default 16384. Longer text is cut and
    /// ends with `…[truncated by seam]`.
    pub max_attribute_value_bytes: usize,
    /// Earliest accepted event time (RFC 3339). Default `1970-01-01T00:00:00Z`. A record
    /// timed earlier is refused with the reason (OTLP partial success; a `rejects` row for
    /// gateway and flow logs) and its neighbours are kept.
    #[serde(with = "humantime_serde")]
    pub min_event_time: std::time::SystemTime,
    /// How far past the current time an event time may lie. Default 1d. Later records are
    /// refused like early ones.
    #[serde(with = "humantime_serde")]
    pub max_event_time_ahead: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_records_per_request: 100_000,
            max_attributes: 128,
            max_attribute_value_bytes: 16 * 1024,
            min_event_time: std::time::UNIX_EPOCH,
            max_event_time_ahead: Duration::from_secs(86_400),
        }
    }
}

impl LimitsConfig {
    /// The attribute limits the normalise stage applies.
    pub fn attributes(&self) -> crate::normalise::attributes::AttrLimits {
        crate::normalise::attributes::AttrLimits {
            max_attributes: self.max_attributes,
            max_value_bytes: self.max_attribute_value_bytes,
        }
    }

    /// The accepted event-time window.
    pub fn window(&self) -> crate::normalise::time::TimeWindow {
        let min_ns = match self.min_event_time.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
        };
        crate::normalise::time::TimeWindow {
            min_ns,
            max_ahead_ns: i64::try_from(self.max_event_time_ahead.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

pub use seam_store::config::{RetentionConfig, StorageConfig};

impl LimitsConfig {
    /// Checks ranges, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_request_bytes < 1024 {
            return Err("limits.max_request_bytes must be at least 1024".into());
        }
        if self.max_records_per_request == 0 {
            return Err("limits.max_records_per_request must be at least 1".into());
        }
        if self.max_attribute_value_bytes < 64 {
            return Err("limits.max_attribute_value_bytes must be at least 64".into());
        }
        if self.max_decompressed_bytes < self.max_request_bytes {
            return Err(
                "limits.max_decompressed_bytes must be at least limits.max_request_bytes".into(),
            );
        }
        Ok(())
    }
}
