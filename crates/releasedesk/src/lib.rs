//! The ReleaseDesk binary as a library: configuration, wiring and the CLI, so that
//! tests start exactly what operators run.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod memory;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;

use releasedesk_store::{RetryPolicy, Store, StoreError};
use releasedesk_worker::{
    Worker, WorkerConfig,
    carrier::{Carrier, HttpCarrier, LocalCarrier},
    mail::{MailContext, Mailer},
    queue::QueueConfig,
};

use crate::config::{CarrierKind, ConfigError, Settings};

/// Startup failures, reported once by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Queue(String),
}

/// The worker as configured: mailer (SMTP with `SMTP_URL`, else `.eml` files),
/// carrier adapter, pacing.
pub fn build_worker(settings: &Settings, store: Store) -> Result<Worker, StartupError> {
    let smtp = settings
        .mail
        .smtp_url
        .as_ref()
        .map(|s| s.expose().to_owned());
    let mailer = Mailer::from_settings(
        smtp.as_deref(),
        &settings.mail.outbox_dir,
        &settings.mail.from,
    )
    .map_err(|e| ConfigError::Value {
        key: "mail",
        message: e.to_string(),
    })?;
    let carrier: Arc<dyn Carrier> = match settings.carrier.kind {
        CarrierKind::Local => Arc::new(LocalCarrier),
        CarrierKind::Http => Arc::new(
            HttpCarrier::new(
                &settings.carrier.url,
                settings.carrier.secret.expose(),
                settings.carrier.timeout,
            )
            .map_err(|e| ConfigError::Value {
                key: "carrier",
                message: e.to_string(),
            })?,
        ),
    };
    let w = &settings.worker;
    let config = WorkerConfig {
        poll_interval: w.poll_interval,
        email_linger: releasedesk_worker::EMAIL_LINGER,
        email_burst_wait: releasedesk_worker::EMAIL_BURST_WAIT,
        requests_pause: releasedesk_worker::REQUESTS_PAUSE,
        sweep_interval: w.sweep_interval,
        batch_size: w.batch_size,
        lease: w.lease,
        retry: RetryPolicy {
            max_attempts: w.max_attempts,
            base_delay: w.retry_base,
            max_delay: w.retry_max,
        },
        mail: MailContext {
            public_url: settings.server.public_url.clone(),
        },
    };
    let queue = QueueConfig {
        batch_size: usize::try_from(w.batch_size).unwrap_or(100),
        poll_interval: w.poll_interval,
        heartbeat_interval: w.heartbeat_interval,
        missed_heartbeats: w.missed_heartbeats,
        queue: w.queue.clone(),
    };
    Ok(Worker::new(store, mailer, carrier, config).with_queue(queue))
}

/// Applies every migration: the application's schema, then the job queue's
/// tables, holding the database's migration lock so that processes starting
/// together take turns.
pub async fn migrate(store: &Store, settings: &Settings) -> Result<(), StartupError> {
    let lock = store.lock_migrations().await?;
    store.migrate().await?;
    releasedesk_worker::queue::setup(store.pool(), settings.database.url.expose())
        .await
        .map_err(|e| StartupError::Queue(e.to_string()))?;
    // After the queue's set-up, whose `PRAGMA optimize` analyses SQLite's tables.
    store.forget_small_table_statistics().await?;
    lock.release().await;
    Ok(())
}

/// Connects to the configured database and applies every migration.
pub async fn open_migrated(settings: &Settings) -> Result<Store, StartupError> {
    let store = open_store(settings).await?;
    migrate(&store, settings).await?;
    Ok(store)
}

/// Connects and migrates like [`open_migrated`], but waits out a
/// database that is not reachable yet (a service starting before its database,
/// or during a failover), retrying with backoff up to every 10 s.
pub async fn open_and_migrate(settings: &Settings) -> Result<Store, StartupError> {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match open_migrated(settings).await {
            Err(StartupError::Store(error)) if error.is_unavailable() => {
                tracing::warn!(%error, retry_in = ?delay, "database unreachable; waiting for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Connects to the configured database and builds the operation layer.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let pool = releasedesk_store::connect(&settings.db_options()).await?;
    Ok(Store::new(pool, settings.store_settings()?))
}
