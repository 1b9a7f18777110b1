//! Measures what one group commit costs on this machine, to decide where the store runs.
//!
//! For batch sizes 1, 10 and 50 and both durability modes it times `begin`, N message inserts
//! of 100 bytes and `commit` on a fresh database, and, for comparison, N public-key reads
//! (what a read-only round costs). Prints medians over the rounds.
//!
//! Run: `cargo run --release --example commit_latency [rounds]`

use std::time::{Duration, Instant, SystemTime};

use messageu::protocol::{ClientId, MessageType, PublicKey, PUBLIC_KEY_LEN};
use messageu::store::{Committed, Durability, NewContent, NewMessage, SqliteStore, Store};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    println!("| durability | batch | write round (begin + N inserts + commit) | read round (N key lookups) |");
    println!("|---|---|---|---|");
    for durability in [Durability::Full, Durability::Normal] {
        for batch in [1, 10, 50] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut store =
                SqliteStore::open(&dir.path().join("bench.db"), durability, 0).expect("open store");
            let key = PublicKey([7; PUBLIC_KEY_LEN]);
            let to = store
                .register_client("bench", &key, SystemTime::now())
                .expect("register");
            let from = ClientId::random();
            let content = [0x55; 100];
            let message = || NewMessage {
                to,
                from,
                kind: MessageType::Text,
                content: NewContent::Inline(&content),
            };
            let mut writes = Vec::with_capacity(rounds);
            let mut reads = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let start = Instant::now();
                store.begin_batch().expect("begin");
                for _ in 0..batch {
                    store.insert_message(message()).expect("insert");
                }
                // With durability full the log flush runs on another thread in the server,
                // but an acknowledgement still waits for it: it belongs to the round.
                if let Committed::AfterFlush(flush) = store.commit_batch().expect("commit") {
                    flush.run().expect("flush");
                }
                writes.push(start.elapsed());

                let start = Instant::now();
                store.begin_batch().expect("begin");
                for _ in 0..batch {
                    store.public_key(to).expect("read");
                }
                store.commit_batch().expect("commit");
                reads.push(start.elapsed());
            }
            println!(
                "| {durability:?} | {batch} | {:.0} µs | {:.0} µs |",
                median(writes).as_secs_f64() * 1e6,
                median(reads).as_secs_f64() * 1e6
            );
        }
    }
}
