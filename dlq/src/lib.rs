//! The dead-letter tool: `stats`, `peek`, `replay`, `export`, `import` and `purge` for the
//! pipeline's SQS dead-letter queue. See `dlq --help`.

pub mod cli;
mod commands;
pub mod message;
pub mod scan;
pub mod sqs;
mod ui;

use anyhow::{Context, Result};
use aws_sdk_sqs::Client;

use cli::{Cli, Command};
use message::Filter;
use ui::Ui;

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    let client = readings::queue::client().await;
    let ui = Ui::new(cli.json);
    let queues = Queues {
        client: &client,
        queue_url: cli.queue_url.clone(),
        dlq_url: cli.dlq_url.clone(),
    };
    let age = message::AgeLimit::new(cli.record_retention_days);
    match cli.command {
        Command::Stats => commands::stats(&queues, ui).await,
        Command::Peek { count, reason } => {
            let filter = Filter {
                reason,
                since: None,
            };
            commands::peek(&queues, ui, &filter, count as usize).await
        }
        Command::Replay {
            reason,
            since,
            max,
            rate,
            dry_run,
            force,
            native,
        } => {
            if native {
                commands::replay_native(&queues, ui, rate).await
            } else {
                let filter = Filter { reason, since };
                let options = commands::ReplayOptions {
                    max: max.map(|m| m as usize),
                    rate,
                    dry_run,
                    age,
                    force,
                };
                commands::replay(&queues, ui, &filter, options).await
            }
        }
        Command::Export { file } => commands::export(&queues, ui, &file).await,
        Command::Import { file, force } => commands::import(&queues, ui, &file, age, force).await,
        Command::Purge { yes } => commands::purge(&queues, ui, yes).await,
    }
}

/// The two queues, as far as they were given.
pub(crate) struct Queues<'a> {
    pub client: &'a Client,
    queue_url: Option<String>,
    dlq_url: Option<String>,
}

impl Queues<'_> {
    /// The main queue's URL, required.
    pub fn main(&self) -> Result<&str> {
        self.queue_url
            .as_deref()
            .context("the main queue is needed: give --queue-url or set QUEUE_URL")
    }

    /// The main queue's URL, when given.
    pub fn main_if_given(&self) -> Option<&str> {
        self.queue_url.as_deref()
    }

    /// The dead-letter queue's URL: given, or found from the main queue's redrive policy.
    pub async fn dlq(&self) -> Result<String> {
        match (&self.dlq_url, &self.queue_url) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(q)) => sqs::dlq_of(self.client, q).await,
            (None, None) => anyhow::bail!(
                "the dead-letter queue is needed: give --dlq-url or set DLQ_URL (or give the main queue with --queue-url / QUEUE_URL and it is found from its redrive policy)"
            ),
        }
    }
}
