//! What the server counts for its operators. The event loop records with relaxed atomics
//! (no locks, no allocation); the periodic summary line ([`summary`]) and the Prometheus
//! endpoint ([`prometheus`], served by [`crate::http`]) read them on their own threads.

pub mod histogram;
pub mod prometheus;
pub mod summary;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::handlers::HandlerError;
use crate::protocol::{Code, Edition, Extension, Operation};
use crate::store::{QueueStats, StoreError};
use histogram::Histogram;

/// How a connection is served, known from its first request (protocol §4.3, §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// No request served yet.
    New,
    Persistent,
    Padded,
}

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 3] = [
        ConnectionKind::New,
        ConnectionKind::Persistent,
        ConnectionKind::Padded,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ConnectionKind::New => "new",
            ConnectionKind::Persistent => "persistent",
            ConnectionKind::Padded => "padded",
        }
    }
}

/// Why a request was answered with 9000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCause {
    /// A body that does not parse (a name without its NUL, an unknown message type, ...).
    Malformed,
    UnknownCaller,
    /// An unknown public-key target or message destination.
    UnknownClient,
    NameTaken,
    /// The disk or `--max-db-size` cannot take the write.
    NoSpace,
    /// Any other failure of the database or the spool.
    Storage,
    /// An uploaded content could not be written or made durable.
    Upload,
    /// An unknown code or a declared size the operation cannot have (protocol §4.5): the
    /// connection goes on.
    Rejected,
    /// A size over a limit or a send that does not frame (§4.2, §4.6): the connection closes.
    Framing,
    /// A bug a request reached.
    Panic,
    /// A protected account named from a connection not authenticated as it, or a protect
    /// request from one that is not (protocol §E4).
    Unauthorized,
    /// A challenge or proof refused: a wrong proof, too many of them, a key that cannot be
    /// challenged (protocol §E3).
    Proof,
    /// An unsend refused: the message does not wait, is another sender's, or is being
    /// delivered (protocol §E8).
    Unsend,
}

impl ErrorCause {
    pub const ALL: [ErrorCause; 13] = [
        ErrorCause::Malformed,
        ErrorCause::UnknownCaller,
        ErrorCause::UnknownClient,
        ErrorCause::NameTaken,
        ErrorCause::NoSpace,
        ErrorCause::Storage,
        ErrorCause::Upload,
        ErrorCause::Rejected,
        ErrorCause::Framing,
        ErrorCause::Panic,
        ErrorCause::Unauthorized,
        ErrorCause::Proof,
        ErrorCause::Unsend,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ErrorCause::Malformed => "malformed",
            ErrorCause::UnknownCaller => "unknown_caller",
            ErrorCause::UnknownClient => "unknown_client",
            ErrorCause::NameTaken => "name_taken",
            ErrorCause::NoSpace => "no_space",
            ErrorCause::Storage => "storage",
            ErrorCause::Upload => "upload",
            ErrorCause::Rejected => "rejected",
            ErrorCause::Framing => "framing",
            ErrorCause::Panic => "panic",
            ErrorCause::Unauthorized => "unauthorized",
            ErrorCause::Proof => "proof",
            ErrorCause::Unsend => "unsend",
        }
    }

    pub fn of(error: &HandlerError) -> ErrorCause {
        match error {
            HandlerError::Malformed(_) => ErrorCause::Malformed,
            HandlerError::UnknownCaller(_) => ErrorCause::UnknownCaller,
            HandlerError::UnknownClient(_) => ErrorCause::UnknownClient,
            HandlerError::Store(StoreError::NameTaken) => ErrorCause::NameTaken,
            HandlerError::Store(StoreError::NoSpace { .. }) => ErrorCause::NoSpace,
            HandlerError::Store(_) => ErrorCause::Storage,
            HandlerError::Upload(_) => ErrorCause::Upload,
            HandlerError::Protected(_) | HandlerError::NotAuthenticated(_) => {
                ErrorCause::Unauthorized
            }
            HandlerError::BadProof(_)
            | HandlerError::RateLimited(_)
            | HandlerError::BadKey { .. } => ErrorCause::Proof,
            HandlerError::UnknownMessage(_) | HandlerError::InDelivery(_) => ErrorCause::Unsend,
        }
    }
}

/// A step of making a batch durable that failed; its replies became 9000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageStep {
    Commit,
    Flush,
}

const EDITIONS: usize = Edition::ALL.len();
const OPERATIONS: usize = Operation::ALL.len();

#[derive(Default)]
pub struct Metrics {
    /// Time to handle each request, by edition and operation; its count is the requests'.
    requests: [[Histogram; OPERATIONS]; EDITIONS],
    /// The same for each extension operation.
    extensions: [Histogram; Extension::ALL.len()],
    connections_open: [AtomicU64; ConnectionKind::ALL.len()],
    /// Connections accepted (kind new), and those that turned persistent or padded.
    connections_total: [AtomicU64; ConnectionKind::ALL.len()],
    connections_refused: AtomicU64,
    errors: [AtomicU64; ErrorCause::ALL.len()],
    storage_failures: [AtomicU64; 2],
    queued_messages: AtomicU64,
    queued_bytes: AtomicU64,
    stored: AtomicU64,
    delivered: AtomicU64,
    /// Messages pushed on subscribed connections (protocol §E5), repeats included.
    pushed: AtomicU64,
    commits: Histogram,
    flushes: Histogram,
    /// The SQLite database file, whose size (with its log) readers take from the file
    /// system; `None` for a database elsewhere (PostgreSQL), whose size is not read.
    database: Option<PathBuf>,
}

/// Where an extension's histogram is in [`Metrics::extensions`].
fn extension_index(extension: Extension) -> usize {
    Extension::ALL
        .iter()
        .position(|&known| known == extension)
        .unwrap_or_default()
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn new(database: Option<&Path>) -> Metrics {
        Metrics {
            database: database.map(Path::to_owned),
            ..Metrics::default()
        }
    }

    fn request_histogram(&self, code: Code) -> &Histogram {
        match code {
            Code::Classic(code) => &self.requests[code.edition as usize][code.operation as usize],
            Code::Extension(extension) => &self.extensions[extension_index(extension)],
        }
    }

    /// A request handled in `elapsed`, answered with 9000 for `error` if it failed.
    pub fn request(&self, code: Code, elapsed: Duration, error: Option<ErrorCause>) {
        self.request_histogram(code).observe(elapsed);
        if let Some(cause) = error {
            self.error(cause);
        }
    }

    /// A 9000 reply produced outside a handler (framing, refused uploads).
    pub fn error(&self, cause: ErrorCause) {
        add(&self.errors[cause as usize]);
    }

    pub fn connection_opened(&self) {
        add(&self.connections_total[ConnectionKind::New as usize]);
        add(&self.connections_open[ConnectionKind::New as usize]);
    }

    pub fn connection_refused(&self) {
        add(&self.connections_refused);
    }

    /// A connection turned out to be of kind `to`.
    pub fn connection_classified(&self, from: ConnectionKind, to: ConnectionKind) {
        self.connections_open[from as usize].fetch_sub(1, Ordering::Relaxed);
        add(&self.connections_open[to as usize]);
        add(&self.connections_total[to as usize]);
    }

    pub fn connection_closed(&self, kind: ConnectionKind) {
        self.connections_open[kind as usize].fetch_sub(1, Ordering::Relaxed);
    }

    /// `count` messages were pushed.
    pub fn pushed(&self, count: usize) {
        self.pushed.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn pushed_total(&self) -> u64 {
        read(&self.pushed)
    }

    pub fn commit(&self, elapsed: Duration) {
        self.commits.observe(elapsed);
    }

    pub fn flush(&self, elapsed: Duration) {
        self.flushes.observe(elapsed);
    }

    pub fn storage_failure(&self, step: StorageStep) {
        add(&self.storage_failures[step as usize]);
    }

    /// The queues as of the last commit.
    pub fn set_queue(&self, queue: QueueStats) {
        self.queued_messages
            .store(queue.messages, Ordering::Relaxed);
        self.queued_bytes.store(queue.bytes, Ordering::Relaxed);
        self.stored.store(queue.stored, Ordering::Relaxed);
        self.delivered.store(queue.delivered, Ordering::Relaxed);
    }

    pub fn requests_handled(&self) -> u64 {
        let classic: u64 = self.requests.iter().flatten().map(Histogram::count).sum();
        classic + self.extensions.iter().map(Histogram::count).sum::<u64>()
    }

    pub fn open_connections(&self) -> u64 {
        self.connections_open.iter().map(read).sum()
    }

    pub fn queue(&self) -> QueueStats {
        QueueStats {
            messages: read(&self.queued_messages),
            bytes: read(&self.queued_bytes),
            stored: read(&self.stored),
            delivered: read(&self.delivered),
        }
    }

    /// The database file and its write-ahead log, in bytes, from the file system: no query,
    /// so any thread may ask. Spooled contents are in the queued bytes. Zero for PostgreSQL.
    pub fn database_bytes(&self) -> u64 {
        let Some(database) = &self.database else {
            return 0;
        };
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        [database.as_os_str(), wal.as_os_str()]
            .into_iter()
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}
