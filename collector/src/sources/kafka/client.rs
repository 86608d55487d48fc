//! The librdkafka side of the Kafka source: the client settings (TLS × SASL, the secret),
//! and the context whose callbacks turn librdkafka's errors, statistics and rebalances into
//! the source's status (`auth`, `network`, `tls`, ... errors; recovery), its lag, and the
//! offsets assigned partitions start at (seam's own positions; on a shared store the group's
//! committed offset where it is further).
//!
//! Callbacks run on the thread that polls the consumer (the source's task, inside `recv`);
//! they take short locks, and block only at a rebalance: a revocation commits seam's
//! positions of the revoked partitions and waits for the answer, and an assignment on a
//! shared store reads the group's committed offsets (at most [`COMMITTED_TIMEOUT`]), so that
//! a partition moving between nodes continues exactly where the previous owner stopped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::Deserialize;

use crate::sources::pull::SourceCtx;
use crate::sources::pull::config::{KafkaSource, SaslMechanism, Start};

/// How long an assignment waits for the group's committed offsets (shared store only).
const COMMITTED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often librdkafka reports its statistics (the lag), in milliseconds.
const STATS_INTERVAL_MS: u32 = 5_000;

/// What kind of trouble the source is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The brokers refused the credentials.
    Auth,
    /// The credentials may not read the topics or use the group.
    Denied,
    /// TLS failed (certificate, handshake).
    Tls,
    /// The brokers cannot be reached.
    Network,
    /// A topic does not exist.
    Topic,
    /// Offsets were gone from the broker before seam read them.
    Gap,
    /// The configuration cannot work (secret missing, bad setting).
    Config,
    /// Anything else.
    Read,
}

impl Kind {
    /// The `kind` label of `seam_source_errors_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Auth | Kind::Denied => "auth",
            Kind::Tls => "tls",
            Kind::Network => "network",
            Kind::Topic | Kind::Config => "config",
            Kind::Gap => "gap",
            Kind::Read => "read",
        }
    }
}

/// `security.protocol` for TLS on or off and a SASL mechanism.
pub(super) fn security_protocol(tls: bool, sasl: SaslMechanism) -> &'static str {
    match (tls, sasl.name().is_some()) {
        (false, false) => "PLAINTEXT",
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    }
}

fn start_name(start: Start) -> &'static str {
    match start {
        Start::Earliest => "earliest",
        Start::Latest => "latest",
    }
}

/// The consumer's settings. Offsets are never committed or stored by librdkafka itself
/// (seam commits what it stored); certificate and host name verification stay on
/// (librdkafka's defaults); the system's CA store is used unless `ca_file` names one.
///
/// # Errors
/// A setting that cannot be expressed (a CA path that is not UTF-8, SASL without a user).
pub(super) fn client_config(
    cfg: &KafkaSource,
    password: Option<&str>,
) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.join(","))
        .set("group.id", cfg.group.as_str())
        .set("client.id", format!("seam-{}", cfg.name))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", start_name(cfg.start))
        .set(
            "security.protocol",
            security_protocol(cfg.tls, cfg.sasl_mechanism),
        )
        .set("statistics.interval.ms", STATS_INTERVAL_MS.to_string())
        // A restarted seam gets its partitions back within seconds of a crash.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "3000")
        // Event Hubs closes idle connections; its documented client settings.
        .set("socket.keepalive.enable", "true")
        .set("metadata.max.age.ms", "180000")
        .set("log.connection.close", "false")
        // Refused credentials are retried twice a second at most, not twenty times.
        .set("reconnect.backoff.ms", "500")
        .set("reconnect.backoff.max.ms", "10000")
        // Prefetched messages held in memory (KiB).
        .set("queued.max.messages.kbytes", "32768")
        .set_log_level(RDKafkaLogLevel::Info);
    if let Some(mechanism) = cfg.sasl_mechanism.name() {
        let user = cfg
            .sasl_username
            .as_deref()
            .ok_or_else(|| "sasl_username is required with a SASL mechanism".to_string())?;
        let password = password.ok_or_else(|| "the SASL password is missing".to_string())?;
        c.set("sasl.mechanism", mechanism)
            .set("sasl.username", user)
            .set("sasl.password", password);
    }
    if cfg.tls
        && let Some(ca) = &cfg.ca_file
    {
        let path = ca
            .to_str()
            .ok_or_else(|| format!("ca_file {} is not a UTF-8 path", ca.display()))?;
        c.set("ssl.ca.location", path);
    }
    Ok(c)
}

/// A client-creation error in words, without the value of the setting it names (which
/// could be the password).
pub(super) fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => format!("setting {key}: {desc}"),
        other => other.to_string(),
    }
}

/// The kind of a librdkafka error, from its code or else its text.
pub(super) fn classify(code: Option<RDKafkaErrorCode>, reason: &str) -> Kind {
    match code {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            return Kind::Auth;
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed,
        ) => return Kind::Denied,
        Some(RDKafkaErrorCode::SSL) => return Kind::Tls,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            return Kind::Topic;
        }
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::LogTruncation) => {
            return Kind::Gap;
        }
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException,
        ) => return Kind::Network,
        _ => {}
    }
    let r = reason.to_ascii_lowercase();
    if r.contains("sasl authentication error")
        || r.contains("authentication failed")
        || r.contains("invalid credentials")
    {
        Kind::Auth
    } else if r.contains("ssl handshake failed") || r.contains("certificate verify failed") {
        Kind::Tls
    } else if [
        "connection refused",
        "disconnected",
        "brokers are down",
        "timed out",
        "failed to resolve",
        "connect to",
    ]
    .iter()
    .any(|w| r.contains(w))
    {
        Kind::Network
    } else {
        Kind::Read
    }
}

/// librdkafka's reason without the parts that change at every retry (`(after 3ms in state
/// CONNECT, 2 identical error(s) suppressed)`), so that a repeated error is logged once.
pub(super) fn tidy(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(i) = rest.find(" (after ") {
        out.push_str(&rest[..i]);
        let open = i + 1;
        rest = match closing(&rest[open..]) {
            Some(j) => &rest[open + j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// The index of the `)` that closes the `(` `s` starts with.
fn closing(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (k, c) in s.char_indices() {
        match c {
            '(' => depth = depth.saturating_add(1),
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` without the secret and without the key of an Event Hubs connection string.
pub(super) fn redact(text: &str, secret: Option<&str>) -> String {
    let s = match secret {
        Some(p) if p.len() >= 4 => text.replace(p, "***"),
        _ => text.to_string(),
    };
    const NEEDLE: &str = "sharedaccesskey=";
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(k) = lower[i..].find(NEEDLE) {
        let start = i + k + NEEDLE.len();
        out.push_str(&s[i..start]);
        out.push_str("***");
        i = s[start..]
            .find(|c: char| c == ';' || c == '"' || c.is_whitespace())
            .map_or(s.len(), |e| start + e);
    }
    out.push_str(&s[i..]);
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the source's task and the client's callbacks.
pub(super) struct Shared {
    ctx: SourceCtx,
    name: &'static str,
    /// "SASL PLAIN authentication as user \"$ConnectionString\"".
    who: String,
    user: String,
    group: String,
    brokers: String,
    /// Where the password comes from (a variable or file name, never the value).
    secret_where: String,
    secret: Mutex<Option<String>>,
    /// seam's durable positions: the next offset to read, per topic and partition (on a
    /// shared store also the group's committed offset a partition was assigned at, when it
    /// was further: another node stored up to it).
    durable: Mutex<HashMap<(String, i32), i64>>,
    /// Partitions without a durable position: the first offset taken (nothing before it was
    /// taken), until something of the partition is stored. A revocation commits it, so that
    /// the messages dropped then are read again, not skipped by `start = "latest"`.
    floor: Mutex<HashMap<(String, i32), i64>>,
    /// Partitions placed on a shared store without the group's committed offsets (they
    /// could not be read): their own position may be behind the group's, so a revocation
    /// does not commit it (it would move the group's offset back).
    unsure: Mutex<std::collections::HashSet<(String, i32)>>,
    /// Partitions assigned since the task last looked, with where each starts.
    reassigned: Mutex<Vec<(String, i32, Option<i64>)>>,
    /// Partitions revoked since the task last looked: what it holds of them unstored is
    /// dropped (their next owner reads it from the position committed at the revocation).
    revoked: Mutex<Vec<(String, i32)>>,
    /// Other seam nodes share the tables: at an assignment, the group's committed offset
    /// wins when it is past this node's own position (another node stored up to it).
    shared_store: bool,
    /// The newest message time stored (ms since the epoch; `i64::MIN` when unknown).
    newest_ms: AtomicI64,
    /// The trouble reported last, until a success.
    failing: Mutex<Option<Kind>>,
    /// Since when authentication has been failing (cleared by a success or a new client).
    auth_since: Mutex<Option<std::time::Instant>>,
    commit_failing: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("who", &self.who)
            .field("brokers", &self.brokers)
            .field("failing", &*lock(&self.failing))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The state of source `cfg` resuming from `durable`.
    pub(super) fn new(
        ctx: SourceCtx,
        cfg: &KafkaSource,
        durable: HashMap<(String, i32), i64>,
    ) -> Self {
        let user = cfg.sasl_username.clone().unwrap_or_default();
        let who = match cfg.sasl_mechanism.name() {
            Some(m) => format!("SASL {m} authentication as user {user:?}"),
            None => "the connection".to_string(),
        };
        let secret_where = match (&cfg.sasl_password_env, &cfg.sasl_password_file) {
            (Some(v), _) => format!("environment variable {v}"),
            (None, Some(p)) => format!("file {}", p.display()),
            (None, None) => "sasl_password_env".to_string(),
        };
        let shared_store = ctx.shared_store();
        Self {
            name: ctx.name(),
            ctx,
            who,
            user,
            group: cfg.group.clone(),
            brokers: cfg.brokers.join(","),
            secret_where,
            secret: Mutex::new(None),
            durable: Mutex::new(durable),
            floor: Mutex::new(HashMap::new()),
            unsure: Mutex::new(std::collections::HashSet::new()),
            reassigned: Mutex::new(Vec::new()),
            revoked: Mutex::new(Vec::new()),
            shared_store,
            newest_ms: AtomicI64::new(i64::MIN),
            failing: Mutex::new(None),
            auth_since: Mutex::new(None),
            commit_failing: AtomicBool::new(false),
        }
    }

    /// The source's name.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// Remembers the password, to keep it out of every message.
    pub(super) fn set_secret(&self, secret: Option<String>) {
        *lock(&self.secret) = secret;
    }

    fn redacted(&self, text: &str) -> String {
        redact(text, lock(&self.secret).as_deref())
    }

    /// Records trouble: status, metric, log (each message once while it repeats).
    pub(super) fn report(&self, kind: Kind, message: &str) {
        *lock(&self.failing) = Some(kind);
        if matches!(kind, Kind::Auth) {
            lock(&self.auth_since).get_or_insert_with(std::time::Instant::now);
        }
        let message = self.redacted(message);
        self.ctx.error(kind.label(), &message);
    }

    /// The source works again (messages stored, or the brokers are up).
    pub(super) fn recovered(&self) {
        *lock(&self.auth_since) = None;
        let was = lock(&self.failing).take();
        if was.is_some() {
            self.ctx.ok();
        }
    }

    /// How long authentication has been failing with the current client, if it is.
    pub(super) fn auth_failing_for(&self) -> Option<std::time::Duration> {
        lock(&self.auth_since).map(|t| t.elapsed())
    }

    /// A new client starts: its authentication has not failed yet.
    pub(super) fn new_client(&self) {
        *lock(&self.auth_since) = None;
    }

    /// seam's durable positions now.
    pub(super) fn durable(&self) -> HashMap<(String, i32), i64> {
        lock(&self.durable).clone()
    }

    /// Partitions assigned since the last call, with where each starts (`None`: where the
    /// broker puts it).
    pub(super) fn take_reassigned(&self) -> Vec<(String, i32, Option<i64>)> {
        std::mem::take(&mut *lock(&self.reassigned))
    }

    /// Partitions revoked since the last call.
    pub(super) fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *lock(&self.revoked))
    }

    /// Whether this node may commit its position of a partition to the group: not while it
    /// was placed without the group's offsets on a shared store (see `unsure`).
    pub(super) fn may_commit(&self, topic: &str, partition: i32) -> bool {
        !lock(&self.unsure).contains(&(topic.to_string(), partition))
    }

    /// A message is taken: a partition without a durable position gets its floor.
    pub(super) fn taking(&self, topic: &str, partition: i32, offset: i64) {
        let key = (topic.to_string(), partition);
        if lock(&self.durable).contains_key(&key) {
            return;
        }
        lock(&self.floor).entry(key).or_insert(offset);
    }

    /// Positions are durable (stored with their records).
    pub(super) fn stored(&self, next: &[(String, i32, i64)], newest_ms: Option<i64>) {
        {
            let mut d = lock(&self.durable);
            let mut f = lock(&self.floor);
            for (topic, partition, at) in next {
                let key = (topic.clone(), *partition);
                f.remove(&key);
                d.insert(key, *at);
            }
        }
        if let Some(t) = newest_ms {
            self.newest_ms.fetch_max(t, Ordering::Relaxed);
        }
    }

    /// An offset commit to the group failed: a warning (seam's own position wins), once
    /// until commits work again.
    pub(super) fn commit_failed(&self, error: &str) {
        if !self.commit_failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                source = self.name,
                error,
                "Could not commit offsets to the Kafka consumer group (seam's own positions are stored; the group's lag tools lag behind)."
            );
        }
    }

    fn commit_worked(&self) {
        if self.commit_failing.swap(false, Ordering::Relaxed) {
            tracing::info!(
                source = self.name,
                "Offsets are committed to the Kafka consumer group again."
            );
        }
    }

    /// An error from librdkafka (error callback): classified, worded, reported.
    pub(super) fn on_error(&self, code: Option<RDKafkaErrorCode>, reason: &str) {
        let reason = tidy(&self.redacted(reason));
        let kind = classify(code, &reason);
        let name = self.name;
        let message = match kind {
            Kind::Auth => format!(
                "kafka source {name}: {} was refused by {}: {reason}; check sasl_username and the password in {}; retrying",
                self.who, self.brokers, self.secret_where
            ),
            Kind::Denied => format!(
                "kafka source {name}: user {:?} may not read the topics or use consumer group {:?}: {reason} (Event Hubs: the policy needs the Listen right); retrying",
                self.user, self.group
            ),
            Kind::Tls => format!(
                "kafka source {name}: TLS with {} failed: {reason}; check tls and ca_file; retrying",
                self.brokers
            ),
            Kind::Network => {
                // The brokers "go down" after refusing the credentials or the handshake:
                // keep the cause in the status.
                let cause = *lock(&self.failing);
                if matches!(cause, Some(Kind::Auth | Kind::Tls)) {
                    tracing::debug!(source = name, error = %reason, "Kafka brokers down after an earlier failure.");
                    return;
                }
                format!(
                    "kafka source {name}: cannot reach the brokers {}: {reason}; retrying",
                    self.brokers
                )
            }
            Kind::Topic => format!(
                "kafka source {name}: {reason}; create the topic (Event Hubs: the event hub) or correct `topics`; retrying"
            ),
            Kind::Gap => format!(
                "kafka source {name}: {reason}: messages were deleted by retention before seam read them"
            ),
            Kind::Config | Kind::Read => format!("kafka source {name}: {reason}"),
        };
        self.report(kind, &message);
    }

    /// librdkafka's statistics: lag, and recovery once a broker is up.
    pub(super) fn on_stats(&self, json: &[u8]) {
        let stats: RawStats = match serde_json::from_slice(json) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(source = self.name, error = %e, "Unreadable librdkafka statistics.");
                return;
            }
        };
        let clear = brokers_up(&stats)
            && matches!(
                *lock(&self.failing),
                Some(Kind::Network | Kind::Tls | Kind::Auth)
            );
        if clear {
            self.recovered();
        }
        let records = {
            let d = lock(&self.durable);
            lag_records(&stats, &d)
        };
        if let Some(records) = records {
            let seconds = if records == 0 {
                Some(0.0)
            } else {
                let newest = self.newest_ms.load(Ordering::Relaxed);
                let now_ms = crate::now_ns() / 1_000_000;
                (newest != i64::MIN)
                    .then(|| (now_ms.saturating_sub(newest) as f64 / 1000.0).max(0.0))
            };
            self.ctx.lag(seconds, Some(records), None);
        }
    }

    /// Partitions were assigned: each one seam has a position for starts there (not at the
    /// group's committed offset). On a shared store `committed` (the group's committed
    /// offsets of these partitions, when they could be read) wins where it is further: the
    /// previous owner, another node, stored up to it and committed it when the partition was
    /// revoked. Returns `topic/partition[@offset]` of each, for the log.
    fn place(
        &self,
        tpl: &mut TopicPartitionList,
        committed: Option<&HashMap<(String, i32), i64>>,
    ) -> Vec<String> {
        let parts = partitions(tpl);
        let mut placed = Vec::with_capacity(parts.len());
        let mut starts = Vec::with_capacity(parts.len());
        {
            let mut durable = lock(&self.durable);
            let floor = lock(&self.floor);
            let mut unsure = lock(&self.unsure);
            for (topic, partition) in parts {
                let key = (topic, partition);
                if self.shared_store && committed.is_none() {
                    unsure.insert(key.clone());
                } else {
                    unsure.remove(&key);
                }
                // A floor only where the group's offsets were read (or the store is this
                // node's own): it may be behind what other nodes stored.
                let own = durable
                    .get(&key)
                    .or_else(|| floor.get(&key).filter(|_| !unsure.contains(&key)))
                    .copied()
                    .filter(|&at| at >= 0);
                let theirs = committed
                    .and_then(|c| c.get(&key).copied())
                    .filter(|&at| at >= 0);
                let start = start_at(own, theirs);
                let (topic, partition) = key;
                match start {
                    Some(at) => {
                        if let Err(e) =
                            tpl.set_partition_offset(&topic, partition, Offset::Offset(at))
                        {
                            tracing::debug!(source = self.name, topic = %topic, partition, error = %e, "Could not set a starting offset.");
                        }
                        if start != own {
                            // Stored by another node: this node's position from now on (what
                            // it commits if the partition is revoked before it stores more).
                            durable.insert((topic.clone(), partition), at);
                            placed.push(format!("{topic}/{partition}@{at} (the group's)"));
                        } else {
                            placed.push(format!("{topic}/{partition}@{at}"));
                        }
                    }
                    None => placed.push(format!("{topic}/{partition}")),
                }
                starts.push((topic, partition, start));
            }
        }
        lock(&self.reassigned).extend(starts);
        placed
    }

    /// Partitions are revoked: seam's durable positions of them are committed to the group at
    /// once and waited for, so that the next owner (another node of a shared store) starts
    /// where this node stopped; what the task holds of them unstored is dropped.
    fn hand_over(&self, consumer: &BaseConsumer<KafkaContext>, tpl: &TopicPartitionList) {
        let parts = partitions(tpl);
        let mut commit = TopicPartitionList::with_capacity(parts.len());
        let mut committing: Vec<(String, i32)> = Vec::new();
        // A lost assignment (the session or poll interval expired) cannot commit any more:
        // the group already gave the partitions to others.
        let lost = consumer.assignment_lost();
        if !lost {
            // Partitions placed without the group's offsets: their position is committed
            // only where it is past the group's (read now), never moving that back.
            let unsure: Vec<(String, i32)> = {
                let set = lock(&self.unsure);
                parts.iter().filter(|k| set.contains(*k)).cloned().collect()
            };
            let group = if unsure.is_empty() {
                HashMap::new()
            } else {
                let mut asked = TopicPartitionList::with_capacity(unsure.len());
                for (topic, partition) in &unsure {
                    asked.add_partition(topic, *partition);
                }
                match committed_offsets(consumer, &asked, COMMITTED_TIMEOUT) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(source = self.name, error = %e, "Could not read the group's offsets of revoked partitions; not committing them.");
                        HashMap::new()
                    }
                }
            };
            let durable = lock(&self.durable);
            let floor = lock(&self.floor);
            for key in &parts {
                let at = if unsure.contains(key) {
                    // Past the group's offset only (never a floor: it may be behind).
                    durable
                        .get(key)
                        .copied()
                        .filter(|&at| group.get(key).is_some_and(|&g| at > g))
                } else {
                    durable.get(key).or_else(|| floor.get(key)).copied()
                };
                let Some(at) = at.filter(|&at| at >= 0) else {
                    continue;
                };
                match commit.add_partition_offset(&key.0, key.1, Offset::Offset(at)) {
                    Ok(()) => committing.push(key.clone()),
                    Err(e) => {
                        tracing::debug!(source = self.name, error = %e, "Could not list an offset to commit.")
                    }
                }
            }
        }
        if commit.count() > 0 {
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => {
                    self.commit_worked();
                    // Committed: the next owner (this node too) starts there; a floor has
                    // done its work.
                    let mut floor = lock(&self.floor);
                    for key in &committing {
                        floor.remove(key);
                    }
                }
                Err(e) => {
                    let name = self.name;
                    tracing::warn!(
                        source = name,
                        error = %e,
                        "Could not commit seam's positions of the revoked Kafka partitions; their next owner may read messages this node stored again."
                    );
                }
            }
        }
        {
            let mut unsure = lock(&self.unsure);
            for key in &parts {
                unsure.remove(key);
            }
        }
        lock(&self.revoked).extend(parts);
    }
}

/// The `(topic, partition)` of every element of `tpl`.
fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// Where an assigned partition starts: this node's own position, or the group's committed
/// offset when that is further (shared store only: `theirs` is `None` otherwise).
fn start_at(own: Option<i64>, theirs: Option<i64>) -> Option<i64> {
    match (own, theirs) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The group's committed offsets of `tpl`'s partitions (only those it has), waited for at
/// most `timeout`.
fn committed_offsets(
    consumer: &BaseConsumer<KafkaContext>,
    tpl: &TopicPartitionList,
    timeout: std::time::Duration,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let asked = consumer.committed_offsets(tpl.clone(), timeout)?;
    Ok(asked
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(at) if at >= 0 => Some(((e.topic().to_string(), e.partition()), at)),
            _ => None,
        })
        .collect())
}

/// The parts of librdkafka's statistics the source reads.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStats {
    #[serde(default)]
    brokers: HashMap<String, RawBroker>,
    #[serde(default)]
    topics: HashMap<String, RawTopic>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBroker {
    #[serde(default)]
    state: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawTopic {
    #[serde(default)]
    partitions: HashMap<String, RawPartition>,
}

fn minus_one() -> i64 {
    -1
}

#[derive(Debug, Deserialize)]
struct RawPartition {
    #[serde(default = "minus_one")]
    partition: i64,
    #[serde(default)]
    fetch_state: String,
    #[serde(default = "minus_one")]
    hi_offset: i64,
    #[serde(default = "minus_one")]
    ls_offset: i64,
    #[serde(default = "minus_one")]
    app_offset: i64,
    #[serde(default = "minus_one")]
    committed_offset: i64,
    #[serde(default = "minus_one")]
    consumer_lag: i64,
}

/// True when a broker connection is up (connected and authenticated).
fn brokers_up(stats: &RawStats) -> bool {
    stats
        .brokers
        .iter()
        .any(|(name, b)| b.state == "UP" && !name.ends_with("/internal"))
}

/// Messages available and not yet stored, over the partitions being fetched: the end of
/// each (last stable offset, else high watermark) minus seam's position (else librdkafka's
/// own). `None` when no partition is being fetched.
pub(super) fn lag_records(stats: &RawStats, durable: &HashMap<(String, i32), i64>) -> Option<u64> {
    let mut total: u64 = 0;
    let mut any = false;
    for (topic, t) in &stats.topics {
        for p in t.partitions.values() {
            let Ok(partition) = i32::try_from(p.partition) else {
                continue;
            };
            if partition < 0
                || matches!(p.fetch_state.as_str(), "" | "none" | "stopping" | "stopped")
            {
                continue;
            }
            let end = if p.ls_offset >= 0 {
                p.ls_offset
            } else {
                p.hi_offset
            };
            if end < 0 {
                continue;
            }
            let at = durable
                .get(&(topic.clone(), partition))
                .copied()
                .or((p.app_offset >= 0).then_some(p.app_offset))
                .or((p.committed_offset >= 0).then_some(p.committed_offset));
            let lag = match at {
                Some(a) => end.saturating_sub(a).max(0),
                None if p.consumer_lag >= 0 => p.consumer_lag,
                None => continue,
            };
            any = true;
            total = total.saturating_add(u64::try_from(lag).unwrap_or(0));
        }
    }
    any.then_some(total)
}

/// The client's context: librdkafka's callbacks into [`Shared`].
#[derive(Debug, Clone)]
pub(super) struct KafkaContext {
    shared: Arc<Shared>,
}

impl KafkaContext {
    /// A context over `shared`.
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let message = self.shared.redacted(log_message);
        tracing::debug!(target: "librdkafka", source = self.shared.name, level = ?level, facility = fac, "{message}");
        // librdkafka warns when a partition's position is not on the broker any more
        // (retention deleted it) and it starts elsewhere: messages were lost.
        if fac == "OFFSET"
            && matches!(level, RDKafkaLogLevel::Warning)
            && message.contains("offset reset")
        {
            let name = self.shared.name;
            self.shared.report(
                Kind::Gap,
                &format!(
                    "kafka source {name}: {message}; the messages between seam's position and the new one were deleted by retention before seam read them"
                ),
            );
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.shared.on_stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.on_error(error.rdkafka_error_code(), reason);
    }
}

impl ConsumerContext for KafkaContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let name = self.shared.name;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let committed = if self.shared.shared_store {
                    match committed_offsets(consumer, tpl, COMMITTED_TIMEOUT) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(source = name, error = %e, "Could not read the consumer group's committed offsets; the assigned partitions start at this node's own positions (messages another node stored may be read again).");
                            None
                        }
                    }
                } else {
                    None
                };
                let placed = self.shared.place(tpl, committed.as_ref());
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match result {
                    Ok(()) => tracing::info!(source = name, partitions = %placed.join(", "), "Kafka partitions assigned."),
                    Err(e) => self.shared.report(
                        Kind::Read,
                        &format!("kafka source {name}: could not take the partitions assigned to it: {e}; retrying"),
                    ),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // seam commits only what it stored; waited for here, so that the next owner
                // starts after it.
                self.shared.hand_over(consumer, tpl);
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                match result {
                    Ok(()) => tracing::info!(
                        source = name,
                        partitions = tpl.count(),
                        "Kafka partitions revoked."
                    ),
                    Err(e) => {
                        tracing::debug!(source = name, error = %e, "Could not give Kafka partitions up.")
                    }
                }
            }
            other => {
                tracing::warn!(source = name, error = ?other, "Kafka rebalance failed; leaving the assignment.");
                // Whatever was assigned is given up: its unstored messages are dropped as at
                // a revocation (read again from the committed position).
                if let Ok(held) = consumer.assignment() {
                    self.shared.hand_over(consumer, &held);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::debug!(source = name, error = %e, "Could not give Kafka partitions up.");
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.shared.commit_worked(),
            Err(e) => self.shared.commit_failed(&e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> KafkaSource {
        toml::from_str(&format!(
            "name = 'eh'\nformat = 'apim'\nbrokers = ['a:9093', 'b:9093']\ntopics = ['t']\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn security_protocol_is_tls_times_sasl() {
        assert_eq!(security_protocol(false, SaslMechanism::None), "PLAINTEXT");
        assert_eq!(security_protocol(true, SaslMechanism::None), "SSL");
        assert_eq!(
            security_protocol(false, SaslMechanism::Plain),
            "SASL_PLAINTEXT"
        );
        assert_eq!(
            security_protocol(true, SaslMechanism::ScramSha512),
            "SASL_SSL"
        );
        assert_eq!(
            security_protocol(true, SaslMechanism::ScramSha256),
            "SASL_SSL"
        );
    }

    #[test]
    fn event_hubs_settings() {
        let cfg = source(
            "sasl_mechanism = 'PLAIN'\nsasl_username = '$ConnectionString'\nsasl_password_env = 'X'\nstart = 'latest'\n",
        );
        let secret = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=seam;SharedAccessKey=abc123=";
        let c = client_config(&cfg, Some(secret)).unwrap();
        assert_eq!(c.get("bootstrap.servers"), Some("a:9093,b:9093"));
        assert_eq!(c.get("group.id"), Some("seam"));
        assert_eq!(c.get("client.id"), Some("seam-eh"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(c.get("sasl.password"), Some(secret));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
        assert_eq!(c.get("ssl.ca.location"), None, "the system's CA store");
        assert_eq!(
            c.get("enable.ssl.certificate.verification"),
            None,
            "verification left on"
        );
        assert!(
            !format!("{c:?}").contains("abc123"),
            "the settings' Debug hides the password"
        );
    }

    #[test]
    fn local_broker_settings() {
        let cfg = source("tls = false\n");
        let c = client_config(&cfg, None).unwrap();
        assert_eq!(c.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(c.get("sasl.mechanism"), None);
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        let cfg = source("ca_file = '/etc/seam/ca.pem'\n");
        let c = client_config(&cfg, None).unwrap();
        assert_eq!(c.get("security.protocol"), Some("SSL"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/seam/ca.pem"));
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(
            classify(Some(RDKafkaErrorCode::Authentication), ""),
            Kind::Auth
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::SaslAuthenticationFailed), ""),
            Kind::Auth
        );
        assert_eq!(
            classify(
                Some(RDKafkaErrorCode::Unknown),
                "sasl_ssl://ns.servicebus.windows.net:9093/bootstrap: SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN"
            ),
            Kind::Auth
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::TopicAuthorizationFailed), ""),
            Kind::Denied
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::AllBrokersDown), ""),
            Kind::Network
        );
        assert_eq!(
            classify(
                None,
                "Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
            ),
            Kind::Network
        );
        assert_eq!(classify(Some(RDKafkaErrorCode::SSL), ""), Kind::Tls);
        assert_eq!(
            classify(Some(RDKafkaErrorCode::UnknownTopicOrPartition), ""),
            Kind::Topic
        );
        assert_eq!(classify(None, "something else"), Kind::Read);
        assert_eq!(Kind::Denied.label(), "auth");
        assert_eq!(Kind::Topic.label(), "config");
    }

    #[test]
    fn reasons_are_tidied_and_redacted() {
        assert_eq!(
            tidy(
                "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT, 4 identical error(s) suppressed)"
            ),
            "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
        );
        assert_eq!(tidy("a (after 3ms in state X) b (after 1ms"), "a b");
        assert_eq!(
            redact("failed for hunter22 here", Some("hunter22")),
            "failed for *** here"
        );
        assert_eq!(
            redact(
                "Endpoint=sb://n.servicebus.windows.net/;SharedAccessKeyName=seam;SharedAccessKey=Zm9v+YmFy=;EntityPath=x",
                None
            ),
            "Endpoint=sb://n.servicebus.windows.net/;SharedAccessKeyName=seam;SharedAccessKey=***;EntityPath=x"
        );
        assert_eq!(redact("sharedaccesskey=abc", None), "sharedaccesskey=***");
        assert_eq!(redact("no secret", Some("")), "no secret");
    }

    #[test]
    fn lag_is_the_end_minus_seam_position() {
        let json = r#"{
          "name": "seam-eh#consumer-1", "type": "consumer",
          "brokers": {
            "127.0.0.1:9092/bootstrap": {"state": "UP", "nodeid": -1},
            ":0/internal": {"state": "INIT", "nodeid": -1}
          },
          "topics": {
            "gw": {"topic": "gw", "partitions": {
              "0": {"partition": 0, "fetch_state": "active", "hi_offset": 100, "ls_offset": 100, "app_offset": 90, "committed_offset": 80, "consumer_lag": 20},
              "1": {"partition": 1, "fetch_state": "active", "hi_offset": 50, "ls_offset": -1, "app_offset": 45, "committed_offset": -1001, "consumer_lag": -1},
              "2": {"partition": 2, "fetch_state": "none", "hi_offset": 500, "ls_offset": 500},
              "-1": {"partition": -1, "fetch_state": "none", "hi_offset": -1}
            }}
          }
        }"#;
        let stats: RawStats = serde_json::from_str(json).unwrap();
        assert!(brokers_up(&stats));
        let mut durable = HashMap::new();
        durable.insert(("gw".to_string(), 0), 97);
        // 100 - 97 (seam's position) + 50 - 45 (librdkafka's, no position yet).
        assert_eq!(lag_records(&stats, &durable), Some(8));
        let idle: RawStats = serde_json::from_str(r#"{"brokers":{},"topics":{}}"#).unwrap();
        assert_eq!(lag_records(&idle, &durable), None);
        assert!(!brokers_up(&idle));
    }
}
