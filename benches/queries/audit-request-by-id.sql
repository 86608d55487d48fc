-- One request by id (what an investigator pastes from a support ticket).
SELECT time, request_id, trace_id, status_code, rejected_by, error_reason, token_id, total_ms
FROM requests WHERE request_id = '$request_id'
