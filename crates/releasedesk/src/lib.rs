//! The ReleaseDesk binary as a library: configuration, wiring and the CLI, so that
//! tests start exactly what operators run.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;

use releasedesk_store::{Store, StoreError};

use crate::config::{ConfigError, Settings};

/// Startup failures, reported once by `main`.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to the configured database and builds the operation layer.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let pool = releasedesk_store::connect(&settings.db_options()).await?;
    Ok(Store::new(pool, settings.store_settings()?))
}
