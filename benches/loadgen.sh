#!/usr/bin/env bash
# Runs seam-loadgen against a fresh release `seam serve` for every target and prints one JSON
# report per target. Usage: benches/loadgen.sh [SECONDS] [CLIENTS] [TARGETS]
# TARGETS: default "otlp-grpc otlp-http apim mule mixed". The mixed target runs as fast as seam
# acknowledges, or at RATE requests/s when RATE is set; with SETTLE=N it also waits up to N s
# after the load for the sampled requests to be settled, seam running with
# correlation.horizon = HORIZON (default "20s").
# Builds: cargo build --release --bin seam && cargo build --release -p seam-benches --bin seam-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/serve.sh
seconds="${1:-20}"
clients="${2:-4}"
targets="${3:-otlp-grpc otlp-http apim mule mixed}"
bin=target/release
for target in $targets; do
  dir=$(mktemp -d)
  extra=()
  cfg=""
  if [ "$target" = mixed ]; then
    [ -n "${RATE:-}" ] && extra+=(--rate "$RATE")
    if [ -n "${SETTLE:-}" ]; then
      extra+=(--settle "$SETTLE")
      cfg="$dir/seam.toml"
      printf '[correlation]\nhorizon = "%s"\n' "${HORIZON:-20s}" > "$cfg"
    fi
  fi
  seam_start "$dir/data" "$cfg"
  "$bin/seam-loadgen" --target "$target" --grpc "$grpc" --http "$http" --api "$api" --pid "$pid" \
    --seconds "$seconds" --clients "$clients" ${extra[@]+"${extra[@]}"} --json || true
  seam_stop
  # Bytes on disk per table after the final flush (Parquet and manifests).
  for t in "$dir"/data/tables/*/; do
    [ -d "$t" ] && du -sb "$t" | awk -v tg="$target" '{n=split($2,p,"/"); print "{\"target\":\"" tg "\",\"table\":\"" p[n-1] "\",\"bytes\":" $1 "}"}'
  done
  rm -rf "$dir"
done
