//! Sending one request and reading its reply, in the three ways real clients connect
//! (protocol §4): one persistent connection, a new connection per request, or a new
//! connection per request with zero padding to 1024-byte blocks. Connections go to the nodes
//! of a [`Servers`] in its order; whether a request whose reply was lost is sent again is
//! the caller's choice ([`Transport::call_repeatable`] or not).

use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::error::ClientError;
use super::extensions::{self, Login, ServerKind};
use super::identity::ServerAddress;
use super::servers::{Failures, Servers};
use messageu_protocol::padding::reply_padding;
use messageu_protocol::{ReplyHeader, REPLY_HEADER_LEN};

/// How long a connect, read or write may take before the request fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to one address may take: a node that is down without refusing (its
/// machine gone) is passed over for the next one this soon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests are written through a buffer this large, so a streamed file goes out in chunks.
const WRITE_BUFFER_LEN: usize = 64 * 1024;

/// How requests reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionMode {
    /// One connection for the whole session; exact requests and replies.
    Persistent,
    /// A new connection for each request; exact requests and replies.
    Reconnect,
    /// A new connection for each request; requests padded with zeros to a multiple of 1024
    /// bytes, replies read with their padding, then the server closes.
    Padded,
}

/// Whether new connections begin with a hello (protocol §E2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// The classic protocol only.
    Never,
    /// A hello on each new connection (but padded ones, whose first request must be the
    /// padded one), and a log-in where the server offers it, until a server shows itself
    /// classic.
    Hello,
}

/// A reply as read from the wire: its header and exactly `payload_size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub header: ReplyHeader,
    pub payload: Vec<u8>,
}

/// The connection (or connections) to one service: its nodes, tried as [`Servers`] says.
#[derive(Debug)]
pub struct Transport {
    servers: Servers,
    mode: ConnectionMode,
    /// The open connection of [`ConnectionMode::Persistent`], to the current node.
    persistent: Option<TcpStream>,
    greeter: Greeter,
    /// How long the server may hold back the reply being read (a long-poll's wait), on top
    /// of the usual timeout.
    reply_wait: Duration,
}

/// How new connections begin, and what the node they reach has shown itself to be.
#[derive(Debug)]
struct Greeter {
    greeting: Greeting,
    /// Padded connections never greet: their first request must be the padded one.
    padded: bool,
    /// Who new connections log in as, once known.
    login: Option<Login>,
    kind: ServerKind,
    /// The node `kind` is of: another node may be another server, so it is learned again.
    kind_of: Option<ServerAddress>,
}

impl Greeter {
    /// A new connection to `server`, greeted as [`Greeting`] says.
    fn open(&mut self, server: &ServerAddress) -> Result<TcpStream, ClientError> {
        if self.kind_of.as_ref() != Some(server) {
            self.kind = ServerKind::Unknown;
            self.kind_of = Some(server.clone());
        }
        let mut stream = connect(server)?;
        if self.greets() {
            self.kind = extensions::open(&mut stream, self.login.as_ref())?;
        }
        Ok(stream)
    }

    /// Whether a new connection begins with a hello.
    fn greets(&self) -> bool {
        self.greeting == Greeting::Hello && !self.padded && self.kind != ServerKind::Classic
    }
}

impl Transport {
    /// A transport to `servers`; nothing connects until the first request.
    pub fn new(servers: Servers, mode: ConnectionMode, greeting: Greeting) -> Transport {
        Transport {
            servers,
            mode,
            persistent: None,
            greeter: Greeter {
                greeting,
                padded: mode == ConnectionMode::Padded,
                login: None,
                kind: ServerKind::Unknown,
                kind_of: None,
            },
            reply_wait: Duration::ZERO,
        }
    }

    /// New connections log in as `login` where the server offers authentication.
    pub fn log_in_as(&mut self, login: Login) {
        self.greeter.login = Some(login);
    }

    /// The nodes this transport connects to, the one that last worked current.
    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    /// What the server has shown itself to be so far.
    pub fn server_kind(&self) -> ServerKind {
        self.greeter.kind
    }

    /// What the server is, connecting (and greeting) now if no connection has shown it yet,
    /// so that a request can be chosen by what the server offers.
    pub fn learn_server_kind(&mut self) -> Result<ServerKind, ClientError> {
        if self.greeter.kind == ServerKind::Unknown && self.greeter.greets() {
            let stream = self.open()?;
            if self.mode == ConnectionMode::Persistent {
                self.persistent = Some(stream);
            }
        }
        Ok(self.greeter.kind)
    }

    /// Sends a request whose reply the server may hold back for up to `wait` (a long-poll,
    /// protocol §E6), and reads its reply. Sent once, as [`Transport::call_streaming`].
    pub fn call_waiting(&mut self, request: &[u8], wait: Duration) -> Result<Reply, ClientError> {
        self.reply_wait = wait;
        let reply = self.call(request);
        self.reply_wait = Duration::ZERO;
        reply
    }

    /// Sends a request held in memory once and reads its reply.
    pub fn call(&mut self, request: &[u8]) -> Result<Reply, ClientError> {
        self.call_streaming(request, 0, |_| Ok(()), &mut |_, _| {})
    }

    /// Sends a request that may be sent again (one that changes nothing, or whose repetition
    /// is harmless) and reads its reply. A reply lost on one node is asked for again of the
    /// next, each node once and the first twice (so one node is asked twice: its kept
    /// connection may have been closed between two requests); then the error names each.
    pub fn call_repeatable(
        &mut self,
        request: &[u8],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Reply, ClientError> {
        let mut failures = Failures::default();
        for _ in 0..=self.servers.len() {
            match self.call_streaming(request, 0, |_| Ok(()), progress) {
                Err(ClientError::ReplyLost { server, cause }) => {
                    failures.add(server.clone(), ClientError::ReplyLost { server, cause })
                }
                // After a lost reply, no node could be reached for the next attempt.
                Err(error) if error.is_connection_failure() && !failures.is_empty() => {
                    failures.absorb(error);
                    break;
                }
                reply => return reply,
            }
        }
        Err(failures.give_up())
    }

    /// Sends `head`, then the `body_len` bytes that `write_body` writes, and reads the reply,
    /// telling `progress` the payload bytes read so far and the payload's size as they come.
    /// The body goes out in chunks as it is produced, so it is never held in memory.
    ///
    /// The connection is the kept one if it is still open, else a new one to the first node
    /// that answers ([`Servers::try_each`]). Once the request is on its way it is never sent
    /// again here: if the connection fails before the reply is complete, the error is
    /// [`ClientError::ReplyLost`], the next node becomes current, and the caller decides
    /// whether the request may be sent again.
    pub fn call_streaming(
        &mut self,
        head: &[u8],
        body_len: u64,
        write_body: impl FnOnce(&mut dyn Write) -> Result<(), ClientError>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Reply, ClientError> {
        let mut stream = match self.persistent.take().filter(still_open) {
            Some(stream) => stream,
            None => self.open()?,
        };
        match self.exchange(&mut stream, head, body_len, write_body, progress) {
            Ok(reply) => {
                if self.mode == ConnectionMode::Persistent {
                    self.persistent = Some(stream);
                }
                Ok(reply)
            }
            Err(error) if error.is_connection_failure() => {
                let server = self.servers.current().to_string();
                self.servers.advance();
                Err(ClientError::ReplyLost {
                    server,
                    cause: Box::new(error),
                })
            }
            Err(error) => Err(error),
        }
    }

    fn exchange(
        &self,
        stream: &mut TcpStream,
        head: &[u8],
        body_len: u64,
        write_body: impl FnOnce(&mut dyn Write) -> Result<(), ClientError>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Reply, ClientError> {
        let request_len = head.len() as u64 + body_len;
        let padding = match self.mode {
            // Truncating to usize keeps the length modulo 1024, all the padding depends on.
            ConnectionMode::Padded => reply_padding(request_len as usize) as u64,
            ConnectionMode::Persistent | ConnectionMode::Reconnect => 0,
        };
        match Transport::write_request(stream, head, write_body, padding) {
            Ok(()) => {}
            // A server that refuses a request (one too large, say) answers before reading it
            // all and then closes: its reply says more than the broken pipe.
            Err(ClientError::Connection(error)) => {
                return read_reply(stream, false, progress)
                    .map_err(|_| ClientError::Connection(error))
            }
            Err(error) => return Err(error),
        }
        if !self.reply_wait.is_zero() {
            stream
                .set_read_timeout(Some(IO_TIMEOUT + self.reply_wait))
                .map_err(socket_error)?;
        }
        // A request that already ends on a block boundary carries no padding, so the server
        // cannot tell it from an exact one and answers exactly (protocol §4 rule 3).
        let reply = read_reply(stream, padding > 0, progress).map_err(socket_error);
        if !self.reply_wait.is_zero() {
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(socket_error)?;
        }
        reply
    }

    /// A new connection to the first node that answers, from the current one.
    fn open(&mut self) -> Result<TcpStream, ClientError> {
        let greeter = &mut self.greeter;
        self.servers.try_each(|server| greeter.open(server))
    }

    fn write_request(
        stream: &mut TcpStream,
        head: &[u8],
        write_body: impl FnOnce(&mut dyn Write) -> Result<(), ClientError>,
        padding: u64,
    ) -> Result<(), ClientError> {
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER_LEN, stream);
        writer.write_all(head).map_err(socket_error)?;
        write_body(&mut writer)?;
        io::copy(&mut io::repeat(0).take(padding), &mut writer)
            .and_then(|_| writer.flush())
            .map_err(socket_error)
    }
}

/// A new connection to `server`, with the usual timeouts.
pub fn connect(server: &ServerAddress) -> Result<TcpStream, ClientError> {
    let connect_error = |source| ClientError::Connect {
        server: server.to_string(),
        source,
    };
    let addresses = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(connect_error)?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
                    .and_then(|()| stream.set_nodelay(true))
                    .map_err(connect_error)?;
                return Ok(stream);
            }
            Err(error) => last_error = error,
        }
    }
    Err(connect_error(last_error))
}

/// Whether a kept connection still looks usable. A server closes idle connections when it
/// stops (or needs their slots); a request written to one would be lost, so a new connection
/// is opened instead. Bytes the server sent unasked mean the connection is out of step.
fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let idle =
        matches!(stream.peek(&mut [0; 1]), Err(error) if error.kind() == io::ErrorKind::WouldBlock);
    idle && stream.set_nonblocking(false).is_ok()
}

/// Names a failed socket operation: a timeout, an early close, or another failure.
pub fn socket_error(error: io::Error) -> ClientError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError::Timeout(IO_TIMEOUT.as_secs())
        }
        io::ErrorKind::UnexpectedEof => ClientError::ClosedEarly,
        _ => ClientError::Connection(error),
    }
}

/// Reads one reply: the 7-byte header and `payload_size` bytes, then, if `padded`, the zeros
/// up to the next 1024-byte boundary or until the server closes. `progress` gets the payload
/// bytes read so far and its size after each read.
///
/// The payload grows as it arrives rather than being allocated at the announced size, so a
/// lying header costs no memory.
pub fn read_reply(
    stream: &mut impl Read,
    padded: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<Reply> {
    let mut header = [0; REPLY_HEADER_LEN];
    stream.read_exact(&mut header)?;
    let header = ReplyHeader::parse(&header);
    let size = u64::from(header.payload_size);
    let mut payload = Vec::new();
    let mut counting = Counting {
        inner: stream.by_ref().take(size),
        done: 0,
        total: size,
        progress,
    };
    counting.read_to_end(&mut payload)?;
    if (payload.len() as u64) < size {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if padded {
        // The reply is complete: a server that does not pad or close costs a timeout, not it.
        let padding = reply_padding(REPLY_HEADER_LEN + payload.len()) as u64;
        let _ = io::copy(&mut stream.take(padding), &mut io::sink());
    }
    Ok(Reply { header, payload })
}

/// A reader that reports how much has been read through it, out of `total`.
struct Counting<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read > 0 {
            self.done += read as u64;
            (self.progress)(self.done, self.total);
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::{SocketAddr, TcpListener};
    use std::thread;

    fn reply_bytes(code: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = ReplyHeader {
            version: 2,
            code,
            payload_size: payload.len() as u32,
        }
        .encode()
        .to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_reply_is_its_header_and_exactly_its_payload() {
        let mut wire = reply_bytes(2101, &[1; 271]);
        wire.extend_from_slice(b"next");
        let mut stream = Cursor::new(wire);
        let reply = read_reply(&mut stream, false, &mut |_, _| {}).expect("whole reply");
        assert_eq!(reply.header.code, 2101);
        assert_eq!(reply.payload, vec![1; 271]);
        assert_eq!(stream.position(), 7 + 271);
    }

    #[test]
    fn a_large_reply_reports_its_progress_as_it_arrives() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        // A socket hands a large reply over in many reads.
        let wire = Cursor::new(reply_bytes(2104, &payload));
        let mut reported = Vec::new();
        let reply = read_reply(&mut wire.take(u64::MAX), false, &mut |done, total| {
            reported.push((done, total))
        })
        .expect("whole reply");
        assert_eq!(reply.payload, payload);
        assert!(reported.len() > 1, "{reported:?}");
        assert!(reported.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(reported.iter().all(|&(_, total)| total == 300_000));
        assert_eq!(reported.last(), Some(&(300_000, 300_000)));
    }

    #[test]
    fn a_padded_reply_is_read_to_the_block_boundary_or_the_close() {
        let mut wire = reply_bytes(2100, &[3; 16]);
        wire.resize(1024, 0);
        wire.extend_from_slice(b"after");
        let mut stream = Cursor::new(wire);
        let reply = read_reply(&mut stream, true, &mut |_, _| {}).expect("whole reply");
        assert_eq!(reply.payload, vec![3; 16]);
        assert_eq!(stream.position(), 1024);

        let unpadded = reply_bytes(2100, &[3; 16]);
        let reply = read_reply(&mut Cursor::new(unpadded), true, &mut |_, _| {})
            .expect("closed after the reply");
        assert_eq!(reply.payload, vec![3; 16]);
    }

    #[test]
    fn cut_short_replies_are_errors_and_lying_sizes_allocate_nothing() {
        let whole = reply_bytes(2102, &[4; 176]);
        for cut in [0, 3, 7, 100] {
            let error = read_reply(&mut Cursor::new(&whole[..cut]), false, &mut |_, _| {})
                .expect_err("short");
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let mut lying = whole[..7].to_vec();
        lying[3..7].copy_from_slice(&u32::MAX.to_le_bytes());
        lying.extend_from_slice(&[0; 10]);
        let error = read_reply(&mut Cursor::new(lying), false, &mut |_, _| {}).expect_err("short");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(matches!(socket_error(error), ClientError::ClosedEarly));
    }

    /// A server that answers `requests` requests, each read as `request_len` bytes, with an
    /// empty list reply, and reports every connection's bytes. A `padded` server pads its
    /// replies to 1024 bytes and closes after each, as ours does for padded clients.
    fn recording_server(
        requests: usize,
        request_len: usize,
        padded: bool,
    ) -> (SocketAddr, thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || {
            let mut connections: Vec<Vec<u8>> = Vec::new();
            let mut open: Option<TcpStream> = None;
            for _ in 0..requests {
                let mut request = vec![0; request_len];
                // The next request comes on the open connection, or on a new one if the
                // client closed it.
                let reused = open
                    .take()
                    .filter(|mut stream| stream.read_exact(&mut request).is_ok());
                let mut stream = match reused {
                    Some(stream) => stream,
                    None => {
                        connections.push(Vec::new());
                        let (mut stream, _) = listener.accept().expect("accept");
                        stream.read_exact(&mut request).expect("request");
                        stream
                    }
                };
                connections.last_mut().expect("connection").extend(&request);
                let mut reply = reply_bytes(2101, &[]);
                if padded {
                    reply.resize(1024, 0);
                }
                stream.write_all(&reply).expect("reply");
                if !padded {
                    open = Some(stream);
                }
            }
            connections
        });
        (addr, server)
    }

    fn transport(addr: SocketAddr, mode: ConnectionMode) -> Transport {
        let server = ServerAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        Transport::new(Servers::one(server), mode, Greeting::Never)
    }

    #[test]
    fn persistent_mode_keeps_one_connection_and_reconnect_opens_one_per_request() {
        for (mode, connections) in [
            (ConnectionMode::Persistent, 1),
            (ConnectionMode::Reconnect, 3),
        ] {
            let (addr, server) = recording_server(3, 23, false);
            let mut transport = transport(addr, mode);
            for _ in 0..3 {
                let reply = transport.call(&[9; 23]).expect("reply");
                assert_eq!(reply.header.code, 2101);
            }
            drop(transport);
            let seen = server.join().expect("server");
            assert_eq!(seen.len(), connections, "{mode:?}");
            assert_eq!(seen.concat(), vec![9; 69]);
        }
    }

    #[test]
    fn padded_mode_pads_each_request_to_a_block_on_its_own_connection() {
        let (addr, server) = recording_server(2, 1024, true);
        let mut transport = transport(addr, ConnectionMode::Padded);
        transport.call(&[9; 23]).expect("reply");
        transport
            .call_streaming(
                &[9; 23],
                1000,
                |body| body.write_all(&[8; 1000]).map_err(socket_error),
                &mut |_, _| {},
            )
            .expect("reply");
        let seen = server.join().expect("server");
        assert_eq!(seen.len(), 2);
        assert_eq!(&seen[0][..23], &[9; 23]);
        assert!(seen[0][23..].iter().all(|&byte| byte == 0));
        assert_eq!(&seen[1][23..1023], &[8; 1000]);
        assert_eq!(seen[1][1023], 0);
    }

    #[test]
    fn a_kept_connection_the_server_closed_is_replaced_or_its_reply_reported_lost() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        // The first connection is closed after one reply; the second after one reply and
        // one more request, left unanswered.
        let server = thread::spawn(move || {
            for requests in [1, 2] {
                let (mut stream, _) = listener.accept().expect("accept");
                for request in 0..requests {
                    stream.read_exact(&mut [0; 23]).expect("request");
                    if request == 0 {
                        stream.write_all(&reply_bytes(2101, &[])).expect("reply");
                    }
                }
            }
        });
        let mut transport = transport(addr, ConnectionMode::Persistent);
        transport.call(&[9; 23]).expect("first reply");
        // The close has arrived, as it has when a user comes back to the menu.
        thread::sleep(Duration::from_millis(100));
        transport.call(&[9; 23]).expect("a new connection");
        let error = transport.call(&[9; 23]).expect_err("no reply");
        assert!(
            matches!(&error, ClientError::ReplyLost { cause, .. } if matches!(**cause, ClientError::ClosedEarly)),
            "{error:?}"
        );
        server.join().expect("server");
    }
}
