//! Kafka as a pulled source: Azure Event Hubs' Kafka endpoint or any Kafka-protocol broker
//! (`[[sources]] type = "kafka"`), read through librdkafka (`rdkafka`).
//!
//! **Exactly once.** seam's own position per partition (`source_positions` key
//! `"{topic}/{partition}"`, offset = the next offset to read) is stored in the same
//! write-ahead log entry as the records read before it, and wins over the consumer group's
//! committed offset (on a store of its own; on a shared store the further of the two wins,
//! see Rebalances): an assigned partition starts at seam's position, a message before it
//! is dropped (already stored), and a first message past it makes the consumer go back to it
//! once; if the broker still starts past it, those offsets are gone (retention) and the
//! source goes on with a `gap` warning. A partition seam has no position for starts where
//! the group's committed offset, else `start`, puts it. After an input is stored, the same
//! offsets are committed to the group asynchronously (for the broker's lag tools and the
//! next owner of a partition); a failed commit is only a warning.
//!
//! **Rebalances.** seam never commits ahead of what it stored. When partitions are revoked,
//! seam's positions of them are committed and waited for, and the messages of them taken but
//! not yet stored are dropped (the next owner reads them). Several seam nodes of one shared
//! store (`storage.url` remote) can share a consumer group: the group splits the partitions
//! between them, and at an assignment a node starts at the group's committed offset where
//! that is past its own position (another node stored up to it), so a partition moving
//! between nodes at a clean rebalance is read exactly once. A partition without a position
//! (`start = "latest"`) is committed at the first offset taken, so what a revocation dropped
//! is read again, never skipped; partitions placed while the group's offsets could not be
//! read are committed only past the group's offset (read again at the revocation), and a
//! lost assignment commits nothing (the group gave the partitions away). A node that dies has its
//! partitions moved after the group's session timeout; the messages it stored but whose
//! asynchronous commit had not reached the broker are read again by the next owner. On a
//! store of its own, seam's position always wins (one seam per consumer group: two seams
//! with their own stores sharing a group each store only the partitions they are given).
//! A position row's `records` counts the messages with a payload in the step, `bytes` their
//! payload bytes.
//!
//! **Batches.** Messages of any partitions and topics are gathered until `max_batch_bytes`,
//! about 50,000 records, or 100 ms after the first; their payloads (JSON documents: Event
//! Hubs `{"records":[…]}` batches, single custom events; or log lines) joined by newlines
//! make one input, with one position per partition touched. With `format = "auto"` a batch
//! is split into runs of messages of the same shape, so that each input holds one shape.
//! Empty payloads move the position and add no text; invalid UTF-8 is replaced; keys and
//! headers are ignored. A message larger than `max_batch_bytes` is an input of its own.
//!
//! **Failures.** librdkafka reconnects by itself; its errors become the source's status
//! (`network`, `auth` naming the mechanism and user, `tls`, `config`), cleared once a
//! broker is up again or messages are stored. A missing secret or an unusable setting is
//! reported and retried with backoff; seam never stops because of a source.
//!
//! **Lag.** From librdkafka's statistics every 5 s: messages between each fetched
//! partition's end and seam's position, and seconds since the newest message stored while
//! that is above zero.

mod batch;
mod client;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::time::Instant;

use self::batch::{Classify, Msg, Step, Tracker};
use self::client::{KafkaContext, Kind, Shared};
use super::pull::config::{self, KafkaSource};
use super::pull::{Position, PullFormat, SourceCtx, Stopped, next_backoff};

/// How long a batch waits for more messages after its first.
const LINGER: Duration = Duration::from_millis(100);
/// How long going back to seam's position may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before trying again after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Authentication failing this long with one client: a new client is made, which reads the
/// SASL password again (a rotated secret, a corrected file or Key Vault reference).
const REAUTH_AFTER: Duration = Duration::from_secs(30);

/// How often an idle consumer looks at its health.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// A client that ran this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Why a client stopped before seam did.
#[derive(Debug)]
struct Failure {
    kind: Kind,
    message: String,
}

impl Failure {
    fn config(message: String) -> Self {
        Self {
            kind: Kind::Config,
            message,
        }
    }
}

/// What waiting for the next message gave.
enum Got {
    Stop,
    Linger,
    Message(Msg),
    Failed(KafkaError),
    /// Nothing came for a while: time to look at the source's health.
    Idle,
}

/// Runs the source until seam stops.
pub async fn run(ctx: SourceCtx, cfg: KafkaSource) -> Stopped {
    let shared = Arc::new(Shared::new(
        ctx.clone(),
        &cfg,
        initial_positions(ctx.positions()),
    ));
    let mut backoff = FIRST_BACKOFF;
    loop {
        if ctx.stopping() {
            return Stopped;
        }
        let started = Instant::now();
        match session(&ctx, &cfg, &shared).await {
            Ok(Stopped) => return Stopped,
            Err(f) => {
                shared.report(f.kind, &f.message);
                if started.elapsed() > HEALTHY_RUN {
                    backoff = FIRST_BACKOFF;
                }
                if ctx.sleep(backoff).await.is_err() {
                    return Stopped;
                }
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// seam's positions by topic and partition (keys this source did not write are left out).
fn initial_positions(positions: &HashMap<String, Position>) -> HashMap<(String, i32), i64> {
    positions
        .iter()
        .filter(|(_, p)| p.offset >= 0)
        .filter_map(|(key, p)| batch::parse_key(key).map(|tp| (tp, p.offset)))
        .collect()
}

/// One client, from creation until seam stops or the client fails for good.
async fn session(
    ctx: &SourceCtx,
    cfg: &KafkaSource,
    shared: &Arc<Shared>,
) -> Result<Stopped, Failure> {
    let name = shared.name();
    if let Some(t) = cfg.topics.iter().find(|t| !batch::valid_topic(t)) {
        return Err(Failure::config(format!(
            "kafka source {name}: topic {t:?} is not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')"
        )));
    }
    let consumer = {
        let password = match cfg.sasl_mechanism.name() {
            Some(_) => Some(
                config::secret(
                    cfg.sasl_password_env.as_deref(),
                    cfg.sasl_password_file.as_deref(),
                )
                .map_err(|e| {
                    Failure::config(format!("kafka source {name}: the SASL password: {e}"))
                })?,
            ),
            None => None,
        };
        shared.set_secret(password.clone());
        shared.new_client();
        let settings = client::client_config(cfg, password.as_deref())
            .map_err(|e| Failure::config(format!("kafka source {name}: {e}")))?;
        let created: Result<StreamConsumer<KafkaContext>, KafkaError> =
            settings.create_with_context(KafkaContext::new(Arc::clone(shared)));
        created.map_err(|e| {
            Failure::config(format!(
                "kafka source {name}: the Kafka client cannot be created: {}",
                client::describe(&e)
            ))
        })?
    };
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&topics) {
        close(consumer).await;
        return Err(Failure::config(format!(
            "kafka source {name}: cannot subscribe to {}: {e}",
            cfg.topics.join(", ")
        )));
    }
    tracing::info!(
        source = name,
        brokers = %cfg.brokers.join(","),
        topics = %cfg.topics.join(","),
        group = %cfg.group,
        "Kafka source subscribed."
    );
    let result = consume(ctx, cfg, shared, &consumer).await;
    close(consumer).await;
    result
}

/// Leaves the group and frees the client, off the runtime's threads (closing waits for the
/// brokers, up to the session timeout when they are gone).
async fn close(consumer: StreamConsumer<KafkaContext>) {
    let closing = tokio::task::spawn_blocking(move || drop(consumer));
    if let Err(e) = closing.await {
        tracing::debug!(error = %e, "Closing the Kafka client failed.");
    }
}

/// The message, owned: the payload as text (invalid UTF-8 replaced).
fn own(m: &BorrowedMessage<'_>) -> Msg {
    let payload = m.payload().unwrap_or_default();
    Msg {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        text: String::from_utf8_lossy(payload).into_owned(),
        bytes: u64::try_from(payload.len()).unwrap_or(u64::MAX),
        time_ms: m.timestamp().to_millis(),
    }
}

fn got(r: Result<BorrowedMessage<'_>, KafkaError>) -> Got {
    match r {
        Ok(m) => Got::Message(own(&m)),
        Err(e) => Got::Failed(e),
    }
}

/// Reads, batches and stores until seam stops (`Ok`) or the client fails for good.
async fn consume(
    ctx: &SourceCtx,
    cfg: &KafkaSource,
    shared: &Shared,
    consumer: &StreamConsumer<KafkaContext>,
) -> Result<Stopped, Failure> {
    let name = shared.name();
    let mut stop = ctx.stop_signal();
    let mut tracker = Tracker::new(&shared.durable());
    let classify: Option<Classify> = if cfg.format == PullFormat::Auto {
        Some(batch::shape as Classify)
    } else {
        None
    };
    let max_bytes = cfg.max_batch_bytes.max(1);
    let mut carry: Option<Msg> = None;
    loop {
        let mut msgs: Vec<Msg> = Vec::new();
        let mut bytes = 0usize;
        let mut records = 0usize;
        let mut deadline: Option<Instant> = None;
        if let Some(m) = carry.take() {
            bytes = m.text.len();
            records = batch::estimate(&m.text);
            msgs.push(m);
            deadline = Some(Instant::now() + LINGER);
        }
        while bytes < max_bytes && records < batch::MAX_RECORDS {
            let next = match deadline {
                None => tokio::select! {
                    _ = stop.wait_for(|v| *v) => Got::Stop,
                    r = consumer.recv() => got(r),
                    () = tokio::time::sleep(IDLE_CHECK) => Got::Idle,
                },
                Some(d) => tokio::select! {
                    _ = stop.wait_for(|v| *v) => Got::Stop,
                    r = tokio::time::timeout_at(d, consumer.recv()) => match r {
                        Ok(r) => got(r),
                        Err(_) => Got::Linger,
                    },
                },
            };
            if rebalanced(shared, &mut tracker, &mut msgs) {
                bytes = msgs.iter().map(|m| m.text.len()).sum();
                records = msgs.iter().map(|m| batch::estimate(&m.text)).sum();
                if msgs.is_empty() {
                    deadline = None;
                }
            }
            let m = match next {
                Got::Stop => return Ok(Stopped),
                Got::Linger => break,
                Got::Idle => {
                    if shared.auth_failing_for().is_some_and(|d| d >= REAUTH_AFTER) {
                        return Err(Failure {
                            kind: Kind::Auth,
                            message: format!(
                                "kafka source {name}: authentication has failed for {}s; \
                                 reading the SASL password again and reconnecting",
                                REAUTH_AFTER.as_secs()
                            ),
                        });
                    }
                    continue;
                }
                Got::Failed(e) => {
                    failed(name, e)?;
                    continue;
                }
                Got::Message(m) => m,
            };
            match tracker.step(&m.topic, m.partition, m.offset) {
                Step::Take => {}
                Step::Skip => continue,
                Step::Seek(at) => {
                    seek(consumer, shared, &mut tracker, &m, at);
                    continue;
                }
                Step::Hole { from } => tracing::debug!(
                    source = name,
                    topic = %m.topic,
                    partition = m.partition,
                    from,
                    to = m.offset,
                    "Kafka offsets without messages (transaction markers or compaction)."
                ),
                Step::Gap { from } => shared.report(
                    Kind::Gap,
                    &format!(
                        "kafka source {name}: offsets {from} to {} of {}/{} are no longer on the broker (deleted by retention before seam read them, or transaction markers); continuing at {}",
                        m.offset.saturating_sub(1),
                        m.topic,
                        m.partition,
                        m.offset
                    ),
                ),
            }
            tracker.taken(&m.topic, m.partition, m.offset);
            shared.taking(&m.topic, m.partition, m.offset);
            let size = m.text.len();
            let estimate = batch::estimate(&m.text);
            if !msgs.is_empty()
                && (bytes.saturating_add(size) > max_bytes
                    || records.saturating_add(estimate) > batch::MAX_RECORDS)
            {
                carry = Some(m);
                break;
            }
            bytes = bytes.saturating_add(size);
            records = records.saturating_add(estimate);
            msgs.push(m);
            if deadline.is_none() {
                deadline = Some(Instant::now() + LINGER);
            }
        }
        rebalanced(shared, &mut tracker, &mut msgs);
        if msgs.is_empty() {
            continue;
        }
        if store(ctx, shared, consumer, msgs, classify).await.is_err() {
            return Ok(Stopped);
        }
    }
}

/// Applies the rebalances since the last look: the messages of revoked partitions are
/// dropped from the batch (their next owner reads them from the position committed at the
/// revocation) and forgotten; assigned partitions start where [`Shared`] placed them.
/// Returns whether the batch lost messages.
fn rebalanced(shared: &Shared, tracker: &mut Tracker, msgs: &mut Vec<Msg>) -> bool {
    let revoked = shared.take_revoked();
    let before = msgs.len();
    if !revoked.is_empty() {
        msgs.retain(|m| {
            !revoked
                .iter()
                .any(|(t, p)| *p == m.partition && *t == m.topic)
        });
        tracker.forget(&revoked);
        if msgs.len() < before {
            tracing::debug!(
                source = shared.name(),
                dropped = before - msgs.len(),
                "Messages of revoked Kafka partitions dropped before storing (their next owner reads them)."
            );
        }
    }
    let assigned = shared.take_reassigned();
    if !assigned.is_empty() {
        tracker.reassigned(assigned);
    }
    msgs.len() < before
}

/// An error `recv` gave: already reported by the error callback, except a fatal one, which
/// ends the client (a new one is made).
fn failed(name: &str, e: KafkaError) -> Result<(), Failure> {
    match e {
        KafkaError::MessageConsumptionFatal(code) => Err(Failure {
            kind: Kind::Read,
            message: format!(
                "kafka source {name}: the Kafka client failed for good ({code}); starting a new one"
            ),
        }),
        KafkaError::PartitionEOF(_) => Ok(()),
        other => {
            tracing::debug!(source = name, error = %other, "Kafka consumer error.");
            Ok(())
        }
    }
}

/// Goes back to seam's position `at` in the message's partition (the message is dropped).
fn seek(
    consumer: &StreamConsumer<KafkaContext>,
    shared: &Shared,
    tracker: &mut Tracker,
    m: &Msg,
    at: i64,
) {
    match consumer.seek(&m.topic, m.partition, Offset::Offset(at), SEEK_TIMEOUT) {
        Ok(()) => {
            tracker.sought(&m.topic, m.partition, at);
            tracing::info!(
                source = shared.name(),
                topic = %m.topic,
                partition = m.partition,
                from = m.offset,
                to = at,
                "The Kafka partition started past seam's position; going back to it."
            );
        }
        Err(e) => shared.report(
            Kind::Read,
            &format!(
                "kafka source {}: cannot go back to offset {at} of {}/{}: {e}; retrying",
                shared.name(),
                m.topic,
                m.partition
            ),
        ),
    }
}

/// Stores a batch (one input per shape run), then moves seam's positions and commits them
/// to the group.
///
/// # Errors
/// [`Stopped`] when seam stops first: what was not stored is read again at the next start.
async fn store(
    ctx: &SourceCtx,
    shared: &Shared,
    consumer: &StreamConsumer<KafkaContext>,
    msgs: Vec<Msg>,
    classify: Option<Classify>,
) -> Result<(), Stopped> {
    for piece in batch::build(msgs, classify) {
        if piece.pulled.text.trim().is_empty() {
            let positions: Vec<Position> = piece
                .pulled
                .positions
                .iter()
                .map(|(p, _, _)| p.clone())
                .collect();
            ctx.save_positions(positions).await?;
        } else {
            ctx.deliver(piece.pulled).await?;
        }
        shared.stored(&piece.next, piece.newest_ms);
        commit(consumer, shared, &piece.next);
        shared.recovered();
    }
    Ok(())
}

/// Commits seam's new positions to the consumer group, asynchronously.
fn commit(consumer: &StreamConsumer<KafkaContext>, shared: &Shared, next: &[(String, i32, i64)]) {
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for (topic, partition, at) in next {
        if !shared.may_commit(topic, *partition) {
            continue;
        }
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*at)) {
            shared.commit_failed(&e.to_string());
            return;
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        shared.commit_failed(&e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_positions_keep_this_sources_keys() {
        let mut ps = HashMap::new();
        for (key, offset) in [
            ("gw/0", 12),
            ("gw/1", 0),
            ("ev/2", -5),
            ("/var/log/x.log", 9),
        ] {
            ps.insert(
                key.to_string(),
                Position {
                    key: key.to_string(),
                    offset,
                    detail: None,
                },
            );
        }
        let got = initial_positions(&ps);
        assert_eq!(got.len(), 2);
        assert_eq!(got.get(&("gw".to_string(), 0)), Some(&12));
        assert_eq!(got.get(&("gw".to_string(), 1)), Some(&0));
    }
}
