//! Credentials and the storage client: a connection string, an account with a SAS token, or
//! an account alone (managed identity, workload identity, or `AZURE_*` variables), turned
//! into an `object_store` client of one container; and what a failure of that client was.
//!
//! Takes the source's configuration (secrets named by variable or file); gives the client.
//! Secrets never appear in errors, in `Debug` output or in messages: an error names the
//! variable or file the secret came from, and every message passes through [`Scrub`].

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::Path as FsPath;
use std::time::Duration;

use base64::Engine as _;
use object_store::azure::{AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::HttpError;
use object_store::{BackoffConfig, RetryConfig};

use crate::sources::pull::config::{AzureBlobSource, secret};

/// Azurite's well-known development account.
pub(crate) const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known (public) development key.
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default blob endpoint (path-style: the account is the first path segment).
const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How requests are signed.
pub(crate) enum Credential {
    /// Shared key (the account key).
    Key(String),
    /// A shared access signature (query string).
    Sas(String),
    /// `object_store`'s chain: `AZURE_*` variables (client secret, workload identity's
    /// federated token file), else the managed identity endpoint.
    Environment,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Key(_) => "Key(redacted)",
            Credential::Sas(_) => "Sas(redacted)",
            Credential::Environment => "Environment",
        })
    }
}

/// Where and how to reach the container.
#[derive(Debug)]
pub(crate) struct Access {
    /// Storage account name.
    pub account: String,
    /// Blob endpoint (scheme, host, and for path-style endpoints the account), without a
    /// trailing `/`; `None` for `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Credential.
    pub credential: Credential,
}

impl Access {
    /// The secret values, for [`Scrub`].
    pub fn secrets(&self) -> Vec<String> {
        match &self.credential {
            Credential::Key(k) => vec![k.clone()],
            Credential::Sas(s) => vec![s.clone()],
            Credential::Environment => Vec::new(),
        }
    }
}

/// Why the source cannot reach its container yet. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AccessError {
    /// The secret could not be read (names the variable or file).
    #[error("{0}")]
    Secret(String),
    /// A `;`-separated part of the connection string has no `=`.
    #[error("the connection string in {whence} is malformed: part {part} has no '='")]
    Malformed {
        /// Variable or file.
        whence: String,
        /// 1-based index of the part.
        part: usize,
    },
    /// Neither `AccountName` nor a blob endpoint.
    #[error(
        "the connection string in {0} has neither AccountName nor BlobEndpoint (set endpoint in the source, or use the connection string Azure shows)"
    )]
    NoAccount(String),
    /// The account cannot be told from the endpoint.
    #[error(
        "the connection string in {0} has no AccountName and its BlobEndpoint does not name the account"
    )]
    AccountFromEndpoint(String),
    /// Neither `AccountKey` nor `SharedAccessSignature`.
    #[error("the connection string in {0} has neither AccountKey nor SharedAccessSignature")]
    NoCredential(String),
    /// The `AccountKey` does not decode. The decoder's own message is not kept: it quotes a
    /// character of the key and its position.
    #[error("the account key in {0} is not valid base64")]
    BadKey(String),
    /// No connection string and no account.
    #[error(
        "give a connection string (connection_string_env or connection_string_file) or account"
    )]
    NoAccountConfigured,
}

/// "environment variable X" or "file /p" (never the value).
fn whence(env: Option<&str>, file: Option<&FsPath>) -> String {
    match (env, file) {
        (Some(v), _) => format!("environment variable {v}"),
        (None, Some(p)) => format!("file {}", p.display()),
        (None, None) => "the configuration".to_string(),
    }
}

/// The account of a blob endpoint: the first path segment of a path-style endpoint on an
/// address or `localhost` (Azurite: `http://127.0.0.1:10000/devstoreaccount1`), else the
/// first label of the host (`https://contoso.blob.core.windows.net`).
fn account_from_endpoint(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        // [::1]:10000
        host.split_once(']')
            .map_or(host, |(h, _)| h.trim_start_matches('['))
    } else {
        host.split_once(':').map_or(host, |(h, _)| h)
    };
    let path_style =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok();
    let account = if path_style {
        path.split('/').find(|s| !s.is_empty())?
    } else {
        host.split('.').next()?
    };
    (!account.is_empty()).then(|| account.to_string())
}

/// Parses a storage connection string (`Key=Value;` pairs, keys in any case) read from
/// `whence`. `endpoint` (the source's `endpoint`) overrides the blob endpoint.
///
/// # Errors
/// What is missing or malformed, naming `whence`, never a value.
pub(crate) fn parse_connection_string(
    text: &str,
    whence: &str,
    endpoint: Option<&str>,
) -> Result<Access, AccessError> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for (i, part) in text.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, v)) = part.split_once('=') else {
            return Err(AccessError::Malformed {
                whence: whence.to_string(),
                part: i.saturating_add(1),
            });
        };
        fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let field = |k: &str| fields.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let endpoint = endpoint.map(|e| e.trim().trim_end_matches('/').to_string());
    if field("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(Access {
            account: EMULATOR_ACCOUNT.to_string(),
            endpoint: Some(endpoint.unwrap_or_else(|| EMULATOR_ENDPOINT.to_string())),
            credential: Credential::Key(EMULATOR_KEY.to_string()),
        });
    }
    let account = field("accountname").map(str::to_string);
    let endpoint = match (endpoint, field("blobendpoint"), &account) {
        (Some(e), _, _) => Some(e),
        (None, Some(e), _) => Some(e.trim_end_matches('/').to_string()),
        (None, None, Some(a)) => {
            let protocol = field("defaultendpointsprotocol").unwrap_or("https");
            let suffix = field("endpointsuffix").unwrap_or("core.windows.net");
            Some(format!("{protocol}://{a}.blob.{suffix}"))
        }
        (None, None, None) => None,
    };
    let account = match (account, &endpoint) {
        (Some(a), _) => a,
        (None, Some(e)) => account_from_endpoint(e)
            .ok_or_else(|| AccessError::AccountFromEndpoint(whence.to_string()))?,
        (None, None) => return Err(AccessError::NoAccount(whence.to_string())),
    };
    let credential = if let Some(k) = field("accountkey") {
        if base64::engine::general_purpose::STANDARD.decode(k).is_err() {
            return Err(AccessError::BadKey(whence.to_string()));
        }
        Credential::Key(k.to_string())
    } else if let Some(s) = field("sharedaccesssignature") {
        Credential::Sas(s.to_string())
    } else {
        return Err(AccessError::NoCredential(whence.to_string()));
    };
    Ok(Access {
        account,
        endpoint,
        credential,
    })
}

/// Reads the source's secrets and tells where and how to reach the container.
///
/// # Errors
/// A secret is missing or the connection string is malformed (naming the variable or file).
pub(crate) fn access(cfg: &AzureBlobSource) -> Result<Access, AccessError> {
    let endpoint = cfg.endpoint.as_deref();
    let (cs_env, cs_file) = (
        cfg.connection_string_env.as_deref(),
        cfg.connection_string_file.as_deref(),
    );
    if cs_env.is_some() || cs_file.is_some() {
        let text = secret(cs_env, cs_file).map_err(AccessError::Secret)?;
        let mut a = parse_connection_string(&text, &whence(cs_env, cs_file), endpoint)?;
        if let Some(account) = &cfg.account {
            a.account = account.clone();
        }
        return Ok(a);
    }
    let account = cfg
        .account
        .clone()
        .ok_or(AccessError::NoAccountConfigured)?;
    let (sas_env, sas_file) = (cfg.sas_token_env.as_deref(), cfg.sas_token_file.as_deref());
    let credential = if sas_env.is_some() || sas_file.is_some() {
        let token = secret(sas_env, sas_file).map_err(AccessError::Secret)?;
        Credential::Sas(token.trim().to_string())
    } else {
        Credential::Environment
    };
    Ok(Access {
        account,
        endpoint: endpoint.map(|e| e.trim().trim_end_matches('/').to_string()),
        credential,
    })
}

/// Retries inside one request: few and short, so that failures reach the source's status
/// quickly; the source retries whole polls with its own backoff.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
    }
}

/// The client of `container`. A custom endpoint is used as given (path-style endpoints such
/// as Azurite's carry the account in their path); plain HTTP is allowed only when the
/// endpoint is `http://`.
///
/// # Errors
/// `object_store` refused the settings (an endpoint that is not a URL, a key that is not
/// base64); the caller scrubs its messages. A key that does not decode gets a fixed message
/// (see `key_error`): the decoder's message quotes a character of the key.
pub(crate) fn build(access: &Access, container: &str) -> object_store::Result<MicrosoftAzure> {
    let mut b = match access.credential {
        Credential::Environment => MicrosoftAzureBuilder::from_env(),
        Credential::Key(_) | Credential::Sas(_) => MicrosoftAzureBuilder::new(),
    };
    b = b
        .with_account(access.account.clone())
        .with_container_name(container)
        .with_retry(retry());
    if let Some(e) = &access.endpoint {
        let http = e
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        b = b.with_endpoint(e.clone());
        if http {
            b = b.with_allow_http(true);
        }
    }
    b = match &access.credential {
        Credential::Key(k) => b.with_access_key(k.clone()),
        Credential::Sas(s) => b.with_config(AzureConfigKey::SasKey, s.clone()),
        Credential::Environment => b,
    };
    b.build().map_err(key_error)
}

/// `e`, unless it is about the account key not decoding: then a fixed message, without the
/// decoder's text ("Invalid last symbol 116, offset 57" names a character of the key).
fn key_error(e: object_store::Error) -> object_store::Error {
    if e.to_string().contains("Invalid Access Key") {
        object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "the account key is not valid base64".into(),
        }
    } else {
        e
    }
}

/// The HTTP status an `object_store` message reports (`... status code: 403 Forbidden ...`).
fn status_in(text: &str) -> Option<u16> {
    let (_, rest) = text.split_once("status code: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// True when the error (or one it wraps) is a transport failure: no connection, a reset,
/// a timeout.
fn transport(e: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<HttpError>().is_some() {
            return true;
        }
        cur = x.source();
    }
    false
}

/// The error kind of a failed request: `auth` (401, 403), `network` (no answer, 408, 429,
/// 5xx), else `read`.
pub(crate) fn kind(e: &object_store::Error) -> &'static str {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => "auth",
        _ => match status_in(&e.to_string()) {
            Some(401 | 403) => "auth",
            Some(408 | 429) => "network",
            Some(s) if s >= 500 => "network",
            Some(_) => "read",
            None if transport(e) => "network",
            None => "read",
        },
    }
}

/// Removes secrets from messages: the values of the source's secrets, and the value of any
/// `sig=` query parameter (a SAS signature).
#[derive(Default)]
pub(crate) struct Scrub {
    secrets: Vec<String>,
}

impl fmt::Debug for Scrub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrub({} secrets)", self.secrets.len())
    }
}

/// Longest message kept (object_store quotes whole XML error bodies).
const MAX_MESSAGE: usize = 600;

impl Scrub {
    /// Scrubs the values of `secrets` (and of every `sig=`).
    pub fn new(secrets: Vec<String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| s.len() >= 4).collect(),
        }
    }

    /// `text` without secrets, on one line, at most about 600 bytes.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.replace(['\r', '\n'], " ");
        for s in &self.secrets {
            out = out.replace(s.as_str(), "[redacted]");
            // The same secret percent-encoded or decoded in a URL.
            let encoded = s
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D");
            if encoded != *s {
                out = out.replace(encoded.as_str(), "[redacted]");
            }
        }
        let mut clean = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.to_ascii_lowercase().find("sig=") {
            let (head, tail) = rest.split_at(i.saturating_add(4));
            clean.push_str(head);
            clean.push_str("[redacted]");
            let end = tail
                .find(|c: char| {
                    c == '&' || c == '"' || c == '\'' || c == ')' || c == '<' || c.is_whitespace()
                })
                .unwrap_or(tail.len());
            rest = tail.get(end..).unwrap_or("");
        }
        clean.push_str(rest);
        if clean.len() > MAX_MESSAGE {
            let cut = clean.floor_char_boundary(MAX_MESSAGE);
            clean.truncate(cut);
            clean.push('…');
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "c2VjcmV0LWtleS1vZi10aGUtYWNjb3VudA==";

    fn key_of(a: &Access) -> Option<&str> {
        match &a.credential {
            Credential::Key(k) => Some(k),
            _ => None,
        }
    }

    #[test]
    fn the_portal_connection_string() {
        let cs = format!(
            "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={KEY};EndpointSuffix=core.windows.net"
        );
        let a = parse_connection_string(&cs, "environment variable X", None).unwrap();
        assert_eq!(a.account, "contoso");
        assert_eq!(
            a.endpoint.as_deref(),
            Some("https://contoso.blob.core.windows.net")
        );
        assert_eq!(key_of(&a), Some(KEY));
        // Sovereign clouds, and keys in any case with spaces and a trailing ';'.
        let cs = format!(
            " accountname = contoso ; ACCOUNTKEY={KEY} ;EndpointSuffix=core.chinacloudapi.cn;"
        );
        let a = parse_connection_string(&cs, "x", None).unwrap();
        assert_eq!(
            a.endpoint.as_deref(),
            Some("https://contoso.blob.core.chinacloudapi.cn")
        );
        assert_eq!(key_of(&a), Some(KEY));
        // Debug output never shows the key.
        assert!(!format!("{a:?}").contains(KEY));
    }

    #[test]
    fn azurite_connection_strings() {
        let cs = format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={EMULATOR_KEY};BlobEndpoint=http://127.0.0.1:41234/devstoreaccount1;"
        );
        let a = parse_connection_string(&cs, "x", None).unwrap();
        assert_eq!(a.account, "devstoreaccount1");
        assert_eq!(
            a.endpoint.as_deref(),
            Some("http://127.0.0.1:41234/devstoreaccount1")
        );
        let a = parse_connection_string("UseDevelopmentStorage=true", "x", None).unwrap();
        assert_eq!(a.account, EMULATOR_ACCOUNT);
        assert_eq!(a.endpoint.as_deref(), Some(EMULATOR_ENDPOINT));
        assert_eq!(key_of(&a), Some(EMULATOR_KEY));
        // The source's endpoint wins.
        let a = parse_connection_string(
            "UseDevelopmentStorage=true",
            "x",
            Some("http://127.0.0.1:5555/devstoreaccount1/"),
        )
        .unwrap();
        assert_eq!(
            a.endpoint.as_deref(),
            Some("http://127.0.0.1:5555/devstoreaccount1")
        );
    }

    #[test]
    fn a_sas_connection_string_names_its_account_by_endpoint() {
        let cs = "BlobEndpoint=https://contoso.blob.core.windows.net/;QueueEndpoint=https://contoso.queue.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D";
        let a = parse_connection_string(cs, "x", None).unwrap();
        assert_eq!(a.account, "contoso");
        assert_eq!(
            a.endpoint.as_deref(),
            Some("https://contoso.blob.core.windows.net")
        );
        match &a.credential {
            Credential::Sas(s) => {
                assert!(s.starts_with("sv=2022-11-02&") && s.ends_with("sig=abc%2Bdef%3D"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            account_from_endpoint("http://localhost:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            account_from_endpoint("http://[::1]:10000/acc").as_deref(),
            Some("acc")
        );
        assert_eq!(account_from_endpoint("http://127.0.0.1:10000/"), None);
    }

    #[test]
    fn errors_name_the_variable_never_the_value() {
        let whence = "environment variable AZURE_STORAGE_CONNECTION_STRING";
        for (cs, want) in [
            (
                format!("AccountName=contoso;{}", KEY.trim_end_matches('=')),
                "part 2 has no '='",
            ),
            (
                format!("AccountKey={KEY}"),
                "neither AccountName nor BlobEndpoint",
            ),
            (
                "AccountName=contoso".to_string(),
                "neither AccountKey nor SharedAccessSignature",
            ),
            (
                format!("BlobEndpoint=http://127.0.0.1:1/;AccountKey={KEY}"),
                "does not name the account",
            ),
            (
                // Not base64: the decoder would name the bad character and its position.
                format!(
                    "AccountName=contoso;AccountKey={}t",
                    KEY.trim_end_matches('=')
                ),
                "the account key in environment variable AZURE_STORAGE_CONNECTION_STRING is not valid base64",
            ),
        ] {
            let e = parse_connection_string(&cs, whence, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("AZURE_STORAGE_CONNECTION_STRING"), "{e}");
            assert!(!e.contains(KEY) && !e.contains("c2VjcmV0"), "{e}");
        }
    }

    #[test]
    fn a_key_that_does_not_decode_gets_a_fixed_message() {
        let access = Access {
            account: "contoso".into(),
            endpoint: None,
            credential: Credential::Key("c2VjcmV0!t".into()),
        };
        let e = build(&access, "c").unwrap_err().to_string();
        assert!(e.contains("the account key is not valid base64"), "{e}");
        assert!(
            !e.contains("symbol") && !e.contains("offset") && !e.contains("c2Vj"),
            "{e}"
        );
        // Other errors are kept as they are.
        let other = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "status code: 404".into(),
        };
        assert!(key_error(other).to_string().contains("status code: 404"));
    }

    #[test]
    fn statuses_and_transport_failures_have_kinds() {
        let generic = |m: &str| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: m.to_string().into(),
        };
        assert_eq!(
            kind(&generic(
                "Error performing list request: ... Server returned non-2xx status code: 403 Forbidden: <Error>"
            )),
            "auth"
        );
        assert_eq!(kind(&generic("status code: 401 Unauthorized")), "auth");
        assert_eq!(
            kind(&generic("status code: 503 Service Unavailable")),
            "network"
        );
        assert_eq!(kind(&generic("status code: 404 Not Found")), "read");
        assert_eq!(kind(&generic("Got invalid list response")), "read");
        assert_eq!(status_in("x status code: 416 Range"), Some(416));
        assert_eq!(status_in("no status"), None);
    }

    #[test]
    fn messages_are_scrubbed() {
        let s = Scrub::new(vec![KEY.to_string(), "sv=2022&sig=abc".to_string()]);
        let m = s.clean(&format!(
            "bad key {KEY} in GET https://a/c?comp=list&sig=xyz%3D&sp=r\nnext"
        ));
        assert!(!m.contains(KEY) && !m.contains("xyz"), "{m}");
        assert!(m.contains("sig=[redacted]&sp=r next"), "{m}");
        let m = s.clean("SIG=abc def");
        assert_eq!(m, "SIG=[redacted] def");
        let long = "x".repeat(2000);
        assert!(s.clean(&long).len() <= MAX_MESSAGE + 3);
    }
}
