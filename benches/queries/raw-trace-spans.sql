-- Every span of one trace, from the raw spans table.
SELECT time, service_name, name, kind, duration_ms, status_code, span_status
FROM spans WHERE trace_id = '$trace_id' ORDER BY time, span_id
