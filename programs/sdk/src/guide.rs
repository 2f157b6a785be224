//! # The provider's guide: write, check, run locally, register
//!
//! A Chiron program is a Rust library compiled to WebAssembly. It trains a model on data it
//! never sees (the owner's data stays in the runtime, behind [`Tensor`](crate::Tensor)
//! handles) and answers queries with it. The runtime runs it in a sandbox with no clock, no
//! files and no network; everything it does goes through this SDK.
//!
//! ## 1. Start from the template
//!
//! ```text
//! chiron new-program my-program --sdk path/to/chiron/programs/sdk
//! ```
//!
//! makes `my-program/`, a crate of its own (its own workspace, this SDK by path) holding
//! `programs/template`: a complete program, a small residual network with batch norm,
//! dropout, augmentation, AdamW, a one-cycle schedule and keep-the-best checkpoints. The
//! test command builds and runs that template, so it starts out working. Its `Cargo.toml`
//! builds a `cdylib` for the sandbox (and an `rlib`, for linking natively). The pieces:
//!
//! - **Entry points.** `train()` and `predict()`, exported with
//!   [`export_program!`](crate::export_program!). `train` must call
//!   [`save_model`](crate::save_model) (or [`nn::save`](crate::nn::save)) at least once; save
//!   at each epoch end, so a job whose time runs out keeps the last good model.
//! - **Data.** [`Dataset`](crate::Dataset) gives the public header (kind, dims, classes,
//!   counts, the owner's epoch budget) and batches by index: `Dataset::batch(split, &idx)`.
//!   Images arrive `[N, C, H, W]` in `[0, 1]`; tables `[N, columns]`, standardised.
//! - **Layers.** [`nn`](crate::nn): `Linear`, `Conv2d` (stride, padding, dilation, groups),
//!   `BatchNorm`, `LayerNorm`, `Dropout`, `Embedding`, `MultiHeadAttention`, `Sequential`,
//!   all behind the [`nn::Module`](crate::nn::Module) trait. Below them, [`Tensor`](crate::Tensor) has the
//!   operations themselves: broadcasting arithmetic, reductions over axes, `permute`,
//!   `concat`, `narrow`, `index_select`, batched `matmul`, pooling, losses
//!   (`cross_entropy`, `cross_entropy_smoothed`, `bce_with_logits`, `mse`).
//! - **Training.** [`Optimizer`](crate::Optimizer) (SGD, Nesterov, Adam, AdamW, RMSprop,
//!   gradient clipping) owns the backward pass and the update: `opt.step(&loss)`.
//!   [`schedule`](crate::schedule) has learning-rate schedules, early stopping and
//!   [`BestModel`](crate::schedule::BestModel); [`augment`](crate::augment) random crops and
//!   flips. Evaluate under [`no_grad`](crate::no_grad) with the modules in evaluation mode
//!   (`set_training(false)`).
//! - **Time.** There is no clock: `std::time::Instant::now()` compiles but traps in the
//!   sandbox (and `chiron check` warns about it). [`time_left`](crate::time_left) says how
//!   long the runtime will still let the program run, to stop at an epoch end in time.
//! - **Reproducibility.** Every random choice ([`Rng`](crate::Rng), parameter
//!   initialisation, dropout, augmentation) comes from one stream seeded by the owner, so
//!   the same seed gives the same model in the sandbox and natively (unless the program
//!   acts on [`time_left`](crate::time_left)).
//! - **Progress.** [`report_metric`](crate::report_metric) sends per-epoch figures to the
//!   owner; [`report_progress`](crate::report_progress) the steps within an epoch, for the
//!   owner's progress bar (call it every step; the runtime passes on one a second).
//! - **Policy.** [`manifest!`](crate::manifest!) declares what owners may ask of every model
//!   the program trains: queries, answer granularity, memory, model size, time per epoch,
//!   and the size of a distributed job's exchange messages (what one optimizer's parameters
//!   take: an owner asking for several workers gets messages of that size, and a job whose
//!   parameters do not fit is refused at its first step with the size they need).
//!   [`inputs!`](crate::inputs!) declares the datasets it takes (images or tables, shapes,
//!   class counts): an owner's dataset outside it is refused before it is uploaded.
//!
//! ## 2. Build and check
//!
//! ```text
//! cd my-program
//! cargo build --release --target wasm32-unknown-unknown
//! chiron check target/wasm32-unknown-unknown/release/my_program.wasm
//! ```
//!
//! `chiron check` runs the enclave loader's own checks: the module's imports are all inside
//! the `chiron` ABI ([`sys`](crate::sys)), `chiron_train`, `chiron_predict` and a memory are
//! exported with the right types, and the manifest parses. Registration runs the same checks
//! and refuses a program that fails them, before any owner uploads data.
//!
//! ## 3. Test locally on your own data
//!
//! ```text
//! chiron run-local my_program.wasm --idx-images train-images.gz --idx-labels train-labels.gz \
//!     --epochs 2 --limit 5000
//! chiron run-local my_program.wasm --csv my-table.csv --label-column class
//! ```
//!
//! `chiron run-local` is the reference runner: the runtime's own sandbox, engine and limits,
//! as the enclave runs them, on plaintext data you own, with your
//! program's [`println!`](crate::println!) lines, panic messages and metrics on your
//! terminal. In an enclave these lines go nowhere: nothing the program says reaches anyone
//! but the owner, as encrypted metrics.
//!
//! ## 4. Register
//!
//! ```text
//! chiron register my_program.wasm --host http://service:8080 --token $PROVIDER_TOKEN
//! ```
//!
//! (or `CHIRON_HOST` and `CHIRON_TOKEN` in the environment; the token is the one the host's
//! operator issued you with the provider role) prints the program id owners train with.
//! Registration shows the program's declared policy and inputs and refuses a malformed
//! declaration. The module's hash is its identity: a new build
//! is a new program.
//!
//! ## What the runtime enforces
//!
//! Every operation is charged, from its shapes, against the job's compute and memory
//! budgets before it runs; the time budget stops native work part-way. A bad shape, an
//! unknown handle or an exhausted budget traps the program, and the owner alone sees why.
//! In private mode (the default) nothing about the run reaches the platform or the
//! provider beyond the declared public figures: see the project's `LEAKAGE.md`.
