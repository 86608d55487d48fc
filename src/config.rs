//! Configuration: defaults, then the TOML file (`--config`), then `SEAM_…` environment
//! variables, then command-line flags. Later sources win.
//!
//! Takes the file path and the flag/environment values `main.rs` parsed (clap reads the
//! `SEAM_…` variables of the flags it defines, so a flag beats its variable); gives one
//! validated [`SeamConfig`]. `seam serve --print-config` prints the effective result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use seam_auth::{KeyConfig, TlsConfig};
use seam_collector::config::{LimitsConfig, StorageConfig};
use seam_query::QueryConfig;
use seam_store::wal::WalConfig;
use serde::{Deserialize, Serialize};

/// Default OTLP/gRPC address (the OTLP standard port, loopback only).
pub const DEFAULT_OTLP_GRPC: &str = "127.0.0.1:4317";
/// Default ingest HTTP address (the OTLP/HTTP standard port, loopback only).
pub const DEFAULT_INGEST_HTTP: &str = "127.0.0.1:4318";
/// Default API address: clear of Grafana (3000), PostgreSQL (5432), Prometheus (9090) and
/// the OTLP ports.
pub const DEFAULT_API: &str = "127.0.0.1:7317";
/// Default PostgreSQL wire address: clear of a local PostgreSQL on 5432.
pub const DEFAULT_PG: &str = "127.0.0.1:7432";

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
    /// PostgreSQL wire protocol (psql, Grafana, BI tools), database `seam`. Flag
    /// `--pg-addr`, variable `SEAM_PG_ADDR`. Default 127.0.0.1:7432. A non-loopback address
    /// needs keys (`[auth]`) or `--insecure-no-auth`.
    pub pg_addr: SocketAddr,
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
            pg_addr: addr(DEFAULT_PG),
        }
    }
}

/// `[auth]`: the keys every listener accepts, and the insecure opt-out.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys as `[[auth.keys]]` entries (`name`, `roles`, `sha256`, `pg_scram`): print one
    /// with `seam auth new-key`. Not re-read while seam runs; prefer `keys_file`.
    pub keys: Vec<KeyConfig>,
    /// A TOML file of `[[keys]]` entries, re-read on SIGHUP and when it changes. Flag
    /// `--keys-file`, variable `SEAM_KEYS_FILE`.
    pub keys_file: Option<PathBuf>,
    /// Serve non-loopback addresses without any key: anyone who can reach seam may send
    /// data and read everything. Flag `--insecure-no-auth`. Default false.
    pub insecure_no_auth: bool,
}

impl AuthConfig {
    /// Whether any credential is configured.
    pub fn configured(&self) -> bool {
        !self.keys.is_empty() || self.keys_file.is_some()
    }
}

/// Gateway and flow log ingest (`/ingest/apim`, `/ingest/mule`, `seam ingest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// How long the duplicate index remembers a stored record (by when it was stored): a
    /// re-import within this time stores nothing new. Default 30 days.
    #[serde(with = "humantime_serde")]
    pub dedupe_max_age: std::time::Duration,
    /// Regular expression over Mule flow names whose events are not request traffic
    /// (schedulers, pollers, refresh and health flows).
    pub non_request_flows: String,
    /// Regular expression over logged request paths that are health checks.
    pub health_paths: String,
}

impl Default for AccessConfig {
    fn default() -> Self {
        use seam_collector::sources::mule::normalise::{
            DEFAULT_HEALTH_PATHS, DEFAULT_NON_REQUEST_FLOWS,
        };
        Self {
            dedupe_max_age: std::time::Duration::from_secs(30 * 86_400),
            non_request_flows: DEFAULT_NON_REQUEST_FLOWS.into(),
            health_paths: DEFAULT_HEALTH_PATHS.into(),
        }
    }
}

/// Token identity and extra redaction rules.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Fingerprint keys as `kid=secret` entries, the current key first (the others still
    /// match fingerprints computed with older keys). Prefer `fingerprint_keys_file` or the
    /// `SEAM_FINGERPRINT_KEYS` variable (`kid=secret[,kid=secret...]`, which wins) over
    /// secrets in this file. Never given on the command line, never logged.
    pub fingerprint_keys: Vec<String>,
    /// A file holding `kid=secret` entries (comma- or newline-separated), e.g. a secret
    /// mounted from Azure Key Vault.
    pub fingerprint_keys_file: Option<PathBuf>,
    /// Extra regular expressions whose matches are replaced by `<redacted>` in every stored
    /// text value.
    pub redact_patterns: Vec<String>,
    /// Extra attribute, header or parameter names whose values are secret.
    pub secret_names: Vec<String>,
}

impl std::fmt::Debug for TokensConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokensConfig")
            .field("fingerprint_keys", &redacted_keys(&self.fingerprint_keys))
            .field("fingerprint_keys_file", &self.fingerprint_keys_file)
            .field("redact_patterns", &self.redact_patterns)
            .field("secret_names", &self.secret_names)
            .finish()
    }
}

fn redacted_keys(keys: &[String]) -> Vec<String> {
    keys.iter()
        .flat_map(|k| k.split([',', '\n']))
        .filter_map(|k| {
            k.split_once('=')
                .map(|(kid, _)| format!("{}=<redacted>", kid.trim()))
        })
        .collect()
}

impl TokensConfig {
    /// Builds the normalise stage's token settings: keys from `SEAM_FINGERPRINT_KEYS` (when
    /// `env_keys` is set), else from the file, else from this section.
    ///
    /// # Errors
    /// An unreadable key file, a malformed key entry (the message names the entry's
    /// position, never the secret), or an invalid pattern.
    pub fn build(&self) -> Result<seam_collector::normalise::token::TokenConfig, ConfigError> {
        use seam_collector::normalise::token::{TokenConfig, parse_keys};
        let text = if let Some(path) = &self.fingerprint_keys_file {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?
        } else {
            self.fingerprint_keys.join(",")
        };
        let keys = parse_keys(&text)
            .map_err(|e| ConfigError::Invalid(format!("tokens.fingerprint_keys: {e}")))?;
        let patterns = self
            .redact_patterns
            .iter()
            .map(|p| {
                regex::Regex::new(p)
                    .map_err(|e| ConfigError::Invalid(format!("tokens.redact_patterns {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenConfig {
            keys: std::sync::Arc::new(keys),
            extra_patterns: std::sync::Arc::new(patterns),
            extra_secret_names: std::sync::Arc::new(self.secret_names.clone()),
            links: Default::default(),
            links_file: None,
        })
    }
}

/// What one `seam serve` process does (`roles`, `--roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Opens the ingest listeners (OTLP/gRPC, ingest HTTP) and pulls the `[[sources]]`.
    Ingest,
    /// Keeps `requests` and `request_events` up to date (on a shared store: the one node
    /// holding the correlation lease at a time).
    Correlate,
    /// Opens the SQL listeners (`POST /api/v1/sql`, the PostgreSQL wire) and request
    /// explanations.
    Query,
}

impl NodeRole {
    /// Every role, the default.
    pub const ALL: [NodeRole; 3] = [NodeRole::Ingest, NodeRole::Correlate, NodeRole::Query];

    /// The role's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Ingest => "ingest",
            NodeRole::Correlate => "correlate",
            NodeRole::Query => "query",
        }
    }

    /// Parses `--roles` (`ingest,query`: names separated by commas).
    ///
    /// # Errors
    /// An unknown or missing name.
    pub fn parse_list(text: &str) -> Result<Vec<NodeRole>, ConfigError> {
        let mut roles = Vec::new();
        for name in text.split(',').map(str::trim) {
            let role = match name {
                "ingest" => NodeRole::Ingest,
                "correlate" => NodeRole::Correlate,
                "query" => NodeRole::Query,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "--roles: {other:?} is not a role (ingest, correlate, query)"
                    )));
                }
            };
            roles.push(role);
        }
        Ok(roles)
    }
}

/// Everything `seam serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeamConfig {
    /// Where tables are stored. Flag `--data-dir`, variable `SEAM_DATA_DIR`. Default
    /// `./seam-data`.
    pub data_dir: PathBuf,
    /// What this process does: `ingest`, `correlate`, `query`. Flag `--roles
    /// ingest,query`, variable `SEAM_ROLES`. Default all three. Without `ingest` no ingest
    /// listener is opened and no source pulled; without `query` no SQL listener (the API
    /// listener still answers `/health`, `/metrics`, `/api/v1/sources` and, with
    /// `correlate`, `POST /api/v1/correlate`).
    pub roles: Vec<NodeRole>,
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
    /// Token identity and extra redaction rules.
    pub tokens: TokensConfig,
    /// Gateway and flow log ingest.
    pub access: AccessConfig,
    /// The correlator (requests, request_events).
    pub correlation: seam_correlate::CorrelationConfig,
    /// Keys and roles for every listener.
    pub auth: AuthConfig,
    /// TLS for every listener.
    pub tls: TlsConfig,
    /// Pulled sources (`[[sources]]`): Kafka / Event Hubs, Azure Storage blobs, log files.
    pub sources: Vec<seam_collector::sources::pull::SourceConfig>,
    /// Mappings (`[mappings.NAME]`): how to read record shapes users define, by name.
    pub mappings: std::collections::BTreeMap<String, seam_collector::mapping::MappingSpec>,
    /// Files of more `[mappings.NAME]` tables, relative to the config file's directory.
    pub mapping_files: Vec<PathBuf>,
}

impl Default for SeamConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./seam-data"),
            roles: NodeRole::ALL.to_vec(),
            listen: ListenConfig::default(),
            limits: LimitsConfig::default(),
            wal: WalConfig::default(),
            storage: StorageConfig::default(),
            query: QueryConfig::default(),
            tokens: TokensConfig::default(),
            access: AccessConfig::default(),
            correlation: seam_correlate::CorrelationConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            sources: Vec::new(),
            mappings: Default::default(),
            mapping_files: Vec::new(),
        }
    }
}

/// Values that override the file (from flags or their environment variables).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir` / `SEAM_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--storage-url` / `SEAM_STORAGE_URL` (`storage.url`).
    pub storage_url: Option<String>,
    /// `--roles` / `SEAM_ROLES` (`roles`).
    pub roles: Option<Vec<NodeRole>>,
    /// `--otlp-grpc-addr` / `SEAM_OTLP_GRPC_ADDR`.
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// `--ingest-http-addr` / `SEAM_INGEST_HTTP_ADDR`.
    pub ingest_http_addr: Option<SocketAddr>,
    /// `--api-addr` / `SEAM_API_ADDR`.
    pub api_addr: Option<SocketAddr>,
    /// `--pg-addr` / `SEAM_PG_ADDR`.
    pub pg_addr: Option<SocketAddr>,
    /// `SEAM_FINGERPRINT_KEYS` (`kid=secret[,kid=secret...]`): replaces the configured keys.
    pub fingerprint_keys: Option<String>,
    /// `--keys-file` / `SEAM_KEYS_FILE`.
    pub keys_file: Option<PathBuf>,
    /// `--insecure-no-auth`.
    pub insecure_no_auth: bool,
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
        let base = file
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for f in cfg.mapping_files.clone() {
            let path = if f.is_absolute() { f } else { base.join(f) };
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let more: seam_collector::mapping::MappingFile =
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            for (name, spec) in more.mappings {
                if cfg.mappings.contains_key(&name) {
                    return Err(ConfigError::Invalid(format!(
                        "mapping {name} is defined twice (in {} and before it)",
                        path.display()
                    )));
                }
                cfg.mappings.insert(name, spec);
            }
        }
        // Merged: the effective configuration (--print-config) holds them once.
        cfg.mapping_files.clear();
        if let Some(d) = overrides.data_dir {
            cfg.data_dir = d;
        }
        if let Some(u) = overrides.storage_url {
            cfg.storage.url = (!u.trim().is_empty()).then_some(u);
        }
        if let Some(r) = overrides.roles {
            cfg.roles = r;
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
        if let Some(a) = overrides.pg_addr {
            cfg.listen.pg_addr = a;
        }
        if let Some(f) = overrides.keys_file {
            cfg.auth.keys_file = Some(f);
        }
        if overrides.insecure_no_auth {
            cfg.auth.insecure_no_auth = true;
        }
        if let Some(k) = overrides.fingerprint_keys {
            cfg.tokens.fingerprint_keys = vec![k];
            cfg.tokens.fingerprint_keys_file = None;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The mappings: the presets shipped with seam and the configured ones (which replace a
    /// preset of the same name).
    ///
    /// # Errors
    /// A mapping that does not check, named with its key.
    pub fn mappings(&self) -> Result<seam_collector::mapping::Mappings, ConfigError> {
        seam_collector::mapping::Mappings::with_user(&self.mappings)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// The parser's message, with line and column.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The effective configuration as TOML, with fingerprint secrets replaced by
    /// `<redacted>`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.tokens.fingerprint_keys = redacted_keys(&self.tokens.fingerprint_keys);
        // A URL given with credentials (which `serve` refuses) is printed without them.
        shown.storage.url = self.storage.url.as_deref().map(seam_store::backend::shown);
        toml::to_string_pretty(&shown).unwrap_or_default()
    }

    /// The listeners bound to a non-loopback address, as `listen.api_addr 0.0.0.0:7317 is`.
    pub fn public_listeners(&self) -> Vec<String> {
        let l = &self.listen;
        let ingest = self.has_role(NodeRole::Ingest);
        let query = self.has_role(NodeRole::Query);
        let all = [
            ("listen.otlp_grpc_addr", l.otlp_grpc_addr, ingest),
            ("listen.ingest_http_addr", l.ingest_http_addr, ingest),
            ("listen.api_addr", l.api_addr, true),
            ("listen.pg_addr", l.pg_addr, query),
        ];
        let public: Vec<String> = all
            .iter()
            .filter(|(_, a, open)| *open && !a.ip().is_loopback())
            .map(|(n, a, _)| (n, a))
            .map(|(n, a)| format!("{n} {a}"))
            .collect();
        match public.len() {
            0 => public,
            1 => vec![format!("{} is", public[0])],
            _ => vec![format!("{} are", public.join(", "))],
        }
    }

    /// Whether this process has `role`.
    pub fn has_role(&self, role: NodeRole) -> bool {
        self.roles.contains(&role)
    }

    /// Checks every section.
    ///
    /// # Errors
    /// The first value out of range, by field path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.roles.is_empty() {
            return Err(ConfigError::Invalid(
                "roles must name at least one of ingest, correlate, query".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.roles {
            if !seen.insert(*r) {
                return Err(ConfigError::Invalid(format!(
                    "roles names {} twice",
                    r.as_str()
                )));
            }
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.storage.validate().map_err(ConfigError::Invalid)?;
        self.wal.validate().map_err(ConfigError::Invalid)?;
        self.query.validate().map_err(ConfigError::Invalid)?;
        self.correlation.validate().map_err(ConfigError::Invalid)?;
        self.tokens.build()?;
        seam_collector::sources::pull::config::validate_all(&self.sources)
            .map_err(ConfigError::Invalid)?;
        let mappings = self.mappings()?;
        for s in &self.sources {
            if let Some(name) = s.mapping() {
                let m = mappings.get(name).map_err(|e| {
                    ConfigError::Invalid(format!("[[sources]] {:?}: mapping: {e}", s.name()))
                })?;
                if m.format == seam_collector::mapping::Format::Csv {
                    return Err(ConfigError::Invalid(format!(
                        "[[sources]] {:?}: mapping {name} reads CSV, which a pulled source \
                         cannot cut into steps yet (each step would lose the header row); \
                         send CSV files with seam ingest --mapping {name}",
                        s.name()
                    )));
                }
            }
        }
        for s in &self.sources {
            // A step is decoded into rows several times its text size; one that could never
            // fit the memory budget would pause the source for ever.
            if s.max_batch_bytes().saturating_mul(4) > self.storage.max_buffer_bytes {
                return Err(ConfigError::Invalid(format!(
                    "[[sources]] {:?}: max_batch_bytes ({}) must be at most a quarter of \
                     storage.max_buffer_bytes ({}): a step too large for the memory budget \
                     could never be stored",
                    s.name(),
                    s.max_batch_bytes(),
                    self.storage.max_buffer_bytes
                )));
            }
        }
        seam_collector::sources::mule::normalise::TrafficRules::new(
            &self.access.non_request_flows,
            &self.access.health_paths,
        )
        .map_err(|e| ConfigError::Invalid(format!("access.{e}")))?;
        seam_auth::Credentials::new(&self.auth.keys, "auth.keys")
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let public = self.public_listeners();
        if !public.is_empty() && !self.auth.configured() && !self.auth.insecure_no_auth {
            return Err(ConfigError::Invalid(format!(
                "{} not a loopback address and no keys are configured ([auth] keys or \
                 keys_file, SEAM_KEYS_FILE): anyone who can reach it could send data and read \
                 everything. Configure keys (seam auth new-key) and TLS, or pass \
                 --insecure-no-auth",
                public.join(", ")
            )));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together".into(),
            ));
        }
        if self.tls.client_ca.is_some() && self.tls.cert.is_none() {
            return Err(ConfigError::Invalid(
                "tls.client_ca needs tls.cert and tls.key (mutual TLS is TLS first)".into(),
            ));
        }
        if self.tls.client_cert_required && self.tls.client_ca.is_none() {
            return Err(ConfigError::Invalid(
                "tls.client_cert_required needs tls.client_ca".into(),
            ));
        }
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
    fn a_public_listener_needs_keys_or_the_insecure_flag() {
        let public = Some("0.0.0.0:7432".parse().unwrap());
        let err = SeamConfig::load(
            None,
            Overrides {
                pg_addr: public,
                api_addr: Some("0.0.0.0:7317".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--insecure-no-auth"), "{err}");
        assert!(
            err.contains("listen.api_addr 0.0.0.0:7317") && err.contains("listen.pg_addr"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("seam-auth-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys.toml");
        std::fs::write(&keys, "").unwrap();
        for o in [
            Overrides {
                pg_addr: public,
                keys_file: Some(keys.clone()),
                ..Default::default()
            },
            Overrides {
                otlp_grpc_addr: Some("0.0.0.0:4317".parse().unwrap()),
                insecure_no_auth: true,
                ..Default::default()
            },
        ] {
            SeamConfig::load(None, o).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        let bad = SeamConfig::from_toml(
            "[[auth.keys]]\nname = \"ops\"\nroles = [\"admin\"]\nsha256 = \"nothex\"\n",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("auth.keys[0] (ops)") && bad.contains("sha256"),
            "{bad}"
        );
    }

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
    fn example_sources_parse_validate_and_round_trip() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/seam.example.toml"))
                .unwrap();
        let key = regex::Regex::new(r"^# ([a-z_]+ = |\[\[sources\]\])").unwrap();
        let mut on = false;
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("# Pulled sources") {
                on = true;
            }
            if on && key.is_match(line) {
                out.push_str(&line[2..]);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        let cfg = SeamConfig::from_toml(&out).unwrap();
        assert_eq!(cfg.sources.len(), 4);
        cfg.validate().unwrap();
        let round = SeamConfig::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(round, cfg);
    }

    #[test]
    fn a_source_step_too_large_for_the_memory_budget_is_refused() {
        let text = "[storage]\nmax_buffer_bytes = 1048576\n[[sources]]\nname = \"f\"\ntype = \"file\"\n\
                    format = \"mule\"\npaths = [\"/tmp/*.log\"]\n";
        let e = SeamConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_batch_bytes") && e.contains("\"f\""), "{e}");
        let ok = format!("{text}max_batch_bytes = 65536\n");
        SeamConfig::from_toml(&ok).unwrap().validate().unwrap();
    }

    #[test]
    fn fingerprint_secrets_are_never_printed() {
        let cfg = SeamConfig::load(
            None,
            Overrides {
                fingerprint_keys: Some("k2=very-secret-2,k1=very-secret-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let shown = format!("{}{:?}", cfg.to_toml(), cfg);
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("k2=<redacted>"), "{shown}");
        assert_eq!(cfg.tokens.build().unwrap().keys.len(), 2);
        let bad = SeamConfig::load(
            None,
            Overrides {
                fingerprint_keys: Some("oops-no-equals-very-secret".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("is not kid=secret") && !bad.contains("very-secret"),
            "{bad}"
        );
    }

    #[test]
    fn fingerprint_keys_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("seam-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, "k2=from-file-2\nk1=from-file-1\n").unwrap();
        let cfg = SeamConfig::from_toml(&format!(
            "[tokens]\nfingerprint_keys_file = {:?}\n",
            file.display().to_string()
        ))
        .unwrap();
        let tokens = cfg.tokens.build().unwrap();
        let kids: Vec<&str> = tokens.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["k2", "k1"]);
        std::fs::remove_dir_all(&dir).unwrap();
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
