use std::process::ExitCode;

use clap::Parser;

/// mimalloc: less CPU per request than glibc's allocator under load (see
/// docs/BENCHMARKS.md), for a larger peak RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = releasedesk::cli::Cli::parse();
    releasedesk::cli::init_tracing();
    releasedesk::memory::small_pages_only();
    match releasedesk::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            // With its causes ("database error: …: table … already exists"):
            // the operator reading this has nothing else to go on.
            let error = anyhow::Error::new(error);
            tracing::error!(error = format!("{error:#}"), "releasedesk failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
