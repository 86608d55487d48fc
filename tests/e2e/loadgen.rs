//! The load generator (`seam-loadgen`, `seam_benches::loadgen`) against a running seam: every
//! target is driven briefly, and what it reports as acknowledged is what SQL then counts; the
//! visibility probe's spans are found by SQL too.

use seam_benches::loadgen::{Options, Target, run};

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
