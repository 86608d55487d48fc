//! How many spans per second does a running seam acknowledge over OTLP/gRPC, with the
//! write-ahead log fsyncing before every acknowledgement (the default) and without fsync?
//! The difference is the price of durability.
//!
//! seam's ingest side, wired as `seam serve` wires it (storage, write-ahead log, collector and
//! the OTLP/gRPC receiver on 127.0.0.1, data in a temporary directory on the machine's disk;
//! the query service is left out so the bench builds without DataFusion), receives
//! pre-encoded export requests of 512 spans from 4 concurrent tonic clients; an iteration is
//! one acknowledged request.
//!
//! Run with: `cargo bench -p seam-benches --bench ack_throughput`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use object_store::local::LocalFileSystem;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use seam_benches::{Rng, trace_request};
use seam_collector::Collector;
use seam_collector::config::{LimitsConfig, StorageConfig};
use seam_store::storage::Storage;
use seam_store::wal::{FsyncPolicy, Wal, WalConfig};
use tokio::sync::watch;

const SPANS: usize = 512;
const CLIENTS: usize = 4;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("ack_throughput");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(SPANS as u64));
    for (name, fsync) in [
        ("fsync_always", FsyncPolicy::Always),
        ("fsync_never", FsyncPolicy::Never),
    ] {
        let dir = tempfile::tempdir_in(std::env::current_dir().unwrap_or_else(|_| ".".into()))
            .expect("tempdir");
        let (stop, stopped) = watch::channel(false);
        let (addr, flushed) = rt.block_on(async {
            let root = dir.path().to_path_buf();
            let store = Arc::new(LocalFileSystem::new_with_prefix(&root).expect("store"));
            let storage = Storage::open(store, Some(root.clone()), StorageConfig::default())
                .await
                .expect("storage");
            let wal_config = WalConfig {
                fsync,
                ..WalConfig::default()
            };
            let (wal, _) =
                Wal::open(root.join("wal"), wal_config, Arc::clone(&storage)).expect("wal");
            let collector = Arc::new(Collector::new(
                wal,
                LimitsConfig::default(),
                Default::default(),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut rx = stopped.clone();
            let flushed = tokio::spawn(storage.run(async move {
                let _ = rx.wait_for(|v| *v).await;
            }));
            let mut rx = stopped;
            let listener = seam_auth::SeamListener::new(listener, None).expect("listener");
            let guard = seam_auth::grpc::GrpcGuard::new(
                Arc::new(seam_auth::CredentialStore::open_access()),
                seam_auth::Role::Ingest,
            );
            tokio::spawn(seam_collector::sources::otlp::receive_grpc::serve(
                collector,
                listener,
                guard,
                async move {
                    let _ = rx.wait_for(|v| *v).await;
                },
            ));
            (addr, flushed)
        });
        let endpoint = format!("http://{addr}");
        let clients: Vec<_> = rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..CLIENTS {
                v.push(
                    TraceServiceClient::connect(endpoint.clone())
                        .await
                        .expect("connect"),
                );
            }
            v
        });
        let request = Arc::new(trace_request(&mut Rng::new(1), SPANS));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let mut tasks = Vec::new();
                    for (i, client) in clients.iter().enumerate() {
                        let mut client = client.clone();
                        let request = Arc::clone(&request);
                        let share =
                            iters / CLIENTS as u64 + u64::from((i as u64) < iters % CLIENTS as u64);
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..share {
                                // Retry what seam pushes back, as OTLP exporters do.
                                while client.export((*request).clone()).await.is_err() {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                    start.elapsed()
                })
            })
        });
        let _ = stop.send(true);
        // Storage's last flush must end before the directory is removed: a flush after the
        // removal would recreate it (left-over `benches/.tmp*` directories).
        let _ = rt.block_on(flushed);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
