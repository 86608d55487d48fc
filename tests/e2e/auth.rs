//! Credentials, roles and TLS on every listener, the `seam_audit` trail, and the refusal to
//! serve a public address without credentials. Certificates are made with the `openssl`
//! command (a CA, a server certificate for 127.0.0.1 and a client certificate); clients are
//! real: tonic's OTLP client, reqwest, `psql` and `tokio-postgres`, and the `seam` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use seam_auth::Role;
use seam_auth::keys::{generate_secret, key_config, key_toml};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::pgwire::{connect_as, psql_as};
use crate::support::*;

/// A CA, a server certificate signed by it for 127.0.0.1/localhost, and a client
/// certificate signed by it.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a PKI in `dir` with names prefixed by `tag` (so two can live side by side).
pub fn make_pki(dir: &Path, tag: &str) -> Pki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let f = |name: &str| format!("{tag}-{name}");
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=seam test CA"];
    ca.extend_from_slice(&ec);
    let (ca_key, ca_pem) = (f("ca.key"), f("ca.pem"));
    ca.extend_from_slice(&[
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
    ]);
    openssl(&ca, dir);
    for (who, cn, ext) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "/CN=otel-agent", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extf) = (
            f(&format!("{who}.key")),
            f(&format!("{who}.csr")),
            f(&format!("{who}.pem")),
            f(&format!("{who}.ext")),
        );
        std::fs::write(dir.join(&extf), ext).unwrap();
        let mut req = vec!["req", "-subj", cn];
        req.extend_from_slice(&ec);
        req.extend_from_slice(&["-keyout", &key, "-out", &csr]);
        openssl(&req, dir);
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &extf,
                "-out",
                &pem,
            ],
            dir,
        );
    }
    Pki {
        ca: dir.join(f("ca.pem")),
        server_cert: dir.join(f("server.pem")),
        server_key: dir.join(f("server.key")),
        client_cert: dir.join(f("client.pem")),
        client_key: dir.join(f("client.key")),
    }
}

/// Three keys (ingest, query, admin) written to a keys file.
pub struct Keys {
    pub file: PathBuf,
    pub ingest: String,
    pub query: String,
    pub admin: String,
}

pub fn make_keys(dir: &Path) -> Keys {
    let (ingest, query, admin) = (
        generate_secret().unwrap(),
        generate_secret().unwrap(),
        generate_secret().unwrap(),
    );
    let file = dir.join("keys.toml");
    let text = [
        key_config("otel", vec![Role::Ingest], &ingest).unwrap(),
        key_config("grafana", vec![Role::Query], &query).unwrap(),
        key_config("ops", vec![Role::Admin], &admin).unwrap(),
    ]
    .iter()
    .map(|k| key_toml(k, "keys"))
    .collect::<Vec<_>>()
    .join("\n");
    std::fs::write(&file, text).unwrap();
    Keys {
        file,
        ingest,
        query,
        admin,
    }
}

/// seam with `keys` and `pki`'s server certificate, then `tweak`.
async fn tls_stack(
    pki: &Pki,
    keys: &Keys,
    tweak: impl FnOnce(&mut seam::config::SeamConfig),
) -> Stack {
    Stack::start_with(|c| {
        c.auth.keys_file = Some(keys.file.clone());
        c.tls.cert = Some(pki.server_cert.clone());
        c.tls.key = Some(pki.server_key.clone());
        tweak(c);
    })
    .await
}

/// A reqwest client trusting `ca`, optionally presenting the client certificate.
fn https(pki: &Pki, with_client_cert: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder().add_root_certificate(ca);
    if with_client_cert {
        let mut pem = std::fs::read(&pki.client_cert).unwrap();
        pem.extend(std::fs::read(&pki.client_key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn grpc(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client_cert: bool,
) -> TraceServiceClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
        .domain_name("localhost");
    if client_cert {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&pki.client_cert).unwrap(),
            std::fs::read(&pki.client_key).unwrap(),
        ));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    TraceServiceClient::new(channel)
}

fn sample_request() -> ExportTraceServiceRequest {
    serde_json::from_slice(&sample("otlp-traces.json")).unwrap()
}

async fn export(
    client: &mut TraceServiceClient<Channel>,
    key: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(sample_request());
    if let Some(k) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    client.export(req).await.map(|_| ())
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    ct: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let mut r = c.post(url).header("content-type", ct).body(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

async fn sql_as(c: &reqwest::Client, api: &str, key: Option<&str>, q: &str) -> (u16, String) {
    post(
        c,
        &format!("https://{api}/api/v1/sql"),
        key,
        "text/plain",
        q.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_refuses_wrong_credentials_and_audits_queries_over_tls() {
    use tokio_postgres::error::SqlState;
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path(), "a");
    let keys = make_keys(certs.path());
    let stack = tls_stack(&pki, &keys, |_| {}).await;
    let a = stack.addrs;
    let web = https(&pki, false);
    let wrong = generate_secret().unwrap();

    // OTLP/gRPC over TLS: UNAUTHENTICATED without or with a wrong key, PERMISSION_DENIED
    // for a key without the ingest role, OK with the ingest key.
    let mut g = grpc(a.otlp_grpc, &pki, false).await;
    for key in [None, Some(wrong.as_str())] {
        let e = export(&mut g, key).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{key:?}: {e:?}");
    }
    let e = export(&mut g, Some(&keys.query)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    export(&mut g, Some(&keys.ingest)).await.unwrap();

    // OTLP/HTTP and /ingest/apim: 401, 403, then accepted.
    let traces = format!("https://{}/v1/traces", a.ingest_http);
    let body = sample("otlp-traces.json");
    for key in [None, Some(wrong.as_str())] {
        let (s, text) = post(&web, &traces, key, "application/json", body.clone()).await;
        assert_eq!(s, 401, "{text}");
    }
    let (s, _) = post(
        &web,
        &traces,
        Some(&keys.admin),
        "application/json",
        body.clone(),
    )
    .await;
    assert_eq!(s, 403);
    let apim = format!("https://{}/ingest/apim", a.ingest_http);
    let apim_body = sample("apim-gatewaylogs-storage.jsonl");
    let (s, text) = post(&web, &apim, None, "application/x-ndjson", apim_body.clone()).await;
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("credentials required"), "{text}");
    let (s, text) = post(
        &web,
        &apim,
        Some(&keys.ingest),
        "application/x-ndjson",
        apim_body,
    )
    .await;
    assert_eq!(s, 200, "{text}");
    // Plain HTTP to a TLS listener gets nowhere.
    assert!(
        reqwest::Client::new()
            .post(format!("http://{}/v1/traces", a.ingest_http))
            .bearer_auth(&keys.ingest)
            .body(body.clone())
            .send()
            .await
            .is_err()
    );

    // The SQL API: 401 without a key, 403 for the ingest key, rows for the query key.
    let api = a.api.to_string();
    let (s, _) = sql_as(&web, &api, None, "SELECT count(*) AS n FROM spans").await;
    assert_eq!(s, 401);
    let (s, _) = sql_as(&web, &api, Some(&wrong), "SELECT count(*) AS n FROM spans").await;
    assert_eq!(s, 401);
    let (s, _) = sql_as(
        &web,
        &api,
        Some(&keys.ingest),
        "SELECT count(*) AS n FROM spans",
    )
    .await;
    assert_eq!(s, 403);
    let (s, text) = sql_as(
        &web,
        &api,
        Some(&keys.query),
        "SELECT count(*) AS n FROM spans",
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(text, r#"[{"n":20}]"#);
    // /metrics needs the query role; /health is open.
    let metrics = format!("https://{api}/metrics");
    assert_eq!(web.get(&metrics).send().await.unwrap().status(), 401);
    let m = web
        .get(&metrics)
        .bearer_auth(&keys.query)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert_eq!(
        web.get(format!("https://{api}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // An admin action needs the admin role.
    let correlate = format!("https://{api}/api/v1/correlate?since=2024-01-01T00:00:00Z");
    let r = web
        .post(&correlate)
        .bearer_auth(&keys.query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = web
        .post(&correlate)
        .bearer_auth(&keys.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // PostgreSQL: psql over TLS as the query key's user, 28P01 for a wrong password and for
    // a key without the query role.
    let (ok, out) = psql_as(a.pg, "grafana", &keys.query, "SELECT count(*) FROM spans");
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "20");
    let (ok, out) = psql_as(a.pg, "grafana", &wrong, "SELECT 1");
    assert!(!ok && out.to_lowercase().contains("password"), "{out}");
    for (user, password) in [
        ("grafana", wrong.as_str()),
        ("otel", keys.ingest.as_str()),
        ("nobody", keys.query.as_str()),
    ] {
        let err = connect_as(a.pg, &format!("user={user} password={password}"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in"));
        assert_eq!(
            err.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "{user}: {err:?}"
        );
    }

    // seam_audit: refused to the query role on both protocols, readable by the admin.
    let pg = connect_as(a.pg, &format!("user=grafana password={}", keys.query))
        .await
        .unwrap();
    let marker = "SELECT 'audit-marker-7' AS m, count(*) AS n FROM spans WHERE name <> 'x'";
    let rows = pg.simple_query(marker).await.unwrap();
    assert!(!rows.is_empty());
    let err = pg.query("SELECT * FROM seam_audit", &[]).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    let err = pg
        .simple_query("SELECT count(*) FROM seam_audit")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    let (s, text) = sql_as(&web, &api, Some(&keys.query), "SELECT * FROM seam_audit").await;
    assert_eq!(s, 403, "{text}");
    assert!(text.contains("seam_audit"), "{text}");
    let admin_pg = connect_as(a.pg, &format!("user=ops password={}", keys.admin))
        .await
        .unwrap();
    let q = "SELECT principal, auth_method, protocol, client_addr, rows, outcome FROM seam_audit \
             WHERE action = 'query' AND statement LIKE '%audit-marker-7%' AND statement NOT LIKE '%seam_audit%'";
    let found = wait_until("the marker query in seam_audit", VISIBLE, || {
        let admin_pg = &admin_pg;
        async move {
            let rows = admin_pg.query(q, &[]).await.ok()?;
            (!rows.is_empty()).then_some(rows)
        }
    })
    .await
    .unwrap();
    let row = &found[0];
    assert_eq!(row.get::<_, String>("principal"), "grafana");
    assert_eq!(row.get::<_, String>("auth_method"), "scram");
    assert_eq!(row.get::<_, String>("protocol"), "postgres");
    assert!(
        row.get::<_, String>("client_addr")
            .starts_with("127.0.0.1:")
    );
    assert_eq!(row.get::<_, i64>("rows"), 1);
    assert_eq!(row.get::<_, String>("outcome"), "ok");
    // The refusals are there too, with who and why; the HTTP ones and the correlate action.
    let (s, text) = sql_as(
        &web,
        &api,
        Some(&keys.admin),
        "SELECT protocol, outcome, principal, action FROM seam_audit \
         WHERE outcome IN ('refused', 'unauthenticated') OR action = 'correlate' ORDER BY time",
    )
    .await;
    assert_eq!(s, 200, "{text}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let has = |protocol: &str, outcome: &str, principal: &str, action: &str| {
        rows.iter().any(|r| {
            r["protocol"] == protocol
                && r["outcome"] == outcome
                && r["principal"] == principal
                && r["action"] == action
        })
    };
    assert!(has("postgres", "refused", "grafana", "query"), "{rows:?}");
    assert!(has("http", "refused", "grafana", "query"), "{rows:?}");
    assert!(has("http", "unauthenticated", "", "login"), "{rows:?}");
    assert!(has("http", "refused", "otel", "login"), "{rows:?}");
    assert!(has("http", "ok", "ops", "correlate"), "{rows:?}");

    // The audit trail survives a restart (it went through the write-ahead log).
    let dir = stack.stop().await;
    let mut cfg = test_config(dir.path());
    cfg.auth.keys_file = Some(keys.file.clone());
    let server = seam::server::Server::start(cfg).await.unwrap();
    let n = server
        .query()
        .execute("SELECT count(*) AS n FROM seam_audit WHERE statement LIKE '%audit-marker-7%'")
        .await
        .unwrap();
    let n = n.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert!(n >= 1, "{n}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_let_ingest_in_and_files_reload_on_change() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path(), "a");
    let keys = make_keys(certs.path());
    let (cert, key) = (certs.path().join("live.pem"), certs.path().join("live.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let stack = Stack::start_with(|c| {
        c.auth.keys_file = Some(keys.file.clone());
        c.tls.cert = Some(cert.clone());
        c.tls.key = Some(key.clone());
        c.tls.client_ca = Some(pki.ca.clone());
    })
    .await;
    let a = stack.addrs;
    let traces = format!("https://{}/v1/traces", a.ingest_http);
    let body = sample("otlp-traces.json");
    // A client certificate signed by client_ca is an ingest credential, over HTTP and gRPC.
    let with_cert = https(&pki, true);
    let (s, text) = post(&with_cert, &traces, None, "application/json", body.clone()).await;
    assert_eq!(s, 200, "{text}");
    let mut g = grpc(a.otlp_grpc, &pki, true).await;
    export(&mut g, None).await.unwrap();
    // Without one, a key is still needed.
    let plain = https(&pki, false);
    let (s, _) = post(&plain, &traces, None, "application/json", body.clone()).await;
    assert_eq!(s, 401);
    // It does not open the query side.
    let (s, _) = sql_as(&with_cert, &a.api.to_string(), None, "SELECT 1").await;
    assert_eq!(s, 401);

    // A key added to the keys file works without a restart.
    let extra = generate_secret().unwrap();
    let mut text = std::fs::read_to_string(&keys.file).unwrap();
    text.push('\n');
    text.push_str(&key_toml(
        &key_config("late", vec![Role::Query], &extra).unwrap(),
        "keys",
    ));
    std::fs::write(&keys.file, text).unwrap();
    let api = a.api.to_string();
    wait_until("the new key to work", VISIBLE, || {
        let plain = &plain;
        let (api, extra) = (&api, &extra);
        async move {
            let (s, _) = sql_as(plain, api, Some(extra), "SELECT 1").await;
            (s == 200).then_some(())
        }
    })
    .await
    .unwrap();

    // A new certificate from another CA is served once its files change.
    let other = make_pki(certs.path(), "b");
    std::fs::copy(&other.server_key, &key).unwrap();
    std::fs::copy(&other.server_cert, &cert).unwrap();
    let new_client = https(&other, false);
    wait_until("the new certificate to be served", VISIBLE, || {
        let (c, api) = (&new_client, &api);
        async move {
            let r = c.get(format!("https://{api}/health")).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await
    .unwrap();
    // New connections of clients that trust only the old CA are refused by their own TLS
    // check (open connections keep the certificate they started with).
    assert!(
        https(&pki, false)
            .get(format!("https://{api}/health"))
            .send()
            .await
            .is_err()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_can_be_required_for_ingest() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path(), "a");
    let keys = make_keys(certs.path());
    let stack = tls_stack(&pki, &keys, |c| {
        c.tls.client_ca = Some(pki.ca.clone());
        c.tls.client_cert_required = true;
    })
    .await;
    let traces = format!("https://{}/v1/traces", stack.addrs.ingest_http);
    let body = sample("otlp-traces.json");
    // Without a client certificate the handshake fails, even with a valid key.
    let r = https(&pki, false)
        .post(&traces)
        .bearer_auth(&keys.ingest)
        .body(body.clone())
        .send()
        .await;
    assert!(r.is_err(), "{r:?}");
    let (s, text) = post(&https(&pki, true), &traces, None, "application/json", body).await;
    assert_eq!(s, 200, "{text}");
    // The API listener does not ask for one.
    let (s, _) = sql_as(
        &https(&pki, false),
        &stack.addrs.api.to_string(),
        Some(&keys.query),
        "SELECT 1",
    )
    .await;
    assert_eq!(s, 200);
    stack.stop().await;
}

const SEAM: &str = env!("CARGO_BIN_EXE_seam");

#[test]
fn a_public_address_without_keys_is_refused_unless_insecure_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(SEAM)
        .args([
            "serve",
            "--api-addr",
            "0.0.0.0:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--ingest-http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen.api_addr 0.0.0.0:0") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // With the flag it starts, and says loudly what it is doing.
    let log = dir.path().join("stderr.log");
    let r = crate::binary::spawn_custom(
        &data,
        "[auth]\ninsecure_no_auth = true\n",
        &[("SEAM_API_ADDR", "0.0.0.0:0")],
        Some(&log),
    );
    crate::binary::sigterm_and_wait(r);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INSECURE"), "{text}");
}

#[test]
fn commands_take_keys_from_the_environment_and_sighup_reloads_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let keys = make_keys(dir.path());
    let data = dir.path().join("data");
    let r = crate::binary::spawn_custom(
        &data,
        &format!(
            "[auth]\nkeys_file = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
            keys.file.display().to_string(),
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string()
        ),
        &[],
        None,
    );
    let server = format!("https://{}", r.api);
    let query = |envs: &[(&str, &str)], sql: &str| {
        let out = Command::new(SEAM)
            .args(["query", "--server", &server, "--format", "csv", sql])
            .env_remove("SEAM_TOKEN")
            .env_remove("SEAM_TOKEN_FILE")
            .env("SEAM_CA_CERT", &pki.ca)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = query(&[], "SELECT 1 AS one");
    assert!(
        !ok && out.contains("401") && out.contains("credentials required"),
        "{out}"
    );
    let (ok, out) = query(&[("SEAM_TOKEN", &keys.query)], "SELECT 1 AS one");
    assert!(ok, "{out}");
    assert_eq!(out, "one\n1\n");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", keys.admin)).unwrap();
    let tf = token_file.display().to_string();
    let (ok, out) = query(
        &[("SEAM_TOKEN_FILE", &tf)],
        "SELECT count(*) AS n FROM seam_audit",
    );
    assert!(ok, "{out}");

    // seam ingest with the ingest key from the environment.
    let out = Command::new(SEAM)
        .args([
            "ingest",
            "--no-progress",
            "--to",
            &format!("https://{}", r.http),
        ])
        .arg(seam_tests::samples_dir().join("mule-log4j.log"))
        .env("SEAM_TOKEN", &keys.ingest)
        .env("SEAM_CA_CERT", &pki.ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGHUP re-reads the keys file (and the reload is audited).
    let late = generate_secret().unwrap();
    let mut text = std::fs::read_to_string(&keys.file).unwrap();
    text.push('\n');
    text.push_str(&key_toml(
        &key_config("late", vec![Role::Query], &late).unwrap(),
        "keys",
    ));
    std::fs::write(&keys.file, text).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = std::time::Instant::now() + VISIBLE;
    loop {
        let (ok, out) = query(
            &[("SEAM_TOKEN", &keys.admin)],
            "SELECT count(*) AS n FROM seam_audit WHERE action = 'reload' AND outcome = 'ok'",
        );
        let (late_ok, _) = query(&[("SEAM_TOKEN", &late)], "SELECT 1");
        if ok && late_ok && out != "n\n0\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload seen: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    crate::binary::sigterm_and_wait(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_work_without_tls_too_with_the_sdk_exporter() {
    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    use tokio_postgres::error::SqlState;
    let certs = tempfile::tempdir().unwrap();
    let keys = make_keys(certs.path());
    let stack = Stack::start_with(|c| c.auth.keys_file = Some(keys.file.clone())).await;
    let a = stack.addrs;
    // The OpenTelemetry SDK's gRPC exporter with the ingest key in its metadata.
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        "authorization",
        format!("Bearer {}", keys.ingest).parse().unwrap(),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", a.otlp_grpc))
        .with_metadata(metadata)
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let mut span = provider.tracer("auth-e2e").start("GET /keyed");
    span.end();
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .unwrap()
        .unwrap();
    // Without a key: UNAUTHENTICATED; HTTP 401; PostgreSQL 28P01.
    let mut raw = TraceServiceClient::connect(format!("http://{}", a.otlp_grpc))
        .await
        .unwrap();
    let e = export(&mut raw, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let web = reqwest::Client::new();
    let traces = format!("http://{}/v1/traces", a.ingest_http);
    let body = sample("otlp-traces.json");
    let (s, _) = post(&web, &traces, None, "application/json", body.clone()).await;
    assert_eq!(s, 401);
    let (s, _) = post(&web, &traces, Some(&keys.ingest), "application/json", body).await;
    assert_eq!(s, 200);
    let err = connect_as(a.pg, "user=grafana password=wrong-password-123")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD));
    // The query key reads what the exporter (1 span) and the HTTP request (20) sent.
    let pg = connect_as(a.pg, &format!("user=grafana password={}", keys.query))
        .await
        .unwrap();
    let n: i64 = pg
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 21);
    let _ = provider.shutdown();
    stack.stop().await;
}
