//! Enclaves as the host holds them, and speaking frames to them.
//!
//! The frame format is [`chiron_proto::wire`]'s (little-endian `u32` length, then postcard),
//! written here with async I/O so no thread blocks on an enclave. Starting enclaves is the
//! launchers' job (`crate::launcher`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chiron_proto::wire::{EnclaveFrame, Frame, FrameError, HostFrame, MAX_FRAME};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::launcher::Instance;

/// The role an enclave process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs one training job.
    Train,
    /// Serves queries on one model.
    Query,
    /// A distributed job's parameter server.
    ParameterServer,
    /// One of a distributed job's training enclaves.
    Worker,
}

impl Role {
    /// The enclave's `--role` argument.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Query => "query",
            Self::ParameterServer => "ps",
            Self::Worker => "worker",
        }
    }
}

/// Something went wrong with an enclave. The messages are fixed texts (plus OS errors about
/// the host's own files and sockets): nothing that came from inside an enclave.
#[derive(Debug, Error)]
pub enum EnclaveError {
    /// The process could not be started.
    #[error("cannot start the enclave binary {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster did not start the enclave's pod, in the API server's words.
    #[error("the cluster did not start the enclave: {0}")]
    Cluster(String),
    /// The process exited or closed its output before announcing its port.
    #[error("the enclave exited before it started listening")]
    NoListeningLine,
    /// The process did not announce its port in time.
    #[error("the enclave did not start listening within {0:?}")]
    StartupTimeout(Duration),
    /// Connecting to the announced port failed.
    #[error("cannot connect to the enclave: {0}")]
    Connect(#[source] std::io::Error),
    /// Reading or writing a frame failed (the enclave probably exited).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The enclave did not answer in time.
    #[error("the enclave did not answer within {0:?}")]
    Timeout(Duration),
    /// The enclave answered with a frame that does not fit the request.
    #[error("the enclave answered with an unexpected {0} frame")]
    Unexpected(&'static str),
    /// The enclave refused the request with a public label.
    #[error("the enclave refused the request: {0}")]
    Refused(String),
}

impl EnclaveError {
    /// True when the connection can no longer be trusted to be in step (the enclave must be
    /// discarded); false when the enclave answered and can take another request.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// Cleans a public failure label before it is logged or returned: printable ASCII only, and
/// bounded, so a misbehaving enclave cannot forge log lines or flood them.
pub fn clean_label(label: &str) -> String {
    const MAX: usize = 120;
    let cleaned: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX)
        .collect();
    if cleaned.is_empty() {
        "enclave failed".to_owned()
    } else {
        cleaned
    }
}

/// The tracing target of the frame log: one debug line per frame relayed (direction, kind,
/// size), which is exactly what the platform can see of the traffic. Enable it with
/// `RUST_LOG=info,chiron_host::frames=debug`.
pub const FRAME_LOG: &str = "chiron_host::frames";

/// Writes one frame (same bytes as [`chiron_proto::wire::write_frame`]).
pub async fn write_frame<T: Frame>(
    w: &mut (impl AsyncWrite + Unpin),
    frame: &T,
) -> Result<(), FrameError> {
    let bytes = postcard::to_allocvec(frame)?;
    if bytes.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    log_frame::<T>(frame.kind(), bytes.len());
    // MAX_FRAME fits in u32.
    w.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame (same bytes as [`chiron_proto::wire::read_frame`]). Not cancel-safe: drop
/// the connection if a read is abandoned half way.
pub async fn read_frame<T: Frame>(r: &mut (impl AsyncRead + Unpin)) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    let frame: T = postcard::from_bytes(&buf)?;
    log_frame::<T>(frame.kind(), len);
    Ok(frame)
}

fn log_frame<T: Frame>(kind: &str, len: usize) {
    tracing::debug!(target: FRAME_LOG, "{} {kind} {} bytes", T::DIRECTION, len + 4);
}

/// One enclave and the host's connection to it. Dropping it stops the enclave.
#[derive(Debug)]
pub struct Enclave {
    /// Frames from the enclave.
    pub reader: OwnedReadHalf,
    /// Frames to the enclave.
    pub writer: OwnedWriteHalf,
    /// The address the enclave's peers reach it at (a parameter server's workers).
    pub ip: IpAddr,
    /// What stops it (absent when the connection was made to something the host did not
    /// start, as in tests).
    pub instance: Option<Instance>,
}

impl Enclave {
    /// Wraps a connection (and what stops the enclave behind it, if the host started it).
    pub fn from_stream(stream: TcpStream, instance: Option<Instance>) -> Self {
        let ip = stream
            .peer_addr()
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        let (reader, writer) = stream.into_split();
        Self {
            reader,
            writer,
            ip,
            instance,
        }
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &HostFrame) -> Result<(), EnclaveError> {
        Ok(write_frame(&mut self.writer, frame).await?)
    }

    /// Receives a frame, giving up after `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<EnclaveFrame, EnclaveError> {
        tokio::time::timeout(limit, read_frame(&mut self.reader))
            .await
            .map_err(|_| EnclaveError::Timeout(limit))?
            .map_err(EnclaveError::from)
    }

    /// Sends a request and waits for its answer.
    pub async fn request(
        &mut self,
        frame: &HostFrame,
        limit: Duration,
    ) -> Result<EnclaveFrame, EnclaveError> {
        self.send(frame).await?;
        self.recv(limit).await
    }

    /// Asks for evidence and returns its bytes.
    pub async fn evidence(
        &mut self,
        nonce: [u8; 32],
        context: [u8; 32],
        limit: Duration,
    ) -> Result<Vec<u8>, EnclaveError> {
        match self
            .request(&HostFrame::GetEvidence { nonce, context }, limit)
            .await?
        {
            EnclaveFrame::Evidence(bytes) => Ok(bytes),
            EnclaveFrame::Failed { public } => Err(EnclaveError::Refused(clean_label(&public))),
            other => Err(EnclaveError::Unexpected(other.kind())),
        }
    }

    /// Stops the enclave (if the host started it).
    pub async fn kill(mut self) {
        if let Some(instance) = self.instance.as_mut() {
            instance.kill().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn async_frames_match_the_blocking_format() {
        let frame = HostFrame::Query {
            sealed: vec![9, 8, 7],
        };
        let mut async_bytes = Vec::new();
        write_frame(&mut async_bytes, &frame).await.expect("write");
        let mut sync_bytes = Vec::new();
        chiron_proto::wire::write_frame(&mut sync_bytes, &frame).expect("write");
        assert_eq!(async_bytes, sync_bytes);

        let mut answer = Vec::new();
        chiron_proto::wire::write_frame(&mut answer, &EnclaveFrame::Answer(vec![1, 2]))
            .expect("write");
        let back: EnclaveFrame = read_frame(&mut answer.as_slice()).await.expect("read");
        assert!(matches!(back, EnclaveFrame::Answer(v) if v == [1, 2]));
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(
            read_frame::<EnclaveFrame>(&mut huge.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn labels_are_cleaned() {
        assert_eq!(clean_label("program failed"), "program failed");
        assert_eq!(clean_label("a\nb\x1b[31m"), "a?b?[31m");
        assert_eq!(clean_label(""), "enclave failed");
        assert_eq!(clean_label(&"x".repeat(500)).len(), 120);
    }
}
