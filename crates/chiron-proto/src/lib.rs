//! Chiron wire formats shared by every trust domain.
//!
//! Nothing here is secret or trusted: these are the shapes of bytes that cross a boundary
//! (owner ↔ host ↔ enclave ↔ sandbox). Every decoder validates what it reads, because the
//! other side of each boundary may be hostile.

pub mod api;
pub mod dataset;
pub mod evidence;
pub mod exchange;
pub mod inputs;
pub mod manifest;
pub mod owner;
mod section;
pub mod wire;

/// Version of the protocol spoken between the owner, the host and the enclave runtime.
pub const PROTOCOL_VERSION: u16 = 1;
