#!/usr/bin/env python3
"""DuckDB side of seam's query benchmark (benches/src/querybench.rs).

Reads a JSON spec on standard input:
  {"data_dir": "...", "runs": 3, "empty": {"<table>": "<empty Parquet file of its schema>"},
   "views": [{"name": "tokens", "sql": "<seam's view SQL>"}, ...],
   "queries": [{"id": 0, "sql": "<the SQL sent to seam>"}, ...]}
and writes a JSON array on standard output: {"id", "ms" (median of the timed runs, after one
warm-up run), "rows"} or {"id", "error"} per query.

Each table becomes a view over exactly the Parquet files its manifest
(<data_dir>/tables/<table>/_manifest.json) lists, the files seam reads. seam's views are
created from seam's own SQL, translated to DuckDB's dialect by `to_duckdb`, and so are the
queries: the same SQL text, only function names that differ between the engines are mapped.
DuckDB runs in-process with its default settings (one thread per core), the session time zone
set to UTC as seam's.
"""
import json
import os
import re
import statistics
import sys
import time

import duckdb

# seam (DataFusion) function -> DuckDB function of the same meaning.
RENAMES = [
    (r"\bapprox_percentile_cont\(", "approx_quantile("),
    (r"\barray_sort\(", "list_sort("),
    (r"\bfirst_value\(", "first("),
    (r"\bmake_array\(", "list_value("),
]


def to_duckdb(sql: str) -> str:
    for pattern, repl in RENAMES:
        sql = re.sub(pattern, repl, sql)
    # Timestamps to integer nanoseconds: DataFusion casts, DuckDB has epoch_ns() (the
    # timestamp columns are the ones named *time; other integer casts stay casts).
    sql = re.sub(r"CAST\((\w*time) AS BIGINT\)", r"epoch_ns(\1)", sql)
    return sql


def main() -> int:
    spec = json.load(sys.stdin)
    data_dir = spec["data_dir"]
    runs = max(1, int(spec.get("runs", 3)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tables_dir = os.path.join(data_dir, "tables")
    # Every table seam knows, as an empty file of its schema, replaced by its files if any.
    tables = dict((t, [p]) for t, p in spec.get("empty", {}).items())
    for table in sorted(os.listdir(tables_dir)) if os.path.isdir(tables_dir) else []:
        manifest = os.path.join(tables_dir, table, "_manifest.json")
        if not os.path.exists(manifest):
            continue
        with open(manifest) as f:
            files = [os.path.join(data_dir, e["path"]) for e in json.load(f)["files"]]
        if files:
            tables[table] = files
    for table, files in sorted(tables.items()):
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in files)
        con.execute(
            f'CREATE VIEW "{table}" AS SELECT * FROM read_parquet([{listed}], union_by_name = true)'
        )
    for view in spec["views"]:
        try:
            con.execute(f'CREATE VIEW "{view["name"]}" AS {to_duckdb(view["sql"])}')
        except duckdb.Error as e:
            print(f"view {view['name']}: {e}", file=sys.stderr)
    out = []
    for q in spec["queries"]:
        sql = to_duckdb(q["sql"])
        times = []
        try:
            rows = 0
            for i in range(runs + 1):
                t = time.perf_counter()
                rows = len(con.execute(sql).fetchall())
                if i > 0:
                    times.append((time.perf_counter() - t) * 1e3)
            out.append({"id": q["id"], "ms": statistics.median(times), "rows": rows})
        except duckdb.Error as e:
            out.append({"id": q["id"], "error": str(e).splitlines()[0]})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
