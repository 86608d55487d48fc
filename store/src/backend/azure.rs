//! Azure Storage credentials shared by everything that talks to Blob Storage (the table
//! store at `storage.url = "az://..."` and the `azure_blob` pulled source): a storage
//! connection string parsed into an account, an endpoint and a key or SAS.
//!
//! Takes the text of a connection string and where it came from (a variable or file name);
//! gives [`Access`]. Secrets never appear in errors or in `Debug` output: an error names where
//! the secret came from, never its value.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};

/// Azurite's well-known development account.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known (public) development key.
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite's default blob endpoint (path-style: the account is the first path segment).
const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How requests are signed.
pub enum Credential {
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
pub struct Access {
    /// Storage account name.
    pub account: String,
    /// Blob endpoint (scheme, host, and for path-style endpoints the account), without a
    /// trailing `/`; `None` for `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    /// Credential.
    pub credential: Credential,
}

impl Access {
    /// The secret values, for scrubbing messages.
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
pub enum AccessError {
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
pub fn parse_connection_string(
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

/// The client of `container`. A custom endpoint is used as given (path-style endpoints such
/// as Azurite's carry the account in their path); plain HTTP is allowed only when the
/// endpoint is `http://`.
///
/// Build errors (an endpoint that is not a URL, a key that is not base64) come from
/// `build()`; pass them through [`key_error`]: the decoder's message quotes a character of
/// the key.
pub fn builder(access: &Access, container: &str) -> MicrosoftAzureBuilder {
    let mut b = match access.credential {
        Credential::Environment => MicrosoftAzureBuilder::from_env(),
        Credential::Key(_) | Credential::Sas(_) => MicrosoftAzureBuilder::new(),
    };
    b = b
        .with_account(access.account.clone())
        .with_container_name(container);
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
    b
}

/// `e`, unless it is about the account key not decoding: then a fixed message, without the
/// decoder's text ("Invalid last symbol 116, offset 57" names a character of the key).
pub fn key_error(e: object_store::Error) -> object_store::Error {
    if e.to_string().contains("Invalid Access Key") {
        object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "the account key is not valid base64".into(),
        }
    } else {
        e
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
}
