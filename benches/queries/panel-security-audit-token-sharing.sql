-- Generated from dashboards/security-audit.json, panel "Token sharing" (`cargo run -p seam-benches --bin seam-querybench -- panels`).
SELECT token_id, subject, requests, client_ips, client_apps, array_to_string(ips, ', ') AS addresses, first_seen, last_seen FROM audit_token_sharing WHERE last_seen >= $__timeFrom() AND first_seen <= $__timeTo() ORDER BY requests DESC
