-- Generated from dashboards/ingest-health.json, panel "Latest rejects" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT ingest_time, source, file, line, record_index, reason FROM rejects WHERE $__timeFilter(time) ORDER BY ingest_time DESC LIMIT 100
