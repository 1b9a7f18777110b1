//! The idle-subscribers measurement: many subscribed connections (a few ids, each on many
//! connections, every connection proving on its own, protocol §E3, §E5) that then do nothing
//! for a while: the server's resident memory, the CPU it spends meanwhile, and how soon one
//! message then reaches every connection of its recipient.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use messageu_protocol::client::{check_reply_code, parse_sent, send_request};
use messageu_protocol::{MessageType, Operation, ReplyHeader, REPLY_HEADER_LEN};

use crate::accounts::{self, Account};
use crate::ledger::Via;
use crate::procstat;
use crate::push::await_subscribed;
use crate::record::{self, Stamp};
use crate::report::{mebibytes, millis};
use crate::run::{Plan, RunError};
use crate::subscribers::Subscribers;
use crate::workload::Directory;

/// After the last subscription, before the idle window: the server finishes what the logins
/// left (a LastSeen flush, say).
const SETTLE: Duration = Duration::from_secs(1);

/// What to measure.
#[derive(Debug, Clone)]
pub struct IdlePlan {
    pub connections: usize,
    /// Ids the connections share, round robin.
    pub ids: usize,
    /// How long to stay idle.
    pub idle: Duration,
}

/// What was measured.
#[derive(Debug)]
pub struct IdleMeasured {
    /// Making the keys and registering the ids.
    pub accounts: Duration,
    /// Connecting, logging in and subscribing every connection.
    pub login: Duration,
    /// The generator's CPU time during the logins (RSA decryption of every challenge).
    pub login_cpu: Duration,
    /// The server's CPU time during the logins, and during the idle window.
    pub server_login_cpu: Option<Duration>,
    pub server_idle_cpu: Option<Duration>,
    /// The server's resident memory at the end of the idle window, and its peak.
    pub server_rss: Option<u64>,
    pub server_peak_rss: Option<u64>,
    /// The send's round trip (durable).
    pub send: Duration,
    /// From the send's reply to the push on the first and the last connection of its id.
    pub first_push: Option<Duration>,
    pub last_push: Option<Duration>,
    /// From the send's request to the push on the last connection: the commit and its flush
    /// included.
    pub last_push_from_request: Option<Duration>,
    /// Connections of the recipient id, and how many got the push.
    pub recipient_connections: usize,
    pub pushed: usize,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

impl IdleMeasured {
    /// Every connection subscribed, none failed, and the push reached every connection of
    /// its id.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.pushed == self.recipient_connections
    }

    /// The report for people.
    pub fn human(&self, plan: &Plan, idle: &IdlePlan) -> String {
        let cpu_ms = |cpu: Option<Duration>| {
            cpu.map_or("-".into(), |cpu| {
                format!("{:.1}", cpu.as_secs_f64() * 1000.0)
            })
        };
        let mib = |bytes: Option<u64>| mebibytes(&bytes.map(Ok));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "messageu-bench against {}: {} subscribed connections, {} ids ({} connections each, \
             every one proving on its own), idle {:.1} s",
            plan.addr(),
            idle.connections,
            idle.ids,
            idle.connections.div_ceil(idle.ids),
            idle.idle.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "keys made and ids registered in {:.2} s; logged in and subscribed in {:.2} s \
             (generator CPU {:.2} s, server CPU {} ms)",
            self.accounts.as_secs_f64(),
            self.login.as_secs_f64(),
            self.login_cpu.as_secs_f64(),
            cpu_ms(self.server_login_cpu),
        );
        let _ = writeln!(
            out,
            "server while idle: CPU {} ms over {:.1} s; RSS {} MiB (peak {} MiB)",
            cpu_ms(self.server_idle_cpu),
            idle.idle.as_secs_f64(),
            mib(self.server_rss),
            mib(self.server_peak_rss),
        );
        let _ = writeln!(
            out,
            "one message: send round trip {} ms; pushed to {}/{} connections of its id, \
             first {} ms, last {} ms after the send's reply ({} ms after its request)",
            millis(Some(self.send)),
            self.pushed,
            self.recipient_connections,
            millis(self.first_push),
            millis(self.last_push),
            millis(self.last_push_from_request),
        );
        let _ = writeln!(
            out,
            "errors: {}{}",
            self.errors,
            self.error_samples
                .first()
                .map_or(String::new(), |first| format!(" (first: {first})")),
        );
        out
    }
}

/// Subscribes the connections, stays idle, then sends one message to the first id.
pub fn measure(plan: &Plan, idle: &IdlePlan) -> Result<IdleMeasured, RunError> {
    let started = Instant::now();
    let run = fastrand::u32(..);
    // One more account than subscribed ids: the sender, never subscribed.
    let keys = accounts::generate_keys(idle.ids + 1, plan.threads)?;
    let mut accounts = accounts::register(plan.addr(), plan.edition, run, 0, keys, plan.timeout)?;
    let sender = accounts.pop().expect("one account more than the ids");
    let accounts_made = started.elapsed();

    let directory = Directory::new(
        accounts
            .iter()
            .chain([&sender])
            .map(|account| account.id)
            .collect(),
    );
    let connections: Vec<usize> = (0..idle.connections).map(|c| c % idle.ids).collect();
    let recipient = 0;
    let recipient_connections = connections.iter().filter(|&&a| a == recipient).count();
    let pid = plan.server_pid;
    let server_cpu = || pid.and_then(|pid| procstat::process_cpu(pid).ok());
    let own_cpu = || procstat::process_cpu(std::process::id()).unwrap_or_default();

    let login_started = Instant::now();
    let (server_before, own_before) = (server_cpu(), own_cpu());
    let accounts = Arc::new(accounts);
    let subscribers = Subscribers::start(
        plan.addr(),
        Arc::clone(&accounts),
        &connections,
        Arc::new(directory),
        plan.threads,
        plan.timeout,
    )
    .map_err(RunError::Setup)?;
    // Every connection has `plan.timeout` for its own login; they log in a few at a time.
    let all_logins = plan.timeout + idle.connections as u32 * Duration::from_millis(2);
    let subscribers = await_subscribed(subscribers, idle.connections, all_logins)?;
    let login = login_started.elapsed();
    let login_cpu = own_cpu().saturating_sub(own_before);
    let server_login_cpu = server_cpu().zip(server_before).map(|(a, b)| a - b);

    thread::sleep(SETTLE);
    let idle_before = server_cpu();
    thread::sleep(idle.idle);
    let server_idle_cpu = server_cpu().zip(idle_before).map(|(a, b)| a - b);
    let server_rss = pid.and_then(|pid| procstat::rss(pid).ok());

    let stamp = Stamp {
        sender: sender.index,
        seq: 0,
    };
    let (requested_at, sent_at) = send_one(plan, &sender, &accounts[recipient], stamp)
        .map_err(|error| RunError::Send(error.to_string()))?;
    subscribers.wait_until(plan.timeout, |progress| {
        progress.pushes.load(Ordering::Acquire) >= recipient_connections as u64
    });
    let outcome = subscribers.stop().map_err(RunError::Loop)?;
    let arrivals: Vec<Instant> = outcome
        .ledger
        .receipts_of(stamp)
        .filter(|receipt| receipt.via == Via::Push)
        .map(|receipt| receipt.at)
        .collect();
    let delay = |at: Option<&Instant>| at.map(|at| at.saturating_duration_since(sent_at));
    let last = arrivals.iter().max();
    Ok(IdleMeasured {
        accounts: accounts_made,
        login,
        login_cpu,
        server_login_cpu,
        server_idle_cpu,
        server_rss,
        server_peak_rss: pid.and_then(|pid| procstat::peak_rss(pid).ok()),
        send: sent_at - requested_at,
        first_push: delay(arrivals.iter().min()),
        last_push: delay(last),
        last_push_from_request: last.map(|at| at.saturating_duration_since(requested_at)),
        recipient_connections,
        pushed: arrivals.len(),
        errors: outcome.errors,
        error_samples: outcome.error_samples,
    })
}

/// Sends one message from `sender` to `recipient` on a connection of its own; returns when
/// its request was written and when its reply was read.
fn send_one(
    plan: &Plan,
    sender: &Account,
    recipient: &Account,
    stamp: Stamp,
) -> io::Result<(Instant, Instant)> {
    let mut stream = TcpStream::connect(plan.addr())?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(plan.timeout))?;
    let request = send_request(
        plan.edition,
        sender.id,
        recipient.id,
        MessageType::Text as u8,
        &record::encode(stamp, plan.size),
    );
    let started = Instant::now();
    stream.write_all(&request)?;
    let mut header = [0; REPLY_HEADER_LEN];
    stream.read_exact(&mut header)?;
    let header = ReplyHeader::parse(&header);
    let mut payload = vec![0; header.payload_size as usize];
    stream.read_exact(&mut payload)?;
    let replied = Instant::now();
    check_reply_code(plan.edition, Operation::SendMessage, &header)
        .and_then(|()| parse_sent(&payload))
        .map_err(io::Error::other)?;
    Ok((started, replied))
}
