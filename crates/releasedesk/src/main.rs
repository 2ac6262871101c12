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
            tracing::error!(error = %error, "releasedesk failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
