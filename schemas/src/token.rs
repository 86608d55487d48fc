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

/// The token identity as stored: exactly the values of the [`COLUMNS`], in their order. The
/// normalise stage makes it from a [`TokenIdentity`] (`From`), the correlator reads it back
/// from the raw tables and carries it onto `requests`, and `seam_store::rows::Columns::set_token`
/// writes it, so every table's token cells come from one type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenColumns {
    /// [`TOKEN_ID`]: the fingerprint, or `uti:<uti>` ([`TokenIdentity::token_id`]).
    pub token_id: Option<String>,
    /// [`TOKEN_UTI`].
    pub uti: Option<String>,
    /// [`SUBJECT`].
    pub subject: Option<String>,
    /// [`TOKEN_OBJECT_ID`].
    pub object_id: Option<String>,
    /// [`CLIENT_APP`].
    pub client_app: Option<String>,
    /// [`TENANT_ID`].
    pub tenant_id: Option<String>,
    /// [`TOKEN_ISSUER`].
    pub issuer: Option<String>,
    /// [`TOKEN_AUDIENCE`].
    pub audience: Option<String>,
    /// [`TOKEN_ISSUED_AT`], UTC nanoseconds.
    pub issued_at: Option<i64>,
    /// [`TOKEN_EXPIRES_AT`], UTC nanoseconds.
    pub expires_at: Option<i64>,
    /// [`TOKEN_SCOPES`] (empty is stored as NULL).
    pub scopes: Vec<String>,
    /// [`TOKEN_ROLES`] (empty is stored as NULL).
    pub roles: Vec<String>,
    /// [`TOKEN_TYPE`].
    pub token_type: Option<String>,
}

impl TokenColumns {
    /// Whether a token was carried: a token id or a `uti` is known.
    pub fn is_some(&self) -> bool {
        self.token_id.is_some() || self.uti.is_some()
    }
}

impl From<&TokenIdentity> for TokenColumns {
    /// The stored form: the token id ([`TokenIdentity::token_id`]), the claims, and the two
    /// times converted from seconds to nanoseconds (saturating).
    fn from(t: &TokenIdentity) -> Self {
        let c = &t.claims;
        let ns = |v: Option<i64>| v.map(|s| s.saturating_mul(1_000_000_000));
        Self {
            token_id: t.token_id(),
            uti: c.uti.clone(),
            subject: c.subject.clone(),
            object_id: c.object_id.clone(),
            client_app: c.client_app.clone(),
            tenant_id: c.tenant_id.clone(),
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            issued_at: ns(c.issued_at),
            expires_at: ns(c.expires_at),
            scopes: c.scopes.clone(),
            roles: c.roles.clone(),
            token_type: c.token_type.clone(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_of_an_identity() {
        let id = TokenIdentity {
            fingerprint: None,
            older_fingerprints: vec!["old".into()],
            claims: Claims {
                uti: Some("u1".into()),
                subject: Some("s".into()),
                issued_at: Some(1_700_000_000),
                expires_at: Some(i64::MAX),
                scopes: vec!["read".into()],
                ..Claims::default()
            },
            unreadable: None,
        };
        let c = TokenColumns::from(&id);
        assert_eq!(c.token_id.as_deref(), Some("uti:u1"));
        assert_eq!(c.uti.as_deref(), Some("u1"));
        assert_eq!(c.subject.as_deref(), Some("s"));
        assert_eq!(c.issued_at, Some(1_700_000_000_000_000_000));
        assert_eq!(c.expires_at, Some(i64::MAX));
        assert_eq!(c.scopes, ["read"]);
        assert!(c.roles.is_empty());
        assert!(c.is_some());

        let fp = TokenIdentity {
            fingerprint: Some("hmac-sha256:k:00".into()),
            ..id
        };
        assert_eq!(
            TokenColumns::from(&fp).token_id.as_deref(),
            Some("hmac-sha256:k:00")
        );
    }

    #[test]
    fn a_token_needs_an_id_or_a_uti() {
        assert!(!TokenColumns::default().is_some());
        assert!(!TokenColumns::from(&TokenIdentity::default()).is_some());
        let subject_only = TokenColumns {
            subject: Some("s".into()),
            ..TokenColumns::default()
        };
        assert!(!subject_only.is_some());
        let uti_only = TokenColumns {
            uti: Some("u".into()),
            ..TokenColumns::default()
        };
        assert!(uti_only.is_some());
    }
}
