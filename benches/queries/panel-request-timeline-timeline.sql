-- Generated from dashboards/request-timeline.json, panel "Timeline" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT time, layer, source, service, name, duration_ms, status_code, outcome, detail, trace_id, span_id FROM request_events WHERE request_id = '$request_id' ORDER BY time
