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
    endorsements: Vec<(TeeKind, Vec<u8>)>,
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
            endorsements: Vec::new(),
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

    /// Endorsements the verifier holds itself for `tee` (cached DCAP collateral, an SNP VCEK),
    /// used when evidence arrives without its own. They are vendor-signed, so where they came
    /// from does not matter; evidence's own endorsements take precedence.
    pub fn with_endorsements(mut self, tee: TeeKind, endorsements: Vec<u8>) -> Self {
        self.endorsements.push((tee, endorsements));
        self
    }

    /// [`Policy::with_endorsements`] from a `TEE=FILE` argument (`sgx=collateral.json`).
    pub fn with_endorsements_file(self, argument: &str) -> Result<Self, String> {
        let (tee, bytes) = crate::read_endorsements(argument)?;
        Ok(self.with_endorsements(tee, bytes))
    }

    /// The endorsements the verifier holds for `tee`, if any.
    pub fn endorsements_for(&self, tee: TeeKind) -> Option<&[u8]> {
        self.endorsements
            .iter()
            .find(|(t, _)| *t == tee)
            .map(|(_, e)| e.as_slice())
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
                    && r.rtmrs
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

/// A line of a policy file that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy line {line}: {reason}")]
pub struct PolicySpecError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl Policy {
    /// Reads a policy from its text form: one rule per line, `#` starts a comment.
    ///
    /// ```text
    /// sgx-mrenclave <hex32>
    /// sgx-mrsigner <hex32> <isv-prod-id> <min-isv-svn>
    /// tdx-mrtd <hex48> [<rtmr0>,<rtmr1>,<rtmr2>,<rtmr3>]   # `-` for an RTMR not checked
    /// snp-measurement <hex48>
    /// snp-min-tcb <bootloader>:<tee>:<snp>:<microcode>
    /// snp-allow-smt
    /// accept-tcb-status <sw-hardening-needed|configuration-needed|
    ///                    configuration-and-sw-hardening-needed|out-of-date|
    ///                    out-of-date-configuration-needed>
    /// accept-advisory <INTEL-SA-nnnnn>
    /// dangerous-simulated-platform <hex32 key> <hex32 measurement>   # INSECURE
    /// ```
    ///
    /// The file is the whole policy: what it does not list is refused.
    pub fn parse_spec(text: &str) -> Result<Self, PolicySpecError> {
        let mut policy = Self::new();
        for (index, raw) in text.lines().enumerate() {
            let fail = |reason: String| PolicySpecError {
                line: index + 1,
                reason,
            };
            let content = raw.split('#').next().unwrap_or_default();
            let words: Vec<&str> = content.split_whitespace().collect();
            let Some((&rule, args)) = words.split_first() else {
                continue;
            };
            policy = policy.apply_rule(rule, args).map_err(fail)?;
        }
        Ok(policy)
    }

    fn apply_rule(self, rule: &str, args: &[&str]) -> Result<Self, String> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("`{rule}` takes {n} value(s), found {}", args.len()))
            }
        };
        Ok(match rule {
            "sgx-mrenclave" => {
                arity(1)?;
                self.accept_sgx(SgxReference::Enclave {
                    mrenclave: hex_array(args[0])?,
                })
            }
            "sgx-mrsigner" => {
                arity(3)?;
                self.accept_sgx(SgxReference::Signer {
                    mrsigner: hex_array(args[0])?,
                    isv_prod_id: number(args[1])?,
                    min_isv_svn: number(args[2])?,
                })
            }
            "tdx-mrtd" => {
                if args.is_empty() || args.len() > 2 {
                    return Err("`tdx-mrtd` takes an MRTD and optionally four RTMRs".into());
                }
                let mut rtmrs = [None; 4];
                if let Some(list) = args.get(1) {
                    let parts: Vec<&str> = list.split(',').collect();
                    if parts.len() != 4 {
                        return Err("RTMRs are four comma-separated values".into());
                    }
                    for (slot, part) in rtmrs.iter_mut().zip(parts) {
                        if part != "-" {
                            *slot = Some(hex_array(part)?);
                        }
                    }
                }
                self.accept_tdx(TdxReference {
                    mrtd: hex_array(args[0])?,
                    rtmrs,
                })
            }
            "snp-measurement" => {
                arity(1)?;
                self.accept_snp(SnpReference {
                    measurement: hex_array(args[0])?,
                })
            }
            "snp-min-tcb" => {
                arity(1)?;
                let parts = args[0]
                    .split(':')
                    .map(number::<u8>)
                    .collect::<Result<Vec<_>, _>>()?;
                let [bootloader, tee, snp, microcode] = parts[..] else {
                    return Err("the TCB is four numbers, bootloader:tee:snp:microcode".into());
                };
                self.snp_min_tcb(SnpTcb {
                    bootloader,
                    tee,
                    snp,
                    microcode,
                })
            }
            "snp-allow-smt" => {
                arity(0)?;
                self.snp_allow_smt(true)
            }
            "accept-tcb-status" => {
                arity(1)?;
                self.accept_dcap_status(
                    DcapTcbStatus::from_name(args[0])
                        .ok_or_else(|| format!("unknown TCB status `{}`", args[0]))?,
                )
            }
            "accept-advisory" => {
                arity(1)?;
                self.accept_dcap_advisory(args[0])
            }
            "dangerous-simulated-platform" => {
                arity(2)?;
                self.dangerous_accept_simulated_platform(
                    hex_array(args[0])?,
                    vec![hex_array(args[1])?],
                )
            }
            other => return Err(format!("unknown rule `{other}`")),
        })
    }
}

impl DcapTcbStatus {
    /// Every status a policy may accept.
    pub const ALL: [Self; 5] = [
        Self::SwHardeningNeeded,
        Self::ConfigurationNeeded,
        Self::ConfigurationAndSwHardeningNeeded,
        Self::OutOfDate,
        Self::OutOfDateConfigurationNeeded,
    ];

    /// The status's name in policy files and on command lines (`out-of-date`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::SwHardeningNeeded => "sw-hardening-needed",
            Self::ConfigurationNeeded => "configuration-needed",
            Self::ConfigurationAndSwHardeningNeeded => "configuration-and-sw-hardening-needed",
            Self::OutOfDate => "out-of-date",
            Self::OutOfDateConfigurationNeeded => "out-of-date-configuration-needed",
        }
    }

    /// The status [`DcapTcbStatus::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

fn hex_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("`{text}` is not {} hex digits", 2 * N))
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number in range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_reads_every_rule_and_names_the_bad_line() {
        let text = format!(
            "# owner policy\n\
             sgx-mrenclave {a}\n\
             sgx-mrsigner {a} 7 3\n\
             tdx-mrtd {b} -,{b},-,-\n\
             snp-measurement {b}   # the CVM image\n\
             snp-min-tcb 3:0:8:115\n\
             snp-allow-smt\n\
             accept-tcb-status out-of-date\n\
             accept-advisory INTEL-SA-00615\n",
            a = "11".repeat(32),
            b = "22".repeat(48)
        );
        let policy = Policy::parse_spec(&text).expect("parses");
        let expected = Policy::new()
            .accept_sgx(SgxReference::Enclave {
                mrenclave: [0x11; 32],
            })
            .accept_sgx(SgxReference::Signer {
                mrsigner: [0x11; 32],
                isv_prod_id: 7,
                min_isv_svn: 3,
            })
            .accept_tdx(TdxReference {
                mrtd: [0x22; 48],
                rtmrs: [None, Some([0x22; 48]), None, None],
            })
            .accept_snp(SnpReference {
                measurement: [0x22; 48],
            })
            .snp_min_tcb(SnpTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
            })
            .snp_allow_smt(true)
            .accept_dcap_status(DcapTcbStatus::OutOfDate)
            .accept_dcap_advisory("INTEL-SA-00615");
        assert_eq!(policy, expected);

        assert_eq!(Policy::parse_spec("").expect("empty"), Policy::new());
        for (bad, line) in [
            ("sgx-mrenclave 1234", 1),
            ("\nsgx-mrsigner aa 1", 2),
            ("snp-min-tcb 1:2:3", 1),
            ("accept-tcb-status revoked", 1),
            ("trust-everything", 1),
            ("snp-min-tcb 1:2:3:300", 1),
        ] {
            let err = Policy::parse_spec(bad).expect_err(bad);
            assert_eq!(err.line, line, "{bad}: {err}");
        }
    }
}
