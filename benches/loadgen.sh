#!/usr/bin/env bash
# Runs seam-loadgen against a fresh release `seam serve` for every target and prints one JSON
# report per target. Usage: benches/loadgen.sh [SECONDS] [CLIENTS]
# Builds: cargo build --release --bin seam && cargo build --release -p seam-benches --bin seam-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
clients="${2:-4}"
bin=target/release
for target in otlp-grpc otlp-http apim mule; do
  dir=$(mktemp -d)
  "$bin/seam" serve --data-dir "$dir/data" --otlp-grpc-addr 127.0.0.1:0 \
    --ingest-http-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 --pg-addr 127.0.0.1:0 \
    --log-filter warn > "$dir/out" 2> "$dir/err" &
  pid=$!
  for _ in $(seq 1 100); do grep -q listening "$dir/out" 2>/dev/null && break; sleep 0.1; done
  grpc=$(grep -o 'otlp_grpc=[^ ]*' "$dir/out" | cut -d= -f2)
  http=$(grep -o 'ingest_http=[^ ]*' "$dir/out" | cut -d= -f2)
  "$bin/seam-loadgen" --target "$target" --grpc "$grpc" --http "$http" --pid "$pid" \
    --seconds "$seconds" --clients "$clients" --json || true
  kill -TERM "$pid"; wait "$pid" || true
  # Bytes on disk per table after the final flush (Parquet and manifests).
  for t in "$dir"/data/tables/*/; do
    [ -d "$t" ] && du -sb "$t" | awk -v tg="$target" '{n=split($2,p,"/"); print "{\"target\":\"" tg "\",\"table\":\"" p[n-1] "\",\"bytes\":" $1 "}"}'
  done
  rm -rf "$dir"
done
