//! Write: a minute bucket's derived rows, both tables in one update.
//!
//! Takes the [`Request`]s of one minute bucket (request start time) and the storage; gives
//! their `requests` and `request_events` rows ([`batches`]) and stores them as that minute's
//! one file of each table, replacing the previous ones in one journal-backed update
//! ([`replace_minute`], `Storage::replace_minutes`): the two tables change together or not
//! at all, across a crash too (a query running during the swap may see one table a moment
//! ahead of the other). An empty minute removes the minute's files.

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use seam_schemas::tables::requests;
use seam_store::Storage;
use seam_store::rows::{self, Cell, Columns, Row};

use crate::error::CorrelateError;
use crate::{Event, Request};

/// Replaces the minute starting at `minute_ns` of `requests` and `request_events` with
/// `reqs` (the requests starting in that minute).
///
/// # Errors
/// Building the batches or writing them failed; the minute's earlier files then stay.
pub async fn replace_minute(
    storage: &Storage,
    minute_ns: i64,
    reqs: &[Request],
) -> Result<(), CorrelateError> {
    let (rb, eb) = batches(reqs)?;
    storage
        .replace_minutes(
            minute_ns,
            vec![(requests::TABLE, rb), (requests::EVENTS_TABLE, eb)],
        )
        .await?;
    Ok(())
}

fn text(v: &Option<String>) -> Cell {
    Cell::text(v.clone())
}

fn opt_f(v: Option<f64>) -> Cell {
    v.map_or(Cell::Null, Cell::F64)
}

fn opt_i32(v: Option<i32>) -> Cell {
    v.map_or(Cell::Null, Cell::I32)
}

fn event_row(cols: &Columns, r: &Request, e: &Event) -> Row {
    let mut row = cols.row();
    let mut set = |n: &str, c: Cell| cols.set(&mut row, n, c);
    set("time", Cell::Ts(e.time));
    set("ingest_time", Cell::Ts(e.ingest_time));
    set("request_id", Cell::Str(r.request_id.clone()));
    set("request_time", Cell::Ts(r.time));
    set("layer", Cell::Str(e.layer.into()));
    set("source", Cell::Str(e.source.into()));
    set("service", text(&e.service));
    set("name", text(&e.name));
    set("duration_ms", opt_f(e.duration_ms));
    set("status_code", opt_i32(e.status_code));
    set("outcome", Cell::Str(e.outcome.into()));
    set("detail", text(&e.detail));
    set("trace_id", text(&e.trace_id));
    set("span_id", text(&e.span_id));
    set("record_key", text(&e.record_key));
    row
}

/// The `requests` and `request_events` batches of `reqs`.
///
/// # Errors
/// A cell that does not fit its column (a programming error).
pub fn batches(reqs: &[Request]) -> Result<(RecordBatch, RecordBatch), ArrowError> {
    let rc = Columns::new(requests::schema());
    let ec = Columns::new(requests::events_schema());
    let mut rrows = Vec::with_capacity(reqs.len());
    let mut erows = Vec::new();
    for r in reqs {
        let mut row = rc.row();
        {
            let mut set = |n: &str, c: Cell| rc.set(&mut row, n, c);
            set("time", Cell::Ts(r.time));
            set("ingest_time", Cell::Ts(r.ingest_time));
            set("request_id", Cell::Str(r.request_id.clone()));
            set("trace_id", text(&r.trace_id));
            set("apim_correlation_id", text(&r.apim_correlation_id));
            set("mule_correlation_id", text(&r.mule_correlation_id));
            set("api_id", text(&r.api_id));
            set("operation_id", text(&r.operation_id));
            set("method", text(&r.method));
            set("url_path", text(&r.url_path));
            set("client_ip", text(&r.client_ip));
            set("user_agent", text(&r.user_agent));
            set("subscription_id", text(&r.subscription_id));
            set("gateway", text(&r.gateway));
            set(
                "token_expired",
                r.token_expired.map_or(Cell::Null, Cell::Bool),
            );
            set("status_code", opt_i32(r.status_code));
            set("backend_status_code", opt_i32(r.backend_status_code));
            set("rejected_by", Cell::text(r.rejected_by.map(str::to_string)));
            set("error_reason", text(&r.error_reason));
            set("total_ms", opt_f(r.total_ms));
            set("gateway_ms", opt_f(r.gateway_ms));
            set("network_ms", opt_f(r.network_ms));
            set("integration_ms", opt_f(r.integration_ms));
            set("backend_ms", opt_f(r.backend_ms));
            set("cache", text(&r.cache));
            set("bypassed_gateway", Cell::Bool(r.bypassed_gateway));
            set("has_gateway", Cell::Bool(r.has_gateway));
            set("has_flow", Cell::Bool(r.has_flow));
            set("has_spans", Cell::Bool(r.has_spans));
            set("mule_app", text(&r.mule_app));
            set("flow", text(&r.flow));
            set("layers_disagree", Cell::Bool(r.layers_disagree));
            set("settled", Cell::Bool(r.settled));
            set("records", Cell::I64(r.records));
        }
        rc.set_token(&mut row, &r.token);
        rrows.push(row);
        erows.extend(r.events.iter().map(|e| event_row(&ec, r, e)));
    }
    Ok((rows::batch(&rc, &rrows)?, rows::batch(&ec, &erows)?))
}
