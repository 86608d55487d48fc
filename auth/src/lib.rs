//! seam's access control: credentials and roles ([`keys`]), TLS with reload ([`tls`]), the
//! listener every HTTP and gRPC endpoint is served from ([`listen`]), and the checks that
//! guard them ([`http`] for axum routes, [`grpc`] for tonic services).
//!
//! Takes the `[auth]` and `[tls]` configuration; gives a [`keys::CredentialStore`] that turns
//! an `Authorization` header, an `x-api-key` header, a PostgreSQL login or a verified client
//! certificate into a [`keys::Principal`] with roles, and TLS acceptors that pick up a new
//! certificate without a restart. Secrets are never kept: keys are held as SHA-256 digests
//! and compared in constant time.

pub mod grpc;
pub mod http;
pub mod keys;
pub mod listen;
pub mod tls;

pub use keys::{AuthMethod, CredentialStore, Credentials, KeyConfig, Principal, Refusal, Role};
pub use listen::{PeerInfo, SeamListener};
pub use tls::{TlsConfig, TlsReloader};
