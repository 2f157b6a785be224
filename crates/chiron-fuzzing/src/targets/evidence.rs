//! Attestation evidence as it arrives from the host: `Evidence::from_bytes`, then
//! `chiron_attest::verify` against fixed policies.
//!
//! The first byte picks the mode:
//! * even: the remaining bytes are decoded and verified as they are, against a policy that
//!   accepts nothing, one that accepts the fixed simulated platform, one that accepts whatever
//!   simulated platform key the statement names (so the Ed25519 key and signature parsing run
//!   on arbitrary bytes), and one that accepts every hardware backend (so the DCAP quote and
//!   SNP report parsers and chain checks run on arbitrary bytes);
//! * odd: evidence that decodes is re-attested by the fixed platform first, so verification
//!   gets past the signature and exercises the binding, measurement, role, context and nonce
//!   checks.

use std::sync::OnceLock;

use chiron_attest::attester::Platform;
use chiron_attest::attester::sim::SimPlatform;
use chiron_attest::policy::{SgxReference, SnpReference, TdxReference, VerificationTime};
use chiron_attest::{AttestationError, Identity, Policy, verify};
use chiron_proto::evidence::{Evidence, Role, TeeKind};

use super::{must, with_mode};

const MEASUREMENT: [u8; 32] = [0x11; 32];
const NONCE: [u8; 32] = [0x33; 32];
const CONTEXT: [u8; 32] = [0x44; 32];

struct Fixture {
    platform: SimPlatform,
    strict: Policy,
    sim: Policy,
    hardware: Policy,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let platform = SimPlatform::generate(MEASUREMENT);
        let sim = Policy::new()
            .dangerous_accept_simulated_platform(platform.public_key(), vec![MEASUREMENT]);
        let hardware = Policy::new()
            .accept_sgx(SgxReference::Enclave { mrenclave: [0; 32] })
            .accept_tdx(TdxReference {
                mrtd: [0; 48],
                rtmrs: [None; 4],
            })
            .accept_snp(SnpReference {
                measurement: [0; 48],
            })
            .at(VerificationTime::At(1_700_000_000));
        Fixture {
            platform,
            strict: Policy::new(),
            sim,
            hardware,
        }
    })
}

fn check_all(policy: &Policy, evidence: &Evidence) {
    for role in [Role::Train, Role::Query] {
        if let Ok(verified) = verify(policy, evidence, role, &NONCE, &CONTEXT) {
            // Only evidence that matches every expectation may pass.
            assert_eq!(verified.role(), role);
            assert_eq!(verified.tee(), evidence.tee);
            assert_eq!(verified.context(), CONTEXT);
            assert_eq!(evidence.nonce, NONCE);
            assert_eq!(verified.enclave_public_key(), evidence.enclave_public_key);
            assert!(policy.check_identity(verified.identity()).is_ok());
            if let Identity::Sim { platform_key, .. } = verified.identity() {
                assert!(policy.accepted_sim_platforms().any(|k| k == platform_key));
            }
        }
    }
}

/// The `evidence` property (layout in the module documentation).
pub fn evidence(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let Ok(mut evidence) = Evidence::from_bytes(bytes) else {
        return;
    };
    // What decodes re-encodes to the same value (postcard is canonical for these types
    // except for non-minimal varints, so compare decoded values instead of bytes).
    if let Ok(again) = evidence.to_bytes() {
        assert_eq!(Evidence::from_bytes(&again).ok().as_ref(), Some(&evidence));
    }

    if mode & 1 == 0 {
        // A policy that accepts nothing must refuse everything.
        for role in [Role::Train, Role::Query] {
            let refused = verify(&f.strict, &evidence, role, &NONCE, &CONTEXT);
            assert!(refused.is_err(), "an empty policy accepted evidence");
        }
        check_all(&f.sim, &evidence);
        check_all(&f.hardware, &evidence);
        if let Some(key) = evidence.statement.first_chunk::<32>() {
            let own = Policy::new().dangerous_accept_simulated_platform(*key, vec![MEASUREMENT]);
            check_all(&own, &evidence);
        }
    } else {
        // Attest the decoded fields with the fixed platform, optionally forcing the expected
        // nonce and context (and a correct binding) so the later checks are reachable.
        evidence.tee = TeeKind::Sim;
        evidence.version = chiron_proto::evidence::EVIDENCE_VERSION;
        if mode & 4 != 0 {
            evidence.nonce = NONCE;
        }
        if mode & 8 != 0 {
            evidence.context = CONTEXT;
        }
        let bound = chiron_attest::binding::expected_for(&evidence);
        let report_data = if mode & 2 != 0 {
            bound
        } else {
            // Whatever the input's statement carried where report data sits.
            evidence
                .statement
                .get(64..128)
                .and_then(|r| <[u8; 64]>::try_from(r).ok())
                .unwrap_or(bound)
        };
        evidence.statement = must(f.platform.attest(&report_data), "simulated statement").bytes;
        check_all(&f.sim, &evidence);
        // Any edit after signing must break the signature.
        let mut edited = evidence.clone();
        let at = (mode as usize >> 4) % edited.statement.len().max(1);
        if let Some(byte) = edited.statement.get_mut(at.max(32)) {
            *byte ^= 1;
        }
        for role in [Role::Train, Role::Query] {
            let result = verify(&f.sim, &edited, role, &NONCE, &CONTEXT);
            assert!(
                matches!(result, Err(AttestationError::BadSignature { .. })),
                "{result:?}"
            );
        }
    }
}

/// Evidence of both roles, attested by a fresh simulated platform, in both modes.
pub fn seeds_evidence() -> Vec<Vec<u8>> {
    let platform = SimPlatform::generate(MEASUREMENT);
    let mut seeds = Vec::new();
    for role in [Role::Train, Role::Query] {
        let e = must(
            chiron_attest::attester::evidence(&platform, role, [0x22; 32], NONCE, CONTEXT),
            "simulated evidence",
        );
        let bytes = must(e.to_bytes(), "evidence encodes");
        seeds.push(with_mode(0, &bytes));
        seeds.push(with_mode(0x0f, &bytes));
    }
    seeds
}
