-- Who called what with which token: the 20 busiest token and API pairs.
SELECT token_id, client_app, api_id, operation_id, count(*) AS requests,
       sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS failures
FROM requests WHERE $__timeFilter(time)
GROUP BY token_id, client_app, api_id, operation_id ORDER BY requests DESC, token_id LIMIT 20
