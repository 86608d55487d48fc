//! Splits a text body into JSON values and text lines, keeping each one's line number.
//!
//! Takes the body (JSON Lines, one or more JSON documents, pretty-printed or compact, text
//! lines, or a mix) and the line number of its first line; gives [`Piece`]s in order. A JSON
//! value starts at `{` or `[`; anything else on a line is a text line for the caller to
//! classify. A value that does not parse becomes a [`Piece::Bad`] covering its first line,
//! and reading resumes on the next line, so one broken record never hides its neighbours.

use serde_json::Value;

/// One piece of a body.
#[derive(Debug)]
pub enum Piece<'a> {
    /// A JSON object or array starting on `line`.
    Json {
        /// Line number of its first character.
        line: u64,
        /// The value.
        value: Value,
        /// Its text.
        raw: &'a str,
    },
    /// A line that does not start a JSON value.
    Text {
        /// Line number.
        line: u64,
        /// The line, without its line break.
        text: &'a str,
    },
    /// A JSON value that does not parse.
    Bad {
        /// Line number of its first character.
        line: u64,
        /// Its first line.
        text: &'a str,
        /// Why.
        reason: String,
    },
}

fn line_end(text: &str, from: usize) -> usize {
    text[from..].find('\n').map_or(text.len(), |i| from + i)
}

/// Splits `text`; `first_line` is the number of its first line.
pub fn pieces(text: &str, first_line: u64) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut line = first_line;
    while pos < bytes.len() {
        // Skip whitespace, counting lines.
        match bytes[pos] {
            b'\n' => {
                line += 1;
                pos += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                pos += 1;
                continue;
            }
            0xEF if text[pos..].starts_with('\u{feff}') => {
                pos += 3;
                continue;
            }
            _ => {}
        }
        if matches!(bytes[pos], b'{' | b'[') {
            let mut it = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Value>();
            match it.next() {
                Some(Ok(value)) => {
                    let end = pos + it.byte_offset();
                    let raw = &text[pos..end];
                    out.push(Piece::Json { line, value, raw });
                    line += raw.bytes().filter(|b| *b == b'\n').count() as u64;
                    pos = end;
                    continue;
                }
                Some(Err(_)) if bytes[pos] == b'[' => {
                    // `[Info] …`, `[11-05 09:14:03] …`: a text line, not a broken array.
                }
                Some(Err(e)) => {
                    let end = line_end(text, pos);
                    let reason = if e.is_eof() {
                        "incomplete JSON record at the end of the input (a partial last line?)"
                            .to_string()
                    } else {
                        format!("invalid JSON: {e}")
                    };
                    out.push(Piece::Bad {
                        line,
                        text: text[pos..end].trim_end_matches('\r'),
                        reason,
                    });
                    pos = end;
                    continue;
                }
                None => break,
            }
        }
        let end = line_end(text, pos);
        out.push(Piece::Text {
            line,
            text: text[pos..end].trim_end_matches('\r'),
        });
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_documents_text_and_garbage() {
        let body = "{\"a\":1}\n{\"b\":\n  2}\nnot json\n{\"c\": oops}\n[1,2]\n{\"d\":";
        let p = pieces(body, 1);
        let kinds: Vec<(u64, &str)> = p
            .iter()
            .map(|p| match p {
                Piece::Json { line, .. } => (*line, "json"),
                Piece::Text { line, .. } => (*line, "text"),
                Piece::Bad { line, .. } => (*line, "bad"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (1, "json"),
                (2, "json"),
                (4, "text"),
                (5, "bad"),
                (6, "json"),
                (7, "bad")
            ]
        );
    }
}
