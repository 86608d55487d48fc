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


def _unquoted(text: str):
    """(index, character, depth) of each character of text outside quotes; depth is the
    number of parentheses open before it (a closing one counts as already closed)."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
            continue
        if quoted:
            continue
        if ch == ")":
            depth -= 1
        yield i, ch, depth
        if ch == "(":
            depth += 1


def _call_end(sql: str, start: int) -> int:
    """The index just past the parenthesis closing the call whose arguments begin at start."""
    for i, ch, depth in _unquoted(sql[start:]):
        if ch == ")" and depth < 0:
            return start + i + 1
    return len(sql)


def _top_level_args(text: str) -> list:
    """The comma-separated arguments of a call, split outside parentheses and quotes."""
    cuts = [i for i, ch, depth in _unquoted(text) if ch == "," and depth == 0]
    bounds = zip([-1] + cuts, cuts + [len(text)])
    return [text[a + 1 : b] for a, b in bounds]


def _named_structs(sql: str) -> str:
    """named_struct('a', x, 'b', y) (DataFusion) -> struct_pack(a := x, b := y) (DuckDB)."""
    while (k := sql.find("named_struct(")) >= 0:
        start = k + len("named_struct(")
        end = _call_end(sql, start)
        args = [a.strip() for a in _top_level_args(sql[start : end - 1])]
        pairs = ", ".join(
            f"{args[i].strip(chr(39))} := {args[i + 1]}" for i in range(0, len(args) - 1, 2)
        )
        sql = sql[:k] + "struct_pack(" + pairs + ")" + sql[end:]
    return sql


# DataFusion functions DuckDB lacks, as DuckDB macros.
MACROS = [
    "CREATE MACRO array_compact(l) AS list_filter(l, lambda x: x IS NOT NULL)",
]


def to_duckdb(sql: str) -> str:
    sql = _named_structs(sql)
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
    for macro in MACROS:
        con.execute(macro)
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
