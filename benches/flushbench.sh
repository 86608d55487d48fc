#!/usr/bin/env bash
# Flush throughput on its own: a fresh release `seam serve` (roles ingest,query: no
# correlation competing for the cores) keeps SECONDS of OTLP/gRPC load in memory
# (flush_interval 1h, flush_rows and the buffer budget out of the way), then its graceful stop
# writes all of it to Parquet and publishes it (manifests and Delta log). The stop's duration
# over the rows it held gives the flush rate. With STORAGE_URL set (and its credentials in
# the environment) the tables go there, e.g. Azurite:
#   STORAGE_URL=az://bench/flush AZURE_STORAGE_CONNECTION_STRING=... benches/flushbench.sh 10 4
# Usage: benches/flushbench.sh [SECONDS] [CLIENTS]; prints one JSON line.
# Builds: cargo build --release --bin seam && cargo build --release -p seam-benches --bin seam-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/serve.sh
seconds="${1:-10}"
clients="${2:-4}"
dir=$(mktemp -d)
cfg="$dir/seam.toml"
printf 'roles = ["ingest", "query"]\n[storage]\nflush_interval = "1h"\nflush_rows = 100000000\nmax_buffer_bytes = 8589934592\ncompaction_idle = "1h"\n' > "$cfg"
if [ -n "${STORAGE_URL:-}" ]; then export SEAM_STORAGE_URL="$STORAGE_URL"; fi
seam_start "$dir/data" "$cfg"
target/release/seam-loadgen --target otlp-grpc --grpc "$grpc" --http "$http" --api "$api" \
  --pid "$pid" --seconds "$seconds" --clients "$clients" --json > "$dir/load.json" || true
metrics=$(curl -s "http://$api/metrics")
rows=$(echo "$metrics" | awk '/^seam_buffered_rows\{/ {s += $2} END {printf "%d", s}')
mem=$(echo "$metrics" | awk '/^seam_buffered_bytes / {printf "%d", $2}')
start=$(date +%s.%N)
seam_stop
end=$(date +%s.%N)
local_bytes=0
[ -d "$dir/data/tables" ] && local_bytes=$(du -sb "$dir/data/tables" | cut -f1)
awk -v r="$rows" -v m="$mem" -v s="$start" -v e="$end" -v b="$local_bytes" \
  -v u="${STORAGE_URL:-local}" 'BEGIN {
    d = e - s; printf "{\"store\":\"%s\",\"rows\":%d,\"buffered_mb\":%.1f,\"stop_s\":%.2f,\"rows_per_s\":%.0f,\"local_parquet_mb\":%.1f}\n",
      u, r, m / 1048576, d, (d > 0 ? r / d : 0), b / 1048576 }'
rm -rf "$dir"
