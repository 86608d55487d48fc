//! `seam-loadgen`: drives a running seam with pre-encoded, realistic payloads and reports what
//! it acknowledged, how fast, and what it cost the server.
//!
//! ```text
//! seam-loadgen --target otlp-grpc|otlp-http|apim|mule [--clients 4] [--seconds 20 | --requests N]
//!              [--batch 512] [--grpc 127.0.0.1:4317] [--http 127.0.0.1:4318] [--pid PID]
//!              [--seed 42] [--api ADDR] [--json]
//! seam-loadgen --target mixed --api ADDR [--rate N] [--settle SECONDS] [--clients 4]
//!              [--seconds 20] [--http 127.0.0.1:4318] [--pid PID] [--seed 42] [--json]
//! ```
//! Payloads: OTLP requests of `--batch` spans (random 16-byte trace ids and 8-byte span ids,
//! UUID correlation ids, the samples' attribute sets), encoded once; APIM storage-archive
//! bodies of `--batch` records and Mule log4j bodies of about `--batch` lines, whose ids are
//! renewed for each request (seam drops duplicates). Clients retry on retryable answers (HTTP
//! 429/502/503/504, gRPC UNAVAILABLE and RESOURCE_EXHAUSTED) with exponential backoff, as OTLP
//! exporters do. With `--pid` (seam's process id), the server's CPU seconds and peak RSS come
//! from /proc. The key for a seam with keys is read from `SEAM_TOKEN`.
//!
//! After the load, the same payloads are decoded in this process (protobuf decode, or JSON
//! parse of each record, or line splitting for log4j) for the same number of requests on one
//! thread: the decode-only ceiling each figure is stated against.
//!
//! `--target mixed` sends generated requests (APIM records and custom events, Mule JSON Logger
//! and log4j lines, OTLP spans) with real-time timestamps, paced at `--rate` requests/s or as
//! fast as seam acknowledges, and measures how soon sampled requests are in `requests` (and,
//! with `--settle`, settled): `seam_benches::loadgen::mixed`.

use seam_benches::loadgen::{Options, Target, mixed, run};

fn usage() -> String {
    "usage: seam-loadgen --target otlp-grpc|otlp-http|apim|mule [--clients N] [--seconds N | --requests N] [--batch N] [--grpc ADDR] [--http ADDR] [--pid PID] [--seed N] [--api ADDR] [--json]\n       seam-loadgen --target mixed --api ADDR [--rate N] [--settle SECONDS] [--clients N] [--seconds N] [--http ADDR] [--pid PID] [--seed N] [--json]".into()
}

fn parse() -> Result<(Options, bool), String> {
    let mut a = Options {
        token: std::env::var("SEAM_TOKEN").ok().filter(|t| !t.is_empty()),
        ..Options::default()
    };
    let mut json = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut v = |n: &str| it.next().ok_or(format!("{n} needs a value"));
        let num = |s: String, n: &str| s.parse::<u64>().map_err(|e| format!("{n}: {e}"));
        match arg.as_str() {
            "--target" => {
                a.target = match v("--target")?.as_str() {
                    "otlp-grpc" => Target::OtlpGrpc,
                    "otlp-http" => Target::OtlpHttp,
                    "apim" => Target::Apim,
                    "mule" => Target::Mule,
                    "mixed" => Target::Mixed,
                    other => return Err(format!("unknown target {other:?}\n{}", usage())),
                }
            }
            "--clients" => a.clients = num(v("--clients")?, "--clients")?.max(1) as usize,
            "--seconds" => a.seconds = num(v("--seconds")?, "--seconds")? as f64,
            "--requests" => a.requests = Some(num(v("--requests")?, "--requests")?),
            "--batch" => a.batch = num(v("--batch")?, "--batch")?.max(1) as usize,
            "--grpc" => a.grpc = v("--grpc")?,
            "--http" => a.http = v("--http")?,
            "--pid" => a.pid = Some(num(v("--pid")?, "--pid")? as u32),
            "--seed" => a.seed = num(v("--seed")?, "--seed")?,
            "--api" => a.api = Some(v("--api")?),
            "--rate" => a.rate = Some(num(v("--rate")?, "--rate")?.max(1)),
            "--settle" => a.settle = Some(num(v("--settle")?, "--settle")? as f64),
            "--json" => json = true,
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok((a, json))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (opts, json) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // (JSON, summary, requests that failed, the first failure's message)
    let outcome = if opts.target == Target::Mixed {
        mixed::run(&opts).await.map(|r| {
            let text = serde_json::to_string(&r).unwrap_or_default();
            (text, r.summary(), r.failed_bodies, r.first_error)
        })
    } else {
        run(opts).await.map(|r| {
            let text = serde_json::to_string(&r).unwrap_or_default();
            (text, r.summary(), r.failed_requests, r.first_error)
        })
    };
    match outcome {
        Ok((text, summary, failed, first_error)) => {
            if json {
                println!("{text}");
            } else {
                print!("{summary}");
            }
            if let Some(e) = first_error {
                eprintln!("seam-loadgen: {failed} requests failed; the first: {e}");
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seam-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
