//! `messageu-bench`: a closed-loop load generator for MessageU servers that measures
//! throughput and latency per operation, checks exactly-once delivery, and measures the same
//! load against a do-nothing echo server (the floor) so that results compare across machines.
//!
//! A binary rather than a library module: it is a tool, not part of the server's API, and the
//! end-to-end tests run it exactly as `scripts/bench.sh` and users do.

mod cli;
mod driver;
mod floor;
mod ledger;
mod phases;
mod procstat;
mod record;
mod report;
mod run;
mod stats;
mod workload;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use report::Report;

/// Exit status when an acknowledged message was lost, duplicated or corrupted.
const DELIVERY_FAILED: u8 = 1;
/// Exit status when the run could not be carried out.
const RUN_FAILED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.markdown_header {
        print!("{}", report::markdown_header());
        return ExitCode::SUCCESS;
    }
    let Some(addr) = cli.addr else {
        eprintln!("messageu-bench: --addr is required");
        return ExitCode::from(RUN_FAILED);
    };
    // Each client holds a descriptor, and so does each floor connection in this process.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("messageu-bench: cannot raise the descriptor limit: {error}");
    }
    let plan = cli.plan(addr);
    let measured = match run::measure(&plan, !cli.no_floor) {
        Ok(measured) => measured,
        Err(error) => {
            eprintln!("messageu-bench: {error}");
            return ExitCode::from(RUN_FAILED);
        }
    };
    let report = Report {
        plan: &plan,
        measured: &measured,
        durability: &cli.durability_label,
    };
    if cli.markdown {
        eprint!("{}", report.human());
        print!("{}", report.markdown_rows());
    } else {
        print!("{}", report.human());
    }
    if measured.delivery.verdict.is_exactly_once() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DELIVERY_FAILED)
    }
}
