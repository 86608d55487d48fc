#!/usr/bin/env bash
# Smoke test of the README's first command: `cargo run -- serve` must pick the seam binary
# (the workspace has several; `default-run` in Cargo.toml chooses) and start seam. A debug
# build stands in for the README's `--release`: the same binary resolution, without a
# 25-minute release build on 2 cores. seam runs on a temporary data directory with every
# listener on 127.0.0.1 port 0; once it prints its "seam listening" line on stdout it gets
# SIGTERM and must exit 0 (graceful shutdown).
#
# Environment: CARGO (default cargo); SMOKE_BUILD_TIMEOUT, seconds for cargo to build seam
# (default 3600); SMOKE_START_TIMEOUT, seconds from cargo starting seam to the listening
# line (default 120); SMOKE_STOP_TIMEOUT, seconds from SIGTERM to exit (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO="${CARGO:-cargo}"
build_timeout="${SMOKE_BUILD_TIMEOUT:-3600}"
start_timeout="${SMOKE_START_TIMEOUT:-120}"
stop_timeout="${SMOKE_STOP_TIMEOUT:-60}"

work="$(mktemp -d)"
mkdir "$work/data"
pid=""
cleanup() {
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "smoke-serve: $*" >&2
  echo "--- seam stdout" >&2
  cat "$work/stdout" >&2 || true
  echo "--- cargo and seam stderr (last 50 lines)" >&2
  tail -n 50 "$work/stderr" >&2 || true
  exit 1
}

# Running and not yet exited (a zombie, exited but not reaped, counts as exited).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r "/proc/$1/stat" ]]; then
    local st
    st="$(<"/proc/$1/stat")" || return 1
    st="${st##*) }"
    [[ "${st:0:1}" != Z ]]
  fi
}

echo "smoke-serve: $CARGO run -- serve (builds seam first if needed)"
# `cargo run` replaces itself with seam (exec), so $pid is seam's once it runs. Settings
# from the environment (SEAM_CONFIG, SEAM_KEYS_FILE, ...) are dropped: seam runs on its
# defaults.
# shellcheck disable=SC2086 # CARGO may carry arguments, e.g. "cargo +stable".
env -u SEAM_CONFIG -u SEAM_KEYS_FILE -u SEAM_DATA_DIR -u SEAM_LOG \
  $CARGO run -- serve \
  --data-dir "$work/data" \
  --otlp-grpc-addr 127.0.0.1:0 \
  --ingest-http-addr 127.0.0.1:0 \
  --api-addr 127.0.0.1:0 \
  --pg-addr 127.0.0.1:0 \
  >"$work/stdout" 2>"$work/stderr" &
pid=$!

# Build: until cargo says which binary it runs (its "Running `…`" status line).
deadline=$((SECONDS + build_timeout))
until grep -Eq 'Running.*`' "$work/stderr" 2>/dev/null; do
  alive "$pid" || fail "cargo run exited before running a binary"
  ((SECONDS < deadline)) || fail "cargo did not build seam within ${build_timeout}s"
  sleep 1
done
grep -Eq 'Running.*`[^`]*/seam serve ' "$work/stderr" \
  || fail "cargo run started another binary than seam"

# Start: the listening line on stdout.
deadline=$((SECONDS + start_timeout))
until grep -q '^seam listening ' "$work/stdout" 2>/dev/null; do
  alive "$pid" || fail "seam exited before listening"
  ((SECONDS < deadline)) || fail "no \"seam listening\" line within ${start_timeout}s"
  sleep 0.2
done
echo "smoke-serve: $(grep -m1 '^seam listening ' "$work/stdout")"

# Stop: SIGTERM, then exit 0 within the stop timeout.
kill -TERM "$pid"
deadline=$((SECONDS + stop_timeout))
while alive "$pid"; do
  ((SECONDS < deadline)) || fail "seam did not stop within ${stop_timeout}s of SIGTERM"
  sleep 0.2
done
status=0
wait "$pid" || status=$?
pid=""
((status == 0)) || fail "seam exited with status $status after SIGTERM (want 0)"
echo "smoke-serve: seam stopped gracefully (exit 0)"
