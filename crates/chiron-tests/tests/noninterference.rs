//! Non-interference: the same job on two datasets that share their public header but differ in
//! content (each with its own canary) must look the same to the provider and the platform —
//! stored objects, frames, logs, output, status texts, event stream, and, for a private job,
//! state-change times and the training enclave's peak memory — however hard the provider's
//! program tries to make them differ. Each hostile fixture reads one secret bit of the data
//! (the parity of the first training label, which differs between the twins) and pushes it
//! into one channel.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_client::ClientError;
use chiron_client::owner::{JobTicket, QuerySession, TrainingTerms};
use chiron_proto::owner::OwnerEvent;
use chiron_tests::transcript::{
    Disclosure, Observed, assert_indistinguishable, assert_no_canary, differences, observe,
    observe_distributed, peer_traffic_differences, private_terms, twin_datasets,
};
use chiron_tests::*;

/// Images per twin dataset: enough for a real job, few enough for a quick one.
const IMAGES: usize = 600;
/// Time budget of the private runs: above the slowest fixture's honest work (1.5–3 s of
/// spinning on the secret bit, plus start-up) and the ≈ 1 s the enclave keeps for padding and
/// sealing, with room for a loaded machine.
const PRIVATE_BUDGET_SECS: u32 = 8;

/// Runs `program` on both twins under `terms` (then `after`, for queries), checks that neither
/// canary reached the platform, and returns both observations.
fn twins(
    program: &str,
    terms: &TrainingTerms,
    after: impl Fn(&Service, &JobTicket) + Copy,
) -> [Observed; 2] {
    let wasm = program_wasm(program);
    twin_datasets(IMAGES).map(|(data, canary)| {
        let observed = observe(&wasm, &data, terms, Duration::from_secs(120), after);
        assert_no_canary(&observed.transcript, &canary);
        observed
    })
}

/// A private run of `program` on both twins must be indistinguishable to the platform.
fn private_twins(program: &str) -> [Observed; 2] {
    let [a, b] = twins(
        program,
        &private_terms(1, PRIVATE_BUDGET_SECS),
        |_: &Service, _: &JobTicket| {},
    );
    assert_indistinguishable(&a.transcript, &b.transcript, Disclosure::Private);
    for run in [&a, &b] {
        eprintln!(
            "{program}: ended at {:?}, training enclave peak {:?} MiB",
            run.transcript.states.last().map(|(_, at)| at),
            run.transcript
                .training_peaks
                .iter()
                .map(|p| p >> 20)
                .collect::<Vec<_>>()
        );
        let (state, ended) = run.transcript.states.last().expect("states");
        assert!(
            *ended >= Duration::from_secs(PRIVATE_BUDGET_SECS.into()),
            "{state:?} reported at {ended:?}, before the budget"
        );
    }
    [a, b]
}

/// Under live terms the same program must show its secret bit, or the fixture (and the
/// private test built on it) proves nothing.
fn live_twins_differ(program: &str, channel: &str) {
    let [a, b] = twins(program, &terms(1, 60), |_: &Service, _: &JobTicket| {});
    let differences = differences(&a.transcript, &b.transcript, Disclosure::Private);
    assert!(
        differences.iter().any(|d| d.contains(channel)),
        "{program} did not open its channel ({channel}) in a live run: {differences:?}"
    );
}

fn failure_detail(observed: &Observed) -> String {
    failure(&observed.owner_events)
        .unwrap_or_else(|| panic!("no failure event: {:?}", observed.owner_events))
        .to_owned()
}

fn succeeded(observed: &Observed) -> bool {
    observed
        .owner_events
        .iter()
        .any(|e| matches!(e, OwnerEvent::Finished { .. }))
}

fn metric_count(observed: &Observed) -> usize {
    observed
        .owner_events
        .iter()
        .filter(|e| matches!(e, OwnerEvent::Metric { .. }))
        .count()
}

#[test]
fn an_honest_job_looks_the_same_on_both_datasets_live_or_private() {
    // Live: everything but times and memory (declared public for live jobs) is the same, the
    // queries included.
    let query = |service: &Service, ticket: &JobTicket| {
        let host = service.client();
        let session = QuerySession::open(&host, &service.policy(), ticket).expect("query session");
        let inputs = vec![0.5f32; 4 * ticket.header.feature_len()];
        session.query(4, inputs).expect("answer");
    };
    let [a, b] = twins("chiron_mlp", &terms(1, 60), query);
    assert!(succeeded(&a) && succeeded(&b));
    assert_indistinguishable(&a.transcript, &b.transcript, Disclosure::Live);
    assert!(
        a.transcript.frames.iter().any(|f| f.contains("Answer")),
        "the frame log records queries: {:?}",
        a.transcript.frames
    );
    // Private: times and memory too.
    let [a, b] = private_twins("chiron_mlp");
    assert!(succeeded(&a) && succeeded(&b));
}

#[test]
fn data_in_panics_and_trap_kinds_reaches_only_the_owner() {
    // The panic message carries the data; the owner may see it, the platform may not.
    let [a, b] = private_twins("hostile_leakpanic");
    assert!(!succeeded(&a) && !succeeded(&b));
    // A stack overflow on one bit, `unreachable` on the other: the owner sees which, the
    // platform sees "program failed" both times.
    let [a, b] = private_twins("hostile_leakclass");
    let (da, db) = (failure_detail(&a), failure_detail(&b));
    assert_ne!(da, db, "the fixture failed the same way on both bits");
}

#[test]
fn run_time_chosen_by_the_data_is_hidden_by_the_time_budget() {
    live_twins_differ("hostile_leaktime", "jobs ended at");
    let [a, b] = private_twins("hostile_leaktime");
    assert!(succeeded(&a) && succeeded(&b));
}

#[test]
fn memory_chosen_by_the_data_is_hidden_by_the_memory_budget() {
    live_twins_differ("hostile_leakmemory", "training enclave peaks");
    let [a, b] = private_twins("hostile_leakmemory");
    assert!(succeeded(&a) && succeeded(&b));
}

#[test]
fn runtime_tensors_chosen_by_the_data_are_hidden_by_the_memory_budget() {
    live_twins_differ("hostile_leaktensors", "training enclave peaks");
    let [a, b] = private_twins("hostile_leaktensors");
    assert!(succeeded(&a) && succeeded(&b));
}

#[test]
fn work_sized_by_reductions_and_concatenation_is_hidden_by_the_budgets() {
    live_twins_differ("hostile_leakshape", "training enclave peaks");
    let [a, b] = private_twins("hostile_leakshape");
    assert!(succeeded(&a) && succeeded(&b));
}

#[test]
fn model_size_and_save_count_chosen_by_the_data_are_hidden() {
    live_twins_differ("hostile_leaksize", "stored objects");
    let [a, b] = private_twins("hostile_leaksize");
    // The owner sees the two parameter counts; the platform sees one padded size.
    let parameters = |o: &Observed| {
        o.owner_events.iter().find_map(|e| match e {
            OwnerEvent::Finished { parameters, .. } => Some(*parameters),
            _ => None,
        })
    };
    assert_ne!(parameters(&a), parameters(&b));
    assert!(parameters(&a).is_some() && parameters(&b).is_some());
}

#[test]
fn metric_volume_chosen_by_the_data_is_hidden() {
    live_twins_differ("hostile_leakmetrics", "event streams");
    let [a, b] = private_twins("hostile_leakmetrics");
    // The owner still gets every metric: one on one bit, two hundred on the other.
    let mut counts = [metric_count(&a), metric_count(&b)];
    counts.sort_unstable();
    assert_eq!(counts, [1, 200]);
}

#[test]
fn nan_storms_and_handle_exhaustion_are_handled_the_same_on_both_datasets() {
    let [a, b] = private_twins("hostile_nanstorm");
    assert!(
        succeeded(&a) && succeeded(&b),
        "NaN weights are still a model"
    );
    let [a, _] = private_twins("hostile_handles");
    assert!(
        failure_detail(&a).contains("handle"),
        "{}",
        failure_detail(&a)
    );
}

#[test]
fn a_query_cannot_see_the_previous_one() {
    let check = |service: &Service, ticket: &JobTicket| {
        let host = service.client();
        let session = QuerySession::open(&host, &service.policy(), ticket).expect("query session");
        let len = 4 * ticket.header.feature_len();
        let probe = vec![0.25f32; len];
        let first = session.query(4, probe.clone()).expect("answer");
        for other in [0.0f32, 1.0, 0.75] {
            session.query(4, vec![other; len]).expect("answer");
        }
        let again = session.query(4, probe).expect("answer");
        assert_eq!(first, again, "an answer depended on earlier queries");
    };
    // The fixture also keeps the secret bit from training in its memory.
    let [a, b] = twins("hostile_querystate", &terms(1, 60), check);
    assert_indistinguishable(&a.transcript, &b.transcript, Disclosure::Live);
}

#[test]
fn answers_cannot_be_sized_by_the_query() {
    // The fixture answers with a shape chosen by the first input value: the wrong shapes
    // become unanswered queries for the owner, the same size on the wire as any answer.
    let ask = |service: &Service, ticket: &JobTicket| {
        let host = service.client();
        let session = QuerySession::open(&host, &service.policy(), ticket).expect("query session");
        let len = 4 * ticket.header.feature_len();
        for (value, answered) in [(0.1f32, true), (0.4, false), (0.9, false), (0.2, true)] {
            let answer = session.query(4, vec![value; len]);
            match answered {
                true => assert!(answer.is_ok(), "{value}: {answer:?}"),
                false => assert!(
                    matches!(answer, Err(ClientError::Unanswered)),
                    "{value}: {answer:?}"
                ),
            }
        }
    };
    let [observed, _] = twins("hostile_answersize", &terms(1, 60), ask);
    let answers: Vec<&String> = observed
        .transcript
        .frames
        .iter()
        .filter(|f| f.starts_with("host->enclave Query") || f.starts_with("enclave->host"))
        .skip_while(|f| !f.starts_with("host->enclave Query"))
        .collect();
    // Each query: the query, the query counter's write-ahead, the answer.
    assert_eq!(answers.len(), 12, "{answers:?}");
    for frames in answers.chunks(3) {
        assert_eq!(frames, answers[..3].to_vec(), "query frames differ");
    }
}

#[test]
fn native_work_sized_by_the_data_ends_at_the_time_budget() {
    // Both twins multiply matrices until they are stopped, milliseconds or a second a
    // product as the bit says: both fail, at the declared time, the same way.
    let [a, b] = private_twins("hostile_leaknative");
    for run in [&a, &b] {
        assert!(!succeeded(run));
        let detail = failure_detail(run);
        assert!(detail.contains("time budget"), "{detail}");
    }
}

#[test]
fn an_allocation_sized_by_the_data_is_refused_before_it_is_made() {
    // Live, the runtime's ceiling allows both outer products, which the tensor quota then
    // refuses: the peak memory shows which one was made.
    live_twins_differ("hostile_leakalloc", "training enclave peaks");
    // Private, the output is charged to the declared memory before it is allocated: both are
    // refused the same way, with nothing allocated and nothing printed.
    let [a, b] = private_twins("hostile_leakalloc");
    for run in [&a, &b] {
        assert!(!succeeded(run));
        let detail = failure_detail(run);
        assert!(detail.contains("runtime memory budget"), "{detail}");
    }
}

#[test]
fn a_model_that_trains_also_loads() {
    // On one bit the program saves more tensors than a model may hold. The job that saved
    // it fails at `save_model`, under the one outcome bit; the other's model loads and
    // answers. No job succeeds and then fails to load.
    let query = |service: &Service, ticket: &JobTicket| {
        let host = service.client();
        if let Ok(session) = QuerySession::open(&host, &service.policy(), ticket) {
            let inputs = vec![0.5f32; 2 * ticket.header.feature_len()];
            session
                .query(2, inputs)
                .expect("a model that trained answers");
        }
    };
    let [a, b] = twins(
        "hostile_leakload",
        &private_terms(1, PRIVATE_BUDGET_SECS),
        query,
    );
    assert_ne!(succeeded(&a), succeeded(&b), "the fixture acts on its bit");
    let (failed, passed) = if succeeded(&a) { (&b, &a) } else { (&a, &b) };
    let detail = failure_detail(failed);
    assert!(detail.contains("save_model"), "{detail}");
    assert!(
        passed
            .transcript
            .frames
            .iter()
            .any(|f| f.contains("Answer")),
        "the model that trained was served: {:?}",
        passed.transcript.frames
    );
}

#[test]
fn success_or_failure_is_the_only_bit_a_program_can_choose_to_show() {
    let [a, b] = twins(
        "hostile_leakoutcome",
        &private_terms(1, PRIVATE_BUDGET_SECS),
        |_: &Service, _: &JobTicket| {},
    );
    assert_ne!(succeeded(&a), succeeded(&b), "the fixture acts on its bit");
    // What the outcome itself shows: the final state (its log line, status text and end
    // frame) and whether a model and which job record were stored. Nothing else may differ:
    // not the event stream, the times or the memory.
    const OUTCOME: [&str; 6] = [
        "stored objects",
        "frames between host and enclaves",
        "host logs",
        "public job statuses",
        "final job states",
        "job state sequences",
    ];
    for difference in differences(&a.transcript, &b.transcript, Disclosure::Private) {
        assert!(
            OUTCOME.iter().any(|o| difference.starts_with(o)),
            "the platform learns more than the outcome: {difference}"
        );
    }
    let (fa, fb) = (&a.transcript.frames, &b.transcript.frames);
    assert_eq!(fa.len(), fb.len());
    assert_eq!(
        fa[..fa.len() - 1],
        fb[..fb.len() - 1],
        "frames before the end"
    );
    let others = |t: &chiron_tests::transcript::Transcript| {
        t.objects
            .iter()
            .filter(|(name, _)| {
                // The model, the job record and the log (its final line) carry the outcome.
                !["models/", "jobs/", "host.err"]
                    .iter()
                    .any(|outcome| name.contains(outcome))
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(others(&a.transcript), others(&b.transcript));
}

#[test]
fn query_time_chosen_by_the_query_is_hidden_by_the_answer_time() {
    let wasm = program_wasm("hostile_querytime");
    let [(data, canary), _] = twin_datasets(IMAGES);
    // Client-side latency of queries that make the program spin (first value 0.9) or not.
    let latencies = |terms: &TrainingTerms| {
        let mut seen = Vec::new();
        let observed = observe(
            &wasm,
            &data,
            terms,
            Duration::from_secs(120),
            |service: &Service, ticket: &JobTicket| {
                let host = service.client();
                let session =
                    QuerySession::open(&host, &service.policy(), ticket).expect("query session");
                let len = 4 * ticket.header.feature_len();
                for value in [0.9f32, 0.1, 0.9, 0.1] {
                    let started = std::time::Instant::now();
                    session.query(4, vec![value; len]).expect("answered");
                    seen.push((value > 0.5, started.elapsed()));
                }
            },
        );
        assert_no_canary(&observed.transcript, &canary);
        seen
    };
    let slowest = |seen: &[(bool, Duration)], spun: bool| {
        seen.iter()
            .filter(|(s, _)| *s == spun)
            .map(|(_, t)| *t)
            .max()
    };
    let fastest = |seen: &[(bool, Duration)], spun: bool| {
        seen.iter()
            .filter(|(s, _)| *s == spun)
            .map(|(_, t)| *t)
            .min()
    };
    // Live: the spinning queries are visibly slower.
    let live = latencies(&terms(1, 60));
    assert!(
        fastest(&live, true) > slowest(&live, false).map(|t| t + Duration::from_millis(100)),
        "the fixture did not slow its answers down: {live:?}"
    );
    // Private, answers at one second: every query takes the declared time.
    let private = latencies(&private_terms(1, PRIVATE_BUDGET_SECS));
    eprintln!("query latencies (spun, time): live {live:?}, private {private:?}");
    let all = |f: fn(&(bool, Duration)) -> Duration| private.iter().map(f);
    let (min, max) = (
        all(|(_, t)| *t).min().expect("queries"),
        all(|(_, t)| *t).max().expect("queries"),
    );
    assert!(min >= Duration::from_secs(1), "{private:?}");
    assert!(
        max - min < Duration::from_millis(100),
        "answer times depend on the query: {private:?}"
    );
}

/// Both twins as a distributed job of two workers and a parameter server.
fn distributed_twins(program: &str, terms: &TrainingTerms) -> [Observed; 2] {
    let wasm = program_wasm(program);
    twin_datasets(IMAGES).map(|(data, canary)| {
        let observed = observe_distributed(&wasm, &data, terms, (2, 64), Duration::from_secs(120));
        assert_no_canary(&observed.transcript, &canary);
        observed
    })
}

/// A private job whose program asks to register more than the exchange's messages carry
/// fails, and its workers still keep the whole schedule: a program cannot end a connection's
/// traffic at a tick of its choosing by growing its parameters then.
#[test]
fn a_model_too_large_for_a_paced_exchange_fails_the_job_and_keeps_the_schedule() {
    let terms = private_terms(1, PRIVATE_BUDGET_SECS);
    let [(data, _), _] = twin_datasets(IMAGES);
    let observe = |program: &str| {
        observe_distributed(
            &program_wasm(program),
            &data,
            &terms,
            (2, 64),
            Duration::from_secs(120),
        )
    };
    // The CNN's 1 647 KiB of parameters do not fit 64 KiB messages; this fixture's do.
    let too_large = observe("chiron_cnn");
    let fits = observe("hostile_leaksteps");
    assert!(!succeeded(&too_large) && succeeded(&fits));
    let failure = too_large.owner_events.iter().find_map(|e| match e {
        OwnerEvent::Failed { detail } => Some(detail.clone()),
        _ => None,
    });
    assert!(
        failure
            .as_deref()
            .is_some_and(|r| r.contains("at least 1648 KiB")),
        "{:?}",
        too_large.owner_events
    );
    let (a, b) = (&too_large.transcript, &fits.transcript);
    assert_eq!(
        a.peer_traffic.len(),
        4,
        "two connections, both directions: {:?}",
        a.peer_traffic
    );
    // The same records on every connection, at the same times to the quantum.
    let seen = peer_traffic_differences(a, b, Disclosure::Private);
    assert!(
        seen.is_empty(),
        "the failed job's traffic differs: {seen:?}"
    );
}

#[test]
fn a_distributed_job_steps_by_the_data_unseen_when_its_exchange_is_paced() {
    // Live (unpaced), the exchange carries one round per step, so rank 0's connection
    // shows how many steps the secret bit asked for: the harness sees the channel.
    let [a, b] = distributed_twins("hostile_leaksteps", &terms(1, 60));
    assert!(succeeded(&a) && succeeded(&b));
    let seen = differences(&a.transcript, &b.transcript, Disclosure::Live);
    assert!(
        seen.iter()
            .any(|d| d.contains("enclave-to-enclave traffic")),
        "a live exchange did not show the step count: {seen:?}"
    );
    // Private (paced), every connection carries the schedule's messages and nothing else.
    let [a, b] = distributed_twins("hostile_leaksteps", &private_terms(1, PRIVATE_BUDGET_SECS));
    assert!(succeeded(&a) && succeeded(&b));
    assert_indistinguishable(&a.transcript, &b.transcript, Disclosure::Private);
    assert_eq!(
        a.transcript.peer_traffic.len(),
        4,
        "two connections, both directions: {:?}",
        a.transcript.peer_traffic
    );
    // The server's checkpoints (one every 20 ticks) are part of what was compared.
    let checkpoints = |o: &Observed| {
        o.transcript
            .frames
            .iter()
            .filter(|f| f.contains("Checkpoint"))
            .count()
    };
    assert!(checkpoints(&a) >= 5, "{:?}", a.transcript.frames);
    assert_eq!(checkpoints(&a), checkpoints(&b));
    for run in [&a, &b] {
        let (_, ended) = run.transcript.states.last().expect("states");
        assert!(*ended >= Duration::from_secs(PRIVATE_BUDGET_SECS.into()));
    }
}
