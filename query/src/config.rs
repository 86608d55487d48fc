//! Query settings: limits applied to every statement, and the threads statements run on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of the query service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Longest a statement may run before it is cancelled. Default 60s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most memory the statements running at once may use together for sorts, joins and
    /// aggregations, in bytes (one pool for HTTP, PostgreSQL and the correlator). Default
    /// 1 GiB. Past it the statement asking for more fails; nothing spills to disk.
    pub memory_limit: usize,
    /// Largest SQL request body accepted by the HTTP API, in bytes. Default 1 MiB.
    pub max_sql_bytes: usize,
    /// Most bytes one statement's result may have as sent (HTTP: the encoded body; PostgreSQL:
    /// the data rows). Default 1 GiB. Past it the statement is cancelled.
    pub max_result_bytes: usize,
    /// Most bytes one call of a function that builds values larger than its input (`repeat`,
    /// `lpad`, `rpad`, `replace`, `regexp_replace`, `concat`, `concat_ws`, `||`,
    /// `array_repeat`, `range`, `generate_series`) may produce for one batch of rows.
    /// Default 256 MiB; at most 2 GiB - 1. Past it the statement fails before the value is
    /// built.
    pub max_function_output_bytes: usize,
    /// Worker threads of the query runtime, where statements run apart from ingest.
    /// Default 0: half the CPUs, at least one (ingest keeps the rest).
    pub threads: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            memory_limit: 1 << 30,
            max_sql_bytes: 1 << 20,
            max_result_bytes: 1 << 30,
            max_function_output_bytes: 256 << 20,
            threads: 0,
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
        if self.max_result_bytes < 1024 {
            return Err("query.max_result_bytes must be at least 1 KiB".into());
        }
        if self.max_function_output_bytes < (1 << 20)
            || self.max_function_output_bytes > i32::MAX as usize
        {
            return Err(
                "query.max_function_output_bytes must be between 1 MiB and 2 GiB - 1".into(),
            );
        }
        if self.threads > 1024 {
            return Err("query.threads must be at most 1024".into());
        }
        Ok(())
    }
}
