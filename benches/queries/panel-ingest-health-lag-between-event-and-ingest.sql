-- Generated from dashboards/ingest-health.json, panel "Lag between event and ingest" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT $__timeGroupAlias(time, $__interval), source, avg(lag_avg_ms) AS lag_avg_ms, max(lag_max_ms) AS lag_max_ms FROM ingest_stats WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 1
