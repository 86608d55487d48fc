-- Generated from dashboards/ingest-health.json, panel "Records rejected and duplicates per source" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT $__timeGroupAlias(time, $__interval), source, sum(rejected) AS rejected, sum(duplicates) AS duplicates FROM ingest_stats WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 1
