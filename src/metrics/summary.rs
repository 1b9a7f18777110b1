//! What the log tells an operator without any tool: the effective limits at start-up, and a
//! one-line summary every interval, computed on a thread of its own from the counters.

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::Metrics;
use crate::config::Config;

/// Logs the limits the server runs with, as computed from the options and the system.
pub fn log_limits(config: &Config) {
    let per_ip = match config.max_connections_per_ip {
        usize::MAX => "no cap".to_owned(),
        cap => cap.to_string(),
    };
    let descriptors = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft.to_string(),
        Err(error) => format!("unknown ({error})"),
    };
    log::info!(
        "limits: {} connections (descriptor limit {descriptors}), per address: {per_ip}; \
         max payload {} bytes; request timeout {} s, idle timeout {} s",
        config.max_connections,
        config.max_payload,
        config.request_timeout.as_secs_f64(),
        config.idle_timeout.as_secs_f64(),
    );
}

/// The thread that logs the summary; stops when dropped.
pub struct Summary {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Summary {
    /// Logs a summary every `interval`; `None` if the interval is zero (off).
    pub fn start(metrics: Arc<Metrics>, interval: Duration) -> std::io::Result<Option<Summary>> {
        if interval.is_zero() {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        // Read before the thread starts, so that no request served meanwhile (by a loop
        // that runs before the thread is scheduled) hides in the first interval's baseline.
        let mut last = Totals::read(&metrics);
        let thread = thread::Builder::new()
            .name("summary".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let now = Totals::read(&metrics);
                    log::info!("{}", line(&metrics, &last, &now, interval));
                    last = now;
                }
            })?;
        Ok(Some(Summary {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

impl Drop for Summary {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the summary thread panicked");
            }
        }
    }
}

/// Counters whose change over an interval the summary reports.
struct Totals {
    requests: u64,
    stored: u64,
    delivered: u64,
}

impl Totals {
    fn read(metrics: &Metrics) -> Totals {
        let queue = metrics.queue();
        Totals {
            requests: metrics.requests_handled(),
            stored: queue.stored,
            delivered: queue.delivered,
        }
    }
}

fn line(metrics: &Metrics, last: &Totals, now: &Totals, interval: Duration) -> String {
    let queue = metrics.queue();
    format!(
        "stats: {} connections open; last {} s: {} requests, {} messages stored, {} delivered; \
         {} messages waiting ({}); database {}",
        metrics.open_connections(),
        interval.as_secs_f64(),
        now.requests - last.requests,
        now.stored - last.stored,
        now.delivered - last.delivered,
        queue.messages,
        bytes(queue.bytes),
        bytes(metrics.database_bytes()),
    )
}

/// A size as an operator reads it: 512 B, 3.4 KiB, 1.2 GiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_an_operator_reads_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn the_line_counts_the_interval_only() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        let last = Totals {
            requests: 10,
            stored: 4,
            delivered: 1,
        };
        let now = Totals {
            requests: 25,
            stored: 9,
            delivered: 3,
        };
        assert_eq!(
            line(&metrics, &last, &now, Duration::from_secs(60)),
            "stats: 1 connections open; last 60 s: 15 requests, 5 messages stored, 2 delivered; \
             0 messages waiting (0 B); database 0 B"
        );
    }
}
