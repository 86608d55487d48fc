//! `[[sources]]`: the configuration of pulled sources (the contract users write; keep the
//! names). One table per source, tagged by `type`; secrets are named by the environment
//! variable or file that holds them, never written in the TOML text.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the records of a source are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PullFormat {
    /// APIM gateway logs and custom events (as `/ingest/apim`).
    Apim,
    /// Mule logs (as `/ingest/mule`).
    Mule,
    /// OTLP/JSON export requests (traces or logs).
    OtlpJson,
    /// Decided per message, blob or file: OTLP/JSON, then APIM or Mule.
    Auto,
}

impl PullFormat {
    /// The name in the configuration.
    pub fn label(self) -> &'static str {
        match self {
            PullFormat::Apim => "apim",
            PullFormat::Mule => "mule",
            PullFormat::OtlpJson => "otlp_json",
            PullFormat::Auto => "auto",
        }
    }
}

/// Where a Kafka source starts in a partition it has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The oldest message the broker still has.
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// SASL mechanism of a Kafka source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum SaslMechanism {
    /// No SASL.
    #[default]
    #[serde(rename = "none")]
    None,
    /// SASL/PLAIN (Event Hubs: user `$ConnectionString`, password the connection string).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SASL/SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SASL/SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name, `None` for no SASL.
    pub fn name(self) -> Option<&'static str> {
        match self {
            SaslMechanism::None => None,
            SaslMechanism::Plain => Some("PLAIN"),
            SaslMechanism::ScramSha256 => Some("SCRAM-SHA-256"),
            SaslMechanism::ScramSha512 => Some("SCRAM-SHA-512"),
        }
    }
}

fn default_group() -> String {
    "seam".into()
}
fn default_true() -> bool {
    true
}
fn default_blob_poll() -> Duration {
    Duration::from_secs(30)
}
fn default_file_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_multiline_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_settle() -> Duration {
    Duration::from_secs(300)
}
fn default_relist() -> Duration {
    Duration::from_secs(3600)
}
fn default_format() -> PullFormat {
    PullFormat::Auto
}
fn default_max_batch_bytes() -> usize {
    4 << 20
}

/// A Kafka-protocol source: Azure Event Hubs' Kafka endpoint or any broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    /// Unique name: the `source` label in `ingest_stats`, `/metrics` and `source_positions`.
    pub name: String,
    /// How messages are read. (`auto` when omitted; must be `auto` or omitted with `mapping`).
    #[serde(default = "default_format")]
    pub format: PullFormat,
    /// A mapping (`[mappings.NAME]` or a preset) that reads the records instead of the
    /// built-in shapes.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topics (Event Hubs: event hub names).
    pub topics: Vec<String>,
    /// Consumer group (offsets are also committed there, for the broker's lag tools).
    #[serde(default = "default_group")]
    pub group: String,
    /// Where to start in a partition seam has no position for and the group has no offset.
    #[serde(default)]
    pub start: Start,
    /// TLS to the brokers (verification on); `false` only for a local broker.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// CA bundle (PEM) to verify the brokers with, instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SASL mechanism.
    #[serde(default)]
    pub sasl_mechanism: SaslMechanism,
    /// SASL user name (Event Hubs: `$ConnectionString`).
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// Environment variable holding the SASL password.
    #[serde(default)]
    pub sasl_password_env: Option<String>,
    /// File holding the SASL password (trailing newline ignored).
    #[serde(default)]
    pub sasl_password_file: Option<PathBuf>,
    /// Mule app of lines that do not name theirs (format `mule`).
    #[serde(default)]
    pub app: Option<String>,
    /// APIM service of records that do not name theirs (format `apim`).
    #[serde(default)]
    pub service: Option<String>,
    /// Most bytes of messages taken in one step (one write-ahead log entry).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
}

/// An Azure Storage container of blobs (APIM diagnostic-setting archives, or any files).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AzureBlobSource {
    /// Unique name.
    pub name: String,
    /// How blobs are read. (`auto` when omitted; must be `auto` or omitted with `mapping`).
    #[serde(default = "default_format")]
    pub format: PullFormat,
    /// A mapping (`[mappings.NAME]` or a preset) that reads the records instead of the
    /// built-in shapes.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Container.
    pub container: String,
    /// Only blobs whose names start with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Environment variable holding a storage connection string.
    #[serde(default)]
    pub connection_string_env: Option<String>,
    /// File holding a storage connection string.
    #[serde(default)]
    pub connection_string_file: Option<PathBuf>,
    /// Storage account (with `sas_token_env`/`sas_token_file`, or a managed identity).
    #[serde(default)]
    pub account: Option<String>,
    /// Environment variable holding a SAS token.
    #[serde(default)]
    pub sas_token_env: Option<String>,
    /// File holding a SAS token.
    #[serde(default)]
    pub sas_token_file: Option<PathBuf>,
    /// Blob endpoint, when not `https://<account>.blob.core.windows.net` (sovereign clouds,
    /// Azurite).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How often to look for new and grown blobs.
    #[serde(default = "default_blob_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Skip blobs older than this (by the hour in their path, else their last change).
    #[serde(default)]
    pub not_before: Option<String>,
    /// A record cut at the end of a blob that has not grown for this long is taken as it is.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// How often the whole prefix is listed again (new APIM services, late hours); between
    /// those, only recent hours are listed.
    #[serde(default = "default_relist", with = "humantime_serde")]
    pub relist_interval: Duration,
    /// Mule app of lines that do not name theirs.
    #[serde(default)]
    pub app: Option<String>,
    /// APIM service of records that do not name theirs.
    #[serde(default)]
    pub service: Option<String>,
    /// Most bytes taken in one step.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
}

/// Log files on this machine.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Unique name.
    pub name: String,
    /// How lines are read. (`auto` when omitted; must be `auto` or omitted with `mapping`).
    #[serde(default = "default_format")]
    pub format: PullFormat,
    /// A mapping (`[mappings.NAME]` or a preset) that reads the records instead of the
    /// built-in shapes.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Glob patterns.
    pub paths: Vec<String>,
    /// Patterns of paths to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Mule app of lines that do not name theirs.
    #[serde(default)]
    pub app: Option<String>,
    /// APIM service of records that do not name theirs.
    #[serde(default)]
    pub service: Option<String>,
    /// How often to look for new files and growth.
    #[serde(default = "default_file_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long an entry at the end of a file (a stack trace being written) waits for more
    /// lines before it is taken as it is.
    #[serde(default = "default_multiline_timeout", with = "humantime_serde")]
    pub multiline_timeout: Duration,
    /// Most bytes taken in one step.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
}

/// One `[[sources]]` block.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// `type = "kafka"`.
    Kafka(KafkaSource),
    /// `type = "azure_blob"`.
    AzureBlob(AzureBlobSource),
    /// `type = "file"`.
    File(FileSource),
}

/// Longest source name: it is a metric label and a column value.
pub const MAX_NAME: usize = 64;

impl SourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Kafka(s) => &s.name,
            SourceConfig::AzureBlob(s) => &s.name,
            SourceConfig::File(s) => &s.name,
        }
    }

    /// `kafka`, `azure_blob` or `file`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Kafka(_) => "kafka",
            SourceConfig::AzureBlob(_) => "azure_blob",
            SourceConfig::File(_) => "file",
        }
    }

    /// The source's format.
    pub fn format(&self) -> PullFormat {
        match self {
            SourceConfig::Kafka(s) => s.format,
            SourceConfig::AzureBlob(s) => s.format,
            SourceConfig::File(s) => s.format,
        }
    }

    /// The mapping that reads the source's records, if any.
    pub fn mapping(&self) -> Option<&str> {
        match self {
            SourceConfig::Kafka(s) => s.mapping.as_deref(),
            SourceConfig::AzureBlob(s) => s.mapping.as_deref(),
            SourceConfig::File(s) => s.mapping.as_deref(),
        }
    }

    /// Most bytes the source takes in one step.
    pub fn max_batch_bytes(&self) -> usize {
        match self {
            SourceConfig::Kafka(s) => s.max_batch_bytes,
            SourceConfig::AzureBlob(s) => s.max_batch_bytes,
            SourceConfig::File(s) => s.max_batch_bytes,
        }
    }

    /// Mule app and APIM service of records that do not name theirs.
    pub fn defaults(&self) -> (Option<String>, Option<String>) {
        match self {
            SourceConfig::Kafka(s) => (s.app.clone(), s.service.clone()),
            SourceConfig::AzureBlob(s) => (s.app.clone(), s.service.clone()),
            SourceConfig::File(s) => (s.app.clone(), s.service.clone()),
        }
    }

    /// Checks what can be checked without the network: names, required keys, secrets named
    /// by environment variable or file (not whether they are set: that is reported when the
    /// source starts, and retried).
    ///
    /// # Errors
    /// The first problem, naming the source and the key.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.name();
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(format!(
                "[[sources]] name {name:?}: use 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
            ));
        }
        let at = |key: &str, why: &str| Err(format!("[[sources]] {name:?}: {key}: {why}"));
        if let Some(m) = self.mapping() {
            if m.trim().is_empty() {
                return at("mapping", "must name a mapping");
            }
            if self.format() != PullFormat::Auto {
                return at(
                    "format",
                    "leave it out with a mapping: the mapping says how records are read",
                );
            }
        }
        match self {
            SourceConfig::Kafka(s) => {
                if s.brokers.is_empty() {
                    return at("brokers", "give at least one host:port");
                }
                if s.topics.is_empty() {
                    return at("topics", "give at least one topic");
                }
                if s.group.trim().is_empty() {
                    return at("group", "must not be empty");
                }
                if s.sasl_mechanism != SaslMechanism::None {
                    if s.sasl_username.is_none() {
                        return at("sasl_username", "required with a SASL mechanism");
                    }
                    if s.sasl_password_env.is_none() == s.sasl_password_file.is_none() {
                        return at(
                            "sasl_password_env",
                            "give exactly one of sasl_password_env and sasl_password_file",
                        );
                    }
                }
                if s.max_batch_bytes == 0 {
                    return at("max_batch_bytes", "must be above 0");
                }
            }
            SourceConfig::AzureBlob(s) => {
                if s.container.trim().is_empty() {
                    return at("container", "must not be empty");
                }
                let conn = s.connection_string_env.is_some() || s.connection_string_file.is_some();
                if s.connection_string_env.is_some() && s.connection_string_file.is_some() {
                    return at(
                        "connection_string_env",
                        "give one of connection_string_env and connection_string_file",
                    );
                }
                if !conn && s.account.is_none() {
                    return at(
                        "connection_string_env",
                        "give a connection string (connection_string_env or _file) or account",
                    );
                }
                if s.sas_token_env.is_some() && s.sas_token_file.is_some() {
                    return at(
                        "sas_token_env",
                        "give one of sas_token_env and sas_token_file",
                    );
                }
                if let Some(t) = &s.not_before
                    && chrono::DateTime::parse_from_rfc3339(t).is_err()
                {
                    return at(
                        "not_before",
                        "not an RFC 3339 time such as 2024-11-01T00:00:00Z",
                    );
                }
                if s.poll_interval.is_zero() {
                    return at("poll_interval", "must be above 0");
                }
                if s.max_batch_bytes == 0 {
                    return at("max_batch_bytes", "must be above 0");
                }
            }
            SourceConfig::File(s) => {
                if s.paths.is_empty() {
                    return at("paths", "give at least one glob pattern");
                }
                for p in s.paths.iter().chain(&s.exclude) {
                    if let Err(e) = glob::Pattern::new(p) {
                        return at("paths", &format!("{p:?} is not a glob pattern: {e}"));
                    }
                }
                if s.poll_interval.is_zero() {
                    return at("poll_interval", "must be above 0");
                }
                if s.max_batch_bytes == 0 {
                    return at("max_batch_bytes", "must be above 0");
                }
            }
        }
        Ok(())
    }
}

/// Checks every source and that names are unique.
///
/// # Errors
/// The first problem.
pub fn validate_all(sources: &[SourceConfig]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for s in sources {
        s.validate()?;
        if !seen.insert(s.name()) {
            return Err(format!(
                "[[sources]] name {:?} is used twice: names must be unique",
                s.name()
            ));
        }
    }
    Ok(())
}

/// Reads a secret from the environment variable `env` or the file `file` (one is set).
///
/// # Errors
/// Names the variable or file, never the value.
pub fn secret(env: Option<&str>, file: Option<&std::path::Path>) -> Result<String, String> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim_end_matches(['\r', '\n']).to_string()),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        };
    }
    if let Some(path) = file {
        return match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim_end_matches(['\r', '\n']).to_string()),
            Ok(_) => Err(format!("{} is empty", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        };
    }
    Err("no secret is configured".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        sources: Vec<SourceConfig>,
    }

    #[test]
    fn the_issue_example_parses_and_validates() {
        let doc: Doc = toml::from_str(
            r#"
[[sources]]
name = "apim-gatewaylogs"
type = "kafka"
format = "apim"
brokers = ["contoso.servicebus.windows.net:9093"]
topics = ["insights-logs-gatewaylogs", "apim-custom-events"]
group = "seam"
start = "earliest"
tls = true
sasl_mechanism = "PLAIN"
sasl_username = "$ConnectionString"
sasl_password_env = "SEAM_EVENTHUB_CONNECTION_STRING"

[[sources]]
name = "apim-archive"
type = "azure_blob"
format = "apim"
container = "insights-logs-gatewaylogs"
prefix = "resourceId=/SUBSCRIPTIONS/"
connection_string_env = "AZURE_STORAGE_CONNECTION_STRING"
poll_interval = "30s"
not_before = "2024-11-01T00:00:00Z"

[[sources]]
name = "mule-orders"
type = "file"
format = "mule"
paths = ["/opt/mule/logs/orders-papi*.log"]
app = "orders-papi"
"#,
        )
        .unwrap();
        validate_all(&doc.sources).unwrap();
        assert_eq!(doc.sources.len(), 3);
        assert_eq!(doc.sources[0].kind(), "kafka");
        assert_eq!(doc.sources[1].kind(), "azure_blob");
        assert_eq!(doc.sources[2].kind(), "file");
        match &doc.sources[0] {
            SourceConfig::Kafka(k) => {
                assert_eq!(k.sasl_mechanism, SaslMechanism::Plain);
                assert!(k.tls);
            }
            _ => panic!("not kafka"),
        }
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |text: &str| -> String {
            match toml::from_str::<Doc>(text) {
                Ok(d) => validate_all(&d.sources).unwrap_err(),
                Err(e) => e.to_string(),
            }
        };
        let e = bad(
            "[[sources]]\nname='a'\ntype='kafka'\nformat='apim'\nbrokers=['b:1']\ntopics=['t']\nsasl_password='x'\n",
        );
        assert!(e.contains("sasl_password"), "{e}");
        let e = bad("[[sources]]\nname='a b'\ntype='file'\nformat='mule'\npaths=['/x']\n");
        assert!(e.contains("name"), "{e}");
        let e = bad(
            "[[sources]]\nname='a'\ntype='file'\nformat='mule'\npaths=['/x']\n[[sources]]\nname='a'\ntype='file'\nformat='mule'\npaths=['/y']\n",
        );
        assert!(e.contains("twice"), "{e}");
        let e = bad("[[sources]]\nname='a'\ntype='ftp'\nformat='mule'\n");
        assert!(e.contains("ftp") || e.contains("variant"), "{e}");
        let e = bad(
            "[[sources]]\nname='a'\ntype='kafka'\nformat='apim'\nbrokers=['b:1']\ntopics=['t']\nsasl_mechanism='PLAIN'\nsasl_username='u'\n",
        );
        assert!(e.contains("sasl_password_env"), "{e}");
    }
}
