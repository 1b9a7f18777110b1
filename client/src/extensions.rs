//! The extensions this client uses when a server offers them (protocol part II): a hello on
//! each new connection, then, if the server offers authentication and this client is
//! registered, the proof of key possession that authenticates the connection (§E3), so that
//! a protected account (§E4) keeps working. A classic server answers the hello with a bare
//! 9000, and is then spoken to in the classic protocol only.

use std::io::{Read, Write};

use super::crypto::PrivateKey;
use super::error::ClientError;
use super::transport::{read_reply, socket_error, Reply};
use messageu_protocol::extension::{
    extension_request, hello_payload, parse_capabilities, proof, SECRET_LEN,
};
use messageu_protocol::{ClientId, Extension, Features, Refusal, ERROR_REPLY_CODE};

/// Who this client proves to be on each new connection.
#[derive(Debug, Clone)]
pub struct Login {
    pub id: ClientId,
    pub key: PrivateKey,
}

/// What the server turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// No connection has said hello yet.
    Unknown,
    /// It answered the hello with 9000: no extensions.
    Classic,
    /// It serves the extensions of these features.
    Extended(Features),
}

/// Says hello on a new connection and, if the server offers authentication, logs in as
/// `login`; returns what the server is. A log-in the server refuses (an id it does not know,
/// say) leaves the connection unauthenticated: its requests then get the server's answer.
pub fn open<S: Read + Write>(
    stream: &mut S,
    login: Option<&Login>,
) -> Result<ServerKind, ClientError> {
    let hello = extension_request(Extension::Hello, ClientId::default(), &hello_payload());
    let hello = call(stream, &hello)?;
    if hello.header.code == ERROR_REPLY_CODE {
        return Ok(ServerKind::Classic);
    }
    expect(&hello, Extension::Hello)?;
    let features = parse_capabilities(&hello.payload)
        .ok_or(ClientError::UnexpectedReply {
            extension: Extension::Hello,
            code: hello.header.code,
        })?
        .features;
    if let Some(login) = login.filter(|_| features.has(Features::AUTHENTICATION)) {
        match authenticate(stream, login) {
            Ok(()) => {}
            Err(ClientError::LoginFailed | ClientError::ExtensionRefused { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(ServerKind::Extended(features))
}

/// Challenge, then prove (protocol §E3).
fn authenticate<S: Read + Write>(stream: &mut S, login: &Login) -> Result<(), ClientError> {
    let challenge = call(
        stream,
        &extension_request(Extension::Challenge, login.id, &[]),
    )?;
    expect(&challenge, Extension::Challenge)?;
    let secret: [u8; SECRET_LEN] = login
        .key
        .decrypt_challenge(&challenge.payload)
        .ok_or(ClientError::LoginFailed)?;
    let answer = proof(&secret, login.id);
    let proved = call(
        stream,
        &extension_request(Extension::Prove, login.id, &answer),
    )?;
    expect(&proved, Extension::Prove)
}

/// Fails unless `reply` is `extension`'s success; a 9000 gives its reason.
pub fn expect(reply: &Reply, extension: Extension) -> Result<(), ClientError> {
    if reply.header.code == extension.reply_code() {
        return Ok(());
    }
    Err(match reason_text(reply) {
        Some(reason) => ClientError::ExtensionRefused { extension, reason },
        None => ClientError::UnexpectedReply {
            extension,
            code: reply.header.code,
        },
    })
}

/// The reason text of a 9000 that carries one (protocol §E1).
pub fn reason_text(reply: &Reply) -> Option<String> {
    if reply.header.code != ERROR_REPLY_CODE {
        return None;
    }
    Refusal::parse(&reply.payload).map(|(_, text)| text)
}

fn call<S: Read + Write>(stream: &mut S, request: &[u8]) -> Result<Reply, ClientError> {
    stream.write_all(request).map_err(socket_error)?;
    read_reply(stream, false, &mut |_, _| {}).map_err(socket_error)
}
