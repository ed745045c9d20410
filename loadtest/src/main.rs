use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = loadtest::cli::Args::parse();
    match loadtest::run(args).await {
        Ok(loadtest::Verdict::Passed) => ExitCode::SUCCESS,
        Ok(loadtest::Verdict::Breached(lines)) => {
            for line in lines {
                eprintln!("{line}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
