//! The local launcher: each enclave a process on this machine, on loopback.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chiron_proto::wire::LISTENING_PREFIX;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

use super::{Instance, Launch};
use crate::enclave::{Enclave, EnclaveError, Role};

/// How long an enclave may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts each enclave as a process on this machine.
///
/// An enclave's stdout is read for its listening line only, and its stderr goes nowhere: a
/// hostile program could make the runtime write there (an aborting allocation prints its
/// program-chosen size), and the host's logs carry nothing but the host's own fixed labels
/// (DESIGN.md, leakage rules).
#[derive(Clone, Debug)]
pub struct Processes {
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

impl Processes {
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
    async fn check_platform(&self) -> anyhow::Result<()> {
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
            // Never the host's own stderr (see `Processes`): on failure the operator reruns
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

    /// Starts an enclave process in `role`, with `threads` compute threads if given (else
    /// one per core), and connects to it.
    async fn spawn_process(
        &self,
        role: Role,
        threads: Option<usize>,
    ) -> Result<Enclave, EnclaveError> {
        let mut command = Command::new(&self.bin);
        if let Some(threads) = threads {
            command.env(THREADS_VARIABLE, threads.to_string());
        }
        let mut child = command
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
        Ok(Enclave::from_stream(stream, Some(Instance::Process(child))))
    }
}

/// The variable the engine's thread pool (rayon) takes its thread count from.
const THREADS_VARIABLE: &str = "RAYON_NUM_THREADS";

/// Compute threads for each of `workers` worker processes on a machine of `cores`: an even
/// share, at least one. Two workers with a thread per core each slowed a two-core machine's
/// rounds by some 6% (BENCHMARKS.md).
fn worker_threads(cores: usize, workers: u32) -> usize {
    let workers = usize::try_from(workers).unwrap_or(usize::MAX).max(1);
    (cores / workers).max(1)
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

impl Launch for Processes {
    fn init_platform(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(self.check_platform())
    }

    fn spawn(&self, role: Role) -> BoxFuture<'_, Result<Enclave, EnclaveError>> {
        Box::pin(self.spawn_process(role, None))
    }

    fn spawn_worker(&self, workers: u32) -> BoxFuture<'_, Result<Enclave, EnclaveError>> {
        // An operator's own setting, inherited by every enclave, stands.
        let threads = std::env::var_os(THREADS_VARIABLE).is_none().then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            worker_threads(cores, workers)
        });
        Box::pin(self.spawn_process(Role::Worker, threads))
    }

    fn relay_bind(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn relay_address(&self, port: u16) -> String {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_the_cores_evenly_with_at_least_one_thread_each() {
        assert_eq!(worker_threads(2, 2), 1);
        assert_eq!(worker_threads(16, 2), 8);
        assert_eq!(worker_threads(16, 3), 5);
        assert_eq!(worker_threads(2, 64), 1);
        assert_eq!(worker_threads(8, 0), 8);
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
}
