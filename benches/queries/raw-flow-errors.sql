-- Mule flow records with an error or a status of 400 or more, per app and trace point.
SELECT mule_app, trace_point, status_code, count(*) AS records
FROM flow_logs WHERE $__timeFilter(time) AND (status_code >= 400 OR error_type IS NOT NULL)
GROUP BY mule_app, trace_point, status_code ORDER BY records DESC, mule_app, trace_point, status_code
