//! The `releasedesk` command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use tokio::sync::watch;

use crate::{
    StartupError, admin, app, build_worker, config::Settings, demo, open_and_migrate, open_migrated,
};

#[derive(Debug, Parser)]
#[command(
    name = "releasedesk",
    version,
    about = "Approval workflow for releasing phone numbers"
)]
pub struct Cli {
    /// Configuration file layered over the defaults.
    #[arg(long, global = true, env = "RELEASEDESK_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process (migrates first).
    Serve {
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Seed the demo data set and print its tokens before serving.
        #[arg(long)]
        demo: bool,
    },
    /// Run the customer API only.
    Api {
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Run the worker only: releases, emails, schedules.
    Worker {
        /// Serve /healthz, /readyz and /metrics here (off unless given).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Run the reviewer API and console only.
    Reviewer {
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Apply database migrations.
    Migrate,
    /// Seed the demo data set (idempotent) and print its tokens.
    Demo,
    /// Administrative commands; each prints one JSON object.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// Logs go to stderr (stdout is for command output); `RUST_LOG` filters and
/// `LOG_FORMAT=json` switches to JSON lines.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,tower_http=info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init();
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode, StartupError> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { addr, demo } => {
            serve(&settings, addr, demo, app::Parts::ALL).await?;
        }
        Command::Worker { addr } => {
            let store = open_and_migrate(&settings).await?;
            let worker = build_worker(&settings, store.clone())?;
            let signal = app::shutdown_signal();
            let (stop, stopped) = watch::channel(false);
            let running = tokio::spawn(worker.run(stopped.clone()));
            let operations = match addr {
                Some(addr) => {
                    let listener = TcpListener::bind(addr).await?;
                    println!(
                        "Worker health and metrics on http://{}",
                        listener.local_addr()?
                    );
                    let mut stopped = stopped;
                    let stopped = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    let router = app::operations_router(store.clone());
                    Some(tokio::spawn(app::serve(listener, router, stopped)))
                }
                None => None,
            };
            println!("ReleaseDesk worker running");
            signal.await;
            let _ = stop.send(true);
            let _ = running.await;
            if let Some(operations) = operations {
                let _ = operations.await;
            }
            store.close().await;
        }
        Command::Api { addr } => {
            serve(&settings, addr, false, app::Parts::CUSTOMER_API).await?;
        }
        Command::Reviewer { addr } => {
            serve(&settings, addr, false, app::Parts::REVIEWER).await?;
        }
        Command::Migrate => {
            open_migrated(&settings).await?;
            println!("{}", serde_json::json!({"migrated": true}));
        }
        Command::Demo => {
            let store = open_migrated(&settings).await?;
            let seeded = demo::seed(&store).await?;
            print!("{}", seeded.render(&settings.server.public_url));
        }
        Command::Admin(command) => return Ok(admin::run(&settings, command).await),
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    settings: &Settings,
    addr: Option<SocketAddr>,
    with_demo: bool,
    parts: app::Parts,
) -> Result<(), StartupError> {
    let app_settings = app::AppSettings::from_settings(settings)?;
    let store = open_and_migrate(settings).await?;
    let addr = addr.unwrap_or(settings.server.addr);
    let signal = app::shutdown_signal();
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    if with_demo {
        let seeded = demo::seed(&store).await?;
        print!("{}", seeded.render(&format!("http://{local}")));
    }
    tracing::info!(addr = %local, backend = ?store.backend(), "ReleaseDesk listening");
    println!("ReleaseDesk listening on http://{local}");
    if parts.reviewer {
        println!("Reviewer console at http://{local}/reviewer/");
    }
    let router = app::router(store.clone(), parts, app_settings);
    // `serve` runs the worker in the same process; it stops with the server.
    let (stop, stopped) = watch::channel(false);
    let worker = match parts == app::Parts::ALL {
        true => Some(tokio::spawn(
            build_worker(settings, store.clone())?.run(stopped),
        )),
        false => None,
    };
    let shutdown = async move {
        signal.await;
        let _ = stop.send(true);
    };
    app::serve(listener, router, shutdown).await?;
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    store.close().await;
    Ok(())
}
