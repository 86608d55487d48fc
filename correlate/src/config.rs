//! The `[correlation]` section of seam's configuration.
//!
//! Takes the section as written (TOML through serde, durations in humantime form such as
//! `"15m"`); gives [`CorrelationConfig`], its checked values ([`CorrelationConfig::validate`])
//! and the [`Rules`] the linking and building steps apply. Every key has a default, and an
//! unknown key is refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Rules;

/// `[correlation]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// A request is settled (final) once its last record arrived this long ago. Default 15
    /// minutes: APIM diagnostic logs lag minutes behind Mule logs.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Records linked by an id must lie at most this far apart in event time, so an id
    /// reused later does not merge two requests. Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub max_link_distance: Duration,
    /// Addresses the gateway calls backends from (APIM's outbound IPs): a caller at one of
    /// them is never reported as a bypass.
    pub gateway_egress: Vec<String>,
    /// How long after an arrival a minute is recomputed (arrivals meanwhile are batched).
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// At shutdown, how long to keep recomputing minutes still waiting; the rest are
    /// written to `correlation_pending.json` in the data directory and recomputed after the
    /// next start. Default 20 s (a stop stays well inside systemd's 90 s).
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(15 * 60),
            max_link_distance: Duration::from_secs(5 * 60),
            gateway_egress: Vec::new(),
            delay: Duration::from_secs(2),
            shutdown_drain: Duration::from_secs(20),
        }
    }
}

impl CorrelationConfig {
    /// The correlator's rules.
    pub fn rules(&self) -> Rules {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Rules {
            max_link_distance_ns: ns(self.max_link_distance),
            horizon_ns: ns(self.horizon),
            gateway_egress: self.gateway_egress.clone(),
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    /// A value out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_link_distance < Duration::from_secs(1) {
            return Err("correlation.max_link_distance must be at least 1s".into());
        }
        if self.delay > Duration::from_secs(8) {
            return Err("correlation.delay must be at most 8s (requests show within 10 s)".into());
        }
        Ok(())
    }
}
