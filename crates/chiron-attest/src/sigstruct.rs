//! SGX SIGSTRUCT files (placeholder, being written).
