//! A generator of end-to-end traffic with known truth, for the correlation tests and the
//! correlation benchmark.
//!
//! Takes a seed, a request count and a start time; gives the inputs seam ingests (APIM
//! storage JSON Lines, custom gateway events, Mule JSON Logger lines, OTLP/JSON spans) and,
//! per request, what `requests` must say about it. The mix: successes through the gateway
//! (with and without spans), bypasses, denials by the gateway, the integration and the
//! backend, successes with an expired token, one token shared by two client addresses,
//! parallel backend calls (the union counts once), gateway records delivered late and twice,
//! and requests linked by trace id only (the gateway did not forward a correlation id).

use serde_json::{Value, json};

/// What a generated request must become.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// `requests.request_id`.
    pub request_id: String,
    /// Mule correlation id, when Mule saw it.
    pub mule_correlation_id: Option<String>,
    /// Kind of request (for messages).
    pub kind: &'static str,
    /// `status_code`.
    pub status: i32,
    /// `rejected_by`.
    pub rejected_by: Option<&'static str>,
    /// `bypassed_gateway`.
    pub bypass: bool,
    /// `token_expired` and succeeded.
    pub expired_success: bool,
    /// `token_id`.
    pub token_id: String,
    /// `backend_ms`, when known.
    pub backend_ms: Option<f64>,
    /// `gateway_ms`, when a gateway record exists.
    pub gateway_ms: Option<f64>,
    /// `integration_ms`, when Mule saw it.
    pub integration_ms: Option<f64>,
}

/// Generated inputs.
#[derive(Debug, Default)]
pub struct Traffic {
    /// APIM storage-archive lines (sent first, minus the late ones).
    pub gateway_lines: Vec<String>,
    /// Gateway records delivered late (after everything else), in a `{"records":[…]}` body.
    pub late_gateway: Vec<Value>,
    /// Custom gateway events (JSON lines).
    pub events: Vec<String>,
    /// Mule JSON Logger lines.
    pub mule_lines: Vec<String>,
    /// OTLP/JSON `ExportTraceServiceRequest` bodies.
    pub otlp: Vec<Value>,
    /// The truth, one per request.
    pub truth: Vec<Truth>,
    /// The token shared by two client addresses.
    pub shared_token: String,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::new();
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn iso(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MS: i64 = 1_000_000;
const MULE_APP: &str = "gen-papi";
const BACKEND: &str = "gen-sapi";

fn attr(k: &str, v: &str) -> Value {
    json!({"key": k, "value": {"stringValue": v}})
}

/// One generated span.
struct SpanSpec<'a> {
    trace: &'a str,
    id: &'a str,
    parent: Option<&'a str>,
    name: &'a str,
    kind: i32,
    start: i64,
    end: i64,
    attrs: Vec<Value>,
    error: bool,
}

fn span(s: SpanSpec<'_>) -> Value {
    json!({
        "traceId": s.trace, "spanId": s.id, "parentSpanId": s.parent.unwrap_or(""),
        "name": s.name, "kind": s.kind, "startTimeUnixNano": s.start.to_string(),
        "endTimeUnixNano": s.end.to_string(), "attributes": s.attrs,
        "status": {"code": if s.error { 2 } else { 0 }}
    })
}

fn resource_spans(service: &str, scope: &str, spans: Vec<Value>) -> Value {
    json!({
        "resource": {"attributes": [attr("service.name", service)]},
        "scopeSpans": [{"scope": {"name": scope, "version": "1.0.0"}, "spans": spans}]
    })
}

/// Generates `n` requests starting at `start_ns`, one every `gap_ms` milliseconds.
pub fn generate(seed: u64, n: usize, start_ns: i64, gap_ms: i64) -> Traffic {
    let mut rng = Rng(seed | 1);
    let mut t = Traffic {
        shared_token: "uti:gen-shared-token".into(),
        ..Default::default()
    };
    let mut mule_spans: Vec<Value> = Vec::new();
    let mut backend_spans: Vec<Value> = Vec::new();
    for i in 0..n {
        let t0 = start_ns + i as i64 * gap_ms * MS;
        let kind = match i % 10 {
            0 => "bypass",
            1 => "gateway_denial",
            2 => "integration_denial",
            3 => "backend_denial",
            4 => "expired_success",
            5 => "parallel",
            6 => "trace_only",
            7 => "shared_token",
            8 => "no_spans",
            _ => "ok",
        };
        let apim = rng.uuid();
        let trace = rng.hex(32);
        let uti = if kind == "shared_token" {
            "gen-shared-token".to_string()
        } else {
            format!("gen-{}", rng.hex(12))
        };
        let token_id = format!("uti:{uti}");
        let exp_s = if kind == "expired_success" {
            t0 / 1_000_000_000 - 600
        } else {
            t0 / 1_000_000_000 + 3600
        };
        let client_ip = if kind == "shared_token" {
            format!("192.0.2.{}", 10 + (i / 10) % 2)
        } else {
            format!("203.0.113.{}", rng.below(200) + 1)
        };
        let caller = json!({"uti": uti, "azp": "gen-client", "tid": "gen-tenant", "exp": exp_s});
        let has_gateway = kind != "bypass";
        let reaches_mule = kind != "gateway_denial";
        // Mule's correlation id: the gateway's, except without forwarding.
        let mule_cid = if kind == "bypass" || kind == "trace_only" {
            rng.uuid()
        } else {
            apim.clone()
        };
        // Timings (ms).
        let gw_overhead = 5 + rng.below(20) as i64;
        let network = 3 + rng.below(10) as i64;
        let own = 10 + rng.below(40) as i64;
        let (call_a, call_b) = (20 + rng.below(80) as i64, 20 + rng.below(80) as i64);
        let parallel = kind == "parallel";
        let downstream = if parallel {
            // Two calls started together: the union is the longer.
            call_a.max(call_b)
        } else {
            call_a
        };
        let flow_ms = own + downstream;
        let backend_time = flow_ms + network;
        let total = backend_time + gw_overhead;
        let (status, backend_status, rejected_by): (i32, Option<i32>, Option<&'static str>) =
            match kind {
                "gateway_denial" => (401, None, Some("gateway")),
                "integration_denial" => (500, Some(500), Some("integration")),
                "backend_denial" => (403, Some(403), Some("backend")),
                _ => (200, Some(200), None),
            };
        let mule_start = t0 + (gw_overhead / 2) * MS;
        let with_spans = kind != "no_spans" && reaches_mule;
        let mule_span = rng.hex(16);
        if has_gateway {
            let mut props = json!({
                "method": "GET", "url": format!("https://gen-apim.azure-api.net/gen/v1/items/{i}"),
                "responseCode": status, "apiId": "gen-api", "operationId": "get-item",
                "apimSubscriptionId": "gen-sub",
                "requestHeaders": {"traceparent": format!("00-{trace}-{}-01", rng.hex(16))},
            });
            if reaches_mule {
                props["backendResponseCode"] = json!(backend_status);
                props["backendTime"] = json!(backend_time);
                let mut bh = json!({"traceparent": format!("00-{trace}-{}-01", rng.hex(16))});
                if kind != "trace_only" {
                    bh["X-Correlation-ID"] = json!(apim);
                }
                props["backendRequestHeaders"] = bh;
            } else {
                props["lastError"] = json!({"source": "validate-jwt", "reason": "TokenNotPresent", "section": "inbound"});
            }
            let rec = json!({
                "time": iso(t0), "resourceId": "/SUBSCRIPTIONS/G/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/GEN-APIM",
                "category": "GatewayLogs", "operationName": "Microsoft.ApiManagement/GatewayLogs",
                "durationMs": total, "callerIpAddress": client_ip, "correlationId": apim,
                "properties": props
            });
            // Every fifth gateway record comes late; every seventh also comes twice.
            if i % 5 == 1 {
                t.late_gateway.push(rec.clone());
            } else {
                t.gateway_lines.push(rec.to_string());
            }
            if i % 7 == 3 {
                t.late_gateway.push(rec);
            }
            t.events.push(
                json!({"EventTime": iso(t0 + total * MS), "ServiceName": "gen-apim.azure-api.net",
                       "RequestId": apim, "StatusCode": status, "Section": "outbound",
                       "Jwt": caller.clone()})
                .to_string(),
            );
        }
        if reaches_mule {
            let remote = if has_gateway {
                "/198.51.100.23:40000".to_string()
            } else {
                "/10.20.4.17:50000".to_string()
            };
            let mut content = json!({"method": "GET", "requestPath": format!("/api/items/{i}"), "remoteAddress": remote});
            content["caller"] = caller.clone();
            let line = |tp: &str, at: i64, elapsed: i64, content: Value| {
                json!({"correlationId": mule_cid, "tracePoint": tp, "priority": "INFO",
                       "elapsed": elapsed, "message": tp, "timestamp": iso(at),
                       "locationInfo": {"rootContainer": "gen-main", "fileName": "gen.xml", "lineInFile": "1"},
                       "applicationName": MULE_APP, "content": content})
                .to_string()
            };
            t.mule_lines.push(line("START", mule_start, 0, content));
            if !with_spans {
                // Downstream evidence from JSON Logger alone.
                let at = mule_start + (own / 2 + downstream) * MS;
                t.mule_lines.push(line(
                    "AFTER_REQUEST",
                    at,
                    own / 2 + downstream,
                    json!({"statusCode": backend_status, "durationMs": downstream}),
                ));
            }
            let end_status = if kind == "integration_denial" || kind == "backend_denial" {
                status
            } else {
                200
            };
            let mut end = json!({"statusCode": end_status});
            if kind == "backend_denial" {
                end["errorType"] = json!("HTTP:FORBIDDEN");
            }
            t.mule_lines
                .push(line("END", mule_start + flow_ms * MS, flow_ms, end));
            if with_spans {
                let mut attrs = vec![attr("correlation.id", &mule_cid)];
                attrs.push(attr("http.status_code", &end_status.to_string()));
                let server_parent = if has_gateway { Some(rng.hex(16)) } else { None };
                mule_spans.push(span(SpanSpec {
                    trace: &trace,
                    id: &mule_span,
                    parent: server_parent.as_deref(),
                    name: "GET /api/*",
                    kind: 2,
                    start: mule_start,
                    end: mule_start + flow_ms * MS,
                    attrs,
                    error: kind == "integration_denial",
                }));
                let calls: Vec<i64> = if parallel {
                    vec![call_a, call_b]
                } else {
                    vec![call_a]
                };
                for (k, dur) in calls.into_iter().enumerate() {
                    let cid = rng.hex(16);
                    let cs = mule_start + (own / 2) * MS;
                    let code = if kind == "backend_denial" { 403 } else { 200 };
                    mule_spans.push(span(SpanSpec {
                        trace: &trace,
                        id: &cid,
                        parent: Some(&mule_span),
                        name: "GET",
                        kind: 3,
                        start: cs,
                        end: cs + dur * MS,
                        attrs: vec![attr("http.status_code", &code.to_string())],
                        error: code >= 400,
                    }));
                    let backend_id = rng.hex(16);
                    let name = format!("GET /stock/{k}");
                    backend_spans.push(span(SpanSpec {
                        trace: &trace,
                        id: &backend_id,
                        parent: Some(&cid),
                        name: &name,
                        kind: 2,
                        start: cs + MS,
                        end: cs + (dur - 1) * MS,
                        attrs: vec![attr("http.response.status_code", &code.to_string())],
                        error: false,
                    }));
                }
            }
        }
        let request_id = if has_gateway {
            apim.clone()
        } else {
            mule_cid.clone()
        };
        t.truth.push(Truth {
            request_id,
            mule_correlation_id: reaches_mule.then(|| mule_cid.clone()),
            kind,
            status,
            rejected_by,
            bypass: kind == "bypass",
            expired_success: kind == "expired_success",
            token_id,
            backend_ms: reaches_mule.then_some(downstream as f64),
            gateway_ms: has_gateway.then_some(if reaches_mule {
                gw_overhead as f64
            } else {
                total as f64
            }),
            integration_ms: reaches_mule.then_some(own as f64),
        });
        if mule_spans.len() >= 300 || i + 1 == n {
            t.otlp.push(json!({"resourceSpans": [
                resource_spans(MULE_APP, "mule-tracer", std::mem::take(&mut mule_spans)),
                resource_spans(BACKEND, "io.opentelemetry.java", std::mem::take(&mut backend_spans)),
            ]}));
        }
    }
    t
}
