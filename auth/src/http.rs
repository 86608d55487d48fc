//! The credential check in front of axum routes.
//!
//! Takes a request, the [`CredentialStore`] and the role the routes need; gives the request
//! with its [`Principal`] in the extensions, or a refusal: 401 with `WWW-Authenticate:
//! Bearer realm="seam"` for a missing or wrong credential, 403 for a known one without the
//! role. Ingest routes also let in a client certificate verified by `[tls] client_ca`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::keys::{AuthMethod, CredentialStore, Principal, Refusal, Role};
use crate::listen::PeerInfo;

/// Called for every refused request (seam writes refused queries to `seam_audit`).
pub type OnRefused = Arc<dyn Fn(&Refusal, Option<&PeerInfo>, &str) + Send + Sync>;

/// What a group of routes needs.
#[derive(Clone)]
pub struct Guard {
    store: Arc<CredentialStore>,
    role: Role,
    on_refused: Option<OnRefused>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("role", &self.role).finish()
    }
}

impl Guard {
    /// Routes that need `role`.
    pub fn new(store: Arc<CredentialStore>, role: Role) -> Self {
        Self {
            store,
            role,
            on_refused: None,
        }
    }

    /// Also reports each refusal to `f`.
    pub fn on_refused(mut self, f: OnRefused) -> Self {
        self.on_refused = Some(f);
        self
    }

    /// `router` behind this guard.
    pub fn protect<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(self, check))
    }
}

/// The principal of a client certificate on an ingest route.
pub fn certificate_principal(peer: &PeerInfo) -> Option<Principal> {
    peer.client_cert.as_ref().map(|name| Principal {
        name: name.clone(),
        roles: vec![Role::Ingest],
        method: AuthMethod::Certificate,
    })
}

/// The response for a refusal.
pub fn refusal_response(r: &Refusal) -> Response {
    let (status, kind) = if r.is_unauthenticated() {
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    } else {
        (StatusCode::FORBIDDEN, "forbidden")
    };
    let body = serde_json::json!({"error": r.to_string(), "kind": kind}).to_string();
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if r.is_unauthenticated()
        && let Ok(v) = header::HeaderValue::from_str("Bearer realm=\"seam\"")
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn check(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .map(|c| c.0.clone());
    let by_cert = match (&peer, g.role) {
        (Some(p), Role::Ingest) => certificate_principal(p),
        _ => None,
    };
    let result = match by_cert {
        Some(p) => Ok(p),
        None => {
            let h = req.headers();
            g.store.authorize(
                h.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
                h.get("x-api-key").map(|v| v.as_bytes()),
                g.role,
            )
        }
    };
    match result {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(r) => {
            tracing::debug!(path = req.uri().path(), refusal = %r, "refused a request");
            if let Some(f) = &g.on_refused {
                f(&r, peer.as_ref(), req.uri().path());
            }
            // Read (up to 1 MiB of) the body the client is still sending, so that it gets the
            // 401 rather than a connection closed under its upload.
            let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
            refusal_response(&r)
        }
    }
}
