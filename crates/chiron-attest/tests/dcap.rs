//! The SGX and TDX DCAP verifier on real recorded quotes and Intel collateral (see
//! `vectors/dcap/README.md` for where each file comes from).
//!
//! Every refusal is produced by changing one thing in an otherwise accepted vector, and each
//! test first checks that the unchanged vector is accepted where that is not obvious, so that
//! a test cannot pass because the vector was refused for another reason.

#![cfg(feature = "verifier")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chiron_attest::policy::{DcapTcbStatus, Policy, SgxReference, TdxReference, VerificationTime};
use chiron_attest::verifier::StatementVerifier;
use chiron_attest::verifier::dcap::{DcapVerifier, INTEL_SGX_ROOT_CA_DER};
use chiron_attest::{AttestationError, Identity, PlatformClaims};
use chiron_proto::evidence::TeeKind;
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::quote::Quote;

const SGX_QUOTE: &[u8] = include_bytes!("vectors/dcap/sgx_quote");
const SGX_COLLATERAL: &[u8] = include_bytes!("vectors/dcap/sgx_quote_collateral.json");
const TDX_QUOTE: &[u8] = include_bytes!("vectors/dcap/tdx_quote");
const TDX_COLLATERAL: &[u8] = include_bytes!("vectors/dcap/tdx_quote_collateral.json");
const TD15_QUOTE: &[u8] = include_bytes!("vectors/dcap/tdx_quote_td15ex");
const TD15_COLLATERAL: &[u8] = include_bytes!("vectors/dcap/tdx_quote_td15ex_collateral.json");
const OUTDATED_QUOTE: &[u8] = include_bytes!("vectors/dcap/tdx_quote_outdated");
const OUTDATED_COLLATERAL: &[u8] =
    include_bytes!("vectors/dcap/tdx_quote_outdated_collateral.json");
const TRUSTEE_QUOTE: &[u8] = include_bytes!("vectors/dcap/trustee_tdx_quote_5.dat");
const INTEL_ROOT: &[u8] = include_bytes!("vectors/dcap/intel_sgx_root_ca.der");
const IMPOSTOR_ROOT: &[u8] = include_bytes!("vectors/dcap/impostor_root_ca.der");

/// 2025-07-01T00:00:00Z, inside the validity of every item of `sgx_quote_collateral.json`:
/// TCB info 2025-06-19T10:56:11Z to 2025-07-19T10:56:11Z, QE identity 2025-06-19T10:01:18Z to
/// 2025-07-19T10:01:18Z, PCK CRL 2025-06-19T10:23:18Z to 2025-07-19T10:23:18Z, root CA CRL
/// 2025-03-20 to 2026-04-03, TCB signing certificate 2025-05-06 to 2032-05-06; the quote's
/// PCK certificate is valid 2023-09-20 to 2030-09-20.
const SGX_TIME: u64 = 1_751_328_000;
/// 2025-07-19T10:01:19Z: one second after the SGX QE identity's `nextUpdate`, the first item
/// of that collateral to expire.
const SGX_EXPIRED: u64 = 1_752_919_279;
/// 2025-06-19T10:56:10Z: one second before the SGX TCB info's `issueDate`, the last item of
/// that collateral to be issued.
const SGX_NOT_YET_VALID: u64 = 1_750_330_570;
/// 2025-07-01T00:00:00Z, inside the validity of every item of `tdx_quote_collateral.json`:
/// TCB info 2025-06-19T10:16:03Z to 2025-07-19T10:16:03Z, QE identity 2025-06-19T10:32:27Z to
/// 2025-07-19T10:32:27Z, PCK CRL 2025-06-19T10:00:35Z to 2025-07-19T10:00:35Z, root CA CRL
/// 2025-03-20 to 2026-04-03; the quote's PCK certificate is valid 2025-02-06 to 2032-02-06.
const TDX_TIME: u64 = 1_751_328_000;
/// 2025-07-19T10:00:35Z: the TDX PCK CRL's `nextUpdate`, the first item of that collateral
/// to expire (a CRL is stale from its `nextUpdate` on, other items one second after theirs).
const TDX_EXPIRED: u64 = 1_752_919_235;
/// 2026-10-20T00:00:00Z, inside the validity of `tdx_quote_td15ex_collateral.json`: TCB info
/// 2026-10-08T00:09:46Z to 2026-11-07T00:09:46Z, QE identity 2026-10-07T23:45:11Z to
/// 2026-11-06T23:45:11Z, PCK CRL 2026-10-08T00:28:26Z to 2026-11-07T00:28:26Z, root CA CRL
/// 2026-02-26 to 2027-02-26; its PCK certificate is valid 2026-08-13 to 2033-08-13.
const TD15_TIME: u64 = 1_792_454_400;
/// 2026-03-01T00:00:00Z, inside the validity of `tdx_quote_outdated_collateral.json`: TCB
/// info 2026-02-18T10:58:51Z to 2026-03-20T10:58:51Z, QE identity 2026-02-18T10:42:15Z to
/// 2026-03-20T10:42:15Z, PCK CRL 2026-02-18T10:41:15Z to 2026-03-20T10:41:15Z, root CA CRL
/// 2025-03-20 to 2026-04-03.
const OUTDATED_TIME: u64 = 1_772_323_200;

// The SGX quote's enclave, read from the quote's bytes at the SGX report's offsets.
const SGX_MRENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
const SGX_MRSIGNER: &str = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";
const SGX_REPORT_DATA: &str = "48656c6c6f2c20776f726c642100000000000000000000000000000000000000\
                               0000000000000000000000000000000000000000000000000000000000000000";
/// The SGX platform's TCB status and advisories in its recorded collateral.
const SGX_ADVISORIES: [&str; 2] = ["INTEL-SA-00289", "INTEL-SA-00615"];

// The TDX quote's trust domain, read from the quote's bytes at the TD report's offsets.
const TDX_MRTD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a\
                        3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
const TDX_RTMRS: [&str; 4] = [
    "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0",
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378",
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
];
const TDX_REPORT_DATA: &str = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9\
                               eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";
const TD15_MRTD: &str = "2a674327c50218dba880066b349b8d559d749ed68dce33fd\
                         651c184a877d084b07a9e583767a7ad5da13ed91deec2b70";

// Offsets in the quotes (Intel's DCAP quote formats): a 48-byte header, then the report
// (SGX: 384 bytes; TDX 1.0: 584 bytes), then the 4-byte length of the signature data, whose
// first 64 bytes are the ECDSA signature over header and report.
const SGX_ATTRIBUTES: usize = 48 + 48;
const SGX_REPORT_DATA_AT: usize = 48 + 320;
const SGX_SIGNATURE: usize = 48 + 384 + 4;
const TDX_TD_ATTRIBUTES: usize = 48 + 120;
const TDX_REPORT_DATA_AT: usize = 48 + 520;
const TDX_SIGNATURE: usize = 48 + 584 + 4;
// The QE report follows the signature and the 64-byte attestation key (in a TDX quote, after
// the 6-byte header of its certification data).
const SGX_QE_REPORT: usize = SGX_SIGNATURE + 64 + 64;
const TDX_QE_REPORT: usize = TDX_SIGNATURE + 64 + 64 + 6;

fn bytes<const N: usize>(hex_text: &str) -> [u8; N] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

/// One recorded quote with its collateral, its verifier and the time it is valid at.
#[derive(Clone, Copy)]
struct Vector {
    verifier: DcapVerifier,
    quote: &'static [u8],
    collateral: &'static [u8],
    time: u64,
}

const SGX: Vector = Vector {
    verifier: DcapVerifier::SGX,
    quote: SGX_QUOTE,
    collateral: SGX_COLLATERAL,
    time: SGX_TIME,
};
const TDX: Vector = Vector {
    verifier: DcapVerifier::TDX,
    quote: TDX_QUOTE,
    collateral: TDX_COLLATERAL,
    time: TDX_TIME,
};

impl Vector {
    /// A policy under which this vector's platform TCB is accepted (the SGX platform's TCB
    /// needs configuration and software hardening; the TDX platform is up to date).
    fn policy(self) -> Policy {
        let policy = Policy::new().at(VerificationTime::At(self.time));
        if self.verifier.tee() == TeeKind::Sgx {
            SGX_ADVISORIES.iter().fold(
                policy.accept_dcap_status(DcapTcbStatus::ConfigurationAndSwHardeningNeeded),
                |p, &id| p.accept_dcap_advisory(id),
            )
        } else {
            policy
        }
    }

    fn collateral(self) -> QuoteCollateralV3 {
        serde_json::from_slice(self.collateral).unwrap()
    }

    fn verify(self) -> Result<PlatformClaims, AttestationError> {
        self.verifier
            .verify_statement(self.quote, self.collateral, &self.policy())
    }

    fn verify_quote(self, quote: &[u8]) -> Result<PlatformClaims, AttestationError> {
        self.verifier
            .verify_statement(quote, self.collateral, &self.policy())
    }

    fn verify_collateral(
        self,
        collateral: &QuoteCollateralV3,
    ) -> Result<PlatformClaims, AttestationError> {
        let json = serde_json::to_vec(collateral).unwrap();
        self.verifier
            .verify_statement(self.quote, &json, &self.policy())
    }

    fn verify_at(self, time: u64) -> Result<PlatformClaims, AttestationError> {
        let policy = self.policy().at(VerificationTime::At(time));
        self.verifier
            .verify_statement(self.quote, self.collateral, &policy)
    }

    /// The PCK certificate chain the quote carries, as PEM.
    fn pck_chain(self) -> String {
        let quote = Quote::parse(self.quote).unwrap();
        String::from_utf8(quote.raw_cert_chain().unwrap().to_vec()).unwrap()
    }

    fn tee(self) -> TeeKind {
        self.verifier.tee()
    }
}

fn flipped(data: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut data = data.to_vec();
    data[at] ^= mask;
    data
}

/// `pem` with one Base64 character of its first certificate's body changed, some way into
/// the certificate so that its DER still parses as far as possible.
fn tamper_first_certificate(pem: &[u8]) -> Vec<u8> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let start = pem
        .windows(BEGIN.len())
        .position(|w| w == BEGIN)
        .expect("a PEM certificate");
    let mut at = start + BEGIN.len() + 400;
    while !pem[at].is_ascii_alphanumeric() {
        at += 1;
    }
    let mut pem = pem.to_vec();
    pem[at] = if pem[at] == b'A' { b'B' } else { b'A' };
    pem
}

fn assert_bad_signature(result: Result<PlatformClaims, AttestationError>, tee: TeeKind) {
    match result {
        Err(AttestationError::BadSignature { tee: found, .. }) => assert_eq!(found, tee),
        other => panic!("expected BadSignature, got {other:?}"),
    }
}

fn assert_bad_chain(result: Result<PlatformClaims, AttestationError>, tee: TeeKind) {
    match result {
        Err(AttestationError::BadCertificateChain { tee: found, .. }) => assert_eq!(found, tee),
        other => panic!("expected BadCertificateChain, got {other:?}"),
    }
}

fn assert_bad_collateral(result: Result<PlatformClaims, AttestationError>, tee: TeeKind) {
    match result {
        Err(AttestationError::BadCollateral { tee: found, .. }) => assert_eq!(found, tee),
        other => panic!("expected BadCollateral, got {other:?}"),
    }
}

fn assert_expired(result: Result<PlatformClaims, AttestationError>, tee: TeeKind) {
    match result {
        Err(AttestationError::Expired { tee: found, .. }) => assert_eq!(found, tee),
        other => panic!("expected Expired, got {other:?}"),
    }
}

fn assert_malformed(result: Result<PlatformClaims, AttestationError>) {
    assert!(
        matches!(result, Err(AttestationError::Malformed(_))),
        "expected Malformed, got {result:?}"
    );
}

#[test]
fn the_embedded_root_is_the_one_dcap_qvl_ships() {
    assert_eq!(INTEL_SGX_ROOT_CA_DER, INTEL_ROOT);
    assert_eq!(DcapVerifier::SGX.root_ca_der(), INTEL_ROOT);
    assert_eq!(DcapVerifier::TDX.root_ca_der(), INTEL_ROOT);
}

#[test]
fn sgx_quote_is_accepted_with_its_identity_and_report_data() {
    let claims = SGX.verify().unwrap();
    assert_eq!(claims.report_data, bytes::<64>(SGX_REPORT_DATA));
    assert_eq!(
        claims.identity,
        Identity::Sgx {
            mrenclave: bytes(SGX_MRENCLAVE),
            mrsigner: bytes(SGX_MRSIGNER),
            isv_prod_id: 0,
            isv_svn: 0,
        }
    );
}

#[test]
fn sgx_identity_is_checked_by_the_policy_not_the_verifier() {
    let identity = SGX.verify().unwrap().identity;
    let enclave = |mrenclave| Policy::new().accept_sgx(SgxReference::Enclave { mrenclave });
    assert_eq!(
        enclave(bytes(SGX_MRENCLAVE)).check_identity(&identity),
        Ok(())
    );
    let mut other = bytes::<32>(SGX_MRENCLAVE);
    other[0] ^= 1;
    assert!(matches!(
        enclave(other).check_identity(&identity),
        Err(AttestationError::WrongMeasurement { .. })
    ));

    let signer = |min_isv_svn| {
        Policy::new().accept_sgx(SgxReference::Signer {
            mrsigner: bytes(SGX_MRSIGNER),
            isv_prod_id: 0,
            min_isv_svn,
        })
    };
    assert_eq!(signer(0).check_identity(&identity), Ok(()));
    assert!(matches!(
        signer(1).check_identity(&identity),
        Err(AttestationError::WrongMeasurement { .. })
    ));
}

#[test]
fn tdx_quote_is_accepted_with_its_identity_and_report_data() {
    let claims = TDX.verify().unwrap();
    assert_eq!(claims.report_data, bytes::<64>(TDX_REPORT_DATA));
    assert_eq!(
        claims.identity,
        Identity::Tdx {
            mrtd: bytes(TDX_MRTD),
            rtmrs: TDX_RTMRS.map(bytes),
        }
    );
}

#[test]
fn tdx_identity_is_checked_by_the_policy_not_the_verifier() {
    let identity = TDX.verify().unwrap().identity;
    let td = |mrtd, rtmrs| Policy::new().accept_tdx(TdxReference { mrtd, rtmrs });
    assert_eq!(
        td(bytes(TDX_MRTD), [None; 4]).check_identity(&identity),
        Ok(())
    );
    assert_eq!(
        td(bytes(TDX_MRTD), TDX_RTMRS.map(|r| Some(bytes(r)))).check_identity(&identity),
        Ok(())
    );
    let mut other = bytes::<48>(TDX_MRTD);
    other[47] ^= 1;
    assert!(matches!(
        td(other, [None; 4]).check_identity(&identity),
        Err(AttestationError::WrongMeasurement { .. })
    ));
    let wrong_rtmr3 = [None, None, None, Some([1; 48])];
    assert!(matches!(
        td(bytes(TDX_MRTD), wrong_rtmr3).check_identity(&identity),
        Err(AttestationError::WrongMeasurement { .. })
    ));
}

#[test]
fn td_1_5_quote_v5_is_accepted() {
    let td15 = Vector {
        verifier: DcapVerifier::TDX,
        quote: TD15_QUOTE,
        collateral: TD15_COLLATERAL,
        time: TD15_TIME,
    };
    let claims = td15.verify().unwrap();
    let Identity::Tdx { mrtd, .. } = claims.identity else {
        panic!("a TDX identity");
    };
    assert_eq!(mrtd, bytes(TD15_MRTD));
    assert_eq!(
        claims.report_data[..],
        TD15_QUOTE[48 + 6 + 520..48 + 6 + 584]
    );
}

#[test]
fn flipped_quote_body_is_a_bad_signature() {
    for (vector, at) in [(SGX, SGX_REPORT_DATA_AT), (TDX, TDX_REPORT_DATA_AT)] {
        assert_bad_signature(
            vector.verify_quote(&flipped(vector.quote, at, 1)),
            vector.tee(),
        );
    }
}

#[test]
fn flipped_quote_signature_is_a_bad_signature() {
    for (vector, at) in [(SGX, SGX_SIGNATURE + 5), (TDX, TDX_SIGNATURE + 5)] {
        assert_bad_signature(
            vector.verify_quote(&flipped(vector.quote, at, 1)),
            vector.tee(),
        );
    }
}

/// The quoting enclave's report, which certifies the attestation key, is signed by the PCK.
#[test]
fn flipped_qe_report_is_a_bad_signature() {
    for (vector, at) in [(SGX, SGX_QE_REPORT + 100), (TDX, TDX_QE_REPORT + 100)] {
        let result = vector.verify_quote(&flipped(vector.quote, at, 1));
        match &result {
            Err(AttestationError::BadSignature { detail, .. }) => {
                assert!(detail.contains("qe_report"), "{detail}");
            }
            other => panic!("expected BadSignature, got {other:?}"),
        }
    }
}

/// The recorded enclaves are production ones; setting their debug bit is caught by the
/// signature over the report (the debug check itself is unit-tested in the verifier).
#[test]
fn setting_the_debug_bit_breaks_the_signature() {
    assert_bad_signature(
        SGX.verify_quote(&flipped(SGX_QUOTE, SGX_ATTRIBUTES, 0x02)),
        TeeKind::Sgx,
    );
    assert_bad_signature(
        TDX.verify_quote(&flipped(TDX_QUOTE, TDX_TD_ATTRIBUTES, 0x01)),
        TeeKind::Tdx,
    );
}

#[test]
fn tampered_pck_certificate_in_the_quote_breaks_the_chain() {
    for vector in [SGX, TDX] {
        assert_bad_chain(
            vector.verify_quote(&tamper_first_certificate(vector.quote)),
            vector.tee(),
        );
    }
}

#[test]
fn tampered_pck_certificate_in_the_collateral_breaks_the_chain() {
    for vector in [SGX, TDX] {
        // The collateral's PCK chain takes precedence over the quote's: the real one passes…
        let mut collateral = vector.collateral();
        collateral.pck_certificate_chain = Some(vector.pck_chain());
        vector.verify_collateral(&collateral).unwrap();
        // …and a tampered one is refused.
        let tampered = tamper_first_certificate(vector.pck_chain().as_bytes());
        collateral.pck_certificate_chain = Some(String::from_utf8(tampered).unwrap());
        assert_bad_chain(vector.verify_collateral(&collateral), vector.tee());
    }
}

#[test]
fn tampered_tcb_signing_certificate_breaks_the_chain() {
    for vector in [SGX, TDX] {
        let mut collateral = vector.collateral();
        let tampered = tamper_first_certificate(collateral.tcb_info_issuer_chain.as_bytes());
        collateral.tcb_info_issuer_chain = String::from_utf8(tampered).unwrap();
        assert_bad_chain(vector.verify_collateral(&collateral), vector.tee());
    }
}

#[test]
fn tampered_tcb_info_is_bad_collateral() {
    for vector in [SGX, TDX] {
        let mut collateral = vector.collateral();
        // What a host would like Intel to have said: a newer evaluation of the platform.
        let original = collateral.tcb_info.clone();
        collateral.tcb_info = original.replacen(
            "\"tcbEvaluationDataNumber\":",
            "\"tcbEvaluationDataNumber\":1",
            1,
        );
        assert_ne!(collateral.tcb_info, original);
        assert_bad_collateral(vector.verify_collateral(&collateral), vector.tee());
    }
}

#[test]
fn sgx_tcb_info_claiming_up_to_date_is_bad_collateral() {
    let mut collateral = SGX.collateral();
    let original = collateral.tcb_info.clone();
    collateral.tcb_info = original.replace(
        "\"tcbStatus\":\"ConfigurationAndSWHardeningNeeded\"",
        "\"tcbStatus\":\"UpToDate\"",
    );
    assert_ne!(collateral.tcb_info, original);
    assert_bad_collateral(SGX.verify_collateral(&collateral), TeeKind::Sgx);
}

#[test]
fn flipped_tcb_info_signature_is_bad_collateral() {
    for vector in [SGX, TDX] {
        let mut collateral = vector.collateral();
        collateral.tcb_info_signature[10] ^= 1;
        assert_bad_collateral(vector.verify_collateral(&collateral), vector.tee());
    }
}

#[test]
fn tampered_qe_identity_is_bad_collateral() {
    for vector in [SGX, TDX] {
        let mut collateral = vector.collateral();
        let original = collateral.qe_identity.clone();
        collateral.qe_identity = original.replacen("\"isvprodid\":", "\"isvprodid\": ", 1);
        assert_ne!(collateral.qe_identity, original);
        assert_bad_collateral(vector.verify_collateral(&collateral), vector.tee());

        let mut collateral = vector.collateral();
        collateral.qe_identity_signature[10] ^= 1;
        assert_bad_collateral(vector.verify_collateral(&collateral), vector.tee());
    }
}

#[test]
fn tampered_crls_are_bad_collateral() {
    for vector in [SGX, TDX] {
        // The last byte of a CRL is in its signature.
        let mut collateral = vector.collateral();
        let last = collateral.root_ca_crl.len() - 1;
        collateral.root_ca_crl[last] ^= 1;
        assert_bad_collateral(vector.verify_collateral(&collateral), vector.tee());

        let mut collateral = vector.collateral();
        let last = collateral.pck_crl.len() - 1;
        collateral.pck_crl[last] ^= 1;
        assert_bad_collateral(vector.verify_collateral(&collateral), vector.tee());
    }
}

#[test]
fn collateral_of_the_other_tee_is_bad_collateral() {
    let json = serde_json::to_vec(&TDX.collateral()).unwrap();
    let result = DcapVerifier::SGX.verify_statement(SGX_QUOTE, &json, &SGX.policy());
    assert_bad_collateral(result, TeeKind::Sgx);
}

#[test]
fn collateral_is_refused_outside_its_validity() {
    assert_expired(SGX.verify_at(SGX_EXPIRED), TeeKind::Sgx);
    assert_expired(SGX.verify_at(SGX_NOT_YET_VALID), TeeKind::Sgx);
    // Both bounds are tight: one second inside each, the vector passes.
    SGX.verify_at(SGX_EXPIRED - 1).unwrap();
    SGX.verify_at(SGX_NOT_YET_VALID + 1).unwrap();

    assert_expired(TDX.verify_at(TDX_EXPIRED), TeeKind::Tdx);
    TDX.verify_at(TDX_EXPIRED - 1).unwrap();
    // Long after: a year on.
    assert_expired(TDX.verify_at(TDX_TIME + 365 * 86_400), TeeKind::Tdx);
}

#[test]
fn a_chain_to_another_root_is_a_wrong_root() {
    for vector in [SGX, TDX] {
        let impostor = Vector {
            verifier: vector.verifier.with_root_ca(IMPOSTOR_ROOT),
            ..vector
        };
        match impostor.verify() {
            Err(AttestationError::WrongRoot { tee, .. }) => assert_eq!(tee, vector.tee()),
            other => panic!("expected WrongRoot, got {other:?}"),
        }
    }
}

#[test]
fn sgx_tcb_status_and_advisories_must_all_be_accepted() {
    let policy = Policy::new().at(VerificationTime::At(SGX_TIME));
    let verify =
        |policy: &Policy| DcapVerifier::SGX.verify_statement(SGX_QUOTE, SGX_COLLATERAL, policy);
    let refused = |policy: &Policy, advisories: &[&str]| {
        let expected = AttestationError::TcbNotAccepted {
            status: "ConfigurationAndSWHardeningNeeded".into(),
            advisories: advisories.iter().map(|&a| a.to_owned()).collect(),
        };
        assert_eq!(verify(policy), Err(expected));
    };

    // A strict policy: only UpToDate.
    refused(&policy, &SGX_ADVISORIES);
    let error = verify(&policy).unwrap_err();
    assert_eq!(
        error.to_string().split(':').next(),
        Some("TCB ConfigurationAndSWHardeningNeeded (advisories INTEL-SA-00289, INTEL-SA-00615)")
    );
    // The status, without the advisories.
    let status = policy
        .clone()
        .accept_dcap_status(DcapTcbStatus::ConfigurationAndSwHardeningNeeded);
    refused(&status, &SGX_ADVISORIES);
    // The status and one advisory of two.
    refused(
        &status.clone().accept_dcap_advisory("INTEL-SA-00615"),
        &["INTEL-SA-00289"],
    );
    // Both advisories, under another status.
    let other_status = SGX_ADVISORIES.iter().fold(
        policy.clone().accept_dcap_status(DcapTcbStatus::OutOfDate),
        |p, &a| p.accept_dcap_advisory(a),
    );
    refused(&other_status, &[]);
    // The status and both advisories.
    let accepting = SGX_ADVISORIES
        .iter()
        .fold(status, |p, &a| p.accept_dcap_advisory(a));
    verify(&accepting).unwrap();
}

/// Every status a policy can name, and every advisory the collateral mentions: enough to
/// accept any platform that matches one of its TCB levels.
fn most_permissive_policy(collateral: &[u8], time: u64) -> Policy {
    let collateral: QuoteCollateralV3 = serde_json::from_slice(collateral).unwrap();
    let tcb_info: serde_json::Value = serde_json::from_str(&collateral.tcb_info).unwrap();
    let mut advisories = Vec::new();
    collect_advisories(&tcb_info, &mut advisories);
    assert!(!advisories.is_empty());
    let policy = DcapTcbStatus::ALL.into_iter().fold(
        Policy::new().at(VerificationTime::At(time)),
        Policy::accept_dcap_status,
    );
    advisories
        .into_iter()
        .fold(policy, Policy::accept_dcap_advisory)
}

fn collect_advisories(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if key == "advisoryIDs" {
                    let ids = value.as_array().unwrap().iter();
                    into.extend(ids.map(|id| id.as_str().unwrap().to_owned()));
                } else {
                    collect_advisories(value, into);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_advisories(v, into)),
        _ => {}
    }
}

/// `tdx_quote_outdated`'s PCK certificate has CPUSVN component 7 = 3, below the 5 that every
/// TCB level of its recorded collateral requires: the platform is older than anything Intel
/// still rates, so no policy can accept it (Intel's QVL calls this "TCB not supported").
#[test]
fn a_tcb_below_every_level_is_never_accepted() {
    let policy = most_permissive_policy(OUTDATED_COLLATERAL, OUTDATED_TIME);
    match DcapVerifier::TDX.verify_statement(OUTDATED_QUOTE, OUTDATED_COLLATERAL, &policy) {
        Err(AttestationError::TcbNotAccepted { status, advisories }) => {
            assert!(status.starts_with("NotSupported"), "{status}");
            assert!(advisories.is_empty());
        }
        other => panic!("expected TcbNotAccepted, got {other:?}"),
    }
    // The refusal comes after the quote is authenticated: a changed report is refused for its
    // signature instead.
    let tampered = flipped(OUTDATED_QUOTE, 48 + 6 + 520, 1);
    assert_bad_signature(
        DcapVerifier::TDX.verify_statement(&tampered, OUTDATED_COLLATERAL, &policy),
        TeeKind::Tdx,
    );
}

/// A TDX quote recorded by the Confidential Containers project, appraised with the Intel
/// collateral recorded for the same platform model (FMSPC 90C06F000000) in February 2026: its
/// signatures and PCK chain verify, and its TCB (CPUSVN component 7 = 3) is below every level
/// that collateral rates.
#[test]
fn trustee_tdx_quote_authenticates_and_is_refused_for_its_tcb() {
    let policy = most_permissive_policy(OUTDATED_COLLATERAL, OUTDATED_TIME);
    let verify =
        |quote: &[u8]| DcapVerifier::TDX.verify_statement(quote, OUTDATED_COLLATERAL, &policy);
    match verify(TRUSTEE_QUOTE) {
        Err(AttestationError::TcbNotAccepted { status, .. }) => {
            assert!(status.starts_with("NotSupported"), "{status}");
        }
        other => panic!("expected TcbNotAccepted, got {other:?}"),
    }
    assert_bad_signature(
        verify(&flipped(TRUSTEE_QUOTE, 48 + 6 + 520, 1)),
        TeeKind::Tdx,
    );
    assert_bad_chain(
        verify(&tamper_first_certificate(TRUSTEE_QUOTE)),
        TeeKind::Tdx,
    );
}

#[test]
fn missing_endorsements_are_reported_as_such() {
    for vector in [SGX, TDX] {
        let result = vector
            .verifier
            .verify_statement(vector.quote, &[], &vector.policy());
        match result {
            Err(AttestationError::MissingEndorsements { tee, .. }) => {
                assert_eq!(tee, vector.tee());
            }
            other => panic!("expected MissingEndorsements, got {other:?}"),
        }
    }
}

#[test]
fn a_quote_of_the_other_kind_is_malformed() {
    assert_malformed(DcapVerifier::TDX.verify_statement(SGX_QUOTE, SGX_COLLATERAL, &SGX.policy()));
    assert_malformed(DcapVerifier::SGX.verify_statement(TDX_QUOTE, TDX_COLLATERAL, &TDX.policy()));
}

#[test]
fn unparseable_input_is_malformed() {
    for vector in [SGX, TDX] {
        assert_malformed(vector.verify_quote(&vector.quote[..100]));
        assert_malformed(vector.verify_quote(&[]));
        let result = vector.verifier.verify_statement(
            vector.quote,
            b"{\"not\": \"collateral\"}",
            &vector.policy(),
        );
        assert_malformed(result);
    }
}

/// Prints the median time of a full verification (no assertion: timing depends on the
/// machine and the build profile).
#[test]
fn verify_time() {
    for (name, vector) in [("SGX", SGX), ("TDX", TDX)] {
        let policy = vector.policy();
        let mut times: Vec<_> = (0..20)
            .map(|_| {
                let start = std::time::Instant::now();
                vector
                    .verifier
                    .verify_statement(vector.quote, vector.collateral, &policy)
                    .unwrap();
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{name} DCAP quote verification: median {:?} over 20 runs",
            times[10]
        );
    }
}

/// Through the owner's entry point, `chiron_attest::verify`: a real quote is authenticated and
/// then refused because its report data does not bind the evidence it came with (no recorded
/// quote carries Chiron's binding), before its identity is looked at; the owner's cached
/// collateral stands in for collateral the evidence lacks; and a policy for other TEEs never
/// parses the quote at all.
#[test]
fn the_verify_entry_point_requires_the_binding_for_real_quotes() {
    use chiron_attest::policy::SnpReference;
    use chiron_proto::evidence::{EVIDENCE_VERSION, Evidence, Role};

    for v in [SGX, TDX] {
        let identity = v.verify().expect("the vector is accepted").identity;
        let policy = match identity {
            Identity::Sgx { mrenclave, .. } => {
                v.policy().accept_sgx(SgxReference::Enclave { mrenclave })
            }
            Identity::Tdx { mrtd, .. } => v.policy().accept_tdx(TdxReference {
                mrtd,
                rtmrs: [None; 4],
            }),
            other => panic!("{other:?}"),
        };
        let evidence = Evidence {
            version: EVIDENCE_VERSION,
            tee: v.tee(),
            role: Role::Train,
            enclave_public_key: [1; 32],
            nonce: [2; 32],
            context: [3; 32],
            statement: v.quote.to_vec(),
            endorsements: v.collateral.to_vec(),
        };
        let check = |policy: &Policy, evidence: &Evidence| {
            chiron_attest::verify(policy, evidence, Role::Train, &[2; 32], &[3; 32])
        };
        assert_eq!(
            check(&policy, &evidence),
            Err(AttestationError::ReportDataMismatch)
        );
        // Tampering still shows as tampering, not as a binding failure.
        let mut forged = evidence.clone();
        forged.statement[SGX_REPORT_DATA_AT.min(TDX_REPORT_DATA_AT)] ^= 1;
        assert!(matches!(
            check(&policy, &forged),
            Err(AttestationError::BadSignature { .. })
        ));

        let bare = Evidence {
            endorsements: Vec::new(),
            ..evidence.clone()
        };
        assert!(matches!(
            check(&policy, &bare),
            Err(AttestationError::MissingEndorsements { .. })
        ));
        let cached = policy
            .clone()
            .with_endorsements(v.tee(), v.collateral.to_vec());
        assert_eq!(
            check(&cached, &bare),
            Err(AttestationError::ReportDataMismatch)
        );

        let other_tee = Policy::new().accept_snp(SnpReference {
            measurement: [0; 48],
        });
        assert_eq!(
            check(&other_tee, &evidence),
            Err(AttestationError::TeeNotAccepted { tee: v.tee() })
        );
    }
}
