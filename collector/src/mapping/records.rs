//! The records of a mapped input: JSON objects (one object, JSON Lines, `{"records":[...]}`,
//! an array of objects) or CSV rows (a header row, then one record per row).
//!
//! Takes the input text, the number of its first line and whether an unreadable first
//! record refuses the whole input; gives [`Item`]s in order: records as JSON objects with
//! their position and text, and refused pieces with the reason. CSV cells are text; a cell
//! holding a JSON object or array (Log Analytics `dynamic` columns) is parsed.

use serde_json::{Map, Value};

use crate::decode::json_stream::{Piece, check_first_line, pieces};
use crate::error::IngestError;
use crate::sources::apim::decode::Pos;

/// One record, or a refused piece.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A record.
    Record {
        /// Where.
        pos: Pos,
        /// Its fields.
        obj: Map<String, Value>,
        /// Its text as received.
        raw: String,
    },
    /// A refused piece.
    Reject {
        /// Where.
        pos: Pos,
        /// Why.
        reason: String,
        /// Its text.
        raw: String,
    },
}

fn strict_check(items: &[Item], strict: bool, what: &str) -> Result<(), IngestError> {
    if strict && let Some(Item::Reject { reason, .. }) = items.first() {
        return Err(IngestError::UnknownFormat(format!(
            "the input does not start with {what}: {reason}"
        )));
    }
    Ok(())
}

/// The JSON records of `text`.
///
/// # Errors
/// [`IngestError::UnknownFormat`] when `strict` and the first piece is not a JSON record;
/// [`IngestError::InvalidPayload`] when line numbers would not fit.
pub fn json(
    text: &str,
    first_line: u64,
    strict: bool,
    name: &str,
) -> Result<Vec<Item>, IngestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_first_line(text, first_line)?;
    let mut out = Vec::new();
    for p in pieces(text, first_line) {
        match p {
            Piece::Json { line, value, raw } => match value {
                Value::Object(mut m) => {
                    let records_key = m
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case("records"))
                        .cloned()
                        .filter(|k| m.len() == 1 && m.get(k).is_some_and(Value::is_array));
                    match records_key.and_then(|k| m.remove(&k)) {
                        Some(Value::Array(list)) => elements(list, &mut out),
                        _ => out.push(Item::Record {
                            pos: Pos::Line(line),
                            obj: m,
                            raw: raw.to_string(),
                        }),
                    }
                }
                Value::Array(list) => elements(list, &mut out),
                other => out.push(Item::Reject {
                    pos: Pos::Line(line),
                    reason: format!("not a JSON object (mapping {name} reads JSON records)"),
                    raw: other.to_string(),
                }),
            },
            Piece::Text { line, text } => {
                if text.trim().is_empty() {
                    continue;
                }
                out.push(Item::Reject {
                    pos: Pos::Line(line),
                    reason: format!("not a JSON object (mapping {name} reads JSON records)"),
                    raw: text.to_string(),
                });
            }
            Piece::Bad { line, text, reason } => out.push(Item::Reject {
                pos: Pos::Line(line),
                reason,
                raw: text.to_string(),
            }),
        }
    }
    strict_check(&out, strict, &format!("a JSON record for mapping {name}"))?;
    Ok(out)
}

fn elements(list: Vec<Value>, out: &mut Vec<Item>) {
    for (i, v) in list.into_iter().enumerate() {
        let pos = Pos::Index(i as u64);
        match v {
            Value::Object(m) => {
                let raw = serde_json::to_string(&m).unwrap_or_default();
                out.push(Item::Record { pos, obj: m, raw });
            }
            other => out.push(Item::Reject {
                pos,
                reason: "a record of the array is not a JSON object".into(),
                raw: other.to_string(),
            }),
        }
    }
}

/// The CSV rows of `text`, keyed by the header row's names (a ` [UTC]`-style unit suffix
/// removed).
///
/// # Errors
/// [`IngestError::UnknownFormat`] when `strict` and the text has no header or its first row
/// cannot be read; [`IngestError::InvalidPayload`] when line numbers would not fit.
pub fn csv(
    text: &str,
    first_line: u64,
    strict: bool,
    name: &str,
) -> Result<Vec<Item>, IngestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    check_first_line(text, first_line)?;
    if text.trim_start().starts_with(['{', '[']) {
        // JSON sent to a CSV mapping: its first record would be taken for the header.
        return Err(IngestError::UnknownFormat(format!(
            "mapping {name} reads CSV with a header row, and the input starts with JSON"
        )));
    }
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    // Columns whose header says their times are UTC (`TimeGenerated [UTC]`).
    let utc: Vec<bool>;
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => {
            utc = h.iter().map(|n| n.trim().ends_with("[UTC]")).collect();
            // A repeated name keeps every column: `Id`, `Id_2`, ...
            let mut seen: Vec<String> = Vec::new();
            for n in h.iter().map(header_name) {
                let mut name = n.clone();
                let mut k = 2;
                while !name.is_empty() && seen.contains(&name) {
                    name = format!("{n}_{k}");
                    k += 1;
                }
                seen.push(name);
            }
            seen
        }
        Err(e) => {
            return Err(IngestError::UnknownFormat(format!(
                "mapping {name} reads CSV with a header row: the first line cannot be read: {e}"
            )));
        }
    };
    if headers.iter().all(String::is_empty) {
        return if strict {
            Err(IngestError::UnknownFormat(format!(
                "mapping {name} reads CSV with a header row: the input has no header (it is empty or its first line has no column names)"
            )))
        } else {
            Ok(Vec::new())
        };
    }
    // Line numbers from byte offsets (the CSV reader does not count blank lines), counted
    // forward once.
    let mut counted = (0usize, first_line);
    let mut line_at = |byte: usize| -> u64 {
        let byte = byte.min(text.len());
        if byte >= counted.0 {
            let n = text.as_bytes()[counted.0..byte]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            counted = (byte, counted.1.saturating_add(n));
        }
        counted.1
    };
    let mut out = Vec::new();
    let mut record = ::csv::StringRecord::new();
    let mut base = 0usize;
    loop {
        let start = base + reader.position().byte() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let mut at = base
                    + record
                        .position()
                        .map_or(start - base, |p| p.byte() as usize);
                // The reader's position is before the blank lines it skipped.
                while at < text.len() && matches!(text.as_bytes()[at], b'\n' | b'\r') {
                    at += 1;
                }
                let pos = Pos::Line(line_at(at));
                let raw = record.iter().map(csv_quote).collect::<Vec<_>>().join(",");
                let end = base + reader.position().byte() as usize;
                // A quote never closed swallows the rest of the input into one field:
                // refuse its line alone and read on from the next line.
                let unclosed = end >= text.len()
                    && record.iter().any(|c| c.contains('\n'))
                    && crate::sources::apim::csv::in_quotes_after(
                        false,
                        text.get(at..).unwrap_or_default(),
                    );
                if unclosed {
                    let next = text[at..].find('\n').map_or(text.len(), |n| at + n + 1);
                    out.push(Item::Reject {
                        pos,
                        reason: "a quoted field is never closed (it runs to the end of the input)"
                            .into(),
                        raw: text[at..next].trim_end().to_string(),
                    });
                    base = next;
                    reader = ::csv::ReaderBuilder::new()
                        .has_headers(false)
                        .flexible(true)
                        .from_reader(&text.as_bytes()[next..]);
                    continue;
                }
                if record.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                if record.len() != headers.len() {
                    out.push(Item::Reject {
                        pos,
                        reason: format!(
                            "the row has {} fields, the header has {}",
                            record.len(),
                            headers.len()
                        ),
                        raw,
                    });
                    continue;
                }
                let mut obj = Map::new();
                for (i, (h, cell)) in headers.iter().zip(record.iter()).enumerate() {
                    if h.is_empty() || cell.trim().is_empty() {
                        continue;
                    }
                    let value = match utc_time(cell).filter(|_| utc.get(i) == Some(&true)) {
                        Some(t) => Value::String(t),
                        None => cell_value(cell),
                    };
                    obj.insert(h.clone(), value);
                }
                out.push(Item::Record { pos, obj, raw });
            }
            Err(e) => {
                let at = e.position().map_or(start, |p| base + p.byte() as usize);
                out.push(Item::Reject {
                    pos: Pos::Line(line_at(at)),
                    reason: format!("not a CSV row: {e}"),
                    raw: String::new(),
                });
                if !matches!(e.kind(), ::csv::ErrorKind::UnequalLengths { .. }) {
                    break;
                }
            }
        }
    }
    strict_check(&out, strict, &format!("a CSV record for mapping {name}"))?;
    Ok(out)
}

/// A header name without its unit suffix (`TimeGenerated [UTC]` → `TimeGenerated`).
fn header_name(h: &str) -> String {
    let h = h.trim();
    match h.rfind(" [") {
        Some(i) if h.ends_with(']') => h[..i].trim().to_string(),
        _ => h.to_string(),
    }
}

/// A time text in a ` [UTC]` column as RFC 3339 UTC, so that the input's `timezone` does
/// not apply to it (epoch numbers are left as they are).
fn utc_time(cell: &str) -> Option<String> {
    let t = cell.trim();
    if t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let ns = crate::normalise::time::parse(t, crate::normalise::time::Zone::Utc, crate::now_ns())?;
    Some(
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    )
}

fn cell_value(cell: &str) -> Value {
    let t = cell.trim();
    if t.starts_with(['{', '['])
        && let Ok(v) = serde_json::from_str::<Value>(t)
    {
        return v;
    }
    Value::String(cell.to_string())
}

fn csv_quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let text = "{\"a\":1}\n{\"records\":[{\"b\":2},3]}\nnot json\n[{\"c\":4}]\n";
        let items = json(text, 10, true, "m").unwrap();
        assert_eq!(items.len(), 5, "{items:?}");
        assert!(matches!(
            &items[0],
            Item::Record {
                pos: Pos::Line(10),
                ..
            }
        ));
        assert!(matches!(
            &items[1],
            Item::Record {
                pos: Pos::Index(0),
                ..
            }
        ));
        assert!(matches!(
            &items[2],
            Item::Reject {
                pos: Pos::Index(1),
                ..
            }
        ));
        assert!(matches!(
            &items[3],
            Item::Reject {
                pos: Pos::Line(12),
                ..
            }
        ));
        assert!(matches!(
            &items[4],
            Item::Record {
                pos: Pos::Index(0),
                ..
            }
        ));
        assert!(json("nope\n{\"a\":1}", 1, true, "m").is_err());
        assert_eq!(json("nope\n{\"a\":1}", 1, false, "m").unwrap().len(), 2);
    }

    #[test]
    fn csv_rows_quotes_and_bad_rows() {
        let text = "\u{feff}TimeGenerated [UTC],Id,Headers\n\
                    \"11/6/2024, 2:04:55.301 PM\",r1,\"{\"\"a\"\":\"\"b\"\"}\"\n\
                    x,y\n\
                    2024-11-06T14:04:56Z,\"multi\nline\",\n";
        let items = csv(text, 1, true, "m").unwrap();
        assert_eq!(items.len(), 3, "{items:?}");
        let Item::Record { pos, obj, .. } = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(*pos, Pos::Line(2));
        // A ` [UTC]` column's time is read as UTC whatever the input's zone.
        assert_eq!(obj["TimeGenerated"], "2024-11-06T14:04:55.301000000Z");
        assert_eq!(obj["Headers"]["a"], "b");
        assert!(
            matches!(&items[1], Item::Reject { pos: Pos::Line(3), reason, .. } if reason.contains("2 fields"))
        );
        let Item::Record { pos, obj, .. } = &items[2] else {
            panic!("{items:?}")
        };
        assert_eq!(*pos, Pos::Line(4));
        assert_eq!(obj["Id"], "multi\nline");
        assert!(!obj.contains_key("Headers"));
    }

    #[test]
    fn csv_unclosed_quote_and_blank_lines_keep_the_rest() {
        let text = "When,Id\n2024-11-06T14:04:55Z,a\n\n2024-11-06T14:04:56Z,\"open\n2024-11-06T14:04:57Z,c\n\n\n2024-11-06T14:04:58Z,d\n";
        let items = csv(text, 1, true, "m").unwrap();
        let lines: Vec<(u64, bool)> = items
            .iter()
            .map(|i| match i {
                Item::Record {
                    pos: Pos::Line(l), ..
                } => (*l, true),
                Item::Reject {
                    pos: Pos::Line(l), ..
                } => (*l, false),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            lines,
            vec![(2, true), (4, false), (5, true), (8, true)],
            "{items:?}"
        );
    }
}
