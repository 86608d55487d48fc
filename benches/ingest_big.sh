#!/usr/bin/env bash
# `seam ingest` of one big file (issue 19): generates a PT1H.json of SIZE (default 1GiB) of
# realistic APIM GatewayLogs records (JSON Lines, the storage-archive shape, every record its
# own correlation id: benches/sources/gen.py), starts a fresh release `seam serve`, sends the
# file with the release `seam ingest` and prints a markdown table row: records, seconds,
# records/s, MB/s, and the peak RSS of the server and of the `seam ingest` client. The client
# streams the file in chunks of CHUNK_BYTES, so its peak RSS stays a few chunks whatever SIZE.
# Results go to benches/README.md ("Big files").
# Usage: benches/ingest_big.sh [SIZE] [CHUNK_BYTES]   (SIZE like 1GiB or 200MiB; needs python3;
# builds target/release/seam when it is missing)
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-1GiB}"
chunk="${2:-4194304}"
[ -x target/release/seam ] || cargo build --release --bin seam
if [ src/ingest.rs -nt target/release/seam ]; then
  echo "warning: target/release/seam is older than src/ingest.rs: run cargo build --release" >&2
fi
. benches/serve.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/seam-ingest-big.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

file="$work/PT1H.json"
echo "generating $size of APIM records in $file ..." >&2
python3 benches/sources/gen.py apim "$size" "$file"
bytes=$(stat -c %s "$file")
records=$(wc -l < "$file")

seam_start "$work/data"
out="$work/ingest.out"
t0=$(date +%s.%N)
if [ -x /usr/bin/time ]; then
  /usr/bin/time -v -o "$work/time.txt" target/release/seam ingest --to "http://$http" \
    --no-progress --chunk-bytes "$chunk" "$file" > "$out" 2> "$work/ingest.err" || true
  client_kib=$(awk -F': ' '/Maximum resident set size/{print $2}' "$work/time.txt")
else
  # No GNU time: read the client's high-water mark while it runs.
  target/release/seam ingest --to "http://$http" --no-progress --chunk-bytes "$chunk" "$file" \
    > "$out" 2> "$work/ingest.err" &
  cpid=$!
  client_kib=0
  while kill -0 "$cpid" 2>/dev/null; do
    hwm=$(awk '/VmHWM/{print $2}' "/proc/$cpid/status" 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$client_kib" ] && client_kib=$hwm
    sleep 0.05
  done
  wait "$cpid" || true
fi
t1=$(date +%s.%N)
server_kib=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
seam_stop
cat "$out" "$work/ingest.err" >&2
accepted=$(grep -o '[0-9]* records accepted' "$out" | cut -d' ' -f1)
if [ "${accepted:-0}" != "$records" ]; then
  echo "seam ingest accepted ${accepted:-0} of $records records" >&2
  exit 1
fi
python3 - "$records" "$bytes" "$t0" "$t1" "$server_kib" "$client_kib" "$chunk" <<'PY'
import sys
records, size, t0, t1, server, client, chunk = sys.argv[1:8]
records, size, secs = int(records), int(size), float(t1) - float(t0)
print("| file | chunk | records | seconds | records/s | MB/s | server peak RSS | client peak RSS |")
print("|---|---|---|---|---|---|---|---|")
print(f"| {size / 2**20:,.0f} MiB JSON Lines | {int(chunk) / 2**20:g} MiB | {records:,} | {secs:.1f} "
      f"| {records / secs:,.0f} | {size / secs / 1e6:.1f} | {int(server) / 1024:,.0f} MiB "
      f"| {int(client) / 1024:,.0f} MiB |")
PY
