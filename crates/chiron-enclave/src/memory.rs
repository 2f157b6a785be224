//! Peak-memory padding for private jobs.
//!
//! The platform can read an enclave process's peak resident memory (`VmHWM`), and a hostile
//! program can make it depend on the data (allocate more on a secret bit). A private job
//! therefore ends by raising its resident memory to the owner's declared figure, so the peak
//! the platform reads is that figure whatever the program did. A job that already went above
//! it fails: its peak can no longer be hidden.

use std::hint::black_box;

/// Page granularity of resident memory.
const PAGE: usize = 4096;

/// Why the peak could not be padded.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The job's peak is already above the declared one.
    #[error("peak resident memory {peak_mib} MiB exceeded the declared {budget_mib} MiB")]
    Exceeded {
        /// Observed peak, MiB.
        peak_mib: u64,
        /// Declared peak, MiB.
        budget_mib: u64,
    },
    /// The process's memory figures could not be read.
    #[error("cannot read this process's memory use: {0}")]
    Status(#[from] std::io::Error),
}

/// Raises this process's peak resident memory to `budget` bytes: touches enough fresh pages
/// to bring the current resident size up to it, then frees them.
pub fn pad_peak_to(budget: u64) -> Result<(), MemoryError> {
    let usage = Usage::read()?;
    if usage.peak > budget {
        return Err(MemoryError::Exceeded {
            peak_mib: usage.peak >> 20,
            budget_mib: budget >> 20,
        });
    }
    let missing = usize::try_from(budget - usage.resident).unwrap_or(usize::MAX);
    let mut pad = vec![0u8; missing];
    // Fresh zeroed pages are not resident until written.
    for page in pad.chunks_mut(PAGE) {
        page[0] = 1;
    }
    black_box(&pad);
    Ok(())
}

/// The process's resident memory now and at its peak, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// `VmRSS`.
    pub resident: u64,
    /// `VmHWM`.
    pub peak: u64,
}

impl Usage {
    /// Reads `/proc/self/status`.
    pub fn read() -> std::io::Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .map(|kib| kib << 10)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("/proc/self/status has no {name} line"),
                    )
                })
        };
        Ok(Self {
            resident: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_lands_on_the_budget() -> Result<(), MemoryError> {
        let before = Usage::read()?;
        let budget = before.peak + (64 << 20);
        pad_peak_to(budget)?;
        let after = Usage::read()?;
        let off = after.peak.abs_diff(budget);
        assert!(off < 4 << 20, "peak {} vs budget {budget}", after.peak);
        Ok(())
    }

    #[test]
    fn a_peak_above_the_budget_is_refused() -> Result<(), MemoryError> {
        let usage = Usage::read()?;
        assert!(matches!(
            pad_peak_to(usage.peak / 2),
            Err(MemoryError::Exceeded { .. })
        ));
        Ok(())
    }
}
