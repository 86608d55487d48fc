-- Successes with an expired token, per client app.
SELECT client_app, count(*) AS requests, count(DISTINCT token_id) AS tokens, max(time) AS last
FROM audit_expired_token_use WHERE $__timeFilter(time)
GROUP BY client_app ORDER BY requests DESC, client_app
