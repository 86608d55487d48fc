//! The collector's side of pulled sources: one [`Pulled`] input decoded in its format and
//! stored with its positions in one write-ahead log entry.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use seam_schemas::columns::{INGEST_TIME, RAW, RECORD_KEY, SOURCE, TIME};
use seam_schemas::tables::rejects;
use seam_store::rows::{self, Cell, Columns};

use super::{PullFormat, Pulled};
use crate::Collector;
use crate::decode::json_stream::{Piece, pieces};
use crate::error::IngestError;
use crate::normalise::json::{InputMeta, key_of};
use crate::sources::logs::{AccessInput, AccessOutcome, AccessSource, sniff};
use crate::sources::otlp::decode_json;

/// Longest text of a refused input kept in `rejects.raw`.
const MAX_RAW: usize = 4096;

/// Which way a text goes.
enum Route {
    Access(AccessSource),
    Otlp,
}

/// True when `text` looks like OTLP/JSON export requests.
pub(crate) fn looks_otlp(text: &str) -> bool {
    let head = &text[..text.floor_char_boundary(text.len().min(4096))];
    head.trim_start().starts_with('{')
        && (head.contains("\"resourceSpans\"")
            || head.contains("\"resourceLogs\"")
            || head.contains("\"resource_spans\"")
            || head.contains("\"resource_logs\""))
}

fn route(text: &str, format: PullFormat) -> Result<Route, IngestError> {
    match format {
        PullFormat::Apim => Ok(Route::Access(AccessSource::Apim)),
        PullFormat::Mule => Ok(Route::Access(AccessSource::Mule)),
        PullFormat::OtlpJson => Ok(Route::Otlp),
        PullFormat::Auto if looks_otlp(text) => Ok(Route::Otlp),
        PullFormat::Auto => sniff(text).map(Route::Access).ok_or_else(|| {
            IngestError::UnknownFormat(
                "the input is in no known format (OTLP/JSON, APIM gateway logs or events, Mule logs)"
                    .into(),
            )
        }),
    }
}

impl Collector {
    /// Stores the records of `p` (decoded as `format`, or by `mapping` when given; `app` and
    /// `service` name records that do not name theirs) together with `extra` batches (its
    /// `source_positions` rows) in one write-ahead log entry; counted in `ingest_stats` as
    /// source `label.0` over transport `label.1`.
    ///
    /// # Errors
    /// As [`Collector::ingest_access`]; [`IngestError::UnknownFormat`] when `auto` finds no
    /// known format.
    pub async fn ingest_pulled(
        self: &Arc<Self>,
        p: &Pulled,
        format: PullFormat,
        mapping: Option<Arc<crate::mapping::Mapping>>,
        (app, service): (Option<String>, Option<String>),
        extra: Vec<(&'static str, RecordBatch)>,
        label: (&'static str, &'static str),
    ) -> Result<AccessOutcome, IngestError> {
        self.check_open()?;
        let route = if mapping.is_some() {
            Route::Access(AccessSource::Apim)
        } else {
            route(&p.text, format)?
        };
        match route {
            Route::Access(source) => {
                let input = AccessInput {
                    source,
                    text: p.text.clone(),
                    first_line: p.first_line.max(1),
                    first_index: 0,
                    format: None,
                    mapping,
                    meta: InputMeta {
                        file: Some(p.origin.clone()),
                        app,
                        service,
                        // The format is the source's (or was detected for this input): a
                        // bad first record is refused alone, the rest kept.
                        lenient_start: true,
                        ..Default::default()
                    },
                };
                self.ingest_access_inner(move || Ok(input), extra, Some(label))
                    .await
            }
            Route::Otlp => self.otlp_pulled(p, extra, label).await,
        }
    }

    /// OTLP/JSON export requests, one JSON document after another: spans in one entry, log
    /// records in another; the positions go with the last entry written, so a crash between
    /// the two re-reads the input (only its spans could then be stored twice).
    async fn otlp_pulled(
        &self,
        p: &Pulled,
        extra: Vec<(&'static str, RecordBatch)>,
        label: (&'static str, &'static str),
    ) -> Result<AccessOutcome, IngestError> {
        let mut traces = ExportTraceServiceRequest::default();
        let mut logs = ExportLogsServiceRequest::default();
        let mut refused: Vec<(u64, String, &str)> = Vec::new();
        for piece in pieces(&p.text, p.first_line.max(1)) {
            let (line, raw) = match piece {
                Piece::Json { line, raw, .. } => (line, raw),
                Piece::Text { line, text } if text.trim().is_empty() => {
                    let _ = line;
                    continue;
                }
                Piece::Text { line, text } => {
                    refused.push((line, "not a JSON document".into(), text));
                    continue;
                }
                Piece::Bad { line, text, reason } => {
                    refused.push((line, format!("not a JSON document: {reason}"), text));
                    continue;
                }
            };
            if raw.contains("\"resourceLogs\"") || raw.contains("\"resource_logs\"") {
                match decode_json::decode::<ExportLogsServiceRequest>(raw.as_bytes(), "logs") {
                    Ok(r) => logs.resource_logs.extend(r.resource_logs),
                    Err(e) => refused.push((line, e.to_string(), raw)),
                }
            } else {
                match decode_json::decode::<ExportTraceServiceRequest>(raw.as_bytes(), "traces") {
                    Ok(r) => traces.resource_spans.extend(r.resource_spans),
                    Err(e) => refused.push((line, e.to_string(), raw)),
                }
            }
        }
        let mut extra = extra;
        if let Some((line, e, _)) = refused.first() {
            tracing::debug!(source = label.0, refused = refused.len(), first = %e, line, "Refused OTLP/JSON documents of a pulled input.");
            extra.push((
                rejects::TABLE,
                self.pulled_rejects(label.0, &p.origin, &refused)?,
            ));
        }
        let mut out = AccessOutcome {
            rejected: refused.len() as u64,
            ..Default::default()
        };
        let has_logs = !logs.resource_logs.is_empty();
        let mut extra = Some(extra);
        if !traces.resource_spans.is_empty() || !has_logs {
            let with = if has_logs {
                Vec::new()
            } else {
                extra.take().unwrap_or_default()
            };
            let o = self.traces_with(traces, label, with).await?;
            out.accepted += o.accepted;
            out.rejected += o.rejected;
        }
        if has_logs {
            let o = self
                .logs_with(logs, label, extra.take().unwrap_or_default())
                .await?;
            out.accepted += o.accepted;
            out.rejected += o.rejected;
        }
        Ok(out)
    }

    /// The `rejects` rows of refused pieces of a pulled input: (line, reason, text).
    fn pulled_rejects(
        &self,
        name: &str,
        origin: &str,
        refused: &[(u64, String, &str)],
    ) -> Result<RecordBatch, IngestError> {
        let now = crate::now_ns();
        let cols = Columns::new(rejects::schema());
        let built: Vec<_> = refused
            .iter()
            .map(|(line, reason, text)| {
                let mut raw = self.normaliser.tokens.scrub(text).text;
                let _ = seam_store::truncate(&mut raw, MAX_RAW);
                let key = key_of(&["pulled", name, origin, &line.to_string(), reason]);
                let mut row = cols.row();
                cols.set(&mut row, TIME, Cell::Ts(now));
                cols.set(&mut row, INGEST_TIME, Cell::Ts(now));
                cols.set(&mut row, RECORD_KEY, Cell::Str(key));
                cols.set(&mut row, SOURCE, Cell::Str(name.to_string()));
                cols.set(&mut row, rejects::FILE, Cell::Str(origin.to_string()));
                cols.set(
                    &mut row,
                    rejects::LINE,
                    Cell::I64(i64::try_from(*line).unwrap_or(i64::MAX)),
                );
                cols.set(&mut row, rejects::REASON, Cell::Str(reason.clone()));
                cols.set(&mut row, RAW, Cell::Str(raw));
                row
            })
            .collect();
        rows::batch(&cols, &built)
            .map_err(|e| IngestError::Internal(format!("the refusal could not be stored: {e}")))
    }

    /// Stores one `rejects` row for a pulled input that can never be stored as it is (no
    /// known format, too many records), with the positions after it, in one entry.
    ///
    /// # Errors
    /// The retryable errors of the write-ahead log.
    pub async fn reject_pulled(
        &self,
        p: &Pulled,
        reason: &str,
        name: &str,
        kind: &str,
    ) -> Result<(), IngestError> {
        let batch = self.pulled_rejects(
            name,
            &p.origin,
            &[(
                p.first_line.max(1),
                format!("{kind} source {name}: {reason}"),
                p.text.as_str(),
            )],
        )?;
        let positions = super::positions_batch(name, kind, &p.positions)
            .map_err(|e| IngestError::Internal(e.to_string()))?;
        self.wal
            .append_all(vec![
                (rejects::TABLE, batch),
                (seam_schemas::tables::source_positions::TABLE, positions),
            ])
            .await?;
        Ok(())
    }

    /// Appends rows to `table` through the write-ahead log (a source's positions alone).
    ///
    /// # Errors
    /// The retryable errors of the write-ahead log.
    pub async fn append_rows(
        &self,
        table: &'static str,
        batch: RecordBatch,
    ) -> Result<(), IngestError> {
        Ok(self.wal.append(table, batch).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_first_record_of_a_pulled_input_is_refused_alone() {
        use crate::sources::apim::decode::{self as apim, ApimItem};
        use crate::sources::mule::decode::{self as mule, MuleItem};
        let rec = r#"{"time":"2024-11-05T09:14:03Z","category":"GatewayLogs","correlationId":"c1","properties":{"apiId":"a","responseCode":200}}"#;
        let text = format!("this is not json\n{rec}\n");
        assert!(matches!(
            apim::decode(&text, 1),
            Err(IngestError::UnknownFormat(_))
        ));
        let items = apim::decode_with(&text, 1, false).unwrap();
        assert!(matches!(items[0], ApimItem::Reject { .. }), "{items:?}");
        assert!(matches!(items[1], ApimItem::Gateway { .. }), "{items:?}");

        let line = "INFO  2024-11-05 09:14:03,127 [[MuleRuntime].uber.03: [orders-papi].orders-papi-main.CPU_LITE @4f1a2b3c] [processor: orders-papi-main/processors/0; event: 8d0c3f5e-2a41-4b7e-9c61-3f2e8a9d1b07] org.mule.runtime.core.internal.processor.LoggerMessageProcessor: hello";
        let json = r#"{"correlationId":"c2","message":"m","tracePoint":"START","priority":"INFO","timestamp":"2024-11-05T09:15:12.891Z"}"#;
        for good in [line, json] {
            let text = format!("    at com.acme.Foo.bar(Foo.java:42)\n{good}\n");
            assert!(mule::decode(&text, 1).is_err(), "{text}");
            let items = mule::decode_with(&text, 1, false).unwrap();
            assert!(matches!(items[0], MuleItem::Reject { .. }), "{items:?}");
            assert!(matches!(items[1], MuleItem::Event(_)), "{items:?}");
        }
    }

    #[test]
    fn otlp_is_recognised_by_its_keys() {
        assert!(looks_otlp(r#"{"resourceSpans":[]}"#));
        assert!(looks_otlp("  {\"resourceLogs\": []}\n"));
        assert!(!looks_otlp(r#"{"records":[{"resourceId":"/X"}]}"#));
        assert!(!looks_otlp("INFO 2024-11-05 ..."));
        assert!(matches!(
            route("hello", PullFormat::Auto),
            Err(IngestError::UnknownFormat(_))
        ));
        assert!(matches!(
            route("hello", PullFormat::Mule),
            Ok(Route::Access(AccessSource::Mule))
        ));
    }
}
