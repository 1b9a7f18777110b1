//! Accounts with real RSA-1024 keys, for the clients that log in (protocol §E3) before they
//! subscribe: the keys are made by the client crate's code, and registered on one connection
//! with the requests pipelined, so that the server commits them together.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use messageu_client::crypto::PrivateKey;
use messageu_protocol::client::{check_reply_code, parse_registered, register_request};
use messageu_protocol::{ClientId, Edition, Operation, ReplyHeader, REPLY_HEADER_LEN};

use crate::workload::client_name;

/// A registered id and the private key of the public key it registered.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: ClientId,
    pub key: PrivateKey,
    /// Its index in the run's directory: deliveries to it are checked against that.
    pub index: u32,
}

/// Why the accounts could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("RSA key generation failed: {0}")]
    Key(#[from] messageu_client::crypto::CryptoError),
    #[error("registering failed: {0}")]
    Io(#[from] io::Error),
    #[error("registering client {index} failed: {reason}")]
    Refused { index: u32, reason: String },
}

/// `count` fresh RSA-1024 keys, made on `threads` threads (a key takes about 30 ms).
pub fn generate_keys(count: usize, threads: usize) -> Result<Vec<PrivateKey>, AccountError> {
    let threads = threads.clamp(1, count.max(1));
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let share = (thread..count).step_by(threads).count();
                scope.spawn(move || (0..share).map(|_| PrivateKey::generate()).collect())
            })
            .collect();
        let mut keys = Vec::with_capacity(count);
        for handle in handles {
            let share: Result<Vec<PrivateKey>, _> = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            keys.extend(share?);
        }
        Ok(keys)
    })
}

/// Registers one account per key, named as client `first`, `first + 1`... of run `run`, with
/// the directory indices of those numbers.
pub fn register(
    addr: SocketAddr,
    edition: Edition,
    run: u32,
    first: u32,
    keys: Vec<PrivateKey>,
    timeout: Duration,
) -> Result<Vec<Account>, AccountError> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut requests = Vec::new();
    for (index, key) in (first..).zip(&keys) {
        requests.extend(register_request(
            edition,
            &client_name(run, index),
            &key.public_key()?,
        ));
    }
    stream.write_all(&requests)?;
    let mut accounts = Vec::with_capacity(keys.len());
    for (index, key) in (first..).zip(keys) {
        let mut header = [0; REPLY_HEADER_LEN];
        stream.read_exact(&mut header)?;
        let header = ReplyHeader::parse(&header);
        let mut payload = vec![0; header.payload_size as usize];
        stream.read_exact(&mut payload)?;
        let id = check_reply_code(edition, Operation::Register, &header)
            .and_then(|()| parse_registered(&payload))
            .map_err(|error| AccountError::Refused {
                index,
                reason: error.to_string(),
            })?;
        accounts.push(Account { id, key, index });
    }
    Ok(accounts)
}
