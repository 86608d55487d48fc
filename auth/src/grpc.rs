//! The credential check in front of tonic services.
//!
//! Takes a gRPC request's `authorization` / `x-api-key` metadata (or a verified client
//! certificate, for ingest); gives the request with its [`Principal`](crate::Principal) in the extensions, or
//! `UNAUTHENTICATED` (missing or wrong credential) / `PERMISSION_DENIED` (no such role).

use std::sync::Arc;

use tonic::{Request, Status};

use crate::http::certificate_principal;
use crate::keys::{CredentialStore, Role};
use crate::listen::PeerInfo;

/// A tonic interceptor requiring `role`.
#[derive(Debug, Clone)]
pub struct GrpcGuard {
    store: Arc<CredentialStore>,
    role: Role,
}

impl GrpcGuard {
    /// Services that need `role`.
    pub fn new(store: Arc<CredentialStore>, role: Role) -> Self {
        Self { store, role }
    }
}

impl tonic::service::Interceptor for GrpcGuard {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let by_cert = match self.role {
            Role::Ingest => req
                .extensions()
                .get::<PeerInfo>()
                .and_then(certificate_principal),
            _ => None,
        };
        let result = match by_cert {
            Some(p) => Ok(p),
            None => {
                let m = req.metadata();
                self.store.authorize(
                    m.get("authorization").map(|v| v.as_bytes()),
                    m.get("x-api-key").map(|v| v.as_bytes()),
                    self.role,
                )
            }
        };
        match result {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Ok(req)
            }
            Err(r) if r.is_unauthenticated() => Err(Status::unauthenticated(r.to_string())),
            Err(r) => Err(Status::permission_denied(r.to_string())),
        }
    }
}
