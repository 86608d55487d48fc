//! Dotted paths into a JSON record (`token.azp`, `request.headers.x-request-id`,
//! `items.0.name`).
//!
//! Takes a record and a path; gives the value at the path, if any. At each level the longest
//! run of the remaining segments that is a key of the object wins, matched exactly and then
//! without case, so keys that contain dots (`"upstream.status"`) or dashes are found as
//! written; a number selects an array element.

use serde_json::{Map, Value};

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<String>,
}

impl Path {
    /// Parses `a.b.c`.
    ///
    /// # Errors
    /// An empty path or an empty segment (`a..b`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty path".into());
        }
        let segments: Vec<String> = t.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("path {t:?} has an empty segment"));
        }
        Ok(Self {
            text: t.to_string(),
            segments,
        })
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value at this path in `record`.
    pub fn get<'a>(&self, record: &'a Map<String, Value>) -> Option<&'a Value> {
        self.locate(record).map(|(_, v)| v)
    }

    /// The value at this path in `record` and the keys that lead to it as the record spells
    /// them, joined with `.` (for telling mapped fields from the rest).
    pub fn locate<'a>(&self, record: &'a Map<String, Value>) -> Option<(String, &'a Value)> {
        locate_obj(record, &self.segments)
    }
}

fn find_key<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<(&'a str, &'a Value)> {
    if let Some((k, v)) = obj.get_key_value(key) {
        return Some((k.as_str(), v));
    }
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(k, v)| (k.as_str(), v))
}

fn locate_obj<'a>(obj: &'a Map<String, Value>, segs: &[String]) -> Option<(String, &'a Value)> {
    for n in (1..=segs.len()).rev() {
        let key = segs[..n].join(".");
        if let Some((k, v)) = find_key(obj, &key)
            && let Some((rest, found)) = locate(v, &segs[n..])
        {
            let spelled = if rest.is_empty() {
                k.to_string()
            } else {
                format!("{k}.{rest}")
            };
            return Some((spelled, found));
        }
    }
    None
}

fn locate<'a>(v: &'a Value, segs: &[String]) -> Option<(String, &'a Value)> {
    if segs.is_empty() {
        return Some((String::new(), v));
    }
    match v {
        Value::Object(m) => locate_obj(m, segs),
        Value::Array(a) => {
            let i: usize = segs[0].parse().ok()?;
            let (rest, found) = locate(a.get(i)?, &segs[1..])?;
            Some((
                if rest.is_empty() {
                    segs[0].clone()
                } else {
                    format!("{}.{rest}", segs[0])
                },
                found,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(v: &Value, p: &str) -> Option<Value> {
        Path::parse(p).ok()?.get(v.as_object()?).cloned()
    }

    #[test]
    fn nested_literal_dotted_and_case() {
        let v = json!({
            "token": {"azp": "app-1", "scp": "a b"},
            "upstream.status": 502,
            "Request": {"Headers": {"x-request-id": "r1"}},
            "items": [{"name": "n0"}, {"name": "n1"}]
        });
        assert_eq!(get(&v, "token.azp"), Some(json!("app-1")));
        assert_eq!(get(&v, "upstream.status"), Some(json!(502)));
        assert_eq!(get(&v, "request.headers.x-request-id"), Some(json!("r1")));
        assert_eq!(get(&v, "items.1.name"), Some(json!("n1")));
        assert_eq!(get(&v, "items.7.name"), None);
        assert_eq!(get(&v, "token.missing"), None);
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse(" ").is_err());
    }
}
