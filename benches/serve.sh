# Sourced by the benchmark scripts: `seam_start DATA_DIR [CONFIG]` starts the release seam on
# loopback port 0 and sets pid, grpc, http and api; `seam_stop` stops it gracefully.
seam_start() {
  local data="$1" cfg="${2:-}" out
  out=$(mktemp)
  target/release/seam serve ${cfg:+--config "$cfg"} --data-dir "$data" \
    --otlp-grpc-addr 127.0.0.1:0 --ingest-http-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 \
    --pg-addr 127.0.0.1:0 --log-filter warn > "$out" 2> "$out.err" &
  pid=$!
  for _ in $(seq 1 100); do grep -q listening "$out" 2>/dev/null && break; sleep 0.1; done
  grpc=$(grep -o 'otlp_grpc=[^ ]*' "$out" | cut -d= -f2)
  http=$(grep -o 'ingest_http=[^ ]*' "$out" | cut -d= -f2)
  api=$(grep -o 'api=[^ ]*' "$out" | cut -d= -f2)
}
seam_stop() {
  kill -TERM "$pid"; wait "$pid" || true
}
