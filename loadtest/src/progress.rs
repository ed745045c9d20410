//! Live progress on stderr: elapsed, achieved vs target rate, errors, the last second's p99.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::stats::{lock, Stats};

pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// A bar over the run's length (`duration`, or else `readings`), hidden when `quiet` or
    /// when stderr is not a terminal.
    pub fn start(
        quiet: bool,
        duration: Option<Duration>,
        readings: Option<u64>,
        target_rate: f64,
        stats: Arc<Mutex<Stats>>,
    ) -> Progress {
        let draw = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            // Draws nothing when stderr is not a terminal.
            ProgressDrawTarget::stderr()
        };
        let (len, by_time) = match (duration, readings) {
            (Some(d), _) => (d.as_millis() as u64, true),
            (None, Some(n)) => (n, false),
            (None, None) => (0, true),
        };
        let bar = ProgressBar::with_draw_target(Some(len), draw);
        let template = "{elapsed_precise} [{bar:25.cyan/blue}] {msg}";
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let ticker = if bar.is_hidden() {
            None
        } else {
            let bar = bar.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let s = lock(&stats);
                    let elapsed = bar.elapsed();
                    bar.set_position(if by_time {
                        elapsed.as_millis() as u64
                    } else {
                        s.readings_sent
                    });
                    let (rate, p99) = s
                        .last_second()
                        .map(|l| (l.readings as f64, format!("{:.1}ms", l.p99_ms)))
                        .unwrap_or((0.0, "-".into()));
                    bar.set_message(format!(
                        "{rate:.0}/{target_rate:.0} readings/s  {} requests  {} errors  p99 {p99}",
                        s.completed,
                        s.errors()
                    ));
                }
            }))
        };
        Progress { bar, ticker }
    }

    pub fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
