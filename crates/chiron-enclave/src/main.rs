//! The Chiron enclave runtime: the one binary that is measured and attested.
//!
//! It runs as an ordinary process under the simulated TEE (and, unchanged, inside a TEE).
//! One process serves one role for one job or model, over one TCP connection from the
//! untrusted host on loopback. It holds the only plaintext copies of the dataset and the
//! model, in memory; everything it sends out is sealed, encrypted to the owner, or a fixed
//! label.
//!
//! ```text
//! chiron-enclave init-platform --key FILE           create the simulated platform key
//! chiron-enclave serve --role train|query --platform-key FILE
//! chiron-enclave measure                            print this binary's measurement
//! ```

mod counter;
mod memory;
mod query;
mod sealed;
mod session;
mod train;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use chiron_crypto::SimPlatform;
use chiron_proto::evidence::Role;
use clap::{Parser, Subcommand, ValueEnum};

/// Every allocation counted: the gauge behind the program's memory budget
/// (`chiron_sandbox::memory`).
#[global_allocator]
static ALLOCATOR: chiron_sandbox::CountingAllocator = chiron_sandbox::CountingAllocator;

#[derive(Parser)]
#[command(version, about = "Chiron enclave runtime (measured, trusted)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the simulated platform's key file (INSECURE: development only).
    InitPlatform {
        /// Where to write the key; `<key>.pub` receives the public key in hex.
        #[arg(long)]
        key: PathBuf,
    },
    /// Listens on loopback and serves one host connection in the given role.
    Serve {
        /// Training or query enclave.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The simulated platform's key file.
        #[arg(long)]
        platform_key: PathBuf,
    },
    /// Prints this binary's measurement (hex SHA-256), the value owners pin.
    Measure,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Train,
    Query,
}

fn main() -> anyhow::Result<()> {
    // First, before any secret exists; without it the enclave does not start.
    harden_process().context("refusing to start: the process hardening failed")?;
    // Panic messages could carry runtime state into the host-visible stderr: print none.
    // The sandbox and engine turn panics into errors before they get here anyway.
    std::panic::set_hook(Box::new(|_| {
        eprintln!("chiron-enclave: internal error");
    }));
    match Cli::parse().command {
        Command::InitPlatform { key } => {
            let platform = SimPlatform::load_or_create(&key)
                .with_context(|| format!("cannot create platform key {}", key.display()))?;
            let mut public = key.into_os_string();
            public.push(".pub");
            std::fs::write(&public, hex(&platform.public_key()))
                .context("cannot write the platform public key")?;
            Ok(())
        }
        Command::Measure => {
            println!("{}", hex(&measurement()?));
            Ok(())
        }
        Command::Serve { role, platform_key } => {
            let platform = SimPlatform::load_or_create(&platform_key)
                .with_context(|| format!("cannot read platform key {}", platform_key.display()))?;
            let role = match role {
                RoleArg::Train => Role::Train,
                RoleArg::Query => Role::Query,
            };
            let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
            let port = listener.local_addr()?.port();
            let mut out = std::io::stdout();
            writeln!(out, "{} {port}", chiron_proto::wire::LISTENING_PREFIX)?;
            out.flush()?;
            let (stream, _) = listener.accept().context("no host connection")?;
            drop(listener);
            session::serve(stream, role, platform, measurement()?)
        }
    }
}

/// Keeps the process's memory to itself, since it holds the only plaintext copies of the
/// owner's data and the provider's model: no core file however it dies (`RLIMIT_CORE` 0, soft
/// and hard), and no ptrace attach, `/proc/<pid>/mem` or `/proc/<pid>/environ` read by other
/// processes of the same user (`PR_SET_DUMPABLE` 0; a holder of `CAP_SYS_PTRACE` still can,
/// which only a real TEE prevents). Both settings are read back; any failure is an error.
#[cfg(target_os = "linux")]
fn harden_process() -> anyhow::Result<()> {
    use rustix::process::{
        DumpableBehavior, Resource, Rlimit, dumpable_behavior, getrlimit, set_dumpable_behavior,
        setrlimit,
    };
    let no_core = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, no_core).context("setrlimit(RLIMIT_CORE, 0, 0) failed")?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .context("prctl(PR_SET_DUMPABLE, 0) failed")?;
    let dumpable = dumpable_behavior().context("prctl(PR_GET_DUMPABLE) failed")?;
    anyhow::ensure!(
        getrlimit(Resource::Core) == no_core && dumpable == DumpableBehavior::NotDumpable,
        "core files or dumpability are still enabled after being turned off"
    );
    Ok(())
}

/// Not compiled in: outside Linux this binary has no process hardening (the TEE deployments
/// it targets, Gramine-SGX and confidential VMs, run Linux).
#[cfg(not(target_os = "linux"))]
fn harden_process() -> anyhow::Result<()> {
    Ok(())
}

/// The measurement of the running binary: SHA-256 of its file. Under a real TEE the
/// platform measures the loaded image; the simulation measures what it ran.
fn measurement() -> anyhow::Result<[u8; 32]> {
    let exe = std::env::current_exe().context("cannot locate the running binary")?;
    chiron_crypto::measure_file(&exe).context("cannot measure the running binary")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
