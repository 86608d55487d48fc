#!/usr/bin/env bash
# Acknowledgement latency of OTLP/HTTP exports while a heavy query runs (issue 16, finding 4).
#
# Starts the release `seam` on a temporary data directory, stores SPANS spans, then runs
# `SELECT count(*) FROM spans a CROSS JOIN spans b WHERE a.span_id < b.span_id` over the HTTP
# API with `query.timeout` = TIMEOUT while posting a one-span OTLP/JSON export every 250 ms.
# Prints the export latencies (p50, p99, max), when the query answered and with what, and
# the CPU use of the query threads in the 5 s after the time limit (the aborted query must
# stop; the correlator, recomputing the stored hour, uses them too), and how long a trivial
# statement waits right after the answer.
#
#   benches/heavy_query_ack.sh            # SPANS=200000 TIMEOUT=10s
#   SEAM=target/release/seam SPANS=50000 benches/heavy_query_ack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SEAM=${SEAM:-target/release/seam}
SPANS=${SPANS:-200000}
TIMEOUT=${TIMEOUT:-10s}
[ -x "$SEAM" ] || { echo "build it first: cargo build --release" >&2; exit 1; }
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
printf '[query]\ntimeout = "%s"\n' "$TIMEOUT" > "$dir/seam.toml"
"$SEAM" serve --config "$dir/seam.toml" --data-dir "$dir/data" --otlp-grpc-addr 127.0.0.1:0 \
  --ingest-http-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 --pg-addr 127.0.0.1:0 \
  > "$dir/out" 2> "$dir/err" &
pid=$!
for _ in $(seq 1 100); do grep -q "seam listening" "$dir/out" && break; sleep 0.1; done
line=$(head -1 "$dir/out")
http=$(sed -E 's/.*ingest_http=([^ ]+).*/\1/' <<< "$line")
api=$(sed -E 's/.*api=([^ ]+).*/\1/' <<< "$line")
python3 - "$http" "$api" "$SPANS" "$pid" "$TIMEOUT" <<'EOF'
import json, os, random, sys, threading, time, urllib.request

http, api, spans, pid, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
now = time.time_ns()

def body(n):
    out = []
    for _ in range(n):
        s = now - random.randrange(3_600_000_000_000)
        out.append({"traceId": "%032x" % random.getrandbits(128), "spanId": "%016x" % random.getrandbits(64),
                    "name": "GET /orders", "kind": 2, "startTimeUnixNano": str(s), "endTimeUnixNano": str(s + 5_000_000)})
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bench"}}]},
                                          "scopeSpans": [{"scope": {"name": "b"}, "spans": out}]}]}).encode()

def post(url, data, ctype="application/json", t=300):
    req = urllib.request.Request(url, data=data, headers={"content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=t) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

for _ in range(spans // 5000):
    post(f"http://{http}/v1/traces", body(5000))
status, text = post(f"http://{api}/api/v1/sql", b"SELECT count(*) AS n FROM spans", "text/plain")
print("stored spans:", text.decode().strip())

def cpu(threads=None):
    """CPU seconds of seam, or of its threads whose name starts with `threads`."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{t}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if threads and not name.startswith(threads):
            continue
        f = stat.split(")")[-1].split()
        total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")

result = {}
def heavy():
    t = time.time()
    s, b = post(f"http://{api}/api/v1/sql",
                b"SELECT count(*) FROM spans a CROSS JOIN spans b WHERE a.span_id < b.span_id", "text/plain", 600)
    result.update(status=s, body=b[:120].decode(errors="replace"), took=time.time() - t)
th = threading.Thread(target=heavy); th.start()
time.sleep(0.5)
lat = []
start = time.time()
while th.is_alive() and time.time() - start < 600:
    t = time.time(); s, _ = post(f"http://{http}/v1/traces", body(1)); lat.append((time.time() - t) * 1000)
    assert s == 200, s
    time.sleep(0.25)
th.join()
t = time.time(); s1, _ = post(f"http://{api}/api/v1/sql", b"SELECT 1", "text/plain"); after = (time.time() - t) * 1000
c0, q0 = cpu(), cpu("seam-query"); time.sleep(5); c1, q1 = cpu(), cpu("seam-query")
for _ in range(8):
    t = time.time(); post(f"http://{http}/v1/traces", body(1)); lat.append((time.time() - t) * 1000); time.sleep(0.25)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"heavy query: HTTP {result['status']} after {result['took']:.1f} s (timeout {timeout}): {result['body']}")
print(f"OTLP exports during it: n={len(lat)} p50={q(0.5):.1f} ms p99={q(0.99):.1f} ms max={lat[-1]:.1f} ms")
print(f"SELECT 1 right after the answer: HTTP {s1} in {after:.0f} ms")
print(f"CPU in the 5 s after the answer: query threads {q1 - q0:.2f} s, all of seam {c1 - c0:.2f} s")
EOF
