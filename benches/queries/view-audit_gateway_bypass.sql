-- Gateway bypass: the newest 100 requests that reached Mule without passing APIM.
SELECT time, request_id, mule_app, flow, method, url_path, client_ip, token_id, subject, status_code
FROM audit_gateway_bypass WHERE $__timeFilter(time)
ORDER BY time DESC, request_id LIMIT 100
