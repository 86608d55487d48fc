//! The HTTP client of seam's own commands (`seam query`, `seam ingest`, `seam correlate`,
//! `seam explain`, `seam export`).
//!
//! Takes the environment: `SEAM_TOKEN` (a key) or `SEAM_TOKEN_FILE` (a file holding one),
//! and `SEAM_CA_CERT` (a PEM CA certificate for a seam whose certificate no system CA
//! signed); gives a `reqwest` client that sends `Authorization: Bearer <key>` with every
//! request and trusts that CA. Keys are never command-line flags: flags show in the process
//! list. A `--server` address may still carry a user name and password
//! (`http://user:pw@host:port`): [`display_url`] is the only form of it any message or file
//! shows, and reqwest's errors are shown `without_url()`.

use std::time::Duration;

use anyhow::{Context as _, bail};

/// `url` as messages show it: without its user name and password (userinfo), query and
/// fragment; scheme, host, port and path kept (a bare `/` path dropped). A string that is not
/// an http(s)-like URL is cut at `?`/`#` and anything up to its last `@` is shown as `***@`,
/// so no password gets through whatever was given.
#[must_use]
pub fn display_url(url: &str) -> String {
    let t = url.trim();
    if let Ok(mut u) = url::Url::parse(t)
        && !u.cannot_be_a_base()
        && u.set_username("").is_ok()
        && u.set_password(None).is_ok()
    {
        u.set_query(None);
        u.set_fragment(None);
        let s = u.as_str();
        return if u.path() == "/" {
            s.strip_suffix('/').unwrap_or(s).to_string()
        } else {
            s.to_string()
        };
    }
    let t = &t[..t.find(['?', '#']).unwrap_or(t.len())];
    match t.rfind('@') {
        Some(at) => {
            let start = t.find("://").map_or(0, |i| i + 3).min(at);
            format!("{}***@{}", &t[..start], &t[at + 1..])
        }
        None => t.to_string(),
    }
}

/// The address of one of seam's API endpoints: `server` (`--server`) with `segments`
/// appended to its path (each percent-encoded as one segment), its query and fragment
/// dropped; the user name and password, if any, kept (reqwest sends them as basic auth).
///
/// # Errors
/// `server` is not an http(s) URL (the message shows it through [`display_url`]), or a
/// segment is `.` or `..` (path normalisation would drop it).
pub fn api_url(server: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let shown = display_url(server);
    let mut url = reqwest::Url::parse(server.trim()).with_context(|| {
        format!("--server {shown:?} is not a URL (for example http://127.0.0.1:7317)")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--server {shown:?} is not an http(s) URL (for example http://127.0.0.1:7317)");
    }
    if let Some(s) = segments.iter().find(|s| matches!(**s, "." | "..")) {
        bail!("{s:?} cannot be a path segment of a URL");
    }
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--server {shown:?} is not an http(s) URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_never_shows_a_password() {
        assert_eq!(
            display_url("http://admin:s3cr3tpw@127.0.0.1:1"),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            display_url("https://admin:s3cr3tpw@seam.example:8443/prefix/?k=v#f"),
            "https://seam.example:8443/prefix/"
        );
        assert_eq!(
            display_url("http://admin@127.0.0.1:7317/"),
            "http://127.0.0.1:7317"
        );
        assert_eq!(
            display_url(" http://127.0.0.1:7317 "),
            "http://127.0.0.1:7317"
        );
        assert_eq!(
            display_url("http://127.0.0.1:7317/a/b"),
            "http://127.0.0.1:7317/a/b"
        );
        // Not URLs (or not hierarchical ones): still no password.
        assert_eq!(display_url("admin:s3cr3tpw@127.0.0.1:1"), "***@127.0.0.1:1");
        assert_eq!(
            display_url("http://admin:s3/cr3t@127.0.0.1:1"),
            "http://***@127.0.0.1:1"
        );
        assert_eq!(display_url("127.0.0.1:7317?token=x"), "127.0.0.1:7317");
        for u in [
            "http://admin:s3cr3tpw@127.0.0.1:1",
            "admin:s3cr3tpw@host",
            "ftp://admin:s3cr3tpw@host/x",
            "http://admin:s3cr3tpw@[::1",
            "http://h/?password=s3cr3tpw",
        ] {
            assert!(!display_url(u).contains("s3cr3tpw"), "{u}");
        }
    }

    #[test]
    fn api_urls_keep_host_and_prefix_and_drop_query_and_fragment() {
        let u = api_url(
            "http://admin:pw@127.0.0.1:7317/?x=1#f",
            &["api", "v1", "sql"],
        )
        .unwrap();
        assert_eq!(u.as_str(), "http://admin:pw@127.0.0.1:7317/api/v1/sql");
        let u = api_url("https://seam.example/prefix/", &["api", "v1", "a/b c"]).unwrap();
        assert_eq!(u.as_str(), "https://seam.example/prefix/api/v1/a%2Fb%20c");
        assert!(api_url("127.0.0.1:7317", &["x"]).is_err());
        assert!(api_url("ftp://h/", &["x"]).is_err());
        assert!(api_url("http://h/", &["a", ".."]).is_err());
        let e = api_url("admin:s3cr3tpw@host", &["x"]).unwrap_err();
        assert!(!format!("{e:#}").contains("s3cr3tpw"), "{e:#}");
    }
}
