//! Benchmark program `bench_b128`: [`chiron_bench_nets`] with batches of 128.

fn train() {
    chiron_bench_nets::train(128);
}

chiron_sdk::export_program!(train = train, predict = chiron_bench_nets::predict);
