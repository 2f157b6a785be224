//! What the benchmark binaries share: a real `chiron-host` process to measure against.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use chiron_attest::Policy;

/// A `chiron-host` process (from next to this binary) on a fresh data directory, stopped
/// and removed on drop.
pub struct HostProcess {
    child: std::process::Child,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its base URL.
    pub url: String,
    /// The token of the principal `bench` (an owner and a provider).
    token: String,
}

impl HostProcess {
    /// Starts one with the default limits.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts one with `args` added (limits, for the load test).
    pub fn start_with(args: &[String]) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let exe = std::env::current_exe()?.with_file_name("chiron-host");
        let dir = std::env::temp_dir().join(format!("chiron-bench-{}", std::process::id()));
        let issued = Command::new(&exe)
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "principal",
                "add",
                "bench",
                "--role",
                "owner",
                "--role",
                "provider",
            ])
            .stderr(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !issued.status.success() {
            bail!("chiron-host principal add failed");
        }
        let token = String::from_utf8(issued.stdout)?.trim().to_owned();
        let mut child = Command::new(&exe)
            .arg("--dangerous-simulated-tee")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (scripts/build.sh builds it)",
                    exe.display()
                )
            })?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !url.starts_with("http://") {
            let _ = child.kill();
            bail!(
                "chiron-host did not print its address (got `{}`)",
                line.trim()
            );
        }
        Ok(Self {
            child,
            dir,
            url,
            token,
        })
    }

    /// A client acting as the principal `bench`.
    pub fn client(&self) -> chiron_client::HostClient {
        chiron_client::HostClient::new(&self.url).with_token(&self.token)
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The owner's policy for the bench's own service: the enclave binary next to this one, and
/// the simulated platform key the host created.
pub fn owner_policy(data_dir: &Path) -> anyhow::Result<Policy> {
    let enclave = std::env::current_exe()?.with_file_name("chiron-enclave");
    let measurement = chiron_attest::measure_file(&enclave)
        .with_context(|| format!("cannot measure {}", enclave.display()))?;
    let path = data_dir.join("sim-platform.key.pub");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let key: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|k| k.try_into().ok())
        .with_context(|| format!("{} is not a 32-byte hex key", path.display()))?;
    Ok(Policy::new().dangerous_accept_simulated_platform(key, vec![measurement]))
}

impl HostProcess {
    /// Issues another principal a token (`chiron-host principal add NAME --role ROLE`).
    pub fn add_principal(&self, name: &str, role: &str) -> anyhow::Result<String> {
        let exe = std::env::current_exe()?.with_file_name("chiron-host");
        let issued = Command::new(&exe)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["principal", "add", name, "--role", role])
            .stderr(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !issued.status.success() {
            bail!("chiron-host principal add {name} failed");
        }
        Ok(String::from_utf8(issued.stdout)?.trim().to_owned())
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
