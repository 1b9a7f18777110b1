//! Sending one request and reading its reply, in the three ways real clients connect
//! (protocol §4): one persistent connection, a new connection per request, or a new
//! connection per request with zero padding to 1024-byte blocks.

use std::io::{self, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::error::ClientError;
use super::identity::ServerAddress;
use crate::protocol::padding::reply_padding;
use crate::protocol::{ReplyHeader, REPLY_HEADER_LEN};

/// How long a connect, read or write may take before the request fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
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

/// A reply as read from the wire: its header and exactly `payload_size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub header: ReplyHeader,
    pub payload: Vec<u8>,
}

/// The connection (or connections) to one server.
#[derive(Debug)]
pub struct Transport {
    server: ServerAddress,
    mode: ConnectionMode,
    /// The open connection of [`ConnectionMode::Persistent`].
    persistent: Option<TcpStream>,
}

impl Transport {
    pub fn new(server: ServerAddress, mode: ConnectionMode) -> Transport {
        Transport {
            server,
            mode,
            persistent: None,
        }
    }

    /// Sends a request held in memory and reads its reply.
    pub fn call(&mut self, request: &[u8]) -> Result<Reply, ClientError> {
        self.call_streaming(request, 0, |_| Ok(()))
    }

    /// Sends `head`, then the `body_len` bytes that `write_body` writes, and reads the reply.
    /// The body goes out in chunks as it is produced, so it is never held in memory.
    pub fn call_streaming(
        &mut self,
        head: &[u8],
        body_len: u64,
        write_body: impl FnOnce(&mut dyn Write) -> Result<(), ClientError>,
    ) -> Result<Reply, ClientError> {
        let mut stream = match self.persistent.take() {
            Some(stream) => stream,
            None => self.connect()?,
        };
        let request_len = head.len() as u64 + body_len;
        let padding = match self.mode {
            // Truncating to usize keeps the length modulo 1024, all the padding depends on.
            ConnectionMode::Padded => reply_padding(request_len as usize) as u64,
            ConnectionMode::Persistent | ConnectionMode::Reconnect => 0,
        };
        Transport::write_request(&mut stream, head, write_body, padding)?;
        // A request that already ends on a block boundary carries no padding, so the server
        // cannot tell it from an exact one and answers exactly (protocol §4 rule 3).
        let reply = read_reply(&mut stream, padding > 0).map_err(socket_error)?;
        if self.mode == ConnectionMode::Persistent {
            self.persistent = Some(stream);
        }
        Ok(reply)
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let connect_error = |source| ClientError::Connect {
            server: self.server.to_string(),
            source,
        };
        let addresses = (self.server.host.as_str(), self.server.port)
            .to_socket_addrs()
            .map_err(connect_error)?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, IO_TIMEOUT) {
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
/// up to the next 1024-byte boundary or until the server closes.
///
/// The payload grows as it arrives rather than being allocated at the announced size, so a
/// lying header costs no memory.
pub fn read_reply(stream: &mut impl Read, padded: bool) -> io::Result<Reply> {
    let mut header = [0; REPLY_HEADER_LEN];
    stream.read_exact(&mut header)?;
    let header = ReplyHeader::parse(&header);
    let size = u64::from(header.payload_size);
    let mut payload = Vec::new();
    stream.by_ref().take(size).read_to_end(&mut payload)?;
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
