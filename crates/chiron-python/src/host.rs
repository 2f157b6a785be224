//! The host an owner talks to, and the enclaves the owner trusts.

use chiron_attest::Policy;
use chiron_client::HostClient;
use chiron_proto::api::JobState;
use chiron_proto::evidence::TeeKind;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::Failure;

/// The host's URL when neither the caller nor `CHIRON_HOST` names one (the CLI's default).
const DEFAULT_URL: &str = "http://127.0.0.1:7700";

/// A Chiron host's API (`url`, e.g. `http://127.0.0.1:7700`), called with an API token
/// issued by its operator (`chiron-host principal add`); without `url` or `token`, the
/// environment's `CHIRON_HOST` and `CHIRON_TOKEN`, as the `chiron` CLI reads them. The host
/// is not trusted: everything sent through it is ciphertext or sealed to an attested
/// enclave.
#[pyclass(module = "chiron", frozen)]
pub struct Host {
    url: String,
    pub(crate) client: HostClient,
}

#[pymethods]
impl Host {
    #[new]
    #[pyo3(signature = (url = None, token = None))]
    fn new(url: Option<String>, token: Option<String>) -> PyResult<Self> {
        // The CLI's defaults: `--host` and `--token` fall back to the same variables.
        let url = url
            .or_else(|| std::env::var("CHIRON_HOST").ok())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let url = url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::Input(format!(
                "the host's URL needs its scheme: `http://{}`, not `{url}`",
                url.trim_start_matches('/')
            ))
            .into());
        }
        let client = HostClient::new(url);
        let token = token.or_else(|| std::env::var("CHIRON_TOKEN").ok());
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            client: match token {
                Some(token) => client.with_token(&token),
                None => client,
            },
        })
    }

    /// The host's URL.
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// Provider: registers a compiled program (its `.wasm` bytes, or the path of the file);
    /// returns its id, which owners pass to `chiron.train`.
    fn register(&self, py: Python<'_>, wasm: &Bound<'_, PyAny>) -> PyResult<String> {
        let bytes = match wasm.cast::<PyBytes>() {
            Ok(bytes) => bytes.as_bytes().to_vec(),
            Err(_) => {
                let path: std::path::PathBuf = wasm.extract()?;
                std::fs::read(&path)
                    .map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?
            }
        };
        let client = &self.client;
        let created = py
            .detach(|| client.register_program(&bytes))
            .map_err(Failure::from)?;
        Ok(created.program_id)
    }

    /// A registered program's extraction policy as the host shows it: a dict with
    /// `program_id`, `policy` (its text) and `declared` (whether the program declares a
    /// manifest, or the default policy applies). The enclave enforces the policy the program
    /// itself declares.
    fn program<'py>(&self, py: Python<'py>, program_id: &str) -> PyResult<Bound<'py, PyDict>> {
        let client = &self.client;
        let info = py
            .detach(|| client.program(program_id))
            .map_err(Failure::from)?;
        let out = PyDict::new(py);
        out.set_item("program_id", info.program_id)?;
        out.set_item("policy", info.policy.manifest.to_string())?;
        out.set_item("declared", info.policy.declared)?;
        Ok(out)
    }

    /// A job's public status, as the host (and so the provider) sees it: a dict with
    /// `job_id`, `state` (`created`, `running`, `succeeded` or `failed`), `error` (a
    /// data-independent label, when failed) and `events` (how many are stored).
    fn job_status<'py>(&self, py: Python<'py>, job_id: &str) -> PyResult<Bound<'py, PyDict>> {
        let client = &self.client;
        let status = py
            .detach(|| client.job_status(job_id))
            .map_err(Failure::from)?;
        let out = PyDict::new(py);
        out.set_item("job_id", status.job_id)?;
        out.set_item("state", state_name(status.state))?;
        out.set_item("error", status.error)?;
        out.set_item("events", status.events)?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("chiron.Host({:?})", self.url)
    }
}

/// A job state's name in Python.
pub(crate) fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Created => "created",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
    }
}

/// One word or several, as a keyword argument takes them.
#[derive(FromPyObject)]
pub(crate) enum Words {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Words {
    fn list(words: Option<Self>) -> Vec<String> {
        match words {
            None => Vec::new(),
            Some(Self::One(word)) => vec![word],
            Some(Self::Many(words)) => words,
        }
    }
}

/// One policy-file rule from keyword values, which must each be one word.
fn rule(name: &str, values: &[&str]) -> Result<String, Failure> {
    for value in values {
        if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '#') {
            return Err(Failure::Input(format!(
                "bad value {value:?} for {}",
                name.replace('-', "_")
            )));
        }
    }
    Ok(format!("{name} {}\n", values.join(" ")))
}

/// What the owner accepts as an enclave: the same rules as a policy file of
/// `chiron train --policy` (`policy`: its text, one rule per line: `sgx-mrenclave HEX`,
/// `tdx-mrtd HEX`, `snp-measurement HEX`, ...), plus the keyword forms of the CLI's flags,
/// which add to it. Nothing is accepted unless a rule accepts it.
///
/// `dangerous_sim_platform` (INSECURE, development only) accepts the simulated platform of
/// this public key (hex, or the path of the host's `sim-platform.key.pub`) running a
/// runtime of one of the `sim_measurement`s (`chiron.measure(binary)`).
#[pyclass(module = "chiron", frozen)]
pub struct Trust {
    pub(crate) policy: Policy,
    spec: String,
}

#[pymethods]
impl Trust {
    #[new]
    #[pyo3(signature = (
        policy = None,
        *,
        sgx_mrenclave = None,
        sgx_mrsigner = None,
        tdx_mrtd = None,
        tdx_rtmrs = None,
        snp_measurement = None,
        snp_min_tcb = None,
        snp_allow_smt = false,
        accept_tcb_status = None,
        accept_advisory = None,
        endorsements = None,
        dangerous_sim_platform = None,
        sim_measurement = None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        policy: Option<String>,
        sgx_mrenclave: Option<Words>,
        sgx_mrsigner: Option<(String, u16, u16)>,
        tdx_mrtd: Option<Words>,
        tdx_rtmrs: Option<String>,
        snp_measurement: Option<Words>,
        snp_min_tcb: Option<String>,
        snp_allow_smt: bool,
        accept_tcb_status: Option<Words>,
        accept_advisory: Option<Words>,
        endorsements: Option<Words>,
        dangerous_sim_platform: Option<String>,
        sim_measurement: Option<Words>,
    ) -> PyResult<Self> {
        let mut spec = policy.unwrap_or_default();
        spec.push('\n');
        for m in Words::list(sgx_mrenclave) {
            spec += &rule("sgx-mrenclave", &[&m])?;
        }
        if let Some((signer, product, svn)) = sgx_mrsigner {
            spec += &rule(
                "sgx-mrsigner",
                &[&signer, &product.to_string(), &svn.to_string()],
            )?;
        }
        for m in Words::list(tdx_mrtd) {
            let mut values = vec![m.as_str()];
            values.extend(tdx_rtmrs.as_deref());
            spec += &rule("tdx-mrtd", &values)?;
        }
        for m in Words::list(snp_measurement) {
            spec += &rule("snp-measurement", &[&m])?;
        }
        if let Some(tcb) = &snp_min_tcb {
            spec += &rule("snp-min-tcb", &[tcb])?;
        }
        if snp_allow_smt {
            spec += &rule("snp-allow-smt", &[])?;
        }
        for status in Words::list(accept_tcb_status) {
            spec += &rule("accept-tcb-status", &[&status])?;
        }
        for id in Words::list(accept_advisory) {
            spec += &rule("accept-advisory", &[&id])?;
        }
        let measurements = Words::list(sim_measurement);
        match &dangerous_sim_platform {
            Some(key) => {
                let key = platform_key(key)?;
                if measurements.is_empty() {
                    return Err(Failure::Input(
                        "dangerous_sim_platform needs the sim_measurement of the runtime \
                         accepted (chiron.measure(binary))"
                            .into(),
                    )
                    .into());
                }
                for m in &measurements {
                    spec += &rule("dangerous-simulated-platform", &[&key, m])?;
                }
            }
            None if !measurements.is_empty() => {
                return Err(Failure::Input(
                    "sim_measurement goes with dangerous_sim_platform".into(),
                )
                .into());
            }
            None => {}
        }
        // Line numbers count the policy text's lines, then one line per keyword rule.
        let mut policy = Policy::parse_spec(&spec).map_err(|e| Failure::Input(e.to_string()))?;
        for entry in Words::list(endorsements) {
            policy = policy
                .with_endorsements_file(&entry)
                .map_err(Failure::Input)?;
        }
        if !TeeKind::ALL.into_iter().any(|t| policy.accepts_tee(t)) {
            return Err(Failure::Input(
                "no enclave would be accepted: give the reference values you pin (a policy \
                 text, or sgx_mrenclave, sgx_mrsigner, tdx_mrtd or snp_measurement)"
                    .into(),
            )
            .into());
        }
        Ok(Self { policy, spec })
    }

    /// The policy as a policy file's text (`chiron train --policy FILE` reads the same);
    /// endorsement files are not part of it.
    #[getter]
    fn spec(&self) -> &str {
        self.spec.trim_start()
    }

    fn __repr__(&self) -> String {
        let rules = self
            .spec
            .lines()
            .filter(|l| !l.split('#').next().unwrap_or_default().trim().is_empty())
            .count();
        format!("chiron.Trust(<{rules} rules>)")
    }
}

/// A simulated platform's public key: hex, or the file holding it.
fn platform_key(text: &str) -> Result<String, Failure> {
    let trimmed = text.trim();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(trimmed.to_owned());
    }
    std::fs::read_to_string(trimmed)
        .map(|key| key.trim().to_owned())
        .map_err(|e| {
            Failure::Input(format!(
                "dangerous_sim_platform is neither a hex key nor a readable key file \
                 ({trimmed}: {e})"
            ))
        })
}
