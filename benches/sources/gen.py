"""Writes N realistic records for the pulled-source benchmark (benches/sources.sh), or records
up to a size for the big-file benchmark (benches/ingest_big.sh).

usage: gen.py apim|mule N|SIZE OUT   (JSON Lines; every record has its own ids and a time near
now; SIZE such as 1024MiB or 1GiB writes records until the file holds that many bytes)
APIM records are the storage-archive shape (one GatewayLogs record per line); Mule records are
JSON Logger lines. Templates are the fixtures in tests/fixtures, so the shapes are the ones
the tests check.
"""
import json, sys, uuid, random, datetime, os

kind, count, out = sys.argv[1], sys.argv[2], sys.argv[3]
units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
max_bytes = next((int(count[:-3]) * m for u, m in units.items() if count.endswith(u)), None)
n = None if max_bytes is not None else int(count)
root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
name = "apim-gatewaylogs-storage.jsonl" if kind == "apim" else "mule-json-logger.jsonl"
with open(os.path.join(root, name)) as f:
    templates = [json.loads(l) for l in f if l.strip()]
rng = random.Random(42)
start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30)
written = 0
i = 0
with open(out, "w") as f:
    while (written < max_bytes) if n is None else (i < n):
        r = json.loads(json.dumps(templates[i % len(templates)]))
        t = (start + datetime.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        cid = str(uuid.UUID(int=rng.getrandbits(128)))
        if kind == "apim":
            r["time"] = t
            r["correlationId"] = cid
        else:
            r["timestamp"] = t
            r["correlationId"] = cid
        line = json.dumps(r, separators=(",", ":")) + "\n"
        f.write(line)
        written += len(line)
        i += 1
