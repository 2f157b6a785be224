//! Launching enclave processes and speaking frames to them.
//!
//! The frame format is [`chiron_proto::wire`]'s (little-endian `u32` length, then postcard),
//! written here with async I/O so no thread blocks on an enclave.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chiron_proto::wire::{EnclaveFrame, Frame, FrameError, HostFrame, LISTENING_PREFIX, MAX_FRAME};
use thiserror::Error;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};

/// How long an enclave may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

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
    fn as_arg(self) -> &'static str {
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

/// Starts enclave processes.
///
/// An enclave's stdout is read for its listening line only, and its stderr goes nowhere: a
/// hostile program could make the runtime write there (an aborting allocation prints its
/// program-chosen size), and the host's logs carry nothing but the host's own fixed labels
/// (DESIGN.md, leakage rules).
#[derive(Clone, Debug)]
pub struct Launcher {
    bin: PathBuf,
    platform: EnclavePlatform,
    extra_args: Vec<OsString>,
}

/// What the enclaves attest and seal with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnclavePlatform {
    /// TEE hardware: `tee` is `auto` (the enclave detects it) or a backend name.
    Hardware {
        /// The enclave's `--tee` argument.
        tee: &'static str,
    },
    /// INSECURE: the simulated platform whose keys are in `key` (and its public key in
    /// `key.pub`).
    DangerousSimulated {
        /// The key file.
        key: PathBuf,
    },
}

impl Launcher {
    /// A launcher for `bin`, whose enclaves use `platform`.
    pub fn new(bin: PathBuf, platform: EnclavePlatform) -> Self {
        Self {
            bin,
            platform,
            extra_args: Vec::new(),
        }
    }

    /// Also passes `args` to every `serve` (the key keeper's address and policy).
    pub fn with_args(mut self, args: Vec<OsString>) -> Self {
        self.extra_args = args;
        self
    }

    /// Checks the platform before any job: on hardware, that the enclave finds its TEE
    /// (`<bin> detect`, whose error says what is missing); simulated, that the key and its
    /// `.pub` file exist, creating them with `<bin> init-platform --key <key>` if not.
    pub async fn init_platform(&self) -> anyhow::Result<()> {
        match &self.platform {
            EnclavePlatform::Hardware { tee } => {
                // No secret and no program exists yet, so the enclave's own words about the
                // machine are safe to show the operator.
                let output = Command::new(&self.bin)
                    .args(["detect", "--tee", tee])
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|source| self.spawn_error(source))?;
                anyhow::ensure!(
                    output.status.success(),
                    "{}(for development without a TEE, start the host with \
                     --dangerous-simulated-tee: INSECURE)",
                    String::from_utf8_lossy(&output.stderr)
                );
                Ok(())
            }
            EnclavePlatform::DangerousSimulated { key } => self.init_simulated(key).await,
        }
    }

    fn spawn_error(&self, source: std::io::Error) -> EnclaveError {
        EnclaveError::Spawn {
            bin: self.bin.clone(),
            source,
        }
    }

    async fn init_simulated(&self, key: &Path) -> anyhow::Result<()> {
        let mut public = key.to_path_buf().into_os_string();
        public.push(".pub");
        let public = PathBuf::from(public);
        if key.is_file() && public.is_file() {
            return Ok(());
        }
        let status = Command::new(&self.bin)
            .arg("init-platform")
            .arg("--key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Never the host's own stderr (see `Launcher`): on failure the operator reruns
            // the command the error names.
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|source| self.spawn_error(source))?;
        anyhow::ensure!(
            status.success(),
            "`{} init-platform --key {}` failed ({status})",
            self.bin.display(),
            key.display()
        );
        anyhow::ensure!(
            key.is_file() && public.is_file(),
            "`{} init-platform` succeeded but did not create {} and {}",
            self.bin.display(),
            key.display(),
            public.display()
        );
        Ok(())
    }

    /// Starts an enclave process in `role` and connects to it.
    pub async fn spawn(&self, role: Role) -> Result<Enclave, EnclaveError> {
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--role")
            .arg(role.as_arg())
            // Also in the environment, for launchers whose command line is fixed and measured
            // (`gramine-sgx`), which ignore these arguments.
            .env("CHIRON_ROLE", role.as_arg())
            .args(match &self.platform {
                EnclavePlatform::Hardware { tee } => [OsStr::new("--tee"), OsStr::new(tee)],
                EnclavePlatform::DangerousSimulated { key } => [
                    OsStr::new("--dangerous-simulated-platform"),
                    key.as_os_str(),
                ],
            })
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        let stdout = child.stdout.take().ok_or(EnclaveError::NoListeningLine)?;
        let mut stdout = BufReader::new(stdout);
        let port = tokio::time::timeout(STARTUP_TIMEOUT, listening_port(&mut stdout))
            .await
            .map_err(|_| EnclaveError::StartupTimeout(STARTUP_TIMEOUT))??;
        // Keep draining stdout so the enclave never blocks or fails writing to it; its
        // content is not looked at.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
        });
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(EnclaveError::Connect)?;
        stream.set_nodelay(true).map_err(EnclaveError::Connect)?;
        Ok(Enclave::from_stream(stream, Some(child)))
    }
}

/// Reads the enclave's stdout up to its `CHIRON-ENCLAVE-LISTENING <port>` line.
async fn listening_port(stdout: &mut (impl AsyncBufRead + Unpin)) -> Result<u16, EnclaveError> {
    // Lines are bounded so a misbehaving binary cannot make the host buffer without limit.
    const MAX_LINE: u64 = 4096;
    loop {
        let mut line = Vec::new();
        let n = (&mut *stdout)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|_| EnclaveError::NoListeningLine)?;
        if n == 0 {
            return Err(EnclaveError::NoListeningLine);
        }
        let Ok(line) = std::str::from_utf8(&line) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix(LISTENING_PREFIX)
            && let Ok(port) = rest.trim().parse::<u16>()
        {
            return Ok(port);
        }
    }
}

/// One enclave process and the host's connection to it. Dropping it kills the process.
#[derive(Debug)]
pub struct Enclave {
    /// Frames from the enclave.
    pub reader: OwnedReadHalf,
    /// Frames to the enclave.
    pub writer: OwnedWriteHalf,
    /// The process (absent when the connection was made to something the host did not start,
    /// as in tests).
    pub child: Option<Child>,
}

impl Enclave {
    /// Wraps a connection (and the process behind it, if the host started it).
    pub fn from_stream(stream: TcpStream, child: Option<Child>) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader,
            writer,
            child,
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

    /// Kills the process (if any) and waits for it.
    pub async fn kill(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill().await;
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

    #[tokio::test]
    async fn listening_line_is_found_after_other_output() {
        let out = format!("hello\n\u{fffd}junk\n{LISTENING_PREFIX} 4242\n");
        let mut reader = BufReader::new(out.as_bytes());
        assert_eq!(listening_port(&mut reader).await.expect("port"), 4242);
        let mut empty = BufReader::new(&b"no port here\n"[..]);
        assert!(matches!(
            listening_port(&mut empty).await,
            Err(EnclaveError::NoListeningLine)
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
