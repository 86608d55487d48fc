//! Configuration: defaults, then the TOML file (`--config`), then `SEAM_…` environment
//! variables, then command-line flags. Later sources win.
//!
//! Takes the file path and the flag/environment values `main.rs` parsed (clap reads the
//! `SEAM_…` variables of the flags it defines, so a flag beats its variable); gives one
//! validated [`SeamConfig`]. `seam serve --print-config` prints the effective result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use seam_collector::config::{LimitsConfig, StorageConfig};
use seam_collector::wal::WalConfig;
use seam_query::QueryConfig;
use serde::{Deserialize, Serialize};

/// Default OTLP/gRPC address (the OTLP standard port, loopback only).
pub const DEFAULT_OTLP_GRPC: &str = "127.0.0.1:4317";
/// Default ingest HTTP address (the OTLP/HTTP standard port, loopback only).
pub const DEFAULT_INGEST_HTTP: &str = "127.0.0.1:4318";
/// Default API address: clear of Grafana (3000), PostgreSQL (5432), Prometheus (9090) and
/// the OTLP ports.
pub const DEFAULT_API: &str = "127.0.0.1:7317";

/// The listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// OTLP/gRPC (`TraceService`, `LogsService`). Flag `--otlp-grpc-addr`, variable
    /// `SEAM_OTLP_GRPC_ADDR`. Default 127.0.0.1:4317.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP (`/v1/traces`, `/v1/logs`) and, later, log ingest. Flag
    /// `--ingest-http-addr`, variable `SEAM_INGEST_HTTP_ADDR`. Default 127.0.0.1:4318.
    pub ingest_http_addr: SocketAddr,
    /// SQL over HTTP, `/health`, `/metrics`. Flag `--api-addr`, variable `SEAM_API_ADDR`.
    /// Default 127.0.0.1:7317.
    pub api_addr: SocketAddr,
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            otlp_grpc_addr: addr(DEFAULT_OTLP_GRPC),
            ingest_http_addr: addr(DEFAULT_INGEST_HTTP),
            api_addr: addr(DEFAULT_API),
        }
    }
}

/// Everything `seam serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeamConfig {
    /// Where tables are stored. Flag `--data-dir`, variable `SEAM_DATA_DIR`. Default
    /// `./seam-data`.
    pub data_dir: PathBuf,
    /// Listener addresses.
    pub listen: ListenConfig,
    /// Receiver limits.
    pub limits: LimitsConfig,
    /// Write-ahead log.
    pub wal: WalConfig,
    /// Flushing and compaction.
    pub storage: StorageConfig,
    /// Query limits.
    pub query: QueryConfig,
}

impl Default for SeamConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./seam-data"),
            listen: ListenConfig::default(),
            limits: LimitsConfig::default(),
            wal: WalConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

/// Values that override the file (from flags or their environment variables).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir` / `SEAM_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--otlp-grpc-addr` / `SEAM_OTLP_GRPC_ADDR`.
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// `--ingest-http-addr` / `SEAM_INGEST_HTTP_ADDR`.
    pub ingest_http_addr: Option<SocketAddr>,
    /// `--api-addr` / `SEAM_API_ADDR`.
    pub api_addr: Option<SocketAddr>,
}

/// Configuration problems, each naming the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for seam.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl SeamConfig {
    /// Loads defaults, then `file` (when given), then `overrides`, and validates.
    ///
    /// # Errors
    /// An unreadable or invalid file, or a value out of range.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message,
                })?
            }
            None => Self::default(),
        };
        if let Some(d) = overrides.data_dir {
            cfg.data_dir = d;
        }
        if let Some(a) = overrides.otlp_grpc_addr {
            cfg.listen.otlp_grpc_addr = a;
        }
        if let Some(a) = overrides.ingest_http_addr {
            cfg.listen.ingest_http_addr = a;
        }
        if let Some(a) = overrides.api_addr {
            cfg.listen.api_addr = a;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// The parser's message, with line and column.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every section.
    ///
    /// # Errors
    /// The first value out of range, by field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.storage.validate().map_err(ConfigError::Invalid)?;
        self.wal.validate().map_err(ConfigError::Invalid)?;
        self.query.validate().map_err(ConfigError::Invalid)?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("data_dir must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_to_the_defaults_it_documents() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/seam.example.toml"))
                .unwrap();
        let cfg = SeamConfig::from_toml(&text).unwrap();
        assert_eq!(cfg, SeamConfig::default());
        let round = SeamConfig::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(round, cfg);
    }

    #[test]
    fn overrides_win_and_errors_name_the_field() {
        let cfg =
            SeamConfig::from_toml("data_dir = \"/x\"\n[listen]\napi_addr = \"127.0.0.1:1\"\n")
                .unwrap();
        assert_eq!(cfg.listen.api_addr.port(), 1);
        let err = SeamConfig::from_toml("[storage]\nflush_rowz = 1\n").unwrap_err();
        assert!(err.contains("flush_rowz"), "{err}");
        let mut bad = SeamConfig::default();
        bad.storage.zstd_level = 99;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.zstd_level")
        );
    }
}
