#!/usr/bin/env bash
# Runs seam-loadgen against a fresh release `seam serve` for every target and prints one JSON
# report per target. Usage: benches/loadgen.sh [SECONDS] [CLIENTS]
# Builds: cargo build --release --bin seam && cargo build --release -p seam-benches --bin seam-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/serve.sh
seconds="${1:-20}"
clients="${2:-4}"
bin=target/release
for target in otlp-grpc otlp-http apim mule; do
  dir=$(mktemp -d)
  seam_start "$dir/data"
  "$bin/seam-loadgen" --target "$target" --grpc "$grpc" --http "$http" --api "$api" --pid "$pid" \
    --seconds "$seconds" --clients "$clients" --json || true
  seam_stop
  # Bytes on disk per table after the final flush (Parquet and manifests).
  for t in "$dir"/data/tables/*/; do
    [ -d "$t" ] && du -sb "$t" | awk -v tg="$target" '{n=split($2,p,"/"); print "{\"target\":\"" tg "\",\"table\":\"" p[n-1] "\",\"bytes\":" $1 "}"}'
  done
  rm -rf "$dir"
done
