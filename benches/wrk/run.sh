#!/usr/bin/env bash
# benches/wrk/run.sh BIN LABEL: starts BIN serve on a temporary data directory, runs wrk
# (Debian package `wrk`) for 20 s with 4 connections posting one 512-span OTLP/JSON body
# (made by body.py: realistic HTTP attributes, every fourth span with a Bearer JWT), prints
# requests/s, spans/s, mean latency and seam's peak RSS. Used for before/after comparisons
# of two builds of seam (see benches/README.md).
set -euo pipefail
bin=$1; label=$2
cd "$(dirname "$0")"
python3 body.py
dir=$(mktemp -d)
"$bin" serve --data-dir "$dir/data" --otlp-grpc-addr 127.0.0.1:0 --ingest-http-addr 127.0.0.1:0 \
  --api-addr 127.0.0.1:0 --pg-addr 127.0.0.1:0 --log-filter warn > "$dir/out" 2> "$dir/err" &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
http=$(grep -o 'ingest_http=[^ ]*' "$dir/out" | cut -d= -f2)
out=$(wrk -t2 -c4 -d20s -s "$(dirname "$0")/post.lua" "http://$http/v1/traces")
rps=$(grep "Requests/sec" <<< "$out" | awk '{print $2}')
non2xx=$(grep -o "Non-2xx or 3xx responses: [0-9]*" <<< "$out" || true)
lat=$(grep -A1 "Latency" <<< "$out" | head -1 | awk '{print $2}')
rss=$(grep VmHWM /proc/$pid/status | awk '{print $2}')
echo "$label: requests/s=$rps spans/s=$(python3 -c "print(round($rps*512))") avg_latency=$lat peak_rss_kib=$rss $non2xx"
kill -TERM $pid; wait $pid || true
rm -rf "$dir"
