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
    /// Stores the records of `p` (decoded as `format`) together with `extra` batches (its
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
        app: Option<String>,
        service: Option<String>,
        extra: Vec<(&'static str, RecordBatch)>,
        label: (&'static str, &'static str),
    ) -> Result<AccessOutcome, IngestError> {
        self.check_open()?;
        match route(&p.text, format)? {
            Route::Access(source) => {
                let input = AccessInput {
                    source,
                    text: p.text.clone(),
                    first_line: p.first_line.max(1),
                    first_index: 0,
                    format: None,
                    meta: InputMeta {
                        file: Some(p.origin.clone()),
                        app,
                        service,
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
        let mut refused = 0u64;
        let mut first_error: Option<String> = None;
        for piece in pieces(&p.text, p.first_line.max(1)) {
            let (line, raw) = match piece {
                Piece::Json { line, raw, .. } => (line, raw),
                Piece::Text { line, text } if text.trim().is_empty() => {
                    let _ = line;
                    continue;
                }
                Piece::Text { line, .. } | Piece::Bad { line, .. } => {
                    refused += 1;
                    first_error
                        .get_or_insert_with(|| format!("{}:{line}: not a JSON document", p.origin));
                    continue;
                }
            };
            if raw.contains("\"resourceLogs\"") || raw.contains("\"resource_logs\"") {
                match decode_json::decode::<ExportLogsServiceRequest>(raw.as_bytes(), "logs") {
                    Ok(r) => logs.resource_logs.extend(r.resource_logs),
                    Err(e) => {
                        refused += 1;
                        first_error.get_or_insert_with(|| format!("{}:{line}: {e}", p.origin));
                    }
                }
            } else {
                match decode_json::decode::<ExportTraceServiceRequest>(raw.as_bytes(), "traces") {
                    Ok(r) => traces.resource_spans.extend(r.resource_spans),
                    Err(e) => {
                        refused += 1;
                        first_error.get_or_insert_with(|| format!("{}:{line}: {e}", p.origin));
                    }
                }
            }
        }
        if let Some(e) = &first_error {
            tracing::warn!(source = label.0, refused, error = %e, "Refused OTLP/JSON documents of a pulled input.");
        }
        let mut out = AccessOutcome {
            rejected: refused,
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
        let now = crate::now_ns();
        let cols = Columns::new(rejects::schema());
        let mut raw = self.normaliser.tokens.scrub(&p.text).text;
        let _ = seam_store::truncate(&mut raw, MAX_RAW);
        let key = key_of(&["pulled", name, &p.origin, &p.first_line.to_string(), reason]);
        let mut row = cols.row();
        cols.set(&mut row, TIME, Cell::Ts(now));
        cols.set(&mut row, INGEST_TIME, Cell::Ts(now));
        cols.set(&mut row, RECORD_KEY, Cell::Str(key));
        cols.set(&mut row, SOURCE, Cell::Str(name.to_string()));
        cols.set(&mut row, rejects::FILE, Cell::Str(p.origin.clone()));
        cols.set(
            &mut row,
            rejects::LINE,
            Cell::I64(i64::try_from(p.first_line.max(1)).unwrap_or(i64::MAX)),
        );
        cols.set(
            &mut row,
            rejects::REASON,
            Cell::Str(format!("{kind} source {name}: {reason}")),
        );
        cols.set(&mut row, RAW, Cell::Str(raw));
        let batch = rows::batch(&cols, &[row])
            .map_err(|e| IngestError::Internal(format!("the refusal could not be stored: {e}")))?;
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
