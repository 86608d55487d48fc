//! The `seam` command line.
//!
//! - `seam serve`: collector and query service in one process over a local data directory;
//! - `seam ingest PATH...`: sends APIM and Mule log files to a running server;
//! - `seam query "SQL"`: runs SQL against a running server's API and prints the result;
//! - `seam explain REQUEST_ID`: prints why seam said what it said about one request
//!   (`explain.rs`);
//! - `seam export --since … --out DIR`: writes a time range's audit evidence, with a manifest
//!   of checksums (`export.rs`).

mod explain;
mod export;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use seam::config::{self, Overrides, SeamConfig};
use seam::server::Server;

/// mimalloc instead of glibc's malloc: under load glibc's per-thread arenas fragmented to
/// 3 to 5.5 GiB of resident memory for a working set of about 1 GiB (benches/README.md,
/// "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "seam",
    version,
    about = "Joins API gateway, integration and trace evidence into one SQL-queryable audit store."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive OTLP, store Parquet and serve SQL, all in one process.
    Serve(ServeArgs),
    /// Send APIM gateway logs and Mule logs (files, directories, globs) to a running seam.
    Ingest(IngestArgs),
    /// Run one SQL statement against a running seam and print the result.
    Query(QueryArgs),
    /// Recompute requests and request_events from the stored records (after a rule change,
    /// or for data older than the horizon); idempotent, runs beside live ingest.
    Correlate(CorrelateArgs),
    /// Show the pulled sources of a running seam (`[[sources]]`): state, records and bytes
    /// taken, positions, lag and the last error.
    Sources(SourcesArgs),
    /// Explain one request: its records by layer on a time axis, the ids that linked them,
    /// its token, and for each verdict the rule and evidence behind it (or why it is NULL).
    Explain(explain::ExplainArgs),
    /// Write the audit evidence of a time range (access log, gateway bypass, denials, expired
    /// token use, token sharing, external probes) as Parquet or CSV files in a directory, with
    /// manifest.json and SHA256SUMS to verify them.
    Export(export::ExportArgs),
    /// Make keys for `[auth]`: `new-key` generates one, `hash` hashes one read from stdin.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Generate a random key: prints the key (give it to the client, once) on standard
    /// error and its `[[keys]]` entry (for the keys file) on standard output.
    NewKey(KeyArgs),
    /// Read a secret (at least 16 printable characters) from standard input and print its
    /// `[[keys]]` entry.
    Hash(KeyArgs),
}

#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// Who holds the key (shown in seam_audit; the PostgreSQL user name).
    #[arg(long)]
    name: String,
    /// Roles: ingest, query, admin (repeat or comma-separate).
    #[arg(long = "role", required = true, value_delimiter = ',')]
    roles: Vec<String>,
    /// Print the entry for seam's main configuration (`[[auth.keys]]`) instead.
    #[arg(long)]
    inline: bool,
}

#[derive(Debug, clap::Args)]
struct SourcesArgs {
    /// The server's API address.
    #[arg(long, env = "SEAM_SERVER", default_value_t = format!("http://{}", config::DEFAULT_API))]
    server: String,
    /// Print seam's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CorrelateArgs {
    /// Recompute requests that started at or after this time: RFC 3339
    /// (2024-11-05T09:00:00Z) or a duration ago (2h, 7days).
    #[arg(long)]
    since: String,
    /// The server's API address.
    #[arg(long, env = "SEAM_SERVER", default_value_t = format!("http://{}", config::DEFAULT_API))]
    server: String,
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Files, directories (walked recursively) or glob patterns.
    #[arg(required = true)]
    paths: Vec<String>,
    /// The server's ingest listener [default: http://$SEAM_INGEST_HTTP_ADDR, else
    /// http://127.0.0.1:4318].
    #[arg(long, env = "SEAM_INGEST_URL")]
    to: Option<String>,
    /// Force a format instead of detecting it per file (e.g. apim_jsonl, mule_log4j).
    #[arg(long)]
    format: Option<String>,
    /// Read the files with the mapping NAME ([mappings.NAME] in the server's config, or a
    /// preset: apim-log-to-eventhub, kong, envoy, nginx, aws-apigateway, identity-proxy);
    /// sent as `?mapping=NAME` to /ingest/apim.
    #[arg(long, value_name = "NAME", conflicts_with = "format")]
    mapping: Option<String>,
    /// IANA time zone of times written without one (e.g. Europe/Dublin) [default: UTC].
    #[arg(long)]
    timezone: Option<String>,
    /// Name of the self-hosted gateway whose logs these are.
    #[arg(long)]
    gateway: Option<String>,
    /// APIM service name, for records that do not name it.
    #[arg(long)]
    service: Option<String>,
    /// Mule application name, for lines that do not name it.
    #[arg(long)]
    app: Option<String>,
    /// Largest request body; larger files are sent in chunks cut at record boundaries.
    #[arg(long, default_value_t = 4 << 20)]
    chunk_bytes: usize,
    /// Print one line per file, with its refusals.
    #[arg(short, long)]
    verbose: bool,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see seam.example.toml).
    #[arg(long, env = "SEAM_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./seam-data].
    #[arg(long, env = "SEAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the tables live: az://container/prefix, s3://bucket/prefix or file:///path
    /// [default: the data directory]. Credentials come from AZURE_* / AWS_* variables.
    #[arg(long, env = "SEAM_STORAGE_URL")]
    storage_url: Option<String>,
    /// What this process does, of ingest, correlate, query (e.g. `ingest,query`)
    /// [default: all three].
    #[arg(long, env = "SEAM_ROLES")]
    roles: Option<String>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, env = "SEAM_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<SocketAddr>,
    /// Ingest HTTP listen address: OTLP/HTTP /v1/traces and /v1/logs [default: 127.0.0.1:4318].
    #[arg(long, env = "SEAM_INGEST_HTTP_ADDR")]
    ingest_http_addr: Option<SocketAddr>,
    /// API listen address: POST /api/v1/sql, /health, /metrics [default: 127.0.0.1:7317].
    #[arg(long, env = "SEAM_API_ADDR")]
    api_addr: Option<SocketAddr>,
    /// PostgreSQL wire listen address, database `seam` [default: 127.0.0.1:7432].
    #[arg(long, env = "SEAM_PG_ADDR")]
    pg_addr: Option<SocketAddr>,
    /// A TOML file of `[[keys]]` (see `seam auth new-key`), re-read on SIGHUP and on change.
    #[arg(long, env = "SEAM_KEYS_FILE")]
    keys_file: Option<PathBuf>,
    /// Serve non-loopback addresses without any key: anyone who can reach seam may send
    /// data and read everything (seam logs a warning at every start).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Log filter, e.g. `info` or `seam_collector=debug` [default: info].
    #[arg(long, env = "SEAM_LOG")]
    log_filter: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// The SQL statement; `-` reads it from standard input.
    sql: String,
    /// The server's API address.
    #[arg(long, env = "SEAM_SERVER", default_value_t = format!("http://{}", config::DEFAULT_API))]
    server: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Ingest(args) => ingest(args),
        Command::Query(args) => query(args),
        Command::Correlate(args) => correlate(args),
        Command::Sources(args) => sources(args),
        Command::Explain(args) => explain::run(args),
        Command::Export(args) => export::run(args),
        Command::Auth(cmd) => auth(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let roles = args
        .roles
        .as_deref()
        .map(config::NodeRole::parse_list)
        .transpose()?;
    let cfg = SeamConfig::load(
        args.config.as_deref(),
        Overrides {
            data_dir: args.data_dir,
            storage_url: args.storage_url,
            roles,
            otlp_grpc_addr: args.otlp_grpc_addr,
            ingest_http_addr: args.ingest_http_addr,
            api_addr: args.api_addr,
            pg_addr: args.pg_addr,
            fingerprint_keys: fingerprint_keys_from_env(),
            keys_file: args.keys_file,
            insecure_no_auth: args.insecure_no_auth,
        },
    )?;
    if args.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let filter =
        tracing_subscriber::EnvFilter::try_new(args.log_filter.as_deref().unwrap_or("info"))
            .context("invalid --log-filter")?;
    // seam's own log is redacted like every stored value (error messages quote input).
    let scanner = cfg.tokens.build().unwrap_or_default();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(seam::logging::RedactedStderr::new(scanner))
        .init();
    runtime()?.block_on(async move {
        // Handlers first: a SIGTERM right after the "listening" line must stop seam
        // gracefully, not kill it.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot install the SIGTERM handler")?;
        let server = Server::start(cfg).await?;
        let a = server.addrs();
        println!(
            "seam listening otlp_grpc={} ingest_http={} api={} pg={}",
            a.otlp_grpc, a.ingest_http, a.api, a.pg
        );
        wait_for_signal(&mut term).await?;
        tracing::info!("Shutting down: no new requests; flushing what was acknowledged.");
        server.shutdown().await?;
        Ok(())
    })
}

/// `SEAM_FINGERPRINT_KEYS`, read here once (keys are never a command-line flag: flags show
/// in the process list).
fn fingerprint_keys_from_env() -> Option<String> {
    std::env::var("SEAM_FINGERPRINT_KEYS")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

async fn wait_for_signal(term: &mut tokio::signal::unix::Signal) -> anyhow::Result<()> {
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot install the SIGINT handler")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let to = args.to.unwrap_or_else(|| {
        let addr = std::env::var("SEAM_INGEST_HTTP_ADDR")
            .ok()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| config::DEFAULT_INGEST_HTTP.to_string());
        format!("http://{addr}")
    });
    let files = seam::ingest::expand(&args.paths)?;
    let opts = seam::ingest::Options {
        to,
        format: args.format,
        mapping: args.mapping,
        timezone: args.timezone,
        gateway: args.gateway,
        service: args.service,
        app: args.app,
        chunk_bytes: args.chunk_bytes.max(1024),
        progress: !args.no_progress,
    };
    let summaries = runtime()?.block_on(seam::ingest::run(&files, &opts))?;
    let (mut acc, mut rej, mut dup, mut failed) = (0, 0, 0, 0);
    for s in &summaries {
        acc += s.accepted;
        rej += s.rejected;
        dup += s.duplicates;
        if let Some(e) = &s.error {
            failed += 1;
            eprintln!("seam ingest: {}: {e}", s.path.display());
        }
        if args.verbose {
            println!(
                "{}: {} accepted, {} rejected, {} duplicates",
                s.path.display(),
                s.accepted,
                s.rejected,
                s.duplicates
            );
            for r in &s.refusals {
                println!("  rejected {}: {}", r.at, r.reason);
            }
        }
    }
    println!(
        "seam ingest: {} file{}, {acc} records accepted, {rej} rejected, {dup} duplicates{}",
        summaries.len(),
        if summaries.len() == 1 { "" } else { "s" },
        if failed > 0 {
            format!(", {failed} file(s) refused")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        anyhow::bail!("{failed} file(s) were not ingested");
    }
    Ok(())
}

fn auth(cmd: AuthCommand) -> anyhow::Result<()> {
    let (args, secret, generated) = match cmd {
        AuthCommand::NewKey(a) => (a, seam_auth::keys::generate_secret()?, true),
        AuthCommand::Hash(a) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the secret from standard input")?;
            (a, s.trim().to_string(), false)
        }
    };
    let roles = args
        .roles
        .iter()
        .map(|r| {
            seam_auth::Role::parse(r)
                .with_context(|| format!("unknown role {r:?}: use ingest, query or admin"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = seam_auth::keys::key_config(&args.name, roles, &secret)?;
    let table = if args.inline { "auth.keys" } else { "keys" };
    if generated {
        eprintln!(
            "key for {} (shown once; store it as the client's secret):",
            args.name
        );
        eprintln!("{secret}");
    }
    print!("{}", seam_auth::keys::key_toml(&key, table));
    Ok(())
}

fn correlate(args: CorrelateArgs) -> anyhow::Result<()> {
    let since = match seam::server::chrono_like_rfc3339(&args.since) {
        Some(ns) => ns,
        None => {
            let ago = humantime::parse_duration(&args.since).with_context(|| {
                format!(
                    "--since {:?} is neither an RFC 3339 time nor a duration",
                    args.since
                )
            })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?;
            i64::try_from(now.saturating_sub(ago).as_nanos()).unwrap_or(i64::MAX)
        }
    };
    let url = format!(
        "{}/api/v1/correlate?since={since}",
        args.server.trim_end_matches('/')
    );
    runtime()?.block_on(async move {
        let client = seam::client::http_client(std::time::Duration::from_secs(3600))?;
        let body = api_json(client.post(&url), &args.server, "correlation failed").await?;
        println!(
            "seam correlate: {} requests recomputed since {}",
            body.get("requests")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            args.since
        );
        Ok(())
    })
}

/// Sends `req` to seam's API at `server` and gives its JSON answer; a refusal is an error
/// that starts with `what` and carries seam's message.
async fn api_json(
    req: reqwest::RequestBuilder,
    server: &str,
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach seam at {}: {}",
            seam::client::display_url(server),
            e.without_url()
        )
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("reading seam's answer: {}", e.without_url()))?;
    if !status.is_success() {
        anyhow::bail!(
            "{what} ({status}): {}",
            body.get("error").and_then(|e| e.as_str()).unwrap_or("")
        );
    }
    Ok(body)
}

fn sources(args: SourcesArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/sources", args.server.trim_end_matches('/'));
    runtime()?.block_on(async move {
        let client = seam::client::http_client(std::time::Duration::from_secs(30))?;
        let body = api_json(client.get(&url), &args.server, "seam refused").await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
        } else {
            print!("{}", seam::sources::sources_table(&body));
        }
        Ok(())
    })
}

fn query(args: QueryArgs) -> anyhow::Result<()> {
    let sql = if args.sql == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read SQL from standard input")?;
        s
    } else {
        args.sql
    };
    let format = match args.format {
        OutputFormat::Table => "arrow",
        OutputFormat::Csv => "csv",
        OutputFormat::Json => "json",
    };
    let url = format!(
        "{}/api/v1/sql?format={format}",
        args.server.trim_end_matches('/')
    );
    runtime()?.block_on(async move {
        let resp = seam::client::http_client(std::time::Duration::from_secs(3600))?
            .post(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(sql)
            .send()
            .await
            // reqwest's message carries the URL: the address is shown without its password.
            .map_err(reqwest::Error::without_url)
            .with_context(|| {
                format!(
                    "cannot reach seam at {}",
                    seam::client::display_url(&args.server)
                )
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(reqwest::Error::without_url)
            .context("reading the response")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("query failed ({status}): {msg}");
        }
        let out = if format == "arrow" {
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
                    .context("decoding the result")?;
            let schema = reader.schema();
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .context("decoding the result")?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let table = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[
                    arrow::record_batch::RecordBatch::new_empty(schema),
                ])
            } else {
                arrow::util::pretty::pretty_format_batches(&batches)
            }
            .context("formatting the result")?;
            format!(
                "{table}\n({rows} row{})\n",
                if rows == 1 { "" } else { "s" }
            )
        } else {
            let mut s = String::from_utf8_lossy(&body).into_owned();
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        };
        print!("{out}");
        Ok(())
    })
}
