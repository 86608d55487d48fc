//! Credential redaction by attribute key.
//!
//! Takes attribute keys; says whether their values carry credentials (Authorization and
//! Proxy-Authorization headers, cookies, API and subscription keys, passwords, client
//! secrets). Such values are replaced by [`MARKER`] before anything is stored. This is a key
//! check, not a regex per value; finding tokens inside free text and keeping their identity
//! is the token stage's job.

/// What replaces a redacted value.
pub const MARKER: &str = "<redacted>";

/// Header names whose whole value is a credential, beyond the secret names shared with
/// the text scanner ([`super::token::is_secret_name`]): compared lower case without `-`/`_`.
const HEADER_NAMES: &[&str] = &["authorization", "proxyauthorization", "cookie", "setcookie"];

/// Whether values under `key` (an attribute, header, JSON or map key; its last dotted
/// segment counts) must be redacted whole. The one list of secret names: the text scanner
/// uses the same [`super::token::is_secret_name`].
pub fn is_sensitive_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    let squashed = super::token::squash(last);
    // `code` is a secret as an OAuth parameter (`?code=`), not as a key (`error.code`).
    squashed != "code"
        && (HEADER_NAMES.contains(&squashed.as_str()) || super::token::is_secret_name(last, &[]))
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
            "accessToken",
            "clientSecret",
            "private_key",
            "api_token",
            "x-auth-token",
            "http.request.header.x-auth-token",
            "auth_token",
            "token",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in [
            "http.route",
            "url.full",
            "correlation.id",
            "enduser.id",
            "http.method",
            "error.code",
            "http.response.status_code",
            "token.fingerprint",
            "token.uti",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }
}
