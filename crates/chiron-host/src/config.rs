//! Command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// `chiron-host`: the untrusted host of the Chiron service.
#[derive(Debug, Parser)]
#[command(name = "chiron-host", version, about)]
pub struct Config {
    /// Directory for the object store (`objects/`) and the simulated platform key.
    #[arg(long, default_value = "./chiron-data")]
    pub data_dir: PathBuf,
    /// Address to serve the HTTP API on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// The enclave runtime binary [default: `chiron-enclave` next to this executable].
    #[arg(long)]
    pub enclave_bin: Option<PathBuf>,
}

impl Config {
    /// The enclave binary to launch.
    pub fn enclave_bin(&self) -> anyhow::Result<PathBuf> {
        match &self.enclave_bin {
            Some(path) => Ok(path.clone()),
            None => Ok(std::env::current_exe()
                .context("cannot locate the host executable to find chiron-enclave next to it")?
                .with_file_name("chiron-enclave")),
        }
    }

    /// The simulated platform's key file.
    pub fn platform_key(&self) -> PathBuf {
        self.data_dir.join("sim-platform.key")
    }

    /// The object store's root directory.
    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }
}
