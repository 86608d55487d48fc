//! Shared by the gateway and flow normalisers: input context, lenient value readers,
//! structural redaction of JSON, traceparent parsing and record keys.
//!
//! Takes decoded fields and JSON values; gives text, numbers and times read leniently
//! (numbers as strings, `""` and `null` as missing), redacted raw text, and the 128-bit keys
//! duplicates are recognised by.

use serde_json::Value;

use super::attributes::Attr;
use super::redact::{MARKER, is_sensitive_key};
use super::time::Zone;
use super::token::{TokenConfig, TokenIdentity};

/// What the caller says about an input.
#[derive(Debug, Clone, Default)]
pub struct InputMeta {
    /// The file it came from (`seam ingest`, or the `file` parameter).
    pub file: Option<String>,
    /// Zone of zone-less times.
    pub zone: Zone,
    /// Self-hosted gateway name (records do not say it).
    pub gateway: Option<String>,
    /// APIM service, for records that do not name it.
    pub service: Option<String>,
    /// Mule app, for lines that do not name it.
    pub app: Option<String>,
    /// Now, for year-less times and the event-time window.
    pub now_ns: i64,
    /// The accepted event-time window.
    pub window: super::time::TimeWindow,
    /// A pulled source in a configured format: unreadable records at the start of the input
    /// are refused one by one, never the whole input.
    pub lenient_start: bool,
}

impl InputMeta {
    /// `t` when it lies in the event-time window, else why not.
    ///
    /// # Errors
    /// The time is outside the window.
    pub fn in_window(&self, t: i64) -> Result<i64, String> {
        // A caller that did not say when "now" is (0) gets the clock.
        let now = if self.now_ns == 0 {
            crate::now_ns()
        } else {
            self.now_ns
        };
        self.window.check("time", t, now)
    }
}

/// A JSON scalar as text (`""` and `null` are missing).
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON number, or a number written as text.
pub fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// A JSON boolean, or `true`/`false`/`1`/`0` as text.
pub fn bool_of(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        _ => None,
    }
}

/// A time from text or epoch number.
pub fn time_of(v: &Value, meta: &InputMeta) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_f64().and_then(super::time::from_epoch),
        Value::String(s) => super::time::parse(s, meta.zone, meta.now_ns),
        _ => None,
    }
}

/// The trace id of a W3C traceparent (`00-<trace>-<span>-<flags>`), lower case.
pub fn trace_of_traceparent(tp: &str) -> Option<String> {
    let mut parts = tp.trim().split('-');
    let _version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    if trace.len() != 32
        || span.len() != 16
        || !trace.bytes().all(|b| b.is_ascii_hexdigit())
        || trace.bytes().all(|b| b == b'0')
    {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

/// The path of a URL (no scheme, host, query or fragment).
pub fn path_of(url: &str) -> Option<String> {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("/", |j| &after[j..])
        }
        None => url,
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let p = &rest[..end];
    (!p.is_empty()).then(|| p.to_string())
}

/// A 128-bit key, as 32 hex characters, of `parts`.
pub use seam_store::key_of;

/// Values under secret names in a JSON value (objects by key; `{name, value}` pairs by name).
pub fn secret_values(v: &Value, tokens: &TokenConfig, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let pair_name = m
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("name"))
                .and_then(|(_, v)| v.as_str());
            for (k, val) in m {
                let secret = is_sensitive_key(k)
                    || tokens.is_extra_secret_name(k)
                    || (k.eq_ignore_ascii_case("value") && pair_name.is_some_and(is_sensitive_key));
                match val {
                    Value::String(s) if secret && s.len() >= 4 => out.push(s.clone()),
                    // Everything under a secret name is secret, however it is nested.
                    other if secret => secret_leaves(other, out),
                    Value::String(s) => secret_in_text(s, tokens, out),
                    _ => secret_values(val, tokens, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| match x {
            Value::String(s) => secret_in_text(s, tokens, out),
            other => secret_values(other, tokens, out),
        }),
        _ => {}
    }
}

/// A `"name":"value"` pair in JSON text.
static QUOTED_PAIR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r#""([^"\\]{1,64})"\s*:\s*"((?:[^"\\]|\\.)*)""#)
        .unwrap_or_else(|e| panic!("pair regex: {e}"))
});

/// Every scalar under a secret name (an object, a list, a number).
pub fn secret_leaves(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.values().for_each(|x| secret_leaves(x, out)),
        Value::Array(a) => a.iter().for_each(|x| secret_leaves(x, out)),
        Value::String(s) if s.len() >= 4 => out.push(s.clone()),
        Value::Number(n) if n.to_string().len() >= 4 => out.push(n.to_string()),
        _ => {}
    }
}

/// Secrets inside a text value: a JSON object or list logged as text, or a `Name: value`
/// header line under a secret name.
pub fn secret_in_text(s: &str, tokens: &TokenConfig, out: &mut Vec<String>) {
    let t = s.trim_start();
    if t.starts_with(['{', '['])
        && t.len() <= 1 << 20
        && let Ok(parsed) = serde_json::from_str::<Value>(t)
    {
        secret_values(&parsed, tokens, out);
        return;
    }
    if t.starts_with(['{', '[']) && t.contains("\":") {
        // JSON text that does not parse (cut short): its `"name":"value"` pairs still count.
        for c in QUOTED_PAIR.captures_iter(t) {
            let (Some(name), Some(value)) = (c.get(1), c.get(2)) else {
                continue;
            };
            if value.as_str().len() >= 4
                && (is_sensitive_key(name.as_str()) || tokens.is_extra_secret_name(name.as_str()))
            {
                out.push(value.as_str().to_string());
            }
        }
        return;
    }
    if let Some((name, value)) = s.split_once(':') {
        let name = name.trim();
        let value = value.trim();
        if value.len() >= 4
            && name.len() <= 64
            && (is_sensitive_key(name) || tokens.is_extra_secret_name(name))
        {
            out.push(value.to_string());
        }
    }
}

/// Redacts `text`: the given secret values (also as they appear JSON-escaped), then tokens
/// and `name=value` secrets. Gives the text and the first token found.
pub fn redact_text(
    text: String,
    secrets: &[String],
    tokens: &TokenConfig,
) -> (String, Option<TokenIdentity>) {
    let mut text = text;
    let mut first: Option<TokenIdentity> = None;
    for s in secrets {
        // A bearer token keeps its identity in the marker.
        let scrubbed = tokens.scrub(s);
        let marker = if scrubbed.token.is_some() {
            if first.is_none() {
                first.clone_from(&scrubbed.token);
            }
            scrubbed.text
        } else {
            MARKER.to_string()
        };
        let escaped = serde_json::to_string(s).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        for needle in [s.as_str(), escaped] {
            if !needle.is_empty() && text.contains(needle) {
                text = text.replace(needle, &marker);
            }
        }
    }
    let s = tokens.scrub_owned(text);
    (s.text, first.or(s.token))
}

/// Header maps as logged: an object, an array of `{name, value}` or `"Name: value"`, or a
/// JSON string of either. Names are lower-cased; secret values redacted. Gives the entries
/// and the first token found in them.
pub fn headers_of(v: &Value, tokens: &TokenConfig) -> Option<(Vec<Attr>, Option<TokenIdentity>)> {
    let parsed;
    let v = match v {
        Value::String(s) if s.trim_start().starts_with(['{', '[']) => {
            parsed = serde_json::from_str::<Value>(s).ok()?;
            &parsed
        }
        other => other,
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let val = match val {
                    Value::Array(a) => a.iter().filter_map(text_of).collect::<Vec<_>>().join(", "),
                    other => text_of(other).unwrap_or_default(),
                };
                pairs.push((k.clone(), val));
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(m) => {
                        let get = |n: &str| {
                            m.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                                .and_then(|(_, v)| text_of(v))
                        };
                        if let Some(name) = get("name").or_else(|| get("key")) {
                            pairs.push((name, get("value").unwrap_or_default()));
                        }
                    }
                    Value::String(s) => {
                        if let Some((k, val)) = s.split_once(':') {
                            pairs.push((k.trim().to_string(), val.trim().to_string()));
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => return None,
    }
    if pairs.is_empty() {
        return None;
    }
    let mut token = None;
    let out = pairs
        .into_iter()
        .map(|(k, val)| {
            let name = k.to_ascii_lowercase();
            let s = tokens.scrub_owned(val);
            if token.is_none() {
                token.clone_from(&s.token);
            }
            let val =
                if (is_sensitive_key(&name) || tokens.is_extra_secret_name(&name)) && !s.changed {
                    MARKER.to_string()
                } else {
                    s.text
                };
            (name, Some(val))
        })
        .collect();
    Some((out, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers() {
        assert_eq!(num_of(&Value::from("1432")), Some(1432.0));
        assert_eq!(num_of(&Value::from("")), None);
        assert_eq!(
            trace_of_traceparent("00-7D3E1F0A9B8C4D2E6F5A4B3C2D1E0F9A-1a2b3c4d5e6f7081-01")
                .as_deref(),
            Some("7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a")
        );
        assert_eq!(path_of("https://h/a/b?x=1").as_deref(), Some("/a/b"));
        let t = TokenConfig::default();
        let (h, _) = headers_of(
            &Value::from(r#"[{"name":"Authorization","value":"Basic dXNlcjpwYXNz"},{"name":"X-Correlation-ID","value":"c"}]"#),
            &t,
        )
        .unwrap();
        assert_eq!(
            h[0],
            ("authorization".into(), Some(format!("Basic {MARKER}")))
        );
        assert_eq!(h[1].1.as_deref(), Some("c"));
        let v: Value =
            serde_json::from_str(r#"{"h":{"Cookie":"session=abcdef"},"x":"ok"}"#).unwrap();
        let mut secrets = Vec::new();
        secret_values(&v, &t, &mut secrets);
        let (text, _) = redact_text(v.to_string(), &secrets, &t);
        assert!(!text.contains("abcdef"), "{text}");
    }
}
