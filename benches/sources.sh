#!/usr/bin/env bash
# Throughput of each pulled source ([[sources]]): N records prepared beforehand in a log file,
# an Azurite append blob and a tansu Kafka topic, then a fresh release `seam serve` with the
# source configured; reports records/s and MB/s from seam's start until `/api/v1/sources`
# counts every record, and seam's peak RSS. Results go to benches/README.md.
# Usage: benches/sources.sh [RECORDS] ["file azure_blob kafka"]    (needs: target/release/seam, azurite-blob, tansu,
# python3 with azure-storage-blob and confluent-kafka)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/serve.sh
n="${1:-200000}"
only="${2:-file azure_blob kafka}"   # which sources to measure
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

measure() { # NAME CONFIG_FILE BYTES
  local name="$1" cfg="$2" bytes="$3" t0 t1 got rss
  t0=$(date +%s.%N)
  seam_start "$work/data-$name" "$cfg"
  got=0
  for _ in $(seq 1 6000); do
    got=$(curl -s "http://$api/api/v1/sources" | python3 -c 'import sys,json; print(sum(s["records"] for s in json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "$got" -ge "$n" ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  rss=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
  seam_stop
  python3 -c "import json; d=$t1-$t0; print(json.dumps({'source':'$name','records':$got,'seconds':round(d,2),'records_per_s':round($got/d),'mb_per_s':round($bytes/d/1e6,1),'peak_rss_mib':round($rss/1024)}))"
}

python3 benches/sources/gen.py mule "$n" "$work/mule.log"
python3 benches/sources/gen.py apim "$n" "$work/apim.jsonl"

# --- file
if [[ " $only " == *" file "* ]]; then
cat > "$work/file.toml" <<TOML
[[sources]]
name = "bench-file"
type = "file"
format = "mule"
paths = ["$work/mule.log"]
app = "bench"
TOML
measure file "$work/file.toml" "$(stat -c %s "$work/mule.log")"
fi

# --- azure_blob (Azurite)
if [[ " $only " == *" azure_blob "* ]]; then
bport=$(free_port)
azurite-blob --blobHost 127.0.0.1 --blobPort "$bport" --location "$work/azurite" --silent --skipApiVersionCheck --loose --disableTelemetry >/dev/null 2>&1 &
sleep 3
export BENCH_AZ="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$bport/devstoreaccount1;"
python3 - "$work/apim.jsonl" <<'PY'
import os, sys, datetime
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient.from_connection_string(os.environ["BENCH_AZ"])
c = svc.create_container("insights-logs-gatewaylogs")
h = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
name = ("resourceId=/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/BENCH/"
        f"y={h:%Y}/m={h:%m}/d={h:%d}/h={h:%H}/m=00/PT1H.json")
b = c.get_blob_client(name)
b.create_append_blob()
buf = b""
with open(sys.argv[1], "rb") as f:
    for line in f:
        if len(buf) + len(line) > 4 * 1024 * 1024:
            b.append_block(buf); buf = b""
        buf += line
if buf:
    b.append_block(buf)
PY
cat > "$work/blob.toml" <<TOML
[[sources]]
name = "bench-blob"
type = "azure_blob"
format = "apim"
container = "insights-logs-gatewaylogs"
connection_string_env = "BENCH_AZ"
poll_interval = "1s"
settle = "1s"
TOML
measure azure_blob "$work/blob.toml" "$(stat -c %s "$work/apim.jsonl")"
fi

# --- kafka (tansu)
if [[ " $only " == *" kafka "* ]]; then
kport=$(free_port)
(cd "$work" && exec tansu broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
  --storage-engine "sqlite://tansu.db" >/dev/null 2>&1) &
sleep 3
python3 - "$work/apim.jsonl" "127.0.0.1:$kport" <<'PY'
import sys, json
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[2]})
admin.create_topics([NewTopic("gatewaylogs", 3, 1)])["gatewaylogs"].result()
p = Producer({"bootstrap.servers": sys.argv[2], "linger.ms": 50})
batch = []
def send():
    p.produce("gatewaylogs", ('{"records":[' + ",".join(batch) + "]}").encode())
    p.poll(0)
with open(sys.argv[1]) as f:
    for line in f:
        batch.append(line.strip())
        if len(batch) == 100:
            send(); batch = []
if batch:
    send()
p.flush(120)
PY
cat > "$work/kafka.toml" <<TOML
[[sources]]
name = "bench-kafka"
type = "kafka"
format = "apim"
brokers = ["127.0.0.1:$kport"]
topics = ["gatewaylogs"]
tls = false
TOML
measure kafka "$work/kafka.toml" "$(stat -c %s "$work/apim.jsonl")"
fi
