-- The gateway_logs view (one row per request, copies merged): responses per API and status.
SELECT api_id, status_code, count(*) AS requests, sum(copies) AS copies, avg(total_time_ms) AS avg_total_ms
FROM gateway_logs WHERE $__timeFilter(time)
GROUP BY api_id, status_code ORDER BY api_id, status_code
