//! The listener every HTTP and gRPC endpoint is served from: plain TCP, or TLS with the
//! current certificate of a [`TlsReloader`].
//!
//! Takes a bound `TcpListener` and optional TLS; gives connections with their [`PeerInfo`]
//! (address, and the fingerprint of a verified client certificate) as an axum
//! [`Listener`](axum::serve::Listener) and as a stream for tonic. Handshakes run in their own
//! tasks with a time limit, so a slow or silent client cannot hold up the others.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::tls::{Side, TlsReloader};

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub addr: SocketAddr,
    /// `cert:` and the first 16 hex digits of the SHA-256 fingerprint of the client
    /// certificate, when one was verified against `[tls] client_ca`.
    pub client_cert: Option<String>,
    /// Whether the connection is encrypted.
    pub tls: bool,
}

/// A connection's byte stream.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: PeerInfo,
}

impl Conn {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// The fingerprint name of a verified client certificate.
fn client_cert(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<String> {
    let cert = tls.get_ref().1.peer_certificates()?.first()?;
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    Some(format!("cert:{}", &hex::encode(d.as_ref())[..16]))
}

/// Accepted (and, with TLS, handshaken) connections.
#[derive(Debug)]
pub struct SeamListener {
    rx: mpsc::Receiver<Conn>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for SeamListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SeamListener {
    /// Accepts on `listener`; with `tls`, only TLS connections (handshakes that fail or take
    /// longer than [`HANDSHAKE_TIMEOUT`] are dropped and logged at debug level).
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn new(listener: TcpListener, tls: Option<(Arc<TlsReloader>, Side)>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel::<Conn>(64);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = tx.closed() => break,
                };
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, %local, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let conn = Conn {
                            io: Io::Plain(stream),
                            peer: PeerInfo {
                                addr,
                                client_cert: None,
                                tls: false,
                            },
                        };
                        if tx.send(conn).await.is_err() {
                            break;
                        }
                    }
                    Some((reloader, side)) => {
                        let acceptor = reloader.acceptor(*side);
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => {
                                    let peer = PeerInfo {
                                        addr,
                                        client_cert: client_cert(&s),
                                        tls: true,
                                    };
                                    let _ = tx
                                        .send(Conn {
                                            io: Io::Tls(Box::new(s)),
                                            peer,
                                        })
                                        .await;
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                }
                                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(Self { rx, local, task })
    }

    /// The bound address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The connections as a stream (for tonic's `serve_with_incoming_shutdown`).
    pub fn into_incoming(
        mut self,
    ) -> impl futures::Stream<Item = Result<Conn, io::Error>> + Send + 'static {
        let rx = std::mem::replace(&mut self.rx, mpsc::channel(1).1);
        let guard = self;
        futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|c| (Ok(c), (rx, guard)))
        })
    }
}

impl axum::serve::Listener for SeamListener {
    type Io = Conn;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Conn, PeerInfo) {
        match self.rx.recv().await {
            Some(c) => {
                let p = c.peer.clone();
                (c, p)
            }
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<PeerInfo> {
        Ok(PeerInfo {
            addr: self.local,
            client_cert: None,
            tls: false,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, SeamListener>>
    for PeerInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, SeamListener>) -> Self {
        stream.remote_addr().clone()
    }
}
