//! Attestation evidence as it arrives from the host: `Evidence::from_bytes`, then
//! `chiron_crypto::verify` against fixed policies.
//!
//! The first byte picks the mode:
//! * even: the remaining bytes are decoded and verified as they are, against a policy that
//!   accepts no platform, one that accepts the fixed platform, and one that accepts whatever
//!   platform key the evidence names (so the Ed25519 key and signature parsing run on
//!   arbitrary bytes);
//! * odd: evidence that decodes is re-signed by the fixed platform first, so verification
//!   gets past the signature and exercises the measurement, role, context and nonce checks.

use std::sync::OnceLock;

use chiron_crypto::{AttestationError, Policy, SimPlatform, verify};
use chiron_proto::evidence::{Evidence, Role};

use super::{must, with_mode};

const MEASUREMENT: [u8; 32] = [0x11; 32];
const NONCE: [u8; 32] = [0x33; 32];
const CONTEXT: [u8; 32] = [0x44; 32];

struct Fixture {
    platform: SimPlatform,
    strict: Policy,
    sim: Policy,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let platform = SimPlatform::generate();
        let sim = Policy::new(vec![MEASUREMENT])
            .dangerous_accept_simulated_platform(platform.public_key());
        Fixture {
            platform,
            strict: Policy::new(vec![MEASUREMENT]),
            sim,
        }
    })
}

fn check_all(policy: &Policy, evidence: &Evidence) {
    for role in [Role::Train, Role::Query] {
        if let Ok(verified) = verify(policy, evidence, role, &NONCE, &CONTEXT) {
            // Only evidence that matches every expectation may pass.
            assert_eq!(verified.role(), role);
            assert_eq!(verified.measurement(), evidence.measurement);
            assert_eq!(verified.context(), CONTEXT);
            assert_eq!(evidence.nonce, NONCE);
            assert!(
                policy
                    .expected_measurements()
                    .contains(&evidence.measurement)
            );
            assert!(
                policy
                    .accepted_sim_platforms()
                    .contains(&evidence.platform_key)
            );
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
    let _ = evidence.signed_bytes();

    if mode & 1 == 0 {
        // A policy that accepts no simulated platform must refuse everything.
        for role in [Role::Train, Role::Query] {
            let refused = verify(&f.strict, &evidence, role, &NONCE, &CONTEXT);
            assert!(
                refused.is_err(),
                "a policy without platforms accepted evidence"
            );
        }
        check_all(&f.sim, &evidence);
        let own = Policy::new(vec![evidence.measurement, MEASUREMENT])
            .dangerous_accept_simulated_platform(evidence.platform_key);
        check_all(&own, &evidence);
    } else {
        // Sign the decoded fields with the fixed platform, optionally forcing the expected
        // measurement, nonce and context so the later checks are reachable.
        let forced = f.platform.issue(
            evidence.role,
            if mode & 2 != 0 {
                MEASUREMENT
            } else {
                evidence.measurement
            },
            evidence.enclave_public_key,
            if mode & 4 != 0 { NONCE } else { evidence.nonce },
            if mode & 8 != 0 {
                CONTEXT
            } else {
                evidence.context
            },
        );
        check_all(&f.sim, &forced);
        // Any edit after signing must break the signature.
        evidence = forced.clone();
        evidence.signature[(mode as usize >> 4) % 64] ^= 1;
        for role in [Role::Train, Role::Query] {
            assert!(matches!(
                verify(&f.sim, &evidence, role, &NONCE, &CONTEXT),
                Err(AttestationError::BadSignature)
            ));
        }
    }
}

/// Evidence of both roles, signed by a fresh simulated platform, in both modes.
pub fn seeds_evidence() -> Vec<Vec<u8>> {
    let platform = SimPlatform::generate();
    let mut seeds = Vec::new();
    for role in [Role::Train, Role::Query] {
        let e = platform.issue(role, MEASUREMENT, [0x22; 32], NONCE, CONTEXT);
        let bytes = must(e.to_bytes(), "evidence encodes");
        seeds.push(with_mode(0, &bytes));
        seeds.push(with_mode(0x0f, &bytes));
    }
    seeds
}
