//! The binary's side of pulled sources (`[[sources]]`): positions loaded through the query
//! service, the `GET /api/v1/sources` answer, and the table `seam sources` prints.
//!
//! Takes the running [`Sources`](seam_collector::sources::pull::Sources) and the query
//! service; gives the [`PositionStore`] the sources resume from (SQL over
//! `source_positions`, bound parameters, on the query runtime) and the HTTP handlers.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use datafusion::scalar::ScalarValue;
use seam_collector::sources::pull::{LOAD_POSITIONS_SQL, Position, PositionStore, SourcesView};
use seam_query::QueryService;

/// Loads positions from `source_positions` through the query service.
#[derive(Debug)]
pub struct QueryPositions {
    query: Arc<QueryService>,
}

impl QueryPositions {
    /// A position store over `query`.
    pub fn new(query: Arc<QueryService>) -> Self {
        Self { query }
    }
}

fn column<'a, T: 'static>(
    b: &'a arrow::record_batch::RecordBatch,
    name: &str,
) -> Result<&'a T, String> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| format!("source_positions has no readable column {name}"))
}

#[async_trait::async_trait]
impl PositionStore for QueryPositions {
    async fn load(&self, source: &str) -> Result<Vec<Position>, String> {
        let batches = self
            .query
            .run_internal_with_params(
                LOAD_POSITIONS_SQL,
                vec![ScalarValue::Utf8(Some(source.to_string()))],
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for b in &batches {
            let keys = column::<StringArray>(b, "key")?;
            let offsets = column::<Int64Array>(b, "offset")?;
            let details = column::<StringArray>(b, "detail")?;
            for i in 0..b.num_rows() {
                if keys.is_null(i) || offsets.is_null(i) {
                    continue;
                }
                out.push(Position {
                    key: keys.value(i).to_string(),
                    offset: offsets.value(i),
                    detail: (!details.is_null(i)).then(|| details.value(i).to_string()),
                });
            }
        }
        Ok(out)
    }
}

/// `GET /api/v1/sources`: every pulled source's status, as a JSON array.
pub fn status_response(view: &SourcesView) -> Response {
    let body = serde_json::to_string(&view.views()).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /health`: open to all; says `ok` while seam runs, and how many pulled sources are
/// running and failing (names and errors are in `/api/v1/sources`, behind a key).
pub fn health_response(view: &SourcesView) -> Response {
    let views = view.views();
    let body = if views.is_empty() {
        serde_json::json!({"status": "ok"})
    } else {
        let failing = views.iter().filter(|v| v.state == "failing").count();
        serde_json::json!({
            "status": "ok",
            "sources": {"configured": views.len(), "failing": failing},
        })
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The table `seam sources` prints from the JSON answer of `/api/v1/sources`.
pub fn sources_table(body: &serde_json::Value) -> String {
    let Some(items) = body.as_array() else {
        return "seam answered something that is not a list of sources\n".into();
    };
    if items.is_empty() {
        return "No pulled sources are configured ([[sources]] in the configuration file).\n"
            .into();
    }
    let text = |v: &serde_json::Value, k: &str| -> String {
        match v.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => "-".into(),
            Some(other) => other.to_string(),
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:<9} {:<8} {:>12} {:>14} {:>9} {:>10} {:>12} {:>12}",
        "NAME",
        "TYPE",
        "FORMAT",
        "STATE",
        "RECORDS",
        "BYTES",
        "POSITIONS",
        "LAG_S",
        "LAG_RECORDS",
        "LAG_BYTES"
    );
    for v in items {
        let lag_s = v
            .get("lag_seconds")
            .and_then(serde_json::Value::as_f64)
            .map_or("-".into(), |s| format!("{s:.1}"));
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<9} {:<8} {:>12} {:>14} {:>9} {:>10} {:>12} {:>12}",
            text(v, "name"),
            text(v, "type"),
            text(v, "format"),
            text(v, "state"),
            text(v, "records"),
            text(v, "bytes"),
            text(v, "positions"),
            lag_s,
            text(v, "lag_records"),
            text(v, "lag_bytes"),
        );
    }
    for v in items {
        if let Some(e) = v.get("last_error").and_then(|e| e.as_str()) {
            let _ = writeln!(
                out,
                "{}: last error at {}: {e}",
                text(v, "name"),
                text(v, "last_error_at")
            );
        }
        if let Some(ps) = v.get("recent_positions").and_then(|p| p.as_array()) {
            for p in ps.iter().take(5) {
                let _ = writeln!(
                    out,
                    "{}: position {} at {}",
                    text(v, "name"),
                    text(p, "key"),
                    text(p, "offset")
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_source_and_its_error() {
        let body = serde_json::json!([
            {"name": "apim-gatewaylogs", "type": "kafka", "format": "apim", "state": "failing",
             "records": 10, "bytes": 2048, "positions": 3, "lag_seconds": 1.5, "lag_records": 7,
             "lag_bytes": null, "last_error": "SASL authentication failed", "last_error_at": "2026-12-05T05:00:00Z",
             "recent_positions": [{"key": "t/0", "offset": 42, "detail": null}]},
        ]);
        let t = sources_table(&body);
        assert!(t.contains("apim-gatewaylogs"), "{t}");
        assert!(t.contains("failing"), "{t}");
        assert!(t.contains("SASL authentication failed"), "{t}");
        assert!(t.contains("position t/0 at 42"), "{t}");
        assert!(sources_table(&serde_json::json!([])).contains("No pulled sources"));
    }
}
