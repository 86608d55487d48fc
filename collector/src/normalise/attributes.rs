//! OTLP attribute values to text, and lookups over flattened attribute lists.
//!
//! Takes `KeyValue`s; gives `(key, text)` pairs in arrival order. Non-string values are
//! rendered as text: integers in decimal, doubles in shortest round-trip form, booleans as
//! `true`/`false`, bytes as text when UTF-8 (else base64, or lossy text when that holds a token), arrays and key-value lists as JSON.

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Av};
use serde_json::Value as Json;

use super::redact;
use super::token::{TokenConfig, TokenIdentity};

/// One attribute as stored: key and text value (`None` for an empty AnyValue).
pub use seam_store::rows::Attr;

/// Per-record attribute limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrLimits {
    /// Attributes kept per record (resource, span, event, link or log record); the rest are
    /// dropped and their number is recorded under [`DROPPED_KEY`].
    pub max_attributes: usize,
    /// Bytes kept of one value (and of a log body); longer text is cut at a character
    /// boundary and ends with [`TRUNCATED_MARK`].
    pub max_value_bytes: usize,
}

impl Default for AttrLimits {
    fn default() -> Self {
        Self {
            max_attributes: 128,
            max_value_bytes: 16 * 1024,
        }
    }
}

/// Attribute that records how many attributes a record lost to `max_attributes`.
pub const DROPPED_KEY: &str = "seam.dropped_attributes";
/// Ends a value cut to `max_value_bytes`.
pub use seam_schemas::TRUNCATED_MARK;

/// Cuts a value to a limit and marks it: the store's one definition.
pub use seam_store::truncate;

/// What flattening one attribute list found besides the pairs.
#[derive(Debug, Default)]
pub struct Flattened {
    /// The stored pairs.
    pub attrs: Vec<Attr>,
    /// How many limits were applied (dropped attributes count once, each cut value once).
    pub cut: u64,
    /// The first bearer token found (an `Authorization` value first, then any value).
    pub token: Option<TokenIdentity>,
}

fn is_authorization(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let last = lower.rsplit('.').next().unwrap_or(&lower);
    last == "authorization" || last == "proxy-authorization"
}

/// Flattens OTLP attributes into stored pairs: values become text, credentials are redacted
/// (tokens replaced by a marker carrying their fingerprint, other secrets by `<redacted>`),
/// and `limits` apply.
pub fn flatten(kvs: Vec<KeyValue>, limits: &AttrLimits, tokens: &TokenConfig) -> Flattened {
    let total = kvs.len();
    let mut cut = 0;
    let mut auth_token = None;
    let mut other_token = None;
    let mut attrs: Vec<Attr> = kvs
        .into_iter()
        .take(limits.max_attributes)
        .map(|kv| {
            let Some(value) = kv.value.and_then(|v| v.value) else {
                return (kv.key, None);
            };
            let text = to_text(value);
            let sensitive =
                redact::is_sensitive_key(&kv.key) || tokens.is_extra_secret_name(&kv.key);
            let mut text = if is_authorization(&kv.key) {
                let s = tokens.scrub_owned(text);
                if s.token.is_some() {
                    auth_token = auth_token.take().or(s.token);
                    s.text
                } else {
                    // Basic credentials or anything else: nothing of it is kept.
                    redact::MARKER.to_string()
                }
            } else if sensitive {
                redact::MARKER.to_string()
            } else {
                let s = tokens.scrub_owned(text);
                if s.token.is_some() && other_token.is_none() {
                    other_token = s.token;
                }
                s.text
            };
            if truncate(&mut text, limits.max_value_bytes) {
                cut += 1;
            }
            (kv.key, Some(text))
        })
        .collect();
    if total > limits.max_attributes {
        attrs.push((
            DROPPED_KEY.to_string(),
            Some((total - limits.max_attributes).to_string()),
        ));
        cut += 1;
    }
    Flattened {
        attrs,
        cut,
        token: auth_token.or(other_token),
    }
}

/// Renders an AnyValue as text.
pub fn to_text(v: Av) -> String {
    match v {
        Av::StringValue(s) => s,
        Av::BoolValue(b) => b.to_string(),
        Av::IntValue(i) => i.to_string(),
        Av::DoubleValue(d) => d.to_string(),
        Av::BytesValue(b) => bytes_text(b),
        other => to_json(Some(other)).to_string(),
    }
}

/// Bytes as text when they are UTF-8 (so the token scan sees them), else as base64, unless
/// the readable parts hold a token or secret: then as lossy text, which the scan redacts
/// (base64 would hide a token from every later pass).
fn bytes_text(b: Vec<u8>) -> String {
    let printable = |t: &str| {
        t.chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
    };
    match std::str::from_utf8(&b) {
        Ok(text) if printable(text) => text.to_string(),
        _ => {
            let lossy = String::from_utf8_lossy(&b);
            static SCANNER: std::sync::LazyLock<TokenConfig> =
                std::sync::LazyLock::new(TokenConfig::default);
            if SCANNER.scan(&lossy).is_some() {
                lossy.into_owned()
            } else {
                base64::engine::general_purpose::STANDARD.encode(&b)
            }
        }
    }
}

fn to_json(v: Option<Av>) -> Json {
    match v {
        None => Json::Null,
        Some(Av::StringValue(s)) => Json::String(s),
        Some(Av::BoolValue(b)) => Json::Bool(b),
        Some(Av::IntValue(i)) => Json::from(i),
        Some(Av::DoubleValue(d)) => serde_json::Number::from_f64(d)
            .map_or_else(|| Json::String(d.to_string()), Json::Number),
        Some(Av::BytesValue(b)) => Json::String(bytes_text(b)),
        Some(Av::ArrayValue(a)) => Json::Array(
            a.values
                .into_iter()
                .map(|v: AnyValue| to_json(v.value))
                .collect(),
        ),
        Some(Av::StringValueStrindex(i)) => Json::from(i),
        Some(Av::KvlistValue(kv)) => Json::Object(
            kv.values
                .into_iter()
                .map(|kv| {
                    let v = if redact::is_sensitive_key(&kv.key) {
                        Json::String(redact::MARKER.into())
                    } else {
                        to_json(kv.value.and_then(|v| v.value))
                    };
                    (kv.key, v)
                })
                .collect(),
        ),
    }
}

/// The first value among `keys` (in that order of preference) that is set.
pub fn first<'a>(attrs: &'a [Attr], keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .find(|(ak, v)| ak == k && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    })
}

/// Like [`first`], but unwraps a JSON array (header attributes are string arrays) to its
/// first element.
pub fn first_scalar(attrs: &[Attr], keys: &[&str]) -> Option<String> {
    let v = first(attrs, keys)?;
    if v.starts_with('[')
        && let Ok(Json::Array(items)) = serde_json::from_str::<Json>(v)
    {
        return items.into_iter().find_map(|i| match i {
            Json::String(s) => Some(s),
            Json::Null => None,
            other => Some(other.to_string()),
        });
    }
    Some(v.to_string())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn kv(k: &str, v: Av) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn renders_every_value_type() {
        let attrs = flatten(
            vec![
                kv("s", Av::StringValue("x".into())),
                kv("i", Av::IntValue(443)),
                kv("d", Av::DoubleValue(1.5)),
                kv("b", Av::BoolValue(true)),
                kv("y", Av::BytesValue(vec![1, 2])),
                kv(
                    "a",
                    Av::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Av::StringValue("corr-1".into())),
                        }],
                    }),
                ),
                kv(
                    "m",
                    Av::KvlistValue(KeyValueList {
                        values: vec![kv("Authorization", Av::StringValue("Bearer abc".into()))],
                    }),
                ),
                kv(
                    "http.request.header.authorization",
                    Av::StringValue("Bearer abc".into()),
                ),
            ],
            &AttrLimits::default(),
            &TokenConfig::default(),
        )
        .attrs;
        let get = |k: &str| first(&attrs, &[k]).unwrap().to_string();
        assert_eq!(get("s"), "x");
        assert_eq!(get("i"), "443");
        assert_eq!(get("d"), "1.5");
        assert_eq!(get("b"), "true");
        assert_eq!(get("y"), "AQI=");
        // Bytes holding a token are never hidden from the scan as base64.
        let bytes = flatten(
            vec![kv(
                "raw",
                Av::BytesValue(b"\x01\x02Bearer opaque-secret-1\xff".to_vec()),
            )],
            &AttrLimits::default(),
            &TokenConfig::default(),
        )
        .attrs;
        let raw = first(&bytes, &["raw"]).unwrap();
        assert!(
            !raw.contains("opaque-secret-1") && raw.contains("<redacted"),
            "{raw}"
        );
        assert_eq!(get("a"), r#"["corr-1"]"#);
        assert_eq!(first_scalar(&attrs, &["a"]).unwrap(), "corr-1");
        assert!(!get("m").contains("abc"));
        assert_eq!(
            get("http.request.header.authorization"),
            "Bearer <redacted>"
        );
    }

    #[test]
    fn limits_truncate_and_mark() {
        let limits = AttrLimits {
            max_attributes: 2,
            max_value_bytes: 5,
        };
        let f = flatten(
            vec![
                kv("a", Av::StringValue("ééééé".into())),
                kv("b", Av::StringValue("ok".into())),
                kv("c", Av::StringValue("dropped".into())),
                kv("d", Av::StringValue("dropped".into())),
            ],
            &limits,
            &TokenConfig::default(),
        );
        let (attrs, cut) = (f.attrs, f.cut);
        assert_eq!(cut, 2);
        assert_eq!(first(&attrs, &["a"]), Some("éé…[truncated by seam]"));
        assert_eq!(first(&attrs, &["b"]), Some("ok"));
        assert_eq!(first(&attrs, &["c"]), None);
        assert_eq!(first(&attrs, &[DROPPED_KEY]), Some("2"));
    }
}
