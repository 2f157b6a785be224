//! Simulated attestation and evidence verification.
//!
//! Attestation lets the owner check, before releasing any secret, that the process on the other
//! end runs the expected runtime build, in the expected role, holds the public key secrets will
//! be sealed to, and answers this session's nonce (so old evidence cannot be replayed).
//!
//! **The simulated backend is INSECURE.** A [`SimPlatform`] is an Ed25519 key and a sealing
//! secret in an ordinary file; whoever can read that file can forge evidence and unseal every
//! model. It exists so the whole system can be developed and tested on machines without TEE
//! hardware, and verifiers refuse it unless their [`Policy`] explicitly opts in with
//! [`Policy::dangerous_accept_simulated_platform`]. Hardware backends (SGX/TDX DCAP quotes,
//! SEV-SNP reports) plug in as further [`TeeKind`] variants.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use chiron_proto::evidence::{EVIDENCE_VERSION, Evidence, EvidenceError, Role, TeeKind};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::error::CryptoError;

/// First bytes of a simulated platform key file; also a warning to anyone who opens it.
const SIM_FILE_MAGIC: &[u8] = b"chiron simulated platform v1 - INSECURE, development only\n";
const SIM_FILE_LEN: usize = SIM_FILE_MAGIC.len() + 32 + 32;

/// Conventional file name for a simulated platform's keys.
pub const SIM_PLATFORM_FILE_NAME: &str = "sim-platform.key";

/// A simulated TEE platform: an Ed25519 signing key standing in for the hardware's attestation
/// key, and a 32-byte secret standing in for its sealing secret.
///
/// **INSECURE, for development only.** Nothing protects these keys but file permissions.
///
/// Both secrets are wiped when the platform is dropped (ed25519-dalek's `SigningKey` wipes
/// itself); `Debug` shows the public key only.
#[derive(ZeroizeOnDrop)]
pub struct SimPlatform {
    signing: SigningKey,
    sealing_secret: [u8; 32],
}

impl SimPlatform {
    /// A fresh platform from the operating system's random number generator.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0; 32]);
        OsRng.fill_bytes(&mut *seed);
        let mut platform = Self {
            signing: SigningKey::from_bytes(&seed),
            sealing_secret: [0; 32],
        };
        // Filled in place, so no other copy is left to wipe.
        OsRng.fill_bytes(&mut platform.sealing_secret);
        platform
    }

    /// Loads the platform stored at `path` (conventionally [`SIM_PLATFORM_FILE_NAME`]), or
    /// creates one there, readable only by its owner (mode 0600 on Unix).
    ///
    /// Keeping the platform in a file lets sealed models survive restarts, as on real hardware.
    /// **INSECURE, for development only**: anyone who can read the file can forge evidence and
    /// unseal every model sealed on this platform.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, CryptoError> {
        let path = path.as_ref();
        let io_error = |source| CryptoError::SimPlatformIo {
            path: path.to_path_buf(),
            source,
        };
        match create_new_private(path) {
            Ok(mut file) => {
                let platform = Self::generate();
                let mut contents = Zeroizing::new(Vec::with_capacity(SIM_FILE_LEN));
                contents.extend_from_slice(SIM_FILE_MAGIC);
                contents.extend_from_slice(Zeroizing::new(platform.signing.to_bytes()).as_ref());
                contents.extend_from_slice(&platform.sealing_secret);
                file.write_all(&contents).map_err(io_error)?;
                file.sync_all().map_err(io_error)?;
                Ok(platform)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Sized for one byte more than a valid file, so reading never reallocates
                // (which would leave an unwiped copy of the keys behind).
                let mut contents = Zeroizing::new(Vec::with_capacity(SIM_FILE_LEN + 1));
                // Read one byte past the expected length to notice an oversized file.
                File::open(path)
                    .and_then(|f| f.take(SIM_FILE_LEN as u64 + 1).read_to_end(&mut contents))
                    .map_err(io_error)?;
                Self::parse_file(&contents).map_err(|reason| CryptoError::SimPlatformFile {
                    path: path.to_path_buf(),
                    reason,
                })
            }
            Err(e) => Err(io_error(e)),
        }
    }

    fn parse_file(contents: &[u8]) -> Result<Self, &'static str> {
        let keys = contents
            .strip_prefix(SIM_FILE_MAGIC)
            .ok_or("it does not start with the simulated platform header")?;
        let (seed, sealing_secret) = keys
            .split_first_chunk::<32>()
            .and_then(|(seed, rest)| Some((seed, <[u8; 32]>::try_from(rest).ok()?)))
            .ok_or("it has the wrong length")?;
        Ok(Self {
            signing: SigningKey::from_bytes(seed),
            sealing_secret,
        })
    }

    /// The platform's Ed25519 public key, which verifiers must list in their policy.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The platform sealing secret, input to [`crate::seal::SealingKey::derive`].
    pub fn sealing_secret(&self) -> &[u8; 32] {
        &self.sealing_secret
    }

    /// Issues signed evidence for an enclave process on this platform.
    pub fn issue(
        &self,
        role: Role,
        measurement: [u8; 32],
        enclave_pk: [u8; 32],
        nonce: [u8; 32],
        context: [u8; 32],
    ) -> Evidence {
        let mut evidence = Evidence {
            version: EVIDENCE_VERSION,
            tee: TeeKind::Sim,
            role,
            measurement,
            enclave_public_key: enclave_pk,
            nonce,
            context,
            platform_key: self.public_key(),
            signature: Vec::new(),
        };
        evidence.signature = self
            .signing
            .sign(&evidence.signed_bytes())
            .to_bytes()
            .to_vec();
        evidence
    }
}

impl fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPlatform")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

/// Creates `path`, failing if it exists; owner-only permissions from the first byte on Unix.
fn create_new_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The runtime measurement of a binary: the SHA-256 of the file.
pub fn measure_file(path: impl AsRef<Path>) -> io::Result<[u8; 32]> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// The runtime measurement of a binary already in memory: its SHA-256.
pub fn measure_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The evidence `context` for a job or model id: the SHA-256 of the id's bytes.
pub fn context_digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// A fresh 32-byte nonce for one attestation request.
pub fn fresh_nonce() -> [u8; 32] {
    let mut nonce = [0; 32];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// The reference values a verifier accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    expected_measurements: Vec<[u8; 32]>,
    accepted_sim_platforms: Vec<[u8; 32]>,
}

impl Policy {
    /// A policy accepting any of `expected_measurements` (the SHA-256 of reproducibly built
    /// runtime binaries) on hardware platforms, and no simulated platform.
    pub fn new(expected_measurements: Vec<[u8; 32]>) -> Self {
        Self {
            expected_measurements,
            accepted_sim_platforms: Vec::new(),
        }
    }

    /// Also accepts evidence signed by the simulated platform with public key `platform_key`.
    ///
    /// **Dangerous**: simulated evidence proves nothing; anyone with the platform's key file can
    /// forge it. Use only for development and tests.
    pub fn dangerous_accept_simulated_platform(mut self, platform_key: [u8; 32]) -> Self {
        self.accepted_sim_platforms.push(platform_key);
        self
    }

    /// Runtime measurements this policy accepts.
    pub fn expected_measurements(&self) -> &[[u8; 32]] {
        &self.expected_measurements
    }

    /// Simulated platform keys this policy (dangerously) accepts.
    pub fn accepted_sim_platforms(&self) -> &[[u8; 32]] {
        &self.accepted_sim_platforms
    }
}

/// Why evidence was refused. Nothing may be sent to the enclave after any of these.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestationError {
    /// The evidence is signed by a simulated platform the policy does not accept.
    #[error(
        "evidence comes from simulated platform {platform_key}, which the policy does not accept; \
         simulated attestation is insecure and must be allowed explicitly, for development only \
         (Policy::dangerous_accept_simulated_platform)"
    )]
    UntrustedPlatform {
        /// Hex of the platform key found in the evidence.
        platform_key: String,
    },
    /// The signature does not verify under the platform key.
    #[error(
        "evidence signature does not verify under its platform key: the evidence was altered or forged"
    )]
    BadSignature,
    /// The enclave runs a runtime build the policy does not list.
    #[error(
        "enclave runtime measurement {found} is not one the policy expects ({}): the enclave runs \
         a different runtime build; rebuild the runtime reproducibly or update the policy",
        if expected.is_empty() { "none listed".to_owned() } else { expected.join(", ") }
    )]
    WrongMeasurement {
        /// Hex of the measurement found.
        found: String,
        /// Hex of the measurements accepted.
        expected: Vec<String>,
    },
    /// The evidence answers a different nonce: a replay of an earlier attestation.
    #[error(
        "evidence answers a different nonce than this request's: it is stale or replayed; request fresh evidence"
    )]
    StaleNonce,
    /// The enclave runs in another role than the one asked for.
    #[error("enclave attests to role {found}, but a {expected} enclave was expected")]
    WrongRole {
        /// Role required.
        expected: Role,
        /// Role attested.
        found: Role,
    },
    /// The enclave serves a different job or model.
    #[error("evidence is for a different job or model than the one requested")]
    WrongContext,
    /// The evidence format version is unknown.
    #[error(
        "evidence format version {found} is not supported (this build verifies version {supported})"
    )]
    UnsupportedVersion {
        /// Version found.
        found: u16,
        /// Version this build verifies.
        supported: u16,
    },
    /// The evidence cannot be decoded or has a malformed field.
    #[error("evidence is malformed: {0}")]
    Malformed(String),
}

impl From<EvidenceError> for AttestationError {
    fn from(e: EvidenceError) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// An enclave whose evidence passed [`verify`]; the only way to obtain one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEnclave {
    role: Role,
    measurement: [u8; 32],
    enclave_public_key: [u8; 32],
    context: [u8; 32],
}

impl VerifiedEnclave {
    /// The enclave's ephemeral public key, to seal secrets to with
    /// [`crate::channel::seal_to_enclave`].
    pub fn enclave_public_key(&self) -> [u8; 32] {
        self.enclave_public_key
    }

    /// The runtime measurement the enclave attested to (one the policy expects).
    pub fn measurement(&self) -> [u8; 32] {
        self.measurement
    }

    /// The role the enclave attested to.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The job or model context the enclave attested to.
    pub fn context(&self) -> [u8; 32] {
        self.context
    }
}

/// Verifies `evidence` against `policy` and this request's expectations.
///
/// The platform key is checked against the policy and the signature verified before any other
/// field is looked at, so no conclusion is ever drawn from unauthenticated bytes.
pub fn verify(
    policy: &Policy,
    evidence: &Evidence,
    expected_role: Role,
    expected_nonce: &[u8; 32],
    expected_context: &[u8; 32],
) -> Result<VerifiedEnclave, AttestationError> {
    if evidence.version != EVIDENCE_VERSION {
        return Err(AttestationError::UnsupportedVersion {
            found: evidence.version,
            supported: EVIDENCE_VERSION,
        });
    }
    match evidence.tee {
        TeeKind::Sim => verify_sim_signature(policy, evidence)?,
    }
    // From here on every field is authenticated.
    if !policy.expected_measurements.contains(&evidence.measurement) {
        return Err(AttestationError::WrongMeasurement {
            found: hex::encode(evidence.measurement),
            expected: policy
                .expected_measurements
                .iter()
                .map(hex::encode)
                .collect(),
        });
    }
    if evidence.role != expected_role {
        return Err(AttestationError::WrongRole {
            expected: expected_role,
            found: evidence.role,
        });
    }
    if evidence.context != *expected_context {
        return Err(AttestationError::WrongContext);
    }
    if evidence.nonce != *expected_nonce {
        return Err(AttestationError::StaleNonce);
    }
    Ok(VerifiedEnclave {
        role: evidence.role,
        measurement: evidence.measurement,
        enclave_public_key: evidence.enclave_public_key,
        context: evidence.context,
    })
}

fn verify_sim_signature(policy: &Policy, evidence: &Evidence) -> Result<(), AttestationError> {
    if !policy
        .accepted_sim_platforms
        .contains(&evidence.platform_key)
    {
        return Err(AttestationError::UntrustedPlatform {
            platform_key: hex::encode(evidence.platform_key),
        });
    }
    let key = VerifyingKey::from_bytes(&evidence.platform_key).map_err(|_| {
        AttestationError::Malformed("the platform key is not an Ed25519 public key".into())
    })?;
    let signature = Signature::from_slice(&evidence.signature).map_err(|_| {
        AttestationError::Malformed(format!(
            "the signature is {} bytes, an Ed25519 signature is 64",
            evidence.signature.len()
        ))
    })?;
    key.verify_strict(&evidence.signed_bytes(), &signature)
        .map_err(|_| AttestationError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEASUREMENT: [u8; 32] = [0x11; 32];
    const ENCLAVE_PK: [u8; 32] = [0x22; 32];

    struct Fixture {
        platform: SimPlatform,
        policy: Policy,
        nonce: [u8; 32],
        context: [u8; 32],
        evidence: Evidence,
    }

    fn fixture() -> Fixture {
        let platform = SimPlatform::generate();
        let policy = Policy::new(vec![MEASUREMENT])
            .dangerous_accept_simulated_platform(platform.public_key());
        let nonce = fresh_nonce();
        let context = context_digest("job-1");
        let evidence = platform.issue(Role::Train, MEASUREMENT, ENCLAVE_PK, nonce, context);
        Fixture {
            platform,
            policy,
            nonce,
            context,
            evidence,
        }
    }

    impl Fixture {
        fn verify(&self, evidence: &Evidence) -> Result<VerifiedEnclave, AttestationError> {
            verify(
                &self.policy,
                evidence,
                Role::Train,
                &self.nonce,
                &self.context,
            )
        }
    }

    #[test]
    fn valid_evidence_passes() -> Result<(), AttestationError> {
        let f = fixture();
        let verified = f.verify(&f.evidence)?;
        assert_eq!(verified.enclave_public_key(), ENCLAVE_PK);
        assert_eq!(verified.measurement(), MEASUREMENT);
        assert_eq!(verified.role(), Role::Train);
        assert_eq!(verified.context(), f.context);
        // And after a trip over the wire.
        let decoded = Evidence::from_bytes(&f.evidence.to_bytes()?)?;
        f.verify(&decoded)?;
        Ok(())
    }

    #[test]
    fn wrong_measurement_is_refused() {
        let f = fixture();
        let e = f
            .platform
            .issue(Role::Train, [0x33; 32], ENCLAVE_PK, f.nonce, f.context);
        assert_eq!(
            f.verify(&e),
            Err(AttestationError::WrongMeasurement {
                found: hex::encode([0x33; 32]),
                expected: vec![hex::encode(MEASUREMENT)],
            })
        );
    }

    #[test]
    fn stale_nonce_is_refused() {
        let f = fixture();
        let e = f.platform.issue(
            Role::Train,
            MEASUREMENT,
            ENCLAVE_PK,
            fresh_nonce(),
            f.context,
        );
        assert_eq!(f.verify(&e), Err(AttestationError::StaleNonce));
    }

    #[test]
    fn wrong_role_and_context_are_refused() {
        let f = fixture();
        let e = f
            .platform
            .issue(Role::Query, MEASUREMENT, ENCLAVE_PK, f.nonce, f.context);
        assert_eq!(
            f.verify(&e),
            Err(AttestationError::WrongRole {
                expected: Role::Train,
                found: Role::Query
            })
        );
        let e = f.platform.issue(
            Role::Train,
            MEASUREMENT,
            ENCLAVE_PK,
            f.nonce,
            context_digest("job-2"),
        );
        assert_eq!(f.verify(&e), Err(AttestationError::WrongContext));
    }

    #[test]
    fn untrusted_simulated_platform_is_refused() {
        let f = fixture();
        let other = SimPlatform::generate();
        let e = other.issue(Role::Train, MEASUREMENT, ENCLAVE_PK, f.nonce, f.context);
        assert_eq!(
            f.verify(&e),
            Err(AttestationError::UntrustedPlatform {
                platform_key: hex::encode(other.public_key())
            })
        );
        // Without the dangerous opt-in, even the right simulated platform is refused.
        assert!(matches!(
            verify(
                &Policy::new(vec![MEASUREMENT]),
                &f.evidence,
                Role::Train,
                &f.nonce,
                &f.context
            ),
            Err(AttestationError::UntrustedPlatform { .. })
        ));
    }

    #[test]
    fn forged_signature_is_refused() {
        let f = fixture();
        // Signed by another key but claiming the accepted platform key.
        let mut e =
            SimPlatform::generate().issue(Role::Train, MEASUREMENT, ENCLAVE_PK, f.nonce, f.context);
        e.platform_key = f.platform.public_key();
        assert_eq!(f.verify(&e), Err(AttestationError::BadSignature));
    }

    #[test]
    fn tampering_after_signing_is_refused() {
        let f = fixture();
        let tampers: [fn(&mut Evidence); 5] = [
            |e| e.enclave_public_key[0] ^= 1,
            |e| e.measurement[0] ^= 1,
            |e| e.nonce[0] ^= 1,
            |e| e.context[0] ^= 1,
            |e| e.role = Role::Query,
        ];
        for tamper in tampers {
            let mut e = f.evidence.clone();
            tamper(&mut e);
            assert_eq!(f.verify(&e), Err(AttestationError::BadSignature));
        }
        let mut e = f.evidence.clone();
        e.signature[10] ^= 1;
        assert_eq!(f.verify(&e), Err(AttestationError::BadSignature));
        let mut e = f.evidence.clone();
        e.signature.pop();
        assert!(matches!(f.verify(&e), Err(AttestationError::Malformed(_))));
        let mut e = f.evidence.clone();
        e.version = 2;
        assert!(matches!(
            f.verify(&e),
            Err(AttestationError::UnsupportedVersion { found: 2, .. })
        ));
    }

    #[test]
    fn platform_file_persists_and_is_private() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(SIM_PLATFORM_FILE_NAME);
        let created = SimPlatform::load_or_create(&path)?;
        let loaded = SimPlatform::load_or_create(&path)?;
        assert_eq!(created.public_key(), loaded.public_key());
        assert_eq!(created.sealing_secret(), loaded.sealing_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        let debug = format!("{created:?}");
        assert!(!debug.contains(&hex::encode(created.sealing_secret())));

        fs::write(&path, b"not a platform")?;
        assert!(matches!(
            SimPlatform::load_or_create(&path),
            Err(CryptoError::SimPlatformFile { .. })
        ));
        let mut long = SIM_FILE_MAGIC.to_vec();
        long.extend_from_slice(&[0; 65]);
        fs::write(&path, &long)?;
        assert!(matches!(
            SimPlatform::load_or_create(&path),
            Err(CryptoError::SimPlatformFile { .. })
        ));
        Ok(())
    }

    #[test]
    fn measurements_are_sha256() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runtime");
        fs::write(&path, b"abc")?;
        let expected = measure_bytes(b"abc");
        assert_eq!(measure_file(&path)?, expected);
        assert_eq!(
            hex::encode(expected),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        Ok(())
    }
}
