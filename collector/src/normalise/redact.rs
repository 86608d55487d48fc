//! Credential redaction by attribute key.
//!
//! Takes attribute keys; says whether their values carry credentials (Authorization and
//! Proxy-Authorization headers, cookies, API and subscription keys, passwords, client
//! secrets). Such values are replaced by [`MARKER`] before anything is stored. This is a key
//! check, not a regex per value; finding tokens inside free text and keeping their identity
//! is the token stage's job.

/// What replaces a redacted value.
pub const MARKER: &str = "<redacted>";

/// Header or attribute names (the last dotted segment, lower case) whose values are secret.
const SECRET_NAMES: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "apikey",
    "api_key",
    "x-functions-key",
    "ocp-apim-subscription-key",
    "subscription-key",
    "x-amz-security-token",
    "password",
    "passwd",
    "client_secret",
    "client-secret",
    "secret",
    "access_token",
    "refresh_token",
    "id_token",
];

/// Whether values under `key` must be redacted.
pub fn is_sensitive_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or(&lower);
    SECRET_NAMES.contains(&last)
        || last.ends_with("password")
        || last.ends_with("_secret")
        || last.ends_with("-secret")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for k in [
            "http.request.header.authorization",
            "Authorization",
            "http.request.header.cookie",
            "http.response.header.set-cookie",
            "http.request.header.ocp-apim-subscription-key",
            "http.request.header.x-api-key",
            "db.password",
            "oauth.client_secret",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in [
            "http.route",
            "url.full",
            "correlation.id",
            "enduser.id",
            "http.method",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }
}
