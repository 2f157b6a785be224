//! Frames between the host and an enclave: `chiron_proto::wire::read_frame` for
//! `HostFrame` (what the enclave reads from the untrusted host) and `EnclaveFrame` (what the
//! host reads from the enclave), reading frame after frame from one stream the way the
//! enclave's frame loop does, and re-encoding whatever decodes.
#![no_main]

use chiron_proto::wire::{EnclaveFrame, FrameError, HostFrame, MAX_FRAME, read_frame, write_frame};
use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn drain<T: DeserializeOwned + Serialize>(mut stream: &[u8]) {
    // Each successful read consumes at least the 4-byte length, so this ends.
    loop {
        match read_frame::<T>(&mut stream) {
            Ok(frame) => {
                let mut out = Vec::new();
                write_frame(&mut out, &frame).expect("a decoded frame re-encodes");
                let back: T = read_frame(&mut out.as_slice()).expect("a re-encoded frame decodes");
                let mut again = Vec::new();
                write_frame(&mut again, &back).expect("a decoded frame re-encodes");
                assert_eq!(out, again, "frame encoding is not stable");
            }
            Err(FrameError::TooLarge(len)) => {
                assert!(len > MAX_FRAME);
                return;
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drain::<HostFrame>(data);
    drain::<EnclaveFrame>(data);
});
