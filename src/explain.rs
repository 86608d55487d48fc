//! `seam explain REQUEST_ID`: why seam said what it said about one request.
//!
//! Takes a request id (`requests.request_id`, or a probe's `probe_id`), the server's API
//! address (`--server`, `SEAM_SERVER`) and an output format; asks the server's
//! `GET /api/v1/requests/{id}/explain?format=json` with the key and CA from the environment
//! (`seam::client::http_client`), and prints the answer as a terminal waterfall
//! (`seam_correlate::explain::text::render`, the renderer behind the server's `format=text`,
//! so both print the same) or as pretty JSON. A request seam does not know (yet) is an error
//! that says so; so is a server that cannot be reached, naming it (without any password the
//! address carries: `seam::client::display_url`). A client that reuses its correlation id
//! makes several requests with one id: `--at TIME` picks the one starting closest to TIME
//! (the server's `at`), and the answer lists the others' times.
//!
//! The id is checked before anything is sent: control characters (a URL drops TAB, LF and CR,
//! so another id would be asked for), more than 512 characters (the server's limit), and `.`
//! or `..` (path segments a URL normalises away) are refused.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use seam::config;
use seam_correlate::explain::Explanation;
use seam_correlate::explain::text::{MAX_WIDTH, MIN_WIDTH, render};

/// What `seam explain` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExplainFormat {
    /// The waterfall: records by layer on a time axis, token, verdicts (plain ASCII).
    Text,
    /// seam's JSON answer, pretty-printed.
    Json,
}

/// `seam explain` arguments.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The request id (requests.request_id) or a probe's probe_id.
    pub request_id: String,
    /// The server's API address.
    #[arg(long, env = "SEAM_SERVER", default_value_t = format!("http://{}", config::DEFAULT_API))]
    pub server: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
    pub format: ExplainFormat,
    /// Of several requests with this id (a reused correlation id), the one starting closest
    /// to TIME: RFC 3339 with an offset (2026-12-05T10:00:00Z) or ns since the epoch
    /// [default: the earliest].
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Columns of the text output, 60 to 240 [default: $COLUMNS, else 100].
    #[arg(long)]
    pub width: Option<usize>,
}

/// Runs `seam explain`.
///
/// # Errors
/// An id no request can have, an unknown id (404), a refused key or `--at`, an unreachable
/// server, an answer that is not an explanation, or standard output failing.
pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    check_id(&args.request_id)?;
    let width = args
        .width
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
        })
        .unwrap_or(100)
        .clamp(MIN_WIDTH, MAX_WIDTH);
    let url = explain_url(&args.server, &args.request_id, args.at.as_deref())?;
    let body = crate::runtime()?.block_on(fetch(url, &args.server, &args.request_id))?;
    let out = match args.format {
        ExplainFormat::Json => {
            let mut s = serde_json::to_string_pretty(&body)?;
            s.push('\n');
            s
        }
        ExplainFormat::Text => {
            let e: Explanation = serde_json::from_value(body).context(
                "seam's answer is not an explanation (is the server the same version as this \
                 command?)",
            )?;
            render(&e, width)
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `seam explain ID | head` closes the pipe early: not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// Longest id the server explains (characters), as its `MAX_EXPLAIN_ID`.
const MAX_ID: usize = 512;

/// Refuses an id no request can have, or one a URL would change into another.
fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() {
        bail!("the request id is empty");
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        bail!(
            "request id {:?} holds a control character (U+{:04X}): no request id has one (was a \
             tab or line break copied with it?)",
            id.chars().take(80).collect::<String>(),
            u32::from(c)
        );
    }
    let n = id.chars().count();
    if n > MAX_ID {
        bail!("the request id is {n} characters long: request ids are at most {MAX_ID}");
    }
    if id == "." || id == ".." {
        bail!("no request id can be `.` or `..` (a URL path drops such segments)");
    }
    Ok(())
}

/// `{server}/api/v1/requests/{id}/explain?format=json[&at=TIME]`, the id percent-encoded as
/// one path segment (a `/` or `?` in an id stays part of it); the server's own query and
/// fragment dropped.
fn explain_url(server: &str, id: &str, at: Option<&str>) -> anyhow::Result<reqwest::Url> {
    let mut url = seam::client::api_url(server, &["api", "v1", "requests", id, "explain"])?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("format", "json");
        if let Some(at) = at {
            q.append_pair("at", at);
        }
    }
    Ok(url)
}

/// Asks seam at `server` (`url`) for the explanation of `id`; gives its JSON.
async fn fetch(url: reqwest::Url, server: &str, id: &str) -> anyhow::Result<serde_json::Value> {
    let server = seam::client::display_url(server);
    let client = seam::client::http_client(std::time::Duration::from_secs(120))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("cannot reach seam at {server}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(reqwest::Error::without_url)
        .context("reading seam's answer")?;
    let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        return body.context("seam's answer is not JSON");
    }
    let msg = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(
            || String::from_utf8_lossy(&bytes).trim().to_string(),
            str::to_string,
        );
    match status.as_u16() {
        404 if msg.starts_with("no request or probe") => bail!(
            "no request or probe with id {id} (is it correlated yet? requests show within \
             seconds of their last record)"
        ),
        404 => bail!("seam at {server} has no explain endpoint ({msg}): is it an older version?"),
        401 => bail!(
            "seam at {server} wants a key ({status}: {msg}): set SEAM_TOKEN or SEAM_TOKEN_FILE \
             to a key with the query role"
        ),
        403 => bail!(
            "seam at {server} refused the key ({status}: {msg}): explain needs the query or \
             admin role"
        ),
        _ => bail!("explain failed ({status}): {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_one_path_segment() {
        let u = explain_url("http://127.0.0.1:7317", "a/b c?d#e", None).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:7317/api/v1/requests/a%2Fb%20c%3Fd%23e/explain?format=json"
        );
        let u = explain_url("https://seam.example/prefix/?x=1#y", "8d0c3f5e", None).unwrap();
        assert_eq!(
            u.as_str(),
            "https://seam.example/prefix/api/v1/requests/8d0c3f5e/explain?format=json"
        );
        let u = explain_url("http://h", "x", Some("2026-12-05T11:00:00+01:00")).unwrap();
        assert_eq!(
            u.as_str(),
            "http://h/api/v1/requests/x/explain?format=json&at=2026-12-05T11%3A00%3A00%2B01%3A00"
        );
        assert!(explain_url("127.0.0.1:7317", "x", None).is_err());
    }

    #[test]
    fn ids_a_url_would_change_are_refused() {
        for bad in ["", "abc\t7", "a\nb", "a\rb", "a\u{7f}b", ".", ".."] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id(&"x".repeat(MAX_ID + 1)).is_err());
        let longest = "x".repeat(MAX_ID);
        for good in ["8d0c3f5e", "a/b c?d#e", "...", ".x", longest.as_str()] {
            assert!(check_id(good).is_ok(), "{good:?}");
        }
        assert!(format!("{:#}", check_id("..").unwrap_err()).contains("`.` or `..`"));
    }
}
