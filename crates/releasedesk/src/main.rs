use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = releasedesk::cli::Cli::parse();
    releasedesk::cli::init_tracing();
    match releasedesk::cli::run(cli).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(error = %error, "releasedesk failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
