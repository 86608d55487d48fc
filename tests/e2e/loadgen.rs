//! The load generator (`seam-loadgen`, `seam_benches::loadgen`) against a running seam: every
//! target is driven briefly, and what it reports as acknowledged is what SQL then counts; the
//! visibility probe's spans are found by SQL too. The mixed target, paced at a low rate, makes
//! one `requests` row per request it reports, and sees every sampled request visible and then
//! settled (a short horizon).

use std::time::Duration;

use seam_benches::loadgen::{Options, Target, mixed, run};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_is_acknowledged_and_measured() {
    let stack = Stack::start().await;
    let api = stack.api();
    let mut spans = 0;
    for target in [
        Target::OtlpGrpc,
        Target::OtlpHttp,
        Target::Apim,
        Target::Mule,
    ] {
        let r = run(Options {
            target,
            clients: 2,
            seconds: 0.5,
            batch: 64,
            grpc: stack.addrs.otlp_grpc.to_string(),
            http: stack.addrs.ingest_http.to_string(),
            pid: Some(std::process::id()),
            // Probe ingest-to-visible latency during the APIM load (its probe spans count).
            api: (target == Target::Apim).then(|| api.clone()),
            ..Options::default()
        })
        .await
        .unwrap();
        assert_eq!(r.failed_requests, 0, "{r:?}");
        assert!(r.records_acknowledged > 0 && r.requests > 0, "{r:?}");
        assert!(r.ack_latency_p99_ms >= r.ack_latency_p50_ms && r.ack_latency_p50_ms > 0.0);
        assert!(r.server_cpu_seconds.is_some() && r.server_peak_rss_mib.unwrap_or(0.0) > 0.0);
        assert!(r.decode_ceiling_records_per_second_one_core > 0.0, "{r:?}");
        if target == Target::Apim {
            assert!(r.visible_probes >= 1, "{r:?}");
            assert!(r.visible_max_ms.unwrap_or(0.0) >= r.visible_p50_ms.unwrap_or(-1.0));
            assert!(r.summary().contains("ingest to visible in SQL"));
            spans += r.visible_probes as i64;
        } else {
            assert_eq!(r.visible_probes, 0);
        }
        match target {
            Target::OtlpGrpc | Target::OtlpHttp => spans += r.records_acknowledged as i64,
            Target::Apim => {
                // Every request carried new ids: all stored, none a duplicate.
                assert_eq!(r.duplicates, 0);
                let n = count(&api, "SELECT count(*) AS n FROM gateway_logs")
                    .await
                    .unwrap();
                assert_eq!(n as u64, r.records_acknowledged);
            }
            Target::Mule => assert!(r.summary().contains("mule:")),
            Target::Mixed => unreachable!("the mixed target has a test of its own"),
        }
    }
    assert_eq!(
        count(&api, "SELECT count(*) AS n FROM spans")
            .await
            .unwrap(),
        spans
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_becomes_requests_and_its_lag_is_measured() {
    let stack = Stack::start_with(|c| {
        c.correlation.horizon = Duration::from_secs(2);
        c.correlation.delay = Duration::from_millis(200);
    })
    .await;
    let api = stack.api();
    let r = mixed::run(&Options {
        target: Target::Mixed,
        clients: 2,
        seconds: 3.0,
        rate: Some(20),
        settle: Some(60.0),
        http: stack.addrs.ingest_http.to_string(),
        api: Some(api.clone()),
        pid: Some(std::process::id()),
        ..Options::default()
    })
    .await
    .unwrap();
    // Three seconds of 20 requests a second, every body acknowledged, no record refused.
    assert_eq!(r.failed_bodies, 0, "{r:?}");
    assert_eq!(r.rejected_records, 0, "{r:?}");
    assert_eq!(r.requests, 60, "{r:?}");
    assert!(
        r.records_acknowledged > 6 * r.requests && r.records_per_request > 6.0,
        "{r:?}"
    );
    assert!(r.requests_per_second > 0.0 && r.behind_schedule_max_seconds.is_some());
    // Every sampled request (one chunk a second) was seen in `requests`, then settled.
    assert!(r.samples >= 2 && r.sampled_requests >= 40, "{r:?}");
    assert_eq!(r.not_visible, 0, "{r:?}");
    let (Some(p50), Some(p95), Some(max)) = (
        r.visible_lag_p50_ms,
        r.visible_lag_p95_ms,
        r.visible_lag_max_ms,
    ) else {
        panic!("no visibility lag: {r:?}");
    };
    assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{r:?}");
    assert!(r.visible_after_load_seconds.is_some(), "{r:?}");
    assert_eq!(r.not_settled, Some(0), "{r:?}");
    assert!(r.settled_lag_p50_ms.unwrap_or(0.0) >= p50, "{r:?}");
    assert!(r.settled_lag_max_ms.unwrap_or(0.0) >= max, "{r:?}");
    assert!(r.settled_after_load_seconds.is_some(), "{r:?}");
    assert!(r.sustained.is_some() && r.polls > 0, "{r:?}");
    assert!(r.server_cpu_seconds.is_some() && r.server_peak_rss_mib.unwrap_or(0.0) > 0.0);
    let summary = r.summary();
    assert!(
        summary.contains("visible in requests") && summary.contains("sustained"),
        "{summary}"
    );
    // What it reports is what SQL counts: each generated request is one settled row, its
    // probes and background runs none.
    wait_exact(
        &api,
        "SELECT count(*) FROM requests WHERE settled",
        60,
        VISIBLE,
    )
    .await;
    stack.stop().await;
}
