//! Benchmark program `bench_b64`: [`chiron_bench_nets`] with batches of 64.

fn train() {
    chiron_bench_nets::train(64);
}

chiron_sdk::export_program!(train = train, predict = chiron_bench_nets::predict);
