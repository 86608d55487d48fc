//! The storage emulators the tests run on 127.0.0.1: Azurite (Azure Blob Storage, npm package
//! `azurite`) and moto in server mode (S3, pip package `moto[server]`), each on a free port
//! over a temporary folder, stopped when dropped; and Python clients (the Azure SDK,
//! boto3) to create containers and buckets and to list what seam wrote.
//!
//! `make test-deps` installs them; without them a test using them fails, saying so.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{find_program, free_port};

/// Azurite's well-known development account key (public, documented by Microsoft).
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Creates containers and writes append blobs with the Azure SDK for Python.
const BLOB_PY: &str = r#"
import os, sys, time
from azure.storage.blob import BlobServiceClient
from azure.core.exceptions import ResourceExistsError

svc = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
cmd, container = sys.argv[1], sys.argv[2]
c = svc.get_container_client(container)
if cmd == "container":
    try:
        c.create_container()
    except ResourceExistsError:
        pass
    sys.exit(0)
if cmd == "list":
    for b in c.list_blobs(name_starts_with=sys.argv[3] if len(sys.argv) > 3 else None):
        print(b.name)
    sys.exit(0)
blob, data_file = sys.argv[3], sys.argv[4]
data = open(data_file, "rb").read()
b = c.get_blob_client(blob)
if not b.exists():
    b.create_append_blob()
MAX = 4 * 1024 * 1024
if cmd == "append":
    for i in range(0, len(data), MAX):
        b.append_block(data[i:i + MAX])
elif cmd == "stream":
    pieces, pause = int(sys.argv[5]), float(sys.argv[6]) / 1000.0
    step = max(1, len(data) // pieces + 1)
    # Pieces end anywhere, mostly inside a record.
    for i in range(0, len(data), step):
        b.append_block(data[i:i + step])
        time.sleep(pause)
else:
    sys.exit("unknown command " + cmd)
"#;

/// Azurite's blob service on a free loopback port over a temporary folder; killed on drop.
pub struct Azurite {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    script: PathBuf,
}

/// Waits until `port` accepts connections, failing if `child` exits first.
fn wait_listening(what: &str, child: &mut Child, port: u16, within: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start with {status}");
        }
        assert!(
            start.elapsed() < within,
            "{what} did not listen on 127.0.0.1:{port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Azurite {
    /// Starts Azurite (no container yet: see [`Azurite::python`] `container`).
    pub fn start() -> Self {
        let python = Command::new("python3")
            .args(["-c", "import azure.storage.blob"])
            .output();
        assert!(
            python.as_ref().is_ok_and(|o| o.status.success()),
            "python3 with the azure-storage-blob package is missing: run `make test-deps` \
             (it runs `python3 -m pip install azure-storage-blob`): {python:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(&dir, port);
        let script = dir.path().join("blob.py");
        std::fs::write(&script, BLOB_PY).unwrap();
        let mut az = Self {
            child,
            port,
            dir,
            script,
        };
        wait_listening("azurite-blob", &mut az.child, port, Duration::from_secs(30));
        az
    }

    fn spawn(dir: &tempfile::TempDir, port: u16) -> Child {
        let program = find_program("azurite-blob").unwrap_or_else(|| {
            panic!(
                "azurite-blob (the Azure Storage emulator) is not installed: run `make test-deps` \
                 (it runs `npm install -g azurite`)"
            )
        });
        Command::new(program)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path())
            .args([
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
                "--disableTelemetry",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start azurite-blob")
    }

    /// Stops the emulator.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The connection string of the development account on this Azurite (path-style
    /// endpoint: the account is the first path segment).
    pub fn connection_string(&self) -> String {
        Self::connection_string_at(self.port)
    }

    /// The same through another port (a [`Proxy`] in front of it).
    pub fn connection_string_at(port: u16) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};\
             BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    }

    pub fn python_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("python3");
        c.arg(&self.script)
            .args(args)
            .env("AZURE_STORAGE_CONNECTION_STRING", self.connection_string())
            .stdin(Stdio::null());
        c
    }

    /// Runs the script (`container NAME`, `list CONTAINER [PREFIX]`, `append ...`); its
    /// standard output.
    pub fn python(&self, args: &[&str]) -> String {
        let out = self.python_command(args).output().unwrap();
        assert!(
            out.status.success(),
            "blob.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The names of the blobs in `container` under `prefix`.
    pub fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        self.python(&["list", container, prefix])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates buckets and lists keys with boto3 against the moto server.
const S3_PY: &str = r#"
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
cmd, bucket = sys.argv[1], sys.argv[2]
if cmd == "bucket":
    s3.create_bucket(Bucket=bucket)
elif cmd == "list":
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[3])
    for page in pages:
        for o in page.get("Contents", []):
            print(o["Key"])
else:
    sys.exit("unknown command " + cmd)
"#;

/// moto's S3 server on a free loopback port; killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Moto {
    pub fn start() -> Self {
        let program = find_program("moto_server").unwrap_or_else(|| {
            panic!(
                "moto_server (an S3-compatible server) is not installed: run `make test-deps` \
                 (it runs `python3 -m pip install 'moto[server]'`)"
            )
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s3.py"), S3_PY).unwrap();
        let port = free_port();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut m = Self { child, port, dir };
        wait_listening("moto_server", &mut m.child, port, Duration::from_secs(60));
        m
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment seam needs to reach this server (fixed test keys, plain HTTP).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
    }

    fn python(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(self.dir.path().join("s3.py"))
            .args(args)
            .env("AWS_ENDPOINT_URL", self.endpoint())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "s3.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates `bucket`.
    pub fn bucket(&self, bucket: &str) {
        self.python(&["bucket", bucket]);
    }

    /// The keys in `bucket` under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.python(&["list", bucket, prefix])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of a server, which a test can take down (connections
/// cut, new ones refused: a network failure) and bring back on the same port.
pub struct Proxy {
    pub port: u16,
    upstream: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream` (call from a Tokio runtime).
    pub async fn start(upstream: u16) -> Self {
        let p = Self {
            port: free_port(),
            upstream,
            tasks: std::sync::Arc::default(),
        };
        p.up().await;
        p
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (upstream, tasks) = (self.upstream, std::sync::Arc::clone(&self.tasks));
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Cuts every connection and stops listening.
    pub fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}
