//! Distributed training: one model on several training enclaves ("workers") through a
//! parameter-server enclave, all real processes on loopback, attesting each other.
#![allow(clippy::expect_used)] // test helpers: a failed step is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use chiron_attest::attester::sim::SimPlatform;
use chiron_attest::context_digest;
use chiron_channel::{LocalIdentity, PeerExpectation, RecordConfig};
use chiron_client::convert;
use chiron_client::owner::EventCursor;
use chiron_crypto::DataKey;
use chiron_proto::api::JobState;
use chiron_proto::evidence::Role;
use chiron_proto::exchange::{Rule, ToServer, ToWorker, pad, unpad};
use chiron_proto::owner::{
    AnswerPolicy, ExchangeTerms, PARAMETER_SERVER_INFO, ParameterServerRequest, Rounds, TRAIN_INFO,
    TrainRequest, WorkerPlace,
};
use chiron_proto::wire::{EnclaveFrame, HostFrame};
use chiron_tests::*;

/// The exchange size the example CNN's manifest declares, which the owner's client uses by
/// default: these tests fail if its parameters outgrow it.
fn cnn_message_kib(wasm: &[u8]) -> u32 {
    let manifest = chiron_proto::manifest::read_manifest(wasm)
        .expect("a well-formed manifest")
        .expect("the CNN declares one");
    let declared = manifest.needs().exchange_kib.expect("an exchange size");
    // What `chiron train` asks for when the owner gives no size (the model size unused).
    assert_eq!(
        chiron_client::owner::exchange_message_kib(&manifest.needs(), 5),
        declared.get()
    );
    declared.get()
}

/// Accuracy on the first 2 000 Fashion-MNIST test images, through black-box queries.
fn test_accuracy(service: &Service, ticket: &chiron_client::owner::JobTicket) -> f64 {
    let (images, labels) = fashion_test();
    let test = convert::load_idx_inputs(&images, &labels, Some(2000)).expect("test set");
    query_accuracy(service, ticket, &test.features, &test.labels, 200).expect("queries")
}

#[test]
fn two_workers_train_the_cnn_as_well_as_one() {
    let service = Service::start();
    let data = fashion_subset(12_000);
    let mut terms = terms(2, 600);
    terms.seed = Some([3; 32]);
    let wasm = program_wasm("chiron_cnn");

    let alone = start_job(&service, &wasm, &data, &terms).expect("one-worker job starts");
    let (state, events) = wait(&service, &alone, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let one = test_accuracy(&service, &alone);

    let together = start_distributed_job(&service, &wasm, &data, &terms, 2, cnn_message_kib(&wasm))
        .expect("the parameter server and both workers attest");
    let (state, events) = wait(&service, &together, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // Rank 0 got, and decrypted, only its half of the 10 800 training examples (and all
    // the validation examples).
    assert!(matches!(
        events.first(),
        Some(chiron_proto::owner::OwnerEvent::Started {
            train_count: 5_400,
            valid_count: 1200
        })
    ));
    let two = test_accuracy(&service, &together);

    // Asynchronous: each worker's step applied as it comes, none more than 2 updates stale.
    let apart = start_distributed_job_with(
        &service,
        &wasm,
        &data,
        &terms,
        2,
        cnn_message_kib(&wasm),
        ExchangeOptions {
            rounds: Rounds::Asynchronous { max_staleness: 2 },
            ..ExchangeOptions::default()
        },
    )
    .expect("an asynchronous job starts");
    let (state, events) = wait(&service, &apart, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let asynchronous = test_accuracy(&service, &apart);
    eprintln!(
        "one worker {one:.4}, two workers {two:.4}, two asynchronous workers {asynchronous:.4}"
    );
    // Synchronous rounds are deterministic for a seed (85.65% and 87.85% for one and two
    // workers here); asynchronous ones apply the steps in the order they arrive, which the
    // scheduler picks (85.5%, 83.5% and 82.2% in three runs here). Two workers may do
    // better than one on this subset, not worse by more than the tolerance.
    for (how, accuracy, tolerance) in [
        ("synchronous", two, 0.02),
        ("asynchronous", asynchronous, 0.05),
    ] {
        assert!(accuracy > 0.75, "{how} workers learned: {accuracy}");
        assert!(
            accuracy >= one - tolerance,
            "one worker {one}, two {how} workers {accuracy}"
        );
    }
}

#[test]
fn the_mlp_trains_on_a_csv_table_with_three_workers() {
    iris_trains_distributed(&Service::start(), 3);
}

#[test]
fn a_model_too_large_for_the_exchange_fails_the_job_with_a_reason() {
    let service = Service::start();
    let ticket = start_distributed_job(
        &service,
        &program_wasm("chiron_cnn"),
        &fashion_subset(600),
        &terms(1, 120),
        2,
        64,
    )
    .expect("job starts");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Failed, "{events:?}");
    let detail = failure(&events).expect("the owner is told why");
    assert!(detail.contains("do not fit"), "{detail}");
    // The size the CNN's 421 642 parameters need, which its manifest declares with headroom.
    assert!(detail.contains("at least 1648 KiB"), "{detail}");
}

/// The simulated platform of `service`, as an enclave of `measurement` would hold it.
fn platform(service: &Service, measurement: [u8; 32]) -> Arc<SimPlatform> {
    Arc::new(
        SimPlatform::load_or_create(service.state_dir().join("sim-platform.key"), measurement)
            .expect("the platform key"),
    )
}

fn enclave_measurement() -> [u8; 32] {
    chiron_attest::measure_file(bin_dir().join("chiron-enclave")).expect("measure")
}

fn message(message: &ToServer) -> Vec<u8> {
    pad(message, 64 * 1024).expect("fits")
}

/// A parameter-server enclave process for `job_id`, attested and started as the owner and
/// the host would, for two workers and 64 KiB messages; and the address it listens on.
fn start_server(service: &Service, job_id: &str) -> (RawEnclave, String) {
    start_server_with(service, job_id, Rounds::Synchronous)
}

/// [`start_server`], with `rounds`.
fn start_server_with(service: &Service, job_id: &str, rounds: Rounds) -> (RawEnclave, String) {
    let mut server = RawEnclave::spawn(service, "ps");
    let key = server.attest(service, Role::ParameterServer, job_id);
    let request = ParameterServerRequest {
        exchange: ExchangeTerms {
            workers: 2,
            message_kib: 64,
            pace: None,
            rounds,
        },
        peer_policy: service.policy_spec(),
        time_budget_secs: 120,
        checkpoint_every: 0,
    };
    let plaintext = postcard::to_allocvec(&request).expect("encodes");
    let (sealed, _) =
        chiron_crypto::seal_to_enclave(&key, PARAMETER_SERVER_INFO, job_id.as_bytes(), &plaintext)
            .expect("seals");
    server.send(&HostFrame::StartParameterServer {
        job_id: job_id.to_owned(),
        sealed_request: sealed,
    });
    let EnclaveFrame::PeersAt { port } = server.recv() else {
        panic!("the server did not say where it listens");
    };
    (server, format!("127.0.0.1:{port}"))
}

type WorkerEnd = (
    chiron_channel::RecordReader<tokio::io::ReadHalf<chiron_channel::AttestedStream>>,
    chiron_channel::RecordWriter<tokio::io::WriteHalf<chiron_channel::AttestedStream>>,
);

/// Workers `0..count` of the job whose context is `context`, admitted by the server at
/// `address` and having said hello.
async fn admitted_workers(
    service: &Service,
    address: &str,
    context: [u8; 32],
    count: u32,
) -> Vec<WorkerEnd> {
    let mut workers = Vec::new();
    for rank in 0..count {
        workers.push(admitted_worker(service, address, context, rank).await);
    }
    workers
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_parameter_server_admits_only_its_jobs_workers_and_averages_their_gradients() {
    let service = Service::start();
    let job_id = "a-distributed-job";
    let context = context_digest(job_id);
    let (mut server, address) = start_server(&service, job_id);

    runtime().block_on(async {
        let ours = platform(&service, enclave_measurement());
        let expected = PeerExpectation::new(service.policy(), Role::ParameterServer, context);
        let impostors = [
            (
                "a worker of another job",
                LocalIdentity::new(ours.clone(), Role::Worker, context_digest("another-job")),
            ),
            (
                "a worker of another build",
                LocalIdentity::new(platform(&service, [9; 32]), Role::Worker, context),
            ),
            (
                "a lone training enclave",
                LocalIdentity::new(ours.clone(), Role::Train, context),
            ),
        ];
        for (what, identity) in &impostors {
            let refused = chiron_channel::connect(&address, identity, &expected).await;
            assert!(refused.is_err(), "{what} was admitted");
        }

        let mut workers = admitted_workers(&service, &address, context, 2).await;
        let mut round = async |messages: [ToServer; 2]| {
            for ((_, writer), m) in workers.iter_mut().zip(&messages) {
                writer.send_message(&message(m)).await.expect("sent");
            }
            let mut answers = Vec::new();
            for (reader, _) in &mut workers {
                let bytes = reader.recv_message(64 * 1024).await.expect("answered");
                answers.push(unpad::<ToWorker>(&bytes).expect("decodes"));
            }
            answers
        };
        // Rank 0's values start the job, whatever rank 1 registers.
        let answers = round([
            ToServer::Register {
                optimizer: 5,
                values: vec![vec![1.0, 2.0, 3.0], vec![4.0]],
            },
            ToServer::Register {
                optimizer: 5,
                values: vec![vec![9.0; 3], vec![9.0]],
            },
        ])
        .await;
        for answer in answers {
            let ToWorker::Parameters(values) = answer else {
                panic!("{answer:?}");
            };
            assert_eq!(values, vec![vec![1.0, 2.0, 3.0], vec![4.0]]);
        }
        // Plain SGD at 0.5, scaled by the two batches averaged (the linear scaling rule):
        // the mean gradient (2, 2, 2) moves the first parameter by -2; the second took
        // part in neither pass and stays.
        let sgd = Rule {
            tag: 0,
            values: [0.5, 0.0, 0.0, 0.0, 0.0],
        };
        let step = |gradient: f32| ToServer::Step {
            optimizer: 5,
            rule: sgd,
            max_grad_norm: None,
            gradients: vec![Some(vec![gradient; 3]), None],
        };
        for answer in round([step(1.0), step(3.0)]).await {
            let ToWorker::Parameters(values) = answer else {
                panic!("{answer:?}");
            };
            assert_eq!(values, vec![vec![-1.0, 0.0, 1.0], vec![4.0]]);
        }
        for (_, writer) in &mut workers {
            writer
                .send_message(&message(&ToServer::Done))
                .await
                .expect("done");
        }
    });
    assert!(matches!(server.recv(), EnclaveFrame::Served));
}

#[test]
fn workers_out_of_step_end_the_job_on_every_worker() {
    let service = Service::start();
    let job_id = "an-out-of-step-job";
    let context = context_digest(job_id);
    let (mut server, address) = start_server(&service, job_id);
    runtime().block_on(async {
        let mut workers = admitted_workers(&service, &address, context, 2).await;
        // One registers an optimizer while the other already steps: the program diverged.
        let messages = [
            ToServer::Register {
                optimizer: 1,
                values: vec![vec![0.0; 4]],
            },
            ToServer::Abandon,
        ];
        for ((_, writer), m) in workers.iter_mut().zip(&messages) {
            writer.send_message(&message(m)).await.expect("sent");
        }
        for (reader, _) in &mut workers {
            let bytes = reader.recv_message(64 * 1024).await.expect("told");
            let answer = unpad::<ToWorker>(&bytes).expect("decodes");
            assert!(
                matches!(&answer, ToWorker::Refused(reason) if reason.contains("worker 1 failed")),
                "{answer:?}"
            );
        }
    });
    assert!(matches!(
        server.recv(),
        EnclaveFrame::Failed { public } if public == "parameter server ended the job"
    ));
}

#[test]
fn a_lost_worker_is_replaced_and_let_go_once_rank_0_is_done() {
    let service = Service::start();
    let job_id = "a-job-that-loses-a-worker";
    let context = context_digest(job_id);
    let (mut server, address) = start_server(&service, job_id);
    runtime().block_on(async {
        let mut workers = admitted_workers(&service, &address, context, 2).await;
        let register = ToServer::Register {
            optimizer: 1,
            values: vec![vec![1.0, 2.0, 3.0]],
        };
        for (_, writer) in &mut workers {
            writer
                .send_message(&message(&register))
                .await
                .expect("sent");
        }
        for (reader, _) in &mut workers {
            reader.recv_message(64 * 1024).await.expect("answered");
        }
        // Each step of one worker takes 0.5 off every value (of two, scaled to 1.0).
        let step = sgd_half_step(3);
        let (mut rank0_reader, mut rank0_writer) = workers.remove(0);
        let mut rank0_step = async |expected: Vec<f32>| {
            rank0_writer
                .send_message(&message(&step))
                .await
                .expect("sent");
            let bytes = rank0_reader
                .recv_message(64 * 1024)
                .await
                .expect("answered");
            match unpad::<ToWorker>(&bytes).expect("decodes") {
                ToWorker::Parameters(values) => assert_eq!(values, vec![expected]),
                other => panic!("{other:?}"),
            }
        };
        // Worker 1 is lost: the rounds go on with rank 0 alone.
        drop(workers);
        rank0_step(vec![0.5, 1.5, 2.5]).await;

        // A replacement of rank 1 attests as the first one did and registers what its
        // program starts from; the server takes it in at the next round.
        let mut replacement = admitted_worker(&service, &address, context, 1).await;
        replacement
            .1
            .send_message(&message(&register))
            .await
            .expect("sent");
        // Its hello may reach the rounds only after the round under way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        rank0_step(vec![0.0, 1.0, 2.0]).await;
        // It catches up: the parameters of the round it joins, not its own values.
        rank0_step(vec![-0.5, 0.5, 1.5]).await;
        let bytes = replacement
            .0
            .recv_message(64 * 1024)
            .await
            .expect("answered");
        assert!(matches!(unpad::<ToWorker>(&bytes).expect("decodes"),
                ToWorker::Parameters(values) if values == vec![vec![-0.5, 0.5, 1.5]]));
        // A second worker for a rank already taking part is turned away at the next round.
        let mut duplicate = admitted_worker(&service, &address, context, 1).await;
        duplicate
            .1
            .send_message(&message(&step))
            .await
            .expect("sent");
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Both step; then rank 0 is done, and the replacement, behind it, is let go.
        replacement
            .1
            .send_message(&message(&step))
            .await
            .expect("sent");
        rank0_step(vec![-1.5, -0.5, 0.5]).await;
        replacement
            .0
            .recv_message(64 * 1024)
            .await
            .expect("answered");
        assert!(duplicate.0.recv_message(64 * 1024).await.is_err());
        rank0_writer
            .send_message(&message(&ToServer::Done))
            .await
            .expect("done");
        replacement
            .1
            .send_message(&message(&step))
            .await
            .expect("sent");
        let bytes = replacement.0.recv_message(64 * 1024).await.expect("told");
        assert!(matches!(
            unpad::<ToWorker>(&bytes).expect("decodes"),
            ToWorker::Released
        ));
    });
    assert!(matches!(server.recv(), EnclaveFrame::Served));
}

#[test]
fn an_asynchronous_server_applies_steps_alone_and_drops_stale_ones() {
    let service = Service::start();
    let job_id = "an-asynchronous-job";
    let context = context_digest(job_id);
    let (mut server, address) =
        start_server_with(&service, job_id, Rounds::Asynchronous { max_staleness: 0 });
    runtime().block_on(async {
        let mut workers = admitted_workers(&service, &address, context, 2).await;
        let register = ToServer::Register {
            optimizer: 1,
            values: vec![vec![1.0, 2.0]],
        };
        let step = sgd_half_step(2);
        let mut exchange = async |worker: usize, m: &ToServer| {
            let (reader, writer) = &mut workers[worker];
            writer.send_message(&message(m)).await.expect("sent");
            let bytes = reader.recv_message(64 * 1024).await.expect("answered");
            unpad::<ToWorker>(&bytes).expect("decodes")
        };
        for worker in 0..2 {
            assert!(matches!(
                exchange(worker, &register).await,
                ToWorker::Parameters(_)
            ));
        }
        // Worker 0's step is applied alone, unscaled: 0.5 off each value.
        assert!(matches!(
            exchange(0, &step).await,
            ToWorker::Parameters(v) if v == vec![vec![0.5, 1.5]]
        ));
        // Worker 1 computed on the parameters from before it: one update stale, over the
        // bound of 0. Dropped, and told so, with the current parameters.
        assert!(matches!(
            exchange(1, &step).await,
            ToWorker::Stale(v) if v == vec![vec![0.5, 1.5]]
        ));
        // Now current, its next step counts.
        assert!(matches!(
            exchange(1, &step).await,
            ToWorker::Parameters(v) if v == vec![vec![0.0, 1.0]]
        ));
        for (_, writer) in &mut workers {
            writer
                .send_message(&message(&ToServer::Done))
                .await
                .expect("done");
        }
    });
    assert!(matches!(server.recv(), EnclaveFrame::Served));
}

/// A step of optimizer 1 by plain SGD at 0.5 on a gradient of `len` ones.
fn sgd_half_step(len: usize) -> ToServer {
    ToServer::Step {
        optimizer: 1,
        rule: Rule {
            tag: 0,
            values: [0.5, 0.0, 0.0, 0.0, 0.0],
        },
        max_grad_norm: None,
        gradients: vec![Some(vec![1.0; len])],
    }
}

/// A worker of rank `rank`, attested to the server and past its hello.
async fn admitted_worker(
    service: &Service,
    address: &str,
    context: [u8; 32],
    rank: u32,
) -> WorkerEnd {
    let ours = platform(service, enclave_measurement());
    let expected = PeerExpectation::new(service.policy(), Role::ParameterServer, context);
    let identity = LocalIdentity::new(ours, Role::Worker, context);
    let stream = chiron_channel::connect(address, &identity, &expected)
        .await
        .expect("a worker of this job and build is admitted");
    let (reader, mut writer) = stream.into_records(RecordConfig::default());
    writer
        .send_message(&message(&ToServer::Hello { rank, tick: 0 }))
        .await
        .expect("hello");
    (reader, writer)
}

/// The iris table, encrypted: its key and container.
fn encrypted_iris() -> (DataKey, Vec<u8>) {
    let data = iris();
    let data_key = DataKey::generate();
    let mut container = Vec::new();
    chiron_crypto::encrypt_dataset(
        &data_key,
        &data.header,
        data.body.as_slice(),
        &mut container,
    )
    .expect("encrypts");
    (data_key, container)
}

/// A worker enclave process, attested and started as the owner and the host would, as rank
/// `rank` of a live two-worker job on `container`, told its server is at `address`; and
/// the owner's event key.
fn start_raw_worker(
    service: &Service,
    job_id: &str,
    (data_key, container): (&DataKey, &[u8]),
    wasm: &[u8],
    rank: u32,
    address: &str,
) -> (RawEnclave, chiron_crypto::ResponseKey) {
    let mut worker = RawEnclave::spawn(service, "worker");
    let key = worker.attest(service, Role::Worker, job_id);
    let request = worker_request(service, data_key, wasm, rank);
    let plaintext = postcard::to_allocvec(&request).expect("encodes");
    let (sealed, event_key) =
        chiron_crypto::seal_to_enclave(&key, TRAIN_INFO, job_id.as_bytes(), &plaintext)
            .expect("seals");
    worker.send(&HostFrame::StartTraining {
        job_id: job_id.to_owned(),
        sealed_request: sealed,
        program: wasm.to_vec(),
        dataset_len: container.len() as u64,
        parameter_server: Some(address.to_owned()),
    });
    worker.send(&HostFrame::DatasetPart(container.to_vec()));
    (worker, event_key)
}

/// The owner's request to worker `rank` of a live two-worker job.
fn worker_request(service: &Service, data_key: &DataKey, wasm: &[u8], rank: u32) -> TrainRequest {
    TrainRequest {
        data_key: data_key.to_bytes(),
        program_digest: sha256(wasm),
        epochs: 5,
        time_budget_secs: 60,
        seed: [1; 32],
        answers: AnswerPolicy::Label,
        query_budget: 100,
        query_token_digest: [2; 32],
        private: None,
        distributed: Some(WorkerPlace {
            rank,
            exchange: ExchangeTerms {
                workers: 2,
                message_kib: 64,
                pace: None,
                rounds: Rounds::Synchronous,
            },
            peer_policy: service.policy_spec(),
        }),
        keep_last_save: true,
    }
}

#[test]
fn a_worker_ticket_opens_only_untampered_and_for_its_job() {
    let service = Service::start();
    let job_id = "a-job-whose-worker-leaves-a-ticket";
    let (data_key, container) = encrypted_iris();
    let wasm = program_wasm("chiron_mlp");
    // Nothing listens there: every worker below fails at its exchange, if it gets that far.
    let nowhere = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        listener.local_addr().expect("address").to_string()
    };
    let (mut first, _) = start_raw_worker(
        &service,
        job_id,
        (&data_key, &container),
        &wasm,
        1,
        &nowhere,
    );
    let ticket = loop {
        match first.recv() {
            EnclaveFrame::WorkerTicket { sealed } => break sealed,
            EnclaveFrame::Event { .. } => {}
            other => panic!("no ticket before {other:?}"),
        }
    };

    // Each replacement gets the ticket it is given, and reports only how it ended.
    let resume = |job_id: &str, ticket: Vec<u8>| {
        let mut replacement = RawEnclave::spawn(&service, "worker");
        replacement.send(&HostFrame::ResumeWorker {
            job_id: job_id.to_owned(),
            ticket,
            program: wasm.clone(),
            dataset_len: container.len() as u64,
            parameter_server: nowhere.clone(),
            events_from: 0,
        });
        replacement.send(&HostFrame::DatasetPart(container.clone()));
        replacement.recv()
    };
    let mut tampered = ticket.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    for (what, job, ticket) in [
        ("another job's ticket", "another-job", ticket.clone()),
        ("a tampered ticket", job_id, tampered),
        ("no ticket", job_id, Vec::new()),
    ] {
        let end = resume(job, ticket);
        assert!(
            matches!(&end, EnclaveFrame::Failed { public } if public == "worker ticket failed authentication"),
            "{what}: {end:?}"
        );
    }
    // The true ticket opens: the replacement decrypts the data and goes for the exchange,
    // with no event for the owner (the first worker used the owner's key).
    let end = resume(job_id, ticket);
    assert!(
        matches!(&end, EnclaveFrame::Failed { public } if public == "parameter exchange failed"),
        "{end:?}"
    );
}

#[test]
fn a_worker_refuses_a_parameter_server_of_another_job() {
    let service = Service::start();
    let job_id = "a-job-with-an-impostor-server";
    let (data_key, container) = encrypted_iris();
    let wasm = program_wasm("chiron_mlp");

    // A parameter server of the right build and platform, attesting for another job.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let address = listener.local_addr().expect("address").to_string();
    let impostor = platform(&service, enclave_measurement());
    let policy = service.policy();
    let server = std::thread::spawn(move || {
        runtime().block_on(async {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let identity = LocalIdentity::new(
                impostor,
                Role::ParameterServer,
                context_digest("another-job"),
            );
            let workers = PeerExpectation::new(policy, Role::Worker, context_digest(job_id));
            chiron_channel::accept(&listener, &identity, &workers)
                .await
                .is_ok()
        })
    });

    let (mut worker, event_key) = start_raw_worker(
        &service,
        job_id,
        (&data_key, &container),
        &wasm,
        0,
        &address,
    );
    let started = Instant::now();
    let end = loop {
        match worker.recv() {
            EnclaveFrame::Event { seq, ciphertext } => {
                let plaintext = event_key
                    .open(seq, job_id.as_bytes(), &ciphertext)
                    .expect("the owner's event");
                let event =
                    chiron_proto::owner::OwnerEvent::from_padded(&plaintext).expect("an event");
                if let chiron_proto::owner::OwnerEvent::Failed { detail } = event {
                    assert!(detail.contains("parameter server was refused"), "{detail}");
                }
            }
            // Rank 0 of a live job hands the host its ticket before its program runs.
            EnclaveFrame::WorkerTicket { .. } => {}
            end => break end,
        }
    };
    assert!(
        matches!(&end, EnclaveFrame::Failed { public } if public == "parameter exchange failed"),
        "{end:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !server.join().expect("the impostor ran"),
        "the impostor's handshake completed"
    );
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Waits, `within` at most, until a live job's rank 0 reports its first epoch's metrics
/// (so its optimizer has stepped).
fn until_an_epoch_is_done(
    service: &Service,
    ticket: &chiron_client::owner::JobTicket,
    within: Duration,
) {
    let host = service.client();
    let deadline = Instant::now() + within;
    loop {
        let (_, events) = ticket
            .events(&host, &mut EventCursor::default())
            .expect("events");
        if events
            .iter()
            .any(|e| matches!(e, chiron_proto::owner::OwnerEvent::Metric { .. }))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no progress: {events:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A two-worker CNN job on 6 000 images for `epochs` in `budget_secs`, once its first epoch
/// is done; and its workers' processes, rank 0 first (they are started in rank order).
fn distributed_job_under_way(
    service: &Service,
    epochs: u32,
    budget_secs: u32,
) -> (chiron_client::owner::JobTicket, Vec<u32>) {
    let wasm = program_wasm("chiron_cnn");
    let ticket = start_distributed_job(
        service,
        &wasm,
        &fashion_subset(6000),
        &terms(epochs, budget_secs),
        2,
        cnn_message_kib(&wasm),
    )
    .expect("job starts");
    until_an_epoch_is_done(service, &ticket, Duration::from_secs(300));
    let mut workers = enclave_processes(service.pid(), &["worker"]);
    workers.sort_unstable();
    assert_eq!(workers.len(), 2, "two worker processes");
    (ticket, workers)
}

/// A private two-worker MLP job on Iris, 40 epochs in `budget_secs`, some 4 s in; and its
/// workers' processes, rank 0 first. 40 epochs take about 320 rounds, under a fifth of a
/// 40 s schedule's 1 600 ticks. A private job's events are held to its end: the time, not
/// an event, says it is under way (some 110 rounds in on this machine).
fn private_job_under_way(
    service: &Service,
    budget_secs: u32,
) -> (chiron_client::owner::JobTicket, Vec<u32>) {
    let terms = chiron_tests::transcript::private_terms(40, budget_secs);
    let ticket =
        start_distributed_job(service, &program_wasm("chiron_mlp"), &iris(), &terms, 2, 64)
            .expect("job starts");
    std::thread::sleep(Duration::from_secs(4));
    let mut workers = enclave_processes(service.pid(), &["worker"]);
    workers.sort_unstable();
    assert_eq!(workers.len(), 2, "two worker processes");
    (ticket, workers)
}

fn kill(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
}

#[test]
fn a_killed_rank_0_is_replaced_and_its_replacement_tells_the_owner_and_seals_the_model() {
    use chiron_proto::owner::OwnerEvent;
    let service = Service::start();
    let (ticket, workers) = distributed_job_under_way(&service, 3, 600);
    kill(workers[0]);
    let (state, events) = wait(&service, &ticket, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let log = service.stderr();
    assert!(
        log.contains("worker 0 lost; a replacement takes its place"),
        "{log}"
    );
    // The owner reads one stream: the lost rank 0's events, then its replacement's, each
    // authenticated at its position (the replacement's under its own key, which the
    // client derived from the owner's and the salt).
    let resumed = events
        .iter()
        .position(|e| matches!(e, OwnerEvent::Resumed))
        .unwrap_or_else(|| panic!("no Resumed event: {events:?}"));
    assert!(
        events[..resumed]
            .iter()
            .any(|e| matches!(e, OwnerEvent::Metric { .. })),
        "the first rank 0 reported an epoch before it was killed: {events:?}"
    );
    assert!(matches!(
        events.get(resumed + 1),
        Some(OwnerEvent::Started { .. })
    ));
    assert!(matches!(events.last(), Some(OwnerEvent::Finished { .. })));
    // The replacement trained all its epochs again, on the parameters trained so far: a
    // point per epoch, the replacement's.
    let history = chiron_client::history::History::from_events(&events);
    let accuracy_points = history
        .series()
        .into_iter()
        .find(|(name, _)| name == "valid_accuracy")
        .map(|(_, points)| points.len());
    assert_eq!(accuracy_points, Some(3), "{events:?}");
    let accuracy = test_accuracy(&service, &ticket);
    assert!(accuracy > 0.75, "accuracy {accuracy}");
}

#[test]
fn a_replacement_has_only_what_is_left_of_the_jobs_time_budget() {
    const BUDGET: Duration = Duration::from_secs(30);
    let service = Service::start();
    let created = Instant::now();
    // More epochs than the budget allows: the job runs to its deadline.
    let (ticket, workers) = distributed_job_under_way(&service, 1000, BUDGET.as_secs() as u32);
    // Well into the budget, so that a fresh one would outlast it by far.
    let kill_at = Duration::from_secs(12);
    std::thread::sleep(kill_at.saturating_sub(created.elapsed()));
    kill(workers[0]);
    let killed = created.elapsed();
    let (state, events) = wait(&service, &ticket, Duration::from_secs(300));
    let ended = created.elapsed();
    let log = service.stderr();
    assert!(
        log.contains("worker 0 lost; a replacement takes its place"),
        "{log}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, chiron_proto::owner::OwnerEvent::Resumed)),
        "{state:?} {events:?}"
    );
    // The budget counts from the first worker's start, a little after the job was
    // created; a replacement given a budget of its own would run past `killed + BUDGET`.
    assert!(
        ended < killed + BUDGET,
        "killed {killed:?} in, the job ended {ended:?} after it was created ({state:?})"
    );
}

#[test]
fn a_killed_rank_0_of_a_private_job_fails_it_promptly() {
    let service = Service::start();
    // Rank 0 of a private job hands over no ticket: its event stream has a fixed length,
    // which a replacement could not keep.
    let (ticket, workers) = private_job_under_way(&service, 40);
    kill(workers[0]);
    let killed_at = Instant::now();
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Failed, "{events:?}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "the job took {:?} to fail",
        killed_at.elapsed()
    );
    assert!(!service.stderr().contains("worker 0 lost; a replacement"));
}

#[test]
fn a_killed_worker_is_replaced_and_the_job_goes_on() {
    let service = Service::start();
    let (ticket, workers) = distributed_job_under_way(&service, 4, 600);
    // The two workers share this machine's cores instead of each taking them all (unless
    // the environment already sets the thread count, which they then inherit).
    let share = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).max(1).to_string()
    });
    for pid in &workers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the environment");
        let threads = environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(b"RAYON_NUM_THREADS="));
        assert_eq!(threads, Some(share.as_bytes()), "worker process {pid}");
    }
    kill(workers[1]);
    let (state, events) = wait(&service, &ticket, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let log = service.stderr();
    assert!(
        log.contains("worker 1 lost; a replacement takes its place"),
        "{log}"
    );
    // Rank 0 never stopped: all its epochs are reported, and the model trained.
    let epochs = events
        .iter()
        .filter(|e| {
            matches!(e, chiron_proto::owner::OwnerEvent::Metric { name, .. } if name == "valid_accuracy")
        })
        .count();
    assert_eq!(epochs, 4, "{events:?}");
    let accuracy = test_accuracy(&service, &ticket);
    assert!(accuracy > 0.75, "accuracy {accuracy}");
}

#[test]
fn a_private_job_trains_on_a_paced_exchange() {
    let service = Service::start();
    let data = iris();
    // 20 epochs take about 160 rounds, a fifth of the schedule's 720 ticks: the job ends
    // well inside its budget even on a slow, loaded machine, where a round can take
    // several ticks.
    let terms = chiron_tests::transcript::private_terms(20, 20);
    let started = Instant::now();
    let ticket = start_distributed_job(&service, &program_wasm("chiron_mlp"), &data, &terms, 2, 64)
        .expect("job starts");
    let (state, events) = wait(&service, &ticket, Duration::from_secs(120));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // A private job ends at its budget, whatever the exchange did.
    assert!(started.elapsed() >= Duration::from_secs(20));
    assert_iris_answers(&service, &ticket, &data);
}

#[test]
fn a_killed_worker_of_a_private_job_is_replaced_and_the_job_keeps_its_schedule() {
    let service = Service::start();
    let data = iris();
    let budget_secs = 40;
    let started = Instant::now();
    let (ticket, workers) = private_job_under_way(&service, budget_secs);
    kill(workers[1]);
    let (state, events) = wait(&service, &ticket, Duration::from_secs(180));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let log = service.stderr();
    assert!(
        log.contains("worker 1 lost; a replacement takes its place"),
        "{log}"
    );
    // The job still ends at its budget, and rank 0's model answers.
    assert!(started.elapsed() >= Duration::from_secs(budget_secs.into()));
    assert_iris_answers(&service, &ticket, &data);
}

/// Where the checkpoints the host says it stored were taken, in order: the `unit` ("round",
/// or a paced job's "tick") each came after.
fn checkpoints(service: &Service, unit: &str) -> Vec<u64> {
    let after = format!("checkpoint after {unit} ");
    service
        .stderr()
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(&after)?;
            rest.strip_suffix(" stored")?.parse().ok()
        })
        .collect()
}

/// Where the latest checkpoint the host says it stored was taken.
fn latest_checkpoint(service: &Service, unit: &str) -> Option<u64> {
    checkpoints(service, unit).last().copied()
}

/// Waits, `within` at most, until the host has stored a checkpoint taken after `at_least`
/// of `unit`; where the latest was taken.
fn checkpoint_stored(service: &Service, unit: &str, at_least: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        match latest_checkpoint(service, unit) {
            Some(at) if at >= at_least => return at,
            _ => assert!(
                Instant::now() < deadline,
                "no checkpoint after {unit} {at_least}: {}",
                service.stderr()
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the host's log says a replacement server resumed: the `unit` its checkpoint came
/// after.
fn resumed_from(service: &Service, unit: &str) -> u64 {
    let log = service.stderr();
    let after = format!("resumed from the checkpoint after {unit} ");
    log.lines()
        .find_map(|line| line.split_once(&after)?.1.trim().parse().ok())
        .unwrap_or_else(|| panic!("no replacement in the host's log: {log}"))
}

#[test]
fn a_killed_parameter_server_is_replaced_from_its_checkpoint() {
    let service = Service::start();
    let wasm = program_wasm("chiron_cnn");
    let ticket = start_distributed_job(
        &service,
        &wasm,
        &fashion_subset(6000),
        &terms(3, 600),
        2,
        cnn_message_kib(&wasm),
    )
    .expect("job starts");
    let stored_before = checkpoint_stored(&service, "round", 40, Duration::from_secs(300));
    assert_eq!(kill_enclaves(&service, "ps"), 1, "one parameter server");

    let (state, events) = wait(&service, &ticket, Duration::from_secs(600));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    let resumed = resumed_from(&service, "round");
    // The replacement starts from the latest checkpoint stored before the kill (or one
    // stored between the kill and the host noticing): at most 20 rounds are lost.
    assert!(resumed >= stored_before, "{resumed} < {stored_before}");
    let accuracy = test_accuracy(&service, &ticket);
    assert!(accuracy > 0.75, "accuracy {accuracy}");
}

#[test]
fn a_killed_parameter_server_of_a_private_job_is_replaced_and_the_job_keeps_its_schedule() {
    let service = Service::start();
    let data = iris();
    let budget_secs = 40;
    let started = Instant::now();
    // Some 4 s into the job; its server seals a checkpoint every 20 ticks (0.5 s) once the
    // schedule runs, which on a loaded machine may take longer to begin.
    let (ticket, _) = private_job_under_way(&service, budget_secs);
    let stored_before = checkpoint_stored(&service, "tick", 40, Duration::from_secs(30));
    assert_eq!(kill_enclaves(&service, "ps"), 1, "one parameter server");

    let (state, events) = wait(&service, &ticket, Duration::from_secs(180));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // The replacement took over from the latest checkpoint stored before the kill (or a
    // later one): at most 20 ticks, and so at most 20 rounds, were lost.
    let resumed = resumed_from(&service, "tick");
    assert!(resumed >= stored_before, "{resumed} < {stored_before}");
    // The checkpoints came every 20 ticks, whatever the rounds did.
    let ticks = checkpoints(&service, "tick");
    assert!(
        ticks.iter().all(|tick| tick % 20 == 0),
        "checkpoints off the schedule: {ticks:?}"
    );
    // The job still ends at its budget, and rank 0's model answers.
    assert!(started.elapsed() >= Duration::from_secs(budget_secs.into()));
    assert_iris_answers(&service, &ticket, &data);
}

/// The MLP on Iris as a two-worker job under `terms` in which no checkpoint falls due: its
/// server's only checkpoint is its first, taken once the workers are admitted, before any of
/// them registered.
fn iris_job_without_due_checkpoints(
    service: &Service,
    terms: &chiron_client::owner::TrainingTerms,
) -> chiron_client::owner::JobTicket {
    let no_checkpoint_due = ExchangeOptions {
        checkpoint_every: u32::MAX,
        ..ExchangeOptions::default()
    };
    start_distributed_job_with(
        service,
        &program_wasm("chiron_mlp"),
        &iris(),
        terms,
        2,
        64,
        no_checkpoint_due,
    )
    .expect("job starts")
}

#[test]
fn a_parameter_server_lost_before_a_checkpoint_fell_due_is_replaced_and_the_workers_register_again()
{
    let service = Service::start();
    let data = iris();
    let ticket = iris_job_without_due_checkpoints(&service, &terms(400, 300));
    // Rank 0 reported an epoch, so its optimizer is registered: the server's first
    // checkpoint does not hold it.
    until_an_epoch_is_done(&service, &ticket, Duration::from_secs(120));
    assert_eq!(
        checkpoint_stored(&service, "round", 0, Duration::from_secs(30)),
        0
    );
    assert_eq!(kill_enclaves(&service, "ps"), 1, "one parameter server");

    let (state, events) = wait(&service, &ticket, Duration::from_secs(300));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // The replacement started from that first checkpoint; the workers registered their
    // optimizer again, so their next steps were taken (a step of an optimizer the server
    // does not hold fails the job).
    assert_eq!(resumed_from(&service, "round"), 0);
    assert_iris_answers(&service, &ticket, &data);
}

#[test]
fn a_parameter_server_of_a_private_job_lost_before_a_checkpoint_fell_due_is_replaced_and_the_workers_register_again()
 {
    let service = Service::start();
    let data = iris();
    let ticket = iris_job_without_due_checkpoints(
        &service,
        &chiron_tests::transcript::private_terms(40, 30),
    );
    // The schedule starts with the server's first checkpoint. Two seconds (80 ticks) on,
    // the workers have registered their optimizer (the MLP steps every tick or two).
    checkpoint_stored(&service, "tick", 0, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kill_enclaves(&service, "ps"), 1, "one parameter server");

    let (state, events) = wait(&service, &ticket, Duration::from_secs(180));
    assert_eq!(state, JobState::Succeeded, "{events:?}");
    // The replacement started from the first checkpoint, the only one, and took none of
    // its own: none fell due.
    assert_eq!(resumed_from(&service, "tick"), 0);
    assert_eq!(checkpoints(&service, "tick"), [0]);
    assert_iris_answers(&service, &ticket, &data);
}
