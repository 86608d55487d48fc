//! Query settings: limits applied to every statement.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of the query service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Longest a statement may run before it is cancelled. Default 60s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most memory one statement may use for sorts, joins and aggregations, in bytes.
    /// Default 1 GiB. Past it the statement fails; nothing spills to disk.
    pub memory_limit: usize,
    /// Largest SQL request body accepted by the HTTP API, in bytes. Default 1 MiB.
    pub max_sql_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            memory_limit: 1 << 30,
            max_sql_bytes: 1 << 20,
        }
    }
}

impl QueryConfig {
    /// Checks ranges, naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("query.timeout must be more than 0s".into());
        }
        if self.memory_limit < (16 << 20) {
            return Err("query.memory_limit must be at least 16 MiB".into());
        }
        Ok(())
    }
}
