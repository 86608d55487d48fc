//! Seeded generators shared by seam's benchmarks: realistic OTLP payloads (random 16-byte
//! trace ids and 8-byte span ids, UUID-like correlation ids, attribute sets like the
//! samples' (`tests/fixtures`) Mule and client spans). Deterministic for a given seed, no external RNG crate.

pub mod loadgen;
pub mod querybench;
pub mod traffic;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// A small, fast, seeded generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A UUID-shaped random id.
    pub fn uuid(&mut self) -> String {
        uuid_of(&self.bytes(16))
    }
}

/// 16 bytes as a UUID-shaped text.
fn uuid_of(b: &[u8]) -> String {
    let h = hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A trace export request of `spans` spans in batches shaped like a Mule runtime's export:
/// one resource, one scope, server/flow/requester spans with the legacy HTTP attributes.
pub fn trace_request(rng: &mut Rng, spans: usize) -> ExportTraceServiceRequest {
    let base = 1_730_798_043_000_000_000u64;
    let spans = (0..spans)
        .map(|i| {
            let start = base + i as u64 * 1_000_000;
            let corr = rng.uuid();
            let status = if i % 10 == 0 { "401" } else { "200" };
            Span {
                trace_id: rng.bytes(16),
                span_id: rng.bytes(8),
                parent_span_id: rng.bytes(8),
                name: "GET /api/*".into(),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 160_000_000,
                attributes: vec![
                    kv("correlation.id", &corr),
                    kv("location", "orders-papi-main"),
                    kv("thread.start.id", "118"),
                    kv("thread.start.name", "[MuleRuntime].uber.03: [orders-papi-prd].orders-papi-main.CPU_LITE @4f1a2b3c"),
                    kv("http.method", "GET"),
                    kv("http.flavor", "1.1"),
                    kv("http.target", "/api/orders/ORD-1001"),
                    kv("http.route", "/api/*"),
                    kv("http.scheme", "http"),
                    kv("http.user_agent", "acme-erp-connector/4.2.1 Java-http-client/17.0.9"),
                    kv("http.status_code", status),
                    kv("http.request.header.authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
                ],
                status: Some(Status::default()),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "orders-papi-prd"),
                    kv("telemetry.sdk.language", "java"),
                    kv("telemetry.sdk.name", "opentelemetry"),
                    kv("telemetry.sdk.version", "1.43.0"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "mule-tracer".into(),
                    version: "1.0.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A request body whose ids [`Template::fill`] replaces, so that every request carries new
/// records: UUID-shaped text (gateway and flow logs are deduplicated by content) and, in
/// OTLP protobuf bodies, the raw trace and span ids (so that Parquet sees realistic,
/// incompressible ids rather than the same few requests again).
#[derive(Debug, Clone)]
pub struct Template {
    body: Vec<u8>,
    /// (byte offset, index of the distinct original id).
    slots: Vec<(usize, usize)>,
    /// Per distinct id: `None` for a 36-character UUID, `Some(n)` for `n` raw bytes.
    groups: Vec<Option<usize>>,
    /// Records (APIM), lines (Mule) or spans (OTLP) in the body.
    pub records: usize,
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl Template {
    /// Finds every UUID in `body`; equal ids share a group (stay equal after a fill).
    pub fn new(body: Vec<u8>, records: usize) -> Self {
        let mut slots = Vec::new();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let mut i = 0;
        while i + 36 <= body.len() {
            if is_uuid(&body[i..i + 36]) {
                let id = body[i..i + 36].to_vec();
                let g = match ids.iter().position(|x| *x == id) {
                    Some(g) => g,
                    None => {
                        ids.push(id);
                        ids.len() - 1
                    }
                };
                slots.push((i, g));
                i += 36;
            } else {
                i += 1;
            }
        }
        Self {
            body,
            slots,
            groups: vec![None; ids.len()],
            records,
        }
    }

    /// An OTLP protobuf body with its spans' trace, span and parent ids (raw bytes, found in
    /// the encoding) and UUID-shaped attribute values as slots.
    pub fn otlp(req: &ExportTraceServiceRequest) -> Self {
        let body = prost::Message::encode_to_vec(req);
        let mut t = Self::new(body, 0);
        let mut raw: Vec<Vec<u8>> = Vec::new();
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    t.records += 1;
                    for id in [&sp.trace_id, &sp.span_id, &sp.parent_span_id] {
                        if id.len() >= 8 && !raw.contains(id) {
                            raw.push(id.clone());
                        }
                    }
                }
            }
        }
        for id in raw {
            let g = t.groups.len();
            t.groups.push(Some(id.len()));
            let mut from = 0;
            while let Some(p) = t.body[from..]
                .windows(id.len())
                .position(|w| w == id.as_slice())
            {
                t.slots.push((from + p, g));
                from += p + id.len();
            }
        }
        t
    }

    /// The body with fresh ids (unique for each `counter`).
    pub fn fill(&self, rng: &mut Rng, counter: u64) -> Vec<u8> {
        let mut out = self.body.clone();
        let fresh: Vec<Vec<u8>> = self
            .groups
            .iter()
            .enumerate()
            .map(|(g, kind)| match kind {
                None => {
                    let mut b = rng.bytes(16);
                    b[..8].copy_from_slice(&counter.to_be_bytes());
                    b[8] = g as u8;
                    b[9] = (g >> 8) as u8;
                    uuid_of(&b).into_bytes()
                }
                Some(n) => rng.bytes(*n),
            })
            .collect();
        for (off, g) in &self.slots {
            let f = &fresh[*g];
            out[*off..*off + f.len()].copy_from_slice(f);
        }
        out
    }

    /// The body as generated.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// The sample inputs, `tests/fixtures` in the repository.
pub fn samples_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// `records` APIM storage-archive lines (the sample's records, each with its own
/// correlation id).
pub fn apim_template(rng: &mut Rng, records: usize) -> std::io::Result<Template> {
    let text = std::fs::read_to_string(samples_dir().join("apim-gatewaylogs-storage.jsonl"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = String::new();
    for i in 0..records {
        let l = lines[i % lines.len()];
        // Give each record its own id so the template has one group per record.
        let id = rng.uuid();
        let line = match l.find("\"correlationId\": \"") {
            Some(p) => {
                let start = p + "\"correlationId\": \"".len();
                format!("{}{id}{}", &l[..start], &l[start + 36..])
            }
            None => l.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Ok(Template::new(out.into_bytes(), records))
}

/// The Mule log4j sample repeated to at least `lines` lines (ids per copy kept distinct).
pub fn mule_template(rng: &mut Rng, lines: usize) -> std::io::Result<Template> {
    let one = std::fs::read_to_string(samples_dir().join("mule-log4j.log"))?;
    let per = one.lines().count().max(1);
    let mut out = String::new();
    let mut n = 0;
    while n < lines {
        // Each copy gets new ids so that copies are not duplicates of each other.
        let t = Template::new(one.clone().into_bytes(), per);
        out.push_str(&String::from_utf8_lossy(&t.fill(rng, n as u64)));
        n += per;
    }
    Ok(Template::new(out.into_bytes(), n))
}
