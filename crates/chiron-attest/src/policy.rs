//! The one policy type: which platforms, code identities and TCB levels an owner accepts.
//!
//! A policy starts empty, and an empty policy accepts nothing. Each backend gets reference
//! values of its own (`accept_*`); the simulated platform only through a method whose name
//! says it is dangerous. TCB acceptance is explicit too: an SGX or TDX platform must be
//! `UpToDate` unless the policy names the other statuses, and the advisory ids, it accepts.

use std::time::{SystemTime, UNIX_EPOCH};

use chiron_proto::evidence::TeeKind;

use crate::claims::Identity;
use crate::error::AttestationError;

/// Reference values for an SGX enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SgxReference {
    /// Exactly this enclave build (MRENCLAVE).
    Enclave {
        /// The MRENCLAVE `chiron measure` prints for the signed Gramine manifest.
        mrenclave: [u8; 32],
    },
    /// Any enclave this signer released for this product, at or above a security version.
    Signer {
        /// SHA-256 of the signer's RSA modulus.
        mrsigner: [u8; 32],
        /// The product id.
        isv_prod_id: u16,
        /// The lowest security version accepted.
        min_isv_svn: u16,
    },
}

/// Reference values for a TDX trust domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxReference {
    /// MRTD: the virtual firmware's measurement.
    pub mrtd: [u8; 48],
    /// RTMR0–3; `None` leaves that register unchecked.
    pub rtmrs: [Option<[u8; 48]>; 4],
}

/// The lowest SEV-SNP TCB components a policy accepts (compared one by one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnpTcb {
    /// PSP boot loader security version.
    pub bootloader: u8,
    /// PSP operating system (TEE) security version.
    pub tee: u8,
    /// SNP firmware security version.
    pub snp: u8,
    /// CPU microcode patch level.
    pub microcode: u8,
}

/// Reference values for an SEV-SNP guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpReference {
    /// The launch measurement of the confidential VM image.
    pub measurement: [u8; 48],
}

/// A DCAP TCB status other than `UpToDate` that a policy may choose to accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DcapTcbStatus {
    /// Software mitigations for the listed advisories are needed.
    SwHardeningNeeded,
    /// Platform configuration is needed.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSwHardeningNeeded,
    /// The platform's TCB is out of date.
    OutOfDate,
    /// Out of date, and configuration is needed.
    OutOfDateConfigurationNeeded,
}

/// When certificates and collateral must be valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationTime {
    /// The verifier's clock when it verifies.
    Now,
    /// A fixed instant, in seconds since the Unix epoch: for recorded evidence, or a verifier
    /// whose clock is not trusted.
    At(u64),
}

impl VerificationTime {
    /// The instant, in seconds since the Unix epoch.
    pub fn unix_seconds(self) -> u64 {
        match self {
            Self::At(seconds) => seconds,
            Self::Now => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// What an owner accepts. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    sim: Vec<([u8; 32], Vec<[u8; 32]>)>,
    sgx: Vec<SgxReference>,
    tdx: Vec<TdxReference>,
    snp: Vec<SnpReference>,
    dcap_statuses: Vec<DcapTcbStatus>,
    dcap_advisories: Vec<String>,
    snp_min_tcb: SnpTcb,
    snp_allow_smt: bool,
    time: VerificationTime,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// A policy that accepts nothing, verifying at the current time.
    pub fn new() -> Self {
        Self {
            sim: Vec::new(),
            sgx: Vec::new(),
            tdx: Vec::new(),
            snp: Vec::new(),
            dcap_statuses: Vec::new(),
            dcap_advisories: Vec::new(),
            snp_min_tcb: SnpTcb::default(),
            snp_allow_smt: false,
            time: VerificationTime::Now,
        }
    }

    /// Also accepts this SGX enclave or signer.
    pub fn accept_sgx(mut self, reference: SgxReference) -> Self {
        self.sgx.push(reference);
        self
    }

    /// Also accepts this TDX trust domain.
    pub fn accept_tdx(mut self, reference: TdxReference) -> Self {
        self.tdx.push(reference);
        self
    }

    /// Also accepts this SEV-SNP guest.
    pub fn accept_snp(mut self, reference: SnpReference) -> Self {
        self.snp.push(reference);
        self
    }

    /// Also accepts evidence signed by the simulated platform with public key
    /// `platform_key`, for the runtime builds whose SHA-256 is in `measurements`.
    ///
    /// **Dangerous**: simulated evidence proves nothing; anyone with the platform's key file can
    /// forge it, and the host can unseal every model. Use only for development and tests.
    pub fn dangerous_accept_simulated_platform(
        mut self,
        platform_key: [u8; 32],
        measurements: Vec<[u8; 32]>,
    ) -> Self {
        self.sim.push((platform_key, measurements));
        self
    }

    /// Also accepts SGX and TDX platforms whose TCB has `status`, provided every advisory that
    /// applies to them is accepted with [`Policy::accept_dcap_advisory`].
    pub fn accept_dcap_status(mut self, status: DcapTcbStatus) -> Self {
        if !self.dcap_statuses.contains(&status) {
            self.dcap_statuses.push(status);
        }
        self
    }

    /// Accepts the Intel security advisory `id` (for example `INTEL-SA-00615`) on platforms
    /// whose status [`Policy::accept_dcap_status`] accepts.
    pub fn accept_dcap_advisory(mut self, id: impl Into<String>) -> Self {
        self.dcap_advisories.push(id.into());
        self
    }

    /// The lowest SEV-SNP TCB accepted (the reported TCB, component by component).
    pub fn snp_min_tcb(mut self, tcb: SnpTcb) -> Self {
        self.snp_min_tcb = tcb;
        self
    }

    /// Whether SEV-SNP guests on hosts with simultaneous multithreading are accepted
    /// (default: refused, since SMT siblings share microarchitectural state).
    pub fn snp_allow_smt(mut self, allow: bool) -> Self {
        self.snp_allow_smt = allow;
        self
    }

    /// Verifies certificates and collateral at `time` instead of now.
    pub fn at(mut self, time: VerificationTime) -> Self {
        self.time = time;
        self
    }

    /// When certificates and collateral must be valid.
    pub fn time(&self) -> VerificationTime {
        self.time
    }

    /// Whether the policy has any reference values for `tee`.
    pub fn accepts_tee(&self, tee: TeeKind) -> bool {
        match tee {
            TeeKind::Sim => !self.sim.is_empty(),
            TeeKind::Sgx => !self.sgx.is_empty(),
            TeeKind::Tdx => !self.tdx.is_empty(),
            TeeKind::SevSnp => !self.snp.is_empty(),
        }
    }

    /// Simulated platform keys this policy (dangerously) accepts.
    pub fn accepted_sim_platforms(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.sim.iter().map(|(key, _)| key)
    }

    /// DCAP statuses accepted besides `UpToDate`.
    pub fn dcap_statuses(&self) -> &[DcapTcbStatus] {
        &self.dcap_statuses
    }

    /// Advisory ids accepted on platforms with an accepted non-`UpToDate` status.
    pub fn dcap_advisories(&self) -> &[String] {
        &self.dcap_advisories
    }

    /// The lowest SEV-SNP TCB accepted.
    pub fn snp_tcb_minimum(&self) -> SnpTcb {
        self.snp_min_tcb
    }

    /// Whether SMT is allowed on SEV-SNP hosts.
    pub fn snp_smt_allowed(&self) -> bool {
        self.snp_allow_smt
    }

    /// Checks a measured identity against the reference values.
    pub fn check_identity(&self, identity: &Identity) -> Result<(), AttestationError> {
        let accepted = match identity {
            Identity::Sim {
                platform_key,
                measurement,
            } => self
                .sim
                .iter()
                .any(|(key, ms)| key == platform_key && ms.contains(measurement)),
            Identity::Sgx {
                mrenclave,
                mrsigner,
                isv_prod_id,
                isv_svn,
            } => self.sgx.iter().any(|r| match r {
                SgxReference::Enclave { mrenclave: m } => m == mrenclave,
                SgxReference::Signer {
                    mrsigner: s,
                    isv_prod_id: p,
                    min_isv_svn,
                } => s == mrsigner && p == isv_prod_id && isv_svn >= min_isv_svn,
            }),
            Identity::Tdx { mrtd, rtmrs } => self.tdx.iter().any(|r| {
                r.mrtd == *mrtd
                    && r
                        .rtmrs
                        .iter()
                        .zip(rtmrs)
                        .all(|(want, got)| want.is_none_or(|w| w == *got))
            }),
            Identity::SevSnp { measurement } => {
                self.snp.iter().any(|r| r.measurement == *measurement)
            }
        };
        if accepted {
            return Ok(());
        }
        Err(AttestationError::WrongMeasurement {
            found: identity.to_string(),
            expected: self.describe_references(identity),
        })
    }

    fn describe_references(&self, identity: &Identity) -> Vec<String> {
        match identity {
            Identity::Sim { platform_key, .. } => self
                .sim
                .iter()
                .filter(|(key, _)| key == platform_key)
                .flat_map(|(_, ms)| ms.iter())
                .map(|m| format!("simulated measurement {}", hex::encode(m)))
                .collect(),
            Identity::Sgx { .. } => self
                .sgx
                .iter()
                .map(|r| match r {
                    SgxReference::Enclave { mrenclave } => {
                        format!("SGX MRENCLAVE {}", hex::encode(mrenclave))
                    }
                    SgxReference::Signer {
                        mrsigner,
                        isv_prod_id,
                        min_isv_svn,
                    } => format!(
                        "SGX MRSIGNER {}, product {isv_prod_id}, SVN ≥ {min_isv_svn}",
                        hex::encode(mrsigner)
                    ),
                })
                .collect(),
            Identity::Tdx { .. } => self
                .tdx
                .iter()
                .map(|r| format!("TDX MRTD {}", hex::encode(r.mrtd)))
                .collect(),
            Identity::SevSnp { .. } => self
                .snp
                .iter()
                .map(|r| format!("SEV-SNP measurement {}", hex::encode(r.measurement)))
                .collect(),
        }
    }
}
