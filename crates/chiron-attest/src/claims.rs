//! What an authenticated statement says about the platform and the code it runs.

use std::fmt;

use crate::binding::ReportData;

/// The identity of the code in a TEE, as its platform measured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A simulated platform (INSECURE): its key, and the SHA-256 of the runtime binary.
    Sim {
        /// The simulated platform's Ed25519 public key.
        platform_key: [u8; 32],
        /// SHA-256 of the enclave binary.
        measurement: [u8; 32],
    },
    /// An SGX enclave.
    Sgx {
        /// MRENCLAVE: the hash of the enclave's initial pages (under Gramine: the loader, the
        /// manifest, and through it the hashes of every trusted file).
        mrenclave: [u8; 32],
        /// MRSIGNER: SHA-256 of the enclave signer's RSA modulus.
        mrsigner: [u8; 32],
        /// The product id the signer gave the enclave.
        isv_prod_id: u16,
        /// The security version the signer gave the enclave.
        isv_svn: u16,
    },
    /// A TDX trust domain.
    Tdx {
        /// MRTD: the measurement of the initial TD image (the virtual firmware).
        mrtd: [u8; 48],
        /// RTMR0–3: runtime measurements extended by the firmware, boot loader and kernel.
        rtmrs: [[u8; 48]; 4],
    },
    /// An SEV-SNP guest.
    SevSnp {
        /// MEASUREMENT: the launch digest of the guest's initial memory and VM state.
        measurement: [u8; 48],
    },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sim { measurement, .. } => {
                write!(f, "simulated measurement {}", hex::encode(measurement))
            }
            Self::Sgx {
                mrenclave,
                mrsigner,
                isv_prod_id,
                isv_svn,
            } => write!(
                f,
                "SGX MRENCLAVE {}, MRSIGNER {}, product {isv_prod_id}, SVN {isv_svn}",
                hex::encode(mrenclave),
                hex::encode(mrsigner)
            ),
            Self::Tdx { mrtd, rtmrs } => {
                write!(f, "TDX MRTD {}", hex::encode(mrtd))?;
                for (i, rtmr) in rtmrs.iter().enumerate() {
                    write!(f, ", RTMR{i} {}", hex::encode(rtmr))?;
                }
                Ok(())
            }
            Self::SevSnp { measurement } => {
                write!(f, "SEV-SNP measurement {}", hex::encode(measurement))
            }
        }
    }
}

/// What a backend verifier extracts from a statement once its signatures, endorsements, TCB
/// and debug state have passed: the report data it signs and the identity it measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformClaims {
    /// The 64 bytes of report data the platform signed.
    pub report_data: ReportData,
    /// The code identity the platform measured.
    pub identity: Identity,
}

impl Identity {
    /// A canonical encoding of the identity (backend code, then every field at a fixed
    /// width), for deriving keys bound to it.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 48 * 5);
        match self {
            Self::Sim {
                platform_key,
                measurement,
            } => {
                out.push(0);
                out.extend_from_slice(platform_key);
                out.extend_from_slice(measurement);
            }
            Self::Sgx {
                mrenclave,
                mrsigner,
                isv_prod_id,
                isv_svn,
            } => {
                out.push(1);
                out.extend_from_slice(mrenclave);
                out.extend_from_slice(mrsigner);
                out.extend_from_slice(&isv_prod_id.to_be_bytes());
                out.extend_from_slice(&isv_svn.to_be_bytes());
            }
            Self::Tdx { mrtd, rtmrs } => {
                out.push(2);
                out.extend_from_slice(mrtd);
                for rtmr in rtmrs {
                    out.extend_from_slice(rtmr);
                }
            }
            Self::SevSnp { measurement } => {
                out.push(3);
                out.extend_from_slice(measurement);
            }
        }
        out
    }
}
