-- Generated from dashboards/ingest-health.json, panel "Pulled sources: records taken" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT $__timeGroupAlias(time, $__interval), source, sum(records) AS records FROM source_positions WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 1
