//! The `[correlation]` section of seam's configuration.
//!
//! Takes the section as written (TOML through serde, durations in humantime form such as
//! `"15m"`); gives [`CorrelationConfig`], its checked values ([`CorrelationConfig::validate`])
//! and the [`Rules`] the linking and building steps apply. Every key has a default, and an
//! unknown key is refused.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Rules;
use crate::probe::normal_path;

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
    /// Paths of health and readiness probes (`*` matches any run of characters; case, a
    /// trailing slash and the query are ignored). A linked run whose inbound record (gateway
    /// record, listener line, SERVER span) has such a path is a probe: in `probes`, never in
    /// `requests`, never a bypass.
    pub probe_paths: Vec<String>,
    /// User agents of probes: case-insensitive prefixes of a SERVER span's or a JSON Logger
    /// record's user agent. A user agent is the caller's to choose, so it makes a probe only
    /// of a run with no gateway record, no token and at most one inbound path.
    pub probe_user_agents: Vec<String>,
    /// The cluster's own networks (CIDR): a probe from an address outside them (and outside
    /// `gateway_egress`) without a gateway record is in `audit_external_probes`.
    pub internal_networks: Vec<String>,
    /// Most records of its own minute one recomputation step reads: a minute holding more
    /// is recomputed in time slices of at most about this many records each (each slice
    /// also reads the records linked to its own), and its rows written a slice at a time,
    /// so a step's memory stays bounded (about 1 KB per record read) whatever a minute
    /// holds. Default 200,000.
    pub max_step_records: u64,
}

/// Default [`CorrelationConfig::probe_paths`]: Kubernetes, Spring, MuleSoft and APIM habits.
pub const DEFAULT_PROBE_PATHS: &[&str] = &[
    "/ping",
    "/health",
    "/health/*",
    "/healthz",
    "/healthcheck",
    "/health-check",
    "/ready",
    "/readyz",
    "/readiness",
    "/live",
    "/livez",
    "/liveness",
    "/heartbeat",
    "/status",
    "/api/ping",
    "/api/health",
    "/api/health/*",
    "/api/healthz",
    "/api/status",
    "/api/ready",
    "/api/live",
    "/api/heartbeat",
    "/actuator/health",
    "/actuator/health/*",
    "/status-0123456789abcdef",
    "/internal-status-0123456789abcdef",
];

/// Default [`CorrelationConfig::probe_user_agents`] (prefixes): Kubernetes kubelet, Azure App
/// Service AlwaysOn, Azure Load Balancer, Azure Traffic Manager, Azure Application Gateway,
/// AWS ELB, Google load balancers, CloudHub.
pub const DEFAULT_PROBE_USER_AGENTS: &[&str] = &[
    "kube-probe/",
    "AlwaysOn",
    "Load Balancer Agent",
    "Azure Traffic Manager Endpoint Monitor",
    "ApplicationGatewayHealthProbe",
    "ELB-HealthChecker/",
    "GoogleHC/",
    "CloudHub-HealthCheck",
];

/// Default [`CorrelationConfig::internal_networks`]: private, loopback, link-local and
/// shared address space (RFC 1918, RFC 6598, RFC 4193).
pub const DEFAULT_INTERNAL_NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(15 * 60),
            max_link_distance: Duration::from_secs(5 * 60),
            gateway_egress: Vec::new(),
            delay: Duration::from_secs(2),
            shutdown_drain: Duration::from_secs(20),
            probe_paths: strings(DEFAULT_PROBE_PATHS),
            probe_user_agents: strings(DEFAULT_PROBE_USER_AGENTS),
            internal_networks: strings(DEFAULT_INTERNAL_NETWORKS),
            max_step_records: 200_000,
        }
    }
}

impl CorrelationConfig {
    /// The correlator's rules (after [`CorrelationConfig::validate`]: a network that does
    /// not parse is left out).
    pub fn rules(&self) -> Rules {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Rules {
            max_link_distance_ns: ns(self.max_link_distance),
            horizon_ns: ns(self.horizon),
            gateway_egress: self.gateway_egress.clone(),
            probe_paths: self.probe_paths.iter().map(|p| normal_path(p)).collect(),
            probe_user_agents: self
                .probe_user_agents
                .iter()
                .map(|u| u.trim().to_lowercase())
                .collect(),
            internal_networks: self
                .internal_networks
                .iter()
                .filter_map(|n| n.trim().parse().ok())
                .collect(),
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
        for n in &self.internal_networks {
            n.trim().parse::<ipnet::IpNet>().map_err(|e| {
                format!(
                    "correlation.internal_networks: {n:?} is not a network such as 10.0.0.0/8: {e}"
                )
            })?;
        }
        for p in &self.probe_paths {
            if !p.trim().starts_with('/') && !p.trim().starts_with('*') {
                return Err(format!(
                    "correlation.probe_paths: {p:?} must start with / (or *), like /health"
                ));
            }
        }
        if self.probe_user_agents.iter().any(|u| u.trim().is_empty()) {
            return Err(
                "correlation.probe_user_agents: an empty entry would match every user agent".into(),
            );
        }
        if self.max_step_records < 1_000 {
            return Err("correlation.max_step_records must be at least 1000".into());
        }
        if self.delay > Duration::from_secs(8) {
            return Err("correlation.delay must be at most 8s (requests show within 10 s)".into());
        }
        Ok(())
    }
}
