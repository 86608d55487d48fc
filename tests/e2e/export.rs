//! `seam export`: a generated world cut in two by time gives each half exactly its rows (the
//! range is half-open, to the nanosecond); pyarrow, DuckDB, Python's hashlib and
//! `sha256sum -c` read and verify the files independently of seam; the answers match the SQL
//! API's for the same range; a filter narrows the sets that have its column; a non-empty
//! directory (without `--force`) and an empty range are refused; a failed export removes the
//! directory it created and never prints the password of `--server`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::seam_cmd;
use crate::support::*;

const N: usize = 200;
/// 2024-11-06T10:00:00Z; one request every 150 ms.
const START_NS: i64 = 1_730_887_200_000_000_000;
const START: &str = "2024-11-06T10:00:00Z";
/// The start of request 101 (its gateway record; its other records come later): the first
/// half (requests 0 to 100, each starting at most 12 ms after its slot) ends right before it,
/// the second starts with it.
const CUT: &str = "2024-11-06T10:00:15.150Z";
/// `CUT` written with an offset.
const CUT_OFFSET: &str = "2024-11-06T11:00:15.15+01:00";
const END: &str = "2024-11-06T10:01:00Z";
/// The external health probe sent with the traffic (in the first half).
const PROBE_ID: &str = "gen-external-probe-1";

/// Sends the generated world through the ingest endpoints (duplicates and late gateway
/// records last), and one more health probe from a public address straight to Mule.
async fn send_traffic_and_probe(http: &str, t: &seam_tests::generator::Traffic) {
    send_traffic(http, t).await;
    let line = |trace_point: &str, at: &str, content: Value| {
        json!({"correlationId": PROBE_ID, "tracePoint": trace_point, "priority": "INFO",
               "elapsed": 0, "message": trace_point, "timestamp": at,
               "locationInfo": {"rootContainer": "gen-main", "fileName": "gen.xml", "lineInFile": "1"},
               "applicationName": "gen-papi", "content": content})
        .to_string()
    };
    let probe = [
        line(
            "START",
            "2024-11-06T10:00:05.000Z",
            json!({"method": "GET", "requestPath": "/health", "remoteAddress": "/203.0.113.250:40000"}),
        ),
        line(
            "END",
            "2024-11-06T10:00:05.002Z",
            json!({"statusCode": 200}),
        ),
    ];
    post_body(http, "/ingest/mule", probe.join("\n")).await;
}

/// Runs `seam export --server http://api ARGS` off the async runtime (the server is in
/// process): (success, stdout, stderr).
async fn export(api: &str, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<String> = vec!["export".into(), "--server".into(), format!("http://{api}")];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        seam_cmd(&refs)
    })
    .await
    .unwrap()
}

async fn export_ok(api: &str, args: &[&str]) -> String {
    let (ok, out, err) = export(api, args).await;
    assert!(ok, "seam export {args:?} failed: {err}");
    out
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// What an independent reader finds, per set: checksums and sizes against the manifest
/// (hashlib), rows (pyarrow or Python's csv, and DuckDB), request ids in file order, the
/// token_sharing rows, and the first access_log time as written.
fn read_with_python(dir: &Path) -> Value {
    let script = r#"
import sys, os, json, hashlib, csv
import pyarrow.parquet as pq
import duckdb
d = sys.argv[1]
m = json.load(open(os.path.join(d, 'manifest.json')))
con = duckdb.connect()
out = {}
for f in m['files']:
    p = os.path.join(d, f['name'])
    h = hashlib.sha256()
    with open(p, 'rb') as fh:
        for block in iter(lambda: fh.read(1 << 16), b''):
            h.update(block)
    s = {'sha256_ok': h.hexdigest() == f['sha256'], 'bytes_ok': os.path.getsize(p) == f['bytes']}
    lit = p.replace("'", "''")
    if m['format'] == 'parquet':
        t = pq.read_table(p)
        rows = t.to_pylist()
        s['columns'] = t.column_names
        if 'time' in t.column_names:
            s['time_type'] = str(t.schema.field('time').type)
        s['duckdb_rows'] = con.execute(f"SELECT count(*) FROM read_parquet('{lit}')").fetchone()[0]
    else:
        with open(p, newline='') as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            s['columns'] = reader.fieldnames
        s['duckdb_rows'] = con.execute(
            f"SELECT count(*) FROM read_csv_auto('{lit}', header=true)").fetchone()[0] if rows else 0
    s['rows'] = len(rows)
    if rows and 'request_id' in rows[0]:
        s['request_ids'] = [r['request_id'] for r in rows]
    if rows and 'probe_id' in rows[0]:
        s['probe_ids'] = [r['probe_id'] for r in rows]
    if f['set'] == 'token_sharing':
        s['tokens'] = [{'token_id': r['token_id'], 'requests': int(r['requests']),
                        'client_ips': int(r['client_ips']),
                        'ips': json.loads(r['ips']) if isinstance(r['ips'], str) else list(r['ips'])}
                       for r in rows]
    if f['set'] == 'access_log' and rows:
        s['first_time'] = str(rows[0]['time'])
    out[f['set']] = s
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("python3 with pyarrow and duckdb (make test-deps installs them)");
    assert!(
        out.status.success(),
        "pyarrow/duckdb failed (run `make test-deps`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sha256sum -c SHA256SUMS` in `dir` passes.
fn sha256sum_check(dir: &Path) {
    let out = Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .expect("sha256sum");
    assert!(
        out.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn range(since: &str, until: &str) -> String {
    format!("time >= '{since}' AND time < '{until}'")
}

/// The `column` of `SELECT column FROM source WHERE <range> ORDER BY order`, through the SQL API.
async fn ids(api: &str, column: &str, source: &str, r: &str, order: &str) -> Vec<Value> {
    sql(
        api,
        &format!("SELECT {column} FROM {source} WHERE {r} ORDER BY {order}"),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|row| row[column].clone())
    .collect()
}

/// Checks one export directory against its manifest, the independent readers and the SQL
/// API over `[since, until)`; gives the reader's facts.
async fn check_export(api: &str, dir: &Path, since: &str, until: &str, format: &str) -> Value {
    let m = manifest(dir);
    assert_eq!(m["seam_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m["range"]["since"], since);
    assert_eq!(m["range"]["until"], until);
    assert_eq!(m["range"]["rule"], "time >= since AND time < until");
    assert_eq!(m["format"], format);
    assert_eq!(m["server"], format!("http://{api}"));
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [
        "access_log",
        "gateway_bypass",
        "denials",
        "expired_token_use",
        "token_sharing",
        "external_probes",
    ]
    .iter()
    .map(|s| format!("{s}.{format}"))
    .collect();
    assert_eq!(names, want);
    sha256sum_check(dir);
    let facts = read_with_python(dir);
    for f in m["files"].as_array().unwrap() {
        let set = f["set"].as_str().unwrap();
        let s = &facts[set];
        assert_eq!(s["sha256_ok"], true, "{set}: {s}");
        assert_eq!(s["bytes_ok"], true, "{set}: {s}");
        assert_eq!(s["rows"], f["rows"], "{set}");
        assert_eq!(s["duckdb_rows"], f["rows"], "{set}");
        let query = f["query"].as_str().unwrap();
        assert!(query.contains(&range(since, until)), "{set}: {query}");
    }
    let r = range(since, until);
    let rows = |set: &str| facts[set]["rows"].as_i64().unwrap();
    assert_eq!(
        rows("access_log"),
        count(api, &format!("SELECT count(*) FROM requests WHERE {r}"))
            .await
            .unwrap()
    );
    assert_eq!(
        rows("expired_token_use"),
        count(
            api,
            &format!("SELECT count(*) FROM audit_expired_token_use WHERE {r}")
        )
        .await
        .unwrap()
    );
    // The same requests, in the same order, as the SQL API gives for the range.
    for (set, view) in [
        ("gateway_bypass", "audit_gateway_bypass"),
        ("denials", "audit_denials"),
    ] {
        let want = ids(api, "request_id", view, &r, "time, request_id").await;
        assert!(!want.is_empty(), "{set}");
        let got = facts[set]["request_ids"].as_array().unwrap();
        assert_eq!(got, &want, "{set}");
    }
    let want = ids(
        api,
        "probe_id",
        "audit_external_probes",
        &r,
        "time, probe_id",
    )
    .await;
    assert_eq!(rows("external_probes"), want.len() as i64);
    if !want.is_empty() {
        assert_eq!(
            facts["external_probes"]["probe_ids"].as_array().unwrap(),
            &want
        );
    }
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_a_range_for_auditors_and_verify_it_independently() {
    use seam_tests::generator::generate;
    let t = generate(7, N, START_NS, 150);
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
    })
    .await;
    let api = stack.api();
    send_traffic_and_probe(&stack.addrs.ingest_http.to_string(), &t).await;
    for (what, query, at_least) in [
        (
            "generated requests settled",
            "SELECT count(*) FROM requests WHERE settled",
            N as i64,
        ),
        (
            "the external probe",
            "SELECT count(*) FROM audit_external_probes WHERE probe_id = 'gen-external-probe-1'",
            1,
        ),
    ] {
        let api = api.clone();
        wait_until(what, Duration::from_secs(120), || {
            let api = api.clone();
            async move {
                match count(&api, query).await {
                    Ok(c) if c >= at_least => Some(()),
                    _ => None,
                }
            }
        })
        .await
        .unwrap();
    }
    assert_eq!(
        count(&api, "SELECT count(*) FROM requests").await.unwrap(),
        N as i64
    );
    // The cut is exact: one request starts at CUT, 101 before it.
    assert_eq!(
        count(
            &api,
            &format!("SELECT count(*) FROM requests WHERE time = '{CUT}'")
        )
        .await
        .unwrap(),
        1
    );
    let dir = tempfile::tempdir().unwrap();

    // First half, Parquet (the default).
    let pq = dir.path().join("first-half");
    let out = export_ok(
        &api,
        &[
            "--since",
            START,
            "--until",
            CUT,
            "--out",
            pq.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.contains("access_log.parquet: 101 rows"), "{out}");
    let facts = check_export(&api, &pq, START, CUT, "parquet").await;
    assert_eq!(facts["access_log"]["rows"], 101);
    assert_eq!(facts["access_log"]["time_type"], "timestamp[ns, tz=UTC]");
    // The generator's uptime monitors may add probes of their own to either half.
    assert!(
        facts["external_probes"]["probe_ids"]
            .as_array()
            .unwrap()
            .contains(&json!(PROBE_ID)),
        "{facts}"
    );
    // The shared token: used from two addresses within the half, counted over the half.
    let shared = &facts["token_sharing"]["tokens"];
    assert_eq!(shared.as_array().unwrap().len(), 1, "{shared}");
    assert_eq!(shared[0]["token_id"], t.shared_token.as_str());
    assert_eq!(shared[0]["client_ips"], 2);
    assert_eq!(shared[0]["ips"], json!(["192.0.2.10", "192.0.2.11"]));
    assert_eq!(
        shared[0]["requests"].as_i64().unwrap(),
        count(
            &api,
            &format!(
                "SELECT count(*) FROM requests WHERE token_id = '{}' AND {}",
                t.shared_token,
                range(START, CUT)
            )
        )
        .await
        .unwrap()
    );
    let first = manifest(&pq);

    // A directory that is not empty is refused, and its export is left as it was.
    let (ok, _, err) = export(
        &api,
        &[
            "--since",
            START,
            "--until",
            CUT,
            "--out",
            pq.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(manifest(&pq), first);
    // --force replaces it; the same range gives the same bytes.
    export_ok(
        &api,
        &[
            "--since",
            START,
            "--until",
            CUT,
            "--out",
            pq.to_str().unwrap(),
            "--force",
        ],
    )
    .await;
    let again = manifest(&pq);
    assert_eq!(again["files"][0]["sha256"], first["files"][0]["sha256"]);
    assert_eq!(again["files"][0]["query"], first["files"][0]["query"]);

    // Second half, CSV, the start written with an offset: request 101 (at CUT) is its first
    // row, in RFC 3339 UTC.
    let csv = dir.path().join("second-half");
    let out = export_ok(
        &api,
        &[
            "--since",
            CUT_OFFSET,
            "--until",
            END,
            "--out",
            csv.to_str().unwrap(),
            "--format",
            "csv",
        ],
    )
    .await;
    assert!(out.contains("access_log.csv: 99 rows"), "{out}");
    let facts = check_export(&api, &csv, CUT, END, "csv").await;
    assert_eq!(facts["access_log"]["rows"], (N - 101) as i64);
    assert_eq!(facts["access_log"]["first_time"], CUT);
    assert!(
        facts["external_probes"]
            .get("probe_ids")
            .and_then(Value::as_array)
            .is_none_or(|ids| !ids.contains(&json!(PROBE_ID)))
    );
    // Lists are JSON text in CSV.
    let shared = &facts["token_sharing"]["tokens"];
    assert_eq!(
        shared[0]["ips"],
        json!(["192.0.2.10", "192.0.2.11"]),
        "{shared}"
    );

    // Dates are midnight UTC: the whole day holds the whole world.
    let day = dir.path().join("day");
    export_ok(
        &api,
        &[
            "--since",
            "2024-11-06",
            "--until",
            "2024-11-07",
            "--out",
            day.to_str().unwrap(),
        ],
    )
    .await;
    let m = manifest(&day);
    assert_eq!(m["range"]["since"], "2024-11-06T00:00:00Z");
    assert_eq!(m["files"][0]["rows"], N as i64);
    assert_eq!(m["filters"], json!({}));

    // --api narrows the sets that have api_id, and only those.
    let api_dir = dir.path().join("api");
    export_ok(
        &api,
        &[
            "--since",
            "2024-11-06",
            "--until",
            "2024-11-07",
            "--out",
            api_dir.to_str().unwrap(),
            "--api",
            "gen-api",
        ],
    )
    .await;
    let m = manifest(&api_dir);
    let with_api = count(
        &api,
        "SELECT count(*) FROM requests WHERE api_id = 'gen-api'",
    )
    .await
    .unwrap();
    assert!(with_api > 0 && with_api < N as i64, "{with_api}");
    let file = |set: &str| {
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["set"] == set)
            .unwrap()
            .clone()
    };
    assert_eq!(file("access_log")["rows"], with_api);
    assert_eq!(file("access_log")["filters_applied"], json!(["api_id"]));
    assert!(
        file("access_log")["query"]
            .as_str()
            .unwrap()
            .contains("api_id IN ('gen-api')")
    );
    // No api_id in audit_gateway_bypass: exported whole, and the manifest says so.
    assert_eq!(file("gateway_bypass")["filters_applied"], json!([]));
    assert_eq!(
        file("gateway_bypass")["rows"],
        count(&api, "SELECT count(*) FROM audit_gateway_bypass")
            .await
            .unwrap()
    );
    assert_eq!(m["filters"]["api_id"]["values"], json!(["gen-api"]));
    let applies: Vec<&str> = m["filters"]["api_id"]["applies_to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        applies,
        [
            "access_log",
            "denials",
            "expired_token_use",
            "token_sharing"
        ]
    );
    sha256sum_check(&api_dir);
    // A quote in a value is a literal, not SQL.
    let quoted = dir.path().join("quoted");
    export_ok(
        &api,
        &[
            "--since",
            START,
            "--until",
            END,
            "--out",
            quoted.to_str().unwrap(),
            "--api",
            "it's",
        ],
    )
    .await;
    assert_eq!(manifest(&quoted)["files"][0]["rows"], 0);

    // Refused: an empty or reversed range, a control character in a filter. Nothing is
    // written.
    let refused: [(&[&str], &str); 4] = [
        (&["--since", CUT, "--until", START], "not before"),
        (&["--since", CUT, "--until", CUT_OFFSET], "not before"),
        (
            &["--since", "2024-11-06T10:00:00", "--until", END],
            "offset",
        ),
        (
            &["--since", START, "--until", END, "--subject", "a\nb"],
            "control",
        ),
    ];
    for (args, says) in refused {
        let out = dir.path().join("refused");
        let mut all = args.to_vec();
        all.extend(["--out", out.to_str().unwrap()]);
        let (ok, _, err) = export(&api, &all).await;
        assert!(!ok, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}");
    }
    stack.stop().await;
}

/// A server that cannot be reached: the message names it without its password, and the
/// directory the run created is gone.
#[test]
fn a_failed_export_leaves_no_directory_and_shows_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new");
    let port = free_port();
    let server = format!("http://admin:s3cr3tpw@127.0.0.1:{port}/?x=1#f");
    let (ok, _, err) = seam_cmd(&[
        "export",
        "--server",
        &server,
        "--since",
        START,
        "--until",
        END,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "{err}");
    assert!(!err.contains("s3cr3tpw"), "{err}");
    assert!(
        err.contains(&format!("cannot reach seam at http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!out.exists(), "{err}");
}
