-- Spans per service and status: volume and mean duration.
SELECT service_name, span_status, count(*) AS spans, avg(duration_ms) AS avg_ms, max(duration_ms) AS max_ms
FROM spans WHERE $__timeFilter(time)
GROUP BY service_name, span_status ORDER BY service_name, span_status
