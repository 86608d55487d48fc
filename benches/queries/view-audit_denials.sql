-- Which layer rejected requests and why.
SELECT rejected_by, error_reason, status_code, count(*) AS requests, count(DISTINCT token_id) AS tokens
FROM audit_denials WHERE $__timeFilter(time)
GROUP BY rejected_by, error_reason, status_code ORDER BY requests DESC, rejected_by, error_reason
