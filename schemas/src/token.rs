//! The token identity: one type and one column list, used by the tables (schemas), the
//! normalise stage (which fills it from a token or a gateway's report), the correlator (which
//! carries it onto `requests`) and SQL (which selects [`COLUMNS`]).
//!
//! The raw token is never stored: these are read from it, or reported by a gateway.

use std::sync::Arc;

use arrow_schema::{DataType, Field};

use crate::tables::{field, timestamp_type};

/// `token_id` column.
pub const TOKEN_ID: &str = "token_id";
/// `token_uti` column.
pub const TOKEN_UTI: &str = "token_uti";
/// `subject` column.
pub const SUBJECT: &str = "subject";
/// `token_object_id` column.
pub const TOKEN_OBJECT_ID: &str = "token_object_id";
/// `client_app` column.
pub const CLIENT_APP: &str = "client_app";
/// `tenant_id` column.
pub const TENANT_ID: &str = "tenant_id";
/// `token_issuer` column.
pub const TOKEN_ISSUER: &str = "token_issuer";
/// `token_audience` column.
pub const TOKEN_AUDIENCE: &str = "token_audience";
/// `token_issued_at` column.
pub const TOKEN_ISSUED_AT: &str = "token_issued_at";
/// `token_expires_at` column.
pub const TOKEN_EXPIRES_AT: &str = "token_expires_at";
/// `token_scopes` column.
pub const TOKEN_SCOPES: &str = "token_scopes";
/// `token_roles` column.
pub const TOKEN_ROLES: &str = "token_roles";
/// `token_type` column.
pub const TOKEN_TYPE: &str = "token_type";

/// Every token identity column, in table order.
pub const COLUMNS: [&str; 13] = [
    TOKEN_ID,
    TOKEN_UTI,
    SUBJECT,
    TOKEN_OBJECT_ID,
    CLIENT_APP,
    TENANT_ID,
    TOKEN_ISSUER,
    TOKEN_AUDIENCE,
    TOKEN_ISSUED_AT,
    TOKEN_EXPIRES_AT,
    TOKEN_SCOPES,
    TOKEN_ROLES,
    TOKEN_TYPE,
];

/// Claims read from a JWT (or reported by a gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `uti` (Entra) or `jti`.
    pub uti: Option<String>,
    /// `sub` (Okta: `uid` when `sub` is absent).
    pub subject: Option<String>,
    /// `oid`.
    pub object_id: Option<String>,
    /// `azp`, `appid` or Okta's `cid`.
    pub client_app: Option<String>,
    /// `tid`.
    pub tenant_id: Option<String>,
    /// `iss`.
    pub issuer: Option<String>,
    /// `aud` (several audiences joined with a space).
    pub audience: Option<String>,
    /// `iat`, seconds.
    pub issued_at: Option<i64>,
    /// `nbf`, seconds.
    pub not_before: Option<i64>,
    /// `exp`, seconds.
    pub expires_at: Option<i64>,
    /// `scp` or `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// `roles`.
    pub roles: Vec<String>,
    /// `idtyp` (`app` or `user`).
    pub token_type: Option<String>,
    /// `ver`.
    pub version: Option<String>,
}

/// The identity of the token a record carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Fingerprint under the current key, when a key is configured and the raw token (or a
    /// gateway-computed fingerprint) was seen.
    pub fingerprint: Option<String>,
    /// Fingerprints under the older keys (links for rotation).
    pub older_fingerprints: Vec<String>,
    /// Claims, when the token is a readable JWT.
    pub claims: Claims,
    /// Why claims could not be read (`opaque`, `bad_base64`, `not_json`, `oversized`).
    pub unreadable: Option<&'static str>,
}

impl TokenIdentity {
    /// The documented token id: the fingerprint when known, else `uti:<uti>`.
    pub fn token_id(&self) -> Option<String> {
        self.fingerprint
            .clone()
            .or_else(|| self.claims.uti.as_ref().map(|u| format!("uti:{u}")))
    }
}

/// The token identity columns, in [`COLUMNS`] order, with their types and descriptions.
pub fn fields() -> Vec<Field> {
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    vec![
        field(
            TOKEN_ID,
            DataType::Utf8,
            true,
            "The token's identity: its keyed fingerprint hmac-sha256:<kid>:<32 hex> (HMAC-SHA256 of the raw compact token under the current key) when the raw token or a gateway-computed fingerprint was seen, else uti:<uti> from its claims. NULL when the record carried no token.",
        ),
        field(
            TOKEN_UTI,
            DataType::Utf8,
            true,
            "Token identifier claim: Entra uti, or jti.",
        ),
        field(
            SUBJECT,
            DataType::Utf8,
            true,
            "sub claim (Entra: pairwise per application; Okta: uid when sub is absent).",
        ),
        field(
            TOKEN_OBJECT_ID,
            DataType::Utf8,
            true,
            "oid claim: the Entra object id of the user or service principal, the same across applications.",
        ),
        field(
            CLIENT_APP,
            DataType::Utf8,
            true,
            "Client application: azp (Entra v2), appid (v1), cid (Okta) or client_id.",
        ),
        field(TENANT_ID, DataType::Utf8, true, "tid claim."),
        field(TOKEN_ISSUER, DataType::Utf8, true, "iss claim."),
        field(
            TOKEN_AUDIENCE,
            DataType::Utf8,
            true,
            "aud claim (several audiences separated by spaces).",
        ),
        field(
            TOKEN_ISSUED_AT,
            timestamp_type(),
            true,
            "iat claim as a UTC timestamp.",
        ),
        field(
            TOKEN_EXPIRES_AT,
            timestamp_type(),
            true,
            "exp claim as a UTC timestamp.",
        ),
        field(
            TOKEN_SCOPES,
            list(),
            true,
            "Delegated scopes: scp (or scope) split on spaces.",
        ),
        field(TOKEN_ROLES, list(), true, "roles claim."),
        field(
            TOKEN_TYPE,
            DataType::Utf8,
            true,
            "idtyp claim: app or user, when the token says.",
        ),
    ]
}
