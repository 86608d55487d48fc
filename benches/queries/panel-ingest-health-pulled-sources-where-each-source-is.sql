-- Generated from dashboards/ingest-health.json, panel "Pulled sources: where each source is" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT source, source_type, count(DISTINCT key) AS positions, max(time) AS last_step, sum(records) AS records, sum(bytes) AS bytes FROM source_positions WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 1
