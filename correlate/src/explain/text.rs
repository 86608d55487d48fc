//! The terminal waterfall of an [`Explanation`]: what `seam explain` prints, and the
//! `format=text` answer of `GET /api/v1/requests/{id}/explain` (one renderer for both).
//!
//! Takes an explanation and a width in columns (clamped to [`MIN_WIDTH`]..=[`MAX_WIDTH`]);
//! gives plain ASCII decoration (no colour codes: fine in a pipe, a file or a ticket):
//!
//! - a header: the request id, its kind, its time, the method and path a record names, and
//!   the key verdicts (status, who rejected it, bypass, total time, settled);
//! - the records on one time axis (ms after the first record): one bar per record from its
//!   offset to its offset plus its duration (`=` ok, `#` error, `*` a record without a
//!   duration), then its offset, status and outcome, service and name, source table and
//!   `record_key`, error detail, and the ids that linked it to the others;
//! - the token identity;
//! - every verdict: `name = value`, the rule that decided it, the `record_key`s of its
//!   evidence, or why it is NULL (or why a `false` is not `true`).
//!
//! Values taken from the data are cleaned of control and invisible formatting characters (no
//! terminal escape gets through) and cut by characters, never inside a UTF-8 sequence. The
//! request id, `record_key`s, the token id and evidence keys are never cut (they are what one
//! copies into a query), so only lines holding them may run past the width. Missing, negative,
//! NaN or infinite times and durations are drawn as missing, never panicked on.

use super::{ExplainedRecord, Explanation, Link};

/// Narrowest output, in columns.
pub const MIN_WIDTH: usize = 60;
/// Widest output, in columns.
pub const MAX_WIDTH: usize = 240;

/// Columns of the layer name in a bar line (`integration`).
const LAYER_COLS: usize = 11;
/// Columns of the duration at the end of a bar line.
const DUR_COLS: usize = 10;
/// Indent of the lines under a bar.
const INDENT: &str = "      ";
/// Characters of an id shown in "linked by" (the full id is in the JSON).
const ID_CHARS: usize = 12;
/// Start times of the other runs with the same id the header lists.
const OTHERS_SHOWN: usize = 10;
/// The verdicts the header repeats, in this order.
const HEADLINE: [&str; 5] = [
    "status_code",
    "rejected_by",
    "bypassed_gateway",
    "total_ms",
    "settled",
];

/// Draws `e` in `width` columns (clamped to 60..=240). Never panics, whatever the values.
pub fn render(e: &Explanation, width: usize) -> String {
    let w = width.clamp(MIN_WIDTH, MAX_WIDTH);
    let mut out: Vec<String> = Vec::new();
    header(e, w, &mut out);
    out.push(String::new());
    waterfall(e, w, &mut out);
    out.push(String::new());
    token(e, w, &mut out);
    out.push(String::new());
    verdicts(e, w, &mut out);
    let mut s = String::new();
    for line in &out {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn header(e: &Explanation, w: usize, out: &mut Vec<String>) {
    out.push(format!("request  {}", clean(&e.request_id)));
    let kind = clean(&e.kind);
    let note = match kind.as_str() {
        "probe" => " (a health or readiness probe: in probes, never in requests)",
        "background" => " (no inbound HTTP evidence: only in the raw tables)",
        _ => "",
    };
    let kind = if kind.is_empty() {
        "?".to_string()
    } else {
        kind
    };
    out.push(cut(&format!("kind     {kind}{note}"), w));
    let time = if e.time.is_empty() {
        format!("{} ns since the epoch", e.time_ns)
    } else {
        clean(&e.time)
    };
    out.push(cut(&format!("time     {time}"), w));
    if !e.others.is_empty() {
        others(e, w, out);
    }
    if let Some(what) = method_path(&e.records) {
        out.push(cut(&format!("what     {what}"), w));
    }
    let head: Vec<String> = HEADLINE
        .iter()
        .filter_map(|n| e.verdicts.iter().find(|v| v.name == *n))
        .map(|v| format!("{} {}", clean(&v.name), cut(&value_text(&v.value), 40)))
        .collect();
    if !head.is_empty() {
        wrap_into(out, "verdicts ", "         ", &head.join(", "), w, true);
    }
}

/// "Also with this id: T1, T2, … (seam explain ID --at TIME)": the start times of the other
/// stored runs with the same id (at most [`OTHERS_SHOWN`], then how many more).
fn others(e: &Explanation, w: usize, out: &mut Vec<String>) {
    let mut times: Vec<String> = e
        .others
        .iter()
        .take(OTHERS_SHOWN)
        .map(|t| clean(t))
        .collect();
    let more = e.others.len().saturating_sub(OTHERS_SHOWN);
    if more > 0 {
        times.push(format!("and {more} more"));
    }
    let text = format!(
        "Also with this id: {} (seam explain ID --at TIME)",
        times.join(", ")
    );
    wrap_into(out, "", "         ", &text, w, true);
}

/// The method and path of the request, from the first gateway record whose name is
/// `METHOD /path`, else the first record's with such a name.
fn method_path(records: &[ExplainedRecord]) -> Option<String> {
    let looks = |n: &str| -> Option<String> {
        let (m, p) = n.split_once(' ')?;
        let method = !m.is_empty() && m.len() <= 7 && m.bytes().all(|b| b.is_ascii_uppercase());
        (method && p.starts_with('/')).then(|| clean(n))
    };
    records
        .iter()
        .filter(|r| r.source == "gateway_logs")
        .chain(records.iter())
        .find_map(|r| r.name.as_deref().and_then(looks))
}

fn waterfall(e: &Explanation, w: usize, out: &mut Vec<String>) {
    if e.records.is_empty() {
        out.push("Records: none".to_string());
        return;
    }
    let mut recs: Vec<(&ExplainedRecord, f64, Option<f64>)> = e
        .records
        .iter()
        .map(|r| (r, offset_of(e, r), duration_of(r)))
        .collect();
    recs.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.time_ns.cmp(&b.0.time_ns)));
    let total = recs
        .iter()
        .map(|(_, off, dur)| off + dur.unwrap_or(0.0))
        .filter(|x| x.is_finite())
        .fold(0.0_f64, f64::max);
    let scale = if total > 0.0 { total } else { 1.0 };
    let iw = recs.len().to_string().len().max(3);
    let lc = LAYER_COLS;
    let bar_cols = w.saturating_sub(iw + 1 + lc + 1 + 1 + DUR_COLS).max(10);
    let n = recs.len();
    out.push(cut(
        &format!(
            "Records: {n}, over {} (0 = {})",
            fmt_ms(total),
            if e.time.is_empty() {
                format!("{} ns", e.time_ns)
            } else {
                clean(&e.time)
            }
        ),
        w,
    ));
    out.push(cut(
        "  bars: ms after the first record; = ok, # error, * no duration",
        w,
    ));
    let (labels, ticks) = axis(scale, bar_cols);
    out.push(format!(
        "{} {} {labels} ms",
        pad_left("#", iw),
        pad("layer", lc)
    ));
    out.push(format!("{}{ticks}", " ".repeat(iw + 1 + lc + 1)));
    let ind = INDENT;
    for (i, (r, off, dur)) in recs.iter().enumerate() {
        let drawn = bar(*off, *dur, scale, bar_cols, r.outcome == "error");
        let d = dur.map_or_else(|| "-".to_string(), fmt_ms);
        out.push(format!(
            "{} {} {drawn} {}",
            pad_left(&(i + 1).to_string(), iw),
            pad(&cut(&clean(&r.layer), lc), lc),
            pad_left(&cut(&d, DUR_COLS), DUR_COLS)
        ));
        let status = r
            .status_code
            .map_or_else(|| "---".to_string(), |s| s.to_string());
        let what = match (&r.service, &r.name) {
            (Some(s), Some(nm)) => format!("  {}: {}", clean(s), clean(nm)),
            (Some(s), None) => format!("  {}", clean(s)),
            (None, Some(nm)) => format!("  {}", clean(nm)),
            (None, None) => String::new(),
        };
        out.push(cut(
            &format!(
                "{ind}+{}  {status} {}{what}",
                fmt_ms(*off),
                cut(&clean(&r.outcome), 8)
            ),
            w,
        ));
        out.push(format!(
            "{ind}{} {}",
            cut(&clean(&r.source), 16),
            clean(&r.record_key)
        ));
        if let Some(detail) = &r.detail {
            out.push(cut(&format!("{ind}detail: {}", clean(detail)), w));
        }
        out.push(cut(
            &format!("{ind}linked by: {}", links_text(&r.linked_by, n)),
            w,
        ));
    }
}

/// "correlation id 8d0c3f5e-4b7... (3 others), trace id …".
fn links_text(links: &[Link], records: usize) -> String {
    if links.is_empty() {
        return if records > 1 {
            "no shared id recorded".to_string()
        } else {
            "nothing (the only record)".to_string()
        };
    }
    links
        .iter()
        .map(|l| {
            let others = if l.shared_with == 1 {
                "1 other".to_string()
            } else {
                format!("{} others", l.shared_with)
            };
            format!(
                "{} {} ({others})",
                clean(&l.by),
                short(&clean(&l.value), ID_CHARS)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn token(e: &Explanation, w: usize, out: &mut Vec<String>) {
    out.push("Token".to_string());
    let t = &e.token;
    // (label, value, may be cut): ids are never cut.
    let rows: [(&str, Option<String>, bool); 8] = [
        ("token_id", t.token_id.clone(), false),
        ("subject", t.subject.clone(), true),
        ("client_app", t.client_app.clone(), true),
        ("tenant_id", t.tenant_id.clone(), true),
        ("issuer", t.issuer.clone(), true),
        ("expires_at", t.expires_at.clone(), true),
        ("expired", t.expired.map(|x| x.to_string()), true),
        ("from record", t.from_record.clone(), false),
    ];
    if rows.iter().all(|r| r.1.is_none()) {
        out.push("  none: no record of the request carried a token".to_string());
        return;
    }
    for (label, value, cuttable) in rows {
        let Some(v) = value else { continue };
        let line = format!("  {}{}", pad(label, 13), clean(&v));
        out.push(if cuttable { cut(&line, w) } else { line });
    }
}

fn verdicts(e: &Explanation, w: usize, out: &mut Vec<String>) {
    out.push("Verdicts".to_string());
    if e.verdicts.is_empty() {
        out.push("  none".to_string());
        return;
    }
    for v in &e.verdicts {
        let value = value_text(&v.value);
        out.push(cut(&format!("  {} = {value}", cut(&clean(&v.name), 40)), w));
        if !v.rule.trim().is_empty() {
            wrap_into(out, "    rule: ", "      ", &clean(&v.rule), w, true);
        }
        if !v.evidence.is_empty() {
            let keys: Vec<String> = v.evidence.iter().map(|k| clean(k)).collect();
            wrap_into(out, "    evidence: ", "      ", &keys.join(" "), w, false);
        } else if !v.value.is_null() {
            out.push("    evidence: none".to_string());
        }
        if let Some(why) = &v.why_null {
            let lead = if v.value.is_null() {
                "    NULL because: "
            } else {
                "    why: "
            };
            wrap_into(out, lead, "      ", &clean(why), w, true);
        }
    }
}

/// A verdict's value as text: `NULL`, a string as is, anything else as JSON.
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => clean(s),
        other => clean(&other.to_string()),
    }
}

/// The record's offset (ms) from the first record: `offset_ms`, else from the times; never
/// negative.
fn offset_of(e: &Explanation, r: &ExplainedRecord) -> f64 {
    let off = if r.offset_ms.is_finite() {
        r.offset_ms
    } else {
        r.time_ns.saturating_sub(e.time_ns) as f64 / 1e6
    };
    if off > 0.0 { off } else { 0.0 }
}

/// The record's duration (ms) when it has a usable one (finite, not negative).
fn duration_of(r: &ExplainedRecord) -> Option<f64> {
    r.duration_ms.filter(|d| d.is_finite() && *d >= 0.0)
}

/// The column of `v` ms on an axis of `cols` columns from 0 to `scale` ms.
fn col(v: f64, scale: f64, cols: usize) -> usize {
    let last = cols.saturating_sub(1);
    if v.is_nan() || v <= 0.0 || scale.is_nan() || scale <= 0.0 {
        return 0;
    }
    let x = (v / scale * last as f64).round();
    if x.is_finite() && x < last as f64 {
        x as usize
    } else {
        last
    }
}

/// One record's bar: `=` (or `#` for an error) from its offset to its end, `*` at its offset
/// when it has no duration.
fn bar(off: f64, dur: Option<f64>, scale: f64, cols: usize, error: bool) -> String {
    let cols = cols.max(1);
    let mut cells = vec![' '; cols];
    let start = col(off, scale, cols);
    match dur {
        Some(d) => {
            let end = col(off + d, scale, cols).max(start);
            cells[start..=end].fill(if error { '#' } else { '=' });
        }
        None => cells[start] = '*',
    }
    cells.into_iter().collect()
}

/// The axis: a line of tick labels and a line of ticks (`+` on `-`), `cols` wide.
fn axis(scale: f64, cols: usize) -> (String, String) {
    let cols = cols.max(1);
    let mut labels = vec![' '; cols];
    let mut ticks = vec!['-'; cols];
    let step = nice_step(scale, (cols / 10).max(1));
    let prec = decimals(step);
    // The first column a label may start at (labels never touch).
    let mut free = 0usize;
    for k in 0..=1000u32 {
        let v = step * f64::from(k);
        if !v.is_finite() || v > scale * (1.0 + 1e-9) {
            break;
        }
        let c = col(v, scale, cols);
        ticks[c] = '+';
        let text: Vec<char> = fmt_tick(v, prec).chars().collect();
        if c >= free && c + text.len() <= cols {
            labels[c..c + text.len()].copy_from_slice(&text);
            free = c + text.len() + 1;
        }
    }
    (labels.into_iter().collect(), ticks.into_iter().collect())
}

/// A tick step of 1, 2 or 5 times a power of ten giving at most about `max_ticks` steps
/// over `span`.
fn nice_step(span: f64, max_ticks: usize) -> f64 {
    let raw = span / max_ticks.max(1) as f64;
    if !raw.is_finite() || raw <= 0.0 {
        return if span.is_finite() && span > 0.0 {
            span
        } else {
            1.0
        };
    }
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    let step = m * mag;
    if step.is_finite() && step > 0.0 {
        step
    } else {
        raw
    }
}

/// Decimals a tick label needs for `step` (at most 3).
fn decimals(step: f64) -> usize {
    if !step.is_finite() || step <= 0.0 || step >= 1.0 {
        0
    } else {
        ((-step.log10()).ceil() as usize).min(3)
    }
}

fn fmt_tick(v: f64, prec: usize) -> String {
    if v.abs() >= 1e6 {
        format!("{v:.1e}")
    } else {
        format!("{v:.prec$}")
    }
}

/// Milliseconds for people: `184 ms`, `12.5 ms`, `0.25 ms`, `1.2e7 ms`; `-` when not finite.
fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    let a = v.abs();
    let n = if a >= 1e6 {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{n} ms")
}

/// `s` with control and invisible formatting characters (bidirectional overrides, zero-width
/// characters) replaced by spaces: nothing in the data can move the cursor, colour the
/// terminal or reorder what is shown.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || invisible(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// `s` cut to at most `max` characters, ending with `...` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max <= 3 {
        return s.chars().take(max).collect();
    }
    let mut t: String = s.chars().take(max - 3).collect();
    t.push_str("...");
    t
}

/// An id shortened to its first `n` characters and `...`.
fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n + 3 {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n).collect();
    t.push_str("...");
    t
}

/// `s` padded with spaces to `n` characters (left-aligned).
fn pad(s: &str, n: usize) -> String {
    let l = s.chars().count();
    let mut t = s.to_string();
    if l < n {
        t.push_str(&" ".repeat(n - l));
    }
    t
}

/// `s` padded with spaces to `n` characters (right-aligned).
fn pad_left(s: &str, n: usize) -> String {
    let l = s.chars().count();
    if l < n {
        format!("{}{s}", " ".repeat(n - l))
    } else {
        s.to_string()
    }
}

/// Adds `text` word-wrapped to `w` columns: the first line starts with `first`, the others
/// with `rest`. A word longer than a line is split when `split_long`, else kept whole on its
/// own line (keys one copies).
fn wrap_into(
    out: &mut Vec<String>,
    first: &str,
    rest: &str,
    text: &str,
    w: usize,
    split_long: bool,
) {
    let mut line = first.to_string();
    let mut len = line.chars().count();
    // Nothing after the line's lead yet.
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        loop {
            let wl = word.chars().count();
            let room = w.saturating_sub(len + usize::from(!empty));
            if wl <= room {
                if !empty {
                    line.push(' ');
                    len += 1;
                }
                line.push_str(&word);
                len += wl;
                empty = false;
                break;
            }
            if !empty {
                out.push(std::mem::replace(&mut line, rest.to_string()));
                len = rest.chars().count();
                empty = true;
                continue;
            }
            if !split_long || room == 0 {
                line.push_str(&word);
                len += wl;
                empty = false;
                break;
            }
            let head: String = word.chars().take(room).collect();
            let tail: String = word.chars().skip(room).collect();
            line.push_str(&head);
            out.push(std::mem::replace(&mut line, rest.to_string()));
            len = rest.chars().count();
            word = tail;
        }
    }
    out.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::{ExplainedToken, Verdict};

    fn rec(layer: &str, off: f64, dur: Option<f64>, key: &str) -> ExplainedRecord {
        ExplainedRecord {
            time_ns: 1_730_793_600_000_000_000_i64.saturating_add((off * 1e6) as i64),
            offset_ms: off,
            duration_ms: dur,
            layer: layer.into(),
            source: "spans".into(),
            record_key: key.into(),
            service: Some("orders-papi".into()),
            name: Some("GET /api/orders".into()),
            status_code: Some(200),
            outcome: "ok".into(),
            detail: None,
            linked_by: vec![Link {
                by: "trace id".into(),
                value: "7d3e1f0a9b8c4d2e6f5a4b3c2d1e0f9a".into(),
                shared_with: 2,
            }],
        }
    }

    fn explanation(records: Vec<ExplainedRecord>) -> Explanation {
        Explanation {
            request_id: "8d0c3f5e-4b7a-4c1e-9f2d-6a5b4c3d2e1f".into(),
            kind: "request".into(),
            time: "2024-11-05T08:00:00Z".into(),
            time_ns: 1_730_793_600_000_000_000,
            records,
            token: ExplainedToken {
                token_id: Some("uti:abc".into()),
                subject: Some("reconciler".into()),
                ..Default::default()
            },
            verdicts: vec![
                Verdict::new(
                    "status_code",
                    200,
                    "the gateway's response code",
                    vec!["k1".into()],
                ),
                Verdict::null(
                    "backend_ms",
                    "the union of the integration app's downstream calls",
                    "no requester span, AFTER_REQUEST or scope elapsed",
                ),
            ],
            others: Vec::new(),
        }
    }

    /// (first, last) column of the bar of record `n` (1-based) and its cells, for a
    /// rendering at `w` columns with up to 999 records.
    fn bar_of(text: &str, n: usize, w: usize) -> (usize, usize, String) {
        let cols = w - (3 + 1 + LAYER_COLS + 1 + 1 + DUR_COLS);
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{n:>3} ")))
            .unwrap_or_else(|| panic!("no bar line {n} in\n{text}"));
        let cells: String = line
            .chars()
            .skip(3 + 1 + LAYER_COLS + 1)
            .take(cols)
            .collect();
        let first = cells.find(|c| c != ' ').unwrap();
        let last = cells.rfind(|c| c != ' ').unwrap();
        (first, last, cells)
    }

    fn assert_fits(text: &str, w: usize) {
        for l in text.lines() {
            assert!(
                l.chars().count() <= w,
                "{} > {w}: {l:?}\n{text}",
                l.chars().count()
            );
        }
    }

    #[test]
    fn bars_are_proportional_to_offset_and_duration() {
        let e = explanation(vec![
            rec("gateway", 0.0, Some(100.0), "a"),
            rec("integration", 50.0, Some(50.0), "b"),
            rec("backend", 25.0, None, "c"),
        ]);
        let text = render(&e, 100);
        let cols = 100 - (3 + 1 + LAYER_COLS + 1 + 1 + DUR_COLS);
        // Ordered by time: a (0), c (25), b (50).
        let (a0, a1, a) = bar_of(&text, 1, 100);
        assert_eq!((a0, a1), (0, cols - 1), "{text}");
        assert!(a.chars().all(|c| c == '='), "{a:?}");
        let (c0, c1, c) = bar_of(&text, 2, 100);
        assert_eq!(c0, c1, "an instant is one marker");
        assert_eq!(c.trim(), "*");
        assert!(c0.abs_diff((cols - 1) / 4) <= 1, "{c0}");
        let (b0, b1, _) = bar_of(&text, 3, 100);
        assert!(b0.abs_diff((cols - 1) / 2) <= 1, "{b0}");
        assert_eq!(b1, cols - 1);
        let (len_a, len_b) = (a1 - a0 + 1, b1 - b0 + 1);
        assert!((len_b * 2).abs_diff(len_a) <= 2, "{len_a} {len_b}");
        assert!(text.contains("100 ms"), "{text}");
        assert!(
            text.contains("linked by: trace id 7d3e1f0a9b8c... (2 others)"),
            "{text}"
        );
        assert!(text.contains("what     GET /api/orders"), "{text}");
        assert_fits(&text, 100);
    }

    #[test]
    fn errors_and_the_axis() {
        let mut r = rec("backend", 0.0, Some(184.0), "k");
        r.outcome = "error".into();
        r.detail = Some("HTTP:UNAUTHORIZED".into());
        r.linked_by.clear();
        let text = render(&explanation(vec![r]), 100);
        let (_, _, cells) = bar_of(&text, 1, 100);
        assert!(cells.chars().all(|c| c == '#'), "{cells:?}");
        assert!(text.contains("detail: HTTP:UNAUTHORIZED"), "{text}");
        assert!(text.contains("nothing (the only record)"), "{text}");
        // Ticks of 1, 2 or 5 times a power of ten, labelled from 0.
        let axis = text.lines().find(|l| l.contains("# layer")).unwrap();
        assert!(axis.contains(" 0 "), "{axis}");
        assert!(axis.contains("50") || axis.contains("20"), "{axis}");
        assert_eq!(nice_step(184.0, 4), 50.0);
        assert_eq!(nice_step(184.0, 7), 50.0);
        assert_eq!(nice_step(0.0, 10), 1.0);
        assert_eq!(decimals(0.05), 2);
    }

    #[test]
    fn null_verdicts_say_why() {
        let text = render(&explanation(vec![rec("gateway", 0.0, Some(3.0), "a")]), 80);
        assert!(text.contains("Verdicts"), "{text}");
        assert!(text.contains("  backend_ms = NULL"), "{text}");
        assert!(
            text.contains("NULL because: no requester span, AFTER_REQUEST or scope elapsed"),
            "{text}"
        );
        assert!(text.contains("  status_code = 200"), "{text}");
        assert!(text.contains("    evidence: k1"), "{text}");
        assert!(text.contains("verdicts status_code 200"), "{text}");
        assert!(text.contains("token_id     uti:abc"), "{text}");
        assert_fits(&text, 80);
    }

    #[test]
    fn long_utf8_names_are_cut_by_characters() {
        let mut r = rec("integration", 0.0, Some(10.0), "a");
        r.name = Some(format!("{}日本語\u{1F600}", "é".repeat(1000)));
        r.service = Some("ü".repeat(300));
        r.detail = Some("\u{1F600}".repeat(500));
        let mut e = explanation(vec![r]);
        e.verdicts.push(Verdict::null(
            "network_ms",
            "ß".repeat(700),
            "ø".repeat(900),
        ));
        for w in [0, 1, 59, 60, 61, 100, 240, 241, usize::MAX] {
            let text = render(&e, w);
            assert_fits(&text, w.clamp(MIN_WIDTH, MAX_WIDTH));
        }
    }

    #[test]
    fn other_runs_with_the_id_are_listed() {
        let e = explanation(vec![rec("gateway", 0.0, Some(3.0), "a")]);
        assert!(!render(&e, 100).contains("Also with this id"));
        let mut e = e;
        e.others = vec![
            "2024-11-06T10:40:00.000000000Z".into(),
            "2024-11-07T10:40:00.000000000Z".into(),
        ];
        let text = render(&e, 100);
        assert!(
            text.contains(
                "Also with this id: 2024-11-06T10:40:00.000000000Z, \
                 2024-11-07T10:40:00.000000000Z"
            ),
            "{text}"
        );
        assert!(text.contains("--at TIME"), "{text}");
        assert_fits(&text, 100);
        e.others = vec!["2024-11-06T10:40:00.000000000Z".into(); 25];
        let text = render(&e, 60);
        assert!(text.contains("and 15 more"), "{text}");
        assert_fits(&text, 60);
    }

    #[test]
    fn empty_records_and_an_empty_explanation() {
        let text = render(&Explanation::default(), 100);
        assert!(text.contains("Records: none"), "{text}");
        assert!(text.contains("Token\n  none"), "{text}");
        assert!(text.contains("Verdicts\n  none"), "{text}");
        let mut e = explanation(Vec::new());
        e.kind = "probe".into();
        let text = render(&e, 100);
        assert!(text.contains("in probes, never in requests"), "{text}");
        assert_fits(&text, 100);
    }

    #[test]
    fn odd_numbers_never_panic() {
        let weird = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            1e-300,
            f64::MIN_POSITIVE,
            1e300,
            f64::MAX,
            -f64::MAX,
        ];
        let mut records = Vec::new();
        for (i, off) in weird.iter().enumerate() {
            for dur in weird.iter().map(|d| Some(*d)).chain([None]) {
                let mut r = rec("gateway", *off, dur, &format!("k{i}"));
                r.time_ns = if i % 2 == 0 { i64::MIN } else { i64::MAX };
                r.status_code = Some(i32::MIN);
                r.linked_by.clear();
                records.push(r);
            }
        }
        let mut e = explanation(records);
        e.time_ns = i64::MAX;
        for w in [0, 60, 100, 240] {
            let text = render(&e, w);
            assert!(text.contains("Verdicts"));
            for l in text.lines().filter(|l| !l.contains("spans k")) {
                assert!(l.chars().count() <= w.clamp(MIN_WIDTH, MAX_WIDTH), "{l:?}");
            }
        }
        // Only huge values: the axis still has a label and no value prints 300 digits.
        let e = explanation(vec![rec("gateway", 1e300, Some(1e300), "a")]);
        let text = render(&e, 60);
        assert_fits(&text, 60);
    }

    #[test]
    fn nothing_from_the_data_reaches_the_terminal_as_a_control() {
        let mut r = rec("gateway\x1b[31m", 0.0, Some(1.0), "a");
        r.name = Some("GET /x\x1b]0;owned\x07\r\n\u{202E}evil".into());
        r.detail = Some("\x1b[2J".into());
        let mut e = explanation(vec![r]);
        e.verdicts.push(Verdict::new(
            "rejected_by",
            "gateway\x1b[0m",
            "rule\twith\ttabs",
            vec!["k\x1b".into()],
        ));
        let text = render(&e, 100);
        assert!(
            text.chars()
                .all(|c| c == '\n' || (!c.is_control() && !invisible(c))),
            "{text:?}"
        );
    }

    #[test]
    fn wrapping_keeps_keys_whole_and_splits_prose() {
        let mut out = Vec::new();
        let key = "k".repeat(90);
        wrap_into(
            &mut out,
            "  evidence: ",
            "    ",
            &format!("a {key} b"),
            60,
            false,
        );
        assert_eq!(
            out,
            vec![
                "  evidence: a".to_string(),
                format!("    {key}"),
                "    b".into()
            ]
        );
        let mut out = Vec::new();
        wrap_into(&mut out, "x: ", "   ", &"y".repeat(130), 60, true);
        assert!(out.iter().all(|l| l.chars().count() <= 60), "{out:?}");
        assert_eq!(out.concat().matches('y').count(), 130);
        assert_eq!(cut("日本語のテキスト", 5), "日本...");
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(short("7d3e1f0a9b8c4d2e", 12), "7d3e1f0a9b8c...");
        assert_eq!(short("abc", 12), "abc");
    }
}
