//! The HTTP client of seam's own commands (`seam query`, `seam ingest`, `seam correlate`).
//!
//! Takes the environment: `SEAM_TOKEN` (a key) or `SEAM_TOKEN_FILE` (a file holding one),
//! and `SEAM_CA_CERT` (a PEM CA certificate for a seam whose certificate no system CA
//! signed); gives a `reqwest` client that sends `Authorization: Bearer <key>` with every
//! request and trusts that CA. Keys are never command-line flags: flags show in the process
//! list.

use std::time::Duration;

use anyhow::Context as _;

/// The key from `SEAM_TOKEN`, else from the file `SEAM_TOKEN_FILE` names (trimmed).
///
/// # Errors
/// `SEAM_TOKEN_FILE` names a file that cannot be read.
pub fn token_from_env() -> anyhow::Result<Option<String>> {
    if let Some(t) = std::env::var("SEAM_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(t));
    }
    match std::env::var_os("SEAM_TOKEN_FILE").filter(|p| !p.is_empty()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read SEAM_TOKEN_FILE {}", path.display()))?;
            Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
        }
        None => Ok(None),
    }
}

/// A client with the environment's key and CA, and `timeout` per request.
///
/// # Errors
/// An unreadable key file or CA certificate, or a key that is not a valid header value.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Some(token) = token_from_env()? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("SEAM_TOKEN is not a valid header value")?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    if let Some(ca) = std::env::var_os("SEAM_CA_CERT").filter(|p| !p.is_empty()) {
        let pem = std::fs::read(&ca)
            .with_context(|| format!("cannot read SEAM_CA_CERT {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("SEAM_CA_CERT {} is not a PEM certificate", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().context("cannot build the HTTP client")
}
