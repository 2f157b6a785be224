//! Key release: a sealing secret for an enclave whose TEE offers none (TDX), from an attested
//! peer that holds one.
//!
//! The *key keeper* is a `chiron-enclave` in the `KeyKeeper` role on a TEE with a sealing key
//! (SGX, SEV-SNP). Its root is derived from that sealing key, so it survives restarts without
//! storage and no one else can derive it. To an enclave that attests to an identity the
//! keeper's release policy accepts, it releases
//!
//! ```text
//! secret = SHA-256("chiron released sealing secret v1\0" || root || identity)
//! ```
//!
//! so every process of one enclave image (its training and its query enclaves alike) gets the
//! same secret, and another image another one. Both ends attest, each answering the other's
//! fresh nonce:
//!
//! ```text
//! requester                                   keeper
//!   Hello { nonce_r }                 ──────►
//!                                     ◄──────  Keeper { evidence(KeyKeeper, nonce_r), nonce_k }
//!   verify against the keeper policy
//!   Request { evidence(role, nonce_k, fresh key) } ─►
//!                                              verify against the release policy
//!                                     ◄──────  Released { HPKE(fresh key, secret) }
//! ```
//!
//! The requester checks the keeper before it asks, so a host posing as a keeper cannot plant
//! a secret it knows; the keeper checks the requester before it answers, and seals the secret
//! to the key in the requester's evidence, so the host relaying the messages learns nothing.

use std::io::{Read, Write};

use chiron_attest::attester::{self, Platform};
use chiron_attest::{Policy, context_digest, fresh_nonce};
use chiron_crypto::{EnclaveKeypair, Zeroizing, seal_to_enclave};
use chiron_proto::evidence::{Evidence, Role};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The job context both ends attest to: no owner's job or model has it.
const CONTEXT: &str = "chiron key release v1";
/// HPKE info of the released secret.
const RELEASE_INFO: &[u8] = b"chiron key release v1";
/// Largest message accepted: evidence with collateral is a few tens of KiB.
const MAX_MESSAGE: usize = 512 * 1024;

/// One message of the exchange.
#[derive(Serialize, Deserialize)]
enum Message {
    Hello { nonce: [u8; 32] },
    Keeper { evidence: Vec<u8>, nonce: [u8; 32] },
    Request { evidence: Vec<u8> },
    Released { sealed: Vec<u8> },
    Refused { reason: String },
}

/// Why no secret was released.
#[derive(Debug, Error)]
pub enum KeyReleaseError {
    /// The connection failed or a message was malformed.
    #[error("key release connection: {0}")]
    Io(#[from] std::io::Error),
    /// A message could not be encoded or decoded.
    #[error("key release message: {0}")]
    Message(#[from] postcard::Error),
    /// A message arrived out of turn or too large.
    #[error("key release protocol: {0}")]
    Protocol(&'static str),
    /// The peer's evidence was refused.
    #[error("the peer's evidence was refused: {0}")]
    Attestation(#[from] chiron_attest::AttestationError),
    /// This platform could not attest.
    #[error("this platform could not attest: {0}")]
    Attester(#[from] chiron_attest::AttesterError),
    /// The keeper refused the request.
    #[error("the key keeper refused: {0}")]
    Refused(String),
    /// The released secret did not open.
    #[error("the released secret did not open: {0}")]
    Crypto(#[from] chiron_crypto::CryptoError),
}

fn send(w: &mut impl Write, message: &Message) -> Result<(), KeyReleaseError> {
    let bytes = postcard::to_allocvec(message)?;
    let len = u32::try_from(bytes.len()).map_err(|_| KeyReleaseError::Protocol("too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

fn receive(r: &mut impl Read) -> Result<Message, KeyReleaseError> {
    let mut len = [0; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(KeyReleaseError::Protocol("message too large"));
    }
    let mut bytes = vec![0; len];
    r.read_exact(&mut bytes)?;
    Ok(postcard::from_bytes(&bytes)?)
}

/// Evidence from `platform` for `role`, binding `public_key`, answering `nonce`.
fn attest(
    platform: &dyn Platform,
    role: Role,
    public_key: [u8; 32],
    nonce: [u8; 32],
) -> Result<Vec<u8>, KeyReleaseError> {
    attester::evidence(platform, role, public_key, nonce, context_digest(CONTEXT))?
        .to_bytes()
        .map_err(|_| KeyReleaseError::Protocol("evidence too large"))
}

/// Asks the keeper at the other end of `stream` for this enclave's sealing secret.
pub fn request(
    stream: &mut (impl Read + Write),
    platform: &dyn Platform,
    role: Role,
    keeper_policy: &Policy,
) -> Result<Zeroizing<[u8; 32]>, KeyReleaseError> {
    let nonce_r = fresh_nonce();
    send(stream, &Message::Hello { nonce: nonce_r })?;
    let (keeper_evidence, nonce_k) = match receive(stream)? {
        Message::Keeper { evidence, nonce } => (evidence, nonce),
        Message::Refused { reason } => return Err(KeyReleaseError::Refused(reason)),
        _ => return Err(KeyReleaseError::Protocol("expected the keeper's evidence")),
    };
    let keeper_evidence = Evidence::from_bytes(&keeper_evidence)
        .map_err(|_| KeyReleaseError::Protocol("malformed keeper evidence"))?;
    chiron_attest::verify(
        keeper_policy,
        &keeper_evidence,
        Role::KeyKeeper,
        &nonce_r,
        &context_digest(CONTEXT),
    )?;
    let keypair = EnclaveKeypair::generate();
    let evidence = attest(platform, role, keypair.public_key(), nonce_k)?;
    send(stream, &Message::Request { evidence })?;
    let sealed = match receive(stream)? {
        Message::Released { sealed } => sealed,
        Message::Refused { reason } => return Err(KeyReleaseError::Refused(reason)),
        _ => return Err(KeyReleaseError::Protocol("expected the released secret")),
    };
    let (secret, _) = keypair.open(RELEASE_INFO, &transcript(&nonce_r, &nonce_k), &sealed)?;
    let secret: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| KeyReleaseError::Protocol("the released secret is not 32 bytes"))?;
    Ok(Zeroizing::new(secret))
}

/// The additional data the released secret is sealed under: both nonces.
fn transcript(nonce_r: &[u8; 32], nonce_k: &[u8; 32]) -> Vec<u8> {
    [nonce_r.as_slice(), nonce_k.as_slice()].concat()
}

/// A key keeper: its root and whom it releases to.
pub struct Keeper {
    platform: Box<dyn Platform>,
    root: Zeroizing<[u8; 32]>,
    release_policy: Policy,
}

impl Keeper {
    /// A keeper on `platform`, which must offer a sealing secret, releasing to the enclaves
    /// `release_policy` accepts.
    pub fn new(
        platform: Box<dyn Platform>,
        release_policy: Policy,
    ) -> Result<Self, KeyReleaseError> {
        let sealing = platform.sealing_secret()?;
        let mut hasher = Sha256::new();
        hasher.update(b"chiron key keeper root v1\0");
        hasher.update(sealing.as_slice());
        Ok(Self {
            platform,
            root: Zeroizing::new(hasher.finalize().into()),
            release_policy,
        })
    }

    /// Serves one requester. A refusal is told to the requester (its reason concerns only the
    /// requester's own evidence) and returned.
    pub fn serve(&self, stream: &mut (impl Read + Write)) -> Result<(), KeyReleaseError> {
        let nonce_r = match receive(stream)? {
            Message::Hello { nonce } => nonce,
            _ => return Err(KeyReleaseError::Protocol("expected Hello")),
        };
        let own_key = EnclaveKeypair::generate();
        let nonce_k = fresh_nonce();
        let evidence = attest(
            self.platform.as_ref(),
            Role::KeyKeeper,
            own_key.public_key(),
            nonce_r,
        )?;
        send(
            stream,
            &Message::Keeper {
                evidence,
                nonce: nonce_k,
            },
        )?;
        let evidence = match receive(stream)? {
            Message::Request { evidence } => evidence,
            _ => return Err(KeyReleaseError::Protocol("expected a request")),
        };
        match self.release(&evidence, &nonce_r, &nonce_k) {
            Ok(sealed) => send(stream, &Message::Released { sealed }),
            Err(e) => {
                send(
                    stream,
                    &Message::Refused {
                        reason: e.to_string(),
                    },
                )?;
                Err(e)
            }
        }
    }

    fn release(
        &self,
        evidence: &[u8],
        nonce_r: &[u8; 32],
        nonce_k: &[u8; 32],
    ) -> Result<Vec<u8>, KeyReleaseError> {
        let evidence = Evidence::from_bytes(evidence)
            .map_err(|_| KeyReleaseError::Protocol("malformed requester evidence"))?;
        // Train and query enclaves of one image get the same secret; nothing else gets one.
        if !matches!(evidence.role, Role::Train | Role::Query) {
            return Err(KeyReleaseError::Protocol(
                "only training and query enclaves get secrets",
            ));
        }
        let verified = chiron_attest::verify(
            &self.release_policy,
            &evidence,
            evidence.role,
            nonce_k,
            &context_digest(CONTEXT),
        )?;
        let mut hasher = Sha256::new();
        hasher.update(b"chiron released sealing secret v1\0");
        hasher.update(self.root.as_slice());
        hasher.update(verified.identity().canonical_bytes());
        let secret = Zeroizing::new(<[u8; 32]>::from(hasher.finalize()));
        let (sealed, _) = seal_to_enclave(
            &verified.enclave_public_key(),
            RELEASE_INFO,
            &transcript(nonce_r, nonce_k),
            &*secret,
        )?;
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::os::unix::net::UnixStream;

    use chiron_attest::AttestationError;
    use chiron_attest::attester::sim::SimPlatform;

    use super::*;

    const KEEPER_BUILD: [u8; 32] = [1; 32];
    const REQUESTER_BUILD: [u8; 32] = [2; 32];

    type Outcome = (
        Result<Zeroizing<[u8; 32]>, KeyReleaseError>,
        Result<(), KeyReleaseError>,
    );

    /// One exchange over a socket pair: the requester's result and the keeper's.
    fn exchange(keeper: Keeper, requester: &SimPlatform, role: Role, trust: &Policy) -> Outcome {
        let (mut a, mut b) = UnixStream::pair().expect("socket pair");
        let served = std::thread::spawn(move || keeper.serve(&mut b));
        let got = request(&mut a, requester, role, trust);
        drop(a);
        (got, served.join().expect("keeper thread"))
    }

    /// A keeper whose keys live in a file, so that it can be restarted with the same root.
    struct Setup {
        _dir: tempfile::TempDir,
        keeper_file: std::path::PathBuf,
        keeper_public: [u8; 32],
        requester: SimPlatform,
    }

    impl Setup {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let keeper_file = dir.path().join("keeper.key");
            let keeper_public = SimPlatform::load_or_create(&keeper_file, KEEPER_BUILD)
                .expect("keeper keys")
                .public_key();
            Self {
                _dir: dir,
                keeper_file,
                keeper_public,
                requester: SimPlatform::generate(REQUESTER_BUILD),
            }
        }

        /// A (re)started keeper releasing to `release_to` builds on `requester`'s platform.
        fn keeper(&self, requester: &SimPlatform, release_to: Vec<[u8; 32]>) -> Keeper {
            let platform =
                SimPlatform::load_or_create(&self.keeper_file, KEEPER_BUILD).expect("reload");
            let policy = Policy::new()
                .dangerous_accept_simulated_platform(requester.public_key(), release_to);
            Keeper::new(Box::new(platform), policy).expect("keeper")
        }

        fn keeper_policy(&self) -> Policy {
            Policy::new()
                .dangerous_accept_simulated_platform(self.keeper_public, vec![KEEPER_BUILD])
        }
    }

    #[test]
    fn an_accepted_enclave_gets_the_same_secret_in_both_roles_and_across_keeper_restarts() {
        let s = Setup::new();
        let keeper = s.keeper(&s.requester, vec![REQUESTER_BUILD]);
        let (train, served) = exchange(keeper, &s.requester, Role::Train, &s.keeper_policy());
        served.expect("served");
        let train = train.expect("released");
        let keeper = s.keeper(&s.requester, vec![REQUESTER_BUILD]);
        let (query, _) = exchange(keeper, &s.requester, Role::Query, &s.keeper_policy());
        assert_eq!(*train, *query.expect("released"));
        // Another image gets another secret from the same keeper.
        let other = SimPlatform::generate([3; 32]);
        let keeper = s.keeper(&other, vec![[3; 32]]);
        let (third, _) = exchange(keeper, &other, Role::Train, &s.keeper_policy());
        assert_ne!(*train, *third.expect("released"));
        // Only training and query enclaves are served.
        let keeper = s.keeper(&s.requester, vec![REQUESTER_BUILD]);
        let (got, _) = exchange(keeper, &s.requester, Role::KeyKeeper, &s.keeper_policy());
        assert!(matches!(got, Err(KeyReleaseError::Refused(_))));
    }

    #[test]
    fn a_requester_the_policy_does_not_accept_gets_nothing() {
        let s = Setup::new();
        let keeper = s.keeper(&s.requester, vec![[9; 32]]);
        let (got, served) = exchange(keeper, &s.requester, Role::Train, &s.keeper_policy());
        let err = got.expect_err("refused");
        assert!(
            matches!(err, KeyReleaseError::Refused(ref r) if r.contains("measurement")),
            "{err}"
        );
        assert!(matches!(
            served,
            Err(KeyReleaseError::Attestation(
                AttestationError::WrongMeasurement { .. }
            ))
        ));
    }

    #[test]
    fn a_keeper_the_requester_does_not_trust_is_never_asked() {
        let s = Setup::new();
        let impostor = Policy::new().dangerous_accept_simulated_platform(
            SimPlatform::generate(KEEPER_BUILD).public_key(),
            vec![KEEPER_BUILD],
        );
        let keeper = s.keeper(&s.requester, vec![REQUESTER_BUILD]);
        let (got, _) = exchange(keeper, &s.requester, Role::Train, &impostor);
        assert!(matches!(
            got,
            Err(KeyReleaseError::Attestation(
                AttestationError::UntrustedPlatform { .. }
            ))
        ));
        let wrong_build =
            Policy::new().dangerous_accept_simulated_platform(s.keeper_public, vec![[7; 32]]);
        let keeper = s.keeper(&s.requester, vec![REQUESTER_BUILD]);
        let (got, _) = exchange(keeper, &s.requester, Role::Train, &wrong_build);
        assert!(matches!(
            got,
            Err(KeyReleaseError::Attestation(
                AttestationError::WrongMeasurement { .. }
            ))
        ));
    }

    #[test]
    fn a_keeper_without_a_sealing_key_cannot_start() {
        struct NoSealing;
        impl Platform for NoSealing {
            fn tee(&self) -> chiron_proto::evidence::TeeKind {
                chiron_proto::evidence::TeeKind::Tdx
            }
            fn attest(
                &self,
                _: &chiron_attest::ReportData,
            ) -> Result<chiron_attest::attester::Statement, chiron_attest::AttesterError>
            {
                Err(chiron_attest::AttesterError::NoSealingKey("test".into()))
            }
            fn sealing_secret(&self) -> Result<Zeroizing<[u8; 32]>, chiron_attest::AttesterError> {
                Err(chiron_attest::AttesterError::NoSealingKey("no key".into()))
            }
        }
        assert!(Keeper::new(Box::new(NoSealing), Policy::new()).is_err());
    }
}
