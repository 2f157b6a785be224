//! The provider's program manifest: the extraction policy a program declares for every model it
//! trains, and the resources it expects to need.
//!
//! The provider writes the manifest into the program itself, as a WebAssembly custom section
//! named [`SECTION`] (the SDK's `chiron_sdk::manifest!` macro emits it), so the policy travels
//! with the bytes the owner pins by digest and the enclave runs. The host reads it when the
//! program is registered and shows it through its API, so an owner's client can refuse terms
//! beyond it before uploading anything; the training enclave reads it again from the program
//! it actually runs, refuses an owner's terms that ask for more, and the query enclave checks
//! the sealed terms against it once more before serving. The owner's terms may only tighten
//! the policy. [`read_manifest`] is the one reader all of them use.
//!
//! # Encoding (format versions 1 and 2)
//!
//! The section's payload is exactly [`ENCODED_LEN`] (40) bytes, integers little-endian:
//!
//! | bytes | field | values |
//! |---|---|---|
//! | 0..8 | magic | `CHIRONMF` |
//! | 8 | format version | `1`, or `2` when bytes 36..40 declare an exchange size |
//! | 9 | finest answer granularity | `0` label, `1` top-k |
//! | 10 | k | `0` for label; `1..=MAX_TOP_K` for top-k |
//! | 11 | scores | `0` classes only, `1` scores allowed |
//! | 12..16 | reserved | zero |
//! | 16..24 | maximum query budget (inputs answered over the model's life) | `≥ 1` |
//! | 24..28 | declared peak memory of a training run, MiB | `0` = not declared |
//! | 28..32 | declared sealed-model size, MiB | `0` = not declared |
//! | 32..36 | declared training time, milliseconds per 1000 examples per epoch | `0` = not declared |
//! | 36..40 | version 2: declared parameter-exchange message, KiB; version 1: reserved | `≥ 1` (version 2); zero (version 1) |
//!
//! Version 2 adds only the exchange size, so a program that declares none is still written
//! as version 1 and read by runtimes that predate it. Anything else (another length, magic
//! or version, a reserved byte that is not zero, an unknown code, a second
//! `chiron.manifest` section) is refused: a newer format gets a new version number rather
//! than fields an older reader would skip.
//!
//! # Programs without a manifest
//!
//! A program that declares nothing gets [`Manifest::DEFAULT`]: label answers only, no scores,
//! and at most [`DEFAULT_MAX_QUERIES`] queries per model (one evaluation on a test set the
//! size of Fashion-MNIST's), with no declared needs. Silence is read as the strictest useful
//! policy, never as permission.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::owner::{AnswerPolicy, MAX_TOP_K};

/// Name of the WebAssembly custom section holding the manifest.
pub const SECTION: &str = "chiron.manifest";
/// First bytes of an encoded manifest.
pub const MAGIC: [u8; 8] = *b"CHIRONMF";
/// The encoding's newest format version (2: with a declared exchange size).
pub const FORMAT_VERSION: u8 = 2;
/// Length of an encoded manifest (every format version).
pub const ENCODED_LEN: usize = 40;
/// Query budget of a program that declares no manifest.
pub const DEFAULT_MAX_QUERIES: u64 = 10_000;

/// Whether a program's answers may carry scores: with [`Scores::Allowed`] an owner may ask
/// for [`AnswerPolicy::Scored`] answers (each class with its probability) as fine as the
/// manifest's granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scores {
    /// Class indices only.
    ClassesOnly,
    /// Scores may be returned (when the answer format offers them).
    Allowed,
}

/// Resources the provider says a training run of the program needs. Informative only: the
/// owner's client may use them to size a private job; nothing enforces them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredNeeds {
    /// Peak memory of the training enclave, in MiB.
    pub memory_mib: Option<NonZeroU32>,
    /// Size of the sealed model, in MiB.
    pub model_mib: Option<NonZeroU32>,
    /// Training time in milliseconds per 1000 training examples per epoch.
    pub ms_per_1000_examples_epoch: Option<NonZeroU32>,
    /// Size of one parameter-exchange message of a distributed job, in KiB: what the
    /// largest set of parameters one of the program's optimizers steps takes on the wire
    /// (4 bytes a value and a few bytes a tensor). The owner's client sizes a distributed
    /// job's messages to it; without it, to the sealed model's size. Left out of JSON when
    /// undeclared, so that clients which predate it read such a program's needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_kib: Option<NonZeroU32>,
}

/// A program's extraction policy and declared needs, always valid: it can only be built by
/// decoding a well-formed manifest, by [`Manifest::new`], or as [`Manifest::DEFAULT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ManifestFields", into = "ManifestFields")]
pub struct Manifest {
    max_queries: NonZeroU64,
    answers: AnswerPolicy,
    scores: Scores,
    needs: DeclaredNeeds,
}

/// The JSON shape of a [`Manifest`]; every value is checked on the way in.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFields {
    max_queries: NonZeroU64,
    answers: AnswerPolicy,
    scores: Scores,
    needs: DeclaredNeeds,
}

impl TryFrom<ManifestFields> for Manifest {
    type Error = ManifestError;

    fn try_from(fields: ManifestFields) -> Result<Self, ManifestError> {
        Self::new(
            fields.max_queries,
            fields.answers,
            fields.scores,
            fields.needs,
        )
    }
}

impl From<Manifest> for ManifestFields {
    fn from(m: Manifest) -> Self {
        Self {
            max_queries: m.max_queries,
            answers: m.answers,
            scores: m.scores,
            needs: m.needs,
        }
    }
}

impl Manifest {
    /// The policy of a program that declares none: label answers, classes only, at most
    /// [`DEFAULT_MAX_QUERIES`] queries, no declared needs.
    pub const DEFAULT: Self = Self {
        max_queries: match NonZeroU64::new(DEFAULT_MAX_QUERIES) {
            Some(n) => n,
            None => panic!("the default budget is not zero"),
        },
        answers: AnswerPolicy::Label,
        scores: Scores::ClassesOnly,
        needs: DeclaredNeeds {
            memory_mib: None,
            model_mib: None,
            ms_per_1000_examples_epoch: None,
            exchange_kib: None,
        },
    };

    /// A manifest; refuses a top-k outside `1..=MAX_TOP_K`.
    pub fn new(
        max_queries: NonZeroU64,
        answers: AnswerPolicy,
        scores: Scores,
        needs: DeclaredNeeds,
    ) -> Result<Self, ManifestError> {
        if !answers.is_valid() {
            return Err(ManifestError::TopK);
        }
        // Scores are the separate `scores` field; the granularity names classes only.
        if answers.has_scores() {
            return Err(ManifestError::Answers);
        }
        Ok(Self {
            max_queries,
            answers,
            scores,
            needs,
        })
    }

    /// The most inputs the model may answer over its whole life, across query enclaves.
    pub fn max_queries(&self) -> u64 {
        self.max_queries.get()
    }

    /// The finest answer granularity allowed; the owner may choose it or anything coarser.
    pub fn answers(&self) -> AnswerPolicy {
        self.answers
    }

    /// Whether answers may carry scores.
    pub fn scores(&self) -> Scores {
        self.scores
    }

    /// The resources the provider declares a training run needs.
    pub fn needs(&self) -> DeclaredNeeds {
        self.needs
    }

    /// Checks an owner's terms against the policy: the terms may only tighten it.
    pub fn permits(&self, answers: AnswerPolicy, query_budget: u64) -> Result<(), TermsError> {
        if !answers.is_valid() {
            return Err(TermsError::InvalidAnswers);
        }
        if query_budget > self.max_queries() {
            return Err(TermsError::QueryBudget {
                asked: query_budget,
                allowed: self.max_queries(),
            });
        }
        if answers.width() > self.answers.width() {
            return Err(TermsError::Answers {
                asked: answers,
                allowed: self.answers,
            });
        }
        if answers.has_scores() && self.scores == Scores::ClassesOnly {
            return Err(TermsError::Scores);
        }
        Ok(())
    }

    /// Decodes a manifest section's payload (see the module documentation).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let bytes: &[u8; ENCODED_LEN] = bytes
            .try_into()
            .map_err(|_| ManifestError::Length(bytes.len()))?;
        if bytes[..8] != MAGIC {
            return Err(ManifestError::Magic);
        }
        let version = bytes[8];
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(ManifestError::Version(version));
        }
        if bytes[12..16].iter().any(|&b| b != 0)
            || (version == 1 && bytes[36..40].iter().any(|&b| b != 0))
        {
            return Err(ManifestError::Reserved);
        }
        let answers = match (bytes[9], bytes[10]) {
            (0, 0) => AnswerPolicy::Label,
            (1, k) => AnswerPolicy::TopK(k),
            _ => return Err(ManifestError::Answers),
        };
        let scores = match bytes[11] {
            0 => Scores::ClassesOnly,
            1 => Scores::Allowed,
            _ => return Err(ManifestError::Scores),
        };
        let u32_at = |at: usize| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&bytes[at..at + 4]);
            NonZeroU32::new(u32::from_le_bytes(word))
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[16..24]);
        let max_queries =
            NonZeroU64::new(u64::from_le_bytes(word)).ok_or(ManifestError::ZeroBudget)?;
        let needs = DeclaredNeeds {
            memory_mib: u32_at(24),
            model_mib: u32_at(28),
            ms_per_1000_examples_epoch: u32_at(32),
            exchange_kib: u32_at(36),
        };
        if version == 2 && needs.exchange_kib.is_none() {
            return Err(ManifestError::NoExchangeSize);
        }
        Self::new(max_queries, answers, scores, needs)
    }

    /// The section payload [`Manifest::decode`] reads.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..8].copy_from_slice(&MAGIC);
        // Version 1 where it says all there is to say, so older runtimes still read it.
        out[8] = if self.needs.exchange_kib.is_some() {
            2
        } else {
            1
        };
        match self.answers {
            AnswerPolicy::Label => {}
            // `Manifest::new` refuses `Scored`: the scores are the next byte.
            AnswerPolicy::TopK(k) | AnswerPolicy::Scored(k) => {
                out[9] = 1;
                out[10] = k;
            }
        }
        out[11] = u8::from(self.scores == Scores::Allowed);
        out[16..24].copy_from_slice(&self.max_queries().to_le_bytes());
        let needs = [
            self.needs.memory_mib,
            self.needs.model_mib,
            self.needs.ms_per_1000_examples_epoch,
            self.needs.exchange_kib,
        ];
        for (i, need) in needs.into_iter().enumerate() {
            let at = 24 + 4 * i;
            out[at..at + 4].copy_from_slice(&need.map_or(0, NonZeroU32::get).to_le_bytes());
        }
        out
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {} queries, answers of at most {}, {}",
            self.max_queries,
            self.answers,
            match self.scores {
                Scores::ClassesOnly => "classes only",
                Scores::Allowed => "scores allowed",
            }
        )
    }
}

/// A program's policy as found in its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramPolicy {
    /// Whether the program declares a manifest (`false`: [`Manifest::DEFAULT`] applies).
    pub declared: bool,
    /// The policy in force.
    pub manifest: Manifest,
    /// The datasets the program takes (`None`: any); see [`crate::inputs`].
    #[serde(default)]
    pub inputs: Option<crate::inputs::InputSpec>,
}

/// Reads a program's manifest section: `None` when it has none. The one reader the host,
/// the training enclave and the query enclave share.
///
/// Walks the module's sections without validating their contents (the sandbox does that at
/// load); a module whose section structure does not parse is refused.
pub fn read_manifest(wasm: &[u8]) -> Result<Option<Manifest>, ManifestError> {
    match crate::section::find_once(wasm, SECTION) {
        Ok(found) => found.map(Manifest::decode).transpose(),
        Err(crate::section::SectionError::Module(e)) => Err(ManifestError::Module(e)),
        Err(crate::section::SectionError::Duplicate) => Err(ManifestError::Duplicate),
    }
}

/// The policy in force for a program: its manifest, or [`Manifest::DEFAULT`] when it has
/// none.
pub fn program_policy(wasm: &[u8]) -> Result<ProgramPolicy, ManifestError> {
    let inputs = crate::inputs::read_inputs(wasm)?;
    Ok(match read_manifest(wasm)? {
        Some(manifest) => ProgramPolicy {
            declared: true,
            manifest,
            inputs,
        },
        None => ProgramPolicy {
            declared: false,
            manifest: Manifest::DEFAULT,
            inputs,
        },
    })
}

/// Why a program's manifest was refused. The texts name the manifest's fields, never anything
/// else of the program.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    /// The module's sections do not parse.
    #[error("the program is not a well-formed WebAssembly module ({0})")]
    Module(String),
    /// More than one manifest section.
    #[error("the program has more than one `{SECTION}` section")]
    Duplicate,
    /// A payload of the wrong length.
    #[error("the `{SECTION}` section is {0} bytes, not {ENCODED_LEN}")]
    Length(usize),
    /// Not a manifest.
    #[error("the `{SECTION}` section does not start with the manifest magic")]
    Magic,
    /// An unknown format version.
    #[error(
        "manifest format version {0} is not supported (this build reads versions 1 to {FORMAT_VERSION})"
    )]
    Version(u8),
    /// A version-2 manifest without the exchange size it exists to declare.
    #[error("a version-2 manifest declares an exchange size, and this one's is zero")]
    NoExchangeSize,
    /// A reserved byte is set.
    #[error("the manifest's reserved bytes are not zero")]
    Reserved,
    /// An unknown granularity code.
    #[error("the manifest's answer granularity is not label or top-k")]
    Answers,
    /// A top-k outside `1..=MAX_TOP_K`.
    #[error("the manifest's top-k must be between 1 and {MAX_TOP_K}")]
    TopK,
    /// An unknown scores code.
    #[error("the manifest's scores field is not 0 or 1")]
    Scores,
    /// A maximum query budget of zero.
    #[error("the manifest's maximum query budget must be at least 1")]
    ZeroBudget,
    /// The program's inputs declaration is malformed.
    #[error(transparent)]
    Inputs(#[from] crate::inputs::InputsError),
}

/// Owner's terms beyond a program's policy. The texts name the limit and the values, which
/// are public (the policy is shown by the host; the terms are the owner's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TermsError {
    /// More queries than the program allows.
    #[error(
        "the query budget of {asked} is above the program's maximum of {allowed} queries per model"
    )]
    QueryBudget {
        /// What the owner asked.
        asked: u64,
        /// The program's maximum.
        allowed: u64,
    },
    /// A finer answer granularity than the program allows.
    #[error("answers of {asked} are finer than the program allows (at most {allowed})")]
    Answers {
        /// What the owner asked.
        asked: AnswerPolicy,
        /// The program's finest granularity.
        allowed: AnswerPolicy,
    },
    /// A top-k outside `1..=MAX_TOP_K`.
    #[error("top-k must be between 1 and {MAX_TOP_K}")]
    InvalidAnswers,
    /// Scores asked of a program whose answers carry classes only.
    #[error("answers with scores are not allowed by the program, whose answers carry classes only")]
    Scores,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version-1 bytes as the SDK writes them for `Manifest::new(50_000,
    /// Answers::TopK(3)).memory_mib(512).ms_per_1000_examples_epoch(40)` (the same vector is
    /// in the SDK's tests).
    const GOLDEN: [u8; ENCODED_LEN] = [
        b'C', b'H', b'I', b'R', b'O', b'N', b'M', b'F', 1, 1, 3, 0, 0, 0, 0, 0, //
        0x50, 0xc3, 0, 0, 0, 0, 0, 0, //
        0, 2, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn golden() -> Manifest {
        Manifest::new(
            NonZeroU64::new(50_000).expect("nonzero"),
            AnswerPolicy::TopK(3),
            Scores::ClassesOnly,
            DeclaredNeeds {
                memory_mib: NonZeroU32::new(512),
                model_mib: None,
                ms_per_1000_examples_epoch: NonZeroU32::new(40),
                exchange_kib: None,
            },
        )
        .expect("valid")
    }

    /// A minimal module (`\0asm`, version 1) with the given custom sections.
    fn module(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        for (name, payload) in sections {
            let mut body = vec![name.len() as u8];
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(payload);
            wasm.push(0);
            wasm.push(body.len() as u8);
            wasm.extend(body);
        }
        wasm
    }

    #[test]
    fn the_golden_bytes_decode_and_encode_back() {
        assert_eq!(Manifest::decode(&GOLDEN), Ok(golden()));
        assert_eq!(golden().encode(), GOLDEN);
        assert_eq!(
            Manifest::decode(&Manifest::DEFAULT.encode()),
            Ok(Manifest::DEFAULT)
        );
    }

    #[test]
    fn every_malformed_field_is_refused() {
        let with = |at: usize, value: u8| {
            let mut bytes = GOLDEN;
            bytes[at] = value;
            Manifest::decode(&bytes)
        };
        assert_eq!(
            Manifest::decode(&GOLDEN[..39]),
            Err(ManifestError::Length(39))
        );
        assert_eq!(with(0, b'X'), Err(ManifestError::Magic));
        assert_eq!(with(8, 3), Err(ManifestError::Version(3)));
        assert_eq!(with(8, 0), Err(ManifestError::Version(0)));
        assert_eq!(with(8, 2), Err(ManifestError::NoExchangeSize));
        assert_eq!(with(9, 2), Err(ManifestError::Answers));
        assert_eq!(with(10, 0), Err(ManifestError::TopK));
        assert_eq!(with(10, MAX_TOP_K + 1), Err(ManifestError::TopK));
        assert_eq!(with(11, 2), Err(ManifestError::Scores));
        assert_eq!(with(13, 1), Err(ManifestError::Reserved));
        assert_eq!(with(39, 1), Err(ManifestError::Reserved));
        let mut zero = GOLDEN;
        zero[16..24].fill(0);
        assert_eq!(Manifest::decode(&zero), Err(ManifestError::ZeroBudget));
        // Label with a k is not label.
        let mut label = GOLDEN;
        label[9] = 0;
        assert_eq!(Manifest::decode(&label), Err(ManifestError::Answers));
        label[10] = 0;
        assert!(Manifest::decode(&label).is_ok());
    }

    #[test]
    fn an_exchange_size_is_written_as_version_2_and_refused_in_version_1() {
        let mut needs = golden().needs();
        needs.exchange_kib = NonZeroU32::new(1648);
        let declared = Manifest::new(
            golden().max_queries,
            golden().answers,
            golden().scores,
            needs,
        )
        .expect("valid");
        let bytes = declared.encode();
        assert_eq!(bytes[8], 2);
        assert_eq!(&bytes[36..40], &1648u32.to_le_bytes());
        assert_eq!(bytes[..8], GOLDEN[..8]);
        assert_eq!(bytes[9..36], GOLDEN[9..36]);
        assert_eq!(Manifest::decode(&bytes), Ok(declared));
        // JSON: the field only when declared, so older clients read undeclared needs.
        let json = serde_json::to_string(&golden().needs()).expect("json");
        assert!(!json.contains("exchange_kib"), "{json}");
        let json = serde_json::to_string(&needs).expect("json");
        assert!(json.contains("\"exchange_kib\":1648"), "{json}");
        assert_eq!(
            serde_json::from_str::<DeclaredNeeds>(&json).expect("read back"),
            needs
        );
        // The same size under version 1, whose bytes 36..40 are reserved, is refused.
        let mut as_version_1 = bytes;
        as_version_1[8] = 1;
        assert_eq!(
            Manifest::decode(&as_version_1),
            Err(ManifestError::Reserved)
        );
    }

    #[test]
    fn the_section_is_found_once_or_defaulted() {
        assert_eq!(read_manifest(&module(&[])), Ok(None));
        assert_eq!(
            program_policy(&module(&[("other", b"x")])),
            Ok(ProgramPolicy {
                declared: false,
                manifest: Manifest::DEFAULT,
                inputs: None,
            })
        );
        assert_eq!(
            read_manifest(&module(&[("other", b"x"), (SECTION, &GOLDEN)])),
            Ok(Some(golden()))
        );
        assert_eq!(
            read_manifest(&module(&[(SECTION, &GOLDEN), (SECTION, &GOLDEN)])),
            Err(ManifestError::Duplicate)
        );
        assert_eq!(
            read_manifest(&module(&[(SECTION, &GOLDEN[..10])])),
            Err(ManifestError::Length(10))
        );
        let mut cut = module(&[(SECTION, &GOLDEN)]);
        cut.pop();
        assert!(matches!(read_manifest(&cut), Err(ManifestError::Module(_))));
        assert!(matches!(
            read_manifest(b"not wasm"),
            Err(ManifestError::Module(_))
        ));
    }

    #[test]
    fn terms_may_only_tighten_the_policy() {
        let m = golden();
        assert_eq!(m.permits(AnswerPolicy::Label, 0), Ok(()));
        assert_eq!(m.permits(AnswerPolicy::TopK(3), 50_000), Ok(()));
        assert_eq!(
            m.permits(AnswerPolicy::Label, 50_001),
            Err(TermsError::QueryBudget {
                asked: 50_001,
                allowed: 50_000
            })
        );
        assert_eq!(
            m.permits(AnswerPolicy::TopK(4), 10),
            Err(TermsError::Answers {
                asked: AnswerPolicy::TopK(4),
                allowed: AnswerPolicy::TopK(3)
            })
        );
        assert_eq!(
            m.permits(AnswerPolicy::TopK(0), 10),
            Err(TermsError::InvalidAnswers)
        );
        // Scores only where the manifest allows them, and no finer than its granularity.
        let (classes_only, scored) = (
            Manifest::new(m.max_queries, m.answers, Scores::ClassesOnly, m.needs).expect("valid"),
            Manifest::new(m.max_queries, m.answers, Scores::Allowed, m.needs).expect("valid"),
        );
        assert_eq!(
            classes_only.permits(AnswerPolicy::Scored(1), 10),
            Err(TermsError::Scores)
        );
        assert_eq!(scored.permits(AnswerPolicy::Scored(3), 10), Ok(()));
        assert_eq!(
            scored.permits(AnswerPolicy::Scored(4), 10),
            Err(TermsError::Answers {
                asked: AnswerPolicy::Scored(4),
                allowed: AnswerPolicy::TopK(3)
            })
        );
        assert_eq!(
            Manifest::new(
                m.max_queries,
                AnswerPolicy::Scored(2),
                Scores::Allowed,
                m.needs
            ),
            Err(ManifestError::Answers),
            "a manifest's granularity names classes; scores are their own field"
        );
        assert_eq!(
            Manifest::DEFAULT.permits(AnswerPolicy::TopK(2), 1),
            Err(TermsError::Answers {
                asked: AnswerPolicy::TopK(2),
                allowed: AnswerPolicy::Label
            })
        );
        let message = m.permits(AnswerPolicy::Label, 60_000).expect_err("refused");
        assert!(
            message.to_string().contains("maximum of 50000"),
            "{message}"
        );
    }

    #[test]
    fn json_is_checked_on_the_way_in() {
        let json = serde_json::to_string(&golden()).expect("encodes");
        assert!(json.contains("\"max_queries\":50000"), "{json}");
        let policy = ProgramPolicy {
            declared: true,
            manifest: golden(),
            inputs: Some(
                crate::inputs::InputSpec::decode(&crate::inputs::tests::GOLDEN).expect("decodes"),
            ),
        };
        let back: ProgramPolicy =
            serde_json::from_str(&serde_json::to_string(&policy).expect("encodes"))
                .expect("round trip");
        assert_eq!(back, policy);
        for bad in [
            json.replace("\"TopK\":3", "\"TopK\":11"),
            json.replace("50000", "0"),
            json.replace("\"needs\"", "\"extra\":1,\"needs\""),
        ] {
            assert!(serde_json::from_str::<Manifest>(&bad).is_err(), "{bad}");
        }
    }
}
