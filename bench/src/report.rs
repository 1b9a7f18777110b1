//! The human-readable report and the markdown rows `scripts/bench.sh` collects into one table.

use std::fmt::Write;
use std::io;
use std::time::Duration;

use messageu_protocol::Operation;

use crate::run::{LoadOutcome, Measured, Plan};
use crate::stats::{ErrorKind, Percentiles};

/// One invocation's results.
pub struct Report<'a> {
    pub plan: &'a Plan,
    pub measured: &'a Measured,
    /// What the durability column says (the generator cannot see the server's setting).
    pub durability: &'a str,
}

const MARKDOWN_COLUMNS: [&str; 17] = [
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
    "served",
    "lost/dup/corrupt",
    "server RSS MiB",
    "CPU cores: server, gen (floor, gen)",
];

/// The header of the markdown table whose rows [`Report::markdown_rows`] prints.
pub fn markdown_header() -> String {
    table_header(&MARKDOWN_COLUMNS)
}

/// A markdown table's header line and separator line.
pub fn table_header(columns: &[&str]) -> String {
    let separators = vec!["---"; columns.len()];
    format!("| {} |\n|{}|\n", columns.join(" | "), separators.join("|"))
}

/// The rounds of one side combined, for totals and percentiles.
struct Side(LoadOutcome);

impl Side {
    fn of(rounds: &[LoadOutcome]) -> Option<Side> {
        LoadOutcome::combine(rounds).map(Side)
    }

    fn rate(&self, operation: Option<Operation>) -> String {
        rate(completed(&self.0, operation), self.0.window)
    }

    fn percentiles(&self, operation: Operation) -> Option<Percentiles> {
        self.0.stats.op(operation).percentiles()
    }

    fn errors(&self, operation: Operation) -> u64 {
        self.0.stats.op(operation).error_count()
    }

    fn cores(&self) -> String {
        cores(self.0.subject_cpu, self.0.elapsed)
    }

    fn generator_cores(&self) -> String {
        cores(Some(self.0.generator_cpu), self.0.elapsed)
    }
}

impl Report<'_> {
    fn operations(&self) -> &'static [Operation] {
        self.plan.mix.cycle()
    }

    /// The median over rounds of server throughput / floor throughput, for one operation or
    /// (with `None`) all of them: each round's pair was measured back to back.
    fn ratio(&self, operation: Option<Operation>) -> String {
        let ratios = self
            .measured
            .server
            .iter()
            .zip(&self.measured.floor)
            .filter_map(|(server, floor)| {
                let per_second = |outcome: &LoadOutcome| {
                    completed(outcome, operation) as f64 / outcome.window.as_secs_f64()
                };
                let floor_rate = per_second(floor);
                (floor_rate > 0.0).then(|| per_second(server) / floor_rate)
            })
            .collect();
        median(ratios).map_or("-".into(), |ratio| format!("{ratio:.2}"))
    }

    /// The multi-line report for people.
    pub fn human(&self) -> String {
        let Some(server) = Side::of(&self.measured.server) else {
            return "no measured window\n".into();
        };
        let floor = Side::of(&self.measured.floor);
        let mut out = String::new();
        self.write_heading(&mut out);
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
            let p = server.percentiles(operation);
            let floor_p = floor
                .as_ref()
                .and_then(|floor| floor.percentiles(operation));
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} {:>6}",
                operation_name(operation),
                server.rate(Some(operation)),
                millis(p.map(|p| p.p50)),
                millis(p.map(|p| p.p90)),
                millis(p.map(|p| p.p99)),
                millis(p.map(|p| p.p999)),
                millis(p.map(|p| p.max)),
                server.errors(operation),
                floor
                    .as_ref()
                    .map_or("-".into(), |floor| floor.rate(Some(operation))),
                millis(floor_p.map(|p| p.p50)),
                millis(floor_p.map(|p| p.p99)),
                self.ratio(Some(operation)),
            );
        }
        if self.operations().len() > 1 {
            let _ = writeln!(
                out,
                "{:<10} {:>9} {:>52} | {:>9} {:>17} {:>6}",
                "all",
                server.rate(None),
                "",
                floor.as_ref().map_or("-".into(), |floor| floor.rate(None)),
                "",
                self.ratio(None),
            );
        }
        let _ = writeln!(
            out,
            "ratio: server req/s / floor req/s, median over rounds (the floor: the same clients, \
             requests and reply sizes against an echo server that does no work)"
        );
        if let Some(error) = &self.measured.floor_error {
            let _ = writeln!(out, "no floor: {error}");
        }
        let _ = writeln!(out);
        self.write_outcome(&mut out, &server, floor.as_ref());
        out
    }

    fn write_heading(&self, out: &mut String) {
        let plan = self.plan;
        let _ = writeln!(
            out,
            "messageu-bench against {} (edition {}): {} clients, mix {}, {}-byte content, {}",
            plan.addrs_text(),
            plan.edition.name(),
            plan.clients,
            plan.mix.name(),
            plan.size,
            plan.style.name(),
        );
        let _ = writeln!(
            out,
            "registered in {:.3} s; {} round(s) of {:.1} s against the server, each followed by \
             one against the floor, after {:.1} s of warm-up; {} generator threads",
            self.measured.registration.as_secs_f64(),
            self.measured.server.len(),
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            plan.threads.min(plan.clients as usize),
        );
        let _ = writeln!(out);
    }

    fn write_outcome(&self, out: &mut String, server: &Side, floor: Option<&Side>) {
        for &operation in self.operations() {
            let op = server.0.stats.op(operation);
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
        let delivery = &self.measured.delivery;
        let v = &delivery.verdict;
        let _ = writeln!(
            out,
            "delivery: acknowledged {}, delivered {}, lost {}, duplicated {}, corrupted {}; \
             unacknowledged {} ({} delivered anyway); drain errors {}",
            v.acknowledged,
            v.delivered,
            v.lost,
            v.duplicated,
            v.corrupted,
            v.unacknowledged,
            v.delivered_unacknowledged,
            delivery.drain_errors,
        );
        if let Some(p) = delivery.delays.percentiles() {
            let _ = writeln!(
                out,
                "delivery delay, from a send's reply to the reply carrying its message: \
                 p50 {} ms, p99 {} ms, max {} ms",
                millis(Some(p.p50)),
                millis(Some(p.p99)),
                millis(Some(p.max)),
            );
        }
        let _ = writeln!(
            out,
            "clients served in every window: {}/{}",
            server.0.served, self.plan.clients
        );
        let _ = writeln!(
            out,
            "server: peak RSS {} MiB, CPU {} cores; generator {} cores",
            mebibytes(&delivery.peak_rss),
            server.cores(),
            server.generator_cores(),
        );
        if let Some(floor) = floor {
            let _ = writeln!(
                out,
                "floor: CPU {} cores; generator {} cores",
                floor.cores(),
                floor.generator_cores(),
            );
        }
    }

    /// One markdown row per operation of the mix.
    pub fn markdown_rows(&self) -> String {
        let Some(server) = Side::of(&self.measured.server) else {
            return String::new();
        };
        let floor = Side::of(&self.measured.floor);
        let delivery = &self.measured.delivery;
        let v = &delivery.verdict;
        let mut out = String::new();
        for &operation in self.operations() {
            let p = server.percentiles(operation);
            let floor_p99 = floor
                .as_ref()
                .and_then(|floor| floor.percentiles(operation))
                .map(|p| p.p99);
            let cells = [
                self.plan.clients.to_string(),
                self.plan.mix.name().to_string(),
                self.durability.to_string(),
                operation_name(operation).to_string(),
                server.rate(Some(operation)),
                floor
                    .as_ref()
                    .map_or("-".into(), |floor| floor.rate(Some(operation))),
                self.ratio(Some(operation)),
                millis(p.map(|p| p.p50)),
                millis(p.map(|p| p.p99)),
                millis(p.map(|p| p.p999)),
                millis(p.map(|p| p.max)),
                millis(floor_p99),
                server.errors(operation).to_string(),
                format!("{}/{}", server.0.served, self.plan.clients),
                format!("{}/{}/{}", v.lost, v.duplicated, v.corrupted),
                mebibytes(&delivery.peak_rss),
                format!(
                    "{}, {} ({}, {})",
                    server.cores(),
                    server.generator_cores(),
                    floor.as_ref().map_or("-".into(), Side::cores),
                    floor.as_ref().map_or("-".into(), Side::generator_cores),
                ),
            ];
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Register => "register",
        Operation::ListClients => "list",
        Operation::PublicKey => "pubkey",
        Operation::SendMessage => "send",
        Operation::PullMessages => "pull",
    }
}

/// Successful replies of one operation, or of all with `None`.
pub fn completed(outcome: &LoadOutcome, operation: Option<Operation>) -> u64 {
    match operation {
        Some(operation) => outcome.stats.op(operation).completed,
        None => outcome.stats.completed(),
    }
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

pub fn rate(completed: u64, window: Duration) -> String {
    format!("{:.0}", completed as f64 / window.as_secs_f64())
}

/// Milliseconds with three significant digits or so; `-` when nothing was measured.
pub fn millis(duration: Option<Duration>) -> String {
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

/// CPU time as cores kept busy over `elapsed`; `-` when unknown.
pub fn cores(cpu: Option<Duration>, elapsed: Duration) -> String {
    cpu.map_or("-".into(), |cpu| {
        format!(
            "{:.2}",
            cpu.as_secs_f64() / elapsed.as_secs_f64().max(f64::EPSILON)
        )
    })
}

pub fn mebibytes(bytes: &Option<io::Result<u64>>) -> String {
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
        assert_eq!(rate(1500, Duration::from_secs(3)), "500");
        assert_eq!(
            cores(Some(Duration::from_millis(500)), Duration::from_secs(1)),
            "0.50"
        );
        assert_eq!(cores(None, Duration::from_secs(1)), "-");
    }

    #[test]
    fn medians_take_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![0.9, 0.1, 0.5]), Some(0.5));
        assert_eq!(median(vec![0.4, 0.2, 0.8, 0.6]), Some(0.5));
    }

    #[test]
    fn the_header_has_a_separator_for_every_column() {
        let header = markdown_header();
        let lines: Vec<&str> = header.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].matches('|').count(), lines[1].matches('|').count());
    }
}
