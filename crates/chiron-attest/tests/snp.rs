//! The SEV-SNP verifier on real recorded evidence (see `vectors/snp/README.md` for where each
//! report and certificate comes from).
//!
//! Every refusal is checked for its typed reason, on a change to evidence that the verifier
//! authenticates unchanged, so that each test fails if the verifier accepts too much or too
//! little.
#![cfg(feature = "verifier")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use chiron_attest::policy::{Policy, SnpReference, SnpTcb, VerificationTime};
use chiron_attest::verifier::StatementVerifier;
use chiron_attest::verifier::snp::{
    AmdProduct, EndorsementKey, GUEST_POLICY_DEBUG, GUEST_POLICY_SMT, PLATFORM_INFO_SMT_EN,
    REPORT_LEN, SnpPlatformState, SnpVerifier, authenticate_report, check_platform_state,
};
use chiron_attest::{AttestationError, Identity};
use chiron_proto::evidence::{EVIDENCE_VERSION, Evidence, Role, TeeKind};
use sev::certs::snp::Certificate;

/// 2025-06-01 00:00:00 UTC: every certificate of the vectors is valid then (the VLEK, the
/// shortest-lived, from 2024-12-10 to 2025-12-10).
const AT: VerificationTime = VerificationTime::At(1_748_736_000);

// Offsets in the report (SEV-SNP ABI specification, table "ATTESTATION_REPORT").
const GUEST_POLICY: usize = 0x08;
const VMPL: usize = 0x30;
const PLATFORM_INFO: usize = 0x40;
const REPORT_DATA: usize = 0x50;
const MEASUREMENT: usize = 0x90;
const REPORTED_TCB: usize = 0x180;
const CHIP_ID: usize = 0x1A0;
const RESERVED_AFTER_LAUNCH_TCB: usize = 0x1F8;
const SIGNATURE_R: usize = 0x2A0;
const SIGNATURE_S: usize = 0x2E8;
const SIGNATURE_RESERVED: usize = 0x330;

const D: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/snp/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{D}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The first certificate of a PEM file, as DER.
fn pem_to_der(name: &str) -> Vec<u8> {
    let text = String::from_utf8(read(name)).unwrap();
    let end = "-----END CERTIFICATE-----";
    let first = &text[..text.find(end).expect("a PEM certificate") + end.len()];
    Certificate::from_pem(first.as_bytes())
        .and_then(|c| c.to_der())
        .unwrap()
}

/// The SNP report inside an Azure HCL report: after its 32-byte header.
fn hcl_snp_report(hcl: &[u8]) -> Vec<u8> {
    hcl[32..32 + REPORT_LEN].to_vec()
}

/// A recorded report with the certificate of the key that signed it.
#[derive(Clone)]
struct Vector {
    name: &'static str,
    report: Vec<u8>,
    vek: Vec<u8>,
    product: AmdProduct,
    key: EndorsementKey,
    version: u32,
}

impl Vector {
    fn measurement(&self) -> [u8; 48] {
        self.report[MEASUREMENT..MEASUREMENT + 48]
            .try_into()
            .unwrap()
    }

    fn report_data(&self) -> [u8; 64] {
        self.report[REPORT_DATA..REPORT_DATA + 64]
            .try_into()
            .unwrap()
    }

    /// A policy that accepts this report's measurement, with SMT allowed (most recorded hosts
    /// have it on).
    fn policy(&self) -> Policy {
        Policy::new()
            .accept_snp(SnpReference {
                measurement: self.measurement(),
            })
            .snp_allow_smt(true)
            .at(AT)
    }

    fn verify(
        &self,
        report: &[u8],
        vek: &[u8],
        policy: &Policy,
    ) -> Result<Identity, AttestationError> {
        SnpVerifier
            .verify_statement(report, vek, policy)
            .map(|claims| claims.identity)
    }

    fn with_report(&self, edit: impl FnOnce(&mut Vec<u8>)) -> Result<Identity, AttestationError> {
        let mut report = self.report.clone();
        edit(&mut report);
        self.verify(&report, &self.vek, &self.policy())
    }

    fn with_vek(&self, edit: impl FnOnce(&mut Vec<u8>)) -> Result<Identity, AttestationError> {
        let mut vek = self.vek.clone();
        edit(&mut vek);
        self.verify(&self.report, &vek, &self.policy())
    }
}

/// Milan, report version 2, VCEK: the `sev` crate's test data.
fn milan_sev() -> Vector {
    let hex = String::from_utf8(read("report_milan.hex")).unwrap();
    Vector {
        name: "sev report_milan",
        report: hex::decode(hex.trim()).unwrap(),
        vek: read("vcek_milan.der"),
        product: AmdProduct::Milan,
        key: EndorsementKey::Vcek,
        version: 2,
    }
}

/// Milan, report version 2, VCEK of another chip: trustee's test data.
fn milan_trustee() -> Vector {
    Vector {
        name: "trustee test-report",
        report: read("test-report.bin"),
        vek: read("test-vcek.der"),
        product: AmdProduct::Milan,
        key: EndorsementKey::Vcek,
        version: 2,
    }
}

/// Milan, report version 2, VCEK: an Azure confidential VM's HCL report (trustee's test data).
fn milan_azure() -> Vector {
    Vector {
        name: "trustee az-snp-vtpm hcl-report",
        report: hcl_snp_report(&read("az-hcl-report.bin")),
        vek: pem_to_der("az-vcek.pem"),
        product: AmdProduct::Milan,
        key: EndorsementKey::Vcek,
        version: 2,
    }
}

/// Genoa, report version 3, VCEK, SMT disabled on the host: an Azure confidential VM's HCL
/// report (trustee's test data).
fn genoa_azure() -> Vector {
    let evidence: serde_json::Value =
        serde_json::from_slice(&read("az-evidence-genoa.json")).unwrap();
    let hcl: Vec<u8> = serde_json::from_value(evidence["report"].clone()).unwrap();
    Vector {
        name: "trustee az-snp-vtpm evidence-genoa",
        report: hcl_snp_report(&hcl),
        vek: pem_to_der("az-vcek-genoa.pem"),
        product: AmdProduct::Genoa,
        key: EndorsementKey::Vcek,
        version: 3,
    }
}

/// Milan, report version 3, VLEK (AWS), requested for VMPL 1: trustee's test data.
fn milan_vlek() -> Vector {
    Vector {
        name: "trustee test-vlek-report",
        report: read("test-vlek-report.bin"),
        vek: read("test-vlek.der"),
        product: AmdProduct::Milan,
        key: EndorsementKey::Vlek,
        version: 3,
    }
}

fn vcek_vectors() -> [Vector; 4] {
    [milan_sev(), milan_trustee(), milan_azure(), genoa_azure()]
}

fn is_bad_signature(r: &Result<Identity, AttestationError>) -> bool {
    matches!(
        r,
        Err(AttestationError::BadSignature {
            tee: TeeKind::SevSnp,
            ..
        })
    )
}

fn is_bad_chain(r: &Result<Identity, AttestationError>) -> bool {
    matches!(
        r,
        Err(AttestationError::BadCertificateChain {
            tee: TeeKind::SevSnp,
            ..
        })
    )
}

fn is_wrong_root(r: &Result<Identity, AttestationError>) -> bool {
    matches!(
        r,
        Err(AttestationError::WrongRoot {
            tee: TeeKind::SevSnp,
            ..
        })
    )
}

fn is_malformed(r: &Result<Identity, AttestationError>) -> bool {
    matches!(r, Err(AttestationError::Malformed(_)))
}

#[test]
fn real_reports_are_accepted_under_a_matching_policy() {
    for v in vcek_vectors() {
        let policy = v.policy();
        let claims = SnpVerifier
            .verify_statement(&v.report, &v.vek, &policy)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(claims.report_data, v.report_data(), "{}", v.name);
        assert_eq!(
            claims.identity,
            Identity::SevSnp {
                measurement: v.measurement()
            },
            "{}",
            v.name
        );

        let report = authenticate_report(&v.report, &v.vek, AT, &AmdProduct::ALL).unwrap();
        assert_eq!(
            (report.product(), report.key(), report.version()),
            (v.product, v.key, v.version),
            "{}",
            v.name
        );
        assert_eq!(report.measurement(), &v.measurement());
        assert_eq!(report.chip_id()[..], v.report[CHIP_ID..CHIP_ID + 64]);
    }
}

#[test]
fn check_identity_accepts_the_measured_image_and_refuses_another() {
    for v in vcek_vectors() {
        let claims = SnpVerifier
            .verify_statement(&v.report, &v.vek, &v.policy())
            .unwrap();
        v.policy().check_identity(&claims.identity).unwrap();

        let mut other = v.measurement();
        other[0] ^= 1;
        let policy = Policy::new().accept_snp(SnpReference { measurement: other });
        match policy.check_identity(&claims.identity) {
            Err(AttestationError::WrongMeasurement { found, expected }) => {
                assert_eq!(
                    found,
                    format!("SEV-SNP measurement {}", hex::encode(v.measurement()))
                );
                assert_eq!(
                    expected,
                    [format!("SEV-SNP measurement {}", hex::encode(other))]
                );
            }
            other => panic!("{}: {other:?}", v.name),
        }
    }
}

#[test]
fn the_verify_entry_point_routes_to_this_verifier_and_requires_the_binding() {
    // The recorded report's data is not a Chiron binding: once the report authenticates,
    // `verify` must refuse it for not vouching for this evidence, and nothing earlier.
    let v = milan_sev();
    let evidence = Evidence {
        version: EVIDENCE_VERSION,
        tee: TeeKind::SevSnp,
        role: Role::Train,
        enclave_public_key: [1; 32],
        nonce: [2; 32],
        context: [3; 32],
        statement: v.report.clone(),
        endorsements: v.vek.clone(),
    };
    let r = chiron_attest::verify(&v.policy(), &evidence, Role::Train, &[2; 32], &[3; 32]);
    assert_eq!(r.unwrap_err(), AttestationError::ReportDataMismatch);

    let mut tampered = evidence.clone();
    tampered.statement[MEASUREMENT] ^= 1;
    let r = chiron_attest::verify(&v.policy(), &tampered, Role::Train, &[2; 32], &[3; 32]);
    assert!(
        matches!(r, Err(AttestationError::BadSignature { .. })),
        "{r:?}"
    );
}

#[test]
fn a_vlek_report_authenticates_and_is_refused_for_its_vmpl() {
    let v = milan_vlek();
    let report = authenticate_report(&v.report, &v.vek, AT, &AmdProduct::ALL).unwrap();
    assert_eq!(
        (report.product(), report.key(), report.version()),
        (AmdProduct::Milan, EndorsementKey::Vlek, 3)
    );
    assert_eq!(report.measurement(), &v.measurement());
    assert_eq!(report.report_data(), &v.report_data());
    assert_eq!(
        report.chip_id(),
        &[0; 64],
        "the VLEK report masks its chip id"
    );
    assert_eq!(report.state().vmpl, 1);
    assert_eq!(
        report.state().reported_tcb,
        SnpTcb {
            bootloader: 4,
            tee: 0,
            snp: 24,
            microcode: 0xD9
        }
    );

    // Recorded for VMPL 1: refused, whatever else the policy allows.
    assert_eq!(
        v.verify(&v.report, &v.vek, &v.policy()),
        Err(AttestationError::PlatformSetting {
            tee: TeeKind::SevSnp,
            setting: "a report requested for a guest privilege level (VMPL) other than 0",
        })
    );
    // The same state at VMPL 0 passes the rules.
    let state = SnpPlatformState {
        vmpl: 0,
        ..*report.state()
    };
    check_platform_state(&state, &v.policy()).unwrap();

    // And the VLEK report is protected like the others.
    let mut report = v.report.clone();
    report[VMPL] = 0;
    assert!(is_bad_signature(&v.verify(&report, &v.vek, &v.policy())));
    let mut vlek = v.vek.clone();
    vlek[600] ^= 1;
    let r = v.verify(&v.report, &vlek, &v.policy());
    assert!(is_bad_chain(&r), "{r:?}");
    // The VLEK (whose chain to the ASVK holds) did not sign another platform's report.
    let r = v.verify(&milan_sev().report, &v.vek, &milan_sev().policy());
    assert!(is_bad_signature(&r), "{r:?}");
}

#[test]
fn a_flipped_byte_in_the_report_body_is_a_bad_signature() {
    for v in vcek_vectors() {
        for offset in [
            GUEST_POLICY + 1,
            MEASUREMENT,
            REPORT_DATA + 63,
            CHIP_ID + 5,
            // A reserved byte inside REPORTED_TCB, which the parser skips: the verifier
            // compares the bytes it was given with those the signature was checked over.
            REPORTED_TCB + 3,
        ] {
            let r = v.with_report(|r| r[offset] ^= 0x01);
            assert!(is_bad_signature(&r), "{} at {offset:#x}: {r:?}", v.name);
        }
        // A reserved field that must be zero: refused before the signature is checked.
        let r = v.with_report(|r| r[RESERVED_AFTER_LAUNCH_TCB + 4] ^= 0x01);
        assert!(is_malformed(&r), "{}: {r:?}", v.name);
    }
}

#[test]
fn a_flipped_byte_in_the_signature_is_a_bad_signature() {
    for v in vcek_vectors() {
        for offset in [
            SIGNATURE_R,
            SIGNATURE_R + 47,
            // R and S are 48-byte scalars stored in 72 bytes: their padding is checked too.
            SIGNATURE_R + 60,
            SIGNATURE_S + 10,
            SIGNATURE_S + 71,
            SIGNATURE_RESERVED + 100,
            REPORT_LEN - 1,
        ] {
            let r = v.with_report(|r| r[offset] ^= 0x80);
            assert!(is_bad_signature(&r), "{} at {offset:#x}: {r:?}", v.name);
        }
    }
}

#[test]
fn no_single_flipped_bit_in_a_report_is_accepted() {
    // Every byte of the version 3 report, and of the version 2 report every byte of the
    // header, of the TCB, CPUID, chip id and reserved fields and of R and S, and every 7th
    // byte elsewhere (each check costs an RSA and an ECDSA verification), one bit flipped.
    // A flip in the version or in a reserved field the specification says must be zero makes
    // the report malformed (the parser refuses it before any signature is checked); a flip in
    // the CPUID family or model (version 3 and later) may too, since they choose the TCB
    // layout. Every other flip is a bad signature.
    for (v, sampled) in [(genoa_azure(), false), (milan_sev(), true)] {
        let tested = |offset: usize| {
            !sampled
                || offset < MEASUREMENT
                || (REPORTED_TCB..SIGNATURE_RESERVED).contains(&offset)
                || offset.is_multiple_of(7)
        };
        let must_be_zero = |offset: usize| {
            matches!(offset, 0x4C..=0x4F | 0x1EB | 0x1EF | 0x1F8..=0x29F)
                || match v.version {
                    2 => (0x188..0x1A0).contains(&offset),
                    _ => (0x18B..0x1A0).contains(&offset),
                }
        };
        let structural = |offset: usize| {
            offset < 4
                || must_be_zero(offset)
                || (v.version >= 3 && (0x188..0x18A).contains(&offset))
        };
        let (mut bad_signature, mut malformed) = (0, 0);
        let offsets = (0..REPORT_LEN).filter(|&offset| tested(offset)).collect();
        for (offset, r) in each_flip(offsets, |offset| v.with_report(|r| r[offset] ^= 0x04)) {
            if is_bad_signature(&r) && !must_be_zero(offset) {
                bad_signature += 1;
            } else if is_malformed(&r) && structural(offset) {
                malformed += 1;
            } else {
                panic!("{} at {offset:#x}: {r:?}", v.name);
            }
        }
        println!(
            "{}: {bad_signature} bad signature, {malformed} malformed",
            v.name
        );
    }
}

#[test]
fn a_flipped_byte_in_the_vcek_breaks_the_chain() {
    let v = milan_sev();
    // Offsets in vcek_milan.der (`openssl asn1parse`): a digit of notBefore, the subject's
    // name, the public key, the hwID extension, the signature.
    for offset in [220, 300, 420, 720, v.vek.len() - 10] {
        let r = v.with_vek(|c| c[offset] ^= 0x01);
        assert!(is_bad_chain(&r), "at {offset}: {r:?}");
    }
    // The outer SEQUENCE's tag: no longer a certificate.
    let r = v.with_vek(|c| c[0] ^= 0x01);
    assert!(is_malformed(&r), "{r:?}");
}

#[test]
fn no_single_flipped_bit_in_a_vcek_is_accepted() {
    // Every byte of the VCEK, one bit flipped: refused as a broken chain, as malformed where
    // it no longer parses, or as the wrong root where the flip lands in the issuer's name.
    // Never as a bad report signature: the chain is checked before the report.
    let v = milan_sev();
    let (mut chain, mut malformed, mut root) = (0, 0, 0);
    for (offset, r) in each_flip((0..v.vek.len()).collect(), |offset| {
        v.with_vek(|c| c[offset] ^= 0x10)
    }) {
        if is_bad_chain(&r) {
            chain += 1;
        } else if is_malformed(&r) {
            malformed += 1;
        } else if is_wrong_root(&r) {
            root += 1;
        } else {
            panic!("at {offset}: {r:?}");
        }
    }
    println!("VCEK: {chain} bad chain, {malformed} malformed, {root} wrong root");
    assert!(chain > v.vek.len() / 2);
}

/// `check(offset)` for each offset, on all cores (each check verifies an RSA
/// and an ECDSA signature).
fn each_flip(
    offsets: Vec<usize>,
    check: impl Fn(usize) -> Result<Identity, AttestationError> + Sync,
) -> Vec<(usize, Result<Identity, AttestationError>)> {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let (check, offsets) = (&check, &offsets);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    offsets
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&offset| (offset, check(offset)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut results: Vec<_> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        results.sort_by_key(|(offset, _)| *offset);
        results
    })
}

#[test]
fn a_chain_to_another_root_is_refused() {
    let v = milan_sev();

    // The Milan VCEK, with only Turin's roots accepted.
    let r = authenticate_report(&v.report, &v.vek, AT, &[AmdProduct::Turin]);
    assert!(
        matches!(r, Err(AttestationError::WrongRoot { .. })),
        "{r:?}"
    );
    let r = authenticate_report(&v.report, &v.vek, AT, &[]);
    assert!(
        matches!(r, Err(AttestationError::WrongRoot { .. })),
        "{r:?}"
    );
    authenticate_report(&v.report, &v.vek, AT, &[AmdProduct::Milan]).unwrap();

    // The Genoa report's VCEK with only Milan's roots accepted.
    let g = genoa_azure();
    let r = authenticate_report(
        &g.report,
        &g.vek,
        AT,
        &[AmdProduct::Milan, AmdProduct::Turin],
    );
    assert!(
        matches!(r, Err(AttestationError::WrongRoot { .. })),
        "{r:?}"
    );

    // The same VCEK (same key, same AMD extensions) re-issued by a root of our own.
    let r = v.verify(&v.report, &read("forged-vcek-own-root.der"), &v.policy());
    assert!(is_wrong_root(&r), "{r:?}");
    // ... or under the exact name of AMD's Milan ASK, but signed by our key.
    let r = v.verify(&v.report, &read("forged-vcek-amd-name.der"), &v.policy());
    assert!(is_bad_chain(&r), "{r:?}");

    // AMD's own ASK presented as the endorsement: issued by the ARK, not by a VCEK signer.
    let ask = Certificate::from_pem(sev::certs::snp::builtin::milan::ASK)
        .and_then(|c| c.to_der())
        .unwrap();
    let r = v.verify(&v.report, &ask, &v.policy());
    assert!(is_wrong_root(&r), "{r:?}");
}

#[test]
fn a_genuine_vcek_of_another_chip_does_not_sign_the_report() {
    let v = milan_sev();
    // A Milan VCEK of another chip, and a Turin VCEK: both chain to AMD (the chain is checked
    // before the report, so a bad signature means it held), and neither signed this report.
    for other in ["test-vcek.der", "vcek_turin.der"] {
        let r = v.verify(&v.report, &read(other), &v.policy());
        assert!(is_bad_signature(&r), "{other}: {r:?}");
    }
}

#[test]
fn a_tcb_below_the_policy_minimum_is_refused() {
    let v = milan_sev(); // REPORTED_TCB: bootloader 3, TEE 0, SNP 8, microcode 115.
    let reported = SnpTcb {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
    };
    let verify = |min: SnpTcb| v.verify(&v.report, &v.vek, &v.policy().snp_min_tcb(min));
    verify(reported).unwrap();
    for (min, status) in [
        (
            SnpTcb {
                bootloader: 4,
                ..reported
            },
            "SEV-SNP bootloader 3 below the policy's minimum 4",
        ),
        (
            SnpTcb { tee: 1, ..reported },
            "SEV-SNP TEE 0 below the policy's minimum 1",
        ),
        (
            SnpTcb { snp: 9, ..reported },
            "SEV-SNP SNP 8 below the policy's minimum 9",
        ),
        (
            SnpTcb {
                microcode: 116,
                ..reported
            },
            "SEV-SNP microcode 115 below the policy's minimum 116",
        ),
    ] {
        assert_eq!(
            verify(min),
            Err(AttestationError::TcbNotAccepted {
                status: status.into(),
                advisories: vec![]
            })
        );
    }
}

#[test]
fn debug_guests_are_refused() {
    // No recorded report has DEBUG set. Setting the bit in a real report breaks its
    // signature; the rule itself is checked on the authenticated state with the bit set.
    let v = milan_sev();
    let r = v.with_report(|r| r[GUEST_POLICY + 2] |= (GUEST_POLICY_DEBUG >> 16) as u8);
    assert!(is_bad_signature(&r), "{r:?}");

    let report = authenticate_report(&v.report, &v.vek, AT, &AmdProduct::ALL).unwrap();
    let state = *report.state();
    assert_eq!(state.guest_policy & GUEST_POLICY_DEBUG, 0);
    check_platform_state(&state, &v.policy()).unwrap();
    let debug = SnpPlatformState {
        guest_policy: state.guest_policy | GUEST_POLICY_DEBUG,
        ..state
    };
    assert_eq!(
        check_platform_state(&debug, &v.policy()),
        Err(AttestationError::DebugEnclave {
            tee: TeeKind::SevSnp
        })
    );
}

#[test]
fn smt_is_refused_unless_the_policy_allows_it() {
    let smt = Err(AttestationError::PlatformSetting {
        tee: TeeKind::SevSnp,
        setting: "simultaneous multithreading",
    });
    // Recorded on hosts with SMT enabled: refused by a policy that does not allow it.
    for v in [milan_sev(), milan_trustee(), milan_azure()] {
        assert_eq!(v.report[PLATFORM_INFO] & 1, 1, "{}", v.name);
        let policy = v.policy().snp_allow_smt(false);
        assert_eq!(
            v.verify(&v.report, &v.vek, &policy).map(|_| ()),
            smt,
            "{}",
            v.name
        );
    }
    // Recorded on a host with SMT disabled, by a guest whose policy would allow it: accepted,
    // since SMT is not in use.
    let g = genoa_azure();
    let state = *authenticate_report(&g.report, &g.vek, AT, &AmdProduct::ALL)
        .unwrap()
        .state();
    assert_eq!(state.platform_info & PLATFORM_INFO_SMT_EN, 0);
    assert_ne!(state.guest_policy & GUEST_POLICY_SMT, 0);
    g.verify(&g.report, &g.vek, &g.policy().snp_allow_smt(false))
        .unwrap();
    // Claiming SMT in that report breaks its signature...
    let r = g.with_report(|r| r[PLATFORM_INFO] |= PLATFORM_INFO_SMT_EN as u8);
    assert!(is_bad_signature(&r), "{r:?}");
    // ... and the rule refuses it in an authenticated state.
    let smt_on = SnpPlatformState {
        platform_info: state.platform_info | PLATFORM_INFO_SMT_EN,
        ..state
    };
    assert_eq!(
        check_platform_state(&smt_on, &g.policy().snp_allow_smt(false)),
        smt
    );
    check_platform_state(&smt_on, &g.policy().snp_allow_smt(true)).unwrap();
}

#[test]
fn a_report_for_a_vmpl_other_than_0_is_refused() {
    let v = milan_sev();
    let r = v.with_report(|r| r[VMPL] = 2);
    assert!(is_bad_signature(&r), "{r:?}");
    let state = *authenticate_report(&v.report, &v.vek, AT, &AmdProduct::ALL)
        .unwrap()
        .state();
    for vmpl in [1, 2, 3] {
        let r = check_platform_state(&SnpPlatformState { vmpl, ..state }, &v.policy());
        assert!(
            matches!(r, Err(AttestationError::PlatformSetting { .. })),
            "{r:?}"
        );
    }
}

#[test]
fn missing_endorsements_are_reported() {
    let v = milan_sev();
    assert!(matches!(
        v.verify(&v.report, &[], &v.policy()),
        Err(AttestationError::MissingEndorsements {
            tee: TeeKind::SevSnp,
            ..
        })
    ));
}

#[test]
fn truncated_or_malformed_input_is_malformed() {
    let v = milan_sev();
    let policy = v.policy();
    for report in [
        &v.report[..REPORT_LEN - 1],
        &v.report[..100],
        &[][..],
        &[v.report.as_slice(), &[0]].concat()[..],
    ] {
        let r = v.verify(report, &v.vek, &policy);
        assert!(is_malformed(&r), "{} bytes: {r:?}", report.len());
    }
    for version in [0u8, 1, 6] {
        let r = v.with_report(|r| r[0] = version);
        assert!(is_malformed(&r), "version {version}: {r:?}");
    }
    for vek in [
        &v.vek[..v.vek.len() - 1],
        &v.vek[..10],
        b"not a certificate",
    ] {
        let r = v.verify(&v.report, vek, &policy);
        assert!(is_malformed(&r), "{r:?}");
    }
}

#[test]
fn certificates_must_be_valid_at_the_policy_time() {
    // 2031-01-01: after the Milan VCEK's notAfter (2030-04-03).
    let v = milan_sev();
    let late = v.policy().at(VerificationTime::At(1_924_992_000));
    let r = v.verify(&v.report, &v.vek, &late);
    assert!(matches!(r, Err(AttestationError::Expired { .. })), "{r:?}");
    // 2022-01-01: before its notBefore (2023-04-03).
    let early = v.policy().at(VerificationTime::At(1_640_995_200));
    let r = v.verify(&v.report, &v.vek, &early);
    assert!(matches!(r, Err(AttestationError::Expired { .. })), "{r:?}");
    // 2026-01-01: the VLEK (one year, to 2025-12-10) has expired.
    let r = authenticate_report(
        &milan_vlek().report,
        &milan_vlek().vek,
        VerificationTime::At(1_767_225_600),
        &AmdProduct::ALL,
    );
    assert!(matches!(r, Err(AttestationError::Expired { .. })), "{r:?}");
}

#[test]
fn verify_time() {
    // Median of 20 verifications of one report (chain to the shipped root, report signature,
    // policy); printed, not asserted.
    let v = milan_sev();
    let policy = v.policy();
    v.verify(&v.report, &v.vek, &policy).unwrap();
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let start = Instant::now();
            v.verify(&v.report, &v.vek, &policy).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "SEV-SNP verify_statement: median {:?} of 20 (min {:?}, max {:?})",
        times[10], times[0], times[19]
    );
}
