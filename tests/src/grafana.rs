//! What Grafana's PostgreSQL datasource does to a panel query before sending it: template
//! variables, `$__interval`, and the SQL macros, so tests can run dashboard queries over the
//! wire as Grafana would (no Grafana server runs here).
//!
//! Takes a query, the dashboard time range, the interval and the variables' values; gives
//! the SQL text Grafana sends. The macro rules follow Grafana's PostgreSQL macro engine
//! (`pkg/tsdb/grafana-postgresql-datasource/macros.go`, without TimescaleDB); its test cases
//! are ported in this module's tests. Multi-value and "All" variables are formatted as
//! Grafana's SQL datasources do: each value single-quoted, commas between.

use std::sync::LazyLock;

/// The dashboard's time range, in nanoseconds since the epoch (UTC).
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// From.
    pub from_ns: i64,
    /// To.
    pub to_ns: i64,
}

/// A template variable's current value(s).
#[derive(Debug, Clone)]
pub struct Var {
    /// Name (without `$`).
    pub name: String,
    /// Selected values.
    pub values: Vec<String>,
    /// Multi-value or "All" selected: values are quoted and joined.
    pub multi: bool,
}

fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Grafana's interval syntax (`5m`, `20ms`, `12d`, `1h`) in seconds.
fn interval_secs(text: &str) -> Option<f64> {
    let t = text.trim().trim_matches('\'');
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        "y" => 31_536_000.0,
        _ => return None,
    };
    Some(n * mult)
}

/// Formats seconds as Go's `%v` of a float64 does for these values (`300`, `0.02`).
fn go_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Expands one macro; `None` for an unknown macro or bad arguments (Grafana's error).
fn evaluate(name: &str, args: &[String], r: Range) -> Option<String> {
    let arg0 = || args.first().filter(|a| !a.is_empty()).cloned();
    Some(match name {
        "__time" => format!("{} AS \"time\"", arg0()?),
        "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", arg0()?),
        "__timeFilter" => format!(
            "{} BETWEEN '{}' AND '{}'",
            arg0()?,
            rfc3339_nano(r.from_ns),
            rfc3339_nano(r.to_ns)
        ),
        "__timeFrom" => format!("'{}'", rfc3339_nano(r.from_ns)),
        "__timeTo" => format!("'{}'", rfc3339_nano(r.to_ns)),
        "__timeGroup" => {
            let secs = go_float(interval_secs(args.get(1)?)?);
            format!("floor(extract(epoch from {})/{secs})*{secs}", arg0()?)
        }
        "__timeGroupAlias" => format!("{} AS \"time\"", evaluate("__timeGroup", args, r)?),
        "__unixEpochFilter" => {
            let c = arg0()?;
            format!(
                "{c} >= {} AND {c} <= {}",
                r.from_ns.div_euclid(1_000_000_000),
                r.to_ns.div_euclid(1_000_000_000)
            )
        }
        "__unixEpochNanoFilter" => {
            let c = arg0()?;
            format!("{c} >= {} AND {c} <= {}", r.from_ns, r.to_ns)
        }
        "__unixEpochNanoFrom" => r.from_ns.to_string(),
        "__unixEpochNanoTo" => r.to_ns.to_string(),
        "__unixEpochGroup" => {
            let secs = go_float(interval_secs(args.get(1)?)?);
            format!("floor(({})/{secs})*{secs}", arg0()?)
        }
        "__unixEpochGroupAlias" => {
            format!("{} AS \"time\"", evaluate("__unixEpochGroup", args, r)?)
        }
        _ => return None,
    })
}

static MACRO: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
        .unwrap_or_else(|e| panic!("macro regex: {e}"))
});

/// Expands the macros in `sql` as Grafana's PostgreSQL datasource does.
///
/// # Errors
/// The first unknown macro or macro with bad arguments.
pub fn expand_macros(sql: &str, r: Range) -> Result<String, String> {
    let mut out = String::new();
    let mut last = 0;
    for c in MACRO.captures_iter(sql) {
        let (Some(whole), Some(name), Some(args)) = (c.get(0), c.get(1), c.get(2)) else {
            continue;
        };
        let mut name = name.as_str();
        // Before Grafana 5.3, `$__timeGroup(...)` followed by a comma added `AS "time"`.
        if name == "__timeGroup" && sql[whole.end()..].starts_with(',') {
            name = "__timeGroupAlias";
        }
        let args: Vec<String> = args
            .as_str()
            .split(',')
            .map(|a| a.trim().to_string())
            .collect();
        let value = evaluate(name, &args, r)
            .ok_or_else(|| format!("macro ${name} cannot be expanded with ({args:?})"))?;
        out.push_str(&sql[last..whole.start()]);
        out.push_str(&value);
        last = whole.end();
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Replaces template variables (`$name`, `${name}`, `${name:format}`) and `$__interval`,
/// `$__interval_ms`, then expands the macros.
///
/// # Errors
/// As [`expand_macros`].
pub fn interpolate(sql: &str, r: Range, interval_ms: i64, vars: &[Var]) -> Result<String, String> {
    let mut s = sql.to_string();
    // Longest names first, so `$api` does not eat `$api_id`.
    let mut vars: Vec<&Var> = vars.iter().collect();
    vars.sort_by_key(|v| std::cmp::Reverse(v.name.len()));
    for v in vars {
        let quoted = v
            .values
            .iter()
            .map(|x| quote(x))
            .collect::<Vec<_>>()
            .join(",");
        let plain = if v.multi {
            quoted.clone()
        } else {
            v.values.first().cloned().unwrap_or_default()
        };
        for (pattern, value) in [
            (format!("${{{}:sqlstring}}", v.name), quoted.clone()),
            (format!("${{{}:singlequote}}", v.name), quoted.clone()),
            (format!("${{{}:csv}}", v.name), v.values.join(",")),
            (format!("${{{}:raw}}", v.name), v.values.join(",")),
            (format!("${{{}}}", v.name), plain.clone()),
            (format!("${}", v.name), plain.clone()),
        ] {
            s = s.replace(&pattern, &value);
        }
    }
    let interval = if interval_ms % 60_000 == 0 {
        format!("{}m", interval_ms / 60_000)
    } else if interval_ms % 1000 == 0 {
        format!("{}s", interval_ms / 1000)
    } else {
        format!("{interval_ms}ms")
    };
    s = s
        .replace("$__interval_ms", &interval_ms.to_string())
        .replace("${__interval_ms}", &interval_ms.to_string())
        .replace("${__interval}", &interval)
        .replace("$__interval", &interval);
    expand_macros(&s, r)
}

#[cfg(test)]
mod tests {
    //! Grafana's own macro test cases (`macros_test.go`), without the TimescaleDB ones.
    use super::*;

    const S: i64 = 1_000_000_000;

    fn ns(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, nanos: i64) -> i64 {
        // Days from civil (inverse of `civil`).
        let (y2, m2) = if mo <= 2 {
            (y - 1, mo + 9)
        } else {
            (y, mo - 3)
        };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let doy = (153 * m2 as i64 + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        ((days * 86_400 + h * 3600 + mi * 60 + s) * S) + nanos
    }

    fn e(sql: &str, r: Range) -> String {
        expand_macros(sql, r).unwrap()
    }

    #[test]
    fn grafana_macro_cases() {
        let from = ns(2018, 4, 12, 18, 0, 0, 0);
        let r = Range {
            from_ns: from,
            to_ns: from + 5 * 60 * S,
        };
        assert_eq!(
            e("select $__time(time_column)", r),
            "select time_column AS \"time\""
        );
        assert_eq!(
            e("select min($__time(time_column))", r),
            "select min(time_column AS \"time\")"
        );
        assert_eq!(
            e("WHERE $__timeFilter(time_column)", r),
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
        );
        assert_eq!(
            e("select $__timeFrom()", r),
            "select '2018-04-12T18:00:00Z'"
        );
        assert_eq!(e("select $__timeTo()", r), "select '2018-04-12T18:05:00Z'");
        assert_eq!(
            e("SELECT $__timeGroup(time_column,'5m'), value", r),
            "SELECT floor(extract(epoch from time_column)/300)*300 AS \"time\", value"
        );
        assert_eq!(
            e("SELECT $__timeGroup(time_column,'5m') as time, value", r),
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value"
        );
        let tg = e("SELECT $__timeGroup(time_column,'5m')", r);
        assert_eq!(tg, "SELECT floor(extract(epoch from time_column)/300)*300");
        assert_eq!(
            e("SELECT $__timeGroupAlias(time_column,'5m')", r),
            format!("{tg} AS \"time\"")
        );
        let tg = e("$__timeGroup(time_column , '5m')", r);
        assert_eq!(tg, "floor(extract(epoch from time_column)/300)*300");
        assert_eq!(
            e("$__timeGroupAlias(time_column , '5m')", r),
            format!("{tg} AS \"time\"")
        );
        assert_eq!(
            e("select $__unixEpochFilter(time)", r),
            format!("select time >= {} AND time <= {}", from / S, from / S + 300)
        );
        assert_eq!(
            e("select $__unixEpochNanoFilter(time)", r),
            format!("select time >= {} AND time <= {}", r.from_ns, r.to_ns)
        );
        assert_eq!(
            e("select $__unixEpochNanoFrom()", r),
            format!("select {}", r.from_ns)
        );
        assert_eq!(
            e("select $__unixEpochNanoTo()", r),
            format!("select {}", r.to_ns)
        );
        let ug = e(
            "SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')",
            r,
        );
        assert_eq!(ug, "SELECT floor((time_column+time_adjustment)/300)*300");
        assert_eq!(
            e(
                "SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')",
                r
            ),
            format!("{ug} AS \"time\"")
        );

        // Ranges before 1970 and with fractions.
        let r = Range {
            from_ns: ns(1960, 2, 1, 7, 0, 0, 0),
            to_ns: ns(1965, 2, 3, 8, 0, 0, 0),
        };
        assert_eq!(
            e("WHERE $__timeFilter(time_column)", r),
            "WHERE time_column BETWEEN '1960-02-01T07:00:00Z' AND '1965-02-03T08:00:00Z'"
        );
        assert_eq!(
            e("select $__unixEpochFilter(time)", r),
            format!(
                "select time >= {} AND time <= {}",
                r.from_ns.div_euclid(S),
                r.to_ns.div_euclid(S)
            )
        );
        let r = Range {
            from_ns: ns(1960, 2, 1, 7, 0, 0, 500_000_000),
            to_ns: ns(1980, 2, 3, 8, 0, 0, 500_000_000),
        };
        assert_eq!(
            e("WHERE $__timeFilter(time_column)", r),
            "WHERE time_column BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"
        );
        assert!(expand_macros("select $__nope(x)", r).is_err());
        assert_eq!(interval_secs("'20ms'"), Some(0.02));
        assert_eq!(interval_secs("12d"), Some(1_036_800.0));
    }

    #[test]
    fn variables_and_interval() {
        let r = Range {
            from_ns: 0,
            to_ns: 60 * S,
        };
        let vars = vec![
            Var {
                name: "api".into(),
                values: vec!["orders-api".into(), "o'neil".into()],
                multi: true,
            },
            Var {
                name: "request_id".into(),
                values: vec!["abc".into()],
                multi: false,
            },
        ];
        let sql = interpolate(
            "SELECT $__timeGroupAlias(time, $__interval) FROM t WHERE api_id IN (${api:sqlstring}) AND request_id = '$request_id'",
            r,
            60_000,
            &vars,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT floor(extract(epoch from time)/60)*60 AS \"time\" FROM t WHERE api_id IN ('orders-api','o''neil') AND request_id = 'abc'"
        );
    }
}
