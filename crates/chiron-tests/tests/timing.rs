//! Private timing: whatever the program did with the data, the platform sees the same event
//! stream (count and sizes) and the same completion time, at the declared budget.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::{Duration, Instant};

use chiron_proto::api::JobState;
use chiron_proto::owner::{HELD_EVENT_SLOTS, OwnerEvent};
use chiron_tests::*;

/// What the platform saw of one job, and what the owner got.
struct Seen {
    state: JobState,
    /// Ciphertext sizes of the stored events, in order.
    event_sizes: Vec<usize>,
    /// Events stored while training was still running.
    early_events: usize,
    elapsed: Duration,
    metrics: usize,
}

fn run(service: &Service, epochs: u32, budget_secs: u32) -> Seen {
    let terms = transcript::private_terms(epochs, budget_secs);
    let started = Instant::now();
    let ticket =
        start_job(service, &program_wasm("chiron_mlp"), &iris(), &terms).expect("job starts");
    // The honest program finishes in well under a second; nothing may show before the end.
    std::thread::sleep(Duration::from_millis(1500));
    let host = service.client();
    let early = host.job_events(&ticket.job_id, 0).expect("events");
    assert_eq!(early.state, JobState::Running);
    let (state, events) = wait(service, &ticket, Duration::from_secs(120));
    let elapsed = started.elapsed();
    let stored = host.job_events(&ticket.job_id, 0).expect("events");
    Seen {
        state,
        event_sizes: stored.events.iter().map(|(_, text)| text.len()).collect(),
        early_events: early.events.len(),
        elapsed,
        metrics: events
            .iter()
            .filter(|e| matches!(e, OwnerEvent::Metric { .. }))
            .count(),
    }
}

#[test]
fn private_timing_hides_how_long_training_took_and_how_much_it_reported() {
    let service = Service::start();
    let budget = 4;
    // Two jobs whose programs report very different numbers of metrics and run for very
    // different times (2 epochs against 80).
    let short = run(&service, 2, budget);
    let long = run(&service, 80, budget);
    for seen in [&short, &long] {
        assert_eq!(seen.state, JobState::Succeeded);
        assert_eq!(seen.early_events, 0, "events leaked before the budget");
        assert_eq!(seen.event_sizes.len(), HELD_EVENT_SLOTS);
        assert!(
            seen.elapsed >= Duration::from_secs(budget.into()),
            "finished after {:?}, before the {budget} s budget",
            seen.elapsed
        );
    }
    assert_eq!(short.event_sizes, long.event_sizes);
    // The owner still gets every metric.
    assert_eq!((short.metrics, long.metrics), (2 * 2, 80 * 2));
}
