#!/usr/bin/env bash
# The query benchmark against a fresh release `seam serve`: loads REQUESTS generated requests
# (about 6.4 records each) through the ingest endpoints, restarts seam so that every row is in
# Parquet, then times every query of benches/queries through seam and through DuckDB over the
# same files, and prints bytes on disk per table and per row.
# Usage: benches/querybench.sh [REQUESTS] [RUNS] [DATA_DIR]
# Needs: cargo build --release --bin seam && cargo build --release -p seam-benches --bin seam-querybench
#        python3 -m pip install duckdb
# With DATA_DIR of an earlier run (data already loaded), the load is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/serve.sh
requests="${1:-1000000}"
runs="${2:-3}"
dir="${3:-$(mktemp -d)/data}"
bin=target/release
cfg=$(mktemp)
# A short correlation horizon, so that requests settle soon after the load; the same one on
# restart (a longer one would make recent requests unsettled again).
printf '[correlation]\nhorizon = "10s"\ndelay = "1s"\n' > "$cfg"
if [ ! -d "$dir/tables/requests" ]; then
  seam_start "$dir" "$cfg"
  "$bin/seam-querybench" load --http "$http" --api "$api" --requests "$requests"
  seam_stop
fi
seam_start "$dir" "$cfg"
echo "data: $dir"
"$bin/seam-querybench" run --api "$api" --data-dir "$dir" --runs "$runs"
echo
echo "| table | rows | bytes | bytes/row |"
echo "|---|---:|---:|---:|"
for t in spans gateway_log_copies gateway_events flow_logs requests request_events; do
  rows=$(curl -s "http://$api/api/v1/sql?format=csv" --data-binary "SELECT count(*) FROM $t" | tail -1 | grep -E "^[0-9]+$" || echo 0)
  bytes=$(du -sb "$dir/tables/$t" | cut -f1)
  echo "| $t | $rows | $bytes | $(( bytes / (rows > 0 ? rows : 1) )) |"
done
seam_stop
