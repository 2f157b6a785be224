//! The messages a distributed job's workers and parameter server exchange over their
//! attested channel (`chiron_channel`), inside the enclaves: the platform sees only their
//! ciphertext, always of the same size.
//!
//! Every message, in either direction, is exactly the job's public `message_kib`
//! (`ExchangeTerms`): a 4-byte little-endian length, the postcard encoding, then zeros. The
//! channel splits it into fixed-size records, so the platform sees the same bytes whatever
//! the message says. A model whose parameters do not fit fails the job.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Worker → parameter server.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToServer {
    /// The first message on a connection: which worker this is.
    Hello {
        /// The worker's rank (from the owner's sealed request).
        rank: u32,
    },
    /// Before an optimizer's first step: its parameters as this worker has them.
    Register {
        /// The optimizer's handle (the same on every worker running the same program).
        optimizer: u32,
        /// Its parameters' values, in order.
        values: Vec<Vec<f32>>,
    },
    /// One step: this worker's gradients.
    Step {
        /// The optimizer's handle.
        optimizer: u32,
        /// Its rule and hyper-parameters now.
        rule: Rule,
        /// The global norm it clips to.
        max_grad_norm: Option<f32>,
        /// One gradient per parameter, `None` for a parameter outside the pass.
        gradients: Vec<Option<Vec<f32>>>,
    },
    /// The program finished and saved its model: no more steps from this worker.
    Done,
    /// The program failed: the job cannot go on.
    Abandon,
    /// A paced exchange's tick with nothing to send (the program is computing, waiting for
    /// its parameters, or done).
    Idle,
}

/// Parameter server → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// The parameters to continue with.
    Parameters(Vec<Vec<f32>>),
    /// The server refused the round (workers out of step, a failed peer); the job ends.
    Refused(String),
    /// A paced exchange's tick with no parameters for this worker yet.
    Wait,
    /// Rank 0 is done, so the job's model is sealed: this worker, a replacement still
    /// running its program, is let go. Its work is over; the job has not failed.
    Released,
}

/// An optimizer rule on the wire: which rule (`tag`: 0 SGD, 1 Adam, 2 Nesterov, 3 AdamW,
/// 4 RMSprop) and its hyper-parameters in the order the engine's `OptimizerKind` lists them
/// (learning rate first), unused ones zero. The enclave converts it to and from the engine's
/// own type.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Which rule.
    pub tag: u8,
    /// Its hyper-parameters.
    pub values: [f32; 5],
}

/// Encodes `message` as exactly `size` bytes, or says why it does not fit.
pub fn pad<T: Serialize>(message: &T, size: usize) -> Result<Vec<u8>, String> {
    let encoded = postcard::to_allocvec(message).map_err(|e| e.to_string())?;
    let len = u32::try_from(encoded.len())
        .ok()
        .filter(|_| encoded.len() + 4 <= size)
        .ok_or_else(|| {
            format!(
                "the model's parameters ({} KiB) do not fit the job's exchange messages \
                 ({} KiB): ask for larger messages",
                encoded.len().div_ceil(1024),
                size / 1024
            )
        })?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&encoded);
    out.resize(size, 0);
    Ok(out)
}

/// Decodes a message made by [`pad`].
pub fn unpad<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or("an exchange message shorter than its length")?;
    let len = u32::from_le_bytes(*len) as usize;
    let body = rest
        .get(..len)
        .ok_or("an exchange message longer than its size")?;
    postcard::from_bytes(body).map_err(|e| format!("a malformed exchange message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_always_the_declared_size() {
        for message in [
            ToServer::Hello { rank: 3 },
            ToServer::Register {
                optimizer: 9,
                values: vec![vec![1.5; 100], vec![]],
            },
            ToServer::Done,
        ] {
            let bytes = pad(&message, 4096).expect("fits");
            assert_eq!(bytes.len(), 4096);
            let back: ToServer = unpad(&bytes).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{message:?}"));
        }
        let big = ToWorker::Parameters(vec![vec![0.25; 2000]]);
        assert!(pad(&big, 4096).unwrap_err().contains("do not fit"));
        assert!(unpad::<ToWorker>(&[200, 0, 0, 0, 1]).is_err());
        assert!(unpad::<ToWorker>(&[1, 0]).is_err());
    }
}
