-- Generated from dashboards/ingest-health.json, panel "Records accepted per source" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT $__timeGroupAlias(time, $__interval), source, sum(accepted) AS accepted FROM ingest_stats WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 1
