use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match loadtest::cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // --help and --version print and succeed; bad arguments exit 1, since exit code
            // 2 means a breached threshold.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match loadtest::run(args).await {
        Ok(loadtest::Verdict::Passed) => ExitCode::SUCCESS,
        Ok(loadtest::Verdict::Breached(lines)) => {
            for line in lines {
                eprintln!("{line}");
            }
            ExitCode::from(2)
        }
        Ok(loadtest::Verdict::Interrupted) => {
            eprintln!("interrupted: the summary covers the requests sent before Ctrl-C");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
