//! Token identity and secret scrubbing in text.
//!
//! Takes attribute values and free text that may carry bearer tokens (an `Authorization`
//! header, a JWT inside a JSON string, `Bearer …` in a log line); gives
//! - the token's identity: its keyed fingerprint (`hmac-sha256:<kid>:<32 hex>`, exactly as
//!   `tests/fixtures/README.md` defines it) and the claims read from a JWT payload without the
//!   signing key (`iss`, `aud`, `sub`, `oid`, `azp`/`appid`, `tid`, `uti`/`jti`, `iat`, `nbf`,
//!   `exp`, `scp`/`scope`, `roles`, `idtyp`, `ver`, Okta's `cid`/`uid`);
//! - the text with every token replaced by a marker that keeps it readable and joinable
//!   (`Bearer <redacted hmac-sha256:k1:…>`), and with secrets in query strings, JSON and
//!   `key=value` text (`subscription-key`, `api_key`, `client_secret`, `password`, …) replaced
//!   by `<redacted>`.
//!
//! Nothing here fails a record: an opaque token, a JWT with bad base64 or a payload that is
//! not JSON, or an oversized token is identified by its fingerprint only, and the reason is
//! reported. Scanning is a linear pass over the bytes (no regex per value); configured extra
//! patterns are the only regexes.

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value as Json;
use sha2::Sha256;

/// Longest token (bytes) whose claims are read; longer ones get a fingerprint only.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// One fingerprint key.
#[derive(Clone, PartialEq, Eq)]
pub struct FingerprintKey {
    /// Key id, part of every fingerprint.
    pub kid: String,
    /// The secret.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FingerprintKey {{ kid: {:?}, secret: <redacted> }}",
            self.kid
        )
    }
}

/// Parses `kid=secret[,kid=secret...]` (commas or newlines between keys).
///
/// # Errors
/// An entry without `=`, an empty kid or secret, or a kid used twice.
pub fn parse_keys(text: &str) -> Result<Vec<FingerprintKey>, String> {
    let mut keys: Vec<FingerprintKey> = Vec::new();
    for (i, part) in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let Some((kid, secret)) = part.split_once('=') else {
            return Err(format!("fingerprint key {} is not kid=secret", i + 1));
        };
        let (kid, secret) = (kid.trim(), secret.trim());
        if kid.is_empty() || secret.is_empty() {
            return Err(format!(
                "fingerprint key {} has an empty kid or secret",
                i + 1
            ));
        }
        if kid.contains(':') {
            return Err(format!("fingerprint key id {kid:?} must not contain ':'"));
        }
        if keys.iter().any(|k| k.kid == kid) {
            return Err(format!("fingerprint key id {kid:?} appears twice"));
        }
        keys.push(FingerprintKey {
            kid: kid.to_string(),
            secret: secret.as_bytes().to_vec(),
        });
    }
    Ok(keys)
}

pub use seam_schemas::token::{Claims, TokenIdentity};

/// Token handling settings shared by the normalise stage.
#[derive(Debug, Clone, Default)]
pub struct TokenConfig {
    /// Fingerprint keys, current first.
    pub keys: Arc<Vec<FingerprintKey>>,
    /// Extra patterns whose matches are redacted in every text value.
    pub extra_patterns: Arc<Vec<regex::Regex>>,
    /// Extra attribute or parameter names whose values are secret.
    pub extra_secret_names: Arc<Vec<String>>,
    /// Links learned from raw tokens: an older-key fingerprint or `uti:<uti>` to the
    /// current-key fingerprint, so that a record carrying only those gets the same
    /// `token_id`. Bounded by [`MAX_LINKS`]; kept across restarts by
    /// [`TokenConfig::persist_links`].
    pub links: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// Where new links are appended (JSON lines `{"from": …, "to": …}`), when set.
    pub links_file: Option<Arc<std::sync::Mutex<std::fs::File>>>,
}

/// Most links kept; past it the map starts afresh.
pub const MAX_LINKS: usize = 1_000_000;

type HmacSha256 = Hmac<Sha256>;

fn fingerprint_with(key: &FingerprintKey, token: &str) -> Option<String> {
    let mut mac = HmacSha256::new_from_slice(&key.secret).ok()?;
    mac.update(token.as_bytes());
    let out = mac.finalize().into_bytes();
    Some(format!(
        "hmac-sha256:{}:{}",
        key.kid,
        &hex::encode(out)[..32]
    ))
}

fn b64url(part: &str) -> Option<Vec<u8>> {
    let trimmed = part.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
}

fn string_claim(v: &Json, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match v.get(n)? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn int_claim(v: &Json, name: &str) -> Option<i64> {
    match v.get(name)? {
        Json::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn list_claim(v: &Json, names: &[&str]) -> Vec<String> {
    for n in names {
        match v.get(n) {
            Some(Json::Array(items)) => {
                return items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect();
            }
            Some(Json::String(s)) => return s.split_whitespace().map(str::to_string).collect(),
            _ => {}
        }
    }
    Vec::new()
}

/// Reads the claims of a compact JWT without verifying it.
///
/// # Errors
/// The reason it cannot be read: `opaque`, `oversized`, `bad_base64` or `not_json`.
pub fn read_claims(token: &str) -> Result<Claims, &'static str> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("oversized");
    }
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("opaque");
    };
    let bytes = b64url(payload).ok_or("bad_base64")?;
    let v: Json = serde_json::from_slice(&bytes).map_err(|_| "not_json")?;
    if !v.is_object() {
        return Err("not_json");
    }
    Ok(claims_from_json(&v))
}

/// The claims seam keeps from a JSON object of claims (a JWT payload, or the claims a
/// gateway or an application logged).
pub fn claims_from_json(v: &Json) -> Claims {
    let audience = match v.get("aud") {
        Some(Json::Array(a)) => {
            let list: Vec<&str> = a.iter().filter_map(Json::as_str).collect();
            (!list.is_empty()).then(|| list.join(" "))
        }
        _ => string_claim(v, &["aud"]),
    };
    Claims {
        uti: string_claim(v, &["uti", "jti"]),
        subject: string_claim(v, &["sub", "uid"]),
        object_id: string_claim(v, &["oid"]),
        client_app: string_claim(v, &["azp", "appid", "cid", "client_id"]),
        tenant_id: string_claim(v, &["tid"]),
        issuer: string_claim(v, &["iss"]),
        audience,
        issued_at: int_claim(v, "iat"),
        not_before: int_claim(v, "nbf"),
        expires_at: int_claim(v, "exp"),
        scopes: list_claim(v, &["scp", "scope"]),
        roles: list_claim(v, &["roles"]),
        token_type: string_claim(v, &["idtyp"]),
        version: string_claim(v, &["ver"]),
    }
}

impl TokenConfig {
    /// Identifies a raw token (without any `Bearer ` prefix).
    pub fn identify(&self, token: &str) -> TokenIdentity {
        let mut keys = self.keys.iter();
        let fingerprint = keys.next().and_then(|k| fingerprint_with(k, token));
        let older_fingerprints: Vec<String> =
            keys.filter_map(|k| fingerprint_with(k, token)).collect();
        let (claims, unreadable) = match read_claims(token) {
            Ok(c) => (c, None),
            Err(reason) => (Claims::default(), Some(reason)),
        };
        if let Some(fp) = &fingerprint
            && let Ok(mut links) = self.links.lock()
        {
            if links.len() >= MAX_LINKS {
                links.clear();
            }
            let mut learned = Vec::new();
            for old in older_fingerprints.iter() {
                if links.insert(old.clone(), fp.clone()).as_ref() != Some(fp) {
                    learned.push(old.clone());
                }
            }
            if let Some(uti) = &claims.uti {
                let key = format!("uti:{uti}");
                if links.insert(key.clone(), fp.clone()).as_ref() != Some(fp) {
                    learned.push(key);
                }
            }
            drop(links);
            if !learned.is_empty() {
                self.append_links(&learned, fp);
            }
        }
        TokenIdentity {
            fingerprint,
            older_fingerprints,
            claims,
            unreadable,
        }
    }

    /// Loads the links recorded in `path` (JSON lines written by earlier runs; a damaged line
    /// is skipped) and appends new links to it from now on. The file holds fingerprints and
    /// token ids only, never a token or a key.
    ///
    /// # Errors
    /// The file cannot be read or opened for appending.
    pub fn persist_links(&mut self, path: &std::path::Path) -> std::io::Result<usize> {
        let mut loaded = 0;
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(mut links) = self.links.lock()
        {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Json>(line) else {
                    continue;
                };
                if let (Some(from), Some(to)) = (v["from"].as_str(), v["to"].as_str()) {
                    links.insert(from.to_string(), to.to_string());
                    loaded += 1;
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        self.links_file = Some(Arc::new(std::sync::Mutex::new(file)));
        Ok(loaded)
    }

    fn append_links(&self, from: &[String], to: &str) {
        let Some(file) = &self.links_file else {
            return;
        };
        let mut text = String::new();
        for f in from {
            text.push_str(&serde_json::json!({"from": f, "to": to}).to_string());
            text.push('\n');
        }
        if let Ok(mut f) = file.lock() {
            use std::io::Write as _;
            if let Err(e) = f.write_all(text.as_bytes()) {
                tracing::warn!(error = %e, "Could not record a token link.");
            }
        }
    }

    /// The identity of a token a producer reported only by fingerprint and/or `uti`: the
    /// fingerprint becomes the current-key fingerprint when a raw token taught the link.
    pub fn reported(&self, fingerprint: Option<String>, uti: Option<String>) -> TokenIdentity {
        let links = self.links.lock().ok();
        let lookup = |k: &str| links.as_ref().and_then(|l| l.get(k).cloned());
        let canonical = fingerprint
            .as_deref()
            .and_then(lookup)
            .or_else(|| uti.as_ref().and_then(|u| lookup(&format!("uti:{u}"))))
            .or(fingerprint);
        TokenIdentity {
            fingerprint: canonical,
            claims: Claims {
                uti,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The marker that replaces a token.
    fn marker(&self, id: &TokenIdentity) -> String {
        match (&id.fingerprint, &id.claims.uti) {
            (Some(fp), _) => format!("<redacted {fp}>"),
            (None, Some(uti)) => format!("<redacted uti:{uti}>"),
            (None, None) => "<redacted>".to_string(),
        }
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Finds the end of a JWT starting at `start` (three base64url parts); when there is none,
/// `Err` gives where the scan stopped: no JWT starts anywhere before it either, so the
/// scanner need not look again (linear cost, whatever the text).
fn jwt_at(bytes: &[u8], start: usize) -> Result<usize, usize> {
    let mut i = start;
    let mut dots = 0;
    let mut part_len = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_b64url(b) {
            part_len += 1;
        } else if b == b'.' && part_len > 0 && dots < 2 {
            dots += 1;
            part_len = 0;
        } else {
            break;
        }
        i += 1;
    }
    if dots == 2 && part_len > 0 {
        Ok(i)
    } else {
        Err(i)
    }
}

/// What scrubbing found in a text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scrubbed {
    /// The text with tokens and secrets replaced.
    pub text: String,
    /// The first token found, identified.
    pub token: Option<TokenIdentity>,
    /// Whether anything was replaced.
    pub changed: bool,
}

/// Names whose values are secrets in query strings, JSON and `key=value` text, compared
/// without case, `-` and `_` (so `accessToken`, `access_token` and `Access-Token` are one).
const SECRET_PARAMS: &[&str] = &[
    "subscriptionkey",
    "ocpapimsubscriptionkey",
    "apikey",
    "xapikey",
    "apitoken",
    "token",
    "authtoken",
    "xauthtoken",
    "jwt",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "bearertoken",
    "sessiontoken",
    "securitytoken",
    "xamzsecuritytoken",
    "clientsecret",
    "privatekey",
    "secretkey",
    "accesskey",
    "sharedaccesskey",
    "accountkey",
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "secret",
    "credential",
    "credentials",
    "sig",
    "signature",
    "code",
    "session",
    "sessionid",
    "xfunctionskey",
];

/// `name` lower-cased without `-`, `_` and `.`, for comparing secret names.
pub(crate) fn squash(name: &str) -> String {
    name.bytes()
        .filter(|b| !matches!(b, b'-' | b'_' | b'.'))
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}

/// Whether `name` (a parameter, JSON key, header or attribute name) names a secret: one of
/// `SECRET_PARAMS`, or ending in `password`, `secret`, `token`, `apikey` or `privatekey`
/// (`db_password`, `clientSecret`, `x-csrf-token`), or configured.
pub fn is_secret_name(name: &str, extra: &[String]) -> bool {
    let n = squash(name);
    if n.is_empty() {
        return false;
    }
    SECRET_PARAMS.contains(&n.as_str())
        || [
            "password",
            "secret",
            "token",
            "apikey",
            "privatekey",
            "passwd",
            "secretkey",
            "accesskey",
        ]
        .iter()
        .any(|suffix| n.ends_with(suffix))
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

impl TokenConfig {
    /// Whether `key` (an attribute key; its last dotted segment counts) was configured as
    /// secret.
    pub fn is_extra_secret_name(&self, key: &str) -> bool {
        if self.extra_secret_names.is_empty() {
            return false;
        }
        let last = key.rsplit('.').next().unwrap_or(key);
        self.extra_secret_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(key) || n.eq_ignore_ascii_case(last))
    }

    /// Replaces tokens and secrets in `text`.
    pub fn scrub(&self, text: &str) -> Scrubbed {
        match self.scan(text) {
            Some(s) => s,
            None => Scrubbed {
                text: text.to_string(),
                ..Default::default()
            },
        }
    }

    /// Like [`TokenConfig::scrub`], taking the text by value: when nothing is found (the
    /// common case) it is handed back without a copy.
    pub fn scrub_owned(&self, text: String) -> Scrubbed {
        match self.scan(&text) {
            Some(s) => s,
            None => Scrubbed {
                text,
                ..Default::default()
            },
        }
    }

    /// The scrubbed text when anything in `text` had to be replaced; `None` (and no
    /// allocation) when nothing did.
    pub fn scan(&self, text: &str) -> Option<Scrubbed> {
        let bytes = text.as_bytes();
        // Fast path: nothing that could start a token, a credential or a secret assignment.
        let maybe = !self.extra_patterns.is_empty()
            || bytes.iter().any(|b| {
                matches!(
                    b,
                    b'=' | b':' | b'%' | b'b' | b'B' | b'e' | b'>' | b'-' | b'A'
                )
            });
        if !maybe {
            return None;
        }
        let mut out = String::new();
        let mut token = None;
        let mut changed = false;
        let mut i = 0;
        let mut copied = 0;
        // No JWT starts before this offset (a failed attempt already looked that far).
        let mut no_jwt_before = 0;
        while i < bytes.len() {
            if let Some(hit) = self.hit_at(text, i, &mut no_jwt_before) {
                if text[hit.start..hit.end] != hit.replacement {
                    out.push_str(&text[copied..hit.start]);
                    out.push_str(&hit.replacement);
                    copied = hit.end;
                    changed = true;
                }
                if let Some(id) = hit.token {
                    token.get_or_insert(id);
                }
                i = hit.end.max(i + 1);
                continue;
            }
            i += 1;
        }
        if changed {
            out.push_str(&text[copied..]);
        }
        for re in self.extra_patterns.iter() {
            let current = if changed { out.as_str() } else { text };
            if re.is_match(current) {
                out = re.replace_all(current, "<redacted>").into_owned();
                changed = true;
            }
        }
        (changed || token.is_some()).then(|| Scrubbed {
            text: if changed { out } else { text.to_string() },
            token,
            changed,
        })
    }
}

/// Something to replace in a text: the byte span, what replaces it, and the token it was.
struct Hit {
    start: usize,
    end: usize,
    replacement: String,
    token: Option<TokenIdentity>,
}

impl TokenConfig {
    /// What starts at byte `i` of `text` and must be replaced, if anything: `Bearer <token>`
    /// (any token), `Basic` credentials, a bare JWT, the password of a URL, the value after
    /// a secret name (`name=`, `name:`, `name%3D`, `<name>`), a private key block or an AWS
    /// access key id. Every check costs a bounded amount per position, or skips ahead
    /// (`no_jwt_before`), so a scan is linear in the text.
    fn hit_at(&self, text: &str, i: usize, no_jwt_before: &mut usize) -> Option<Hit> {
        let bytes = text.as_bytes();
        let token_hit = |start: usize, end: usize| {
            let id = self.identify(&text[start..end]);
            Hit {
                start,
                end,
                replacement: self.marker(&id),
                token: Some(id),
            }
        };
        let secret_hit = |(start, end): (usize, usize)| Hit {
            start,
            end,
            replacement: "<redacted>".to_string(),
            token: None,
        };
        match bytes[i] {
            b'B' | b'b' if word_start(bytes, i) => {
                if let Some(start) = after_scheme(bytes, i, b"bearer") {
                    let end = start
                        + bytes[start..]
                            .iter()
                            .take_while(|b| is_credential_char(**b))
                            .count();
                    return (end > start).then(|| token_hit(start, end));
                }
                let start = after_scheme(bytes, i, b"basic")?;
                basic_credentials_end(bytes, start).map(|end| secret_hit((start, end)))
            }
            b'e' if i >= *no_jwt_before && bytes[i..].starts_with(b"eyJ") => {
                let end = match jwt_at(bytes, i) {
                    Ok(end) => end,
                    Err(stop) => {
                        *no_jwt_before = stop;
                        return None;
                    }
                };
                // Glued to other base64url text (`Bearer%20eyJ…`, a prefix), it is still a
                // token when its payload is JSON too (`eyJ…​.eyJ…​.…`): found by fuzzing.
                let bounded = i == 0 || !is_b64url(bytes[i - 1]);
                let dot = bytes[i..end].iter().position(|b| *b == b'.').unwrap_or(0);
                let payload_json = bytes[i + dot + 1..end].starts_with(b"eyJ");
                if bounded || payload_json {
                    Some(token_hit(i, end))
                } else {
                    // Every start before the first dot has the same payload.
                    *no_jwt_before = i + dot + 1;
                    None
                }
            }
            b':' if bytes[i..].starts_with(b"://") => {
                url_password_span(bytes, i + 3).map(secret_hit)
            }
            b'=' | b':' => secret_value_span(text, i, 1, &self.extra_secret_names).map(secret_hit),
            b'%' if bytes.len() > i + 2
                && bytes[i + 1] == b'3'
                && matches!(bytes[i + 2], b'D' | b'd' | b'A' | b'a') =>
            {
                secret_value_span(text, i, 3, &self.extra_secret_names).map(secret_hit)
            }
            b'>' => xml_secret_span(text, i, &self.extra_secret_names).map(secret_hit),
            b'-' if bytes[i..].starts_with(b"-----BEGIN ") => {
                private_key_span(bytes, i).map(secret_hit)
            }
            b'A' if word_start(bytes, i) && bytes[i..].starts_with(b"AKIA") => {
                let id = bytes.get(i + 4..i + 20)?;
                let after = bytes.get(i + 20).copied().unwrap_or(b' ');
                (id.iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                    && !after.is_ascii_alphanumeric())
                .then(|| secret_hit((i, i + 20)))
            }
            _ => None,
        }
    }
}

/// Whether a word starts at `i`: the text begins there, or the byte before is not a letter
/// or digit, or it ends a URL escape (`%20Bearer`).
fn word_start(bytes: &[u8], i: usize) -> bool {
    i == 0
        || !bytes[i - 1].is_ascii_alphanumeric()
        || (i >= 3
            && bytes[i - 3] == b'%'
            && bytes[i - 2].is_ascii_hexdigit()
            && bytes[i - 1].is_ascii_hexdigit())
}

/// A byte that may belong to a credential after `Bearer`: anything but white space, quotes
/// and the delimiters around values in headers, JSON, XML and query strings.
fn is_credential_char(b: u8) -> bool {
    b > b' '
        && b != 0x7f
        && !matches!(
            b,
            b'"' | b'\'' | b'\\' | b'<' | b'>' | b',' | b';' | b'&' | b')' | b']' | b'}'
        )
}

/// The `BEGIN … PRIVATE KEY` block (PEM) starting at `i`, to its `END` line or the end of
/// the text.
fn private_key_span(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    let header_end = i
        + 11
        + bytes
            .get(i + 11..)?
            .iter()
            .take(64)
            .position(|b| *b == b'-')?;
    if !bytes[i..header_end].ends_with(b"PRIVATE KEY ")
        && !bytes[i..header_end].ends_with(b"PRIVATE KEY")
    {
        return None;
    }
    let body_start = header_end
        + bytes[header_end..]
            .iter()
            .take_while(|b| **b == b'-')
            .count();
    let end = bytes[body_start..]
        .windows(8)
        .position(|w| w == b"-----END")
        .map_or(bytes.len(), |p| body_start + p);
    (end > body_start).then_some((body_start, end))
}

/// The text of an XML element whose name is a secret (`<password>x</password>`,
/// `<wsse:Password Type="…">x</wsse:Password>`), when `at` is the `>` closing its start tag.
fn xml_secret_span(text: &str, at: usize, extra: &[String]) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    // The start tag: back to its `<`, within 128 bytes.
    let from = at.saturating_sub(128);
    let lt = from + bytes[from..at].iter().rposition(|b| *b == b'<')?;
    let tag = &text[lt + 1..at];
    let name = tag.split([' ', '\t', '\n', '/']).next().unwrap_or("");
    let local = name.rsplit(':').next().unwrap_or(name);
    if local.is_empty() || tag.ends_with('/') || !is_secret_name(local, extra) {
        return None;
    }
    let start = at + 1;
    let end = start
        + bytes[start..]
            .iter()
            .position(|b| *b == b'<')
            .unwrap_or(bytes.len() - start);
    (end > start).then_some((start, end))
}

/// Where the credentials after an HTTP auth scheme word (`bearer`, `basic`) at `i` start:
/// the word, then one or more separators: spaces, tabs, line breaks (header folding), a
/// no-break space, `:` or `=`, or their escapes (`%20`, `%09`, `%2520`, `+`, `\t`, `\n`).
fn after_scheme(bytes: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    let end = i.checked_add(word.len())?;
    if bytes.len() <= end || !bytes[i..end].eq_ignore_ascii_case(word) {
        return None;
    }
    let mut j = end;
    loop {
        let rest = &bytes[j.min(bytes.len())..];
        let step = match rest {
            [b' ' | b'\t' | b'\r' | b'\n' | b'+' | b':' | b'=', ..] => 1,
            [0xc2, 0xa0, ..] => 2,
            [b'%', b'2', b'5', b'2', b'0', ..] => 5,
            [b'%', b'2', b'0', ..] | [b'%', b'0', b'9', ..] => 3,
            [b'\\', b't' | b'n' | b'r', ..] => 2,
            _ => 0,
        };
        if step == 0 {
            break;
        }
        j += step;
    }
    (j > end && j < bytes.len()).then_some(j)
}

/// The end of Basic credentials (base64 of `user:password`) starting at `start`, when the
/// text there is such credentials (so "a basic example" is left alone).
fn basic_credentials_end(bytes: &[u8], start: usize) -> Option<usize> {
    // Credentials are short: reading at most this much keeps the scan linear.
    const MAX: usize = 2048;
    let len = bytes[start..]
        .iter()
        .take(MAX + 1)
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .count();
    if !(4..=MAX).contains(&len) {
        return None;
    }
    let end = start + len;
    let text = std::str::from_utf8(&bytes[start..end]).ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('='))
        })
        .ok()?;
    decoded.contains(&b':').then_some(end)
}

/// The password of `user:password@host` in the authority starting at `start`, if any.
fn url_password_span(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let mut end = start;
    while end < bytes.len()
        && !matches!(
            bytes[end],
            b'/' | b'?' | b'#' | b' ' | b'"' | b'\'' | b'\n' | b'<' | b'>'
        )
    {
        end += 1;
    }
    let authority = &bytes[start..end];
    let at = authority.iter().rposition(|b| *b == b'@')?;
    let colon = authority[..at].iter().position(|b| *b == b':')?;
    (colon + 1 < at).then_some((start + colon + 1, start + at))
}

/// Names whose whole value, to the end of the line, is a credential in text
/// (`Authorization: Negotiate …`, `Cookie: a=1; b=2`); compared squashed.
const LINE_SECRET_NAMES: &[&str] = &["authorization", "proxyauthorization", "cookie", "setcookie"];

/// When the separator (`=`, `:`, or `%3D`/`%3A`: `sep_len` bytes) at `at` follows a secret
/// name, the byte span of its value. Spaces around the separator, double or single quotes,
/// JSON-escaped quotes and `=>` are allowed.
fn secret_value_span(
    text: &str,
    at: usize,
    sep_len: usize,
    extra: &[String],
) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    // The name: letters, digits, '-', '_' before the separator, skipping spaces and a
    // closing quote (escaped at any depth inside JSON strings: `{\"password\":…}`).
    let mut name_end = at;
    while name_end > 0 && matches!(bytes[name_end - 1], b' ' | b'\t') && at - name_end < 16 {
        name_end -= 1;
    }
    if name_end > 0 && matches!(bytes[name_end - 1], b'"' | b'\'') {
        name_end -= 1;
        while name_end > 0 && bytes[name_end - 1] == b'\\' {
            name_end -= 1;
        }
    }
    let mut name_start = name_end;
    while name_start > 0
        && name_end - name_start < 128
        && (bytes[name_start - 1].is_ascii_alphanumeric()
            || matches!(bytes[name_start - 1], b'-' | b'_'))
    {
        name_start -= 1;
    }
    let name = &text[name_start..name_end];
    let squashed = squash(name);
    let whole_line = LINE_SECRET_NAMES.contains(&squashed.as_str());
    if name.is_empty() || (!whole_line && !is_secret_name(name, extra)) {
        return None;
    }
    let mut v = at + sep_len;
    if bytes.get(v) == Some(&b'>') && bytes[at] == b'=' {
        v += 1; // `password => x`
    }
    while v < bytes.len() && matches!(bytes[v], b' ' | b'\t') {
        v += 1;
    }
    if v >= bytes.len() {
        return None;
    }
    if whole_line {
        // A Bearer or Basic value is left to the scheme scanner (it keeps the fingerprint).
        let rest = &bytes[v..];
        if rest.len() > 6
            && (rest[..6].eq_ignore_ascii_case(b"bearer")
                || rest[..5].eq_ignore_ascii_case(b"basic"))
        {
            return None;
        }
        let end = v + rest
            .iter()
            .position(|b| matches!(b, b'\n' | b'\r' | b'"' | b'\\'))
            .unwrap_or(rest.len());
        return (end > v && &text[v..end] != "<redacted>").then_some((v, end));
    }
    let mut q = v;
    while q < bytes.len() && bytes[q] == b'\\' {
        q += 1;
    }
    if q > v && q < bytes.len() && bytes[q] == b'"' {
        // An escaped quote opens the value: it ends at the next escaped quote.
        let start = q + 1;
        let mut end = start;
        while end < bytes.len() && !(bytes[end] == b'"' && bytes[end - 1] == b'\\') {
            end += 1;
        }
        let mut value_end = end.min(bytes.len());
        while value_end > start && bytes[value_end - 1] == b'\\' {
            value_end -= 1;
        }
        return (value_end > start).then_some((start, value_end));
    }
    if matches!(bytes[v], b'"' | b'\'') {
        let quote = bytes[v];
        let start = v + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end] != quote {
            if bytes[end] == b'\\' {
                end += 1;
            }
            end += 1;
        }
        let end = end.min(bytes.len());
        return (end > start).then_some((start, end));
    }
    if matches!(bytes[v], b'{' | b'[') {
        // A JSON object or list under the name (`"password":{"x":…}`): its values are
        // redacted one by one by the record's secret list; cutting at its first quote would
        // only break the JSON.
        let mut n = v + 1;
        while n < bytes.len() && matches!(bytes[n], b' ' | b'\t' | b'\n' | b'\r') {
            n += 1;
        }
        if n >= bytes.len() || matches!(bytes[n], b'"' | b'{' | b'[' | b']' | b'}' | b'\\') {
            return None;
        }
    }
    let start = v;
    let mut end = start;
    while end < bytes.len()
        && !matches!(
            bytes[end],
            b'&' | b' ' | b',' | b';' | b'"' | b'\'' | b'\n' | b'\r' | b'\t' | b'}' | b'#' | b'<'
        )
        && !bytes[end..].starts_with(b"%26")
    {
        end += 1;
    }
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TokenConfig {
        TokenConfig {
            keys: Arc::new(parse_keys("k1=contoso-demo-fp-key-v1").unwrap()),
            ..Default::default()
        }
    }

    const T1: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6ImRlbW8ta2lkLTEifQ.eyJhdWQiOiJhcGk6Ly9vcmRlcnMtcGxhdGZvcm0iLCJpc3MiOiJodHRwczovL2xvZ2luLm1pY3Jvc29mdG9ubGluZS5jb20vNGE3YzFlMmQtOWIzZi00ZDZhLThlNWMtMWYyYTNiNGM1ZDZlL3YyLjAiLCJpYXQiOjE3MzA3OTcxMjAsIm5iZiI6MTczMDc5NzEyMCwiZXhwIjoxNzMwODAwNzIwLCJhenAiOiIwZDhmM2MyYS02YjFlLTRmN2EtOWM1ZC0yZTRiNmE4YzBmMTMiLCJhenBhY3IiOiIxIiwiaWR0eXAiOiJhcHAiLCJvaWQiOiJlM2IxYzJkNC01ZjZhLTRiN2MtOGQ5ZS0wZjFhMmIzYzRkNWUiLCJzdWIiOiJlM2IxYzJkNC01ZjZhLTRiN2MtOGQ5ZS0wZjFhMmIzYzRkNWUiLCJyb2xlcyI6WyJPcmRlcnMuUmVhZFdyaXRlLkFsbCJdLCJ0aWQiOiI0YTdjMWUyZC05YjNmLTRkNmEtOGU1Yy0xZjJhM2I0YzVkNmUiLCJ1dGkiOiJrVDNtUXg5WnhVZUEwYlljN2RXMkFBIiwidmVyIjoiMi4wIn0.c3ludGhldGljLXVuc2lnbmVkLXNpZ25hdHVyZS0x";

    #[test]
    fn fingerprint_and_claims_match_the_ground_truth() {
        let id = config().identify(T1);
        assert_eq!(
            id.fingerprint.as_deref(),
            Some("hmac-sha256:k1:fa861f368f863db0bedf8be355831617")
        );
        assert_eq!(id.claims.uti.as_deref(), Some("kT3mQx9ZxUeA0bYc7dW2AA"));
        assert_eq!(
            id.claims.client_app.as_deref(),
            Some("0d8f3c2a-6b1e-4f7a-9c5d-2e4b6a8c0f13")
        );
        assert_eq!(id.claims.expires_at, Some(1_730_800_720));
        assert_eq!(id.claims.roles, vec!["Orders.ReadWrite.All".to_string()]);
        assert_eq!(id.token_id(), id.fingerprint);
    }

    #[test]
    fn scrubs_tokens_glued_to_other_text_and_token_parameters() {
        // Found by fuzzing (fuzz/regressions/redact): a JWT right after base64url text.
        let c = config();
        for text in [
            format!("GET /cb?h=Bearer%20{T1}&x=1"),
            format!("sig{T1}"),
            format!("/login?token=abc{T1}"),
            "session=abcdef123; theme=dark".to_string(),
        ] {
            let out = c.scrub(&text).text;
            assert!(
                !out.contains("eyJ0eXAi") && !out.contains("abcdef123"),
                "{out}"
            );
        }
        // Random base64url text that merely contains eyJ is left alone.
        let blob = "QUJDeyJhIjoxfQ.eyJhbGxv";
        assert_eq!(c.scrub(blob).text, blob);
    }

    #[test]
    fn scrubs_bearer_jwt_in_json_and_secrets() {
        let c = config();
        let s = c.scrub(&format!("Bearer {T1}"));
        assert_eq!(
            s.text,
            "Bearer <redacted hmac-sha256:k1:fa861f368f863db0bedf8be355831617>"
        );
        let s = c.scrub(&format!(
            r#"{{"headers":{{"auth":"{T1}"}},"password":"hunter2"}}"#
        ));
        assert!(
            !s.text.contains("eyJ") && !s.text.contains("hunter2"),
            "{}",
            s.text
        );
        assert!(s.token.is_some());
        let s = c.scrub("GET /orders?subscription-key=abc123&x=1 with bearer opaque-tok_1");
        assert_eq!(
            s.text,
            "GET /orders?subscription-key=<redacted>&x=1 with bearer <redacted hmac-sha256:k1:"
                .to_string()
                + &s.text[s.text.len() - 33..]
        );
        assert_eq!(s.token.unwrap().unreadable, Some("opaque"));
        let s = c.scrub("jdbc postgres://svc:S3cr3t!@db.example:5432/x and https://host/p");
        assert_eq!(
            s.text,
            "jdbc postgres://svc:<redacted>@db.example:5432/x and https://host/p"
        );
        // JSON inside a JSON string, Basic credentials, camelCase secret names.
        let s = c.scrub(r#"{"note":"{\"clientSecret\":\"cs-1\",\"x\":1}"}"#);
        assert!(!s.text.contains("cs-1"), "{}", s.text);
        let s = c.scrub("Authorization: Basic c3ZjOnB3LTE= and a basic example");
        assert_eq!(
            s.text,
            "Authorization: Basic <redacted> and a basic example"
        );
        let s = c.scrub("Bearer  opaque-2 / Bearer%20opaque-3 accessToken=at-4 x-auth-token: xa-5");
        for secret in ["opaque-2", "opaque-3", "at-4", "xa-5"] {
            assert!(!s.text.contains(secret), "{}", s.text);
        }
        let plain = c.scrub("nothing to see: a=b");
        assert!(!plain.changed);
    }

    #[test]
    fn forms_found_by_the_review_are_redacted() {
        let c = config();
        let forms = [
            "?q=Authorization%3A%20Bearer%20CORE1",
            "/cb?password%3DCORE1&x=1",
            "x%20Bearer%20CORE1",
            "Authorization: Bearer\r\n\tCORE1",
            "Bearer\u{a0}CORE1",
            "bearer%09CORE1 and bearer%2520CORE1",
            "{\"h\":\"Bearer\\tCORE1\"}",
            "bearer:CORE1 bearer=CORE1",
            "Authorization: Bearer abc|CORE1",
            "Authorization: Token CORE1",
            "Authorization: Negotiate CORE1",
            "authorization: CORE1",
            "Authorization=CORE1",
            "Cookie: JSESSIONID=CORE1; theme=dark",
            "Set-Cookie: .AspNetCore.Cookies=CORE1; path=/",
            "password = CORE1",
            "{\"password\" : \"CORE1\"}",
            "password:\tCORE1",
            "password => CORE1",
            "{'client_secret': 'CORE1'}",
            "<password>CORE1</password>",
            "<wsse:Password Type=\"PasswordText\">CORE1</wsse:Password>",
            "aws_secret_access_key=CORE1",
            "{\"SecretAccessKey\": \"CORE1\"}",
            "key id AKIAIOSFODNN7CORE1XY here",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowCORE1\n-----END RSA PRIVATE KEY-----",
        ];
        for text in forms {
            let out = c.scrub(text).text;
            assert!(!out.contains("CORE1"), "{text:?} -> {out:?}");
        }
        // Ordinary text stays as it is.
        for text in [
            "a basic example: the token is checked",
            "status=200 path=/orders/1 code_version=3",
            "<name>orders</name> -----BEGIN CERTIFICATE-----",
        ] {
            assert_eq!(c.scrub(text).text, text);
        }
    }

    #[test]
    fn scanning_is_linear_in_the_text() {
        // Each of these took quadratic time (25 s at 60 KB before): a megabyte is quick now.
        let c = config();
        for unit in [
            "eyJ",
            "basic+",
            "xeyJa.b.c",
            "Bearer:",
            "password:\"",
            "<",
            ":/",
        ] {
            let text = unit.repeat((1 << 20) / unit.len());
            let out = c.scrub(&text);
            assert!(out.text.len() <= text.len() + 64 || out.changed, "{unit}");
        }
    }

    #[test]
    fn malformed_tokens_never_fail() {
        assert_eq!(
            read_claims("eyJa.!!!.x"),
            Err("opaque").or(Err("bad_base64"))
        );
        assert_eq!(
            read_claims("eyJhbGciOiJub25lIn0.bm90IGpzb24.c2ln"),
            Err("not_json")
        );
        assert_eq!(read_claims(&"a.".repeat(20_000)), Err("oversized"));
        let id = config().identify("eyJhbGciOiJub25lIn0.bm90IGpzb24.c2ln");
        assert!(id.fingerprint.is_some());
        assert_eq!(id.unreadable, Some("not_json"));
    }

    #[test]
    fn keys_parse_and_rotate() {
        let keys = parse_keys("k2=new-secret, k1=contoso-demo-fp-key-v1").unwrap();
        let c = TokenConfig {
            keys: Arc::new(keys),
            ..Default::default()
        };
        let id = c.identify(T1);
        assert!(id.fingerprint.unwrap().starts_with("hmac-sha256:k2:"));
        assert_eq!(
            id.older_fingerprints,
            vec!["hmac-sha256:k1:fa861f368f863db0bedf8be355831617".to_string()]
        );
        assert!(parse_keys("k1").is_err());
        assert!(parse_keys("k1=a,k1=b").is_err());
        assert!(format!("{:?}", c.keys).contains("<redacted>"));
    }
}
