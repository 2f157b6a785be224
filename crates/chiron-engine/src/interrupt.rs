//! Stopping native work that is already running.
//!
//! A provider program chooses the shapes of every operation, so one call into the engine can
//! be made to run for as long as the program likes. The sandbox's deadline only fires while
//! wasm runs; inside the engine, kernels consult an [`Interrupt`] between pieces of bounded
//! work ([`Pace`]), so a call stops soon after its deadline passes or after the runtime
//! trips the interrupt (for example on running out of memory), with
//! [`EngineError::Interrupted`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::EngineError;

/// Work a kernel does between two looks at its [`Interrupt`]: a floating-point operation, or
/// a value read or written, counts one. About half a millisecond of work on one core.
pub const QUANTUM: u64 = 1 << 21;

/// A deadline and a stop switch shared by the runtime and the kernels it calls.
///
/// Cloning is cheap and shares the state. The default never fires.
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// Set once the interrupt has fired; it never clears.
    stopped: AtomicBool,
    /// Nanoseconds after `origin` at which it fires; 0 for no deadline.
    deadline: AtomicU64,
    origin: std::sync::OnceLock<Instant>,
    /// A process-wide switch that also fires it (the runtime's memory gauge).
    external: std::sync::OnceLock<&'static AtomicBool>,
}

impl Interrupt {
    /// An interrupt that fires only when [`Interrupt::stop`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also fire whenever `switch` is set (it is never cleared by the interrupt). Has an
    /// effect the first time only.
    pub fn follow(&self, switch: &'static AtomicBool) {
        let _ = self.0.external.set(switch);
    }

    /// Fire at `at` (or now, if it has passed). A later call moves the deadline.
    pub fn set_deadline(&self, at: Instant) {
        let origin = *self.0.origin.get_or_init(Instant::now);
        let nanos = at.saturating_duration_since(origin).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
        self.0.deadline.store(nanos, Ordering::Release);
    }

    /// Time left before the deadline: `None` without one, zero once it has passed or the
    /// interrupt has fired by other means.
    pub fn time_left(&self) -> Option<Duration> {
        let deadline = self.0.deadline.load(Ordering::Acquire);
        if deadline == 0 {
            return None;
        }
        let origin = self.0.origin.get()?;
        if self.0.stopped.load(Ordering::Acquire) {
            return Some(Duration::ZERO);
        }
        let left = u128::from(deadline).saturating_sub(origin.elapsed().as_nanos());
        Some(Duration::from_nanos(
            u64::try_from(left).unwrap_or(u64::MAX),
        ))
    }

    /// Fires now.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
    }

    /// Whether it has fired.
    pub fn fired(&self) -> bool {
        self.check().is_err()
    }

    /// `Err(Interrupted)` once the interrupt has fired.
    pub fn check(&self) -> Result<(), EngineError> {
        if self.0.stopped.load(Ordering::Acquire) {
            return Err(EngineError::Interrupted);
        }
        if self
            .0
            .external
            .get()
            .is_some_and(|s| s.load(Ordering::Acquire))
        {
            self.stop();
            return Err(EngineError::Interrupted);
        }
        let deadline = self.0.deadline.load(Ordering::Acquire);
        if deadline != 0
            && let Some(origin) = self.0.origin.get()
            && origin.elapsed().as_nanos() >= u128::from(deadline)
        {
            self.stop();
            return Err(EngineError::Interrupted);
        }
        Ok(())
    }
}

/// Counts one thread's work and looks at the interrupt every [`QUANTUM`] of it.
pub(crate) struct Pace<'a> {
    interrupt: &'a Interrupt,
    done: u64,
}

impl<'a> Pace<'a> {
    /// A fresh count; looks at the interrupt once straight away.
    pub fn new(interrupt: &'a Interrupt) -> Result<Self, EngineError> {
        interrupt.check()?;
        Ok(Self { interrupt, done: 0 })
    }

    /// Records `units` of work done (or about to be done); looks at the interrupt when a
    /// quantum has gone by.
    pub fn step(&mut self, units: usize) -> Result<(), EngineError> {
        self.done = self.done.saturating_add(units as u64);
        if self.done >= QUANTUM {
            self.done = 0;
            self.interrupt.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_its_deadline_and_stays_fired() {
        let i = Interrupt::new();
        assert!(!i.fired());
        i.set_deadline(Instant::now() + Duration::from_millis(20));
        assert!(!i.fired());
        std::thread::sleep(Duration::from_millis(30));
        assert!(i.fired());
        i.set_deadline(Instant::now() + Duration::from_secs(60));
        assert!(i.fired(), "a fired interrupt stays fired");
    }

    #[test]
    fn tells_the_time_left_before_its_deadline() {
        let i = Interrupt::new();
        assert_eq!(i.time_left(), None, "no deadline");
        i.set_deadline(Instant::now() + Duration::from_secs(60));
        let left = i.time_left().expect("a deadline");
        assert!(
            left <= Duration::from_secs(60) && left > Duration::from_secs(59),
            "{left:?}"
        );
        i.set_deadline(Instant::now());
        assert_eq!(i.time_left(), Some(Duration::ZERO));
        let j = Interrupt::new();
        j.set_deadline(Instant::now() + Duration::from_secs(60));
        j.stop();
        assert_eq!(j.time_left(), Some(Duration::ZERO), "fired");
    }

    #[test]
    fn fires_on_stop_and_on_its_external_switch() {
        let i = Interrupt::new();
        i.clone().stop();
        assert_eq!(i.check(), Err(EngineError::Interrupted));

        static SWITCH: AtomicBool = AtomicBool::new(false);
        let j = Interrupt::new();
        j.follow(&SWITCH);
        assert!(!j.fired());
        SWITCH.store(true, Ordering::Release);
        assert!(j.fired());
    }

    #[test]
    fn pace_looks_once_a_quantum() {
        let i = Interrupt::new();
        let mut pace = Pace::new(&i).expect("not fired");
        i.stop();
        assert!(pace.step(QUANTUM as usize - 1).is_ok());
        assert!(pace.step(1).is_err());
    }
}
