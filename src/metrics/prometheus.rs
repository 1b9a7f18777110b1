//! The Prometheus text exposition format (version 0.0.4), written by hand: every label set
//! is a closed enum, so the metrics are fixed arrays of atomics and need no registry.

use std::fmt::Write;

use super::histogram::{Snapshot, BOUNDS_NS};
use super::{read, ConnectionKind, ErrorCause, Metrics, StorageStep};
use crate::protocol::{Edition, Extension, Operation};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric, as one scrape's text.
pub fn encode(metrics: &Metrics) -> String {
    let mut out = Text(String::with_capacity(32 << 10));
    requests(&mut out, metrics);
    connections(&mut out, metrics);
    errors(&mut out, metrics);
    queue(&mut out, metrics);
    storage(&mut out, metrics);
    out.0
}

struct Text(String);

impl Text {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; `labels` is empty or `key="value",...`.
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = if labels.is_empty() {
            writeln!(self.0, "{name} {value}")
        } else {
            writeln!(self.0, "{name}{{{labels}}} {value}")
        };
    }

    fn histogram(&mut self, name: &str, labels: &str, snapshot: &Snapshot) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BOUNDS_NS.iter().zip(snapshot.cumulative) {
            let le = *bound as f64 / 1e9;
            let labels = format!("{labels}{separator}le=\"{le}\"");
            self.sample(&format!("{name}_bucket"), &labels, count);
        }
        let labels_inf = format!("{labels}{separator}le=\"+Inf\"");
        self.sample(&format!("{name}_bucket"), &labels_inf, snapshot.count);
        self.sample(&format!("{name}_sum"), labels, snapshot.sum.as_secs_f64());
        self.sample(&format!("{name}_count"), labels, snapshot.count);
    }
}

fn code_labels(edition: &str, operation: &str) -> String {
    format!("edition=\"{edition}\",operation=\"{operation}\"")
}

/// The edition label of the extension operations.
const EXTENSION_EDITION: &str = "extension";

fn requests(out: &mut Text, metrics: &Metrics) {
    let snapshots: Vec<_> =
        Edition::ALL
            .into_iter()
            .flat_map(|edition| Operation::ALL.map(|operation| (edition, operation)))
            .map(|(edition, operation)| {
                let histogram = &metrics.requests[edition as usize][operation as usize];
                let labels = code_labels(edition.name(), operation.name());
                (labels, histogram.snapshot())
            })
            .chain(Extension::ALL.into_iter().zip(&metrics.extensions).map(
                |(extension, histogram)| {
                    let labels = code_labels(EXTENSION_EDITION, extension.name());
                    (labels, histogram.snapshot())
                },
            ))
            .collect();
    out.header(
        "messageu_requests_total",
        "counter",
        "Requests handled, by edition and operation (9000 replies included).",
    );
    for (labels, snapshot) in &snapshots {
        out.sample("messageu_requests_total", labels, snapshot.count);
    }
    out.header(
        "messageu_request_duration_seconds",
        "histogram",
        "Time in a request's handler (body parsed, store work, reply built); the commit and \
         flush its reply may wait for are in messageu_commit_duration_seconds and \
         messageu_fsync_duration_seconds.",
    );
    for (labels, snapshot) in &snapshots {
        out.histogram("messageu_request_duration_seconds", labels, snapshot);
    }
}

fn connections(out: &mut Text, metrics: &Metrics) {
    let by_kind = [
        (
            "messageu_connections_open",
            "gauge",
            "Open client connections, by kind (new: no request served yet).",
            &metrics.connections_open,
        ),
        (
            "messageu_connections_total",
            "counter",
            "Client connections: accepted (kind new), and those that turned persistent or \
             padded at their first request.",
            &metrics.connections_total,
        ),
    ];
    for (name, type_, help, values) in by_kind {
        out.header(name, type_, help);
        for kind in ConnectionKind::ALL {
            let labels = format!("kind=\"{}\"", kind.name());
            out.sample(name, &labels, read(&values[kind as usize]));
        }
    }
    out.header(
        "messageu_connections_refused_total",
        "counter",
        "Connections closed at once by the connection caps.",
    );
    let refused = read(&metrics.connections_refused);
    out.sample("messageu_connections_refused_total", "", refused);
}

fn errors(out: &mut Text, metrics: &Metrics) {
    out.header(
        "messageu_errors_total",
        "counter",
        "Requests answered with 9000, by cause.",
    );
    for cause in ErrorCause::ALL {
        let labels = format!("cause=\"{}\"", cause.name());
        out.sample(
            "messageu_errors_total",
            &labels,
            read(&metrics.errors[cause as usize]),
        );
    }
    out.header(
        "messageu_storage_failures_total",
        "counter",
        "Commits and log flushes that failed; every reply waiting for them became 9000.",
    );
    for (step, name) in [
        (StorageStep::Commit, "commit"),
        (StorageStep::Flush, "flush"),
    ] {
        let failures = read(&metrics.storage_failures[step as usize]);
        out.sample(
            "messageu_storage_failures_total",
            &format!("step=\"{name}\""),
            failures,
        );
    }
}

fn queue(out: &mut Text, metrics: &Metrics) {
    let queue = metrics.queue();
    let gauges = [
        (
            "messageu_queued_messages",
            "Messages waiting to be pulled.",
            queue.messages,
        ),
        (
            "messageu_queued_bytes",
            "Content bytes of the messages waiting.",
            queue.bytes,
        ),
        (
            "messageu_database_bytes",
            "The database file and its log.",
            metrics.database_bytes(),
        ),
    ];
    for (name, help, value) in gauges {
        out.header(name, "gauge", help);
        out.sample(name, "", value);
    }
    let counters = [
        (
            "messageu_messages_stored_total",
            "Messages stored (committed).",
            queue.stored,
        ),
        (
            "messageu_messages_delivered_total",
            "Messages deleted after a pull or an acknowledgement.",
            queue.delivered,
        ),
        (
            "messageu_messages_pushed_total",
            "Messages pushed on subscribed connections, repeats included.",
            metrics.pushed_total(),
        ),
    ];
    for (name, help, value) in counters {
        out.header(name, "counter", help);
        out.sample(name, "", value);
    }
}

fn storage(out: &mut Text, metrics: &Metrics) {
    out.header(
        "messageu_commit_duration_seconds",
        "histogram",
        "Time to commit one round's transaction.",
    );
    out.histogram(
        "messageu_commit_duration_seconds",
        "",
        &metrics.commits.snapshot(),
    );
    out.header(
        "messageu_fsync_duration_seconds",
        "histogram",
        "Time to flush the log to disk after commits that acknowledge writes (durability full).",
    );
    out.histogram(
        "messageu_fsync_duration_seconds",
        "",
        &metrics.flushes.snapshot(),
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::{Code, RequestCode};

    #[test]
    fn samples_follow_the_text_format() {
        let metrics = Metrics::default();
        let list = Code::Classic(RequestCode {
            edition: Edition::Y2024,
            operation: Operation::ListClients,
        });
        metrics.request(list, Duration::from_micros(30), None);
        metrics.request(
            list,
            Duration::from_millis(2),
            Some(ErrorCause::UnknownCaller),
        );
        metrics.connection_opened();
        metrics.connection_classified(ConnectionKind::New, ConnectionKind::Padded);
        let text = encode(&metrics);
        for line in [
            "# TYPE messageu_requests_total counter",
            "messageu_requests_total{edition=\"2024-25\",operation=\"list\"} 2",
            "messageu_requests_total{edition=\"2021\",operation=\"register\"} 0",
            "messageu_request_duration_seconds_bucket{edition=\"2024-25\",operation=\"list\",le=\"0.000025\"} 0",
            "messageu_request_duration_seconds_bucket{edition=\"2024-25\",operation=\"list\",le=\"0.00005\"} 1",
            "messageu_request_duration_seconds_bucket{edition=\"2024-25\",operation=\"list\",le=\"+Inf\"} 2",
            "messageu_errors_total{cause=\"unknown_caller\"} 1",
            "messageu_connections_open{kind=\"new\"} 0",
            "messageu_connections_open{kind=\"padded\"} 1",
            "messageu_connections_total{kind=\"new\"} 1",
            "messageu_commit_duration_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        // Every sample's metric has its TYPE line before it.
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(
                    typed.iter().any(|t| name.starts_with(t.as_str())),
                    "untyped sample {line}"
                );
            }
        }
    }
}
