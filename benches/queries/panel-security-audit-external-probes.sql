-- Generated from dashboards/security-audit.json, panel "External probes" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT time, probe_id, mule_app, flow, method, url_path, client_ip, user_agent, matched_by, rule FROM audit_external_probes WHERE $__timeFilter(time) ORDER BY time DESC LIMIT 500
