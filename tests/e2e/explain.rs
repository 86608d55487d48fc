//! `seam explain` and `GET /api/v1/requests/{id}/explain`: on generated traffic with known
//! truth, the explanations of a bypass, a backend denial, a gateway denial and a plain success
//! give the values of their `requests` rows, with evidence among their `request_events`, and
//! every record says what linked it; the binary prints the same answer as a waterfall or as
//! JSON; an unknown id is a 404 (exit code 1 and a message that says so); ids that cannot be
//! request ids are a 400; with keys configured the route needs the query role, and both the
//! explanation and the refusal are audited.

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
    // A server that is not there: the message names it.
    let port = free_port();
    let (code, _, err) = seam_explain(&format!("127.0.0.1:{port}"), &["x"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach seam at http://127.0.0.1:{port}")),
        "{err}"
    );
    stack.stop().await;
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
