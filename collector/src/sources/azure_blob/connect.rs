//! Credentials and the storage client: a connection string, an account with a SAS token, or
//! an account alone (managed identity, workload identity, or `AZURE_*` variables), turned
//! into an `object_store` client of one container; and what a failure of that client was.
//!
//! Takes the source's configuration (secrets named by variable or file); gives the client.
//! Secrets never appear in errors, in `Debug` output or in messages: an error names the
//! variable or file the secret came from, and every message passes through [`Scrub`].

use std::error::Error as StdError;
use std::fmt;
use std::path::Path as FsPath;
use std::time::Duration;

use object_store::azure::MicrosoftAzure;
use object_store::client::HttpError;
use object_store::{BackoffConfig, RetryConfig};
use seam_store::backend::azure;
pub(crate) use seam_store::backend::azure::{
    Access, AccessError, Credential, parse_connection_string,
};

use crate::sources::pull::config::{AzureBlobSource, secret};

/// "environment variable X" or "file /p" (never the value).
fn whence(env: Option<&str>, file: Option<&FsPath>) -> String {
    match (env, file) {
        (Some(v), _) => format!("environment variable {v}"),
        (None, Some(p)) => format!("file {}", p.display()),
        (None, None) => "the configuration".to_string(),
    }
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

/// The client of `container` ([`azure::builder`]) with the source's short retries.
///
/// # Errors
/// `object_store` refused the settings (an endpoint that is not a URL, a key that is not
/// base64, reported without the key's characters); the caller scrubs its messages.
pub(crate) fn build(access: &Access, container: &str) -> object_store::Result<MicrosoftAzure> {
    azure::builder(access, container)
        .with_retry(retry())
        .build()
        .map_err(azure::key_error)
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
        assert!(
            azure::key_error(other)
                .to_string()
                .contains("status code: 404")
        );
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
