//! Every byte the runtime allocates, counted: the memory gauge behind the program's memory
//! budget.
//!
//! Tensor quotas count what the program holds through handles; the runtime also allocates
//! for it where no handle shows (the autodiff graph, gradients, optimizer state, kernel
//! scratch, saved models, batch buffers). A process that installs [`CountingAllocator`] as
//! its global allocator (the enclave does) gets all of it counted: the runtime then refuses
//! a host call whose output would take the process past its limit ([`in_use`] plus the
//! call's declared bytes), and an allocation that passes the limit anyway (memory the
//! runtime could not declare in advance) sets [`OVER_LIMIT`], which interrupts the native
//! kernels at once and fails the program with its memory limit at the next look.
//!
//! The allocator never refuses an allocation itself: a refused allocation would abort the
//! process with a message sized by the program, which is exactly the channel this closes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Makes the C allocator keep freed memory for reuse instead of returning it to the
/// operating system after every large free.
///
/// Training allocates and frees tensors of the same few sizes (megabytes each) at every
/// step. By default glibc serves each with a fresh `mmap` and unmaps it on free, so every
/// step pays page faults and the kernel's zeroing of every page: a quarter of a small
/// residual network's training time on 2 cores. Raising the thresholds keeps those blocks
/// in the heap (measured: the same run 24% faster, its peak resident memory 3% higher).
/// Call it once at process start, before any thread allocates. A no-op off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MIB: libc::c_int = 1 << 20;
        for (param, value) in [
            // Blocks up to 256 MiB come from the heap, not from their own mapping.
            (libc::M_MMAP_THRESHOLD, 256 * MIB),
            // Free memory at the top of the heap is returned only past 512 MiB.
            (libc::M_TRIM_THRESHOLD, 512 * MIB),
            // The heap grows 64 MiB at a time.
            (libc::M_TOP_PAD, 64 * MIB),
        ] {
            // SAFETY: `mallopt` only sets a tuning parameter of glibc's allocator; it takes
            // plain integers and is safe to call at any time (glibc serialises it with the
            // allocator's own lock). A refused value (return 0) leaves the default in place.
            #[allow(unsafe_code)]
            let _ = unsafe { libc::mallopt(param, value) };
        }
    }
}

/// Bytes allocated through [`CountingAllocator`] and not yet freed.
static IN_USE: AtomicUsize = AtomicUsize::new(0);
/// The most [`IN_USE`] has been since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The limit above which [`OVER_LIMIT`] is set.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Whether the counting allocator is the process's global allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Set once an allocation takes [`in_use`] past the limit; cleared by [`set_limit`].
pub static OVER_LIMIT: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting. Install it with
/// `#[global_allocator] static A: chiron_sandbox::CountingAllocator = chiron_sandbox::CountingAllocator;`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountingAllocator;

impl CountingAllocator {
    fn grew(size: usize) {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        let now = IN_USE
            .fetch_add(size, Ordering::Relaxed)
            .saturating_add(size);
        PEAK.fetch_max(now, Ordering::Relaxed);
        if now > LIMIT.load(Ordering::Relaxed) {
            OVER_LIMIT.store(true, Ordering::Release);
        }
    }

    fn shrank(size: usize) {
        IN_USE.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counting touches only
// atomics and never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller guarantees a non-zero size.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller guarantees a non-zero size.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator (that is, `System`)
        // with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        Self::shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller's guarantees are `System`'s preconditions.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            Self::shrank(layout.size());
            Self::grew(new_size);
        }
        p
    }
}

/// Whether [`CountingAllocator`] is the global allocator (it has counted an allocation).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Bytes allocated and not yet freed (0 without the counting allocator).
pub fn in_use() -> usize {
    IN_USE.load(Ordering::Relaxed)
}

/// The most bytes in use at once since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from what is in use now.
pub fn reset_peak() {
    PEAK.store(in_use(), Ordering::Relaxed);
}

/// Sets the limit on bytes in use ([`usize::MAX`] for none) and clears [`OVER_LIMIT`].
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    OVER_LIMIT.store(in_use() > bytes, Ordering::Release);
}

/// The limit in force.
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Whether `bytes` more would still fit under the limit.
pub fn fits(bytes: u64) -> bool {
    let limit = limit();
    limit == usize::MAX || (in_use() as u64).saturating_add(bytes) <= limit as u64
}
