//! The human-readable report and the markdown rows `scripts/bench.sh` collects into one table.

use std::fmt::Write;
use std::io;
use std::time::Duration;

use messageu::protocol::Operation;

use crate::run::{FloorRun, LoadOutcome, Plan, ServerRun};
use crate::stats::{ErrorKind, OpStats};

/// One invocation's results.
pub struct Report<'a> {
    pub plan: &'a Plan,
    pub server: &'a ServerRun,
    pub floor: Option<&'a FloorRun>,
    /// What the durability column says (the generator cannot see the server's setting).
    pub durability: &'a str,
}

const MARKDOWN_COLUMNS: [&str; 16] = [
    "clients",
    "mix",
    "durability",
    "op",
    "req/s",
    "floor req/s",
    "ratio",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "floor p99 ms",
    "errors",
    "lost/dup/corrupt",
    "server RSS MiB",
    "CPU cores server / gen (gen at floor)",
];

/// The header of the markdown table whose rows [`Report::markdown_rows`] prints.
pub fn markdown_header() -> String {
    let separators = vec!["---"; MARKDOWN_COLUMNS.len()];
    format!(
        "| {} |\n|{}|\n",
        MARKDOWN_COLUMNS.join(" | "),
        separators.join("|")
    )
}

impl Report<'_> {
    fn operations(&self) -> &'static [Operation] {
        self.plan.mix.cycle()
    }

    fn floor_op(&self, operation: Operation) -> Option<&OpStats> {
        self.floor.map(|floor| floor.load.stats.op(operation))
    }

    /// The multi-line report for people.
    pub fn human(&self) -> String {
        let plan = self.plan;
        let server = self.server;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "messageu-bench against {} (edition {}): {} clients, mix {}, {}-byte content, {}",
            plan.addr,
            plan.edition.name(),
            plan.clients,
            plan.mix.name(),
            plan.size,
            plan.style.name(),
        );
        let _ = writeln!(
            out,
            "registered in {:.3} s; measured {:.1} s after {:.1} s of warm-up; {} generator threads",
            server.registration.as_secs_f64(),
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            plan.threads.min(plan.clients as usize),
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} {:>6}",
            "operation",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "floor/s",
            "p50 ms",
            "p99 ms",
            "ratio"
        );
        for &operation in self.operations() {
            let op = server.load.stats.op(operation);
            let p = op.percentiles();
            let floor = self.floor_op(operation);
            let floor_p = floor.and_then(OpStats::percentiles);
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} {:>6}",
                operation_name(operation),
                rate(op.completed, server.load.window),
                millis(p.map(|p| p.p50)),
                millis(p.map(|p| p.p90)),
                millis(p.map(|p| p.p99)),
                millis(p.map(|p| p.p999)),
                millis(p.map(|p| p.max)),
                op.error_count(),
                self.floor
                    .zip(floor)
                    .map_or("-".into(), |(run, op)| rate(op.completed, run.load.window)),
                millis(floor_p.map(|p| p.p50)),
                millis(floor_p.map(|p| p.p99)),
                ratio(op.completed, floor.map(|op| op.completed)),
            );
        }
        if self.operations().len() > 1 {
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>61} | {:>9} {:>26}",
                "all",
                rate(server.load.stats.completed(), server.load.window),
                "",
                self.floor.map_or("-".into(), |run| rate(
                    run.load.stats.completed(),
                    run.load.window
                )),
                ratio(
                    server.load.stats.completed(),
                    self.floor.map(|run| run.load.stats.completed())
                ),
            );
        }
        let _ = writeln!(out, "ratio: server requests per second / floor requests per second (the floor: same clients and sizes, an echo server that does no work)");
        let _ = writeln!(out);
        self.write_errors(&mut out);
        let v = &server.verdict;
        let _ = writeln!(
            out,
            "delivery: acknowledged {}, delivered {}, lost {}, duplicated {}, corrupted {}; unacknowledged {} ({} delivered anyway); drain errors {}",
            v.acknowledged,
            v.delivered,
            v.lost,
            v.duplicated,
            v.corrupted,
            v.unacknowledged,
            v.delivered_unacknowledged,
            server.drain_errors,
        );
        let _ = writeln!(
            out,
            "clients served in the window: {}/{}",
            server.load.served, plan.clients
        );
        let _ = writeln!(
            out,
            "server: peak RSS {} MiB, CPU {} cores",
            mebibytes(&server.peak_rss),
            cores_of(&server.server_cpu, &server.load),
        );
        let _ = write!(
            out,
            "generator: {} cores",
            cores(server.load.generator_cpu, server.load.elapsed),
        );
        match self.floor {
            Some(floor) => {
                let _ = writeln!(
                    out,
                    "; floor run: generator {} cores, floor server {} cores",
                    cores(floor.load.generator_cpu, floor.load.elapsed),
                    cores(floor.floor_cpu, floor.load.elapsed),
                );
            }
            None => {
                let _ = writeln!(out, "; no floor run");
            }
        }
        out
    }

    fn write_errors(&self, out: &mut String) {
        for &operation in self.operations() {
            let op = self.server.load.stats.op(operation);
            if op.error_count() == 0 {
                continue;
            }
            let kinds: Vec<String> = ErrorKind::ALL
                .iter()
                .filter(|&&kind| op.errors[kind as usize] > 0)
                .map(|&kind| format!("{} {}", kind.name(), op.errors[kind as usize]))
                .collect();
            let _ = writeln!(
                out,
                "errors in {}: {}",
                operation_name(operation),
                kinds.join(", ")
            );
        }
    }

    /// One markdown row per operation of the mix.
    pub fn markdown_rows(&self) -> String {
        let server = self.server;
        let v = &server.verdict;
        let mut out = String::new();
        for &operation in self.operations() {
            let op = server.load.stats.op(operation);
            let p = op.percentiles();
            let floor = self.floor_op(operation);
            let cells = [
                self.plan.clients.to_string(),
                self.plan.mix.name().to_string(),
                self.durability.to_string(),
                operation_name(operation).to_string(),
                rate(op.completed, server.load.window),
                self.floor
                    .zip(floor)
                    .map_or("-".into(), |(run, op)| rate(op.completed, run.load.window)),
                ratio(op.completed, floor.map(|op| op.completed)),
                millis(p.map(|p| p.p50)),
                millis(p.map(|p| p.p99)),
                millis(p.map(|p| p.p999)),
                millis(p.map(|p| p.max)),
                millis(floor.and_then(OpStats::percentiles).map(|p| p.p99)),
                op.error_count().to_string(),
                format!("{}/{}/{}", v.lost, v.duplicated, v.corrupted),
                mebibytes(&server.peak_rss),
                format!(
                    "{} / {} ({})",
                    cores_of(&server.server_cpu, &server.load),
                    cores(server.load.generator_cpu, server.load.elapsed),
                    self.floor.map_or("-".into(), |floor| cores(
                        floor.load.generator_cpu,
                        floor.load.elapsed
                    )),
                ),
            ];
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Register => "register",
        Operation::ListClients => "list",
        Operation::PublicKey => "pubkey",
        Operation::SendMessage => "send",
        Operation::PullMessages => "pull",
    }
}

fn rate(completed: u64, window: Duration) -> String {
    format!("{:.0}", completed as f64 / window.as_secs_f64())
}

fn ratio(server: u64, floor: Option<u64>) -> String {
    match floor {
        Some(floor) if floor > 0 => format!("{:.2}", server as f64 / floor as f64),
        _ => "-".into(),
    }
}

/// Milliseconds with three significant digits or so; `-` when nothing was measured.
fn millis(duration: Option<Duration>) -> String {
    let Some(duration) = duration else {
        return "-".into();
    };
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn cores(cpu: Duration, elapsed: Duration) -> String {
    format!(
        "{:.2}",
        cpu.as_secs_f64() / elapsed.as_secs_f64().max(f64::EPSILON)
    )
}

fn cores_of(cpu: &Option<io::Result<Duration>>, load: &LoadOutcome) -> String {
    match cpu {
        Some(Ok(cpu)) => cores(*cpu, load.elapsed),
        Some(Err(_)) | None => "-".into(),
    }
}

fn mebibytes(bytes: &Option<io::Result<u64>>) -> String {
    match bytes {
        Some(Ok(bytes)) => format!("{:.1}", *bytes as f64 / (1024.0 * 1024.0)),
        Some(Err(_)) | None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(millis(Some(Duration::from_micros(52))), "0.052");
        assert_eq!(millis(Some(Duration::from_micros(1_520))), "1.5");
        assert_eq!(millis(Some(Duration::from_millis(250))), "250");
        assert_eq!(millis(None), "-");
        assert_eq!(ratio(50, Some(100)), "0.50");
        assert_eq!(ratio(50, Some(0)), "-");
        assert_eq!(rate(1500, Duration::from_secs(3)), "500");
        assert_eq!(
            cores(Duration::from_millis(500), Duration::from_secs(1)),
            "0.50"
        );
    }

    #[test]
    fn the_header_has_a_separator_for_every_column() {
        let header = markdown_header();
        let lines: Vec<&str> = header.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].matches('|').count(), lines[1].matches('|').count());
    }
}
