-- Who holds which token: the tokens view, the 50 busiest seen in the range.
SELECT token_id, subject, client_app, requests, failures, distinct_client_ips, apis, first_seen, last_seen
FROM tokens WHERE last_seen >= $__timeFrom() AND first_seen <= $__timeTo()
ORDER BY requests DESC, token_id LIMIT 50
