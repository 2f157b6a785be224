//! AMD SEV-SNP attestation reports, verified up to AMD roots that ship with the verifier.
//!
//! The statement is the 1184-byte attestation report that the AMD Secure Processor signs (what
//! the kernel's configfs-tsm `outblob` returns). The endorsement is the DER certificate of the
//! key that signed it: a VCEK (a key unique to the chip and its firmware level, certified by
//! AMD) or a VLEK (a key AMD provisions to a registered cloud provider). The rest of the chain
//! is never taken from the evidence. AMD's root keys (ARK) and the keys they certify (ASK for
//! VCEKs, ASVK for VLEKs) for Milan, Genoa and Turin ship with the verifier, so a host can only
//! supply a certificate that AMD issued.
//!
//! [`authenticate_report`] checks, in this order, and draws no conclusion from bytes before
//! they are authenticated:
//!
//! 1. the report is 1184 bytes, of version 2 to 5, and parses (the `sev` crate's parser also
//!    refuses non-zero bytes in most reserved fields, and CPUID values it does not know, which
//!    choose the TCB layout); the certificate parses;
//! 2. the certificate's issuer is the ASK or ASVK of an accepted product, that key signs it
//!    (RSA-PSS, SHA-384), and the ARK signs that key. The ARK is the pinned AMD root and is
//!    self-signed; these root checks run once, when the shipped roots are first loaded;
//! 3. the certificate, its issuer and the ARK are valid at the policy's time;
//! 4. the report's ECDSA P-384 signature verifies under the certificate's key, over exactly the
//!    bytes presented;
//! 5. now that the report is authentic: the key it names (VCEK or VLEK) is the one supplied, its
//!    CPUID (version 3 and later) names the product whose root certified the key, and the
//!    certificate's TCB extensions (and for a VCEK its chip id) are the report's.
//!
//! [`check_platform_state`] then applies the owner's policy: no debugging, VMPL 0, SMT only if
//! allowed, and the reported TCB at or above the minimum. Reference measurements are not
//! checked here: [`crate::verify`] does that with [`Policy::check_identity`].

use std::fmt;
use std::sync::OnceLock;

use chiron_proto::evidence::TeeKind;
use sev::certs::snp::{Certificate, Verifiable, builtin};
use sev::firmware::guest::{AttestationReport, GuestPolicy, PlatformInfo};
use sev::parser::ByteParser;
use sha2::{Digest, Sha256};

use super::StatementVerifier;
use crate::claims::{Identity, PlatformClaims};
use crate::error::AttestationError;
use crate::policy::{Policy, SnpTcb, VerificationTime};

/// Length of an SEV-SNP attestation report, signature included.
pub const REPORT_LEN: usize = 1184;

/// GUEST_POLICY bit 19: the hypervisor may debug the guest, which means it can read and write
/// the guest's memory.
pub const GUEST_POLICY_DEBUG: u64 = 1 << 19;

/// GUEST_POLICY bit 16: the guest may run on a host with SMT enabled.
pub const GUEST_POLICY_SMT: u64 = 1 << 16;

/// PLATFORM_INFO bit 0: SMT is enabled on the platform now.
pub const PLATFORM_INFO_SMT_EN: u64 = 1;

/// The SIG_ALGO value for ECDSA P-384 with SHA-384, the only algorithm AMD defines.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

/// Bytes of a P-384 scalar. The report stores R and S zero-extended to 72 bytes.
const P384_SCALAR_LEN: usize = 48;

/// Verifies SEV-SNP attestation reports against every product root this verifier ships.
#[derive(Clone, Copy, Debug)]
pub struct SnpVerifier;

impl StatementVerifier for SnpVerifier {
    fn verify_statement(
        &self,
        statement: &[u8],
        endorsements: &[u8],
        policy: &Policy,
    ) -> Result<PlatformClaims, AttestationError> {
        let report = authenticate_report(statement, endorsements, policy.time(), &AmdProduct::ALL)?;
        check_platform_state(report.state(), policy)?;
        Ok(PlatformClaims {
            report_data: report.report_data,
            identity: Identity::SevSnp {
                measurement: report.measurement,
            },
        })
    }
}

/// An AMD EPYC product line whose root certificates this verifier ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AmdProduct {
    /// Third-generation EPYC (family 19h, models 00h–0Fh).
    Milan,
    /// Fourth-generation EPYC (family 19h, models 10h–1Fh and A0h–AFh).
    Genoa,
    /// Fifth-generation EPYC (family 1Ah, models 00h–11h).
    Turin,
}

impl AmdProduct {
    /// Every product whose roots ship with the verifier.
    pub const ALL: [Self; 3] = [Self::Milan, Self::Genoa, Self::Turin];

    /// AMD's name for the product, as in its certificates (`ARK-Milan`, `SEV-Milan`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// The product that a report's CPUID family and model fields (report version 3 and later)
    /// name, or `None` for a processor without shipped roots.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Self::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Self::Genoa),
            (0x1A, 0x00..=0x11) => Some(Self::Turin),
            _ => None,
        }
    }

    fn ark_pem(self) -> &'static [u8] {
        match self {
            Self::Milan => builtin::milan::ARK,
            Self::Genoa => builtin::genoa::ARK,
            Self::Turin => builtin::turin::ARK,
        }
    }

    fn ask_pem(self) -> &'static [u8] {
        match self {
            Self::Milan => builtin::milan::ASK,
            Self::Genoa => builtin::genoa::ASK,
            Self::Turin => builtin::turin::ASK,
        }
    }

    /// The VLEK signing key: the `sev` crate does not ship it (see `amd/README.md`).
    fn asvk_pem(self) -> &'static [u8] {
        match self {
            Self::Milan => include_bytes!("amd/milan_asvk.pem"),
            Self::Genoa => include_bytes!("amd/genoa_asvk.pem"),
            Self::Turin => include_bytes!("amd/turin_asvk.pem"),
        }
    }

    /// SHA-256 of the ARK's DER, as AMD's key distribution service serves it. Pinned here so
    /// that a change of the roots inside a dependency cannot go unnoticed.
    fn ark_sha256(self) -> &'static str {
        match self {
            Self::Milan => "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
            Self::Genoa => "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
            Self::Turin => "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        }
    }
}

impl fmt::Display for AmdProduct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kind of key signed a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndorsementKey {
    /// Versioned Chip Endorsement Key: unique to one chip at one TCB, certified by the ASK.
    Vcek,
    /// Versioned Loaded Endorsement Key: provisioned by AMD to a cloud provider's platforms,
    /// certified by the ASVK.
    Vlek,
}

impl fmt::Display for EndorsementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vcek => "VCEK",
            Self::Vlek => "VLEK",
        })
    }
}

/// What a report says about the guest's launch policy and the platform, as
/// [`check_platform_state`] reads it. Public so that each rule can be tested on its own; only
/// [`authenticate_report`] fills it from authenticated bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnpPlatformState {
    /// GUEST_POLICY: the launch policy the guest owner chose and the firmware enforces for the
    /// guest's life (see [`GUEST_POLICY_DEBUG`], [`GUEST_POLICY_SMT`]).
    pub guest_policy: u64,
    /// PLATFORM_INFO: the platform's state when it signed the report (see
    /// [`PLATFORM_INFO_SMT_EN`]).
    pub platform_info: u64,
    /// VMPL: the guest privilege level the report was requested for.
    pub vmpl: u32,
    /// REPORTED_TCB: the firmware and microcode levels the signing key is derived for.
    pub reported_tcb: SnpTcb,
}

/// A report whose signature verified under a certificate that chains to an AMD root.
///
/// It can only be obtained from [`authenticate_report`]; the owner's policy rules have not been
/// applied to it yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedReport {
    product: AmdProduct,
    key: EndorsementKey,
    version: u32,
    measurement: [u8; 48],
    report_data: [u8; 64],
    chip_id: [u8; 64],
    state: SnpPlatformState,
}

impl AuthenticatedReport {
    /// The product whose root certified the signing key.
    pub fn product(&self) -> AmdProduct {
        self.product
    }

    /// The kind of key that signed the report.
    pub fn key(&self) -> EndorsementKey {
        self.key
    }

    /// The report format version (2, 3 or 5; 4 is read as 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// MEASUREMENT: the launch digest of the guest's initial memory and VM state.
    pub fn measurement(&self) -> &[u8; 48] {
        &self.measurement
    }

    /// REPORT_DATA: the 64 bytes the guest asked the firmware to sign.
    pub fn report_data(&self) -> &[u8; 64] {
        &self.report_data
    }

    /// CHIP_ID: the chip's identifier, all zero when the guest policy masks it.
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }

    /// The guest and platform state the policy rules read.
    pub fn state(&self) -> &SnpPlatformState {
        &self.state
    }
}

/// Authenticates an SEV-SNP report: `statement` is the report, `endorsements` the DER VCEK or
/// VLEK that signed it, `time` when certificates must be valid, and `products` the product
/// lines whose roots are accepted ([`SnpVerifier`] accepts [`AmdProduct::ALL`]; an owner whose
/// provider runs only one product line can name just that one). See the module documentation
/// for the checks and their order.
pub fn authenticate_report(
    statement: &[u8],
    endorsements: &[u8],
    time: VerificationTime,
    products: &[AmdProduct],
) -> Result<AuthenticatedReport, AttestationError> {
    if endorsements.is_empty() {
        return Err(AttestationError::MissingEndorsements {
            tee: TeeKind::SevSnp,
            what: "the VCEK or VLEK certificate that signed the report",
        });
    }
    let report = parse_report(statement)?;
    let vek = Certificate::from_der(endorsements).map_err(|e| {
        malformed(format!(
            "the endorsement is not a DER X.509 certificate (a VCEK or VLEK): {e}"
        ))
    })?;
    // The bytes the chain signature is checked over: the certificate as the parser read it.
    let vek_der = vek
        .to_der()
        .map_err(|e| malformed(format!("the VCEK or VLEK does not re-encode: {e}")))?;
    let view = asn1::parse_certificate(&vek_der)
        .map_err(|e| malformed(format!("the VCEK or VLEK certificate: {e}")))?;

    // 2. The chain, to a root that ships with the verifier.
    let signer = shipped_signers()?
        .iter()
        .filter(|s| products.contains(&s.product))
        .find(|s| s.subject == view.issuer)
        .ok_or_else(|| AttestationError::WrongRoot {
            tee: TeeKind::SevSnp,
            detail: format!(
                "the certificate was issued by {:?}, which is not the VCEK or VLEK signing key \
                 of an accepted AMD root ({})",
                asn1::common_name(view.issuer),
                products
                    .iter()
                    .map(|p| format!("ARK-{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    if view.signature_algorithm != view.tbs_signature_algorithm || view.signature_unused_bits != 0 {
        return Err(bad_chain(
            "the certificate's outer signature algorithm or signature encoding differs from \
             what its signed part says"
                .into(),
        ));
    }
    (&signer.cert, &vek).verify().map_err(|e| {
        bad_chain(format!(
            "{} does not sign this {}: {e}",
            signer.name, signer.key
        ))
    })?;

    // 3. Validity at the policy's time.
    let now = time.unix_seconds();
    for (what, validity) in [
        (signer.key.to_string(), view.validity),
        (signer.name.clone(), signer.validity),
        (signer.ark_name.clone(), signer.ark_validity),
    ] {
        if now < validity.not_before || now > validity.not_after {
            return Err(AttestationError::Expired {
                tee: TeeKind::SevSnp,
                detail: format!(
                    "the {what} certificate is valid from {} to {}, not at {}",
                    utc(validity.not_before),
                    utc(validity.not_after),
                    utc(now)
                ),
            });
        }
    }

    // 4. The report's signature, over exactly the bytes presented.
    verify_report_signature(statement, &report, &vek)?;

    // 5. The report is authentic: its own fields can be believed from here on.
    check_report_matches_certificate(&report, &view, signer)?;

    Ok(AuthenticatedReport {
        product: signer.product,
        key: signer.key,
        version: report.version,
        measurement: report.measurement,
        report_data: report.report_data,
        chip_id: report.chip_id,
        state: SnpPlatformState {
            guest_policy: u64::from(report.policy),
            platform_info: u64::from(report.plat_info),
            vmpl: report.vmpl,
            reported_tcb: SnpTcb {
                bootloader: report.reported_tcb.bootloader,
                tee: report.reported_tcb.tee,
                snp: report.reported_tcb.snp,
                microcode: report.reported_tcb.microcode,
            },
        },
    })
}

/// Applies the owner's rules to an authenticated report's state, in this order:
///
/// - DEBUG allowed in the guest policy: refused ([`AttestationError::DebugEnclave`]), because
///   the hypervisor could then read and write the guest's memory.
/// - VMPL other than 0: refused ([`AttestationError::PlatformSetting`]). Software at a less
///   privileged level (a guest OS under an SVSM or paravisor, whose launch measurement covers
///   only the more privileged layer) can request reports for its own level with report data
///   of its choosing; only VMPL 0 speaks for the measured image. The attester requests reports
///   at VMPL 0 (configfs-tsm's default privilege level).
/// - SMT enabled on the platform while the policy refuses it
///   ([`AttestationError::PlatformSetting`]). PLATFORM_INFO's SMT_EN bit says whether SMT *is*
///   enabled when the report is signed; the guest policy's SMT bit only says whether it *may*
///   be, so a guest that allows SMT on a host with SMT disabled is accepted.
/// - Each REPORTED_TCB component (boot loader, TEE, SNP firmware, microcode) below the
///   policy's minimum ([`AttestationError::TcbNotAccepted`]).
pub fn check_platform_state(
    state: &SnpPlatformState,
    policy: &Policy,
) -> Result<(), AttestationError> {
    if GuestPolicy::from(state.guest_policy).debug_allowed() {
        return Err(AttestationError::DebugEnclave {
            tee: TeeKind::SevSnp,
        });
    }
    if state.vmpl != 0 {
        return Err(AttestationError::PlatformSetting {
            tee: TeeKind::SevSnp,
            setting: "a report requested for a guest privilege level (VMPL) other than 0",
        });
    }
    if PlatformInfo::from(state.platform_info).smt_enabled() && !policy.snp_smt_allowed() {
        return Err(AttestationError::PlatformSetting {
            tee: TeeKind::SevSnp,
            setting: "simultaneous multithreading",
        });
    }
    let have = state.reported_tcb;
    let min = policy.snp_tcb_minimum();
    for (component, have, min) in [
        ("bootloader", have.bootloader, min.bootloader),
        ("TEE", have.tee, min.tee),
        ("SNP", have.snp, min.snp),
        ("microcode", have.microcode, min.microcode),
    ] {
        if have < min {
            return Err(AttestationError::TcbNotAccepted {
                status: format!("SEV-SNP {component} {have} below the policy's minimum {min}"),
                advisories: vec![],
            });
        }
    }
    Ok(())
}

fn malformed(detail: String) -> AttestationError {
    AttestationError::Malformed(detail)
}

fn bad_chain(detail: String) -> AttestationError {
    AttestationError::BadCertificateChain {
        tee: TeeKind::SevSnp,
        detail,
    }
}

fn bad_signature(detail: String) -> AttestationError {
    AttestationError::BadSignature {
        tee: TeeKind::SevSnp,
        detail,
    }
}

fn parse_report(statement: &[u8]) -> Result<AttestationReport, AttestationError> {
    if statement.len() != REPORT_LEN {
        return Err(malformed(format!(
            "an SEV-SNP attestation report is {REPORT_LEN} bytes; this statement has {}",
            statement.len()
        )));
    }
    let version = statement
        .first_chunk::<4>()
        .map_or(0, |v| u32::from_le_bytes(*v));
    if !(2..=5).contains(&version) {
        return Err(malformed(format!(
            "SEV-SNP report version {version}: this verifier reads versions 2 to 5"
        )));
    }
    AttestationReport::from_bytes(statement)
        .map_err(|e| malformed(format!("the SEV-SNP report does not parse: {e}")))
}

/// Step 4. The `sev` crate verifies the signature over its own re-encoding of the parsed
/// report, not over the bytes it parsed: the re-encoding writes zeros for the reserved bytes
/// its parser skips without checking (inside each TCB version, and the 368 reserved bytes
/// after R and S), and the verification uses only 48 of each 72-byte signature component. So
/// the re-encoding must be byte-for-byte the statement, and the components' high bytes zero:
/// otherwise bytes the signature does not cover could be altered unnoticed. (The other
/// reserved fields the parser itself requires to be zero, in step 1.)
fn verify_report_signature(
    statement: &[u8],
    report: &AttestationReport,
    vek: &Certificate,
) -> Result<(), AttestationError> {
    let signature = &report.signature;
    if signature.r()[P384_SCALAR_LEN..]
        .iter()
        .chain(&signature.s()[P384_SCALAR_LEN..])
        .any(|&b| b != 0)
    {
        return Err(bad_signature(
            "the signature's R or S has bytes beyond a P-384 scalar".into(),
        ));
    }
    (vek, report).verify().map_err(|e| {
        bad_signature(format!(
            "the supplied VCEK or VLEK does not sign this report: {e}"
        ))
    })?;
    let canonical = report
        .to_bytes()
        .map_err(|e| bad_signature(format!("the report does not re-encode: {e}")))?;
    if canonical.as_slice() != statement {
        return Err(bad_signature(
            "reserved bytes of the report are not zero: they were altered after signing".into(),
        ));
    }
    Ok(())
}

/// Step 5: the authenticated report must be one this certificate can have signed.
fn check_report_matches_certificate(
    report: &AttestationReport,
    view: &asn1::CertificateView<'_>,
    signer: &Signer,
) -> Result<(), AttestationError> {
    if report.sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(malformed(format!(
            "SIG_ALGO {} (only 1, ECDSA P-384 with SHA-384, is defined)",
            report.sig_algo
        )));
    }
    let named = match report.key_info.signing_key() {
        0 => Some(EndorsementKey::Vcek),
        1 => Some(EndorsementKey::Vlek),
        _ => None,
    };
    if named != Some(signer.key) {
        return Err(bad_chain(format!(
            "the report names signing key {} (0: VCEK, 1: VLEK), but the endorsement is a {}",
            report.key_info.signing_key(),
            signer.key
        )));
    }
    if let (Some(family), Some(model)) = (report.cpuid_fam_id, report.cpuid_mod_id) {
        let product = AmdProduct::from_cpuid(family, model);
        if product != Some(signer.product) {
            return Err(AttestationError::WrongRoot {
                tee: TeeKind::SevSnp,
                detail: format!(
                    "the report comes from a {} processor (CPUID family {family:#04x}, model \
                     {model:#04x}), but its key is certified by AMD's {} root",
                    product.map_or("different", AmdProduct::name),
                    signer.product
                ),
            });
        }
    }
    let tcb = &report.reported_tcb;
    let mut components = vec![
        ("bootloader", oid::BL_SPL, Some(tcb.bootloader)),
        ("TEE", oid::TEE_SPL, Some(tcb.tee)),
        ("SNP", oid::SNP_SPL, Some(tcb.snp)),
        ("microcode", oid::UCODE_SPL, Some(tcb.microcode)),
    ];
    if signer.product == AmdProduct::Turin {
        components.push(("FMC", oid::FMC_SPL, tcb.fmc));
    }
    for (component, id, reported) in components {
        let certified = view
            .extension(id)
            .ok_or_else(|| {
                bad_chain(format!(
                    "the {} has no {component} SPL extension",
                    signer.key
                ))
            })
            .and_then(|value| {
                asn1::small_integer(value)
                    .map_err(|e| bad_chain(format!("the {}'s {component} SPL: {e}", signer.key)))
            })?;
        if reported != Some(certified) {
            return Err(bad_chain(format!(
                "the {} is for {component} SPL {certified}, the report's REPORTED_TCB has {}",
                signer.key,
                reported.map_or_else(|| "none".to_owned(), |r| r.to_string())
            )));
        }
    }
    // A masked CHIP_ID (all zeros) leaves nothing to compare; the VCEK's signature already
    // proves which chip signed.
    if signer.key == EndorsementKey::Vcek && report.chip_id.iter().any(|&b| b != 0) {
        // Turin VCEKs carry the first 8 bytes of the chip id, earlier ones all 64.
        let expected: &[u8] = if signer.product == AmdProduct::Turin {
            report.chip_id.get(..8).unwrap_or(&report.chip_id)
        } else {
            &report.chip_id
        };
        let hw_id = view
            .extension(oid::HW_ID)
            .ok_or_else(|| bad_chain("the VCEK has no hwID extension".into()))?;
        if asn1::hw_id(hw_id, expected.len()) != Some(expected) {
            return Err(bad_chain(format!(
                "the VCEK is for chip {}, the report comes from chip {}",
                hex::encode(hw_id),
                hex::encode(expected)
            )));
        }
    }
    Ok(())
}

/// A shipped key that issues VCEKs or VLEKs, with the root that certified it.
struct Signer {
    product: AmdProduct,
    key: EndorsementKey,
    cert: Certificate,
    /// DER of its subject name, which the certificates it issues name as their issuer.
    subject: Vec<u8>,
    name: String,
    validity: asn1::Validity,
    ark_name: String,
    ark_validity: asn1::Validity,
}

/// The shipped signing keys, loaded and checked against their roots once.
fn shipped_signers() -> Result<&'static [Signer], AttestationError> {
    static SIGNERS: OnceLock<Result<Vec<Signer>, String>> = OnceLock::new();
    SIGNERS
        .get_or_init(load_signers)
        .as_deref()
        .map_err(|e| bad_chain(format!("the AMD roots built into this verifier: {e}")))
}

fn load_signers() -> Result<Vec<Signer>, String> {
    let mut signers = Vec::new();
    for product in AmdProduct::ALL {
        let ark = Certificate::from_pem(product.ark_pem())
            .map_err(|e| format!("ARK-{product} does not parse: {e}"))?;
        let ark_der = ark
            .to_der()
            .map_err(|e| format!("ARK-{product} does not re-encode: {e}"))?;
        let fingerprint = hex::encode(Sha256::digest(&ark_der));
        if fingerprint != product.ark_sha256() {
            return Err(format!(
                "ARK-{product} has SHA-256 {fingerprint}, not AMD's {}",
                product.ark_sha256()
            ));
        }
        let ark_view =
            asn1::parse_certificate(&ark_der).map_err(|e| format!("ARK-{product}: {e}"))?;
        if ark_view.issuer != ark_view.subject {
            return Err(format!("ARK-{product} is not self-issued"));
        }
        (&ark, &ark)
            .verify()
            .map_err(|e| format!("ARK-{product} is not self-signed: {e}"))?;
        let ark_name = asn1::common_name(ark_view.subject);
        for (key, pem) in [
            (EndorsementKey::Vcek, product.ask_pem()),
            (EndorsementKey::Vlek, product.asvk_pem()),
        ] {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| format!("the {product} {key} signing key does not parse: {e}"))?;
            let der = cert
                .to_der()
                .map_err(|e| format!("the {product} {key} signing key does not re-encode: {e}"))?;
            let view = asn1::parse_certificate(&der)
                .map_err(|e| format!("the {product} {key} signing key: {e}"))?;
            if view.issuer != ark_view.subject {
                return Err(format!(
                    "the {product} {key} signing key is not issued by {ark_name}"
                ));
            }
            (&ark, &cert).verify().map_err(|e| {
                format!("{ark_name} does not sign the {product} {key} signing key: {e}")
            })?;
            signers.push(Signer {
                product,
                key,
                subject: view.subject.to_vec(),
                name: asn1::common_name(view.subject),
                validity: view.validity,
                ark_name: ark_name.clone(),
                ark_validity: ark_view.validity,
                cert,
            });
        }
    }
    Ok(signers)
}

/// An instant as `YYYY-MM-DD hh:mm:ss UTC`, for messages.
fn utc(seconds: u64) -> String {
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX);
    let rest = seconds % 86_400;
    let (year, month, day) = asn1::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// AMD's certificate extension ids (VCEK specification 57230, chapter 3), as DER OID contents.
mod oid {
    /// 1.3.6.1.4.1.3704.1.3.1: boot loader security patch level.
    pub(super) const BL_SPL: &[u8] = &[0x2B, 6, 1, 4, 1, 0x9C, 0x78, 1, 3, 1];
    /// 1.3.6.1.4.1.3704.1.3.2: PSP OS (TEE) security patch level.
    pub(super) const TEE_SPL: &[u8] = &[0x2B, 6, 1, 4, 1, 0x9C, 0x78, 1, 3, 2];
    /// 1.3.6.1.4.1.3704.1.3.3: SNP firmware security patch level.
    pub(super) const SNP_SPL: &[u8] = &[0x2B, 6, 1, 4, 1, 0x9C, 0x78, 1, 3, 3];
    /// 1.3.6.1.4.1.3704.1.3.8: microcode patch level.
    pub(super) const UCODE_SPL: &[u8] = &[0x2B, 6, 1, 4, 1, 0x9C, 0x78, 1, 3, 8];
    /// 1.3.6.1.4.1.3704.1.3.9: FMC security patch level (Turin and later).
    pub(super) const FMC_SPL: &[u8] = &[0x2B, 6, 1, 4, 1, 0x9C, 0x78, 1, 3, 9];
    /// 1.3.6.1.4.1.3704.1.4: the chip's hardware id (VCEK only).
    pub(super) const HW_ID: &[u8] = &[0x2B, 6, 1, 4, 1, 0x9C, 0x78, 1, 4];
    /// 2.5.4.3: commonName.
    pub(super) const COMMON_NAME: &[u8] = &[0x55, 4, 3];
}

/// The few DER structures of an X.509 certificate this verifier reads itself: names, validity
/// and AMD's extensions, which the `sev` crate does not expose. Only certificates the `sev`
/// crate has already parsed (and re-encoded) reach it.
mod asn1 {
    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const OCTET_STRING: u8 = 0x04;
    const OBJECT_IDENTIFIER: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const VERSION: u8 = 0xA0;
    const ISSUER_UID: u8 = 0x81;
    const SUBJECT_UID: u8 = 0x82;
    const EXTENSIONS: u8 = 0xA3;

    /// One DER element.
    #[derive(Clone, Copy, Debug)]
    struct Tlv<'a> {
        tag: u8,
        content: &'a [u8],
        encoded: &'a [u8],
    }

    fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
        let (&tag, rest) = input.split_first().ok_or("a DER element is missing")?;
        if tag & 0x1F == 0x1F {
            return Err("a multi-byte DER tag".into());
        }
        let (&first, mut rest) = rest.split_first().ok_or("a DER length is missing")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 {
                return Err("an unsupported DER length".into());
            }
            let (bytes, tail) = rest.split_at_checked(n).ok_or("a truncated DER length")?;
            rest = tail;
            bytes.iter().fold(0, |acc, &b| (acc << 8) | usize::from(b))
        };
        let header = input.len() - rest.len();
        let (content, tail) = rest
            .split_at_checked(len)
            .ok_or("a DER element runs past its container")?;
        let encoded = input
            .get(..header + len)
            .ok_or("a DER element runs past its container")?;
        Ok((
            Tlv {
                tag,
                content,
                encoded,
            },
            tail,
        ))
    }

    fn expect(input: &[u8], tag: u8) -> Result<(Tlv<'_>, &[u8]), String> {
        let (tlv, rest) = read(input)?;
        if tlv.tag != tag {
            return Err(format!(
                "DER tag {:#04x} where {tag:#04x} was expected",
                tlv.tag
            ));
        }
        Ok((tlv, rest))
    }

    /// notBefore and notAfter, in seconds since the Unix epoch.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) struct Validity {
        pub(super) not_before: u64,
        pub(super) not_after: u64,
    }

    /// One extension: its OID's contents and its extnValue's contents.
    type Extension<'a> = (&'a [u8], &'a [u8]);

    /// The parts of a certificate the verifier reads itself.
    #[derive(Debug)]
    pub(super) struct CertificateView<'a> {
        /// The issuer name, DER (tag and length included).
        pub(super) issuer: &'a [u8],
        /// The subject name, DER.
        pub(super) subject: &'a [u8],
        pub(super) validity: Validity,
        /// The signature AlgorithmIdentifier inside the signed part, DER.
        pub(super) tbs_signature_algorithm: &'a [u8],
        /// The signature AlgorithmIdentifier outside it, DER: must equal the signed one.
        pub(super) signature_algorithm: &'a [u8],
        /// The signature BIT STRING's unused-bits count: 0 in any real signature.
        pub(super) signature_unused_bits: u8,
        extensions: Vec<Extension<'a>>,
    }

    impl<'a> CertificateView<'a> {
        /// The value of the extension with OID contents `id`.
        pub(super) fn extension(&self, id: &[u8]) -> Option<&'a [u8]> {
            self.extensions
                .iter()
                .find(|(oid, _)| *oid == id)
                .map(|(_, value)| *value)
        }
    }

    pub(super) fn parse_certificate(der: &[u8]) -> Result<CertificateView<'_>, String> {
        let (cert, rest) = expect(der, SEQUENCE)?;
        if !rest.is_empty() {
            return Err("bytes after the certificate".into());
        }
        let (tbs, rest) = expect(cert.content, SEQUENCE)?;
        let (signature_algorithm, rest) = expect(rest, SEQUENCE)?;
        let (signature, rest) = expect(rest, BIT_STRING)?;
        if !rest.is_empty() {
            return Err("bytes after the certificate's signature".into());
        }
        let signature_unused_bits = *signature
            .content
            .first()
            .ok_or("an empty signature BIT STRING")?;

        let mut rest = tbs.content;
        let (first, after) = read(rest)?;
        if first.tag == VERSION {
            rest = after;
        }
        let (_serial, rest) = expect(rest, INTEGER)?;
        let (tbs_signature_algorithm, rest) = expect(rest, SEQUENCE)?;
        let (issuer, rest) = expect(rest, SEQUENCE)?;
        let (validity, rest) = expect(rest, SEQUENCE)?;
        let (subject, rest) = expect(rest, SEQUENCE)?;
        let (_key, mut rest) = expect(rest, SEQUENCE)?;
        let mut extensions = Vec::new();
        while !rest.is_empty() {
            let (field, tail) = read(rest)?;
            rest = tail;
            match field.tag {
                ISSUER_UID | SUBJECT_UID => {}
                EXTENSIONS => extensions = parse_extensions(field.content)?,
                other => return Err(format!("an unexpected certificate field, tag {other:#04x}")),
            }
        }
        let (not_before, times) = read(validity.content)?;
        let (not_after, times) = read(times)?;
        if !times.is_empty() {
            return Err("bytes after the validity period".into());
        }
        Ok(CertificateView {
            issuer: issuer.encoded,
            subject: subject.encoded,
            validity: Validity {
                not_before: parse_time(not_before)?,
                not_after: parse_time(not_after)?,
            },
            tbs_signature_algorithm: tbs_signature_algorithm.encoded,
            signature_algorithm: signature_algorithm.encoded,
            signature_unused_bits,
            extensions,
        })
    }

    fn parse_extensions(explicit: &[u8]) -> Result<Vec<Extension<'_>>, String> {
        let (list, rest) = expect(explicit, SEQUENCE)?;
        if !rest.is_empty() {
            return Err("bytes after the extensions".into());
        }
        let mut extensions = Vec::new();
        let mut rest = list.content;
        while !rest.is_empty() {
            let (extension, tail) = expect(rest, SEQUENCE)?;
            rest = tail;
            let (id, fields) = expect(extension.content, OBJECT_IDENTIFIER)?;
            let (mut value, after) = read(fields)?;
            let mut after = after;
            if value.tag == BOOLEAN {
                (value, after) = read(after)?;
            }
            if value.tag != OCTET_STRING || !after.is_empty() {
                return Err("a malformed extension".into());
            }
            if extensions.iter().any(|(seen, _)| *seen == id.content) {
                return Err("an extension that appears twice".into());
            }
            extensions.push((id.content, value.content));
        }
        Ok(extensions)
    }

    /// A DER INTEGER from 0 to 255 (AMD's security patch levels).
    pub(super) fn small_integer(der: &[u8]) -> Result<u8, String> {
        let (int, rest) = expect(der, INTEGER)?;
        if !rest.is_empty() {
            return Err("bytes after the INTEGER".into());
        }
        match int.content {
            [value] if *value < 0x80 => Ok(*value),
            [0, value] if *value >= 0x80 => Ok(*value),
            _ => Err("not an integer from 0 to 255".into()),
        }
    }

    /// The hwID extension's chip id, `len` bytes: AMD wrote it raw at first, later as a DER
    /// OCTET STRING. The raw form is recognised by its length, so the two cannot be confused.
    pub(super) fn hw_id(value: &[u8], len: usize) -> Option<&[u8]> {
        if value.len() == len {
            return Some(value);
        }
        match expect(value, OCTET_STRING) {
            Ok((octets, rest)) if rest.is_empty() && octets.content.len() == len => {
                Some(octets.content)
            }
            _ => None,
        }
    }

    /// The common name in a DER name, for messages.
    pub(super) fn common_name(name: &[u8]) -> String {
        fn find(name: &[u8]) -> Result<Option<String>, String> {
            let (seq, _) = expect(name, SEQUENCE)?;
            let mut rdns = seq.content;
            while !rdns.is_empty() {
                let (rdn, tail) = expect(rdns, SET)?;
                rdns = tail;
                let mut attributes = rdn.content;
                while !attributes.is_empty() {
                    let (attribute, tail) = expect(attributes, SEQUENCE)?;
                    attributes = tail;
                    let (id, value) = expect(attribute.content, OBJECT_IDENTIFIER)?;
                    if id.content == super::oid::COMMON_NAME {
                        let (value, _) = read(value)?;
                        return Ok(Some(String::from_utf8_lossy(value.content).into_owned()));
                    }
                }
            }
            Ok(None)
        }
        match find(name) {
            Ok(Some(cn)) => cn,
            _ => "(a name without a common name)".to_owned(),
        }
    }

    /// A UTCTime or GeneralizedTime (`Z` form, as RFC 5280 requires) in seconds since the Unix
    /// epoch; instants before 1970 read as 0.
    fn parse_time(time: Tlv<'_>) -> Result<u64, String> {
        let (year, rest) = match time.tag {
            UTC_TIME if time.content.len() == 13 => {
                let (yy, rest) = number(time.content, 2)?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
            }
            GENERALIZED_TIME if time.content.len() == 15 => number(time.content, 4)?,
            _ => {
                return Err(
                    "a validity time that is not UTCTime or GeneralizedTime in Z form".into(),
                );
            }
        };
        let (month, rest) = number(rest, 2)?;
        let (day, rest) = number(rest, 2)?;
        let (hour, rest) = number(rest, 2)?;
        let (minute, rest) = number(rest, 2)?;
        let (second, rest) = number(rest, 2)?;
        if rest != b"Z"
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err("an invalid validity time".into());
        }
        let days = days_from_civil(i64::from(year), month, day);
        let seconds =
            days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
        Ok(u64::try_from(seconds).unwrap_or(0))
    }

    fn number(text: &[u8], digits: usize) -> Result<(u32, &[u8]), String> {
        let (head, rest) = text
            .split_at_checked(digits)
            .ok_or("a truncated validity time")?;
        let mut value = 0;
        for &c in head {
            if !c.is_ascii_digit() {
                return Err("a validity time with a non-digit".into());
            }
            value = value * 10 + u32::from(c - b'0');
        }
        Ok((value, rest))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    pub(super) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let year_of_era = year - era * 400;
        let month_from_march = i64::from((month + 9) % 12);
        let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date of a day count since 1970-01-01 (the inverse of [`days_from_civil`]).
    pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
        let days = days.saturating_add(719_468);
        let era = days.div_euclid(146_097);
        let day_of_era = days - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (
            year,
            u32::try_from(month).unwrap_or(1),
            u32::try_from(day).unwrap_or(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY_HW_ID_VCEK: &[u8] =
        include_bytes!("../../tests/vectors/snp/test-vcek-invalid-legacy.der");
    const OCTET_STRING_HW_ID_VCEK: &[u8] =
        include_bytes!("../../tests/vectors/snp/test-vcek-invalid-new.der");

    #[test]
    fn shipped_roots_load_and_verify() {
        let signers = match shipped_signers() {
            Ok(signers) => signers,
            Err(e) => panic!("{e}"),
        };
        let names: Vec<_> = signers
            .iter()
            .map(|s| format!("{} {} {} {}", s.product, s.key, s.name, s.ark_name))
            .collect();
        assert_eq!(
            names,
            [
                "Milan VCEK SEV-Milan ARK-Milan",
                "Milan VLEK SEV-VLEK-Milan ARK-Milan",
                "Genoa VCEK SEV-Genoa ARK-Genoa",
                "Genoa VLEK SEV-VLEK-Genoa ARK-Genoa",
                "Turin VCEK SEV-Turin ARK-Turin",
                "Turin VLEK SEV-VLEK-Turin ARK-Turin",
            ]
        );
    }

    #[test]
    fn times_convert_both_ways() {
        // 2025-06-01 00:00:00 UTC, checked with `date -u -d 2025-06-01 +%s`.
        assert_eq!(asn1::days_from_civil(2025, 6, 1) * 86_400, 1_748_736_000);
        assert_eq!(asn1::days_from_civil(1970, 1, 1), 0);
        for days in [-1, 0, 59, 60, 365, 11_016, 20_240, 30_000, 100_000] {
            let (y, m, d) = asn1::civil_from_days(days);
            assert_eq!(asn1::days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(utc(1_748_736_000 + 3_723), "2025-06-01 01:02:03 UTC");
    }

    #[test]
    fn small_integers_are_read_as_der() {
        assert_eq!(asn1::small_integer(&[2, 1, 0x73]), Ok(0x73));
        assert_eq!(asn1::small_integer(&[2, 2, 0, 0xD9]), Ok(0xD9));
        assert!(asn1::small_integer(&[2, 1, 0xD9]).is_err(), "negative");
        assert!(asn1::small_integer(&[2, 2, 1, 0]).is_err(), "too large");
        assert!(
            asn1::small_integer(&[2, 2, 0, 0x10]).is_err(),
            "not minimal"
        );
        assert!(asn1::small_integer(&[4, 1, 3]).is_err(), "not an INTEGER");
    }

    #[test]
    fn both_hw_id_encodings_are_read() {
        // Two certificates from the trustee project whose hwID is 00 01 .. 3F, written raw
        // (the legacy form) and as an OCTET STRING (the current one).
        let expected: Vec<u8> = (0..64).collect();
        for (der, raw_len, microcode) in [
            (LEGACY_HW_ID_VCEK, 64, 0xA9),
            (OCTET_STRING_HW_ID_VCEK, 66, 0x1E),
        ] {
            let view = asn1::parse_certificate(der).map_err(|e| e.to_string());
            let Ok(view) = view else {
                panic!("{view:?}");
            };
            let value = view.extension(oid::HW_ID).unwrap_or_default();
            assert_eq!(value.len(), raw_len);
            assert_eq!(asn1::hw_id(value, 64), Some(expected.as_slice()));
            assert_eq!(
                view.extension(oid::UCODE_SPL).map(asn1::small_integer),
                Some(Ok(microcode))
            );
        }
        assert_eq!(asn1::hw_id(&[4, 2, 1, 2], 2), Some(&[1, 2][..]));
        assert_eq!(asn1::hw_id(&[4, 3, 1, 2, 3], 2), None);
    }

    #[test]
    fn cpuid_names_the_product() {
        assert_eq!(AmdProduct::from_cpuid(0x19, 0x01), Some(AmdProduct::Milan));
        assert_eq!(AmdProduct::from_cpuid(0x19, 0x11), Some(AmdProduct::Genoa));
        assert_eq!(AmdProduct::from_cpuid(0x19, 0xA0), Some(AmdProduct::Genoa));
        assert_eq!(AmdProduct::from_cpuid(0x1A, 0x02), Some(AmdProduct::Turin));
        assert_eq!(AmdProduct::from_cpuid(0x17, 0x31), None);
    }

    /// Step 5 on the real Milan report and its VCEK, with one authenticated field changed at a
    /// time (no real report can disagree with the VCEK that signed it).
    #[test]
    fn the_report_must_be_one_its_certificate_can_have_signed() {
        const REPORT_HEX: &str = include_str!("../../tests/vectors/snp/report_milan.hex");
        const VCEK: &[u8] = include_bytes!("../../tests/vectors/snp/vcek_milan.der");
        let Ok(bytes) = hex::decode(REPORT_HEX.trim()) else {
            panic!("the vector is hex");
        };
        let Ok(report) = AttestationReport::from_bytes(&bytes) else {
            panic!("the vector parses");
        };
        let Ok(view) = asn1::parse_certificate(VCEK) else {
            panic!("the vector's VCEK parses");
        };
        let Ok(signers) = shipped_signers() else {
            panic!("the shipped roots load");
        };
        let find = |product, key| {
            signers
                .iter()
                .find(|s| s.product == product && s.key == key)
                .unwrap_or_else(|| panic!("{product} {key}"))
        };
        let milan = find(AmdProduct::Milan, EndorsementKey::Vcek);
        assert_eq!(
            check_report_matches_certificate(&report, &view, milan),
            Ok(())
        );

        let chain = |r: &Result<(), AttestationError>| {
            matches!(r, Err(AttestationError::BadCertificateChain { .. }))
        };
        let mut other = report;
        other.reported_tcb.microcode += 1;
        assert!(chain(&check_report_matches_certificate(
            &other, &view, milan
        )));
        let mut other = report;
        other.reported_tcb.bootloader -= 1;
        assert!(chain(&check_report_matches_certificate(
            &other, &view, milan
        )));
        let mut other = report;
        other.chip_id[63] ^= 1;
        assert!(chain(&check_report_matches_certificate(
            &other, &view, milan
        )));
        // A masked chip id leaves nothing to compare.
        let mut other = report;
        other.chip_id = [0; 64];
        assert_eq!(
            check_report_matches_certificate(&other, &view, milan),
            Ok(())
        );
        // KEY_INFO naming the VLEK while a VCEK signed.
        let mut other = report;
        other.key_info = 1u32.wrapping_shl(2).into();
        assert!(chain(&check_report_matches_certificate(
            &other, &view, milan
        )));
        // The VCEK's chain checked as a VLEK's.
        let vlek = find(AmdProduct::Milan, EndorsementKey::Vlek);
        assert!(chain(&check_report_matches_certificate(
            &report, &view, vlek
        )));
        // CPUID naming another product than the root that certified the key.
        let mut other = report;
        other.cpuid_fam_id = Some(0x1A);
        other.cpuid_mod_id = Some(0x02);
        assert!(matches!(
            check_report_matches_certificate(&other, &view, milan),
            Err(AttestationError::WrongRoot { .. })
        ));
        other.cpuid_fam_id = Some(0x19);
        other.cpuid_mod_id = Some(0x01);
        assert_eq!(
            check_report_matches_certificate(&other, &view, milan),
            Ok(())
        );
        let mut other = report;
        other.sig_algo = 2;
        assert!(matches!(
            check_report_matches_certificate(&other, &view, milan),
            Err(AttestationError::Malformed(_))
        ));
    }
}
