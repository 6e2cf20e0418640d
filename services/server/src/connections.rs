//! The gRPC listener's connections, bounded: at most `max_connections` open at once (one over is closed at once,
//! so a flood of silent sockets cannot use up the process's file descriptors and lock real clients out), and a
//! connection that has not sent its first bytes within the handshake timeout is closed; with TLS, the handshake
//! must also finish within it. TLS is ours (`tls.rs`, reloadable), each handshake in its own task so a slow one
//! holds up no other. Established HTTP/2 connections are kept honest by keepalive pings and a maximum age
//! (`server.rs`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tablecrypt_api::auth::PeerInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::tls::ServerTls;

/// Connections accepted (and, over TLS, through their handshake) not yet taken by the server: a few. Plaintext
/// accepts wait for the server beyond it; TLS handshakes are bounded by the connection permits instead.
const READY_QUEUE: usize = 64;

/// Connections accepted from `listener`, each holding one of `max` permits until it closes; over TLS when `tls` is
/// given (the handshake within `handshake_within`).
pub fn bounded(
    listener: TcpListener,
    max: usize,
    handshake_within: Duration,
    tls: Option<Arc<ServerTls>>,
) -> impl Stream<Item = std::io::Result<Connection>> {
    let permits = Arc::new(Semaphore::new(max));
    let (ready, incoming) = tokio::sync::mpsc::channel(READY_QUEUE);
    // Ends when the server drops the stream (it stopped).
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = ready.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                // A failed accept (a reset connection, EMFILE) is the client's or momentary: keep serving.
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached (max_connections); closing a new connection");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let bounded = Bounded {
                remote_addr: stream.peer_addr().ok(),
                stream,
                _permit: permit,
                deadline: Some(Box::pin(tokio::time::sleep(handshake_within))),
            };
            match &tls {
                None => {
                    if ready.send(Ok(Connection::Plain(bounded))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let ready = ready.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_within, acceptor.accept(bounded)).await
                        {
                            Ok(Ok(stream)) => {
                                let _ = ready.send(Ok(Connection::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(incoming)
}

/// A connection the server serves: plaintext or TLS.
pub enum Connection {
    Plain(Bounded),
    Tls(Box<tokio_rustls::server::TlsStream<Bounded>>),
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Self::Plain(bounded) => PeerInfo {
                remote_addr: bounded.remote_addr,
                certificates: None,
            },
            Self::Tls(stream) => {
                let (bounded, session) = stream.get_ref();
                PeerInfo {
                    remote_addr: bounded.remote_addr,
                    certificates: session.peer_certificates().map(|certs| {
                        Arc::new(certs.iter().map(|c| c.clone().into_owned()).collect())
                    }),
                }
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An accepted connection that holds its permit until dropped, and fails its reads if nothing arrived in time.
pub struct Bounded {
    remote_addr: Option<std::net::SocketAddr>,
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    /// Until the first bytes arrive; then `None`.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Bounded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no bytes within the connection handshake timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
