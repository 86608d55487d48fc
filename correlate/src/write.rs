//! Write: a minute bucket's derived rows.
//!
//! Takes the [`Request`]s and [`Probe`]s of one slice of a minute bucket (start time);
//! gives their `requests`, `request_events` and `probes` batches ([`minute_parts`], from
//! [`batches`] and [`probe_batch`]). The correlator (`schedule`) writes them as files of the
//! minute (`Storage::write_minute_part`) and lists a minute's files in one journal-backed
//! update (`Storage::commit_minutes`): the tables change together or not at all, across a
//! crash too (a query running during the swap may see one table a moment ahead of another).
//! An empty minute removes the minute's files.

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use seam_schemas::columns;
use seam_schemas::tables::requests;
use seam_store::rows::{self, Cell, Columns, Row};

use crate::{Event, Probe, Request};

/// The three derived tables' batches of one minute's `reqs` and `probes`, as
/// `Storage::write_minute_part` takes them (CPU work: build them off the async workers).
///
/// # Errors
/// A cell that does not fit its column (a programming error).
pub fn minute_parts(
    reqs: &[Request],
    probes: &[Probe],
) -> Result<Vec<(&'static str, RecordBatch)>, ArrowError> {
    let (rb, eb) = batches(reqs)?;
    let pb = probe_batch(probes)?;
    Ok(vec![
        (requests::TABLE, rb),
        (requests::EVENTS_TABLE, eb),
        (requests::PROBES_TABLE, pb),
    ])
}

/// The `probes` batch of `probes`.
///
/// # Errors
/// A cell that does not fit its column (a programming error).
pub fn probe_batch(probes: &[Probe]) -> Result<RecordBatch, ArrowError> {
    let pc = Columns::new(requests::probes_schema());
    let mut rows_out = Vec::with_capacity(probes.len());
    for p in probes {
        let mut row = pc.row();
        let mut set = |n: &str, c: Cell| pc.set(&mut row, n, c);
        set(columns::TIME, Cell::Ts(p.time));
        set(columns::INGEST_TIME, Cell::Ts(p.ingest_time));
        set(requests::PROBE_ID, Cell::Str(p.probe_id.clone()));
        set(columns::MULE_APP, text(&p.mule_app));
        set(columns::FLOW, text(&p.flow));
        set(columns::METHOD, text(&p.method));
        set(columns::URL_PATH, text(&p.url_path));
        set(columns::CLIENT_IP, text(&p.client_ip));
        set(columns::USER_AGENT, text(&p.user_agent));
        set(requests::MATCHED_BY, Cell::Str(p.matched_by.into()));
        set(requests::RULE, Cell::Str(p.rule.clone()));
        set(requests::HAS_GATEWAY, Cell::Bool(p.has_gateway));
        set(requests::HAS_FLOW, Cell::Bool(p.has_flow));
        set(requests::HAS_SPANS, Cell::Bool(p.has_spans));
        set(requests::EXTERNAL, Cell::Bool(p.external));
        set(requests::SETTLED, Cell::Bool(p.settled));
        set(requests::RECORDS, Cell::I64(p.records));
        rows_out.push(row);
    }
    rows::batch(&pc, &rows_out)
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
    set(columns::TIME, Cell::Ts(e.time));
    set(columns::INGEST_TIME, Cell::Ts(e.ingest_time));
    set(requests::REQUEST_ID, Cell::Str(r.request_id.clone()));
    set(requests::REQUEST_TIME, Cell::Ts(r.time));
    set(requests::LAYER, Cell::Str(e.layer.into()));
    set(columns::SOURCE, Cell::Str(e.source.into()));
    set(requests::SERVICE, text(&e.service));
    set(columns::NAME, text(&e.name));
    set(columns::DURATION_MS, opt_f(e.duration_ms));
    set(columns::STATUS_CODE, opt_i32(e.status_code));
    set(requests::OUTCOME, Cell::Str(e.outcome.into()));
    set(requests::DETAIL, text(&e.detail));
    set(columns::TRACE_ID, text(&e.trace_id));
    set(columns::SPAN_ID, text(&e.span_id));
    set(columns::RECORD_KEY, text(&e.record_key));
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
            set(columns::TIME, Cell::Ts(r.time));
            set(columns::INGEST_TIME, Cell::Ts(r.ingest_time));
            set(requests::REQUEST_ID, Cell::Str(r.request_id.clone()));
            set(columns::TRACE_ID, text(&r.trace_id));
            set(requests::APIM_CORRELATION_ID, text(&r.apim_correlation_id));
            set(requests::MULE_CORRELATION_ID, text(&r.mule_correlation_id));
            set(columns::API_ID, text(&r.api_id));
            set(columns::OPERATION_ID, text(&r.operation_id));
            set(columns::METHOD, text(&r.method));
            set(columns::URL_PATH, text(&r.url_path));
            set(columns::CLIENT_IP, text(&r.client_ip));
            set(columns::USER_AGENT, text(&r.user_agent));
            set(columns::SUBSCRIPTION_ID, text(&r.subscription_id));
            set(columns::GATEWAY, text(&r.gateway));
            set(
                "token_expired",
                r.token_expired.map_or(Cell::Null, Cell::Bool),
            );
            set(columns::STATUS_CODE, opt_i32(r.status_code));
            set(columns::BACKEND_STATUS_CODE, opt_i32(r.backend_status_code));
            set(
                requests::REJECTED_BY,
                Cell::text(r.rejected_by.map(str::to_string)),
            );
            set(requests::ERROR_REASON, text(&r.error_reason));
            set(requests::TOTAL_MS, opt_f(r.total_ms));
            set(requests::GATEWAY_MS, opt_f(r.gateway_ms));
            set(requests::NETWORK_MS, opt_f(r.network_ms));
            set(requests::INTEGRATION_MS, opt_f(r.integration_ms));
            set(requests::BACKEND_MS, opt_f(r.backend_ms));
            set(columns::CACHE, text(&r.cache));
            set(requests::BYPASSED_GATEWAY, Cell::Bool(r.bypassed_gateway));
            set(requests::HAS_GATEWAY, Cell::Bool(r.has_gateway));
            set(requests::HAS_FLOW, Cell::Bool(r.has_flow));
            set(requests::HAS_SPANS, Cell::Bool(r.has_spans));
            set(columns::MULE_APP, text(&r.mule_app));
            set(columns::FLOW, text(&r.flow));
            set(requests::LAYERS_DISAGREE, Cell::Bool(r.layers_disagree));
            set(requests::SETTLED, Cell::Bool(r.settled));
            set(requests::RECORDS, Cell::I64(r.records));
        }
        rc.set_token(&mut row, &r.token);
        rrows.push(row);
        erows.extend(r.events.iter().map(|e| event_row(&ec, r, e)));
    }
    Ok((rows::batch(&rc, &rrows)?, rows::batch(&ec, &erows)?))
}
