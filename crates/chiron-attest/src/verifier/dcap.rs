//! Intel SGX and TDX DCAP quotes.
//!
//! A DCAP quote is the platform's statement: a report (SGX enclave report or TDX TD report)
//! signed by an attestation key, which the Quoting Enclave (QE) certifies in its own report,
//! which the platform's PCK certificate signs, which chains to Intel's SGX Root CA. Whether
//! that platform is still trustworthy is decided by Intel's *collateral*: the signed TCB info
//! (which TCB level, and which advisories, the platform's security versions correspond to),
//! the signed QE identity, and the CRLs of the root and PCK CAs. The verifier receives the
//! quote as the statement and the collateral as the endorsements, in the JSON form of
//! [`dcap_qvl::QuoteCollateralV3`]; it never fetches anything itself, so the owner decides
//! which collateral (and so which revocations) it trusts.
//!
//! # Who checks what
//!
//! The cryptography and Intel's appraisal rules are [`dcap_qvl`]'s (pure Rust, MIT, pinned to
//! one exact version): certificate paths to the root with both CRLs, the collateral
//! signatures and validity dates, QE identity, the QE and quote signatures, and the
//! platform's TCB level. This module adds what is the owner's to decide, after dcap-qvl has
//! authenticated the quote, in this order:
//!
//! 1. every collateral item (TCB info, QE identity, CRLs, certificates) must be valid at the
//!    policy's verification time, issued before it and not yet expired;
//! 2. the enclave or trust domain must not be debuggable (SGX `ATTRIBUTES.DEBUG`, any TDX
//!    `TD_ATTRIBUTES.TUD` bit), since its host could then read its memory and keys;
//! 3. the TCB status must be `UpToDate`, or a status *and* advisories the policy names.
//!    dcap-qvl itself only refuses `Revoked`, so this is where the owner's TCB rules apply.
//!
//! Reference measurements are not checked here: [`crate::verify`] compares the identity
//! returned with the policy's references, after checking the report-data binding.
//!
//! # Why refusals are classified from dcap-qvl's messages
//!
//! The owner should learn *why* evidence was refused (a forged quote, stale collateral and a
//! platform that needs a microcode update call for different actions), but dcap-qvl reports
//! every failure as one untyped `anyhow` error, and the stages that tell them apart (path
//! building, CRL checks, collateral signatures) are private to it, so they cannot be redone
//! here without a second X.509 and ECDSA implementation, which would be a second place to
//! get verification wrong. Instead:
//!
//! - what can be decided structurally is decided before or after dcap-qvl runs: an empty
//!   endorsement ([`AttestationError::MissingEndorsements`]), a quote or collateral that does
//!   not decode, or a quote of the other TEE kind ([`AttestationError::Malformed`]), and a
//!   chain that ends at another root: when verification fails and *none* of the certificate
//!   chains supplied (in the quote and in the collateral) contains the trusted root
//!   certificate, the failure is [`AttestationError::WrongRoot`], whichever check tripped on
//!   it first (with a foreign root, the first is usually the root CA CRL's signature);
//! - otherwise the error chain is matched against `RULES`, a table of the messages of
//!   dcap-qvl 0.7.1 and of the `webpki` error variants it prints (webpki 0.103.15, which
//!   dcap-qvl pins exactly), most specific first: time checks before the path failures that
//!   wrap them, CRL problems before other path failures. Both versions are pinned exactly, so
//!   the messages cannot change under this table without a manifest change; the tests
//!   provoke each class the recorded quotes can reach on them (and the others from
//!   dcap-qvl's exact messages), so that such a change fails them.
//!
//! Classification only ever chooses the *reason*: any error from dcap-qvl is a refusal, and
//! a message no rule knows is still refused, as [`AttestationError::Malformed`] carrying
//! dcap-qvl's full message.

use std::fmt;

use chiron_proto::evidence::TeeKind;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::{QuoteClaims, QuotePolicy, TcbStatus};
use sha2::{Digest, Sha256};

use super::StatementVerifier;
use crate::claims::{Identity, PlatformClaims};
use crate::error::AttestationError;
use crate::policy::{DcapTcbStatus, Policy};

/// Intel's SGX Root CA certificate (DER), the root of every PCK, TCB-signing and CRL chain of
/// both SGX and TDX. Subject `CN=Intel SGX Root CA, O=Intel Corporation, L=Santa Clara,
/// ST=CA, C=US`, valid 2018-05-21 to 2049-12-31, SHA-256 fingerprint
/// `44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3`.
///
/// It is written out here rather than taken from dcap-qvl (which keeps its copy private)
/// because the verifier also needs its bytes to recognise a chain to another root; the
/// tests compare it with the copy dcap-qvl ships.
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = &[
    0x30, 0x82, 0x02, 0x8f, 0x30, 0x82, 0x02, 0x34, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x14, 0x22,
    0x65, 0x0c, 0xd6, 0x5a, 0x9d, 0x34, 0x89, 0xf3, 0x83, 0xb4, 0x95, 0x52, 0xbf, 0x50, 0x1b, 0x39,
    0x27, 0x06, 0xac, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x30,
    0x68, 0x31, 0x1a, 0x30, 0x18, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65,
    0x6c, 0x20, 0x53, 0x47, 0x58, 0x20, 0x52, 0x6f, 0x6f, 0x74, 0x20, 0x43, 0x41, 0x31, 0x1a, 0x30,
    0x18, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x20, 0x43, 0x6f,
    0x72, 0x70, 0x6f, 0x72, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x31, 0x14, 0x30, 0x12, 0x06, 0x03, 0x55,
    0x04, 0x07, 0x0c, 0x0b, 0x53, 0x61, 0x6e, 0x74, 0x61, 0x20, 0x43, 0x6c, 0x61, 0x72, 0x61, 0x31,
    0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x08, 0x0c, 0x02, 0x43, 0x41, 0x31, 0x0b, 0x30, 0x09,
    0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, 0x55, 0x53, 0x30, 0x1e, 0x17, 0x0d, 0x31, 0x38, 0x30,
    0x35, 0x32, 0x31, 0x31, 0x30, 0x34, 0x35, 0x31, 0x30, 0x5a, 0x17, 0x0d, 0x34, 0x39, 0x31, 0x32,
    0x33, 0x31, 0x32, 0x33, 0x35, 0x39, 0x35, 0x39, 0x5a, 0x30, 0x68, 0x31, 0x1a, 0x30, 0x18, 0x06,
    0x03, 0x55, 0x04, 0x03, 0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x20, 0x53, 0x47, 0x58, 0x20,
    0x52, 0x6f, 0x6f, 0x74, 0x20, 0x43, 0x41, 0x31, 0x1a, 0x30, 0x18, 0x06, 0x03, 0x55, 0x04, 0x0a,
    0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x20, 0x43, 0x6f, 0x72, 0x70, 0x6f, 0x72, 0x61, 0x74,
    0x69, 0x6f, 0x6e, 0x31, 0x14, 0x30, 0x12, 0x06, 0x03, 0x55, 0x04, 0x07, 0x0c, 0x0b, 0x53, 0x61,
    0x6e, 0x74, 0x61, 0x20, 0x43, 0x6c, 0x61, 0x72, 0x61, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55,
    0x04, 0x08, 0x0c, 0x02, 0x43, 0x41, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13,
    0x02, 0x55, 0x53, 0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0x0b, 0xa9,
    0xc4, 0xc0, 0xc0, 0xc8, 0x61, 0x93, 0xa3, 0xfe, 0x23, 0xd6, 0xb0, 0x2c, 0xda, 0x10, 0xa8, 0xbb,
    0xd4, 0xe8, 0x8e, 0x48, 0xb4, 0x45, 0x85, 0x61, 0xa3, 0x6e, 0x70, 0x55, 0x25, 0xf5, 0x67, 0x91,
    0x8e, 0x2e, 0xdc, 0x88, 0xe4, 0x0d, 0x86, 0x0b, 0xd0, 0xcc, 0x4e, 0xe2, 0x6a, 0xac, 0xc9, 0x88,
    0xe5, 0x05, 0xa9, 0x53, 0x55, 0x8c, 0x45, 0x3f, 0x6b, 0x09, 0x04, 0xae, 0x73, 0x94, 0xa3, 0x81,
    0xbb, 0x30, 0x81, 0xb8, 0x30, 0x1f, 0x06, 0x03, 0x55, 0x1d, 0x23, 0x04, 0x18, 0x30, 0x16, 0x80,
    0x14, 0x22, 0x65, 0x0c, 0xd6, 0x5a, 0x9d, 0x34, 0x89, 0xf3, 0x83, 0xb4, 0x95, 0x52, 0xbf, 0x50,
    0x1b, 0x39, 0x27, 0x06, 0xac, 0x30, 0x52, 0x06, 0x03, 0x55, 0x1d, 0x1f, 0x04, 0x4b, 0x30, 0x49,
    0x30, 0x47, 0xa0, 0x45, 0xa0, 0x43, 0x86, 0x41, 0x68, 0x74, 0x74, 0x70, 0x73, 0x3a, 0x2f, 0x2f,
    0x63, 0x65, 0x72, 0x74, 0x69, 0x66, 0x69, 0x63, 0x61, 0x74, 0x65, 0x73, 0x2e, 0x74, 0x72, 0x75,
    0x73, 0x74, 0x65, 0x64, 0x73, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65, 0x73, 0x2e, 0x69, 0x6e, 0x74,
    0x65, 0x6c, 0x2e, 0x63, 0x6f, 0x6d, 0x2f, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x53, 0x47, 0x58, 0x52,
    0x6f, 0x6f, 0x74, 0x43, 0x41, 0x2e, 0x64, 0x65, 0x72, 0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x0e,
    0x04, 0x16, 0x04, 0x14, 0x22, 0x65, 0x0c, 0xd6, 0x5a, 0x9d, 0x34, 0x89, 0xf3, 0x83, 0xb4, 0x95,
    0x52, 0xbf, 0x50, 0x1b, 0x39, 0x27, 0x06, 0xac, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01,
    0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x01, 0x06, 0x30, 0x12, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01,
    0x01, 0xff, 0x04, 0x08, 0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x01, 0x30, 0x0a, 0x06, 0x08,
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x03, 0x49, 0x00, 0x30, 0x46, 0x02, 0x21, 0x00,
    0xe5, 0xbf, 0xe5, 0x09, 0x11, 0xf9, 0x2f, 0x42, 0x89, 0x20, 0xdc, 0x36, 0x8a, 0x30, 0x2e, 0xe3,
    0xd1, 0x2e, 0xc5, 0x86, 0x7f, 0xf6, 0x22, 0xec, 0x64, 0x97, 0xf7, 0x80, 0x60, 0xc1, 0x3c, 0x20,
    0x02, 0x21, 0x00, 0xe0, 0x9d, 0x25, 0xac, 0x7a, 0x0c, 0xb3, 0xe5, 0xe8, 0xe6, 0x8f, 0xec, 0x5f,
    0xa3, 0xbd, 0x41, 0x6c, 0x47, 0x44, 0x0b, 0xd9, 0x50, 0x63, 0x9d, 0x45, 0x0e, 0xdc, 0xbe, 0xa4,
    0x57, 0x6a, 0xa2,
];

/// Verifies DCAP quotes of one TEE kind against one root CA.
#[derive(Clone, Copy)]
pub struct DcapVerifier {
    tee: TeeKind,
    root_ca_der: &'static [u8],
}

impl DcapVerifier {
    /// SGX enclave quotes, chained to Intel's SGX Root CA.
    pub const SGX: Self = Self {
        tee: TeeKind::Sgx,
        root_ca_der: INTEL_SGX_ROOT_CA_DER,
    };
    /// TDX trust-domain quotes, chained to Intel's SGX Root CA.
    pub const TDX: Self = Self {
        tee: TeeKind::Tdx,
        root_ca_der: INTEL_SGX_ROOT_CA_DER,
    };

    /// The same verifier trusting another root CA (DER) instead of Intel's: for a
    /// provisioning test PKI, or to check that a chain to another root is refused. Production
    /// verifiers use [`DcapVerifier::SGX`] and [`DcapVerifier::TDX`] as they are.
    pub const fn with_root_ca(self, root_ca_der: &'static [u8]) -> Self {
        Self {
            tee: self.tee,
            root_ca_der,
        }
    }

    /// The TEE kind whose quotes this verifier accepts.
    pub const fn tee(&self) -> TeeKind {
        self.tee
    }

    /// The root CA certificate (DER) every chain must end at.
    pub const fn root_ca_der(&self) -> &'static [u8] {
        self.root_ca_der
    }

    /// The TEE kind a parsed quote is from, if its header and report agree on one.
    fn kind_of(quote: &Quote) -> Option<TeeKind> {
        match (quote.header.is_sgx(), &quote.report) {
            (true, Report::SgxEnclave(_)) => Some(TeeKind::Sgx),
            (false, Report::TD10(_) | Report::TD15(_) | Report::TD15Ex(_)) => Some(TeeKind::Tdx),
            _ => None,
        }
    }
}

impl fmt::Debug for DcapVerifier {
    /// The root as its SHA-256 fingerprint: its bytes say nothing to a reader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DcapVerifier")
            .field("tee", &self.tee)
            .field(
                "root_ca_sha256",
                &hex::encode(Sha256::digest(self.root_ca_der)),
            )
            .finish()
    }
}

impl StatementVerifier for DcapVerifier {
    fn verify_statement(
        &self,
        statement: &[u8],
        endorsements: &[u8],
        policy: &Policy,
    ) -> Result<PlatformClaims, AttestationError> {
        let tee = self.tee;
        if endorsements.is_empty() {
            return Err(AttestationError::MissingEndorsements {
                tee,
                what: "DCAP collateral: TCB info, QE identity, CRLs and their issuer chains",
            });
        }
        // Decoding first, so that a quote of the other kind is refused as such, cheaply, and
        // not as whichever check of the other kind's appraisal it happens to fail.
        let quote = Quote::parse(statement).map_err(|e| {
            AttestationError::Malformed(format!("the {tee} DCAP quote cannot be decoded: {e}"))
        })?;
        match Self::kind_of(&quote) {
            Some(kind) if kind == tee => {}
            Some(kind) => {
                return Err(AttestationError::Malformed(format!(
                    "a {kind} DCAP quote was presented as {tee} evidence"
                )));
            }
            None => {
                return Err(AttestationError::Malformed(format!(
                    "the {tee} DCAP quote's header and report disagree on the TEE kind"
                )));
            }
        }
        let collateral: QuoteCollateralV3 = serde_json::from_slice(endorsements).map_err(|e| {
            AttestationError::Malformed(format!(
                "the {tee} endorsements are not DCAP collateral (QuoteCollateralV3 JSON): {e}"
            ))
        })?;

        let now = policy.time().unix_seconds();
        // Debug and profiling TDs are refused below, with a typed reason and after the quote
        // is authenticated; service-TD binding stays refused by dcap-qvl (the default).
        let verifier =
            QuoteVerifier::<RustCryptoConfig>::new_with_config(self.root_ca_der.to_vec())
                .allow_debug(true);
        // `claims_only` applies no policy: the owner's TCB rules are applied below, from the
        // typed status, because dcap-qvl's policy would only report them as text.
        let claims = verifier
            .verify_with_policy(statement, &collateral, now, &QuotePolicy::claims_only(now))
            .map_err(|e| {
                let messages: Vec<String> = e.chain().map(ToString::to_string).collect();
                let root_presented = presents_root(&quote, &collateral, self.root_ca_der);
                classify(tee, &messages, root_presented)
            })?;

        check_validity_window(
            tee,
            claims.latest_issue_date,
            claims.earliest_expiration_date,
            now,
        )?;
        if is_debuggable(&claims.report) {
            return Err(AttestationError::DebugEnclave { tee });
        }
        check_tcb(claims.tcb.status, &applicable_advisories(&claims), policy)?;
        platform_claims(tee, &claims.report)
    }
}

/// Refuses collateral outside its validity at `now`, over all of it at once: `latest_issue`
/// and `earliest_expiration` are the bounds dcap-qvl's claims compute over all eight sources
/// Intel's QVL dates (TCB info, QE identity, both CRLs, the four certificate chains).
///
/// dcap-qvl checks each item as it uses it, but not, for instance, a CRL's `thisUpdate`; this
/// makes sure that nothing issued after the verification time (which means that time, or the
/// collateral, is not what the caller believes) and nothing already stale passes.
fn check_validity_window(
    tee: TeeKind,
    latest_issue: u64,
    earliest_expiration: u64,
    now: u64,
) -> Result<(), AttestationError> {
    if now > earliest_expiration {
        return Err(AttestationError::Expired {
            tee,
            detail: format!(
                "the earliest collateral expiry is {earliest_expiration} (Unix seconds), before \
                 the verification time {now}"
            ),
        });
    }
    if now < latest_issue {
        return Err(AttestationError::Expired {
            tee,
            detail: format!(
                "collateral was issued at {latest_issue} (Unix seconds), after the verification \
                 time {now}"
            ),
        });
    }
    Ok(())
}

/// Whether the SGX enclave or TDX trust domain of an authenticated report can be debugged by
/// its host: SGX `ATTRIBUTES.DEBUG` (bit 1), or any bit of the TDX `TD_ATTRIBUTES.TUD` byte
/// (bit 0 is `DEBUG`; Intel's TDX module ABI says a TD with any TUD bit set is untrusted).
fn is_debuggable(report: &Report) -> bool {
    match report {
        Report::SgxEnclave(enclave) => sgx_debug(&enclave.attributes),
        Report::TD10(_) | Report::TD15(_) | Report::TD15Ex(_) => report
            .as_td10()
            .is_none_or(|td| td_under_debug(&td.td_attributes)),
    }
}

/// SGX `ATTRIBUTES.DEBUG`: bit 1 of the first (little-endian) byte of the `FLAGS` word.
fn sgx_debug(attributes: &[u8; 16]) -> bool {
    attributes[0] & 0x02 != 0
}

/// TDX `TD_ATTRIBUTES.TUD` (bits 7:0, the first little-endian byte): `DEBUG` and the
/// reserved "TD under debug" bits.
fn td_under_debug(td_attributes: &[u8; 8]) -> bool {
    td_attributes[0] != 0
}

/// The advisories that apply to an authenticated quote: those of the converged TCB status
/// (platform, TDX module and QE), and for a TD 1.5 those of its current TCB as well, which
/// dcap-qvl's own advisory check also covers.
fn applicable_advisories(claims: &QuoteClaims) -> Vec<String> {
    let mut advisories = claims.tcb.advisory_ids.clone();
    let current = claims.platform.current_tcb_level.iter();
    for id in current.flat_map(|level| &level.advisory_ids) {
        if !advisories.iter().any(|a| a.eq_ignore_ascii_case(id)) {
            advisories.push(id.clone());
        }
    }
    advisories
}

/// The policy's name for a TCB status it may accept; `None` for `UpToDate` (always accepted)
/// and for the statuses no policy can accept: `Revoked` (the platform's keys are compromised)
/// and the TD-relaunch statuses (the TD still runs on the TCB it launched on, which was out
/// of date; only relaunching it helps).
fn policy_status(status: TcbStatus) -> Option<DcapTcbStatus> {
    match status {
        TcbStatus::SWHardeningNeeded => Some(DcapTcbStatus::SwHardeningNeeded),
        TcbStatus::ConfigurationNeeded => Some(DcapTcbStatus::ConfigurationNeeded),
        TcbStatus::ConfigurationAndSWHardeningNeeded => {
            Some(DcapTcbStatus::ConfigurationAndSwHardeningNeeded)
        }
        TcbStatus::OutOfDate => Some(DcapTcbStatus::OutOfDate),
        TcbStatus::OutOfDateConfigurationNeeded => {
            Some(DcapTcbStatus::OutOfDateConfigurationNeeded)
        }
        TcbStatus::UpToDate
        | TcbStatus::Revoked
        | TcbStatus::TDRelaunchAdvised
        | TcbStatus::TDRelaunchAdvisedConfigurationNeeded => None,
    }
}

/// Applies the owner's TCB rule: `UpToDate` passes; another status passes only if the
/// policy accepts it and every advisory in `advisories`; `Revoked` and the TD-relaunch
/// statuses never pass. The refusal lists the advisories the policy does not accept.
fn check_tcb(
    status: TcbStatus,
    advisories: &[String],
    policy: &Policy,
) -> Result<(), AttestationError> {
    if status == TcbStatus::UpToDate {
        return Ok(());
    }
    let not_accepted: Vec<String> = advisories
        .iter()
        .filter(|id| {
            !policy
                .dcap_advisories()
                .iter()
                .any(|accepted| accepted.eq_ignore_ascii_case(id))
        })
        .cloned()
        .collect();
    let status_accepted =
        policy_status(status).is_some_and(|s| policy.dcap_statuses().contains(&s));
    if status_accepted && not_accepted.is_empty() {
        return Ok(());
    }
    Err(AttestationError::TcbNotAccepted {
        status: status.to_string(),
        advisories: not_accepted,
    })
}

/// The report data and identity of an authenticated report of kind `tee`.
fn platform_claims(tee: TeeKind, report: &Report) -> Result<PlatformClaims, AttestationError> {
    match (tee, report) {
        (TeeKind::Sgx, Report::SgxEnclave(enclave)) => Ok(PlatformClaims {
            report_data: enclave.report_data,
            identity: Identity::Sgx {
                mrenclave: enclave.mr_enclave,
                mrsigner: enclave.mr_signer,
                isv_prod_id: enclave.isv_prod_id,
                isv_svn: enclave.isv_svn,
            },
        }),
        (TeeKind::Tdx, _) => match report.as_td10() {
            Some(td) => Ok(PlatformClaims {
                report_data: td.report_data,
                identity: Identity::Tdx {
                    mrtd: td.mr_td,
                    rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
                },
            }),
            None => Err(AttestationError::Malformed(
                "an SGX DCAP quote was presented as TDX evidence".into(),
            )),
        },
        _ => Err(AttestationError::Malformed(format!(
            "the DCAP quote is not a {tee} quote"
        ))),
    }
}

/// Whether any certificate chain supplied with the quote (its own PCK chain, and the
/// collateral's PCK, TCB-info, QE-identity and PCK-CRL issuer chains) contains `root_der`.
///
/// Intel's chains all carry the root certificate itself, so a verification that fails while
/// none of them does failed because the chains lead to another root. Compared in Base64, on
/// the PEM text with its line breaks removed: the body of a PEM certificate is the Base64 of
/// its DER, so this needs no PEM or X.509 parser of its own.
fn presents_root(quote: &Quote, collateral: &QuoteCollateralV3, root_der: &[u8]) -> bool {
    let needle = base64(root_der);
    let quote_chain = quote.raw_cert_chain().unwrap_or_default();
    let collateral_chains = [
        collateral
            .pck_certificate_chain
            .as_deref()
            .unwrap_or_default(),
        &collateral.tcb_info_issuer_chain,
        &collateral.qe_identity_issuer_chain,
        &collateral.pck_crl_issuer_chain,
    ];
    std::iter::once(quote_chain)
        .chain(collateral_chains.iter().map(|chain| chain.as_bytes()))
        .any(|pem| {
            let text: String = pem
                .iter()
                .filter(|b| !b.is_ascii_whitespace())
                .map(|&b| char::from(b))
                .collect();
            text.contains(&needle)
        })
}

/// Standard Base64 with padding (RFC 4648, section 4), as PEM bodies use.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a dcap-qvl refusal says about the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A certificate, CRL, TCB info or QE identity not valid at the verification time.
    Expired,
    /// The configured root itself cannot be used.
    Root,
    /// A certificate path (PCK, or a collateral signer's) that does not verify.
    Chain,
    /// Signed collateral (TCB info, QE identity, CRLs) altered, unreadable or for another
    /// platform.
    Collateral,
    /// The quote, or the QE report vouching for its key, is not signed as it must be.
    Signature,
    /// The quote cannot be decoded or is of a kind this verifier does not handle.
    Malformed,
    /// The enclave or TD, or the quoting enclave, is debuggable.
    Debug,
    /// A platform or TD setting that no policy accepts.
    Setting(&'static str),
    /// The TCB is revoked.
    Revoked,
    /// The platform, QE or TDX module is below every TCB level Intel lists.
    Unsupported,
}

/// Messages of dcap-qvl 0.7.1 and variants of webpki 0.103.15's `Error` (which dcap-qvl
/// prints with `Debug`, so the variant name starts the message), each with the class it
/// implies. Matched in order against every message of the error chain; the first rule any
/// message contains wins, so more specific rules come first: time before the path failures
/// wrapping it, the quoting enclave's checks before the debug check they wrap, CRL problems
/// before other path failures.
const RULES: &[(&str, Class)] = &[
    // Validity in time.
    ("CertExpired", Class::Expired),
    ("CertNotValidYet", Class::Expired),
    ("CrlExpired", Class::Expired),
    ("TCBInfo expired", Class::Expired),
    ("TCBInfo issue date is in the future", Class::Expired),
    ("QE Identity expired", Class::Expired),
    ("QE Identity issue date is in the future", Class::Expired),
    // The configured root.
    ("Failed to load root ca", Class::Root),
    ("Failed to parse root CA certificate", Class::Root),
    // The quoting enclave: a PCK-signed QE report that Intel's signed QE identity does not
    // describe (including a debug QE) means the attestation key is not a genuine QE's.
    ("QE report validation failed", Class::Signature),
    ("QE MRSIGNER mismatch", Class::Signature),
    ("QE ISVPRODID mismatch", Class::Signature),
    ("QE MISCSELECT mismatch", Class::Signature),
    ("QE ATTRIBUTES mismatch", Class::Signature),
    // The quote's own signatures.
    ("Signature is invalid for qe_report", Class::Signature),
    ("QE report hash mismatch", Class::Signature),
    ("ISV enclave report signature is invalid", Class::Signature),
    // Revocation lists.
    ("Failed to parse root CA CRL", Class::Collateral),
    ("Failed to parse PCK CRL", Class::Collateral),
    ("CRLs required", Class::Collateral),
    ("InvalidCrlSignatureForPublicKey", Class::Collateral),
    ("IssuerNotCrlSigner", Class::Collateral),
    ("UnknownRevocationStatus", Class::Collateral),
    ("UnsupportedCrl", Class::Collateral),
    ("UnsupportedDeltaCrl", Class::Collateral),
    ("UnsupportedIndirectCrl", Class::Collateral),
    ("UnsupportedRevocationReason", Class::Collateral),
    ("InvalidCrlNumber", Class::Collateral),
    // TCB levels, before the collateral rules whose words they share.
    ("TCB status is invalid: Revoked", Class::Revoked),
    ("No matching TCB level found", Class::Unsupported),
    ("is below minimum required", Class::Unsupported),
    // TDX module identity: the TD report names a module Intel's TCB info does not describe.
    (
        "TDX module MRSIGNER mismatch",
        Class::Setting("TDX module identity (MRSIGNER_SEAM)"),
    ),
    (
        "SEAMATTRIBUTES",
        Class::Setting("TDX module identity (SEAM attributes)"),
    ),
    // Signed collateral documents.
    ("Signature is invalid for tcb_info", Class::Collateral),
    ("Signature is invalid for qe_identity", Class::Collateral),
    ("Failed to decode TcbInfo", Class::Collateral),
    ("Failed to decode QeIdentity", Class::Collateral),
    ("Failed to parse TCB Info issue date", Class::Collateral),
    ("Failed to parse TCB Info next update", Class::Collateral),
    ("Failed to parse QE Identity issue date", Class::Collateral),
    ("Failed to parse QE Identity next update", Class::Collateral),
    ("Unsupported QE Identity id/version", Class::Collateral),
    ("No TCB levels found in QE Identity", Class::Collateral),
    ("Fmspc mismatch", Class::Collateral),
    ("Failed to decode TCB FMSPC", Class::Collateral),
    ("non-TDX TCB info", Class::Collateral),
    ("non-SGX TCB info", Class::Collateral),
    ("Unrecognized TCB status", Class::Collateral),
    ("component count mismatch", Class::Collateral),
    ("No TDX module identity with id", Class::Collateral),
    ("tdxModule", Class::Collateral),
    ("tcbDate", Class::Collateral),
    ("TCBInfo issueDate", Class::Collateral),
    ("TCBInfo nextUpdate", Class::Collateral),
    ("QEIdentity issueDate", Class::Collateral),
    ("QEIdentity nextUpdate", Class::Collateral),
    ("Failed to parse platform TCB date", Class::Collateral),
    (
        "Failed to parse certificate for time window",
        Class::Collateral,
    ),
    // The quote's fixed-size signatures always encode; only the collateral's variable-length
    // ones can fail to.
    ("Invalid key length", Class::Collateral),
    ("Failed to create r INTEGER", Class::Collateral),
    ("Failed to create s INTEGER", Class::Collateral),
    ("ECDSA signature sequence", Class::Collateral),
    // Certificate paths: PCK chain and the collateral signers' chains.
    ("Too many intermediate certificates", Class::Chain),
    ("Certificate chain is too short", Class::Chain),
    ("Failed to parse TCB Info leaf certificate", Class::Chain),
    ("Failed to parse QE Identity leaf certificate", Class::Chain),
    ("must be issued directly by the root CA", Class::Chain),
    ("Failed to extract PCK certificates", Class::Chain),
    ("Failed to parse PCK certificate", Class::Chain),
    ("Failed to parse certs", Class::Chain),
    ("Failed to verify certificate chain", Class::Chain),
    ("CertRevoked", Class::Chain),
    ("UnknownIssuer", Class::Chain),
    ("Intel extension", Class::Chain),
    ("Failed to find Fmspc", Class::Chain),
    ("Failed to find PceSvn", Class::Chain),
    ("CpuSvn length mismatch", Class::Chain),
    ("Fmspc length mismatch", Class::Chain),
    ("PceSvn length mismatch", Class::Chain),
    // The report's attributes, checked last by dcap-qvl.
    ("Debug mode is enabled", Class::Debug),
    ("TD profiling is enabled", Class::Debug),
    (
        "Reserved bits in TD attributes are set",
        Class::Setting("TD attributes (reserved bits set)"),
    ),
    (
        "TD migration is enabled",
        Class::Setting("TD migration (MIGRATABLE)"),
    ),
    (
        "SERVTD_EXT is enabled",
        Class::Setting("service TD binding (SERVTD_EXT)"),
    ),
    (
        "Invalid MR service TD",
        Class::Setting("service TD binding (MR_SERVICETD)"),
    ),
    (
        "SEPT_VE_DISABLE is not enabled",
        Class::Setting("SEPT_VE_DISABLE off"),
    ),
    // Decoding.
    ("Failed to decode quote", Class::Malformed),
    ("Unsupported DCAP quote version", Class::Malformed),
    ("Unknown QE vendor ID", Class::Malformed),
    ("Unsupported TEE type", Class::Malformed),
    ("TEE quote must have version", Class::Malformed),
    ("Unsupported DCAP attestation key type", Class::Malformed),
    ("Unsupported DCAP PCK cert format", Class::Malformed),
    ("Failed to decode QE report", Class::Malformed),
    ("Invalid QE auth data length", Class::Malformed),
    ("Failed to get signed quote scope", Class::Malformed),
    ("Failed to get TD10 report", Class::Malformed),
    ("Failed to parse TD attributes", Class::Malformed),
];

/// The typed refusal for a dcap-qvl error whose chain of messages (outermost first) is
/// `messages`; `root_presented` says whether any chain supplied contains the trusted root.
/// See the module documentation.
fn classify(tee: TeeKind, messages: &[String], root_presented: bool) -> AttestationError {
    let detail = messages.join(": ");
    if !root_presented {
        return AttestationError::WrongRoot {
            tee,
            detail: format!("no certificate chain supplied contains the trusted root; {detail}"),
        };
    }
    let class = RULES
        .iter()
        .find(|(needle, _)| messages.iter().any(|m| m.contains(needle)))
        .map(|&(_, class)| class);
    match class {
        Some(Class::Expired) => AttestationError::Expired { tee, detail },
        Some(Class::Root) => AttestationError::WrongRoot { tee, detail },
        Some(Class::Chain) => AttestationError::BadCertificateChain { tee, detail },
        Some(Class::Collateral) => AttestationError::BadCollateral { tee, detail },
        Some(Class::Signature) => AttestationError::BadSignature { tee, detail },
        Some(Class::Debug) => AttestationError::DebugEnclave { tee },
        Some(Class::Setting(setting)) => AttestationError::PlatformSetting { tee, setting },
        Some(Class::Revoked) => AttestationError::TcbNotAccepted {
            status: TcbStatus::Revoked.to_string(),
            advisories: Vec::new(),
        },
        Some(Class::Unsupported) => AttestationError::TcbNotAccepted {
            status: format!("NotSupported, below every TCB level of the collateral ({detail})"),
            advisories: Vec::new(),
        },
        Some(Class::Malformed) => AttestationError::Malformed(detail),
        None => AttestationError::Malformed(format!(
            "the {tee} DCAP quote was refused for a reason this verifier does not classify: \
             {detail}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgx_debug_is_attributes_bit_1() {
        // A production enclave as Gramine launches it: INIT | MODE64BIT.
        let mut attributes = [0u8; 16];
        attributes[0] = 0x05;
        assert!(!sgx_debug(&attributes));
        attributes[0] |= 0x02;
        assert!(sgx_debug(&attributes));
        // Other bytes (XFRM) never make an enclave debuggable.
        let mut attributes = [0xffu8; 16];
        attributes[0] = 0x05;
        assert!(!sgx_debug(&attributes));
    }

    #[test]
    fn any_td_under_debug_bit_is_debug() {
        // SEPT_VE_DISABLE (bit 28) alone, as the recorded TDX quotes carry.
        let production = 0x1000_0000u64.to_le_bytes();
        assert!(!td_under_debug(&production));
        for bit in 0..8 {
            let attributes = (0x1000_0000u64 | 1 << bit).to_le_bytes();
            assert!(td_under_debug(&attributes), "TUD bit {bit}");
        }
        // Bits outside TUD are not debug (dcap-qvl appraises them).
        assert!(!td_under_debug(&(u64::MAX << 8).to_le_bytes()));
    }

    fn quote(name: &str) -> Quote {
        let bytes = match name {
            "sgx" => &include_bytes!("../../tests/vectors/dcap/sgx_quote")[..],
            _ => &include_bytes!("../../tests/vectors/dcap/tdx_quote")[..],
        };
        Quote::parse(bytes).expect("a recorded quote parses")
    }

    #[test]
    fn debug_check_reads_the_report_it_is_given() {
        let mut sgx = quote("sgx");
        assert!(!is_debuggable(&sgx.report));
        if let Report::SgxEnclave(enclave) = &mut sgx.report {
            enclave.attributes[0] |= 0x02;
        }
        assert!(is_debuggable(&sgx.report));

        let mut tdx = quote("tdx");
        assert!(!is_debuggable(&tdx.report));
        if let Report::TD10(td) = &mut tdx.report {
            td.td_attributes[0] |= 0x01;
        }
        assert!(is_debuggable(&tdx.report));
    }

    fn policy() -> Policy {
        Policy::new()
    }

    #[test]
    fn up_to_date_is_always_accepted() {
        assert_eq!(check_tcb(TcbStatus::UpToDate, &[], &policy()), Ok(()));
    }

    #[test]
    fn other_statuses_need_the_status_and_every_advisory() {
        let advisories = ["INTEL-SA-00615".to_owned(), "INTEL-SA-00289".to_owned()];
        let refused = |policy: &Policy, left: &[&str]| {
            assert_eq!(
                check_tcb(TcbStatus::SWHardeningNeeded, &advisories, policy),
                Err(AttestationError::TcbNotAccepted {
                    status: "SWHardeningNeeded".into(),
                    advisories: left.iter().map(|&s| s.to_owned()).collect(),
                })
            );
        };
        refused(&policy(), &["INTEL-SA-00615", "INTEL-SA-00289"]);
        let status = policy().accept_dcap_status(DcapTcbStatus::SwHardeningNeeded);
        refused(&status, &["INTEL-SA-00615", "INTEL-SA-00289"]);
        refused(
            &status.clone().accept_dcap_advisory("INTEL-SA-00615"),
            &["INTEL-SA-00289"],
        );
        // Advisories alone do not accept a status.
        let advisories_only = policy()
            .accept_dcap_advisory("INTEL-SA-00615")
            .accept_dcap_advisory("INTEL-SA-00289");
        refused(&advisories_only, &[]);
        let both = status
            .accept_dcap_advisory("INTEL-SA-00615")
            .accept_dcap_advisory("intel-sa-00289");
        assert_eq!(
            check_tcb(TcbStatus::SWHardeningNeeded, &advisories, &both),
            Ok(())
        );
    }

    #[test]
    fn every_policy_status_maps_to_its_own_name() {
        for (status, name) in [
            (
                TcbStatus::SWHardeningNeeded,
                DcapTcbStatus::SwHardeningNeeded,
            ),
            (
                TcbStatus::ConfigurationNeeded,
                DcapTcbStatus::ConfigurationNeeded,
            ),
            (
                TcbStatus::ConfigurationAndSWHardeningNeeded,
                DcapTcbStatus::ConfigurationAndSwHardeningNeeded,
            ),
            (TcbStatus::OutOfDate, DcapTcbStatus::OutOfDate),
            (
                TcbStatus::OutOfDateConfigurationNeeded,
                DcapTcbStatus::OutOfDateConfigurationNeeded,
            ),
        ] {
            let accepting = policy().accept_dcap_status(name);
            assert_eq!(check_tcb(status, &[], &accepting), Ok(()), "{status}");
            let other = if name == DcapTcbStatus::OutOfDate {
                DcapTcbStatus::SwHardeningNeeded
            } else {
                DcapTcbStatus::OutOfDate
            };
            assert!(check_tcb(status, &[], &policy().accept_dcap_status(other)).is_err());
        }
    }

    #[test]
    fn revoked_and_relaunch_are_never_accepted() {
        let everything = DcapTcbStatus::ALL
            .into_iter()
            .fold(policy(), Policy::accept_dcap_status);
        for status in [
            TcbStatus::Revoked,
            TcbStatus::TDRelaunchAdvised,
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        ] {
            assert_eq!(
                check_tcb(status, &[], &everything),
                Err(AttestationError::TcbNotAccepted {
                    status: status.to_string(),
                    advisories: Vec::new(),
                })
            );
        }
    }

    #[test]
    fn validity_window_is_inclusive() {
        let tee = TeeKind::Sgx;
        assert_eq!(check_validity_window(tee, 10, 20, 10), Ok(()));
        assert_eq!(check_validity_window(tee, 10, 20, 20), Ok(()));
        for now in [9, 21] {
            assert!(matches!(
                check_validity_window(tee, 10, 20, now),
                Err(AttestationError::Expired { .. })
            ));
        }
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn the_intel_root_is_found_in_the_quote_chain() {
        let sgx = quote("sgx");
        let empty = QuoteCollateralV3 {
            pck_crl_issuer_chain: String::new(),
            root_ca_crl: Vec::new(),
            pck_crl: Vec::new(),
            tcb_info_issuer_chain: String::new(),
            tcb_info: String::new(),
            tcb_info_signature: Vec::new(),
            qe_identity_issuer_chain: String::new(),
            qe_identity: String::new(),
            qe_identity_signature: Vec::new(),
            pck_certificate_chain: None,
        };
        assert!(presents_root(&sgx, &empty, INTEL_SGX_ROOT_CA_DER));
        assert!(!presents_root(&sgx, &empty, &INTEL_SGX_ROOT_CA_DER[1..]));
    }

    fn classified(messages: &[&str]) -> AttestationError {
        let messages: Vec<String> = messages.iter().map(|&m| m.to_owned()).collect();
        classify(TeeKind::Tdx, &messages, true)
    }

    /// Refusals that the recorded vectors cannot produce (a revoked platform, a debug QE or
    /// TD, TD settings), classified from dcap-qvl 0.7.1's exact messages.
    #[test]
    fn refusals_without_a_vector_are_classified() {
        assert_eq!(
            classified(&["TCB status is invalid: Revoked"]),
            AttestationError::TcbNotAccepted {
                status: "Revoked".into(),
                advisories: Vec::new()
            }
        );
        assert_eq!(
            classified(&["Debug mode is enabled"]),
            AttestationError::DebugEnclave { tee: TeeKind::Tdx }
        );
        assert_eq!(
            classified(&["TD profiling is enabled"]),
            AttestationError::DebugEnclave { tee: TeeKind::Tdx }
        );
        // A debug *quoting enclave* means its reports prove nothing.
        assert!(matches!(
            classified(&["QE report validation failed", "Debug mode is enabled"]),
            AttestationError::BadSignature { .. }
        ));
        assert_eq!(
            classified(&["TD migration is enabled"]),
            AttestationError::PlatformSetting {
                tee: TeeKind::Tdx,
                setting: "TD migration (MIGRATABLE)"
            }
        );
        // Time wins over the path failure that carries it.
        assert!(matches!(
            classified(&[
                "Failed to verify certificate chain",
                "CertExpired { time: UnixTime(1), not_after: UnixTime(0) }"
            ]),
            AttestationError::Expired { .. }
        ));
        assert!(matches!(
            classified(&["Failed to verify certificate chain", "CertRevoked"]),
            AttestationError::BadCertificateChain { .. }
        ));
        assert!(matches!(
            classified(&[
                "Failed to verify certificate chain",
                "UnknownRevocationStatus"
            ]),
            AttestationError::BadCollateral { .. }
        ));
        assert!(matches!(
            classified(&["something dcap-qvl has never said"]),
            AttestationError::Malformed(_)
        ));
        let messages = vec!["Failed to parse root CA CRL".to_owned()];
        assert!(matches!(
            classify(TeeKind::Sgx, &messages, false),
            AttestationError::WrongRoot { .. }
        ));
    }
}
