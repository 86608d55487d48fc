//! OTLP/JSON decoding on top of `opentelemetry-proto`'s serde support.
//!
//! Takes a JSON body; gives the generated request type. The crate's serde code follows the
//! OTLP/JSON rules (hex ids in any case, lowerCamelCase keys, 64-bit integers as strings or
//! numbers, enums as integers) but refuses a whole request for things the proto3 JSON mapping
//! allows (found by running it on the official OTLP/JSON examples and variants). Before handing the document to it, this
//! module rewrites, in one walk over the parsed value:
//! - enum names (`"SPAN_KIND_SERVER"`, `"STATUS_CODE_ERROR"`, `"SEVERITY_NUMBER_INFO"`) and
//!   numeric strings in enum fields to integers;
//! - `null` field values to absent (the proto3 default);
//! - `"NaN"`, `"Infinity"`, `"-Infinity"` in `doubleValue` to the same text as a
//!   `stringValue` (seam stores attribute values as text, so nothing is lost);
//! - `snake_case` field names to `lowerCamelCase` (invalid by the OTLP spec, but silently
//!   dropping their data would be worse).
//!
//! Id lengths are not checked by the crate; the normalise stage checks them per record.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::IngestError;
use crate::normalise::token::TokenConfig;

/// Parses an OTLP/JSON body into `T`, naming the JSON path of any error.
pub fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, IngestError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        let e = TokenConfig::default().scrub(&e.to_string()).text;
        IngestError::InvalidPayload(format!("body is not valid JSON ({what}): {e}"))
    })?;
    if !value.is_object() {
        return Err(IngestError::InvalidPayload(format!(
            "JSON body must be an object ({what})"
        )));
    }
    normalise_value(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // The parser's message may quote the offending value: scrub tokens and secrets
        // from it before it reaches a client or a log.
        let inner = TokenConfig::default().scrub(&e.inner().to_string()).text;
        IngestError::InvalidPayload(format!(
            "JSON body is not a valid {what}: at {path}: {inner}"
        ))
    })
}

fn normalise_value(v: &mut Value) {
    match v {
        Value::Object(map) => normalise_object(map),
        Value::Array(items) => items.iter_mut().for_each(normalise_value),
        _ => {}
    }
}

fn normalise_object(map: &mut Map<String, Value>) {
    if map.keys().any(|k| k.contains('_')) {
        let old = std::mem::take(map);
        for (k, v) in old {
            let k = if k.contains('_') {
                snake_to_camel(&k)
            } else {
                k
            };
            map.insert(k, v);
        }
    }
    map.retain(|_, v| !v.is_null());
    if let Some(Value::String(s)) = map.get("doubleValue") {
        let special = matches!(
            s.as_str(),
            "NaN" | "Infinity" | "-Infinity" | "+Infinity" | "inf" | "-inf"
        );
        if special && let Some(v) = map.remove("doubleValue") {
            map.insert("stringValue".into(), v);
        }
    }
    for (key, prefix, names) in ENUMS {
        if let Some(v) = map.get_mut(*key)
            && let Value::String(s) = v
            && let Some(n) = enum_number(s, prefix, names)
        {
            *v = Value::from(n);
        }
    }
    for (_, v) in map.iter_mut() {
        normalise_value(v);
    }
}

/// Enum fields of OTLP messages: JSON key, name prefix, names in number order.
const ENUMS: &[(&str, &str, &[&str])] = &[
    (
        "kind",
        "SPAN_KIND_",
        &[
            "UNSPECIFIED",
            "INTERNAL",
            "SERVER",
            "CLIENT",
            "PRODUCER",
            "CONSUMER",
        ],
    ),
    ("code", "STATUS_CODE_", &["UNSET", "OK", "ERROR"]),
    (
        "severityNumber",
        "SEVERITY_NUMBER_",
        &[
            "UNSPECIFIED",
            "TRACE",
            "TRACE2",
            "TRACE3",
            "TRACE4",
            "DEBUG",
            "DEBUG2",
            "DEBUG3",
            "DEBUG4",
            "INFO",
            "INFO2",
            "INFO3",
            "INFO4",
            "WARN",
            "WARN2",
            "WARN3",
            "WARN4",
            "ERROR",
            "ERROR2",
            "ERROR3",
            "ERROR4",
            "FATAL",
            "FATAL2",
            "FATAL3",
            "FATAL4",
        ],
    ),
];

fn enum_number(s: &str, prefix: &str, names: &[&str]) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Some(n);
    }
    let upper = s.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix(prefix).unwrap_or(&upper);
    names.iter().position(|n| *n == bare).map(|p| p as i64)
}

fn snake_to_camel(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    let mut upper = false;
    for c in k.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;

    use super::*;

    #[test]
    fn accepts_enum_names_nulls_special_floats_and_snake_case() {
        let body = br#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "name":null,"kind":"SPAN_KIND_SERVER","start_time_unix_nano":"1544712660000000000",
            "status":{"code":"STATUS_CODE_ERROR","message":"boom"},
            "attributes":[{"key":"x","value":{"doubleValue":"NaN"}},
                          {"key":"y","value":{"doubleValue":1.5}}]}]}]}]}"#;
        let req: ExportTraceServiceRequest = decode(body, "ExportTraceServiceRequest").unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, 2);
        assert_eq!(span.name, "");
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        match &span.attributes[0].value.as_ref().unwrap().value {
            Some(Av::StringValue(s)) => assert_eq!(s, "NaN"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn severity_names_and_errors_name_the_path() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"severityNumber":"SEVERITY_NUMBER_WARN","body":{"stringValue":"hi"}}]}]}]}"#;
        let req: ExportLogsServiceRequest = decode(body, "ExportLogsServiceRequest").unwrap();
        assert_eq!(
            req.resource_logs[0].scope_logs[0].log_records[0].severity_number,
            13
        );

        let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abc"}]}]}]}"#;
        let err = decode::<ExportTraceServiceRequest>(bad, "ExportTraceServiceRequest")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
            "{err}"
        );
        assert!(decode::<ExportTraceServiceRequest>(b"{", "x").is_err());
        assert!(decode::<ExportTraceServiceRequest>(b"[]", "x").is_err());
    }
}
