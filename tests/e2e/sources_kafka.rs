//! The `kafka` pulled source against a real Kafka-protocol broker: tansu, started here on
//! loopback with SQLite storage (it survives a restart of the broker). Event Hubs-shaped
//! messages (`{"records":[…]}` batches of APIM gateway records, single custom events) from
//! the traffic generator go to two topics of three partitions; seam takes every message
//! exactly once: across topics and partitions, across a SIGKILL of seam while messages keep
//! coming, across a restart of the broker; a wrong password is reported and retried while
//! nothing is stored.
//!
//! Exactly once is checked three ways: the row counts of `gateway_logs` and
//! `gateway_events`, `count(DISTINCT record_key)` equal to `count(*)`, and the sum of
//! `source_positions.records` (messages with a payload, per read step) equal to the messages
//! produced, with each partition's newest position at the partition's end.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use seam_tests::generator::{Traffic, generate};
use serde_json::Value;

use crate::binary::{kill9, sigterm_and_wait, spawn_custom};
use crate::support::*;

const GATEWAY: &str = "insights-logs-gatewaylogs";
const EVENTS: &str = "apim-custom-events";
const PARTITIONS: i32 = 3;
/// How long the counts may take to settle (group joins, a restarted broker).
const SETTLE: Duration = Duration::from_secs(180);

/// One tansu and one seam at a time: the machine has two cores.
static KAFKA_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The tansu binary, on PATH or in ~/.cargo/bin.
fn tansu_bin() -> PathBuf {
    find_program("tansu").unwrap_or_else(|| {
        panic!(
            "tansu (the Kafka-protocol broker these tests run) is not installed: install tansu: make test-deps"
        )
    })
}

/// The last part of a log file, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.floor_char_boundary(text.len().saturating_sub(6000));
    text[start..].to_string()
}

/// A tansu broker on 127.0.0.1, its SQLite database in `dir`; killed when dropped.
struct Tansu {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    fn start(dir: &Path, authentication: bool) -> Self {
        let mut t = Self {
            bin: tansu_bin(),
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
        };
        t.launch(authentication);
        t
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        tail(&self.dir.join("tansu.log"))
    }

    fn launch(&mut self, authentication: bool) {
        let url = self.url();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let err = log.try_clone().unwrap();
        let mut cmd = Command::new(&self.bin);
        // The SQLite path is relative to the working directory.
        cmd.arg("broker")
            .args([
                "--listener-url",
                url.as_str(),
                "--advertised-listener-url",
                url.as_str(),
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        if authentication {
            cmd.arg("--authentication");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("tansu exited with {status}:\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {url} within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Again on the same port and database.
    fn restart(&mut self, authentication: bool) {
        self.kill();
        self.launch(authentication);
    }

    /// `tansu <args> --broker <url>`, which must succeed.
    fn cli(&self, args: &[&str]) {
        let url = self.url();
        let out = Command::new(&self.bin)
            .args(args)
            .args(["--broker", url.as_str()])
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The two topics (tansu creates none by itself).
    fn create_topics(&self) {
        let partitions = PARTITIONS.to_string();
        for topic in [GATEWAY, EVENTS] {
            self.cli(&[
                "topic",
                "create",
                topic,
                "--partitions",
                partitions.as_str(),
            ]);
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// One message to produce.
#[derive(Debug, Clone)]
struct Body {
    topic: &'static str,
    partition: i32,
    /// `None`: a null payload.
    text: Option<String>,
    gateway: i64,
    events: i64,
}

/// What was produced.
#[derive(Debug, Clone, Default, PartialEq)]
struct Produced {
    gateway: i64,
    events: i64,
    /// Messages with a payload (`source_positions.records` counts those).
    messages: i64,
    /// `topic/partition` → the partition's end (next offset), empty messages included.
    next: BTreeMap<String, i64>,
}

impl Produced {
    fn add(&mut self, o: &Produced) {
        self.gateway += o.gateway;
        self.events += o.events;
        self.messages += o.messages;
        for (k, v) in &o.next {
            let e = self.next.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

fn start_ns() -> i64 {
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    now - 3_600 * 1_000_000_000
}

/// Event Hubs bodies of generated traffic: gateway records in `{"records":[…]}` batches of
/// 1 to 17 records, one custom event per message, the two topics interleaved, partitions
/// in turn.
fn bodies(t: &Traffic) -> Vec<Body> {
    let mut batches: Vec<(String, i64)> = Vec::new();
    let mut i = 0;
    let mut size = 1;
    while i < t.gateway_lines.len() {
        let n = size.min(t.gateway_lines.len() - i);
        let records = t.gateway_lines[i..i + n].join(",");
        batches.push((
            format!("{{\"records\":[{records}]}}"),
            i64::try_from(n).unwrap(),
        ));
        i += n;
        size = size % 17 + 1;
    }
    let mut out = Vec::new();
    let mut gateway = batches.into_iter();
    let mut events = t.events.iter();
    let (mut g, mut e) = (0i32, 0i32);
    loop {
        let mut any = false;
        if let Some((text, n)) = gateway.next() {
            out.push(Body {
                topic: GATEWAY,
                partition: g % PARTITIONS,
                text: Some(text),
                gateway: n,
                events: 0,
            });
            g += 1;
            any = true;
        }
        for _ in 0..9 {
            if let Some(ev) = events.next() {
                out.push(Body {
                    topic: EVENTS,
                    partition: e % PARTITIONS,
                    text: Some(ev.clone()),
                    gateway: 0,
                    events: 1,
                });
                e += 1;
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

/// One message with a null payload per topic.
fn empties() -> Vec<Body> {
    [GATEWAY, EVENTS]
        .into_iter()
        .map(|topic| Body {
            topic,
            partition: 0,
            text: None,
            gateway: 0,
            events: 0,
        })
        .collect()
}

/// Produces `bodies` (all sent, then each delivery awaited).
async fn produce(p: &FutureProducer, bodies: &[Body]) -> Produced {
    let mut pending = Vec::with_capacity(bodies.len());
    for b in bodies {
        let mut record = FutureRecord::<str, str>::to(b.topic).partition(b.partition);
        if let Some(text) = &b.text {
            record = record.payload(text.as_str());
        }
        let delivery = p.send_result(record).map_err(|(e, _)| e).unwrap();
        pending.push((b, delivery));
    }
    let mut out = Produced::default();
    for (b, delivery) in pending {
        let d = delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        out.gateway += b.gateway;
        out.events += b.events;
        out.messages += i64::from(b.text.is_some());
        let end = out
            .next
            .entry(format!("{}/{}", b.topic, d.partition))
            .or_insert(0);
        *end = (*end).max(d.offset + 1);
    }
    out
}

/// Produces the bodies of 2,500 generated requests (traffic `seed`) in chunks of 12 every
/// 200 ms (about 45 s), in the background; the task gives what was produced.
fn produce_slowly(tansu: &Tansu, seed: u64) -> tokio::task::JoinHandle<Produced> {
    let p = producer(&tansu.bootstrap());
    let all = bodies(&generate(seed, 2500, start_ns(), 10));
    tokio::spawn(async move {
        let mut total = Produced::default();
        for chunk in all.chunks(12) {
            total.add(&produce(&p, chunk).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        total
    })
}

/// The `[[sources]]` block; `sasl`: (user, environment variable of the password) for
/// SCRAM-SHA-256.
fn source_toml(name: &str, bootstrap: &str, sasl: Option<(&str, &str)>) -> String {
    let mut s = format!(
        "[[sources]]\nname = \"{name}\"\ntype = \"kafka\"\nformat = \"apim\"\n\
         brokers = [\"{bootstrap}\"]\ntopics = [\"{GATEWAY}\", \"{EVENTS}\"]\n\
         group = \"seam-e2e\"\nstart = \"earliest\"\ntls = false\n"
    );
    if let Some((user, env)) = sasl {
        s.push_str(&format!(
            "sasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"{user}\"\nsasl_password_env = \"{env}\"\n"
        ));
    }
    s
}

async fn status(api: &str, name: &str) -> Option<Value> {
    source_status(api, name).await
}

async fn taken_now(api: &str, name: &str) -> Option<(i64, i64, i64)> {
    let g = count(api, "SELECT count(*) FROM gateway_logs").await.ok()?;
    let e = count(api, "SELECT count(*) FROM gateway_events")
        .await
        .ok()?;
    let m = count(
        api,
        &format!("SELECT coalesce(sum(records), 0) FROM source_positions WHERE source = '{name}'"),
    )
    .await
    .ok()?;
    Some((g, e, m))
}

/// Waits until seam holds everything produced (fails at once when it holds more).
async fn wait_all(api: &str, name: &str, want: &Produced, logs: &[&Path]) {
    let goal = (want.gateway, want.events, want.messages);
    let r = wait_until("every produced message stored", SETTLE, || async move {
        let now = taken_now(api, name).await?;
        (now == goal || now.0 > goal.0 || now.1 > goal.1 || now.2 > goal.2).then_some(now)
    })
    .await;
    let now = match r {
        Ok(now) => now,
        Err(e) => {
            let logs: Vec<String> = logs.iter().map(|p| tail(p)).collect();
            panic!(
                "{e}: (gateway_logs, gateway_events, messages) = {:?}, want {goal:?}\n{}",
                taken_now(api, name).await,
                logs.join("\n----\n")
            );
        }
    };
    assert_eq!(now, goal, "(gateway_logs, gateway_events, messages taken)");
}

/// Every record once, nothing refused, every partition read to its end.
async fn check_exactly_once(api: &str, name: &str, want: &Produced) {
    for (table, n) in [
        ("gateway_logs", want.gateway),
        ("gateway_events", want.events),
    ] {
        let all = count(api, &format!("SELECT count(*) FROM {table}"))
            .await
            .unwrap();
        let distinct = count(
            api,
            &format!("SELECT count(DISTINCT record_key) FROM {table}"),
        )
        .await
        .unwrap();
        assert_eq!(all, n, "{table}: every record produced");
        assert_eq!(distinct, all, "{table}: no record twice");
    }
    assert_eq!(
        count(api, "SELECT count(*) FROM rejects").await.unwrap(),
        0,
        "nothing refused"
    );
    let taken = count(
        api,
        &format!("SELECT coalesce(sum(records), 0) FROM source_positions WHERE source = '{name}'"),
    )
    .await
    .unwrap();
    assert_eq!(taken, want.messages, "every message taken exactly once");
    let rows = sql(
        api,
        &format!(
            "SELECT key, max(\"offset\") AS next FROM source_positions WHERE source = '{name}' GROUP BY key"
        ),
    )
    .await
    .unwrap();
    let ends: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["next"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ends, want.next, "each partition's position is its end");
}

/// The value awaited, or a failure showing the source's status and seam's log.
async fn waited<T>(r: anyhow::Result<T>, api: &str, name: &str, log: &Path) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}: {:?}\n{}", status(api, name).await, tail(log)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_takes_every_message_of_every_topic_and_partition() {
    let _one = KAFKA_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path(), false);
    tansu.create_topics();
    let p = producer(&tansu.bootstrap());
    let t = generate(7, 300, start_ns(), 10);
    let mut want = produce(&p, &bodies(&t)).await;
    want.add(&produce(&p, &empties()).await);
    assert_eq!(want.next.len(), 6, "three partitions of two topics");

    let name = "kafka-all";
    let data = dir.path().join("seam");
    let log = dir.path().join("seam.log");
    let run = spawn_custom(
        &data,
        &source_toml(name, &tansu.bootstrap(), None),
        &[],
        Some(&log),
    );
    let tansu_log = dir.path().join("tansu.log");
    wait_all(&run.api, name, &want, &[&log, &tansu_log]).await;
    check_exactly_once(&run.api, name, &want).await;

    // The status: every partition known, healthy, and no lag once the statistics come.
    let api = run.api.clone();
    let s = wait_until("the source's lag at 0", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let s = status(&api, name).await?;
            (s["lag_records"] == 0).then_some(s)
        }
    })
    .await;
    let s = waited(s, &run.api, name, &log).await;
    assert_eq!(s["type"], "kafka");
    assert_eq!(s["positions"], 6, "{s}");
    assert_eq!(s["state"], "running", "{s}");
    assert!(s["last_error"].is_null(), "{s}");
    assert_eq!(s["lag_seconds"], 0.0, "{s}");
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_killed_midway_takes_every_record_exactly_once() {
    let _one = KAFKA_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path(), false);
    tansu.create_topics();
    // Messages keep coming for about 45 s, through the kill and (usually) the restart.
    let producing = produce_slowly(&tansu, 11);

    let name = "kafka-crash";
    let data = dir.path().join("seam");
    let log = dir.path().join("seam.log");
    let toml = source_toml(name, &tansu.bootstrap(), None);
    let run = spawn_custom(&data, &toml, &[], Some(&log));
    let api = run.api.clone();
    wait_until("part of the events stored", SETTLE, || {
        let api = api.clone();
        async move {
            let n = count(&api, "SELECT count(*) FROM gateway_events")
                .await
                .ok()?;
            (n >= 200).then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", tail(&log)));
    assert!(
        !producing.is_finished(),
        "the producer finished before seam was killed: the kill would not be mid-way"
    );
    kill9(run);
    // tansu 0.6's group coordinator gives a member that joins while a dead one is still in
    // the group an empty assignment, and no rebalance follows the dead one's eviction (a
    // Kafka coordinator holds the join until the dead member's session times out): restart
    // once the killed seam's session (10 s) has expired.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let run = spawn_custom(&data, &toml, &[], Some(&log));
    let want = producing.await.unwrap();
    let tansu_log = dir.path().join("tansu.log");
    wait_all(&run.api, name, &want, &[&log, &tansu_log]).await;
    check_exactly_once(&run.api, name, &want).await;
    let s = status(&run.api, name).await.unwrap();
    assert_eq!(
        s["duplicates"], 0,
        "the restarted seam read nothing twice: {s}"
    );
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_rides_out_a_broker_restart() {
    let _one = KAFKA_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tansu = Tansu::start(dir.path(), false);
    tansu.create_topics();
    let p = producer(&tansu.bootstrap());
    let mut want = produce(&p, &bodies(&generate(21, 300, start_ns(), 10))).await;
    drop(p);

    let name = "kafka-restart";
    let data = dir.path().join("seam");
    let log = dir.path().join("seam.log");
    let tansu_log = dir.path().join("tansu.log");
    let mut run = spawn_custom(
        &data,
        &source_toml(name, &tansu.bootstrap(), None),
        &[],
        Some(&log),
    );
    wait_all(&run.api, name, &want, &[&log, &tansu_log]).await;

    // The broker goes away: seam keeps running and says so.
    tansu.kill();
    let api = run.api.clone();
    let error = wait_until("the source's error", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let s = status(&api, name).await?;
            s["last_error"].as_str().map(str::to_string)
        }
    })
    .await;
    let error = waited(error, &run.api, name, &log).await;
    assert!(error.contains(name), "{error}");
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "seam must keep running without its broker"
    );

    // Back on the same port and storage; more messages; all of them arrive, once.
    tansu.restart(false);
    let p = producer(&tansu.bootstrap());
    want.add(
        &produce(
            &p,
            &bodies(&generate(22, 300, start_ns() + 1_000_000_000, 10)),
        )
        .await,
    );
    wait_all(&run.api, name, &want, &[&log, &tansu_log]).await;
    check_exactly_once(&run.api, name, &want).await;
    let api = run.api.clone();
    let cleared = wait_until("the error cleared", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let s = status(&api, name).await?;
            s["last_error"].is_null().then_some(())
        }
    })
    .await;
    waited(cleared, &run.api, name, &log).await;
    sigterm_and_wait(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_reports_a_wrong_password_and_keeps_trying() {
    const USER: &str = "seam-reader";
    const RIGHT: &str = "right-horse-battery";
    const WRONG: &str = "wrong-staple-42";
    const VAR: &str = "SEAM_TEST_KAFKA_PASSWORD";
    let _one = KAFKA_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Topics, the SCRAM user and the messages first; then authentication on (tansu's
    // administration needs no credentials).
    let mut tansu = Tansu::start(dir.path(), false);
    tansu.create_topics();
    tansu.cli(&["user", "create", USER, RIGHT, "--mechanism", "scram256"]);
    let p = producer(&tansu.bootstrap());
    let want = produce(&p, &bodies(&generate(31, 200, start_ns(), 10))).await;
    drop(p);
    tansu.restart(true);

    let name = "kafka-auth";
    let data = dir.path().join("seam");
    let log = dir.path().join("seam.log");
    let toml = source_toml(name, &tansu.bootstrap(), Some((USER, VAR)));
    let mut run = spawn_custom(&data, &toml, &[(VAR, WRONG)], Some(&log));
    let api = run.api.clone();
    let error = wait_until("the authentication error", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let s = status(&api, name).await?;
            let e = s["last_error"].as_str()?;
            e.contains("authentication").then(|| e.to_string())
        }
    })
    .await;
    let error = waited(error, &run.api, name, &log).await;
    assert!(error.contains(name), "{error}");
    assert!(error.contains("SCRAM-SHA-256"), "{error}");
    assert!(error.contains(USER), "{error}");
    assert!(!error.contains(WRONG), "{error}");
    let metrics = reqwest::get(format!("http://{}/metrics", run.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("seam_source_errors_total{")
                && l.contains("kind=\"auth\"")
                && l.contains(&format!("source=\"{name}\""))),
        "{metrics}"
    );
    // Still running, still trying, nothing stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "seam must keep running"
    );
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM gateway_logs")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        count(&run.api, "SELECT count(*) FROM gateway_events")
            .await
            .unwrap(),
        0
    );
    sigterm_and_wait(run);
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains(WRONG),
        "the password must never be logged"
    );

    // The right password: everything arrives.
    let run = spawn_custom(&data, &toml, &[(VAR, RIGHT)], Some(&log));
    let tansu_log = dir.path().join("tansu.log");
    wait_all(&run.api, name, &want, &[&log, &tansu_log]).await;
    check_exactly_once(&run.api, name, &want).await;
    sigterm_and_wait(run);
    assert!(!std::fs::read_to_string(&log).unwrap().contains(RIGHT));
}

/// A password file corrected while seam runs (a rotated secret, a Key Vault reference
/// refreshed) is read again after authentication has failed for a while: no restart needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_reads_a_corrected_password_file_without_a_restart() {
    const USER: &str = "seam-rotated";
    const RIGHT: &str = "rotated-right-horse";
    const WRONG: &str = "stale-staple-43";
    let _one = KAFKA_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut tansu = Tansu::start(dir.path(), false);
    tansu.create_topics();
    tansu.cli(&["user", "create", USER, RIGHT, "--mechanism", "scram256"]);
    let p = producer(&tansu.bootstrap());
    let want = produce(&p, &bodies(&generate(32, 100, start_ns(), 10))).await;
    drop(p);
    tansu.restart(true);

    let name = "kafka-rotated";
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, format!("{WRONG}\n")).unwrap();
    let toml = source_toml(name, &tansu.bootstrap(), Some((USER, "UNUSED"))).replace(
        "sasl_password_env = \"UNUSED\"",
        &format!("sasl_password_file = \"{}\"", secret.display()),
    );
    let data = dir.path().join("seam");
    let log = dir.path().join("seam.log");
    let run = spawn_custom(&data, &toml, &[], Some(&log));
    let api = run.api.clone();
    let error = wait_until("the authentication error", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let s = status(&api, name).await?;
            let e = s["last_error"].as_str()?;
            e.contains("authentication").then(|| e.to_string())
        }
    })
    .await;
    waited(error, &run.api, name, &log).await;
    std::fs::write(&secret, format!("{RIGHT}\n")).unwrap();
    let tansu_log = dir.path().join("tansu.log");
    wait_all(&run.api, name, &want, &[&log, &tansu_log]).await;
    check_exactly_once(&run.api, name, &want).await;
    sigterm_and_wait(run);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(RIGHT) && !logged.contains(WRONG));
}

/// The `records` a node's source has taken since it started.
async fn node_records(api: &str, name: &str) -> i64 {
    status(api, name)
        .await
        .and_then(|s| s["records"].as_i64())
        .unwrap_or(0)
}

/// How many times a node's log says its Kafka partitions were assigned.
fn assignments(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("Kafka partitions assigned.")
        .count()
}

/// Two seam nodes of one store (Azurite) in one consumer group: b joins a, b leaves, b
/// comes back. When b leaves, a gets back partitions b read further than a knows (a's own
/// positions of them are from before b joined, and a did not restart): a must start at the
/// group's committed offset, which b committed, not at its own position, so that every
/// message is stored once across both nodes.
///
/// Messages are produced between the membership changes, not during them: tansu 0.6's
/// group coordinator completes a rebalance without waiting for every member to give its
/// partitions up (a Kafka broker and Event Hubs wait), so two members briefly read the same
/// partition; with messages arriving then, both would store them, which says nothing about
/// seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_one_store_share_a_consumer_group_exactly_once() {
    let _one = KAFKA_TESTS.lock().await;
    let az = crate::emulators::Azurite::start();
    az.python(&["container", "seam"]);
    let envs = [
        ("SEAM_STORAGE_URL", "az://seam/kafka".to_string()),
        ("AZURE_STORAGE_CONNECTION_STRING", az.connection_string()),
    ];
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path(), false);
    tansu.create_topics();
    let p = producer(&tansu.bootstrap());
    let all = bodies(&generate(13, 1600, start_ns(), 10));
    let parts: Vec<&[Body]> = all.chunks(all.len().div_ceil(4)).collect();
    assert_eq!(parts.len(), 4);

    let name = "kafka-shared";
    let toml = format!(
        "[storage]\nflush_interval = \"500ms\"\nrefresh_interval = \"300ms\"\nlease_ttl = \"5s\"\n{}",
        source_toml(name, &tansu.bootstrap(), None)
    );
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let (la, lb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let tansu_log = dir.path().join("tansu.log");
    let logs = [la.as_path(), lb.as_path(), tansu_log.as_path()];
    // Waits until node a's log shows `na` assignments and b's `nb`, then a moment for the
    // last revocation to be made.
    let settled = |na: usize, nb: usize| {
        let (la, lb) = (la.clone(), lb.clone());
        async move {
            let r = wait_until("the rebalance done", SETTLE, || {
                let (la, lb) = (la.clone(), lb.clone());
                async move { (assignments(&la) >= na && assignments(&lb) >= nb).then_some(()) }
            })
            .await;
            if let Err(e) = r {
                panic!(
                    "{e}: a assigned {} times, b {}\n{}\n----\n{}",
                    assignments(&la),
                    assignments(&lb),
                    tail(&la),
                    tail(&lb)
                );
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    };

    // a alone.
    let mut want = produce(&p, parts[0]).await;
    let a = spawn_custom(&da, &toml, &envs, Some(&la));
    wait_all(&a.api, name, &want, &logs).await;
    // b joins: the group splits the partitions; b starts at what a committed.
    let b = spawn_custom(&db, &toml, &envs, Some(&lb));
    settled(2, 1).await;
    want.add(&produce(&p, parts[1]).await);
    wait_all(&a.api, name, &want, &logs).await;
    assert!(
        node_records(&b.api, name).await > 0,
        "b read none of the second batch: the partitions were not split"
    );
    // b leaves (SIGTERM: its partitions are revoked, its positions committed): a gets them
    // back, read further by b than a's own positions say.
    sigterm_and_wait(b);
    settled(3, 1).await;
    want.add(&produce(&p, parts[2]).await);
    wait_all(&a.api, name, &want, &logs).await;
    check_exactly_once(&a.api, name, &want).await;
    // b comes back (it loads the newest positions the store holds) and takes a share again.
    let b = spawn_custom(&db, &toml, &envs, Some(&lb));
    settled(4, 2).await;
    want.add(&produce(&p, parts[3]).await);
    assert_eq!(want.next.len(), 6, "three partitions of two topics");

    // Every message once, through either node (each sees the other's flushed rows).
    for api in [&a.api, &b.api] {
        wait_all(api, name, &want, &logs).await;
        check_exactly_once(api, name, &want).await;
    }
    sigterm_and_wait(a);
    sigterm_and_wait(b);
}
