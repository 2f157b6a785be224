//! An attested TLS stream and the handshakes that make one.
//!
//! After the TLS handshake the server sends [`ACCEPTED`], so that the client knows the server
//! verified it: in TLS 1.3 the client's handshake ends when it has sent its last flight,
//! before the server has checked its certificate. The confirmation is a fixed, public
//! 8 bytes, sent once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::cert::AttestedCertificate;
use crate::error::ChannelError;
use crate::records::{self, RecordConfig, RecordReader, RecordWriter};
use crate::tls;
use crate::verify::{AttestedPeer, PeerExpectation, PeerVerifier};

/// What the server sends once it has verified the client.
const ACCEPTED: [u8; 8] = *b"chiron\x01\n";

/// A TLS 1.3 stream whose peer passed verification. Read and write it directly, or (as the
/// roles should) through fixed-size records with [`AttestedStream::into_records`].
#[derive(Debug)]
pub struct AttestedStream<S = TcpStream> {
    stream: TlsStream<S>,
    peer: AttestedPeer,
}

impl<S> AttestedStream<S> {
    /// The verified peer.
    pub fn peer(&self) -> &AttestedPeer {
        &self.peer
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AttestedStream<S> {
    /// A reader and a writer of `config`'s fixed-size records on this stream.
    pub fn into_records(
        self,
        config: RecordConfig,
    ) -> (RecordReader<ReadHalf<Self>>, RecordWriter<WriteHalf<Self>>) {
        records::split(self, config)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AttestedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for AttestedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Runs the client (worker) side of the handshake on `io` with `certificate`, and requires
/// the server to be the peer `expectation` describes and to accept this end.
pub async fn client_handshake<S>(
    io: S,
    certificate: AttestedCertificate,
    expectation: &PeerExpectation,
) -> Result<AttestedStream<S>, ChannelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (config, verifier) = tls::client_config(certificate, expectation)?;
    let connector = TlsConnector::from(Arc::new(config));
    with_timeout(expectation, async {
        let handshake = connector.connect(tls::server_name(), io).await;
        let mut stream = handshake.map_err(|e| refusal(&verifier, e))?;
        let peer = verified(&verifier)?;
        // Every write is taken whole, so a record leaves as a fixed pattern of TLS records.
        stream.get_mut().1.set_buffer_limit(None);
        let mut accepted = [0; ACCEPTED.len()];
        stream
            .read_exact(&mut accepted)
            .await
            .map_err(ChannelError::from_io)?;
        if accepted != ACCEPTED {
            return Err(ChannelError::NoConfirmation);
        }
        Ok(AttestedStream {
            stream: stream.into(),
            peer,
        })
    })
    .await
}

/// Runs the server (parameter server) side of the handshake on `io` with `certificate`, and
/// requires the client to be the peer `expectation` describes.
pub async fn server_handshake<S>(
    io: S,
    certificate: AttestedCertificate,
    expectation: &PeerExpectation,
) -> Result<AttestedStream<S>, ChannelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (config, verifier) = tls::server_config(certificate, expectation)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    with_timeout(expectation, async {
        let handshake = acceptor.accept(io).await;
        let mut stream = handshake.map_err(|e| refusal(&verifier, e))?;
        let peer = verified(&verifier)?;
        stream.get_mut().1.set_buffer_limit(None);
        stream
            .write_all(&ACCEPTED)
            .await
            .map_err(ChannelError::from_io)?;
        stream.flush().await.map_err(ChannelError::from_io)?;
        Ok(AttestedStream {
            stream: stream.into(),
            peer,
        })
    })
    .await
}

/// `handshake`, given up after the expectation's timeout.
async fn with_timeout<T>(
    expectation: &PeerExpectation,
    handshake: impl Future<Output = Result<T, ChannelError>>,
) -> Result<T, ChannelError> {
    tokio::time::timeout(expectation.timeout(), handshake)
        .await
        .unwrap_or_else(|_| Err(ChannelError::HandshakeTimeout(expectation.timeout())))
}

/// Why a handshake failed: this end's own refusal of the peer if there was one (the typed
/// reason), else what the connection reported.
fn refusal(verifier: &PeerVerifier, error: io::Error) -> ChannelError {
    match verifier.take_outcome() {
        Some(Err(refused)) => refused,
        _ => ChannelError::from_io(error),
    }
}

/// The peer the verifier accepted during a completed handshake.
fn verified(verifier: &PeerVerifier) -> Result<AttestedPeer, ChannelError> {
    verifier
        .take_outcome()
        .unwrap_or(Err(ChannelError::NoPeerCertificate))
}
