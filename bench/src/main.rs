//! `messageu-bench`: a closed-loop load generator for MessageU servers that measures
//! throughput and latency per operation, checks exactly-once delivery, and measures the same
//! load against a do-nothing echo server (the floor) so that results compare across machines.
//!
//! A binary rather than a library module: it is a tool, not part of the server's API, and the
//! end-to-end tests run it exactly as `scripts/bench.sh` and users do.

mod accounts;
mod cli;
mod driver;
mod floor;
mod idle;
mod ledger;
mod phases;
mod procstat;
mod push;
mod push_report;
mod record;
mod report;
mod run;
mod session;
mod stats;
mod subscriber_conn;
mod subscribers;
mod workload;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use push_report::PushReport;
use report::Report;
use run::RunError;
use workload::Mix;

/// Exit status when an acknowledged message was lost, duplicated or corrupted.
const DELIVERY_FAILED: u8 = 1;
/// Exit status when the run could not be carried out.
const RUN_FAILED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.markdown_header {
        if cli.mix == Mix::Push {
            print!("{}", push_report::markdown_header());
        } else {
            print!("{}", report::markdown_header());
        }
        return ExitCode::SUCCESS;
    }
    let plan = match cli.plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("messageu-bench: {error}");
            return ExitCode::from(RUN_FAILED);
        }
    };
    // Each client holds a descriptor, and so does each floor connection in this process.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("messageu-bench: cannot raise the descriptor limit: {error}");
    }
    if let Some(idle) = cli.idle_plan() {
        return match idle::measure(&plan, &idle) {
            Ok(measured) => {
                print!("{}", measured.human(&plan, &idle));
                if measured.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(DELIVERY_FAILED)
                }
            }
            Err(error) => run_failed(&error),
        };
    }
    let (human, rows, clean) = if plan.mix == Mix::Push {
        let measured = match push::measure(&plan) {
            Ok(measured) => measured,
            Err(error) => return run_failed(&error),
        };
        let report = PushReport {
            plan: &plan,
            measured: &measured,
            durability: &cli.durability_label,
        };
        (report.human(), report.markdown_rows(), measured.is_clean())
    } else {
        let measured = match run::measure(&plan, !cli.no_floor) {
            Ok(measured) => measured,
            Err(error) => return run_failed(&error),
        };
        let report = Report {
            plan: &plan,
            measured: &measured,
            durability: &cli.durability_label,
        };
        let clean = measured.delivery.verdict.is_exactly_once();
        (report.human(), report.markdown_rows(), clean)
    };
    if cli.markdown {
        eprint!("{human}");
        print!("{rows}");
    } else {
        print!("{human}");
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DELIVERY_FAILED)
    }
}

fn run_failed(error: &RunError) -> ExitCode {
    eprintln!("messageu-bench: {error}");
    ExitCode::from(RUN_FAILED)
}
