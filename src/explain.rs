//! `seam explain REQUEST_ID`: why seam said what it said about one request.
//!
//! Takes a request id (`requests.request_id`, or a probe's `probe_id`), the server's API
//! address (`--server`, `SEAM_SERVER`) and an output format; asks the server's
//! `GET /api/v1/requests/{id}/explain?format=json` with the key and CA from the environment
//! (`seam::client::http_client`), and prints the answer as a terminal waterfall
//! (`seam_correlate::explain::text::render`, the renderer behind the server's `format=text`,
//! so both print the same) or as pretty JSON. A request seam does not know (yet) is an error
//! that says so; so is a server that cannot be reached, naming it.

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
    /// Columns of the text output, 60 to 240 [default: $COLUMNS, else 100].
    #[arg(long)]
    pub width: Option<usize>,
}

/// Runs `seam explain`.
///
/// # Errors
/// An unknown id (404), a refused key, an unreachable server, an answer that is not an
/// explanation, or standard output failing.
pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let width = args
        .width
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
        })
        .unwrap_or(100)
        .clamp(MIN_WIDTH, MAX_WIDTH);
    let url = explain_url(&args.server, &args.request_id)?;
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

/// `{server}/api/v1/requests/{id}/explain?format=json`, the id percent-encoded as one path
/// segment (a `/` or `?` in an id stays part of it).
fn explain_url(server: &str, id: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(server).with_context(|| {
        format!("--server {server:?} is not a URL (for example http://127.0.0.1:7317)")
    })?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--server {server:?} is not an http(s) URL"))?
        .pop_if_empty()
        .extend(["api", "v1", "requests", id, "explain"]);
    url.set_query(Some("format=json"));
    Ok(url)
}

/// Asks seam at `server` (`url`) for the explanation of `id`; gives its JSON.
async fn fetch(url: reqwest::Url, server: &str, id: &str) -> anyhow::Result<serde_json::Value> {
    let client = seam::client::http_client(std::time::Duration::from_secs(120))?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach seam at {server}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading seam's answer")?;
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
        let u = explain_url("http://127.0.0.1:7317", "a/b c?d#e").unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:7317/api/v1/requests/a%2Fb%20c%3Fd%23e/explain?format=json"
        );
        let u = explain_url("https://seam.example/prefix/", "8d0c3f5e").unwrap();
        assert_eq!(
            u.as_str(),
            "https://seam.example/prefix/api/v1/requests/8d0c3f5e/explain?format=json"
        );
        assert!(explain_url("127.0.0.1:7317", "x").is_err());
    }
}
