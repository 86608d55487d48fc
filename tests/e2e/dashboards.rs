//! The Grafana dashboards in `dashboards/`: their structure (stable uids, `__inputs`, every
//! datasource through the input, a description on every panel), and every panel query run
//! over the PostgreSQL wire protocol with `tokio-postgres` after expanding variables and
//! macros as Grafana's PostgreSQL datasource does, on the samples.

use std::collections::BTreeSet;
use std::path::PathBuf;

use seam_tests::grafana::{Range, Var, interpolate};
use serde_json::Value;
use tokio_postgres::types::Type;

use crate::correlation::{SAMPLES, quick_stack, send, settled};
use crate::pgwire::connect;
use crate::tokens::truth;

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v = serde_json::from_slice(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 4, "four dashboards");
    out
}

fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

fn is_seam_ds(ds: &Value) -> bool {
    ds["uid"] == "${DS_SEAM}" && ds["type"] == "grafana-postgresql-datasource"
}

#[test]
fn dashboards_are_importable() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        let uid = d["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no uid"));
        assert!(
            uid.starts_with("seam-") && uid.len() <= 40,
            "{name}: uid {uid}"
        );
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} twice");
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("seam / ")),
            "{name}"
        );
        let inputs = d["__inputs"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no __inputs"));
        assert_eq!(inputs.len(), 1, "{name}");
        assert_eq!(inputs[0]["name"], "DS_SEAM", "{name}");
        assert_eq!(inputs[0]["type"], "datasource", "{name}");
        assert_eq!(
            inputs[0]["pluginId"], "grafana-postgresql-datasource",
            "{name}"
        );
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{name}: panel id twice"
            );
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 20),
                "{name}: panel {title} has no description"
            );
            assert!(
                is_seam_ds(&p["datasource"]),
                "{name}: panel {title} datasource"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title}");
            for t in targets {
                assert!(
                    is_seam_ds(&t["datasource"]),
                    "{name}: {title} target datasource"
                );
                assert!(
                    t["rawSql"].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: {title}"
                );
                let want = if p["type"] == "timeseries" {
                    "time_series"
                } else {
                    "table"
                };
                assert_eq!(t["format"], want, "{name}: {title}");
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                assert!(
                    is_seam_ds(&v["datasource"]),
                    "{name}: variable {}",
                    v["name"]
                );
            }
        }
    }
}

fn numeric(t: &Type) -> bool {
    [
        Type::FLOAT8,
        Type::FLOAT4,
        Type::INT8,
        Type::INT4,
        Type::INT2,
        Type::NUMERIC,
    ]
    .contains(t)
}

fn text(t: &Type) -> bool {
    [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_runs_over_the_wire() {
    let truth = truth();
    let stack = quick_stack().await;
    let order: Vec<usize> = (0..SAMPLES.len()).collect();
    send(&stack.addrs.ingest_http.to_string(), &order).await;
    let api = stack.api();
    settled(&api, 8).await;
    // Let ingest_stats write the minute's rows (written when a minute ends or at stop).
    let pg = connect(stack.addrs.pg).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // From the samples' day to an hour from now (ingest_stats and rejects are "now").
    let range = Range {
        from_ns: 1_730_764_800_000_000_000,
        to_ns: now + 3_600_000_000_000,
    };
    let r5 = truth["requests"]["R5"]["apim_correlation_id"]
        .as_str()
        .unwrap();
    let all = |name: &str| Var {
        name: name.into(),
        values: vec!["__all".into()],
        multi: true,
    };
    let vars = vec![
        all("api"),
        all("client_app"),
        all("gateway"),
        Var {
            name: "request_id".into(),
            values: vec![r5.into()],
            multi: false,
        },
    ];
    let mut rows_of = std::collections::BTreeMap::new();
    for (name, d) in dashboards() {
        // Variable queries run too (Grafana runs them to fill the pickers).
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] == "query" {
                let sql = interpolate(v["query"].as_str().unwrap(), range, 60_000, &vars).unwrap();
                let rows = pg
                    .query(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{name}: variable {}: {e}\n{sql}", v["name"]));
                assert!(
                    !rows.is_empty(),
                    "{name}: variable {} has no values",
                    v["name"]
                );
            }
        }
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap();
            for t in p["targets"].as_array().unwrap() {
                let sql = interpolate(t["rawSql"].as_str().unwrap(), range, 60_000, &vars)
                    .unwrap_or_else(|e| panic!("{name}: {title}: {e}"));
                let stmt = pg
                    .prepare(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {title}: {e}\n{sql}"));
                let rows = pg
                    .query(&stmt, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {title}: {e}\n{sql}"));
                let cols = stmt.columns();
                match p["type"].as_str().unwrap() {
                    "timeseries" => {
                        assert!(
                            cols.iter().any(|c| c.name() == "time"),
                            "{name}: {title} has no time column"
                        );
                        assert!(
                            cols.iter()
                                .filter(|c| c.name() != "time")
                                .any(|c| numeric(c.type_())),
                            "{name}: {title} has no numeric column: {cols:?}"
                        );
                    }
                    "barchart" => {
                        assert!(
                            cols.iter().any(|c| text(c.type_())),
                            "{name}: {title}: {cols:?}"
                        );
                        assert!(
                            cols.iter().any(|c| numeric(c.type_())),
                            "{name}: {title}: {cols:?}"
                        );
                    }
                    _ => assert!(!cols.is_empty(), "{name}: {title}"),
                }
                rows_of.insert(format!("{name}/{title}"), rows.len());
            }
        }
    }
    // What the samples must show.
    let n = |k: &str| *rows_of.get(k).unwrap_or_else(|| panic!("no panel {k}"));
    assert_eq!(n("latency-attribution.json/Slowest requests"), 8);
    assert!(n("latency-attribution.json/Time per layer (mean ms)") > 0);
    assert_eq!(n("security-audit.json/Denials by layer and reason"), 3);
    assert_eq!(n("security-audit.json/Gateway bypass"), 1);
    assert_eq!(n("request-timeline.json/The request"), 1);
    assert_eq!(n("request-timeline.json/Timeline"), 13);
    assert_eq!(n("request-timeline.json/Waterfall"), 13);
    assert!(n("ingest-health.json/Latest rejects") == 0);
    stack.stop().await;
}
