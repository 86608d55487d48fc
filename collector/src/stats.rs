//! Ingest statistics per minute, source and signal: counted as requests are answered, and
//! turned into rows of the `ingest_stats` table for every minute that has ended.
//!
//! Takes one update per request; gives `RecordBatch`es in the `ingest_stats` schema. Memory
//! is bounded by the number of minutes not yet emitted times sources times signals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use seam_schemas::tables::ingest_stats;

const MINUTE_NS: i64 = 60_000_000_000;

/// Counts of one minute, source and signal.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    /// Requests answered.
    pub requests: i64,
    /// Requests refused as a whole.
    pub refused_requests: i64,
    /// Records received.
    pub received: i64,
    /// Records stored.
    pub accepted: i64,
    /// Records refused.
    pub rejected: i64,
    /// Records recognised as duplicates.
    pub duplicates: i64,
    /// Sum of lags (ms) of accepted records.
    pub lag_sum_ms: f64,
    /// Largest lag (ms).
    pub lag_max_ms: Option<f64>,
}

/// The aggregator.
#[derive(Debug, Default)]
pub struct IngestStats {
    minutes: Mutex<BTreeMap<(i64, &'static str, &'static str), Counts>>,
}

/// One answered ingest request, as both `ingest_stats` and the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// When it was accepted (decides the `ingest_stats` minute).
    pub at_ns: i64,
    /// The `ingest_stats` source (`otlp_grpc`, `otlp_http`, `apim`, `mule`, ...).
    pub source: &'static str,
    /// The signal (`spans`, `logs`, `gateway_logs`, `flow_logs`).
    pub signal: &'static str,
    /// The transport label of the metrics (`grpc`, `http`).
    pub transport: &'static str,
    /// The figures.
    pub counts: Counts,
    /// Why the whole request was refused (the metric `reason`/`outcome` label), if it was.
    pub refused: Option<&'static str>,
}

impl IngestStats {
    /// Counts one answered request in both places that report ingest, from the same figures:
    /// the `ingest_stats` minute and the `seam_records_*`/`seam_ingest_requests_total`
    /// metrics. Every ingest path reports through here, so the two never disagree.
    pub fn answered(&self, a: Answered) {
        use crate::telemetry::{
            self, RECORDS_ACCEPTED, RECORDS_RECEIVED, RECORDS_REJECTED, REQUESTS,
        };
        self.record(a.at_ns, a.source, a.signal, a.counts);
        let c = &a.counts;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let l = [("signal", a.signal), ("transport", a.transport)];
        telemetry::add(RECORDS_RECEIVED, &l, n(c.received));
        if a.refused.is_none() {
            telemetry::add(RECORDS_ACCEPTED, &l, n(c.accepted));
        }
        if c.rejected > 0 {
            let reason = a.refused.unwrap_or("invalid_record");
            let l = [
                ("signal", a.signal),
                ("transport", a.transport),
                ("reason", reason),
            ];
            telemetry::add(RECORDS_REJECTED, &l, n(c.rejected));
        }
        let outcome = a
            .refused
            .unwrap_or(if c.rejected > 0 { "partial" } else { "ok" });
        let l = [
            ("signal", a.signal),
            ("transport", a.transport),
            ("outcome", outcome),
        ];
        telemetry::add(REQUESTS, &l, 1);
    }

    /// Adds one request's figures; `ingest_ns` decides the minute.
    pub fn record(&self, ingest_ns: i64, source: &'static str, signal: &'static str, c: Counts) {
        let minute = ingest_ns.div_euclid(MINUTE_NS) * MINUTE_NS;
        let Ok(mut m) = self.minutes.lock() else {
            return;
        };
        let e = m.entry((minute, source, signal)).or_default();
        e.requests += c.requests;
        e.refused_requests += c.refused_requests;
        e.received += c.received;
        e.accepted += c.accepted;
        e.rejected += c.rejected;
        e.duplicates += c.duplicates;
        e.lag_sum_ms += c.lag_sum_ms;
        e.lag_max_ms = match (e.lag_max_ms, c.lag_max_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Takes the minutes that ended before `now_ns` (all of them with `all`) as a batch.
    ///
    /// # Errors
    /// Never in practice (the arrays match the schema); Arrow's error otherwise.
    pub fn take(&self, now_ns: i64, all: bool) -> Result<Option<RecordBatch>, ArrowError> {
        let current = now_ns.div_euclid(MINUTE_NS) * MINUTE_NS;
        let rows: Vec<((i64, &str, &str), Counts)> = {
            let Ok(mut m) = self.minutes.lock() else {
                return Ok(None);
            };
            let keep = if all {
                BTreeMap::new()
            } else {
                m.split_off(&(current, "", ""))
            };
            std::mem::replace(&mut *m, keep).into_iter().collect()
        };
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let i64s = |f: fn(&Counts) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from(
                rows.iter().map(|(_, c)| f(c)).collect::<Vec<_>>(),
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampNanosecondArray::from(
                    rows.iter().map(|((m, _, _), _)| *m).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(TimestampNanosecondArray::from(vec![now_ns; n]).with_timezone("UTC")),
            Arc::new(StringArray::from(
                rows.iter().map(|((_, s, _), _)| *s).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|((_, _, g), _)| *g).collect::<Vec<_>>(),
            )),
            i64s(|c| c.requests),
            i64s(|c| c.refused_requests),
            i64s(|c| c.received),
            i64s(|c| c.accepted),
            i64s(|c| c.rejected),
            i64s(|c| c.duplicates),
            Arc::new(Float64Array::from(
                rows.iter()
                    .map(|(_, c)| (c.accepted > 0).then(|| c.lag_sum_ms / c.accepted as f64))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                rows.iter().map(|(_, c)| c.lag_max_ms).collect::<Vec<_>>(),
            )),
        ];
        RecordBatch::try_new(ingest_stats::schema(), columns).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_close_and_aggregate() {
        let s = IngestStats::default();
        let c = Counts {
            requests: 1,
            received: 3,
            accepted: 2,
            rejected: 1,
            lag_sum_ms: 10.0,
            lag_max_ms: Some(7.0),
            ..Default::default()
        };
        s.record(MINUTE_NS * 10 + 5, "otlp_http", "spans", c);
        s.record(MINUTE_NS * 10 + 9, "otlp_http", "spans", c);
        s.record(MINUTE_NS * 11 + 1, "otlp_http", "spans", c);
        let b = s.take(MINUTE_NS * 11 + 2, false).unwrap().unwrap();
        assert_eq!(b.num_rows(), 1, "the current minute stays open");
        let accepted = b.column(7).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(accepted.value(0), 4);
        let lag = b
            .column(10)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(lag.value(0), 5.0);
        assert!(s.take(MINUTE_NS * 11 + 3, false).unwrap().is_none());
        assert_eq!(
            s.take(MINUTE_NS * 11 + 3, true)
                .unwrap()
                .unwrap()
                .num_rows(),
            1
        );
    }
}
