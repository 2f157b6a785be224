//! The Chiron enclave runtime: the one binary that is measured and attested.
//!
//! The same binary runs in an SGX enclave under Gramine and in TDX and SEV-SNP confidential
//! VMs, choosing the TEE from the interfaces the machine offers (`chiron_attest::attester`);
//! as an ordinary process it runs only on the simulated platform, and only when told so by a
//! flag named dangerous.
//! One process serves one role for one job or model, over one TCP connection from the
//! untrusted host on loopback. It holds the only plaintext copies of the dataset and the
//! model, in memory; everything it sends out is sealed, encrypted to the owner, or a fixed
//! label.
//!
//! ```text
//! chiron-enclave serve --role train|query|ps|worker [--tee auto|sgx|tdx|sev-snp]
//! chiron-enclave serve --role ... --dangerous-simulated-platform FILE
//! chiron-enclave detect [--tee ...]                 print the TEE this machine offers
//! chiron-enclave init-platform --key FILE           create a simulated platform key (INSECURE)
//! chiron-enclave measure                            print this binary's simulated measurement
//! ```

mod counter;
mod exchange;
mod identity;
mod keyrelease;
mod memory;
mod ps;
mod query;
mod sealed;
mod session;
mod train;
mod worker;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use chiron_attest::attester::sim::SimPlatform;
use chiron_attest::attester::{self, Choice, Interfaces, Platform};
use chiron_proto::evidence::{Role, TeeKind};
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
        /// Training or query enclave; from `CHIRON_ROLE` when not given (a TEE launcher with
        /// a fixed, measured command line passes it that way). The role is attested, so
        /// whoever chooses it cannot make the enclave pass for another.
        #[arg(long, value_enum, env = "CHIRON_ROLE")]
        role: RoleArg,
        /// Where to listen for the host's one connection. In a confidential VM the host is
        /// outside the VM: listen on an address it can reach (e.g. `0.0.0.0:7800`). Everything
        /// on the connection is protected end to end; the host only carries it.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Parameter-server role: where to listen for the job's workers (they attest
        /// themselves on connecting; the address only has to be reachable).
        #[arg(long, default_value = "127.0.0.1:0")]
        peer_listen: String,
        #[command(flatten)]
        tee: TeeArgs,
        #[command(flatten)]
        keeper: KeeperArgs,
    },
    /// Runs a key keeper: releases sealing secrets to attested enclaves whose TEE has none
    /// (TDX), derived from this platform's own sealing key. Serves until killed.
    KeepKeys {
        /// Where to listen for requesters (through the host or directly).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The enclaves secrets are released to, as a policy file
        /// (`chiron_attest::Policy::parse_spec`); every image listed gets its own secret.
        #[arg(long, value_name = "FILE")]
        release_policy: PathBuf,
        /// Vendor endorsements for verifying requesters (`tdx=collateral.json`); repeat.
        #[arg(long = "endorsements", value_name = "TEE=FILE")]
        endorsements: Vec<String>,
        #[command(flatten)]
        tee: TeeArgs,
    },
    /// Prints the TEE this machine offers (as `serve` would choose it) and whether it can
    /// seal; fails with the reason when it offers none.
    Detect {
        #[command(flatten)]
        tee: TeeArgs,
    },
    /// Prints this binary's measurement (hex SHA-256), the value owners pin.
    Measure,
}

/// Where the sealing secret comes from when the TEE offers none.
#[derive(clap::Args)]
struct KeeperArgs {
    /// Take the sealing secret from the key keeper at this address instead of the platform
    /// (required on TDX, which has no sealing key).
    #[arg(long, value_name = "ADDR", requires = "keeper_policy")]
    key_keeper: Option<String>,
    /// The keepers this enclave trusts, as a policy file (`chiron_attest::Policy::parse_spec`).
    /// Part of the measured image, like the rest of the command line.
    #[arg(long, value_name = "FILE", requires = "key_keeper")]
    keeper_policy: Option<PathBuf>,
    /// Vendor endorsements for verifying the keeper (`sgx=collateral.json`); repeat.
    #[arg(long = "keeper-endorsements", value_name = "TEE=FILE")]
    keeper_endorsements: Vec<String>,
}

impl KeeperArgs {
    /// The sealing secret: from the keeper when one is named, else from the platform (`None`
    /// when the platform has none: such an enclave can attest and train, but not seal).
    fn sealing_secret(
        &self,
        platform: &dyn Platform,
        role: Role,
    ) -> anyhow::Result<Option<chiron_crypto::Zeroizing<[u8; 32]>>> {
        let (Some(address), Some(policy)) = (&self.key_keeper, &self.keeper_policy) else {
            return Ok(platform.sealing_secret().ok());
        };
        let policy = read_policy(policy, &self.keeper_endorsements)?;
        let mut stream = std::net::TcpStream::connect(address)
            .with_context(|| format!("cannot reach the key keeper at {address}"))?;
        stream.set_read_timeout(Some(KEY_RELEASE_TIMEOUT))?;
        let secret = keyrelease::request(&mut stream, platform, role, &policy)
            .with_context(|| format!("the key keeper at {address} released no secret"))?;
        Ok(Some(secret))
    }
}

/// How long a key-release peer may take to answer.
const KEY_RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Listens on `address` and prints the port on stdout, where the host waits for it.
fn listen_and_announce(address: &str) -> anyhow::Result<TcpListener> {
    let listener =
        TcpListener::bind(address).with_context(|| format!("cannot listen on {address}"))?;
    let port = listener.local_addr()?.port();
    let mut out = std::io::stdout();
    writeln!(out, "{} {port}", chiron_proto::wire::LISTENING_PREFIX)?;
    out.flush()?;
    Ok(listener)
}

/// A policy file plus endorsement files (`TEE=FILE`).
fn read_policy(
    path: &std::path::Path,
    endorsements: &[String],
) -> anyhow::Result<chiron_attest::Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy {}", path.display()))?;
    let mut policy = chiron_attest::Policy::parse_spec(&text)
        .with_context(|| format!("bad policy {}", path.display()))?;
    for entry in endorsements {
        policy = policy
            .with_endorsements_file(entry)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(policy)
}

/// Which platform attests and seals.
#[derive(clap::Args)]
struct TeeArgs {
    /// The TEE to use: detected from the machine (Gramine's attestation files, then the
    /// kernel's configfs-tsm reports), or forced.
    #[arg(long, value_enum, default_value = "auto")]
    tee: TeeArg,
    /// INSECURE, development only: no TEE; evidence is signed and models sealed with the
    /// simulated platform keys in FILE (created by `init-platform`). Whoever can read FILE
    /// can forge evidence and unseal every model.
    #[arg(long, value_name = "FILE", conflicts_with = "tee")]
    dangerous_simulated_platform: Option<PathBuf>,
    /// Where Gramine's attestation pseudo-files are.
    #[arg(long, default_value = attester::gramine::DEFAULT_DIR)]
    gramine_dir: PathBuf,
    /// Where the kernel's configfs-tsm report directory is.
    #[arg(long, default_value = attester::tsm::DEFAULT_DIR)]
    tsm_dir: PathBuf,
}

impl TeeArgs {
    fn open(&self) -> anyhow::Result<Box<dyn Platform>> {
        if let Some(key) = &self.dangerous_simulated_platform {
            let platform = SimPlatform::load_or_create(key, measurement()?)
                .with_context(|| format!("cannot read platform key {}", key.display()))?;
            return Ok(Box::new(platform));
        }
        let choice = match self.tee {
            TeeArg::Auto => Choice::Auto,
            TeeArg::Sgx => Choice::Forced(TeeKind::Sgx),
            TeeArg::Tdx => Choice::Forced(TeeKind::Tdx),
            TeeArg::SevSnp => Choice::Forced(TeeKind::SevSnp),
        };
        let at = Interfaces {
            gramine: self.gramine_dir.clone(),
            tsm: self.tsm_dir.clone(),
        };
        Ok(attester::open(choice, &at)?)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TeeArg {
    Auto,
    Sgx,
    Tdx,
    SevSnp,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    /// A job's only training enclave.
    Train,
    /// A query enclave.
    Query,
    /// A distributed job's parameter server.
    Ps,
    /// One of a distributed job's training enclaves.
    Worker,
}

fn main() -> anyhow::Result<()> {
    // First, before any secret exists; without it the enclave does not start.
    harden_process().context("refusing to start: the process hardening failed")?;
    chiron_sandbox::memory::keep_freed_memory();
    // Panic messages could carry runtime state into the host-visible stderr: print none.
    // The sandbox and engine turn panics into errors before they get here anyway.
    std::panic::set_hook(Box::new(|_| {
        eprintln!("chiron-enclave: internal error");
    }));
    match Cli::parse().command {
        Command::InitPlatform { key } => {
            let platform = SimPlatform::load_or_create(&key, measurement()?)
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
        Command::Detect { tee } => {
            let platform = tee.open()?;
            let sealing = match platform.sealing_secret() {
                Ok(_) => "can seal".to_owned(),
                Err(e) => format!("cannot seal: {e}"),
            };
            println!("{} ({sealing})", platform.tee().name());
            Ok(())
        }
        Command::Serve {
            role,
            listen,
            peer_listen,
            tee,
            keeper,
        } => {
            let platform = tee.open()?;
            let role = match role {
                RoleArg::Train => Role::Train,
                RoleArg::Query => Role::Query,
                RoleArg::Ps => Role::ParameterServer,
                RoleArg::Worker => Role::Worker,
            };
            // Before listening: an enclave that cannot get its secret says so at start.
            let sealing_secret = keeper.sealing_secret(platform.as_ref(), role)?;
            let listener = listen_and_announce(&listen)?;
            let (stream, _) = listener.accept().context("no host connection")?;
            drop(listener);
            session::serve(
                stream,
                role,
                platform,
                sealing_secret,
                measurement()?,
                &peer_listen,
            )
        }
        Command::KeepKeys {
            listen,
            release_policy,
            endorsements,
            tee,
        } => {
            let keeper =
                keyrelease::Keeper::new(tee.open()?, read_policy(&release_policy, &endorsements)?)
                    .context("this platform cannot hold a key keeper's root")?;
            let listener = listen_and_announce(&listen)?;
            // One requester at a time: a release takes milliseconds, and a stalled peer is
            // dropped after the timeout.
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(KEY_RELEASE_TIMEOUT));
                let _ = stream.set_write_timeout(Some(KEY_RELEASE_TIMEOUT));
                // A refused or broken request concerns that requester only.
                let _ = keeper.serve(&mut stream);
            }
            Ok(())
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
    chiron_attest::measure_file(&exe).context("cannot measure the running binary")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
