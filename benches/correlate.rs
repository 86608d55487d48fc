//! How many records per second does the correlator link into requests, and how much memory
//! does one window take? A window is what the correlator reads for one minute bucket: the
//! minute and the link distance (5 minutes) on either side, 11 minutes of records.
//!
//! Payload: requests of 8 records each (a gateway record, a custom event, 3 JSON Logger
//! lines, a Mule server span, a requester span and a backend span), linked by correlation id
//! and trace id, at 20 and 100 requests per second (13,200 and 66,000 requests per window).
//! Peak memory is the growth of the peak resident set size over one `correlate` call (the
//! window's input is built before; Linux `/proc/self/status`).
//!
//! Run with: `cargo bench -p seam-benches --bench correlate`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use seam_benches::Rng;
use seam_correlate::{Flow, Gateway, GatewayEvent, Input, Rules, Span, TokenColumns, correlate};

/// A `/proc/self/status` figure in KiB (Linux).
fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets the peak resident set size (Linux: `5` to `/proc/self/clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

const MS: i64 = 1_000_000;
const RECORDS_PER_REQUEST: usize = 8;

fn window(rng: &mut Rng, per_second: usize) -> Input {
    let n = per_second * 11 * 60;
    let mut input = Input::default();
    for i in 0..n {
        let t0 = i as i64 * 1_000 * MS / per_second as i64;
        let cid = rng.uuid();
        let trace = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let token = TokenColumns {
            token_id: Some(format!("uti:{}", rng.next_u64())),
            ..Default::default()
        };
        input.gateway.push(Gateway {
            time: t0,
            ingest: t0,
            key: cid.clone(),
            correlation_id: Some(cid.clone()),
            trace_id: Some(trace.clone()),
            status_code: Some(200),
            backend_status_code: Some(200),
            total_ms: Some(120.0),
            backend_ms: Some(100.0),
            ..Default::default()
        });
        input.events.push(GatewayEvent {
            time: t0 + 120 * MS,
            ingest: t0,
            key: format!("e{cid}"),
            correlation_id: Some(cid.clone()),
            token: token.clone(),
            ..Default::default()
        });
        for (k, tp) in ["START", "AFTER_REQUEST", "END"].iter().enumerate() {
            input.flows.push(Flow {
                time: t0 + (5 + 40 * k as i64) * MS,
                ingest: t0,
                key: format!("f{k}{cid}"),
                correlation_id: Some(cid.clone()),
                mule_app: Some("orders-papi".into()),
                trace_point: Some((*tp).into()),
                elapsed_ms: Some(40.0 * k as f64),
                is_request_traffic: true,
                token: token.clone(),
                ..Default::default()
            });
        }
        let server = format!("{:016x}", rng.next_u64());
        let client = format!("{:016x}", rng.next_u64());
        for (id, parent, kind, scope, svc, s, e) in [
            (&server, None, "server", "mule-tracer", "orders-papi", 5, 95),
            (
                &client,
                Some(server.clone()),
                "client",
                "mule-tracer",
                "orders-papi",
                20,
                80,
            ),
            (
                &format!("{:016x}", rng.next_u64()),
                Some(client.clone()),
                "server",
                "otel",
                "erp",
                22,
                78,
            ),
        ] {
            input.spans.push(Span {
                time: t0 + s * MS,
                end: Some(t0 + e * MS),
                ingest: t0,
                trace_id: trace.clone(),
                span_id: id.clone(),
                parent_span_id: parent,
                name: "GET".into(),
                kind: kind.into(),
                span_status: "unset".into(),
                service: Some(svc.into()),
                scope: Some(scope.into()),
                correlation_id: (svc == "orders-papi").then(|| cid.clone()),
                ..Default::default()
            });
        }
    }
    input
}

fn bench(c: &mut Criterion) {
    let rules = Rules::default();
    let mut g = c.benchmark_group("correlate_window");
    g.sample_size(10);
    // `cargo test --benches` runs each case once in a debug build: the small window will do.
    let rates: &[usize] = if std::env::args().any(|a| a == "--bench") {
        &[20, 100]
    } else {
        &[20]
    };
    for &per_second in rates {
        let mut rng = Rng::new(9);
        let input = window(&mut rng, per_second);
        let records =
            input.gateway.len() + input.events.len() + input.flows.len() + input.spans.len();
        assert_eq!(records, per_second * 660 * RECORDS_PER_REQUEST);
        // Peak resident memory of one window: a copy of the input plus what correlate
        // allocates, over the resident size before.
        let copy = input.clone();
        let base = status_kib("VmRSS:").unwrap_or(0);
        let reset = reset_peak();
        let out = correlate(copy, &rules, 0);
        assert_eq!(out.len(), per_second * 660);
        if reset && let Some(peak) = status_kib("VmHWM:") {
            let grew = peak.saturating_sub(base) as f64 * 1024.0;
            eprintln!(
                "correlate_window/{per_second}_per_s: {records} records, peak +{:.1} MiB ({:.0} bytes/record)",
                grew / (1u64 << 20) as f64,
                grew / records as f64
            );
        }
        drop(out);
        g.throughput(Throughput::Elements(records as u64));
        g.bench_function(format!("{per_second}_requests_per_s"), |b| {
            b.iter_batched(
                || input.clone(),
                |i| correlate(i, &rules, 0).len(),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
