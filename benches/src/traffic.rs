//! Generated traffic sent through seam's own ingest endpoints, shared by `seam-querybench load`
//! ([`crate::querybench::load`]) and `seam-loadgen --target mixed` ([`crate::loadgen::mixed`]).
//!
//! Takes `seam_tests::generator` traffic (APIM storage-archive records, custom gateway events,
//! Mule JSON Logger lines and log4j events, OTLP/JSON spans) and gives it as ingest bodies
//! ([`Bodies::of`]: at most [`LINES_PER_BODY`] lines or records a body, the late gateway records
//! apart, to be sent after the rest); [`Target`] posts a body, retrying while seam pushes back
//! ([`Target::ingest`]), and runs SQL through the API ([`Target::sql`]); [`send_all`] sends
//! bodies over several connections at once.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use seam_tests::generator::Traffic;

/// Where and how to reach seam.
#[derive(Debug, Clone)]
pub struct Target {
    /// Ingest HTTP address (`host:port`, or a URL).
    pub ingest: String,
    /// SQL API address (`host:port`, or a URL).
    pub api: String,
    /// A key with the ingest and query roles, if seam requires one.
    pub token: Option<String>,
}

fn url(addr: &str, path: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{}{path}", addr.trim_end_matches('/'))
    } else {
        format!("http://{addr}{path}")
    }
}

/// A JSON integer, or a string holding one (how OTLP/JSON writes 64-bit numbers).
pub fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// What seam answered to one body it acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acked {
    /// Attempts pushed back (429, 503) or not connected before the acknowledgement.
    pub retries: u32,
    /// Records refused (`rejected` of `/ingest/*`, `partialSuccess.rejectedSpans` of OTLP).
    pub rejected: u64,
    /// Records seam already held (`duplicates` of `/ingest/*`).
    pub duplicates: u64,
}

impl Target {
    fn post(&self, client: &reqwest::Client, u: String) -> reqwest::RequestBuilder {
        let b = client.post(u);
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// Runs `sql` through the SQL API; gives the rows.
    ///
    /// # Errors
    /// The request fails or seam answers with an error.
    pub async fn sql(&self, client: &reqwest::Client, sql: &str) -> Result<Vec<Value>, String> {
        let resp = self
            .post(client, url(&self.api, "/api/v1/sql"))
            .header("content-type", "application/json")
            .body(json!({ "sql": sql }).to_string())
            .send()
            .await
            .map_err(|e| format!("SQL request: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("SQL answer: {e}"))?;
        if !status.is_success() {
            return Err(format!("seam answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("SQL answer is not JSON: {e}"))
    }

    /// Posts one body to its ingest path, retrying while seam pushes back (429, 503) or cannot
    /// be reached (exponential backoff from 50 ms to 2 s, 200 attempts); gives seam's counts.
    ///
    /// # Errors
    /// seam refuses the body for another reason than back-pressure, or keeps pushing back.
    pub async fn ingest(&self, client: &reqwest::Client, body: &Body) -> Result<Acked, String> {
        let path = body.path;
        let mut wait = Duration::from_millis(50);
        for retries in 0..200u32 {
            let resp = self
                .post(client, url(&self.ingest, path))
                .header("content-type", "application/json")
                .body(body.text.clone())
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let text = r.text().await.unwrap_or_default();
                    let v: Value = serde_json::from_str(&text).unwrap_or_default();
                    let count = |n: Option<i64>| n.map_or(0, |n| n.max(0) as u64);
                    return Ok(Acked {
                        retries,
                        rejected: count(
                            int(&v["rejected"])
                                .or_else(|| int(&v["partialSuccess"]["rejectedSpans"])),
                        ),
                        duplicates: count(int(&v["duplicates"])),
                    });
                }
                Ok(r) if r.status() == 429 || r.status() == 503 => {}
                Ok(r) => {
                    let s = r.status();
                    let t = r.text().await.unwrap_or_default();
                    return Err(format!("{path}: seam answered {s}: {t}"));
                }
                Err(e) if e.is_connect() || e.is_timeout() => {}
                Err(e) => return Err(format!("{path}: {e}")),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        Err(format!("{path}: seam kept pushing back"))
    }
}

/// Lines (or records) per ingest body.
pub const LINES_PER_BODY: usize = 500;

/// One ingest request body.
#[derive(Debug, Clone)]
pub struct Body {
    /// Ingest path: `/ingest/apim`, `/ingest/mule` or `/v1/traces`.
    pub path: &'static str,
    /// JSON Lines, log4j text, an OTLP/JSON export or a `{"records":[…]}` document.
    pub text: Bytes,
    /// Records in it (lines, gateway records, log4j events, spans).
    pub records: usize,
}

impl Body {
    fn new(path: &'static str, text: String, records: usize) -> Self {
        Self {
            path,
            text: Bytes::from(text),
            records,
        }
    }
}

/// Generated traffic as ingest bodies.
#[derive(Debug, Clone, Default)]
pub struct Bodies {
    /// Gateway records, custom events, Mule JSON Logger lines, log4j events, the Mule lines
    /// shipped twice, OTLP exports.
    pub first: Vec<Body>,
    /// The late gateway records (some a second time), to send after everything else.
    pub late: Vec<Body>,
}

impl Bodies {
    /// The bodies of `t`.
    pub fn of(t: &Traffic) -> Self {
        let mut first = Vec::new();
        lines("/ingest/apim", &t.gateway_lines, &mut first);
        lines("/ingest/apim", &t.events, &mut first);
        lines("/ingest/mule", &t.mule_lines, &mut first);
        // The Mule runtime's log4j events are text: bodies of their own.
        lines("/ingest/mule", &t.mule_log4j, &mut first);
        lines("/ingest/mule", &t.mule_duplicates, &mut first);
        for body in &t.otlp {
            let spans = body["resourceSpans"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
                .map(|s| s["spans"].as_array().map_or(0, Vec::len))
                .sum::<usize>();
            first.push(Body::new("/v1/traces", body.to_string(), spans));
        }
        let late = t
            .late_gateway
            .chunks(LINES_PER_BODY)
            .map(|c| Body::new("/ingest/apim", json!({ "records": c }).to_string(), c.len()))
            .collect();
        Self { first, late }
    }

    /// Records in all the bodies.
    pub fn records(&self) -> usize {
        self.first.iter().chain(&self.late).map(|b| b.records).sum()
    }

    /// Bytes of all the bodies.
    pub fn bytes(&self) -> usize {
        self.first
            .iter()
            .chain(&self.late)
            .map(|b| b.text.len())
            .sum()
    }
}

/// Adds `v` to `bodies` as bodies of [`LINES_PER_BODY`] lines for `path`.
fn lines(path: &'static str, v: &[String], bodies: &mut Vec<Body>) {
    for c in v.chunks(LINES_PER_BODY) {
        bodies.push(Body::new(path, c.join("\n"), c.len()));
    }
}

/// Sends `bodies` over `clients` connections at once (body `i` on connection `i % clients`,
/// each connection's bodies in order); returns once every body is acknowledged.
///
/// # Errors
/// seam refuses a body for another reason than back-pressure.
pub async fn send_all(
    target: &Target,
    client: &reqwest::Client,
    bodies: Vec<Body>,
    clients: usize,
) -> Result<(), String> {
    let clients = clients.max(1);
    let mut lanes: Vec<Vec<Body>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, b) in bodies.into_iter().enumerate() {
        lanes[i % clients].push(b);
    }
    let mut set = tokio::task::JoinSet::new();
    for lane in lanes {
        let target = target.clone();
        let client = client.clone();
        set.spawn(async move {
            for body in &lane {
                target.ingest(&client, body).await?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| format!("sender: {e}"))??;
    }
    Ok(())
}

/// The generator seed of chunk `no` of a run seeded `seed`. The generator's xorshift state is
/// `seed | 1`: chunk seeds differ above bit 0 (an even multiplier), or two chunks would repeat
/// each other's ids and tokens.
pub fn chunk_seed(seed: u64, no: u64) -> u64 {
    seed ^ no.wrapping_mul(0x9E37_79B9_7F4A_7C16)
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_hold_every_generated_record() {
        let t = seam_tests::generator::generate(5, 120, 1_730_887_200_000_000_000, 250);
        let b = Bodies::of(&t);
        let spans: usize = b
            .first
            .iter()
            .filter(|x| x.path == "/v1/traces")
            .map(|x| x.records)
            .sum();
        assert!(spans > 0);
        assert_eq!(
            b.records(),
            t.gateway_lines.len()
                + t.events.len()
                + t.mule_lines.len()
                + t.mule_log4j.len()
                + t.mule_duplicates.len()
                + t.late_gateway.len()
                + spans
        );
        assert!(b.first.iter().all(|x| x.records <= LINES_PER_BODY));
        assert_eq!(
            b.late.iter().map(|x| x.records).sum::<usize>(),
            t.late_gateway.len()
        );
        assert!(b.bytes() > b.records() * 50);
    }

    #[test]
    fn chunk_seeds_differ_above_bit_zero() {
        let seeds: Vec<u64> = (0..64).map(|n| chunk_seed(7, n) | 1).collect();
        let mut unique = seeds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seeds.len());
    }
}
