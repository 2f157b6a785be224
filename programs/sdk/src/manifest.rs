//! The program's manifest: the extraction policy the provider declares for every model the
//! program trains, and the resources a training run needs.
//!
//! Declare it once per program with [`manifest!`](crate::manifest!):
//!
//! ```
//! use chiron_sdk::manifest::{Answers, Manifest};
//!
//! chiron_sdk::manifest!(
//!     Manifest::new(100_000, Answers::TopK(3))
//!         .memory_mib(512)
//!         .model_mib(2)
//!         .ms_per_1000_examples_epoch(400)
//!         .exchange_kib(1200)
//! );
//! ```
//!
//! The runtime enforces the policy: an owner whose terms ask for more queries per model, or
//! a finer answer granularity, than the manifest allows is refused before training starts,
//! and the query enclave counts queries per model, across restarts. The owner's terms may
//! only tighten it. A program without a manifest gets the runtime's conservative default:
//! label answers only, no scores, at most 10 000 queries per model.
//!
//! The declared needs are not enforced; the owner's client uses them to size a private job,
//! and a distributed job's exchange messages, when the owner does not.
//!
//! The manifest is stored in the module as a custom section named [`SECTION`], in the fixed
//! 40-byte format that `chiron_proto::manifest` documents and parses (version 2 when it
//! declares an exchange size, version 1 otherwise, which older runtimes read too). Values that
//! cannot be honoured (a budget of 0, a top-k outside `1..=MAX_TOP_K`) fail at compile time.

/// Name of the WebAssembly custom section holding the manifest.
pub const SECTION: &str = "chiron.manifest";
/// Length of the encoded manifest.
pub const ENCODED_LEN: usize = 40;
/// Largest top-k the runtime serves.
pub const MAX_TOP_K: u8 = 10;

/// The finest answer granularity the provider allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answers {
    /// The most likely class only.
    Label,
    /// The `k` most likely classes, best first (`1..=MAX_TOP_K`).
    TopK(u8),
}

/// A program's manifest, built in a `const` context (see [`manifest!`](crate::manifest!)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    max_queries: u64,
    answers: Answers,
    scores: bool,
    memory_mib: u32,
    model_mib: u32,
    ms_per_1000_examples_epoch: u32,
    exchange_kib: u32,
}

impl Manifest {
    /// At most `max_queries` inputs answered per model over its life, with answers no finer
    /// than `answers`; classes only, no declared needs.
    ///
    /// # Panics
    /// (At compile time, in a `const` context.) If `max_queries` is 0 or a top-k is outside
    /// `1..=MAX_TOP_K`.
    pub const fn new(max_queries: u64, answers: Answers) -> Self {
        assert!(
            max_queries > 0,
            "the maximum query budget must be at least 1"
        );
        if let Answers::TopK(k) = answers {
            assert!(k >= 1 && k <= MAX_TOP_K, "top-k must be 1..=MAX_TOP_K");
        }
        Self {
            max_queries,
            answers,
            scores: false,
            memory_mib: 0,
            model_mib: 0,
            ms_per_1000_examples_epoch: 0,
            exchange_kib: 0,
        }
    }

    /// Whether answers may carry scores: with `true`, an owner may ask for each answered
    /// class's probability (the softmax of the scores `predict` returns), as many classes as
    /// the granularity allows.
    pub const fn scores(mut self, allowed: bool) -> Self {
        self.scores = allowed;
        self
    }

    /// Declares the training enclave's peak memory, in MiB (0: not declared).
    pub const fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Declares the sealed model's size, in MiB (0: not declared).
    pub const fn model_mib(mut self, mib: u32) -> Self {
        self.model_mib = mib;
        self
    }

    /// Declares the training time, in milliseconds per 1000 training examples per epoch (0:
    /// not declared).
    pub const fn ms_per_1000_examples_epoch(mut self, ms: u32) -> Self {
        self.ms_per_1000_examples_epoch = ms;
        self
    }

    /// Declares the size, in KiB, of one parameter-exchange message of a distributed job (0:
    /// not declared): what the largest set of parameters one optimizer steps takes on the
    /// wire, 4 bytes a value and some 8 bytes a tensor, with some headroom. Every message of
    /// a distributed job has one size, so this is what it costs; undeclared, the owner's
    /// client uses the model size, often several times more. A job whose parameters do not
    /// fit fails at its first step with the size they need, so measure it on the datasets
    /// the program expects (the parameters of a model shaped by its inputs grow with them).
    pub const fn exchange_kib(mut self, kib: u32) -> Self {
        self.exchange_kib = kib;
        self
    }

    /// The section's bytes.
    pub const fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let magic = *b"CHIRONMF";
        let mut i = 0;
        while i < magic.len() {
            out[i] = magic[i];
            i += 1;
        }
        // Version 2 exists for the exchange size; without it, version 1 (older runtimes read it).
        out[8] = if self.exchange_kib == 0 { 1 } else { 2 };
        if let Answers::TopK(k) = self.answers {
            out[9] = 1;
            out[10] = k;
        }
        out[11] = self.scores as u8;
        put(&mut out, 16, &self.max_queries.to_le_bytes());
        put(&mut out, 24, &self.memory_mib.to_le_bytes());
        put(&mut out, 28, &self.model_mib.to_le_bytes());
        put(&mut out, 32, &self.ms_per_1000_examples_epoch.to_le_bytes());
        put(&mut out, 36, &self.exchange_kib.to_le_bytes());
        out
    }
}

const fn put(out: &mut [u8; ENCODED_LEN], at: usize, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
}

/// Declares the program's [`Manifest`] (a `const` expression), as the module's
/// `chiron.manifest` custom section. Use it once per program, next to
/// [`export_program!`](crate::export_program!).
///
/// ```ignore
/// chiron_sdk::manifest!(chiron_sdk::manifest::Manifest::new(
///     1_000_000,
///     chiron_sdk::manifest::Answers::TopK(10),
/// ));
/// ```
///
/// Like the entry points, the section exists on `wasm32` only. A module with two manifest
/// sections (two crates of one program each declaring one) is refused at registration.
#[macro_export]
macro_rules! manifest {
    ($manifest:expr $(,)?) => {
        /// The program's manifest, read by the runtime from the module's custom section.
        #[cfg(target_arch = "wasm32")]
        #[used]
        #[unsafe(link_section = "chiron.manifest")]
        static CHIRON_MANIFEST: [u8; $crate::manifest::ENCODED_LEN] = {
            const MANIFEST: $crate::manifest::Manifest = $manifest;
            MANIFEST.encode()
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector `chiron_proto::manifest`'s tests decode.
    const GOLDEN: [u8; ENCODED_LEN] = [
        b'C', b'H', b'I', b'R', b'O', b'N', b'M', b'F', 1, 1, 3, 0, 0, 0, 0, 0, //
        0x50, 0xc3, 0, 0, 0, 0, 0, 0, //
        0, 2, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn encodes_the_format_the_runtime_reads() {
        const M: Manifest = Manifest::new(50_000, Answers::TopK(3))
            .memory_mib(512)
            .ms_per_1000_examples_epoch(40);
        assert_eq!(M.encode(), GOLDEN);
        let label = Manifest::new(1, Answers::Label).scores(true).encode();
        assert_eq!(&label[8..12], &[1, 0, 0, 1]);
        let exchange = Manifest::new(50_000, Answers::TopK(3))
            .memory_mib(512)
            .ms_per_1000_examples_epoch(40)
            .exchange_kib(1648)
            .encode();
        assert_eq!(exchange[8], 2);
        assert_eq!(&exchange[36..40], &1648u32.to_le_bytes());
        assert_eq!(exchange[9..36], GOLDEN[9..36]);
    }
}
