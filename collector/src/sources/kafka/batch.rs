//! The pure part of the Kafka source: which messages to take (seam's own position per
//! partition wins over the consumer group's committed offset), and how the messages taken
//! become [`Pulled`] inputs with the positions they move. No network here.
//!
//! Positions are keyed `"{topic}/{partition}"`; the offset is the next offset to read.

use std::collections::HashMap;

use crate::sources::logs::{AccessSource, sniff};
use crate::sources::pull::{Position, PullFormat, Pulled};

/// Most records (estimated) in one input; the collector refuses more than 100,000.
pub(super) const MAX_RECORDS: usize = 50_000;

/// Longest Kafka topic name.
const MAX_TOPIC: usize = 249;

/// Partitions named in an input's origin before "+N more".
const ORIGIN_PARTITIONS: usize = 3;

/// Decides the shape of one message's text (`format = "auto"`).
pub(super) type Classify = fn(&str) -> Option<PullFormat>;

/// One message taken from the broker, owned (headers and key are not kept).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Msg {
    /// Topic.
    pub(super) topic: String,
    /// Partition.
    pub(super) partition: i32,
    /// Offset.
    pub(super) offset: i64,
    /// The payload as text (invalid UTF-8 replaced); empty for an empty or null payload.
    pub(super) text: String,
    /// Payload bytes.
    pub(super) bytes: u64,
    /// The message's timestamp (ms since the epoch), when it has one.
    pub(super) time_ms: Option<i64>,
}

/// The position key of a partition.
pub(super) fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The topic and partition of a position key; `None` for a key this source did not write.
pub(super) fn parse_key(key: &str) -> Option<(String, i32)> {
    let (topic, partition) = key.rsplit_once('/')?;
    let partition: i32 = partition.parse().ok()?;
    (valid_topic(topic) && partition >= 0).then(|| (topic.to_string(), partition))
}

/// True for a legal Kafka topic (and Event Hubs event hub) name.
pub(super) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An upper bound of the records in a message's text: every record of a JSON document opens
/// at least one object and every line of text ends with a newline.
pub(super) fn estimate(text: &str) -> usize {
    text.bytes()
        .filter(|b| *b == b'{' || *b == b'\n')
        .count()
        .max(1)
}

/// The shape of one message's text, as `format = "auto"` decides it; `None` when it is in no
/// known format on its own (a continuation line, say).
pub(super) fn shape(text: &str) -> Option<PullFormat> {
    if crate::sources::pull::ingest::looks_otlp(text) {
        return Some(PullFormat::OtlpJson);
    }
    match sniff(text) {
        Some(AccessSource::Apim) => Some(PullFormat::Apim),
        Some(AccessSource::Mule) => Some(PullFormat::Mule),
        None => None,
    }
}

/// What the source knows of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Track {
    /// The next offset wanted: seam's durable position, or past the last message taken.
    pub(super) expected: Option<i64>,
    /// The position came from storage (start, new assignment): a first message past it
    /// means the broker started elsewhere, so the source goes back to it.
    pub(super) strict: bool,
    /// Where the source already went back to (`seek`).
    pub(super) sought: Option<i64>,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Take it.
    Take,
    /// Take it: offsets `from` up to it hold nothing (transaction markers, compaction).
    Hole {
        /// The first offset skipped.
        from: i64,
    },
    /// Already taken: drop it.
    Skip,
    /// The broker started past seam's position: go back to this offset and drop it.
    Seek(i64),
    /// Past seam's position even after going back: offsets `from` up to it are gone from the
    /// broker (retention). Take it, with a warning.
    Gap {
        /// The first offset lost.
        from: i64,
    },
}

/// The decision for a message at `offset` of a partition in state `t`.
pub(super) fn decide(t: &Track, offset: i64) -> Step {
    match t.expected {
        None => Step::Take,
        Some(p) if offset == p => Step::Take,
        Some(p) if offset < p => Step::Skip,
        Some(p) if !t.strict => Step::Hole { from: p },
        Some(p) if t.sought == Some(p) => Step::Gap { from: p },
        Some(p) => Step::Seek(p),
    }
}

/// Every partition's [`Track`].
#[derive(Debug, Default)]
pub(super) struct Tracker {
    parts: HashMap<String, HashMap<i32, Track>>,
}

impl Tracker {
    /// Starts from seam's durable positions (each one strict).
    pub(super) fn new(durable: &HashMap<(String, i32), i64>) -> Self {
        let mut t = Self::default();
        for ((topic, partition), at) in durable {
            let track = t.track(topic, *partition);
            track.expected = Some(*at);
            track.strict = true;
        }
        t
    }

    fn track(&mut self, topic: &str, partition: i32) -> &mut Track {
        self.parts
            .entry(topic.to_owned())
            .or_default()
            .entry(partition)
            .or_default()
    }

    /// The state of a partition.
    pub(super) fn get(&self, topic: &str, partition: i32) -> Track {
        self.parts
            .get(topic)
            .and_then(|m| m.get(&partition))
            .copied()
            .unwrap_or_default()
    }

    /// The decision for a message.
    pub(super) fn step(&self, topic: &str, partition: i32, offset: i64) -> Step {
        decide(&self.get(topic, partition), offset)
    }

    /// A message was taken: the partition continues after it.
    pub(super) fn taken(&mut self, topic: &str, partition: i32, offset: i64) {
        let t = self.track(topic, partition);
        t.expected = Some(offset.saturating_add(1));
        t.strict = false;
        t.sought = None;
    }

    /// The consumer went back to `at` in a partition.
    pub(super) fn sought(&mut self, topic: &str, partition: i32, at: i64) {
        self.track(topic, partition).sought = Some(at);
    }

    /// Partitions were (re)assigned, each with where it starts (seam's position, on a
    /// shared store the group's committed offset where further): their next message is
    /// checked against it. A position the tracker is already past (messages taken and not
    /// yet stored, the partition never revoked) is kept.
    pub(super) fn reassigned(&mut self, parts: Vec<(String, i32, Option<i64>)>) {
        for (topic, partition, start) in parts {
            let t = self.track(&topic, partition);
            t.strict = true;
            t.sought = None;
            t.expected = match (t.expected, start) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// Partitions were revoked: what the tracker knew of them is forgotten (the messages
    /// taken and not stored are dropped; a later assignment says where to start).
    pub(super) fn forget(&mut self, parts: &[(String, i32)]) {
        for (topic, partition) in parts {
            if let Some(m) = self.parts.get_mut(topic) {
                m.remove(partition);
            }
        }
    }
}

/// One input to store, and what it moves.
#[derive(Debug)]
pub(super) struct Piece {
    /// The input, with its positions.
    pub(super) pulled: Pulled,
    /// `(topic, partition, next offset)` of every partition it touches: seam's new positions
    /// once stored, and the offsets committed to the group.
    pub(super) next: Vec<(String, i32, i64)>,
    /// The newest message time in it (ms since the epoch).
    pub(super) newest_ms: Option<i64>,
}

/// What one input took from one partition.
#[derive(Debug)]
struct Acc {
    topic: String,
    partition: i32,
    first: i64,
    last: i64,
    /// Messages with a payload (an empty one holds no record).
    messages: u64,
    bytes: u64,
}

/// Messages of one shape, in the order they arrived.
#[derive(Debug)]
struct Group {
    format: Option<PullFormat>,
    msgs: Vec<Msg>,
}

/// Builds the inputs of a batch of taken messages: one input, or with `classify`
/// (`format = "auto"`) one per run of messages of the same shape, so that each input holds
/// one shape (a message of no known shape joins the run it is in). Texts are the payloads
/// joined by newlines (empty payloads add no text but move the position); positions are
/// per partition, after the last message of it in the input, with the messages that had a
/// payload and the payload bytes; the order of messages within
/// a partition is kept, so inputs stored one after the other move every position forward.
pub(super) fn build(msgs: Vec<Msg>, classify: Option<Classify>) -> Vec<Piece> {
    let mut groups: Vec<Group> = Vec::new();
    for m in msgs {
        let s = match classify {
            Some(f) if !m.text.trim().is_empty() => f(&m.text),
            _ => None,
        };
        let join = match groups.last() {
            None => false,
            Some(g) => match (g.format, s) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        };
        if join && let Some(g) = groups.last_mut() {
            if g.format.is_none() {
                g.format = s;
            }
            g.msgs.push(m);
        } else {
            groups.push(Group {
                format: s,
                msgs: vec![m],
            });
        }
    }
    groups.into_iter().map(piece).collect()
}

fn piece(g: Group) -> Piece {
    let len: usize = g
        .msgs
        .iter()
        .map(|m| m.text.len().saturating_add(1))
        .fold(0, usize::saturating_add);
    let mut text = String::with_capacity(len);
    let mut accs: Vec<Acc> = Vec::new();
    let mut newest_ms: Option<i64> = None;
    for m in &g.msgs {
        let full = !m.text.trim().is_empty();
        if full {
            text.push_str(&m.text);
            if !m.text.ends_with('\n') {
                text.push('\n');
            }
        }
        if let Some(t) = m.time_ms {
            newest_ms = Some(newest_ms.map_or(t, |n| n.max(t)));
        }
        match accs
            .iter_mut()
            .find(|a| a.partition == m.partition && a.topic == m.topic)
        {
            Some(a) => {
                a.first = a.first.min(m.offset);
                a.last = a.last.max(m.offset);
                a.messages = a.messages.saturating_add(u64::from(full));
                a.bytes = a.bytes.saturating_add(m.bytes);
            }
            None => accs.push(Acc {
                topic: m.topic.clone(),
                partition: m.partition,
                first: m.offset,
                last: m.offset,
                messages: u64::from(full),
                bytes: m.bytes,
            }),
        }
    }
    let positions = accs
        .iter()
        .map(|a| {
            let detail = serde_json::json!({"topic": a.topic, "partition": a.partition});
            (
                Position {
                    key: key(&a.topic, a.partition),
                    offset: a.last.saturating_add(1),
                    detail: Some(detail.to_string()),
                },
                a.messages,
                a.bytes,
            )
        })
        .collect();
    let next = accs
        .iter()
        .map(|a| (a.topic.clone(), a.partition, a.last.saturating_add(1)))
        .collect();
    Piece {
        pulled: Pulled {
            text,
            origin: origin(&accs),
            first_line: 1,
            positions,
            format: g.format,
        },
        next,
        newest_ms,
    }
}

/// `topic/partition@first-last` of the first partitions of an input.
fn origin(accs: &[Acc]) -> String {
    let mut parts: Vec<String> = accs
        .iter()
        .take(ORIGIN_PARTITIONS)
        .map(|a| {
            if a.first == a.last {
                format!("{}/{}@{}", a.topic, a.partition, a.first)
            } else {
                format!("{}/{}@{}-{}", a.topic, a.partition, a.first, a.last)
            }
        })
        .collect();
    if accs.len() > ORIGIN_PARTITIONS {
        parts.push(format!(
            "+{} more partitions",
            accs.len() - ORIGIN_PARTITIONS
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, partition: i32, offset: i64, text: &str) -> Msg {
        Msg {
            topic: topic.into(),
            partition,
            offset,
            text: text.into(),
            bytes: text.len() as u64,
            time_ms: Some(1_000 + offset),
        }
    }

    #[test]
    fn seam_position_wins_over_where_the_broker_starts() {
        let free = Track::default();
        assert_eq!(
            decide(&free, 42),
            Step::Take,
            "no position: the group decides"
        );
        let strict = Track {
            expected: Some(10),
            strict: true,
            sought: None,
        };
        assert_eq!(decide(&strict, 10), Step::Take);
        assert_eq!(decide(&strict, 3), Step::Skip, "already taken");
        assert_eq!(
            decide(&strict, 15),
            Step::Seek(10),
            "go back to seam's position"
        );
        let sought = Track {
            sought: Some(10),
            ..strict
        };
        assert_eq!(
            decide(&sought, 15),
            Step::Gap { from: 10 },
            "gone from the broker"
        );
        assert_eq!(decide(&sought, 9), Step::Skip);
        let flowing = Track {
            expected: Some(10),
            strict: false,
            sought: None,
        };
        assert_eq!(
            decide(&flowing, 12),
            Step::Hole { from: 10 },
            "transaction markers"
        );
        assert_eq!(decide(&flowing, 9), Step::Skip);
    }

    #[test]
    fn tracker_follows_positions_seeks_and_reassignments() {
        let mut durable = HashMap::new();
        durable.insert(("t".to_string(), 0), 5);
        let mut tr = Tracker::new(&durable);
        assert_eq!(tr.step("t", 0, 3), Step::Skip);
        assert_eq!(tr.step("t", 0, 7), Step::Seek(5));
        tr.sought("t", 0, 5);
        assert_eq!(tr.step("t", 0, 5), Step::Take);
        tr.taken("t", 0, 5);
        assert_eq!(tr.get("t", 0).expected, Some(6));
        assert_eq!(tr.step("t", 0, 8), Step::Hole { from: 6 });
        assert_eq!(
            tr.step("t", 1, 100),
            Step::Take,
            "a partition seam never read"
        );
        tr.reassigned(vec![("t".into(), 0, Some(5)), ("t".into(), 2, None)]);
        assert_eq!(
            tr.step("t", 0, 9),
            Step::Seek(6),
            "the in-memory position is kept"
        );
        assert_eq!(tr.step("t", 0, 6), Step::Take);
        assert_eq!(tr.get("t", 2).expected, None);
        tr.reassigned(vec![("u".into(), 1, Some(30))]);
        assert_eq!(tr.step("u", 1, 31), Step::Seek(30));
        // Revoked, then assigned again at the group's offset (another node stored up to
        // 40): what was taken before is forgotten, the new start is strict.
        tr.forget(&[("t".into(), 0)]);
        assert_eq!(tr.get("t", 0), Track::default());
        tr.reassigned(vec![("t".into(), 0, Some(40))]);
        assert_eq!(tr.step("t", 0, 39), Step::Skip);
        assert_eq!(tr.step("t", 0, 41), Step::Seek(40));
        assert_eq!(tr.step("t", 0, 40), Step::Take);
        // Assigned without a revocation (messages taken, not stored): the further wins.
        tr.taken("t", 0, 40);
        tr.taken("t", 0, 41);
        tr.reassigned(vec![("t".into(), 0, Some(40))]);
        assert_eq!(tr.get("t", 0).expected, Some(42));
    }

    #[test]
    fn one_input_per_batch_with_positions_per_partition() {
        let pieces = build(
            vec![
                msg("gw", 0, 7, r#"{"records":[{"a":1}]}"#),
                msg("gw", 1, 3, "{\"records\":[]}\n"),
                msg("gw", 0, 8, ""),
                msg("ev", 2, 0, r#"{"RequestId":"x"}"#),
                msg("gw", 0, 9, r#"{"records":[{"a":2}]}"#),
            ],
            None,
        );
        assert_eq!(pieces.len(), 1);
        let p = &pieces[0];
        assert_eq!(
            p.pulled.text,
            "{\"records\":[{\"a\":1}]}\n{\"records\":[]}\n{\"RequestId\":\"x\"}\n{\"records\":[{\"a\":2}]}\n"
        );
        assert_eq!(p.pulled.format, None);
        assert_eq!(p.pulled.first_line, 1);
        let keys: Vec<(&str, i64, u64)> = p
            .pulled
            .positions
            .iter()
            .map(|(pos, n, _)| (pos.key.as_str(), pos.offset, *n))
            .collect();
        assert_eq!(keys, vec![("gw/0", 10, 2), ("gw/1", 4, 1), ("ev/2", 1, 1)]);
        let (first, _, bytes) = &p.pulled.positions[0];
        assert_eq!(*bytes, 42);
        let detail: serde_json::Value =
            serde_json::from_str(first.detail.as_deref().unwrap()).unwrap();
        assert_eq!(detail, serde_json::json!({"topic": "gw", "partition": 0}));
        assert_eq!(
            p.next,
            vec![
                ("gw".into(), 0, 10),
                ("gw".into(), 1, 4),
                ("ev".into(), 2, 1)
            ]
        );
        assert_eq!(p.newest_ms, Some(1_009));
        assert_eq!(p.pulled.origin, "gw/0@7-9, gw/1@3, ev/2@0");
    }

    #[test]
    fn empty_payloads_move_the_position_without_text() {
        let pieces = build(vec![msg("t", 0, 4, ""), msg("t", 0, 5, "  ")], None);
        assert_eq!(pieces.len(), 1);
        assert!(pieces[0].pulled.text.is_empty());
        assert_eq!(pieces[0].pulled.positions[0].0.offset, 6);
        assert_eq!(pieces[0].pulled.positions[0].1, 0, "no record in them");
    }

    #[test]
    fn auto_splits_runs_of_different_shapes() {
        fn classify(text: &str) -> Option<PullFormat> {
            match text.as_bytes().first() {
                Some(b'A') => Some(PullFormat::Apim),
                Some(b'M') => Some(PullFormat::Mule),
                _ => None,
            }
        }
        let pieces = build(
            vec![
                msg("t", 0, 0, "?0"),
                msg("t", 0, 1, "A1"),
                msg("t", 1, 0, "A2"),
                msg("t", 0, 2, "M1"),
                msg("t", 0, 3, "?1"),
                msg("t", 1, 1, "M2"),
                msg("t", 0, 4, "A3"),
            ],
            Some(classify),
        );
        type Piece<'a> = (Option<PullFormat>, &'a str, Vec<(String, i64)>);
        let got: Vec<Piece<'_>> = pieces
            .iter()
            .map(|p| {
                (
                    p.pulled.format,
                    p.pulled.text.as_str(),
                    p.pulled
                        .positions
                        .iter()
                        .map(|(pos, _, _)| (pos.key.clone(), pos.offset))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    Some(PullFormat::Apim),
                    "?0\nA1\nA2\n",
                    vec![("t/0".into(), 2), ("t/1".into(), 1)]
                ),
                (
                    Some(PullFormat::Mule),
                    "M1\n?1\nM2\n",
                    vec![("t/0".into(), 4), ("t/1".into(), 2)]
                ),
                (Some(PullFormat::Apim), "A3\n", vec![("t/0".into(), 5)]),
            ]
        );
    }

    #[test]
    fn shapes_of_real_messages() {
        assert_eq!(shape(r#"{"resourceSpans":[]}"#), Some(PullFormat::OtlpJson));
        assert_eq!(
            shape(
                r#"{"records":[{"time":"2024-11-05T10:00:00Z","resourceId":"/SUBSCRIPTIONS/X/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/S","category":"GatewayLogs","operationName":"Microsoft.ApiManagement/GatewayLogs","durationMs":12,"correlationId":"3f1c","properties":{"method":"GET","url":"https://s.azure-api.net/x","responseCode":200}}]}"#
            ),
            Some(PullFormat::Apim)
        );
        assert_eq!(shape("hello"), None);
    }

    #[test]
    fn keys_topics_and_estimates() {
        assert_eq!(
            key("insights-logs-gatewaylogs", 3),
            "insights-logs-gatewaylogs/3"
        );
        assert_eq!(
            parse_key("insights-logs-gatewaylogs/3"),
            Some(("insights-logs-gatewaylogs".into(), 3))
        );
        assert_eq!(parse_key("t/-1"), None);
        assert_eq!(parse_key("t"), None);
        assert_eq!(parse_key("/opt/x.log"), None);
        assert_eq!(parse_key("t/x"), None);
        assert!(valid_topic("apim-custom_events.v1"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic(&"x".repeat(250)));
        assert_eq!(estimate(""), 1);
        assert_eq!(estimate("plain"), 1);
        assert_eq!(estimate("{\"records\":[{},{}]}"), 3);
        assert_eq!(estimate("a\nb\n"), 2);
    }
}
