#!/usr/bin/env bash
# Several seam nodes on one store: NODES release `seam serve` processes with the ingest role
# (each its own data directory) and one with the query role, all on STORAGE_URL (a shared
# store: `az://…` with AZURE_STORAGE_CONNECTION_STRING, or `s3://…` with the AWS variables).
# seam-loadgen sends OTLP/gRPC to every ingest node at once for SECONDS (CLIENTS each); the
# first one's visibility probes are sent to its ingest node and looked for through the query
# node (ingest to visible across nodes: the flush, the commit, the query node's refresh).
# Then, from each node's /metrics: the manifest updates each made under the commit locks and
# the time they took and waited, and the query node's refresh passes.
#   STORAGE_URL=az://bench/cluster-3 AZURE_STORAGE_CONNECTION_STRING=... benches/clusterbench.sh 3 20 2
# Usage: benches/clusterbench.sh [NODES] [SECONDS] [CLIENTS]; prints one JSON line per node
# and a summary line. Use a new prefix per run (the nodes' ids are new each run).
# Builds: cargo build --release --bin seam && cargo build --release -p seam-benches --bin seam-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-3}"
seconds="${2:-20}"
clients="${3:-2}"
: "${STORAGE_URL:?set STORAGE_URL to a shared store (az://container/prefix or s3://bucket/prefix)}"
export SEAM_STORAGE_URL="$STORAGE_URL"
dir=$(mktemp -d)
pids=()
# Every process started here stops with the script (also on a failure or Ctrl-C): SIGTERM,
# up to 30 s to stop, then SIGKILL.
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 300); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
start_node() { # start_node NAME ROLES: writes "pid grpc http api" to $dir/NAME.addr
  local name="$1" roles="$2" out="$dir/$1.out"
  target/release/seam serve --config "$dir/seam.toml" --roles "$roles" --data-dir "$dir/$name" \
    --otlp-grpc-addr 127.0.0.1:0 --ingest-http-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 \
    --pg-addr 127.0.0.1:0 --log-filter warn > "$out" 2> "$out.err" &
  local p=$!
  pids+=("$p")
  for _ in $(seq 1 300); do grep -q listening "$out" 2>/dev/null && break; sleep 0.1; done
  grep -q listening "$out" || { echo "node $name did not start:" >&2; cat "$out.err" >&2; exit 1; }
  printf '%s %s %s %s\n' "$p" "$(grep -o 'otlp_grpc=[^ ]*' "$out" | cut -d= -f2)" \
    "$(grep -o 'ingest_http=[^ ]*' "$out" | cut -d= -f2)" "$(grep -o 'api=[^ ]*' "$out" | cut -d= -f2)" \
    > "$dir/$name.addr"
}
metric() { # metric TEXT SERIES-PREFIX: the sum of the matching lines' values
  echo "$1" | awk -v s="$2" 'index($0, s) == 1 {v += $NF} END {printf "%.3f", v}'
}
printf '[storage]\nlease_ttl = "10s"\n' > "$dir/seam.toml"
for i in $(seq 1 "$nodes"); do start_node "n$i" ingest; done
start_node q query
read -r qpid _ _ qapi < "$dir/q.addr"
loads=()
for i in $(seq 1 "$nodes"); do
  read -r p grpc http _ < "$dir/n$i.addr"
  probe=()
  [ "$i" = 1 ] && probe=(--api "$qapi")
  target/release/seam-loadgen --target otlp-grpc --grpc "$grpc" --http "$http" --pid "$p" \
    --seconds "$seconds" --clients "$clients" --seed "$i" ${probe[@]+"${probe[@]}"} --json \
    > "$dir/n$i.load.json" 2> "$dir/n$i.load.err" &
  loads+=($!)
  pids+=($!)
done
wait "${loads[@]}" || true
sleep 2
total=0
for i in $(seq 1 "$nodes"); do
  read -r p _ _ api < "$dir/n$i.addr"
  m=$(curl -s "http://$api/metrics")
  commits=$(metric "$m" 'seam_store_commits_total{')
  secs=$(metric "$m" 'seam_store_commit_seconds_total{')
  wait_s=$(metric "$m" 'seam_store_commit_lock_wait_seconds_total{')
  conflicts=$(metric "$m" 'seam_store_commit_conflicts_total{')
  rps=$(grep -o '"records_per_second":[0-9.]*' "$dir/n$i.load.json" | cut -d: -f2 || echo 0)
  vis=$(grep -o '"visible_p50_ms":[0-9.]*' "$dir/n$i.load.json" | cut -d: -f2 || true)
  vmax=$(grep -o '"visible_max_ms":[0-9.]*' "$dir/n$i.load.json" | cut -d: -f2 || true)
  total=$(awk -v a="$total" -v b="${rps:-0}" 'BEGIN {printf "%.0f", a + b}')
  awk -v n="n$i" -v r="${rps:-0}" -v c="$commits" -v s="$secs" -v w="$wait_s" -v k="$conflicts" \
    -v vp="${vis:-null}" -v vm="${vmax:-null}" 'BEGIN {
      printf "{\"node\":\"%s\",\"spans_per_s\":%.0f,\"commits\":%d,\"commit_ms_avg\":%.1f,\"lock_wait_ms_avg\":%.1f,\"conflicts\":%d,\"visible_at_query_node_p50_ms\":%s,\"visible_max_ms\":%s}\n",
        n, r, c, (c > 0 ? 1000 * s / c : 0), (c > 0 ? 1000 * w / c : 0), k, vp, vm }'
done
m=$(curl -s "http://$qapi/metrics")
passes=$(metric "$m" 'seam_store_refreshes_total ')
rsecs=$(metric "$m" 'seam_store_refresh_seconds_total ')
reread=$(metric "$m" 'seam_store_refreshed_manifests_total{')
awk -v n="$nodes" -v t="$total" -v p="$passes" -v s="$rsecs" -v r="$reread" -v u="$STORAGE_URL" 'BEGIN {
  printf "{\"store\":\"%s\",\"ingest_nodes\":%d,\"spans_per_s_total\":%.0f,\"query_node_refreshes\":%d,\"refresh_ms_avg\":%.1f,\"manifests_read_again\":%d}\n",
    u, n, t, p, (p > 0 ? 1000 * s / p : 0), r }'
