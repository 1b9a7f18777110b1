//! Subscribed connections (protocol §E5). Each logs in as its account (hello, challenge, the
//! proof of the decrypted secret, §E2–§E3), subscribes, records every pushed message in its
//! loop's ledger and acknowledges it; ids pushed while an acknowledgement is outstanding go
//! in the next one. A mio loop per thread owns a share of the connections; the loops run in
//! the background, beside the senders' loops, until stopped.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use messageu_protocol::client::pulled_messages;
use messageu_protocol::extension::{hello_payload, parse_capabilities, proof, SECRET_LEN};
use messageu_protocol::push::{acknowledge_payload, parse_count, MAX_ACKNOWLEDGED};
use messageu_protocol::{Extension, Features, MessageId, PushCode, ReplyHeader, REPLY_HEADER_LEN};
use mio::{Events, Poll, Token, Waker};

use crate::accounts::Account;
use crate::driver::{connect, established};
use crate::ledger::{Ledger, Via};
use crate::procstat;
use crate::subscriber_conn::{
    read_available, refused, write_available, Awaiting, Conn, Failure, Stage,
};
use crate::workload::{deliver, Directory};

/// Connections of one loop logging in at a time: enough to keep the server's listen backlog
/// and both cores busy, few enough that none waits in the backlog for seconds.
const MAX_OPENING: usize = 64;
const WAKER: Token = Token(usize::MAX);
/// How often logins are checked for their timeout.
const SWEEP: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 64 << 10;
/// Error texts kept for the report; the rest are only counted.
const ERROR_SAMPLES: usize = 5;

/// What the loops have done so far, for the caller to wait on.
#[derive(Debug, Default)]
pub struct Progress {
    pub subscribed: AtomicUsize,
    pub failed: AtomicUsize,
    pub pushes: AtomicU64,
    /// Pushes whose acknowledgement has not been answered yet.
    pub unacknowledged: AtomicI64,
    stop: AtomicBool,
}

/// What every loop did, merged once they have stopped.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ledger: Ledger,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// CPU time of the loops.
    pub cpu: Duration,
}

/// The running loops.
pub struct Subscribers {
    progress: Arc<Progress>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<io::Result<Outcome>>>,
}

impl Subscribers {
    /// Opens a connection for each entry of `connections` (an index into `accounts`) on
    /// `threads` loops; deliveries are checked against `directory`.
    pub fn start(
        addr: SocketAddr,
        accounts: Arc<Vec<Account>>,
        connections: &[usize],
        directory: Arc<Directory>,
        threads: usize,
        timeout: Duration,
    ) -> io::Result<Subscribers> {
        let progress = Arc::new(Progress::default());
        let threads = threads.clamp(1, connections.len().max(1));
        let mut wakers = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for first in 0..threads {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKER)?);
            let mut subscriber_loop = Loop {
                poll,
                addr,
                accounts: Arc::clone(&accounts),
                directory: Arc::clone(&directory),
                progress: Arc::clone(&progress),
                timeout,
                conns: connections
                    .iter()
                    .skip(first)
                    .step_by(threads)
                    .map(|&account| Conn::new(account))
                    .collect(),
                next_connect: 0,
                opening: 0,
                outcome: Outcome::default(),
                scratch: vec![0; READ_CHUNK],
            };
            handles.push(thread::spawn(move || subscriber_loop.run()));
        }
        Ok(Subscribers {
            progress,
            wakers,
            threads: handles,
        })
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Waits until `done` holds, checking every millisecond; false if `timeout` passed first.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&Progress) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.progress) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Stops the loops (closing their connections) and merges what they recorded.
    pub fn stop(self) -> io::Result<Outcome> {
        self.progress.stop.store(true, Ordering::Release);
        for waker in &self.wakers {
            waker.wake()?;
        }
        let mut merged = Outcome::default();
        for handle in self.threads {
            let outcome = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            merged.ledger.merge(outcome.ledger);
            merged.errors += outcome.errors;
            merged.error_samples.extend(outcome.error_samples);
            merged.cpu += outcome.cpu;
        }
        merged.error_samples.truncate(ERROR_SAMPLES);
        Ok(merged)
    }
}

struct Loop {
    poll: Poll,
    addr: SocketAddr,
    accounts: Arc<Vec<Account>>,
    directory: Arc<Directory>,
    progress: Arc<Progress>,
    timeout: Duration,
    conns: Vec<Conn>,
    /// The next connection to open.
    next_connect: usize,
    /// Connections opened and not yet subscribed.
    opening: usize,
    outcome: Outcome,
    scratch: Vec<u8>,
}

impl Loop {
    fn run(&mut self) -> io::Result<Outcome> {
        let cpu_before = procstat::thread_cpu()?;
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        while !self.progress.stop.load(Ordering::Acquire) {
            self.open_connections(Instant::now());
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
            // Idle subscribers wait for events without a timeout: no wake-ups while idle.
            let wait = (self.opening > 0).then(|| next_sweep.saturating_duration_since(now));
            match self.poll.poll(&mut events, wait) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.serve(event.token().0);
                }
            }
        }
        let mut outcome = std::mem::take(&mut self.outcome);
        outcome.cpu = procstat::thread_cpu()? - cpu_before;
        Ok(outcome)
    }

    fn open_connections(&mut self, now: Instant) {
        while self.opening < MAX_OPENING && self.next_connect < self.conns.len() {
            let slot = self.next_connect;
            self.next_connect += 1;
            self.opening += 1;
            match connect(self.addr, &self.poll, slot) {
                Ok(socket) => {
                    let conn = &mut self.conns[slot];
                    conn.socket = Some(socket);
                    conn.stage = Stage::LoggingIn { since: now };
                }
                Err(error) => self.fail(slot, format!("connect: {error}")),
            }
        }
    }

    /// Gives up logins older than the timeout.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            if let Stage::LoggingIn { since } = self.conns[slot].stage {
                if now - since >= self.timeout {
                    self.fail(slot, format!("not subscribed within {:?}", self.timeout));
                }
            }
        }
    }

    fn serve(&mut self, slot: usize) {
        if let Err(failure) = self.progress_conn(slot) {
            self.fail(slot, failure);
        }
    }

    /// Connects, reads and handles every whole frame, answers, writes what it can.
    fn progress_conn(&mut self, slot: usize) -> Result<(), Failure> {
        let accounts = Arc::clone(&self.accounts);
        let conn = &mut self.conns[slot];
        let Some(socket) = conn.socket.as_ref() else {
            return Ok(());
        };
        if !conn.connected {
            if !established(socket).map_err(|error| format!("connect: {error}"))? {
                return Ok(());
            }
            socket
                .set_nodelay(true)
                .map_err(|error| error.to_string())?;
            conn.connected = true;
            let account = &accounts[conn.account];
            conn.request(Awaiting::Hello, Extension::Hello, account, &hello_payload());
            conn.request(Awaiting::Challenge, Extension::Challenge, account, &[]);
        }
        let Some(socket) = conn.socket.as_mut() else {
            return Ok(());
        };
        let closed = read_available(socket, &mut conn.input, &mut self.scratch)?;
        let now = Instant::now();
        // Taken out while its frames are handled, which needs the whole loop.
        let mut input = std::mem::take(&mut conn.input);
        let mut start = 0;
        while let Some(header) = input.get(start..start + REPLY_HEADER_LEN) {
            let header = ReplyHeader::parse(header.try_into().expect("a header's length"));
            let end = start + REPLY_HEADER_LEN + header.payload_size as usize;
            if input.len() < end {
                break;
            }
            self.frame(slot, &header, &input[start + REPLY_HEADER_LEN..end], now)?;
            start = end;
        }
        input.drain(..start);
        let conn = &mut self.conns[slot];
        conn.input = input;
        let acknowledging = conn
            .awaiting
            .iter()
            .any(|awaiting| matches!(awaiting, Awaiting::Acknowledge(_)));
        if !acknowledging && !conn.to_acknowledge.is_empty() {
            let batch = conn.to_acknowledge.len().min(MAX_ACKNOWLEDGED);
            let ids: Vec<MessageId> = conn.to_acknowledge.drain(..batch).collect();
            let account = &accounts[conn.account];
            conn.request(
                Awaiting::Acknowledge(ids.len() as u64),
                Extension::Acknowledge,
                account,
                &acknowledge_payload(&ids),
            );
        }
        if closed {
            return Err("the server closed the connection".into());
        }
        let Some(socket) = conn.socket.as_mut() else {
            return Ok(());
        };
        write_available(socket, &mut conn.output)
    }

    /// Handles one frame: a push, or the reply to the oldest outstanding request.
    fn frame(
        &mut self,
        slot: usize,
        header: &ReplyHeader,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), Failure> {
        let conn = &mut self.conns[slot];
        let account = &self.accounts[conn.account];
        match PushCode::from_wire(header.code) {
            Some(PushCode::Message) => {
                let message = pulled_messages(payload)
                    .next()
                    .and_then(Result::ok)
                    .ok_or("a pushed message that does not parse")?;
                deliver(
                    &self.directory,
                    &message,
                    account.index,
                    Via::Push,
                    now,
                    &mut self.outcome.ledger,
                );
                conn.to_acknowledge.push(message.id);
                self.progress.pushes.fetch_add(1, Ordering::AcqRel);
                self.progress.unacknowledged.fetch_add(1, Ordering::AcqRel);
                return Ok(());
            }
            // Only senders get receipts: none of these connections sends.
            Some(PushCode::Receipt) => return Err("a receipt pushed to a recipient".into()),
            None => {}
        }
        let awaiting = conn
            .awaiting
            .pop_front()
            .ok_or_else(|| format!("reply {} to no request", header.code))?;
        let extension = match awaiting {
            Awaiting::Hello => Extension::Hello,
            Awaiting::Challenge => Extension::Challenge,
            Awaiting::Prove => Extension::Prove,
            Awaiting::Subscribe => Extension::Subscribe,
            Awaiting::Acknowledge(_) => Extension::Acknowledge,
        };
        if header.code != extension.reply_code() {
            return Err(refused(extension, header.code, payload));
        }
        match awaiting {
            Awaiting::Hello => {
                let wanted = Features::AUTHENTICATION.with(Features::PUSH);
                let features = parse_capabilities(payload)
                    .ok_or("a hello reply that does not parse")?
                    .features;
                if !features.has(wanted) {
                    return Err(format!("the server does not push (features {features:?})"));
                }
            }
            Awaiting::Challenge => {
                let secret: [u8; SECRET_LEN] = account
                    .key
                    .decrypt_challenge(payload)
                    .ok_or("a challenge that does not decrypt")?;
                let answer = proof(&secret, account.id);
                conn.request(Awaiting::Prove, Extension::Prove, account, &answer);
                conn.request(Awaiting::Subscribe, Extension::Subscribe, account, &[]);
            }
            Awaiting::Prove => {}
            Awaiting::Subscribe => {
                parse_count(payload).ok_or("a subscribe reply without a count")?;
                conn.stage = Stage::Subscribed;
                self.opening -= 1;
                self.progress.subscribed.fetch_add(1, Ordering::AcqRel);
            }
            Awaiting::Acknowledge(listed) => {
                let deleted = parse_count(payload).ok_or("an acknowledge reply without a count")?;
                self.outcome
                    .ledger
                    .acknowledgement(listed, u64::from(deleted));
                self.progress
                    .unacknowledged
                    .fetch_sub(listed as i64, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    fn fail(&mut self, slot: usize, failure: Failure) {
        let conn = &mut self.conns[slot];
        if let Some(mut socket) = conn.socket.take() {
            // Closing the descriptor removes it from the poll anyway.
            let _ = self.poll.registry().deregister(&mut socket);
        }
        if matches!(conn.stage, Stage::LoggingIn { .. } | Stage::Waiting) {
            self.opening -= 1;
        }
        conn.stage = Stage::Failed;
        self.progress.failed.fetch_add(1, Ordering::AcqRel);
        self.outcome.errors += 1;
        if self.outcome.error_samples.len() < ERROR_SAMPLES {
            self.outcome.error_samples.push(failure);
        }
    }
}
