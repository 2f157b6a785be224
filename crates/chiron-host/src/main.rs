//! `chiron-host`: the untrusted host of the Chiron service.
//!
//! It serves the public API, keeps ciphertext and sealed blobs in an object store, keeps job
//! records, and launches enclave processes, relaying frames it cannot read. It plays the
//! simulated TEE platform too: it makes sure the platform key exists before any enclave runs.
//! It logs ids, states and fixed labels only, never anything derived from a payload.

mod api;
mod config;
mod distributed;
mod enclave;
mod ids;
mod jobs;
mod launcher;
mod limits;
mod models;
mod principals;
mod relay;
mod store;
mod uploads;

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;
use tokio::net::TcpListener;

use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Admin, Config, PrincipalCommand};
use crate::jobs::Jobs;
use crate::models::Models;
use crate::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();

    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            config.data_dir.display()
        )
    })?;
    let store = match &config.store {
        Some(url) => Store::open_url(url, &config.store_options)
            .with_context(|| format!("cannot open the object store {url}"))?,
        None => Store::open_local(&config.objects_dir()).with_context(|| {
            format!(
                "cannot open the object store in {}",
                config.objects_dir().display()
            )
        })?,
    };
    if let Some(Admin::Principal(command)) = &config.command {
        return principal_command(&store, command).await;
    }
    let principals = principals::Principals::load(store.clone())
        .await
        .context("cannot read the principals")?;
    principals.keep_fresh();
    let launcher = config.launcher()?;
    launcher
        .init_platform()
        .await
        .context("the enclaves' platform is not usable")?;
    let jobs = Jobs::load(store.clone(), launcher.clone(), &config.limits)
        .await
        .context("cannot load the job records")?;
    let checker = chiron_sandbox::Sandbox::new(chiron_sandbox::SandboxConfig::default())
        .context("cannot start the program checker")?;
    let models = Models::new(store.clone(), launcher, &config.limits);
    models.reap_idle();
    let (rate, upload_slots) = api::AppState::limiters(&config.limits);
    let uploads = uploads::Uploads::load(
        store.clone(),
        config.limits.max_dataset_bytes,
        config.limits.upload_expiry(),
        Arc::clone(&upload_slots),
    )
    .await
    .context("cannot read the open uploads")?;
    let uploads = Arc::new(uploads);
    uploads.expire_old();
    let state = api::AppState {
        models,
        jobs: Arc::new(jobs),
        store,
        checker: Arc::new(checker),
        endorsements: Arc::new(
            api::Endorsements::read(&config.endorsements)
                .context("cannot read the endorsements")?,
        ),
        principals,
        limits: Arc::new(config.limits.clone()),
        rate,
        upload_slots,
        uploads,
    };

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "chiron-host listening on http://{addr}")?;
        out.flush()?;
    }
    info!("listening on http://{addr}");
    let jobs = Arc::clone(&state.jobs);
    // On SIGTERM (or Ctrl-C) the listener closes at once; requests in flight (an upload's
    // part, a query) get the grace period to finish.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown().await;
        let _ = stop.send(true);
    });
    let mut signalled = stopping.clone();
    let serve = axum::serve(listener, api::router(state)).with_graceful_shutdown(async move {
        let _ = signalled.wait_for(|stop| *stop).await;
        info!(
            "shutting down: no new requests; those in flight have {}s",
            config.shutdown_grace_secs
        );
    });
    let mut signalled = stopping;
    let grace = async move {
        let _ = signalled.wait_for(|stop| *stop).await;
        tokio::time::sleep(Duration::from_secs(config.shutdown_grace_secs)).await;
    };
    tokio::select! {
        served = serve => served?,
        () = grace => warn!("the grace period ended with requests still in flight; they are cut"),
    }
    // Enclaves stop with the host (processes are killed on drop; pods are deleted while the
    // runtime still runs), so every job still waiting or training has failed: say so in its
    // record now rather than at the next start.
    jobs.shut_down().await;
    info!("stopped; enclaves stopping");
    Ok(())
}

/// `chiron-host principal ...`.
async fn principal_command(store: &Store, command: &PrincipalCommand) -> anyhow::Result<()> {
    match command {
        PrincipalCommand::Add { name, roles } => {
            let token = principals::add(store, name, roles).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{token}")?;
            out.flush()?;
            eprintln!(
                "principal `{name}` added; give it the token above (it is not stored and \
                 cannot be shown again)"
            );
        }
        PrincipalCommand::Revoke { name } => {
            principals::revoke(store, name).await?;
            eprintln!("principal `{name}` revoked");
        }
        PrincipalCommand::List => {
            let mut out = std::io::stdout().lock();
            for record in principals::list(store).await? {
                let roles: Vec<String> = record.roles.iter().map(|r| r.to_string()).collect();
                writeln!(out, "{}\t{}", record.name, roles.join(","))?;
            }
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
