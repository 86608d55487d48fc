-- Per-minute latency percentiles by layer.
SELECT time, api_id, requests, total_p95, gateway_p95, network_p95, integration_p95, backend_p95
FROM latency_by_layer WHERE $__timeFilter(time)
ORDER BY time, api_id
