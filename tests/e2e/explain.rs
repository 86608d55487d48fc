//! `seam explain` and `GET /api/v1/requests/{id}/explain`: on generated traffic with known
//! truth, the explanations of a bypass, a backend denial, a gateway denial and a plain success
//! give the values of their `requests` rows, with evidence among their `request_events`, and
//! every record says what linked it; the binary prints the same answer as a waterfall or as
//! JSON; an unknown id is a 404 (exit code 1 and a message that says so); ids that cannot be
//! request ids are a 400; with keys configured the route needs the query role, and both the
//! explanation and the refusal are audited. A reused id lists its other runs (`others`) and
//! `at` picks one; the binary refuses an id with a control character without asking the
//! server, and never prints the password of a `--server` address.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const SEAM: &str = env!("CARGO_BIN_EXE_seam");

/// The verdicts checked against the `requests` row.
const CHECKED: [&str; 4] = [
    "bypassed_gateway",
    "rejected_by",
    "status_code",
    "backend_ms",
];

/// Runs `seam explain ARGS --server http://API` with a clean environment plus `envs`:
/// (exit code, stdout, stderr).
fn seam_explain(api: &str, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(SEAM)
        .arg("explain")
        .args(args)
        .arg("--server")
        .arg(format!("http://{api}"))
        .env_remove("SEAM_TOKEN")
        .env_remove("SEAM_TOKEN_FILE")
        .env_remove("SEAM_SERVER")
        .env_remove("COLUMNS")
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The same JSON value; numbers compared as numbers (`112` and `112.0` are the same).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-6,
        _ => a == b,
    }
}

fn verdict<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no verdict {name} in {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_give_the_rows_values_with_their_evidence() {
    use seam_tests::generator::generate;
    const N: usize = 40;
    // 2024-11-06T10:00:00Z, one request every 150 ms: four of each kind.
    let start = 1_730_887_200_000_000_000i64;
    let t = generate(7, N, start, 150);
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
    })
    .await;
    let http = stack.addrs.ingest_http.to_string();
    let api = stack.api();
    send_traffic(&http, &t).await;
    let api2 = api.clone();
    wait_until(
        "generated requests settled",
        Duration::from_secs(120),
        || {
            let api = api2.clone();
            async move {
                match count(&api, "SELECT count(*) FROM requests WHERE settled").await {
                    Ok(c) if c >= N as i64 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await
    .unwrap();

    let client = reqwest::Client::new();
    for kind in ["bypass", "backend_denial", "gateway_denial", "ok"] {
        let truth = t
            .truth
            .iter()
            .find(|x| x.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} in the generated traffic"));
        let id = truth.request_id.as_str();
        let ctx = format!("{kind} {id}");
        let resp = client
            .get(format!("http://{api}/api/v1/requests/{id}/explain"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{ctx}");
        assert!(
            resp.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{ctx}"
        );
        let e: Value = resp.json().await.unwrap();
        assert_eq!(e["request_id"], id, "{ctx}");
        assert_eq!(e["kind"], "request", "{ctx}: {e:#}");

        let rows = sql(
            &api,
            &format!(
                "SELECT bypassed_gateway, rejected_by, status_code, backend_ms FROM requests \
                 WHERE request_id = {}",
                q(id)
            ),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1, "{ctx}");
        let row = &rows[0];
        let keys: BTreeSet<String> = sql(
            &api,
            &format!(
                "SELECT record_key FROM request_events WHERE request_id = {}",
                q(id)
            ),
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r["record_key"].as_str().map(str::to_string))
        .collect();
        assert!(!keys.is_empty(), "{ctx}: no request_events");

        for name in CHECKED {
            let v = verdict(&e, name);
            assert!(
                same(&v["value"], &row[name]),
                "{ctx}: verdict {name} = {} but requests.{name} = {}",
                v["value"],
                row[name]
            );
            assert!(
                v["rule"].as_str().is_some_and(|r| !r.is_empty()),
                "{ctx}: {name} has no rule: {v}"
            );
            if v["value"].is_null() {
                assert!(
                    v["why_null"].as_str().is_some_and(|w| !w.is_empty()),
                    "{ctx}: NULL {name} does not say why: {v}"
                );
            } else {
                let evidence = v["evidence"].as_array().unwrap();
                assert!(!evidence.is_empty(), "{ctx}: {name} has no evidence: {v}");
                for k in evidence {
                    let k = k.as_str().unwrap();
                    assert!(
                        keys.contains(k),
                        "{ctx}: {name}'s evidence {k} is not a record of the request ({keys:?})"
                    );
                }
            }
        }
        // The explanation's records are the request's records, each saying what linked it.
        let records = e["records"].as_array().unwrap();
        let explained: BTreeSet<String> = records
            .iter()
            .map(|r| r["record_key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(explained, keys, "{ctx}");
        if records.len() > 1 {
            for r in records {
                assert!(
                    r["linked_by"].as_array().is_some_and(|l| !l.is_empty()),
                    "{ctx}: record {} says nothing linked it",
                    r["record_key"]
                );
            }
        }

        // The same explanation as text, from the server.
        let resp = client
            .get(format!(
                "http://{api}/api/v1/requests/{id}/explain?format=text"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{ctx}");
        assert!(
            resp.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{ctx}"
        );
        let text = resp.text().await.unwrap();
        assert!(text.contains(id) && text.contains("Verdicts"), "{text}");

        // The binary: the waterfall, and the server's JSON.
        let (code, out, err) = seam_explain(&api, &[id, "--format", "text", "--width", "100"], &[]);
        assert_eq!(code, Some(0), "{ctx}: {err}");
        assert!(out.contains(id), "{out}");
        assert!(out.contains("Verdicts"), "{out}");
        assert!(out.contains("Token"), "{out}");
        for r in records {
            let layer = r["layer"].as_str().unwrap();
            assert!(out.contains(layer), "{ctx}: no layer {layer} in\n{out}");
        }
        assert!(
            out.lines()
                .filter(|l| !l.contains(id) && !keys.iter().any(|k| l.contains(k.as_str())))
                .all(|l| l.chars().count() <= 100),
            "{out}"
        );
        let (code, out, err) = seam_explain(&api, &[id, "--format", "json"], &[]);
        assert_eq!(code, Some(0), "{ctx}: {err}");
        let printed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(printed, e, "{ctx}");
    }

    // An id seam has never seen.
    let resp = client
        .get(format!(
            "http://{api}/api/v1/requests/no-such-request-0000/explain"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"], "no request or probe with id no-such-request-0000",
        "{body}"
    );
    let (code, out, err) = seam_explain(&api, &["no-such-request-0000"], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "seam: no request or probe with id no-such-request-0000 (is it correlated yet?"
        ),
        "{err}"
    );
    // Ids that cannot be request ids, and formats that do not exist.
    let long = "a".repeat(513);
    for (path, want) in [
        (format!("/api/v1/requests/{long}/explain"), 400),
        ("/api/v1/requests/a%0Ab/explain".to_string(), 400),
        ("/api/v1/requests/x/explain?format=xml".to_string(), 400),
        (format!("/api/v1/requests/{}/explain", "a".repeat(512)), 404),
    ] {
        let resp = client
            .get(format!("http://{api}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().is_some(), "{path}: {body}");
    }
    // A server that is not there: the message names it, without the password.
    let port = free_port();
    let (code, _, err) = seam_explain(&format!("127.0.0.1:{port}"), &["x"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach seam at http://127.0.0.1:{port}")),
        "{err}"
    );
    let (code, _, err) = seam_explain(&format!("admin:s3cr3tpw@127.0.0.1:{port}"), &["x"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("s3cr3tpw"), "{err}");
    assert!(
        err.contains(&format!("cannot reach seam at http://127.0.0.1:{port}")),
        "{err}"
    );
    stack.stop().await;
}

/// One JSON Logger START/END pair of `id` at `start` and `end` (RFC 3339): an inbound request
/// from a client straight to Mule (a bypass).
fn mule_run(id: &str, start: &str, end: &str) -> [String; 2] {
    let line = |trace_point: &str, at: &str, content: Value| {
        serde_json::json!({"correlationId": id, "tracePoint": trace_point, "priority": "INFO",
               "elapsed": 0, "message": trace_point, "timestamp": at,
               "locationInfo": {"rootContainer": "gen-main", "fileName": "gen.xml", "lineInFile": "1"},
               "applicationName": "gen-papi", "content": content})
        .to_string()
    };
    [
        line(
            "START",
            start,
            serde_json::json!({"method": "GET", "requestPath": "/api/orders/17",
                               "remoteAddress": "/203.0.113.77:51000"}),
        ),
        line("END", end, serde_json::json!({"statusCode": 200})),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_id_lists_its_other_runs_and_at_picks_one() {
    const ID: &str = "reused-correlation-id-1";
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
    })
    .await;
    let http = stack.addrs.ingest_http.to_string();
    let api = stack.api();
    // The same id 40 minutes apart: two requests.
    let mut lines = mule_run(ID, "2024-11-06T10:00:00.000Z", "2024-11-06T10:00:00.050Z").to_vec();
    lines.extend(mule_run(
        ID,
        "2024-11-06T10:40:00.000Z",
        "2024-11-06T10:40:00.030Z",
    ));
    post_lines(&http, "/ingest/mule", &lines, 100).await;
    wait_exact(
        &api,
        &format!("SELECT count(*) FROM requests WHERE request_id = {}", q(ID)),
        2,
        Duration::from_secs(60),
    )
    .await;

    let client = reqwest::Client::new();
    let get = |query: String| {
        let client = client.clone();
        let url = format!("http://{api}/api/v1/requests/{ID}/explain{query}");
        async move { client.get(url).send().await.unwrap() }
    };
    // Without `at`: the earliest, and the other's start time.
    let resp = get(String::new()).await;
    assert_eq!(resp.status(), 200);
    let first: Value = resp.json().await.unwrap();
    let first_time = first["time"].as_str().unwrap().to_string();
    assert!(first_time.starts_with("2024-11-06T10:00:00"), "{first:#}");
    let others = first["others"].as_array().unwrap();
    assert_eq!(others.len(), 1, "{first:#}");
    let other = others[0].as_str().unwrap().to_string();
    assert!(other.starts_with("2024-11-06T10:40:00"), "{first:#}");
    // `at` the other time: that run, listing the first.
    let resp = get(format!("?at={other}")).await;
    assert_eq!(resp.status(), 200);
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second["time"], other.as_str(), "{second:#}");
    assert_eq!(
        second["others"],
        serde_json::json!([first_time]),
        "{second:#}"
    );
    // `at` as ns since the epoch, a minute off: still the closer run.
    let resp = get("?at=1730889660000000000".to_string()).await;
    assert_eq!(resp.status(), 200);
    let near: Value = resp.json().await.unwrap();
    assert_eq!(near["time"], other.as_str(), "{near:#}");
    // A bad `at` is a 400 that names it.
    let resp = get("?at=yesterday".to_string()).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().is_some_and(|e| e.starts_with("at ")),
        "{body}"
    );
    // The binary: --at, and the text names the other run.
    let (code, out, err) =
        seam_explain(&api, &[ID, "--format", "json", "--at", other.as_str()], &[]);
    assert_eq!(code, Some(0), "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["time"], other.as_str(), "{out}");
    let (code, out, err) = seam_explain(&api, &[ID], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Also with this id:"), "{out}");
    assert!(out.contains(&other), "{out}");
    stack.stop().await;
}

#[test]
fn the_binary_refuses_an_id_with_a_control_character_without_asking() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let api = listener.local_addr().unwrap().to_string();
    for id in ["a\tb", "..", "."] {
        let (code, out, err) = seam_explain(&api, &[id], &[]);
        assert_eq!(code, Some(1), "{id:?}: {out}{err}");
        assert!(out.is_empty(), "{id:?}: {out}");
        if id == "a\tb" {
            assert!(err.contains("control character"), "{err}");
        } else {
            assert!(err.contains("`.` or `..`"), "{err}");
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("seam explain contacted the server: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_needs_the_query_role_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let keys = crate::auth::make_keys(dir.path());
    let stack = Stack::start_with(|c| c.auth.keys_file = Some(keys.file.clone())).await;
    let api = stack.api();
    let url = format!("http://{api}/api/v1/requests/nope/explain");
    let client = reqwest::Client::new();

    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()
            .contains_key(reqwest::header::WWW_AUTHENTICATE)
    );
    let resp = client
        .get(&url)
        .bearer_auth(&keys.ingest)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    for key in [&keys.query, &keys.admin] {
        let resp = client.get(&url).bearer_auth(key).send().await.unwrap();
        assert_eq!(resp.status(), 404, "past the guard: no such request");
    }

    // The binary sends SEAM_TOKEN; without it, it says what to set.
    let (code, _, err) = seam_explain(&api, &["nope"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("401") && err.contains("SEAM_TOKEN"), "{err}");
    let (code, _, err) = seam_explain(&api, &["nope"], &[("SEAM_TOKEN", keys.query.as_str())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no request or probe with id nope"), "{err}");

    // Both the explanation and the refusal are in seam_audit.
    let admin = keys.admin.clone();
    let sql_url = format!("http://{api}/api/v1/sql?format=json");
    let rows = wait_until("explain audited", Duration::from_secs(20), || {
        let (client, admin, sql_url) = (client.clone(), admin.clone(), sql_url.clone());
        async move {
            let rows: Vec<Value> = client
                .post(&sql_url)
                .bearer_auth(&admin)
                .body(
                    "SELECT action, principal, outcome, statement FROM seam_audit \
                     WHERE action IN ('explain', 'login')",
                )
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let has = |action: &str, outcome: &str, statement: &str| {
                rows.iter().any(|r| {
                    r["action"] == action && r["outcome"] == outcome && r["statement"] == statement
                })
            };
            (has("explain", "ok", "request_id=nope")
                && has(
                    "login",
                    "unauthenticated",
                    "GET /api/v1/requests/nope/explain",
                ))
            .then_some(rows)
        }
    })
    .await
    .unwrap();
    assert!(
        rows.iter()
            .any(|r| r["action"] == "explain" && r["principal"] == "grafana"),
        "{rows:?}"
    );
    stack.stop().await;
}
