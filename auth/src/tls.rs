//! TLS for every listener, with reload.
//!
//! Takes `[tls]`: a PEM certificate chain and private key, and optionally a CA whose client
//! certificates authenticate ingest clients (mutual TLS); gives TLS acceptors (rustls, ring)
//! for each kind of listener. [`TlsReloader::reload`] reads the files again (seam calls it on
//! SIGHUP and when a file's modification time or size changes); connections that are open
//! keep the certificate they started with, and a broken new file leaves the old one in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// `[tls]`: one certificate for every listener.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). With `key`, every listener speaks TLS only
    /// (PostgreSQL: TLS is offered through the protocol's SSLRequest).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM CA certificates: ingest clients (OTLP gRPC and HTTP, `/ingest/*`) presenting a
    /// certificate it signed are let in with the ingest role, without a key.
    pub client_ca: Option<PathBuf>,
    /// Refuse ingest connections without such a certificate (mutual TLS required).
    pub client_cert_required: bool,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("TLS file {path}: {why}")]
    File {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS setup: {0}")]
    Setup(String),
    /// The settings do not fit together.
    #[error("[tls]: {0}")]
    Config(String),
}

/// Which listener an acceptor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// HTTP and gRPC listeners without client certificates (the API listener).
    Http,
    /// Ingest listeners: client certificates from `client_ca` are asked for.
    Ingest,
    /// The PostgreSQL listener (no ALPN).
    Postgres,
}

struct Acceptors {
    http: TlsAcceptor,
    ingest: TlsAcceptor,
    postgres: TlsAcceptor,
}

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptors")
    }
}

type Stamp = Option<(std::time::SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The current TLS acceptors, rebuilt from the files on [`TlsReloader::reload`].
#[derive(Debug)]
pub struct TlsReloader {
    config: TlsConfig,
    current: RwLock<Arc<Acceptors>>,
    stamps: Mutex<Vec<Stamp>>,
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

fn build(config: &TlsConfig) -> Result<Acceptors, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&config.cert, &config.key) else {
        return Err(TlsError::Config("cert and key go together".into()));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| file_err(key_path, e))?;
    let server = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
                  alpn: &[&[u8]]|
     -> Result<TlsAcceptor, TlsError> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Setup(format!("certificate and key: {e}")))?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(cfg)))
    };
    let http_alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
    let verifier = match &config.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| file_err(ca, format!("not a CA certificate: {e}")))?;
            }
            let b =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let b = if config.client_cert_required {
                b
            } else {
                b.allow_unauthenticated()
            };
            Some(
                b.build()
                    .map_err(|e| TlsError::Setup(format!("client_ca: {e}")))?,
            )
        }
        None if config.client_cert_required => {
            return Err(TlsError::Config(
                "client_cert_required needs client_ca".into(),
            ));
        }
        None => None,
    };
    Ok(Acceptors {
        http: server(None, http_alpn)?,
        ingest: server(verifier, http_alpn)?,
        postgres: server(None, &[b"postgresql"])?,
    })
}

impl TlsReloader {
    /// The acceptors for `config`, or `None` when no certificate is configured.
    ///
    /// # Errors
    /// Unreadable files, a key that does not match, a client CA without certificates.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        if config.cert.is_none() && config.key.is_none() {
            if config.client_ca.is_some() {
                return Err(TlsError::Config(
                    "client_ca needs cert and key (mutual TLS is TLS first)".into(),
                ));
            }
            return Ok(None);
        }
        let r = Self {
            config: config.clone(),
            current: RwLock::new(Arc::new(build(config)?)),
            stamps: Mutex::new(Vec::new()),
        };
        if let Ok(mut s) = r.stamps.lock() {
            *s = r.stamps_now();
        }
        Ok(Some(Arc::new(r)))
    }

    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.config.cert, &self.config.key, &self.config.client_ca]
            .into_iter()
            .flatten()
    }

    fn stamps_now(&self) -> Vec<Stamp> {
        self.files().map(|p| stamp(p)).collect()
    }

    /// Whether a file changed since it was last read.
    pub fn changed_on_disk(&self) -> bool {
        let now = self.stamps_now();
        self.stamps.lock().map(|s| *s != now).unwrap_or(false)
    }

    /// Reads the files again; new connections get the new certificate.
    ///
    /// # Errors
    /// As [`TlsReloader::load`]; the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let now = self.stamps_now();
        // Remember what was seen even when it is broken, so a bad file is reported once
        // per change rather than at every check.
        if let Ok(mut s) = self.stamps.lock() {
            *s = now;
        }
        let fresh = build(&self.config)?;
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(fresh);
        }
        Ok(())
    }

    /// The acceptor for new connections on a `side` listener.
    pub fn acceptor(&self, side: Side) -> TlsAcceptor {
        let current = self
            .current
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|p| Arc::clone(&p.into_inner()));
        match side {
            Side::Http => current.http.clone(),
            Side::Ingest => current.ingest.clone(),
            Side::Postgres => current.postgres.clone(),
        }
    }

    /// Whether ingest clients may authenticate with a certificate.
    pub fn mutual(&self) -> bool {
        self.config.client_ca.is_some()
    }
}
