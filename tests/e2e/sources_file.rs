//! The `file` pulled source against the real `seam` binary and real files: Mule log4j text
//! appended in several writes with a stack trace split across writes at the end of a file
//! (one `flow_logs` row with all its lines), JSON Logger lines from the generator, new files
//! matching the glob; rotation by rename (pattern matching the rotated names or not), by
//! copy-truncate, and gzip rotated files read once, also across a restart; and a SIGKILL of
//! seam while a writer keeps appending, after which every line is present exactly once.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use seam_tests::generator::generate;

use crate::binary::{kill9, seam_cmd, sigterm_and_wait, spawn_custom};
use crate::support::*;

/// Longest wait for seam to catch up.
const CATCH_UP: Duration = Duration::from_secs(90);

const FLOWS: &str = "SELECT count(*) FROM flow_logs";
const REJECTS: &str = "SELECT count(*) FROM rejects";

fn n(v: usize) -> i64 {
    i64::try_from(v).unwrap()
}

/// Appends `text` to `path` (created when missing) in one write.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A Mule 4 log4j line in the default pattern with message `msg`; `i` makes it unique.
fn log4j(level: &str, i: usize, msg: &str) -> String {
    let (ms, s, m) = (i % 1000, (i / 1000) % 60, (i / 60_000) % 60);
    format!(
        "{level:<5} 2024-11-05 09:{m:02}:{s:02},{ms:03} [[MuleRuntime].uber.03: [orders-papi-prd].orders-papi-main.CPU_LITE @4f1a2b3c] \
         [processor: orders-papi-main/processors/0; event: 8d0c3f5e-2a41-4b7e-9c61-{i:012}] \
         org.mule.runtime.core.internal.processor.LoggerMessageProcessor: {msg}\n"
    )
}

/// `how_many` log4j INFO lines with messages `"{tag} {k}"` for k from `first`.
fn tagged(tag: &str, first: usize, how_many: usize) -> String {
    (first..first + how_many)
        .map(|k| log4j("INFO", k, &format!("{tag} {k}")))
        .collect()
}

/// A `[[sources]]` block of type `file` polling every 200 ms, plus `extra` keys.
fn file_source(name: &str, format: &str, paths: &[PathBuf], extra: &str) -> String {
    let paths: Vec<String> = paths.iter().map(|p| format!("'{}'", p.display())).collect();
    format!(
        "[[sources]]\nname = \"{name}\"\ntype = \"file\"\nformat = \"{format}\"\n\
         paths = [{}]\npoll_interval = \"200ms\"\n{extra}",
        paths.join(", ")
    )
}

async fn wait_exact(api: &str, query: &str, expected: i64) {
    crate::support::wait_exact(api, query, expected, CATCH_UP).await;
}

async fn wait_at_least(api: &str, query: &str, at_least: i64) -> i64 {
    crate::support::wait_at_least(api, query, at_least, CATCH_UP).await
}

/// The entry of source `name` in `GET /api/v1/sources`.
async fn source_status(api: &str, name: &str) -> serde_json::Value {
    crate::support::source_status(api, name)
        .await
        .unwrap_or_else(|| panic!("no {name} in GET /api/v1/sources"))
}

/// The `read` errors counted for source `name` in `/metrics`.
async fn read_errors(api: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("seam_source_errors_total{")
                && l.contains(&format!("source=\"{name}\""))
                && l.contains("kind=\"read\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tag_count(tag: &str) -> String {
    format!("SELECT count(*) FROM flow_logs WHERE message LIKE '{tag} %'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_lines_a_split_stack_trace_and_new_files_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let data = dir.path().join("data");
    let app = logs.join("orders.log");
    // Two writes before seam starts.
    append(&app, &tagged("app", 0, 10));
    append(&app, &tagged("app", 10, 10));
    let toml = file_source(
        "mule-files",
        "mule",
        &[logs.join("*.log")],
        "multiline_timeout = \"3s\"\n",
    );
    let run = spawn_custom(&data, &toml, &[], None);
    // The last entry waits for the next one or the timeout: then all 20.
    wait_exact(&run.api, FLOWS, 20).await;
    append(&app, &tagged("app", 20, 5));
    append(&app, &tagged("app", 25, 5));
    wait_exact(&run.api, FLOWS, 30).await;

    // A stack trace split across two writes at the end of the file.
    let mut part1 = log4j("ERROR", 30, "Order failed");
    part1.push_str("java.lang.IllegalStateException: stock service unavailable\n");
    part1.push_str("\tat com.contoso.orders.Stock.check(Stock.java:42)\n");
    append(&app, &part1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let part2 = "\tat com.contoso.orders.Api.get(Api.java:17)\n\
                 Caused by: java.net.ConnectException: Connection refused\n\
                 \t... 12 more\n";
    append(&app, part2);
    append(&app, &log4j("INFO", 31, "app 31"));
    // The ERROR entry with its whole trace, then (after the timeout) the last line.
    wait_exact(&run.api, FLOWS, 32).await;
    assert_eq!(
        count(
            &run.api,
            "SELECT count(*) FROM flow_logs WHERE level = 'ERROR'"
        )
        .await
        .unwrap(),
        1
    );
    let msg = scalar(
        &run.api,
        "SELECT message FROM flow_logs WHERE level = 'ERROR'",
    )
    .await
    .unwrap();
    let msg = msg.as_str().unwrap_or_default().to_string();
    assert!(msg.starts_with("Order failed"), "{msg}");
    assert!(
        msg.contains("Caused by: java.net.ConnectException"),
        "{msg}"
    );
    assert!(msg.contains("... 12 more"), "{msg}");
    // It points at its line in the file.
    assert_eq!(
        count(
            &run.api,
            "SELECT source_line FROM flow_logs WHERE level = 'ERROR'"
        )
        .await
        .unwrap(),
        31
    );

    // A new file matching the glob: JSON Logger lines, one cut between two writes.
    let lines = generate(5, 40, 1_730_887_200_000_000_000, 150).mule_lines;
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut cut = body.len() / 2 + 7;
    while !body.is_char_boundary(cut) {
        cut += 1;
    }
    let other = logs.join("orders-2.log");
    append(&other, &body[..cut]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&other, &body[cut..]);
    // Not matching the glob: never read.
    append(&logs.join("orders.txt"), &tagged("txt", 100, 3));
    let total = 32 + n(lines.len());
    wait_exact(&run.api, FLOWS, total).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&run.api, FLOWS).await.unwrap(), total);
    assert_eq!(
        count(&run.api, "SELECT count(DISTINCT record_key) FROM flow_logs")
            .await
            .unwrap(),
        total
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);

    // Positions: one per file, with path, fingerprint and line number.
    let status = source_status(&run.api, "mule-files").await;
    assert_eq!(status["type"], "file", "{status}");
    assert_eq!(status["positions"], 2, "{status}");
    assert_eq!(status["duplicates"], 0, "{status}");
    assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
    let detail = scalar(
        &run.api,
        "SELECT detail FROM source_positions WHERE source = 'mule-files' AND detail LIKE '%orders.log\"%' \
         ORDER BY time DESC LIMIT 1",
    )
    .await
    .unwrap();
    let detail: serde_json::Value = serde_json::from_str(detail.as_str().unwrap()).unwrap();
    assert_eq!(detail["path"], app.display().to_string(), "{detail}");
    // 30 lines, the ERROR entry's 6, the last one: the next line is 38.
    assert_eq!(detail["line"], 38, "{detail}");
    assert_eq!(detail["fp"].as_str().map(str::len), Some(8), "{detail}");
    // Caught up: nothing behind.
    let start = Instant::now();
    loop {
        let status = source_status(&run.api, "mule-files").await;
        if status["lag_bytes"] == 0 {
            break;
        }
        assert!(start.elapsed() < CATCH_UP, "still behind: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `seam sources` shows it.
    let (ok, out, err) = seam_cmd(&["sources", "--server", &format!("http://{}", run.api)]);
    assert!(ok, "{err}");
    assert!(out.contains("mule-files") && out.contains("file"), "{out}");
    drop(run);
}

/// Rename rotation in `dir` (lines tagged `tag`): reads while rotating twice; the rotated
/// files are renamed while lines written just before are possibly unread.
async fn rotate_by_rename(api: &str, dir: &Path, tag: &str) {
    let live = dir.join("app.log");
    append(&live, &tagged(tag, 0, 100));
    wait_exact(api, &tag_count(tag), 100).await;
    // Written just before the rename: read through the renamed file.
    append(&live, &tagged(tag, 100, 50));
    std::fs::rename(&live, dir.join("app.log.1")).unwrap();
    append(&live, &tagged(tag, 150, 70));
    wait_exact(api, &tag_count(tag), 220).await;
    std::fs::rename(dir.join("app.log.1"), dir.join("app.log.2")).unwrap();
    std::fs::rename(&live, dir.join("app.log.1")).unwrap();
    append(&live, &tagged(tag, 220, 30));
    wait_exact(api, &tag_count(tag), 250).await;
}

/// A gzip file holding `text`.
fn write_gz(path: &Path, text: &str) {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_copy_truncate_and_gzip_read_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let folder = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (rs, rp, ct, gz) = (folder("rs"), folder("rp"), folder("ct"), folder("gz"));
    // Before seam starts: an old rotated gzip file and the live file.
    write_gz(&gz.join("app.log.2.gz"), &tagged("gz", 0, 500));
    append(&gz.join("app.log"), &tagged("gz", 500, 60));
    let timeout = "multiline_timeout = \"1s\"\n";
    let toml = [
        file_source("rot-star", "mule", &[rs.join("app.log*")], timeout),
        file_source("rot-plain", "mule", &[rp.join("app.log")], timeout),
        file_source("copytrunc", "mule", &[ct.join("app.log")], timeout),
        file_source(
            "gzip",
            "mule",
            &[gz.join("app.log*")],
            &format!("{timeout}max_batch_bytes = 4096\n"),
        ),
    ]
    .concat();
    let run = spawn_custom(&data, &toml, &[], None);

    // Gzip: the rotated file is decompressed in steps of at most 4 KiB, once.
    wait_exact(&run.api, &tag_count("gz"), 560).await;
    write_gz(&gz.join("app.log.3.gz"), &tagged("gz", 560, 100));
    wait_exact(&run.api, &tag_count("gz"), 660).await;
    wait_exact(
        &run.api,
        "SELECT count(DISTINCT key) FROM source_positions WHERE source = 'gzip' \
         AND detail LIKE '%\"gz\":true%' AND detail LIKE '%\"done\":true%'",
        2,
    )
    .await;

    // Rename rotation, with a pattern that matches the rotated names and one that does not.
    rotate_by_rename(&run.api, &rs, "rs").await;
    rotate_by_rename(&run.api, &rp, "rp").await;

    // Copy-truncate: copy, truncate to 0, write again (less than read, then more).
    let live = ct.join("app.log");
    append(&live, &tagged("ct", 0, 100));
    wait_exact(&run.api, &tag_count("ct"), 100).await;
    append(&live, &tagged("ct", 100, 20));
    wait_exact(&run.api, &tag_count("ct"), 120).await;
    std::fs::copy(&live, ct.join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&live, &tagged("ct", 120, 40));
    wait_exact(&run.api, &tag_count("ct"), 160).await;
    std::fs::copy(&live, ct.join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&live, &tagged("ct", 160, 300));
    wait_exact(&run.api, &tag_count("ct"), 460).await;
    assert!(
        read_errors(&run.api, "copytrunc").await >= 2.0,
        "each truncation is reported"
    );

    // Everything once, nothing refused, nothing seen twice.
    let total = 660 + 250 + 250 + 460;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&run.api, FLOWS).await.unwrap(), total);
    assert_eq!(
        count(&run.api, "SELECT count(DISTINCT record_key) FROM flow_logs")
            .await
            .unwrap(),
        total
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);
    for name in ["rot-star", "rot-plain", "copytrunc", "gzip"] {
        let status = source_status(&run.api, name).await;
        assert_eq!(status["duplicates"], 0, "{status}");
        assert_eq!(status["rejected"], 0, "{status}");
    }

    // A restart reads nothing again: not the rotated files, not the finished gzip files.
    sigterm_and_wait(run);
    let run = spawn_custom(&data, &toml, &[], None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&run.api, FLOWS).await.unwrap(), total);
    for name in ["rot-star", "rot-plain", "copytrunc", "gzip"] {
        let status = source_status(&run.api, name).await;
        assert_eq!(status["records"], 0, "{status}");
        assert_eq!(status["state"], "running", "{status}");
    }
    // And goes on where it was.
    append(&rs.join("app.log"), &tagged("rs", 250, 10));
    wait_exact(&run.api, &tag_count("rs"), 260).await;
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_while_a_writer_appends_loses_and_repeats_nothing() {
    const LINES: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // JSON Logger lines (2024-11-06), written in pieces cut anywhere, with a rotation by
    // rename half-way.
    let lines = generate(77, 11_000, 1_730_887_200_000_000_000, 20).mule_lines;
    assert!(lines.len() >= LINES, "{}", lines.len());
    let lines = &lines[..LINES];
    let half: String = lines[..LINES / 2]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let rest: String = lines[LINES / 2..]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let toml = file_source(
        "crash-files",
        "mule",
        &[logs.join("app.log*")],
        "multiline_timeout = \"1s\"\n",
    );
    let run = spawn_custom(&data, &toml, &[], None);
    let live = logs.join("app.log");
    let rotated = logs.join("app.log.1");
    let writer = std::thread::spawn(move || {
        let write = |text: &str| {
            for piece in text.as_bytes().chunks(8 * 1024 + 17) {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&live)
                    .unwrap();
                f.write_all(piece).unwrap();
                drop(f);
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        write(&half);
        std::fs::rename(&live, &rotated).unwrap();
        write(&rest);
    });

    // Kill seam while the writer is still writing and seam has taken some, not all.
    let taken = wait_at_least(&run.api, FLOWS, 1).await;
    assert!(taken < n(LINES), "seam took {taken} before the kill");
    assert!(!writer.is_finished(), "the writer finished before the kill");
    kill9(run);

    let run = spawn_custom(&data, &toml, &[], None);
    writer.join().unwrap();
    wait_exact(&run.api, FLOWS, n(LINES)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&run.api, FLOWS).await.unwrap(), n(LINES));
    assert_eq!(
        count(&run.api, "SELECT count(DISTINCT record_key) FROM flow_logs")
            .await
            .unwrap(),
        n(LINES)
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);
    // Nothing was read twice: the positions stored with the records were where it resumed.
    let status = source_status(&run.api, "crash-files").await;
    assert_eq!(status["duplicates"], 0, "{status}");
    assert_eq!(status["rejected"], 0, "{status}");
    drop(run);
}

/// The source's pauses counted in `/metrics` (seam refused its input for now).
async fn pauses(api: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(
        &text,
        &format!("seam_source_pauses_total{{source=\"{name}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_pauses_the_source_and_every_line_still_arrives_once() {
    const LINES: usize = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let lines = generate(78, 4_000, 1_730_887_200_000_000_000, 20).mule_lines;
    assert!(lines.len() >= LINES, "{}", lines.len());
    let text: String = lines[..LINES].iter().map(|l| format!("{l}\n")).collect();
    append(&logs.join("app.log"), &text);
    // A memory budget far below the file: seam refuses input for now again and again until
    // the flusher catches up; the source must pause and retry, never drop or skip.
    let toml = format!(
        "[storage]\nmax_buffer_bytes = 1048576\nflush_interval = \"1s\"\n{}",
        file_source(
            "bp-files",
            "mule",
            &[logs.join("app.log")],
            "max_batch_bytes = 16384\n"
        )
    );
    let run = spawn_custom(&data, &toml, &[], None);
    wait_exact(&run.api, FLOWS, n(LINES)).await;
    assert_eq!(
        count(&run.api, "SELECT count(DISTINCT record_key) FROM flow_logs")
            .await
            .unwrap(),
        n(LINES)
    );
    assert_eq!(count(&run.api, REJECTS).await.unwrap(), 0);
    let status = source_status(&run.api, "bp-files").await;
    assert_eq!(status["duplicates"], 0, "{status}");
    assert_eq!(status["records"], n(LINES), "{status}");
    assert!(
        pauses(&run.api, "bp-files").await > 0.0,
        "the source never paused: the budget did not bite"
    );
    sigterm_and_wait(run);
}

/// The promise end to end: evidence pulled from files (APIM gateway records and
/// custom events, Mule JSON Logger lines and the runtime's log4j events, OTLP/JSON spans,
/// from three `[[sources]]`), with the generator's noise (probes, schedulers, platform
/// lines, lines shipped twice), lands in the raw tables and correlates into exactly the
/// requests the generator's truth says, with no other program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_files_correlate_into_exactly_the_true_requests() {
    use seam_tests::generator::Truth;
    const N: usize = 400;
    // 2024-11-06T10:00:00Z, one request every 150 ms.
    let t = generate(43, N, 1_730_887_200_000_000_000, 150);
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path();
    let mut apim: Vec<String> = t.gateway_lines.clone();
    apim.extend(t.events.iter().cloned());
    // Late gateway records (some a second time, in another shape) at the end of the file.
    apim.extend(t.late_gateway.iter().map(|v| v.to_string()));
    append(&dir.join("apim.jsonl"), &(apim.join("\n") + "\n"));
    // JSON Logger lines, then those shipped a second time; the runtime's log4j events (text)
    // in a file of their own.
    let mut mule = t.mule_lines.clone();
    mule.extend(t.mule_duplicates.iter().cloned());
    append(&dir.join("mule.log"), &(mule.join("\n") + "\n"));
    append(
        &dir.join("mule-runtime.log"),
        &(t.mule_log4j.join("\n") + "\n"),
    );
    let otlp: Vec<String> = t.otlp.iter().map(|v| v.to_string()).collect();
    append(&dir.join("otlp.jsonl"), &(otlp.join("\n") + "\n"));
    let toml = [
        file_source("gw", "apim", &[dir.join("apim.jsonl")], ""),
        file_source(
            "mule",
            "mule",
            &[dir.join("mule.log"), dir.join("mule-runtime.log")],
            "",
        ),
        file_source("otel", "otlp_json", &[dir.join("otlp.jsonl")], ""),
    ]
    .join("\n");
    let sources = seam::config::SeamConfig::from_toml(&toml).unwrap().sources;
    let stack = Stack::start_with(|c| {
        c.sources = sources;
        c.correlation.horizon = Duration::from_secs(3);
        c.correlation.delay = Duration::from_millis(300);
    })
    .await;
    let api = stack.api();
    let settled = "SELECT count(*) FROM requests WHERE settled";
    crate::support::wait_exact(&api, settled, n(N), Duration::from_secs(180)).await;
    assert_eq!(
        count(&api, "SELECT count(*) FROM requests").await.unwrap(),
        n(N)
    );
    let truth = |f: fn(&Truth) -> bool| n(t.truth.iter().filter(|x| f(x)).count());
    for (view, want) in [
        ("audit_gateway_bypass", truth(|x| x.bypass)),
        ("audit_expired_token_use", truth(|x| x.expired_success)),
        ("audit_denials", truth(|x| x.rejected_by.is_some())),
    ] {
        assert_eq!(
            count(&api, &format!("SELECT count(*) FROM {view}"))
                .await
                .unwrap(),
            want,
            "{view}"
        );
    }
    let ids = sql(&api, "SELECT request_id FROM requests").await.unwrap();
    let got: std::collections::HashSet<&str> = ids
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    for want in &t.truth {
        assert!(
            got.contains(want.request_id.as_str()),
            "{} ({}) missing",
            want.request_id,
            want.kind
        );
    }
    for name in ["gw", "mule", "otel"] {
        let s = source_status(&api, name).await;
        assert_eq!(s["rejected"], 0, "{s}");
        assert_eq!(s["last_error"], serde_json::Value::Null, "{s}");
    }
    stack.stop().await;
}

/// A file source read through a mapping (`mapping = "kong"`, no `format`): Kong's file-log
/// lines land in `gateway_logs` as Kong's, appended lines too, duplicates once, and a line
/// the mapping cannot read is refused with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_source_reads_kong_logs_through_the_preset_mapping() {
    let start = 1_730_887_200_000_000_000;
    let t = seam_tests::generator::generate_gateways(21, 120, start, 150);
    let kong = t.lines("kong");
    assert!(kong.len() > 10, "{}", kong.len());
    let distinct: std::collections::BTreeSet<&String> = kong.iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("kong");
    std::fs::create_dir_all(&logs).unwrap();
    let file = logs.join("seam.jsonl");
    let half = kong.len() / 2;
    append(&file, &seam_tests::generator::lines_text(&kong[..half]));
    let toml = format!(
        "[[sources]]\nname = \"kong-files\"\ntype = \"file\"\nmapping = \"kong\"\n\
         paths = ['{}']\npoll_interval = \"200ms\"\n",
        logs.join("*.jsonl").display()
    );
    let run = spawn_custom(&dir.path().join("data"), &toml, &[], None);
    let first: std::collections::BTreeSet<&String> = kong[..half].iter().collect();
    let kong_rows = "SELECT count(*) FROM gateway_logs WHERE gateway_product = 'kong'";
    wait_exact(&run.api, kong_rows, n(first.len())).await;
    append(&file, &seam_tests::generator::lines_text(&kong[half..]));
    append(
        &file,
        "{\"request\":{\"method\":\"GET\"},\"response\":{\"status\":200}}\n",
    );
    wait_exact(&run.api, kong_rows, n(distinct.len())).await;
    wait_exact(&run.api, REJECTS, 1).await;
    let reason = scalar(&run.api, "SELECT reason FROM rejects")
        .await
        .unwrap();
    let reason = reason.as_str().unwrap_or_default();
    assert!(
        reason.contains("mapping kong") && reason.contains("field time"),
        "{reason}"
    );
    assert_eq!(
        count(
            &run.api,
            "SELECT count(*) FROM gateway_logs WHERE array_to_string(source_formats, ',') = 'mapping:kong' AND gateway = 'kong'"
        )
        .await
        .unwrap(),
        n(distinct.len())
    );
    let status = source_status(&run.api, "kong-files").await;
    assert_eq!(status["rejected"], 1, "{status}");
    drop(run);
}
