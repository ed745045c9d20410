//! Command-line arguments.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::builder::NonEmptyStringValueParser;
use clap::{Parser, Subcommand};

/// The dead-letter tool of the sensor pipeline.
///
/// Works against any SQS endpoint through the AWS SDK's standard settings
/// (AWS_ENDPOINT_URL_SQS, AWS_REGION, credentials). Commands that read the dead-letter queue
/// without consuming it (stats, peek, export, the filter pass of replay) receive its messages
/// with a visibility timeout and make them visible again when done; while they run, other
/// consumers of the dead-letter queue do not see those messages.
#[derive(Debug, Parser)]
#[command(name = "dlq", version)]
pub struct Cli {
    /// The main queue (where replayed messages go).
    #[arg(long, env = "QUEUE_URL", global = true, help_heading = "Global options", value_parser = NonEmptyStringValueParser::new())]
    pub queue_url: Option<String>,

    /// The dead-letter queue; when absent, found from the main queue's redrive policy.
    #[arg(long, env = "DLQ_URL", global = true, help_heading = "Global options", value_parser = NonEmptyStringValueParser::new())]
    pub dlq_url: Option<String>,

    /// Machine-readable JSON on stdout (and no progress bars).
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// How long the writer keeps its batch records (its BATCH_RECORD_RETENTION_DAYS).
    /// `replay` and `import` refuse dead letters enqueued more than this less a day ago,
    /// unless given --force.
    #[arg(long, env = "BATCH_RECORD_RETENTION_DAYS", default_value_t = 21, global = true, help_heading = "Global options", value_parser = clap::value_parser!(u64).range(15..))]
    pub record_retention_days: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Queue depths, the age of the oldest dead letter, and dead letters by failure class
    /// and by reason.
    ///
    /// The age of the main queue's oldest message is shown as n/a (null in JSON): SQS
    /// reports it only through CloudWatch (ApproximateAgeOfOldestMessage), and this tool
    /// never receives from the main queue. The dead-letter queue's oldest age comes from the
    /// SentTimestamp of the messages it scans.
    Stats,

    /// Show dead letters with their failure attributes and a summary of their readings,
    /// without consuming them.
    Peek {
        /// Show at most this many messages.
        #[arg(short = 'n', long = "count", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Only messages whose failure class is exactly R, or whose reason contains R
        /// (case-insensitive).
        #[arg(long, value_name = "R")]
        reason: Option<String>,
    },

    /// Move dead letters back to the main queue.
    ///
    /// Each message is sent to the main queue (its original body, without the failure
    /// attributes, with the time its readings were first enqueued) and only then deleted
    /// from the dead-letter queue, so an interrupted replay can at worst send a message
    /// twice, which the writer's batch records make harmless; run it again to finish.
    /// Ctrl-C stops after the message batch in flight.
    ///
    /// Dead letters enqueued longer ago than the writer's batch records are kept (less a
    /// day's margin) are refused: the records that make a second copy of their readings
    /// write nothing may be gone.
    Replay {
        /// Only messages whose failure class is exactly R, or whose reason contains R
        /// (case-insensitive).
        #[arg(long, value_name = "R")]
        reason: Option<String>,
        /// Only messages that failed at or after T (RFC 3339 or epoch seconds); messages
        /// moved by the redrive policy are dated by their SentTimestamp.
        #[arg(long, value_name = "T", value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Move at most N messages.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max: Option<u64>,
        /// Move at most R messages per second (with --native: SQS's
        /// MaxNumberOfMessagesPerSecond).
        #[arg(long, value_name = "R", value_parser = parse_rate)]
        rate: Option<f64>,
        /// List what would move, and move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay dead letters older than the batch records too, and have the writer write
        /// them: readings of theirs that were written before are then stored twice.
        #[arg(long)]
        force: bool,
        /// Let SQS move every message (StartMessageMoveTask); no filters, no age check here
        /// (the writer dead-letters expired messages again). Not every SQS endpoint
        /// supports it (moto does not).
        #[arg(long, conflicts_with_all = ["reason", "since", "max", "dry_run", "force"])]
        native: bool,
    },

    /// Write every dead letter to FILE as one JSON object per line (message_id, body,
    /// attributes, sent_timestamp, enqueued_at, receive_count, class, reason), without
    /// consuming them.
    Export {
        /// The file to write (replaced if it exists).
        file: PathBuf,
    },

    /// Send every line of an export file back to the dead-letter queue, with the same body
    /// and failure attributes.
    ///
    /// Running it twice sends every message twice. Dead letters older than the batch
    /// records are refused, as by `replay`.
    Import {
        /// A file written by `dlq export`.
        file: PathBuf,
        /// Import dead letters older than the batch records too (`replay` still refuses
        /// them without its own --force).
        #[arg(long)]
        force: bool,
    },

    /// Delete every message on the dead-letter queue.
    ///
    /// Asks for confirmation on the terminal unless --yes is given. Uses PurgeQueue; when
    /// the endpoint refuses (AWS allows one purge per queue every 60 seconds), receives and
    /// deletes instead. On AWS a purge takes up to 60 seconds, during which messages sent to
    /// the queue may be deleted too.
    Purge {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    readings::model::reading::parse_time_str(s)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "'{s}' is not a positive number of messages per second"
        )),
    }
}
