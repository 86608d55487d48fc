-- Tokens used from more than one address or app, active in the range.
SELECT token_id, subject, requests, client_ips, client_apps, first_seen, last_seen
FROM audit_token_sharing WHERE last_seen >= $__timeFrom() AND first_seen <= $__timeTo()
ORDER BY requests DESC, token_id LIMIT 100
