//! Credentials and roles.
//!
//! Takes key entries (`[[auth.keys]]` in seam's configuration, or `[[keys]]` in a separate
//! keys file that is re-read on SIGHUP and when it changes); gives [`Principal`]s for the
//! credentials clients present: `Authorization: Bearer <key>`, `Authorization: Basic
//! base64(name:key)`, `x-api-key: <key>`, or a PostgreSQL login (SCRAM-SHA-256).
//!
//! A key is stored as the SHA-256 digest of its secret (and, for PostgreSQL logins, as a
//! SCRAM salted password); a presented secret is hashed once and compared with every stored
//! digest in constant time, without stopping at the first match. Keys from
//! [`generate_secret`] carry 256 random bits, so a plain SHA-256 digest cannot be reversed
//! (a slow password hash protects guessable passwords, which these are not).
//!
//! Roles: `ingest` (OTLP and the `/ingest/*` endpoints), `query` (SQL over HTTP and
//! PostgreSQL, `/metrics`) and `admin` (everything `query` may, plus `seam_audit` and admin
//! actions such as `POST /api/v1/correlate`). A key holds one or more roles.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send telemetry and logs: OTLP gRPC and HTTP, `/ingest/apim`, `/ingest/mule`.
    Ingest,
    /// Run SQL (HTTP API, PostgreSQL wire) and read `/metrics`.
    Query,
    /// Everything `query` may, plus `seam_audit` and admin actions.
    Admin,
}

impl Role {
    /// The role's configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Query => "query",
            Role::Admin => "admin",
        }
    }

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ingest" => Some(Role::Ingest),
            "query" => Some(Role::Query),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No credentials are configured (loopback only): everyone may do everything.
    Anonymous,
    /// A bearer token or API key.
    Key,
    /// A client certificate verified against `[tls] client_ca` (ingest only).
    Certificate,
    /// A PostgreSQL SCRAM-SHA-256 login.
    Scram,
}

impl AuthMethod {
    /// Name used in `seam_audit.auth_method`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Key => "key",
            AuthMethod::Certificate => "certificate",
            AuthMethod::Scram => "scram",
        }
    }
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name, the certificate's fingerprint (`cert:…`) or `anonymous`.
    pub name: String,
    /// The roles the credential holds.
    pub roles: Vec<Role>,
    /// How the credential was presented.
    pub method: AuthMethod,
}

impl Principal {
    /// Everyone, when no credentials are configured (seam then serves loopback only).
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            roles: vec![Role::Ingest, Role::Query, Role::Admin],
            method: AuthMethod::Anonymous,
        }
    }

    /// Whether the principal may act in `role` (`admin` includes `query`).
    pub fn may(&self, role: Role) -> bool {
        self.roles.contains(&role) || (role == Role::Query && self.roles.contains(&Role::Admin))
    }

    /// The roles as `admin,query` (for `seam_audit`).
    pub fn roles_text(&self) -> String {
        let mut r: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        r.sort_unstable();
        r.dedup();
        r.join(",")
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credential was presented.
    #[error(
        "credentials required: send Authorization: Bearer <key> (or x-api-key: <key>) with a key of role {0}"
    )]
    Missing(&'static str),
    /// The presented credential matches no key.
    #[error("invalid credentials")]
    Invalid,
    /// The credential is valid but lacks the role.
    #[error("{name} lacks the {needed} role")]
    Forbidden {
        /// The principal's name.
        name: String,
        /// The role the endpoint needs.
        needed: &'static str,
    },
}

impl Refusal {
    /// Whether the caller is unknown (401) rather than known but not allowed (403).
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, Refusal::Forbidden { .. })
    }
}

/// Configuration problems with keys.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A key entry is malformed.
    #[error("{where_}: {why}")]
    Invalid {
        /// Which entry (`auth.keys[2]`, `keys.toml: keys[0]`).
        where_: String,
        /// Why.
        why: String,
    },
    /// The keys file cannot be read or parsed.
    #[error("keys file {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
}

/// One `[[auth.keys]]` entry.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Who holds the key (shown in `seam_audit`; the PostgreSQL user name).
    pub name: String,
    /// The roles it grants: `ingest`, `query`, `admin`.
    pub roles: Vec<Role>,
    /// Lower-case hex SHA-256 digest of the secret (`seam auth new-key` prints it).
    pub sha256: String,
    /// `iterations:salt:salted-password` (base64) for PostgreSQL SCRAM-SHA-256 logins as
    /// user `name` with the secret as password; without it the key cannot log in over
    /// PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_scram: Option<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("pg_scram", &self.pg_scram.is_some())
            .finish_non_exhaustive()
    }
}

/// The keys file's shape: `[[keys]]` entries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

/// PBKDF2 iterations of generated PostgreSQL verifiers (PostgreSQL's own default).
pub const SCRAM_ITERATIONS: u32 = 4096;

#[derive(Clone)]
struct Key {
    name: String,
    roles: Vec<Role>,
    digest: [u8; 32],
    scram: Option<(Vec<u8>, Vec<u8>)>,
}

/// A set of keys, checked in constant time.
#[derive(Clone, Default)]
pub struct Credentials {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn parse_scram(s: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut parts = s.trim().split(':');
    let (Some(iters), Some(salt), Some(salted), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("pg_scram must be iterations:salt:salted-password".into());
    };
    if iters.parse::<u32>().ok() != Some(SCRAM_ITERATIONS) {
        return Err(format!(
            "pg_scram iterations must be {SCRAM_ITERATIONS} (regenerate it with seam auth hash)"
        ));
    }
    let salt = b64
        .decode(salt)
        .map_err(|e| format!("pg_scram salt is not base64: {e}"))?;
    let salted = b64
        .decode(salted)
        .map_err(|e| format!("pg_scram salted password is not base64: {e}"))?;
    if salted.len() != 32 {
        return Err("pg_scram salted password must be 32 bytes".into());
    }
    Ok((salt, salted))
}

impl Credentials {
    /// Validates `configs` (`where_` names them in errors, e.g. `auth.keys`).
    ///
    /// # Errors
    /// A malformed digest, verifier or name, no roles, or a name used twice.
    pub fn new(configs: &[KeyConfig], where_: &str) -> Result<Self, AuthError> {
        let mut keys: Vec<Key> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let invalid = |why: String| AuthError::Invalid {
                where_: format!("{where_}[{i}] ({})", c.name),
                why,
            };
            if c.name.trim().is_empty() || c.name.contains(char::is_whitespace) {
                return Err(invalid("name must be a non-empty word".into()));
            }
            if c.roles.is_empty() {
                return Err(invalid("roles must list ingest, query or admin".into()));
            }
            if keys.iter().any(|k| k.name == c.name) {
                return Err(invalid("name is used by another key".into()));
            }
            let mut digest = [0u8; 32];
            hex::decode_to_slice(c.sha256.trim(), &mut digest).map_err(|_| {
                invalid("sha256 must be 64 hex digits (seam auth new-key prints it)".into())
            })?;
            let scram = c.pg_scram.as_deref().map(parse_scram).transpose();
            let scram = scram.map_err(invalid)?;
            keys.push(Key {
                name: c.name.clone(),
                roles: c.roles.clone(),
                digest,
                scram,
            });
        }
        Ok(Self { keys })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key whose secret is `secret`: hashes it once and compares the digest with every
    /// key in constant time (no early exit, so timing tells nothing about which key or how
    /// much of it matched).
    fn find(&self, secret: &[u8]) -> Option<&Key> {
        let digest = sha256(secret);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, k) in self.keys.iter().enumerate() {
            let eq = digest.ct_eq(&k.digest);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), eq);
            found |= eq;
        }
        if bool::from(found) {
            self.keys.get(index as usize)
        } else {
            None
        }
    }

    /// The principal whose key is `secret`.
    pub fn check_secret(&self, secret: &[u8]) -> Option<Principal> {
        self.find(secret).map(|k| Principal {
            name: k.name.clone(),
            roles: k.roles.clone(),
            method: AuthMethod::Key,
        })
    }

    /// The principal of an `Authorization` (`Bearer`, `Basic`) or `x-api-key` header value.
    ///
    /// # Errors
    /// [`Refusal::Missing`] without a credential, [`Refusal::Invalid`] when none matches.
    pub fn check_headers(
        &self,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
        needed: Role,
    ) -> Result<Principal, Refusal> {
        let secret: Vec<u8>;
        let mut basic_user: Option<Vec<u8>> = None;
        if let Some(h) = authorization {
            let h = h.trim_ascii();
            let (scheme, rest) = match h.iter().position(|b| *b == b' ') {
                Some(p) => (&h[..p], h[p + 1..].trim_ascii()),
                None => (h, &[][..]),
            };
            if scheme.eq_ignore_ascii_case(b"bearer") {
                secret = rest.to_vec();
            } else if scheme.eq_ignore_ascii_case(b"basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .map_err(|_| Refusal::Invalid)?;
                let p = decoded
                    .iter()
                    .position(|b| *b == b':')
                    .ok_or(Refusal::Invalid)?;
                basic_user = Some(decoded[..p].to_vec());
                secret = decoded[p + 1..].to_vec();
            } else {
                return Err(Refusal::Invalid);
            }
        } else if let Some(k) = api_key {
            secret = k.trim_ascii().to_vec();
        } else {
            return Err(Refusal::Missing(needed.as_str()));
        }
        if secret.is_empty() {
            return Err(Refusal::Missing(needed.as_str()));
        }
        let p = self.check_secret(&secret).ok_or(Refusal::Invalid)?;
        // Basic: the user name, when given, must be the key's name.
        if let Some(u) = basic_user
            && !u.is_empty()
            && u != p.name.as_bytes()
        {
            return Err(Refusal::Invalid);
        }
        Ok(p)
    }

    /// The SCRAM salt and salted password of PostgreSQL user `user`, when it may query.
    pub fn pg_verifier(&self, user: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let k = self.keys.iter().find(|k| k.name == user)?;
        let p = Principal {
            name: k.name.clone(),
            roles: k.roles.clone(),
            method: AuthMethod::Scram,
        };
        if !p.may(Role::Query) {
            return None;
        }
        k.scram.clone()
    }

    /// The principal of a PostgreSQL user that logged in.
    pub fn pg_principal(&self, user: &str) -> Option<Principal> {
        self.keys
            .iter()
            .find(|k| k.name == user && k.scram.is_some())
            .map(|k| Principal {
                name: k.name.clone(),
                roles: k.roles.clone(),
                method: AuthMethod::Scram,
            })
    }
}

/// A file's identity for change detection: modification time and length.
fn stamp(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The keys in force: inline keys from the configuration plus a keys file that is re-read
/// on [`CredentialStore::reload`]. With neither, access is open (everyone is
/// [`Principal::anonymous`]), which seam allows on loopback addresses only.
#[derive(Debug)]
pub struct CredentialStore {
    required: bool,
    inline: Vec<KeyConfig>,
    file: Option<PathBuf>,
    current: RwLock<Arc<Credentials>>,
    file_stamp: Mutex<Option<(std::time::SystemTime, u64)>>,
}

impl CredentialStore {
    /// Open access: no credentials are configured.
    pub fn open_access() -> Self {
        Self {
            required: false,
            inline: Vec::new(),
            file: None,
            current: RwLock::new(Arc::new(Credentials::default())),
            file_stamp: Mutex::new(None),
        }
    }

    /// Loads `inline` keys and the keys `file`. Credentials are required as soon as either
    /// is configured (an empty keys file then lets nobody in).
    ///
    /// # Errors
    /// A malformed key or an unreadable keys file.
    pub fn load(inline: Vec<KeyConfig>, file: Option<PathBuf>) -> Result<Self, AuthError> {
        let required = !inline.is_empty() || file.is_some();
        let store = Self {
            required,
            inline,
            file,
            current: RwLock::new(Arc::new(Credentials::default())),
            file_stamp: Mutex::new(None),
        };
        store.reload()?;
        Ok(store)
    }

    fn read(&self) -> Result<Credentials, AuthError> {
        let mut all = self.inline.clone();
        let mut names = vec!["auth.keys".to_string(); all.len()];
        if let Some(path) = &self.file {
            let file_err = |why: String| AuthError::File {
                path: path.display().to_string(),
                why,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            let parsed: KeysFile = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            names.extend(std::iter::repeat_n(
                format!("{}: keys", path.display()),
                parsed.keys.len(),
            ));
            all.extend(parsed.keys);
        }
        // Validate per source so errors name the right place.
        let mut i = 0;
        while i < all.len() {
            let j = names[i..]
                .iter()
                .position(|n| *n != names[i])
                .map_or(all.len(), |p| i + p);
            Credentials::new(&all[i..j], &names[i])?;
            i = j;
        }
        Credentials::new(&all, "auth")
    }

    /// Re-reads the keys file; the old keys stay in force when it is invalid.
    ///
    /// # Errors
    /// A malformed key or an unreadable file.
    pub fn reload(&self) -> Result<usize, AuthError> {
        let stamp_now = self.file.as_deref().and_then(stamp);
        let creds = self.read()?;
        let n = creds.len();
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(creds);
        }
        if let Ok(mut s) = self.file_stamp.lock() {
            *s = stamp_now;
        }
        Ok(n)
    }

    /// Whether the keys file changed on disk since it was last read.
    pub fn file_changed(&self) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let now = stamp(path);
        self.file_stamp.lock().map(|s| *s != now).unwrap_or(false)
    }

    /// Whether credentials are required (any key or keys file is configured).
    pub fn required(&self) -> bool {
        self.required
    }

    /// The keys in force.
    pub fn current(&self) -> Arc<Credentials> {
        self.current
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }

    /// The principal behind the request's headers, if it may act in `role`.
    ///
    /// # Errors
    /// See [`Refusal`].
    pub fn authorize(
        &self,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
        role: Role,
    ) -> Result<Principal, Refusal> {
        if !self.required {
            return Ok(Principal::anonymous());
        }
        let p = self.current().check_headers(authorization, api_key, role)?;
        if p.may(role) {
            Ok(p)
        } else {
            Err(Refusal::Forbidden {
                name: p.name,
                needed: role.as_str(),
            })
        }
    }
}

/// A new random key: `seam_` and 43 base64url characters (256 bits).
pub fn generate_secret() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        AuthError::Invalid {
            where_: "key generation".into(),
            why: "the system random number generator failed".into(),
        }
    })?;
    Ok(format!(
        "seam_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SCRAM's `Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256 with a 32-byte output.
pub fn scram_salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let iterations = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// The `[[auth.keys]]` entry for `secret`: its SHA-256 digest and a PostgreSQL verifier with
/// a fresh random salt.
///
/// # Errors
/// A secret shorter than 16 characters or outside printable ASCII (PostgreSQL clients
/// normalise other passwords in ways the verifier would not match).
pub fn key_config(name: &str, roles: Vec<Role>, secret: &str) -> Result<KeyConfig, AuthError> {
    let invalid = |why: &str| AuthError::Invalid {
        where_: format!("key {name}"),
        why: why.into(),
    };
    if secret.len() < 16 {
        return Err(invalid("the secret must be at least 16 characters"));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("the secret must be printable ASCII without spaces"));
    }
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| invalid("the system random number generator failed"))?;
    let salted = scram_salted_password(secret.as_bytes(), &salt, SCRAM_ITERATIONS);
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(KeyConfig {
        name: name.to_string(),
        roles,
        sha256: hex::encode(sha256(secret.as_bytes())),
        pg_scram: Some(format!(
            "{SCRAM_ITERATIONS}:{}:{}",
            b64.encode(salt),
            b64.encode(salted)
        )),
    })
}

/// The entry as TOML for a keys file (`[[keys]]`) or the configuration (`[[auth.keys]]`).
pub fn key_toml(key: &KeyConfig, table: &str) -> String {
    let roles: Vec<String> = key
        .roles
        .iter()
        .map(|r| format!("{:?}", r.as_str()))
        .collect();
    let mut s = format!(
        "[[{table}]]\nname = {:?}\nroles = [{}]\nsha256 = {:?}\n",
        key.name,
        roles.join(", "),
        key.sha256
    );
    if let Some(p) = &key.pg_scram {
        s.push_str(&format!("pg_scram = {p:?}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn creds() -> (Credentials, String, String) {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        let c = Credentials::new(
            &[
                key_config("otel", vec![Role::Ingest], &a).unwrap(),
                key_config("ops", vec![Role::Admin], &b).unwrap(),
            ],
            "auth.keys",
        )
        .unwrap();
        (c, a, b)
    }

    #[test]
    fn headers_map_to_principals() {
        let (c, a, b) = creds();
        let bearer = format!("Bearer {a}");
        let p = c
            .check_headers(Some(bearer.as_bytes()), None, Role::Ingest)
            .unwrap();
        assert_eq!(p.name, "otel");
        assert!(p.may(Role::Ingest) && !p.may(Role::Query));
        let p = c
            .check_headers(None, Some(b.as_bytes()), Role::Query)
            .unwrap();
        assert_eq!(p.name, "ops");
        assert!(p.may(Role::Query) && p.may(Role::Admin) && !p.may(Role::Ingest));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("ops:{b}"))
        );
        assert!(
            c.check_headers(Some(basic.as_bytes()), None, Role::Query)
                .is_ok()
        );
        let wrong_user = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("otel:{b}"))
        );
        assert_eq!(
            c.check_headers(Some(wrong_user.as_bytes()), None, Role::Query),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            c.check_headers(Some(b"Bearer nope"), None, Role::Query),
            Err(Refusal::Invalid)
        );
        assert!(matches!(
            c.check_headers(None, None, Role::Query),
            Err(Refusal::Missing(_))
        ));
        assert!(matches!(
            c.check_headers(Some(b"Bearer "), None, Role::Query),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn store_refuses_missing_roles_and_reloads_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let a = generate_secret().unwrap();
        let k = key_config("grafana", vec![Role::Query], &a).unwrap();
        std::fs::write(&path, key_toml(&k, "keys")).unwrap();
        let store = CredentialStore::load(Vec::new(), Some(path.clone())).unwrap();
        assert!(store.required());
        let h = format!("Bearer {a}");
        assert!(
            store
                .authorize(Some(h.as_bytes()), None, Role::Query)
                .is_ok()
        );
        assert!(matches!(
            store.authorize(Some(h.as_bytes()), None, Role::Admin),
            Err(Refusal::Forbidden { .. })
        ));
        // A new key in the file works after a reload; a broken file keeps the old keys.
        let b = generate_secret().unwrap();
        let k2 = key_config("ci", vec![Role::Ingest], &b).unwrap();
        std::fs::write(
            &path,
            format!("{}\n{}", key_toml(&k, "keys"), key_toml(&k2, "keys")),
        )
        .unwrap();
        assert_eq!(store.reload().unwrap(), 2);
        let h2 = format!("Bearer {b}");
        assert!(
            store
                .authorize(Some(h2.as_bytes()), None, Role::Ingest)
                .is_ok()
        );
        std::fs::write(&path, "[[keys]]\nname = 'x'\n").unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("keys.toml"), "{err}");
        assert!(
            store
                .authorize(Some(h2.as_bytes()), None, Role::Ingest)
                .is_ok()
        );
        // Open access when nothing is configured.
        let open = CredentialStore::open_access();
        assert_eq!(
            open.authorize(None, None, Role::Admin).unwrap().method,
            AuthMethod::Anonymous
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let mut k = key_config("a", vec![Role::Query], "0123456789abcdefXYZ").unwrap();
        k.sha256 = "zz".into();
        let err = Credentials::new(&[k], "auth.keys").unwrap_err().to_string();
        assert!(
            err.contains("auth.keys[0] (a)") && err.contains("sha256"),
            "{err}"
        );
        assert!(key_config("a", vec![Role::Query], "short").is_err());
        assert!(key_config("a", vec![Role::Query], "with a space inside it").is_err());
    }

    #[test]
    fn scram_matches_rfc7677_vector() {
        // RFC 7677's SCRAM-SHA-256 example: password "pencil".
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let salted = scram_salted_password(b"pencil", &salt, 4096);
        assert_eq!(
            hex::encode(salted),
            "c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d"
        );
    }
}
