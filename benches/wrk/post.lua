-- wrk script: POST body.json (made by body.py) as OTLP/JSON.
local f = io.open("body.json", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
