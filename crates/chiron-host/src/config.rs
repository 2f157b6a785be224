//! Command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::launcher::local::{EnclavePlatform, Processes};
use crate::launcher::{Launcher, kubernetes};
use crate::limits::Limits;
use crate::principals::Role;

/// `chiron-host`: the untrusted host of the Chiron service. Without a subcommand it serves
/// the API.
#[derive(Debug, Parser)]
#[command(name = "chiron-host", version, about)]
pub struct Config {
    /// An administrative command instead of serving.
    #[command(subcommand)]
    pub command: Option<Admin>,
    /// Directory for the local object store (`objects/`, unless `--store` names another)
    /// and, when simulated, the platform key.
    #[arg(long, global = true, default_value = "./chiron-data")]
    pub data_dir: PathBuf,
    /// The object store, by URL: `file:///path`, or `s3://bucket[/prefix]` for a store
    /// several machines share (configured by `--store-option` and the usual `AWS_*`
    /// variables) [default: `<data-dir>/objects`].
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// An option of the `s3://` store as `KEY=VALUE`, in `object_store`'s own names
    /// (`endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`, ...);
    /// repeat. They override the `AWS_*` environment variables.
    #[arg(
        long = "store-option",
        global = true,
        value_name = "KEY=VALUE",
        requires = "store"
    )]
    pub store_options: Vec<String>,
    /// Address to serve the HTTP API on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "CHIRON_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// The enclave runtime binary [default: `chiron-enclave` next to this executable].
    #[arg(long)]
    pub enclave_bin: Option<PathBuf>,
    /// The TEE enclaves run in: detected by the enclave from the machine (SGX under Gramine,
    /// TDX or SEV-SNP confidential VM), or forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub tee: TeeArg,
    /// INSECURE, development only: run enclaves as ordinary processes on a simulated platform
    /// whose keys are a file in the data directory. Whoever can read that file can forge
    /// evidence and unseal every model; owners' default policy refuses it.
    #[arg(long, conflicts_with = "tee")]
    pub dangerous_simulated_tee: bool,
    /// A key keeper enclave the enclaves get their sealing secret from (on TDX, which has no
    /// sealing key): passed to every enclave as `--key-keeper`.
    #[arg(long, value_name = "ADDR", requires = "keeper_policy")]
    pub key_keeper: Option<String>,
    /// The keepers the enclaves trust (a policy file), passed as `--keeper-policy`. On
    /// hardware it must be part of the measured image; the enclave's own copy is what counts.
    #[arg(long, value_name = "FILE", requires = "key_keeper")]
    pub keeper_policy: Option<PathBuf>,
    /// Vendor endorsements to attach to evidence that has none, as `TEE=FILE` (DCAP
    /// collateral fetched from the platform's PCCS: `sgx=collateral.json`; an SNP VCEK:
    /// `sev-snp=vcek.der`); repeat. Re-read at start: keep the files fresh.
    #[arg(long = "endorsements", value_name = "TEE=FILE")]
    pub endorsements: Vec<String>,
    /// Where enclaves run: processes on this machine, or pods of the Kubernetes cluster
    /// this host runs in (`deploy/kubernetes/`; hardware TEEs only).
    #[arg(long, value_enum, default_value = "local")]
    pub launcher: LauncherArg,
    /// Kubernetes: the enclave image (the measured runtime in a confidential-VM image).
    #[arg(long, value_name = "IMAGE", required_if_eq("launcher", "kubernetes"))]
    pub k8s_image: Option<String>,
    /// Kubernetes: the runtime class that puts a pod in a confidential VM (for example
    /// `kata-qemu-snp` or `kata-qemu-tdx`) [default: the cluster's default class].
    #[arg(long, value_name = "CLASS")]
    pub k8s_runtime_class: Option<String>,
    /// Kubernetes: the namespace enclave pods go in [default: the host pod's own].
    #[arg(long, value_name = "NAMESPACE")]
    pub k8s_namespace: Option<String>,
    /// Kubernetes: this host pod's address, where enclaves reach its relay (set from the
    /// downward API's `status.podIP`).
    #[arg(long, value_name = "IP", env = "POD_IP")]
    pub k8s_advertise: Option<std::net::IpAddr>,
    /// On SIGTERM, how long requests in flight (an upload's part, a query) may take to
    /// finish before the host exits anyway.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub shutdown_grace_secs: u64,
    /// What callers may use.
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: Limits,
}

/// Administrative commands: they act on the store and exit.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Manage who may call the API: each owner and provider is a principal with a token.
    #[command(subcommand)]
    Principal(PrincipalCommand),
}

/// `chiron-host principal ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PrincipalCommand {
    /// Issue a principal an API token, printed once on standard output (only its hash is
    /// stored). A running host accepts it within a second.
    Add {
        /// The principal's unique name (a-z, 0-9, `-`, `_`).
        name: String,
        /// What it may do; repeat for both.
        #[arg(long = "role", value_enum, required = true)]
        roles: Vec<Role>,
    },
    /// Revoke a principal's token; a running host refuses it within 5 seconds. Its jobs,
    /// datasets and models stay, owned by the name, which is never given again.
    Revoke {
        /// The principal's name.
        name: String,
    },
    /// List the principals and their roles.
    List,
}

/// Where enclaves run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LauncherArg {
    /// Processes on this machine.
    Local,
    /// Pods of the Kubernetes cluster this host runs in.
    Kubernetes,
}

/// A TEE the operator can force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TeeArg {
    /// Whatever the machine offers.
    Auto,
    /// Intel SGX under Gramine.
    Sgx,
    /// Intel TDX.
    Tdx,
    /// AMD SEV-SNP.
    SevSnp,
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

    /// The platform the enclaves attest and seal with.
    pub fn platform(&self) -> EnclavePlatform {
        if self.dangerous_simulated_tee {
            return EnclavePlatform::DangerousSimulated {
                key: self.data_dir.join("sim-platform.key"),
            };
        }
        EnclavePlatform::Hardware {
            tee: match self.tee {
                TeeArg::Auto => "auto",
                TeeArg::Sgx => "sgx",
                TeeArg::Tdx => "tdx",
                TeeArg::SevSnp => "sev-snp",
            },
        }
    }

    /// Arguments every enclave is served with beyond role and platform.
    pub fn enclave_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        if let (Some(keeper), Some(policy)) = (&self.key_keeper, &self.keeper_policy) {
            args.push("--key-keeper".into());
            args.push(keeper.into());
            args.push("--keeper-policy".into());
            args.push(policy.into());
        }
        args
    }

    /// The launcher the options describe.
    pub fn launcher(&self) -> anyhow::Result<Launcher> {
        match self.launcher {
            LauncherArg::Local => Ok(Launcher::new(
                Processes::new(self.enclave_bin()?, self.platform()).with_args(self.enclave_args()),
            )),
            LauncherArg::Kubernetes => {
                let tee = match self.platform() {
                    EnclavePlatform::Hardware { tee } => tee,
                    EnclavePlatform::DangerousSimulated { .. } => anyhow::bail!(
                        "--launcher kubernetes runs enclaves on hardware TEEs only: the \
                         simulated platform's key file cannot reach the pods"
                    ),
                };
                let settings = kubernetes::Settings {
                    namespace: match &self.k8s_namespace {
                        Some(namespace) => namespace.clone(),
                        None => kubernetes::Pods::own_namespace()
                            .context("cannot read this pod's namespace: pass --k8s-namespace")?,
                    },
                    image: self
                        .k8s_image
                        .clone()
                        .context("--launcher kubernetes needs --k8s-image")?,
                    runtime_class: self.k8s_runtime_class.clone(),
                    tee,
                    advertise: self.k8s_advertise.context(
                        "--launcher kubernetes needs --k8s-advertise (or POD_IP): this pod's \
                         address, where enclaves reach the host",
                    )?,
                    extra_args: self
                        .enclave_args()
                        .into_iter()
                        .map(|a| a.to_string_lossy().into_owned())
                        .collect(),
                };
                Ok(Launcher::new(kubernetes::Pods::in_cluster(settings)?))
            }
        }
    }

    /// The object store's root directory.
    pub fn objects_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }
}
