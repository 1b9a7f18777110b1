//! The report of the push mix: messages per second and delivery delay of push against
//! send-pull with as many clients in the same invocation, and how delivery went.

use std::fmt::Write;

use messageu_protocol::Operation;

use crate::ledger::Verdict;
use crate::push::PushMeasured;
use crate::report::{completed, cores, mebibytes, median, millis, rate, table_header};
use crate::run::{Delivery, LoadOutcome, Plan};
use crate::stats::Percentiles;

const COLUMNS: [&str; 14] = [
    "clients",
    "durability",
    "mix",
    "msg/s",
    "push / send-pull",
    "delivery p50 ms",
    "delivery p99 ms",
    "delivery p99.9 ms",
    "delivery max ms",
    "send p99 ms",
    "errors",
    "lost/dup/corrupt",
    "server RSS MiB",
    "server CPU cores",
];

/// The header of the table whose rows [`PushReport::markdown_rows`] prints.
pub fn markdown_header() -> String {
    table_header(&COLUMNS)
}

/// One push invocation's results.
pub struct PushReport<'a> {
    pub plan: &'a Plan,
    pub measured: &'a PushMeasured,
    pub durability: &'a str,
}

/// One side's rounds combined, and its delivery.
struct Side<'a> {
    name: &'static str,
    combined: LoadOutcome,
    delivery: &'a Delivery,
}

impl Side<'_> {
    fn messages_per_second(&self) -> String {
        rate(
            completed(&self.combined, Some(Operation::SendMessage)),
            self.combined.window,
        )
    }

    fn send(&self) -> Option<Percentiles> {
        self.combined.stats.op(Operation::SendMessage).percentiles()
    }

    fn delays(&self) -> Option<Percentiles> {
        self.delivery.delays.percentiles()
    }

    fn errors(&self) -> u64 {
        self.combined.stats.op(Operation::SendMessage).error_count()
    }

    fn server_cores(&self) -> String {
        cores(self.combined.subject_cpu, self.combined.elapsed)
    }
}

impl PushReport<'_> {
    fn sides(&self) -> Option<[Side<'_>; 2]> {
        let measured = self.measured;
        Some([
            Side {
                name: "push",
                combined: LoadOutcome::combine(&measured.push)?,
                delivery: &measured.push_delivery,
            },
            Side {
                name: "send-pull",
                combined: LoadOutcome::combine(&measured.send_pull)?,
                delivery: &measured.send_pull_delivery,
            },
        ])
    }

    /// The median over rounds of push messages/s over send-pull messages/s.
    fn ratio(&self) -> String {
        let per_second = |outcome: &LoadOutcome| {
            completed(outcome, Some(Operation::SendMessage)) as f64 / outcome.window.as_secs_f64()
        };
        let ratios = self
            .measured
            .push
            .iter()
            .zip(&self.measured.send_pull)
            .filter(|(_, send_pull)| per_second(send_pull) > 0.0)
            .map(|(push, send_pull)| per_second(push) / per_second(send_pull))
            .collect();
        median(ratios).map_or("-".into(), |ratio| format!("{ratio:.2}"))
    }

    /// The multi-line report for people.
    pub fn human(&self) -> String {
        let Some(sides) = self.sides() else {
            return "no measured window\n".into();
        };
        let plan = self.plan;
        let measured = self.measured;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "messageu-bench against {} (edition {}): mix push, {} senders to {} subscribed \
             recipients, beside send-pull with {} clients; {}-byte content",
            plan.addr(),
            plan.edition.name(),
            plan.clients,
            plan.clients,
            plan.clients,
            plan.size,
        );
        let _ = writeln!(
            out,
            "recipients' keys made, registered and subscribed in {:.3} s; {} round(s) of {:.1} s \
             of push, each followed by one of send-pull, after {:.1} s of warm-up",
            measured.login.as_secs_f64(),
            measured.push.len(),
            plan.duration.as_secs_f64(),
            plan.warmup.as_secs_f64(),
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<10} {:>8} | {:>28} {:>8} {:>8} | {:>8} {:>8} | {:>6} {:>6}",
            "mix",
            "msg/s",
            "delivery p50 ms",
            "p99 ms",
            "max ms",
            "send p50",
            "p99",
            "errors",
            "cores"
        );
        for side in &sides {
            let delays = side.delays();
            let send = side.send();
            let _ = writeln!(
                out,
                "{:<10} {:>8} | {:>28} {:>8} {:>8} | {:>8} {:>8} | {:>6} {:>6}",
                side.name,
                side.messages_per_second(),
                millis(delays.map(|p| p.p50)),
                millis(delays.map(|p| p.p99)),
                millis(delays.map(|p| p.max)),
                millis(send.map(|p| p.p50)),
                millis(send.map(|p| p.p99)),
                side.errors(),
                side.server_cores(),
            );
        }
        let _ = writeln!(
            out,
            "push / send-pull messages per second, median over rounds: {}",
            self.ratio()
        );
        let _ = writeln!(
            out,
            "delivery delay: from the send's reply read by the sender to the message read by its \
             recipient (pushed, or in a pull reply), for messages sent and delivered in a window"
        );
        let _ = writeln!(out);
        for side in &sides {
            let _ = writeln!(out, "{}", verdict_line(side.name, &side.delivery.verdict));
        }
        let _ = writeln!(
            out,
            "recipients: {} connection errors{}; their loops used {:.2} s of CPU",
            measured.recipient_errors,
            measured
                .recipient_error_samples
                .first()
                .map_or(String::new(), |first| format!(" (first: {first})")),
            measured.recipient_cpu.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "server: peak RSS {} MiB",
            mebibytes(&measured.send_pull_delivery.peak_rss)
        );
        out
    }

    /// A row for push and one for send-pull.
    pub fn markdown_rows(&self) -> String {
        let Some(sides) = self.sides() else {
            return String::new();
        };
        let mut out = String::new();
        for side in &sides {
            let delays = side.delays();
            let v = &side.delivery.verdict;
            let ratio = if side.name == "push" {
                self.ratio()
            } else {
                "1".into()
            };
            let cells = [
                self.plan.clients.to_string(),
                self.durability.to_string(),
                side.name.to_string(),
                side.messages_per_second(),
                ratio,
                millis(delays.map(|p| p.p50)),
                millis(delays.map(|p| p.p99)),
                millis(delays.map(|p| p.p999)),
                millis(delays.map(|p| p.max)),
                millis(side.send().map(|p| p.p99)),
                side.errors().to_string(),
                format!("{}/{}/{}", v.lost, v.duplicated, v.corrupted),
                mebibytes(&side.delivery.peak_rss),
                side.server_cores(),
            ];
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        out
    }
}

fn verdict_line(name: &str, v: &Verdict) -> String {
    format!(
        "delivery ({name}): acknowledged {}, delivered {}, pushed {}, lost {}, duplicated {}, \
         corrupted {}, pulled only {}; acknowledgements listed {}, deleted {}; unacknowledged {} \
         ({} delivered anyway)",
        v.acknowledged,
        v.delivered,
        v.pushed,
        v.lost,
        v.duplicated,
        v.corrupted,
        v.pulled_only,
        v.acks_listed,
        v.acks_deleted,
        v.unacknowledged,
        v.delivered_unacknowledged,
    )
}
