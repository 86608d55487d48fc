//! Where the tables live: `storage.url` turned into the object store every table file and
//! manifest goes through.
//!
//! Takes the URL (`az://container/prefix`, `s3://bucket/prefix`, `file:///path`, or none for
//! the data directory) and the process environment; gives a [`Backend`]: the store (already
//! narrowed to the URL's prefix, so table paths stay `tables/...`), and the local directory
//! behind it when it is the local file system (whose writes seam fsyncs itself).
//!
//! Credentials never come from the URL or the configuration file: a URL with a password or a
//! query string is refused. They come from the environment, through `object_store`'s chains:
//! - Azure: `AZURE_STORAGE_CONNECTION_STRING` (or a file named by
//!   `AZURE_STORAGE_CONNECTION_STRING_FILE`), else `AZURE_STORAGE_ACCOUNT_NAME` with
//!   `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, a service principal
//!   (`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/`AZURE_TENANT_ID`), workload identity
//!   (`AZURE_FEDERATED_TOKEN_FILE`) or the managed identity endpoint.
//! - S3: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, web identity
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE`), the container and instance metadata endpoints; and when
//!   no key is in the environment, the shared credentials file's profile (`AWS_PROFILE`,
//!   default `default`; `AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) with the
//!   region from `AWS_REGION` or the config file (`AWS_CONFIG_FILE`, default
//!   `~/.aws/config`). `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` point it at an S3-compatible
//!   server.
//!
//! Requests are retried with exponential backoff ([`retry`]); a write that still fails leaves
//! its rows in memory and in the write-ahead log, and the flush is tried again.

pub mod azure;
pub mod cache;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::aws::AmazonS3ConfigKey;
use object_store::azure::AzureConfigKey;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};

/// The URL under which the query engine finds a remote table store (its registry keys stores
/// by scheme and host; table paths are relative to the store's prefix).
pub const QUERY_URL: &str = "seam-store://tables/";

/// What kind of store the tables are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A local directory.
    Local,
    /// Azure Blob Storage or ADLS Gen2.
    Azure,
    /// Amazon S3 or an S3-compatible server.
    S3,
}

impl Kind {
    /// `local`, `azure` or `s3` (logs and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Azure => "azure",
            Kind::S3 => "s3",
        }
    }
}

/// The opened table store.
#[derive(Debug)]
pub struct Backend {
    /// Every table file and manifest goes through this store; paths are `tables/...`.
    pub store: Arc<dyn ObjectStore>,
    /// The directory behind `store` when it is the local file system.
    pub local_root: Option<PathBuf>,
    /// The URL as given (URLs carry no secrets: see the module docs), or the directory.
    pub location: String,
    /// What kind of store it is.
    pub kind: Kind,
}

/// Why `storage.url` cannot be used. Never holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Not a URL seam can store tables at.
    #[error("storage.url {url:?}: {reason}")]
    Url {
        /// The URL (its password and query string, if any, removed).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A credential could not be read or parsed (names the variable or file, not the value).
    #[error("storage.url {url:?}: {reason}")]
    Credentials {
        /// The URL.
        url: String,
        /// What is wrong, naming where the credential came from.
        reason: String,
    },
    /// `object_store` refused the settings.
    #[error("storage.url {url:?}: the store could not be set up: {message}")]
    Build {
        /// The URL.
        url: String,
        /// The store's message (an account key's characters removed).
        message: String,
    },
    /// The local directory could not be used.
    #[error("storage directory {path}: {reason}")]
    Local {
        /// The directory.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// Retries of one request: up to 10, backing off (with jitter) from 500 ms to 15 s, for at
/// most 3 minutes; a flush that still fails keeps its rows and is tried again at the next
/// tick.
pub fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// HTTP client settings, set key by key (`with_client_options` would replace what the
/// environment and the endpoint set, `allow_http` among them): a compacted file can be
/// hundreds of MB in one request, so a request may take up to 10 minutes; connecting, 10 s.
const CLIENT: [(ClientConfigKey, &str); 2] = [
    (ClientConfigKey::Timeout, "600s"),
    (ClientConfigKey::ConnectTimeout, "10s"),
];

/// Opens the table store at `url`, or the local `data_dir` when `url` is `None` or empty. A
/// remote store is read through a local cache of `cache_bytes` in `<data_dir>/cache`
/// ([`cache::CachedStore`]; 0: none).
///
/// # Errors
/// See [`BackendError`].
pub fn open(
    url: Option<&str>,
    data_dir: &FsPath,
    cache_bytes: u64,
) -> Result<Backend, BackendError> {
    let text = url.map(str::trim).unwrap_or("");
    if text.is_empty() {
        return local(data_dir);
    }
    let shown = shown(text);
    let bad = |reason: &str| BackendError::Url {
        url: shown.clone(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(text).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if parsed.password().is_some() || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(
            "credentials never go in the URL (they would be logged and kept in the \
             configuration): give them in the environment (AZURE_* or AWS_* variables)",
        ));
    }
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| {
        bad("unsupported scheme: use az://container/prefix, abfss://container@account.dfs.core.windows.net/prefix, s3://bucket/prefix or file:///path")
    })?;
    let (store, kind): (Arc<dyn ObjectStore>, Kind) = match scheme {
        ObjectStoreScheme::Local => {
            let path = parsed
                .to_file_path()
                .map_err(|()| bad("not an absolute local path"))?;
            return local(&path);
        }
        ObjectStoreScheme::MicrosoftAzure => (Arc::new(azure_store(text, &shown)?), Kind::Azure),
        ObjectStoreScheme::AmazonS3 => (Arc::new(s3_store(text, &shown)?), Kind::S3),
        _ => {
            return Err(bad(
                "unsupported scheme: use az://, abfss://, s3:// or file:// (Google Cloud Storage and HTTP are not supported)",
            ));
        }
    };
    let mut store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    if cache_bytes > 0 {
        let dir = data_dir.join("cache");
        let cached = cache::CachedStore::new(store, dir.clone(), cache_bytes).map_err(|e| {
            BackendError::Local {
                path: dir.display().to_string(),
                reason: format!("the read cache cannot be set up: {e}"),
            }
        })?;
        store = Arc::new(cached);
    }
    Ok(Backend {
        store,
        local_root: None,
        location: shown,
        kind,
    })
}

/// `text` for messages: a URL's password, query string and fragment removed.
pub fn shown(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        // Not a URL: keep the scheme and what follows the last `@` of the authority (a
        // user and password before it are never shown), without query or fragment.
        Err(_) => {
            let no_query = text.split(['?', '#']).next().unwrap_or("");
            match no_query.split_once("://") {
                Some((scheme, rest)) => {
                    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                    format!("{scheme}://{host}/{path}")
                }
                None => no_query
                    .rsplit_once('@')
                    .map_or(no_query, |(_, h)| h)
                    .to_string(),
            }
        }
    }
}

fn local(dir: &FsPath) -> Result<Backend, BackendError> {
    let err = |reason: String| BackendError::Local {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let root = std::fs::canonicalize(dir).map_err(|e| err(e.to_string()))?;
    let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| err(e.to_string()))?;
    Ok(Backend {
        store: Arc::new(store),
        location: root.display().to_string(),
        local_root: Some(root),
        kind: Kind::Local,
    })
}

/// A secret from the variable `var`, or from the file the variable `var`_FILE names.
fn secret_from_env(var: &str) -> Result<Option<(String, String)>, String> {
    if let Ok(v) = std::env::var(var)
        && !v.trim().is_empty()
    {
        return Ok(Some((v, format!("environment variable {var}"))));
    }
    let file_var = format!("{var}_FILE");
    match std::env::var(&file_var) {
        Ok(path) if !path.trim().is_empty() => match std::fs::read_to_string(path.trim()) {
            Ok(text) => Ok(Some((
                text.trim().to_string(),
                format!("the file named by {file_var}"),
            ))),
            Err(e) => Err(format!(
                "the file named by {file_var} ({}) cannot be read: {}",
                path.trim(),
                e.kind()
            )),
        },
        _ => Ok(None),
    }
}

fn azure_store(
    url: &str,
    shown: &str,
) -> Result<object_store::azure::MicrosoftAzure, BackendError> {
    let creds = |reason: String| BackendError::Credentials {
        url: shown.to_string(),
        reason,
    };
    let connection = secret_from_env("AZURE_STORAGE_CONNECTION_STRING").map_err(creds)?;
    let builder = match connection {
        Some((text, whence)) => {
            let access = azure::parse_connection_string(&text, &whence, None)
                .map_err(|e| creds(e.to_string()))?;
            // The URL names the container (and may name the account: `abfss://c@acct...`).
            azure::builder(&access, "")
        }
        None => MicrosoftAzureBuilder::from_env(),
    };
    let mut builder = builder.with_url(url).with_retry(retry());
    for (key, value) in CLIENT {
        builder = builder.with_config(AzureConfigKey::Client(key), value);
    }
    builder.build().map_err(|e| BackendError::Build {
        url: shown.to_string(),
        message: azure::key_error(e).to_string(),
    })
}

fn s3_store(url: &str, shown: &str) -> Result<object_store::aws::AmazonS3, BackendError> {
    let mut builder = AmazonS3Builder::from_env();
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
        && std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_none()
        && let Some(p) = aws_profile().map_err(|reason| BackendError::Credentials {
            url: shown.to_string(),
            reason,
        })?
    {
        builder = builder
            .with_access_key_id(p.key_id)
            .with_secret_access_key(p.secret);
        if let Some(t) = p.token {
            builder = builder.with_token(t);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            && let Some(r) = p.region
        {
            builder = builder.with_region(r);
        }
    }
    builder = builder.with_url(url).with_retry(retry());
    for (key, value) in CLIENT {
        builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
    }
    builder.build().map_err(|e| BackendError::Build {
        url: shown.to_string(),
        message: e.to_string(),
    })
}

/// A profile of the AWS shared credentials file.
struct Profile {
    key_id: String,
    secret: String,
    token: Option<String>,
    region: Option<String>,
}

/// The profile `AWS_PROFILE` (default `default`) of the shared credentials file, when the
/// file exists and has it. The files are INI (`[name]` sections of `key = value` lines), read
/// here because `object_store` reads only the environment and the AWS SDK's loader would
/// bring a second HTTP stack for a dozen lines of parsing.
fn aws_profile() -> Result<Option<Profile>, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(default)))
    };
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let Some(creds_path) = file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials") else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&creds_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "the AWS credentials file {} cannot be read: {}",
                creds_path.display(),
                e.kind()
            ));
        }
    };
    let section = ini_section(&text, &name);
    let (Some(key_id), Some(secret)) = (
        section.iter().find(|(k, _)| k == "aws_access_key_id"),
        section.iter().find(|(k, _)| k == "aws_secret_access_key"),
    ) else {
        if std::env::var_os("AWS_PROFILE").is_some() {
            return Err(format!(
                "AWS_PROFILE names profile {name:?}, which has no aws_access_key_id and aws_secret_access_key in {}",
                creds_path.display()
            ));
        }
        return Ok(None);
    };
    let token = section
        .iter()
        .find(|(k, _)| k == "aws_session_token")
        .map(|(_, v)| v.clone());
    let region = file("AWS_CONFIG_FILE", ".aws/config")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| {
            let header = if name == "default" {
                name.clone()
            } else {
                format!("profile {name}")
            };
            ini_section(&t, &header)
                .into_iter()
                .find(|(k, _)| k == "region")
                .map(|(_, v)| v)
        });
    Ok(Some(Profile {
        key_id: key_id.1.clone(),
        secret: secret.1.clone(),
        token,
        region,
    }))
}

/// The `key = value` pairs of section `[name]` of an INI text (keys lower-cased).
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = h.trim() == name;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_url_is_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let b = open(None, dir.path(), 0).unwrap();
        assert_eq!(b.kind, Kind::Local);
        assert_eq!(
            b.local_root.as_deref(),
            Some(std::fs::canonicalize(dir.path()).unwrap().as_path())
        );
        let other = dir.path().join("elsewhere");
        let url = url::Url::from_directory_path(&other).unwrap();
        let b = open(Some(url.as_str()), dir.path(), 0).unwrap();
        assert_eq!(b.kind, Kind::Local);
        assert!(b.local_root.unwrap().ends_with("elsewhere"));
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        for (url, why) in [
            ("s3://AKIDEXAMPLE:s3cr3tvalue@bucket/prefix", "environment"),
            // Not even a URL (a port out of range): still not shown.
            (
                "s3://AKIDEXAMPLE:s3cr3tvalue@bucket:99999/prefix",
                "not a URL",
            ),
            (
                "az://container/prefix?sv=2022-11-02&sig=s3cr3tvalue",
                "environment",
            ),
            ("az://container/prefix#s3cr3tvalue", "environment"),
        ] {
            let e = open(Some(url), dir.path(), 0).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("s3cr3tvalue"), "{e}");
        }
    }

    #[test]
    fn unsupported_schemes_say_which_are() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["gs://bucket/x", "ftp://host/x", "not a url"] {
            let e = open(Some(url), dir.path(), 0).unwrap_err().to_string();
            assert!(e.contains("storage.url"), "{e}");
        }
    }

    #[test]
    fn ini_sections() {
        let text = "[default]\naws_access_key_id = A\n# c\n[profile dev]\nregion=eu-west-1\n[dev]\nAWS_SECRET_ACCESS_KEY = s = t\n";
        assert_eq!(
            ini_section(text, "default"),
            vec![("aws_access_key_id".to_string(), "A".to_string())]
        );
        assert_eq!(
            ini_section(text, "profile dev"),
            vec![("region".to_string(), "eu-west-1".to_string())]
        );
        assert_eq!(
            ini_section(text, "dev"),
            vec![("aws_secret_access_key".to_string(), "s = t".to_string())]
        );
    }
}
