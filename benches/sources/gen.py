"""Writes N realistic records for the pulled-source benchmark (benches/sources.sh).

usage: gen.py apim|mule N OUT   (JSON Lines; every record has its own ids and a time near now)
APIM records are the storage-archive shape (one GatewayLogs record per line); Mule records are
JSON Logger lines. Templates are the fixtures in tests/fixtures, so the shapes are the ones
the tests check.
"""
import json, sys, uuid, random, datetime, os

kind, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
root = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures")
name = "apim-gatewaylogs-storage.jsonl" if kind == "apim" else "mule-json-logger.jsonl"
with open(os.path.join(root, name)) as f:
    templates = [json.loads(l) for l in f if l.strip()]
rng = random.Random(42)
start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=30)
with open(out, "w") as f:
    for i in range(n):
        r = json.loads(json.dumps(templates[i % len(templates)]))
        t = (start + datetime.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        cid = str(uuid.UUID(int=rng.getrandbits(128)))
        if kind == "apim":
            r["time"] = t
            r["correlationId"] = cid
        else:
            r["timestamp"] = t
            r["correlationId"] = cid
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
