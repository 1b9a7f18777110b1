//! The floor: a minimal in-process echo server over loopback that answers every request with
//! a prepared reply of the size the real server sent for that operation. It does no parsing
//! beyond the 4-byte payload size that tells where a request ends, and no storage, so the
//! throughput the same clients reach against it is what this machine's loopback, kernel and
//! load generator allow: the floor under any server's cost.
//!
//! Like our server it runs one event-loop thread.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use byteorder::{ByteOrder, LittleEndian};
use messageu_protocol::padding::reply_padding;
use messageu_protocol::REQUEST_HEADER_LEN;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::procstat;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
const READ_CHUNK: usize = 64 << 10;

/// The replies the floor sends, by the length of the request they answer.
#[derive(Debug, Clone)]
pub struct Replies {
    by_request_len: HashMap<usize, Vec<u8>>,
    /// Requests arrive zero-padded: skip the padding, pad the reply, close after it.
    pub padded: bool,
}

impl Replies {
    pub fn new(padded: bool) -> Replies {
        Replies {
            by_request_len: HashMap::new(),
            padded,
        }
    }

    /// Answers requests of `request_len` bytes (unpadded) with `reply`.
    pub fn insert(&mut self, request_len: usize, reply: Vec<u8>) {
        self.by_request_len.insert(request_len, reply);
    }
}

/// A running floor server.
pub struct Floor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<io::Result<()>>,
    /// The floor thread's scheduler statistics, for its CPU time.
    schedstat: PathBuf,
}

impl Floor {
    /// Starts the floor on an ephemeral loopback port.
    pub fn start(replies: Replies) -> io::Result<Floor> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let echo = Echo {
            poll,
            listener,
            replies,
            connections: Slab::new(),
            scratch: vec![0; READ_CHUNK],
        };
        let stopping = Arc::clone(&stop);
        let (tell_schedstat, schedstat) = mpsc::channel();
        let thread = thread::Builder::new().name("floor".into()).spawn(move || {
            // The receiver waits for this; it cannot have gone.
            let _ = tell_schedstat.send(procstat::own_schedstat());
            echo.run(&stopping)
        })?;
        let schedstat = schedstat
            .recv()
            .map_err(|_| io::Error::other("the floor thread ended at once"))??;
        Ok(Floor {
            addr,
            stop,
            waker,
            thread,
            schedstat,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// CPU time the floor's thread has used so far.
    pub fn cpu(&self) -> io::Result<Duration> {
        procstat::schedstat_cpu(&self.schedstat)
    }

    pub fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Release);
        self.waker.wake()?;
        self.thread
            .join()
            .map_err(|_| io::Error::other("the floor thread panicked"))?
    }
}

struct EchoConnection {
    socket: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    close_after_output: bool,
}

/// What became of a connection after serving it.
#[derive(PartialEq, Eq)]
enum Served {
    Open,
    Finished,
}

struct Echo {
    poll: Poll,
    listener: TcpListener,
    replies: Replies,
    connections: Slab<EchoConnection>,
    scratch: Vec<u8>,
}

impl Echo {
    fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !stop.load(Ordering::Acquire) {
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    Token(key) => self.serve(key),
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut socket, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            socket.set_nodelay(true)?;
            let entry = self.connections.vacant_entry();
            self.poll.registry().register(
                &mut socket,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            entry.insert(EchoConnection {
                socket,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                close_after_output: false,
            });
        }
    }

    fn serve(&mut self, key: usize) {
        let Some(connection) = self.connections.get_mut(key) else {
            return;
        };
        let served = serve(connection, &self.replies, &mut self.scratch);
        if served == Served::Finished {
            let mut connection = self.connections.remove(key);
            // Closing the descriptor removes it from the poll anyway.
            let _ = self.poll.registry().deregister(&mut connection.socket);
        }
    }
}

/// Reads what arrived, queues a reply for every whole request, writes what the socket takes.
fn serve(connection: &mut EchoConnection, replies: &Replies, scratch: &mut [u8]) -> Served {
    loop {
        match connection.socket.read(scratch) {
            Ok(0) => return Served::Finished,
            Ok(read) => connection.input.extend_from_slice(&scratch[..read]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Served::Finished,
        }
    }
    let mut consumed = 0;
    while let Some(request_len) = request_len(&connection.input[consumed..]) {
        let on_wire = if replies.padded {
            request_len + reply_padding(request_len)
        } else {
            request_len
        };
        if connection.input.len() - consumed < on_wire {
            break;
        }
        let Some(reply) = replies.by_request_len.get(&request_len) else {
            return Served::Finished;
        };
        connection.output.extend_from_slice(reply);
        if replies.padded {
            let padded_len = connection.output.len() + reply_padding(reply.len());
            connection.output.resize(padded_len, 0);
            connection.close_after_output = true;
        }
        consumed += on_wire;
    }
    connection.input.drain(..consumed);
    while connection.written < connection.output.len() {
        match connection
            .socket
            .write(&connection.output[connection.written..])
        {
            Ok(written) => connection.written += written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Served::Open,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Served::Finished,
        }
    }
    connection.output.clear();
    connection.written = 0;
    if connection.close_after_output {
        Served::Finished
    } else {
        Served::Open
    }
}

/// The length of the request at the start of `input`, once its header is there.
fn request_len(input: &[u8]) -> Option<usize> {
    let header = input.get(..REQUEST_HEADER_LEN)?;
    Some(REQUEST_HEADER_LEN + LittleEndian::read_u32(&header[19..23]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    fn request(payload_len: usize) -> Vec<u8> {
        let mut bytes = vec![0; REQUEST_HEADER_LEN + payload_len];
        LittleEndian::write_u32(&mut bytes[19..23], payload_len as u32);
        bytes
    }

    fn floor(padded: bool) -> Floor {
        let mut replies = Replies::new(padded);
        replies.insert(REQUEST_HEADER_LEN + 16, vec![1; 183]);
        replies.insert(REQUEST_HEADER_LEN, vec![2; 30]);
        Floor::start(replies).expect("floor starts")
    }

    #[test]
    fn each_request_gets_the_reply_for_its_length_even_pipelined() {
        let floor = floor(false);
        let mut client = StdStream::connect(floor.addr()).expect("connect");
        let mut both = request(16);
        both.extend_from_slice(&request(0));
        client.write_all(&both).expect("write");
        let mut reply = vec![0; 183 + 30];
        client.read_exact(&mut reply).expect("replies");
        assert!(reply[..183].iter().all(|&b| b == 1));
        assert!(reply[183..].iter().all(|&b| b == 2));
        drop(client);
        assert!(floor.cpu().expect("floor thread's CPU") > std::time::Duration::ZERO);
        floor.stop().expect("stops");
    }

    #[test]
    fn padded_requests_get_a_padded_reply_and_a_close() {
        let floor = floor(true);
        let mut client = StdStream::connect(floor.addr()).expect("connect");
        let mut padded = request(16);
        padded.resize(1024, 0);
        client.write_all(&padded).expect("write");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).expect("reply, then close");
        assert_eq!(reply.len(), 1024);
        assert!(reply[..183].iter().all(|&b| b == 1));
        assert!(reply[183..].iter().all(|&b| b == 0));
        floor.stop().expect("stops");
    }

    #[test]
    fn an_unexpected_request_closes_the_connection() {
        let floor = floor(false);
        let mut client = StdStream::connect(floor.addr()).expect("connect");
        client.write_all(&request(5)).expect("write");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("closed");
        assert!(rest.is_empty());
        floor.stop().expect("stops");
    }
}
