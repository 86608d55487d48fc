"""Writes body.json: one OTLP/JSON trace export of 512 spans with realistic HTTP attributes
(every fourth span carries a Bearer JWT in its authorization header), seeded."""
import base64, json, random, time

random.seed(7)
now = time.time_ns()
payload = base64.urlsafe_b64encode(b'{"sub":"u1","uti":"abc","exp":1999999999}').decode().rstrip("=")
jwt = "eyJhbGciOiJSUzI1NiJ9." + payload + ".c2lnbmF0dXJl"
spans = []
for i in range(512):
    s = now - random.randrange(600_000_000_000)
    attrs = [
        {"key": "http.request.method", "value": {"stringValue": random.choice(["GET", "POST"])}},
        {"key": "url.full", "value": {"stringValue": f"https://apim.example/orders/v1/orders/ORD-{i}?status=OPEN&page=2"}},
        {"key": "http.route", "value": {"stringValue": "/orders/v1/orders/{id}"}},
        {"key": "http.response.status_code", "value": {"intValue": "200"}},
        {"key": "user_agent.original", "value": {"stringValue": "acme-erp-connector/4.2.1 Java-http-client/17.0.9"}},
        {"key": "server.address", "value": {"stringValue": "apim.example"}},
        {"key": "correlation.id", "value": {"stringValue": "8d0c3f5e-2a41-4b7e-9c61-%012d" % i}},
    ]
    if i % 4 == 0:
        attrs.append({"key": "http.request.header.authorization", "value": {"stringValue": "Bearer " + jwt}})
    spans.append({"traceId": "%032x" % random.getrandbits(128), "spanId": "%016x" % random.getrandbits(64),
                  "name": "GET /orders/v1/orders/{id}", "kind": 2, "startTimeUnixNano": str(s),
                  "endTimeUnixNano": str(s + 5_000_000), "attributes": attrs, "status": {}})
body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders-papi"}}]},
        "scopeSpans": [{"scope": {"name": "io.opentelemetry.http"}, "spans": spans}]}]}
with open("body.json", "w") as f:
    json.dump(body, f)
