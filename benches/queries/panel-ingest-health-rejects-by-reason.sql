-- Generated from dashboards/ingest-health.json, panel "Rejects by reason" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT source, reason, count(*) AS rejects, max(ingest_time) AS last FROM rejects WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 3 DESC
