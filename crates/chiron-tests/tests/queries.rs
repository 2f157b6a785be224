//! The query path's promises to the owner: only the holder of the job's query token gets
//! answers, no more than the declared budget, each the same size whatever was predicted.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::time::Duration;

use chiron_client::owner::{QuerySession, TrainingTerms};
use chiron_proto::api::JobState;
use chiron_proto::owner::AnswerPolicy;
use chiron_tests::*;

#[test]
fn queries_need_the_token_and_stop_at_the_budget() {
    let service = Service::start();
    let data = iris();
    let terms = TrainingTerms {
        query_budget: 12,
        answers: AnswerPolicy::TopK(2),
        ..terms(30, 120)
    };
    let ticket =
        start_job(&service, &program_wasm("chiron_mlp"), &data, &terms).expect("job starts");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(300));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let inputs = iris_inputs(&data, Some(20));
    let features = |n: usize| inputs.features[..n * 4].to_vec();
    let host = service.client();

    // Without the token (the platform, or anyone but the owner), no answer.
    let mut stolen = ticket.clone();
    stolen.query_token[0] ^= 1;
    let thief = QuerySession::open(&host, &service.policy(), &stolen).expect("attests");
    let err = thief
        .query(1, features(1))
        .expect_err("no token, no answer");
    assert!(err.to_string().contains("query not authorised"), "{err}");

    // The owner gets top-2 answers of a fixed width, up to the budget of 12 inputs.
    let session = QuerySession::open(&host, &service.policy(), &ticket).expect("attests");
    for _ in 0..2 {
        let answer = session.query(5, features(5)).expect("within budget");
        assert_eq!(answer.classes.len(), 5 * 2);
        assert!(answer.classes.iter().all(|&c| c < 3));
    }
    let err = session.query(5, features(5)).expect_err("over budget");
    assert!(err.to_string().contains("query budget exhausted"), "{err}");
    // What is left of the budget can still be used.
    assert_eq!(
        session
            .query(2, features(2))
            .expect("last two")
            .classes
            .len(),
        4
    );
    let err = session.query(1, features(1)).expect_err("budget spent");
    assert!(err.to_string().contains("query budget exhausted"), "{err}");
}
