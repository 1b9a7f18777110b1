//! The client's operations: each sends its requests through the shared codec
//! ([`messageu_protocol::client`]) and keeps what it learns in [`Peers`].

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::crypto::{
    ciphertext_len, encrypt, encrypt_stream, encrypt_symmetric_key, validate_public_key, AesKey,
    PrivateKey, StreamError,
};
use super::error::ClientError;
use super::extensions::{self, Login, ServerKind};
use super::identity::{exists, validate_name, Identity, NewMeInfo, ME_INFO, SERVER_INFO};
use super::received::{receive, Received};
use super::servers::Servers;
use super::state::{DamagedState, Peer, Peers, STATE_FILE};
use super::transport::{socket_error, ConnectionMode, Greeting, Reply, Transport};
use messageu_protocol::client::{
    bare_request, check_reply_code, parse_client_list, parse_public_key, parse_registered,
    parse_sent, public_key_request, pulled_messages, register_request, send_request,
    send_request_head, ListedClient, PulledMessage, ReplyError, MAX_SEND_CONTENT,
};
use messageu_protocol::extension::{extension_request, long_poll_payload};
use messageu_protocol::{
    ClientId, Edition, Extension, Features, MessageId, MessageType, Operation, Protection,
};

/// What a session needs to start.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub edition: Edition,
    pub mode: ConnectionMode,
    /// Overrides `server.info`.
    pub server: Option<Servers>,
    /// The folder of `me.info`, `server.info` and the state file.
    pub dir: PathBuf,
    /// Where received files are saved; by default [`DOWNLOADS`] in `dir`.
    pub downloads: Option<PathBuf>,
}

/// The folder beside `me.info` where received files are saved unless told otherwise.
pub const DOWNLOADS: &str = "downloads";

/// A client: its identity (once registered), its peers, and its connection to the server.
#[derive(Debug)]
pub struct Session {
    edition: Edition,
    transport: Transport,
    dir: PathBuf,
    /// Created when the first file arrives.
    downloads: PathBuf,
    identity: Option<Identity>,
    /// A damaged state file blocks only the operations that need what it holds.
    peers: Result<Peers, DamagedState>,
}

impl Session {
    /// Reads the client's files: `server.info` (unless overridden), `me.info` and the state
    /// file if they exist. Connects only when the first request is sent.
    pub fn open(options: SessionOptions) -> Result<Session, ClientError> {
        check_folder(&options.dir)?;
        let server = match options.server {
            Some(server) => server,
            None => {
                let path = options.dir.join(SERVER_INFO);
                if !exists(&path)? {
                    return Err(ClientError::NoServer(path));
                }
                Servers::load(&path)?
            }
        };
        let me_info = options.dir.join(ME_INFO);
        let identity = if exists(&me_info)? {
            Some(Identity::load(&me_info)?)
        } else {
            None
        };
        let peers = match &identity {
            Some(me) => match Peers::load(&options.dir.join(STATE_FILE), me.id) {
                Err(ClientError::BadState(damaged)) => Err(damaged),
                loaded => Ok(loaded?),
            },
            None => Ok(Peers::default()),
        };
        let mut transport = Transport::new(server, options.mode, Greeting::Hello);
        if let Some(me) = &identity {
            transport.log_in_as(Login {
                id: me.id,
                key: me.key.clone(),
            });
        }
        Ok(Session {
            edition: options.edition,
            transport,
            downloads: options
                .downloads
                .unwrap_or_else(|| options.dir.join(DOWNLOADS)),
            dir: options.dir,
            identity,
            peers,
        })
    }

    /// The edition whose request codes this session sends.
    pub fn edition(&self) -> Edition {
        self.edition
    }

    fn peers(&self) -> Result<&Peers, ClientError> {
        self.peers
            .as_ref()
            .map_err(|damaged| damaged.clone().into())
    }

    fn peers_mut(&mut self) -> Result<&mut Peers, ClientError> {
        self.peers
            .as_mut()
            .map_err(|damaged| damaged.clone().into())
    }

    fn me(&self) -> Result<&Identity, ClientError> {
        self.identity
            .as_ref()
            .ok_or_else(|| not_registered(&self.dir))
    }

    /// Fails if this client is registered already: one `me.info` is one user.
    pub fn check_can_register(&self) -> Result<(), ClientError> {
        let me_info = self.dir.join(ME_INFO);
        if self.identity.is_some() || exists(&me_info)? {
            return Err(ClientError::AlreadyRegistered(me_info));
        }
        Ok(())
    }

    /// Registers `name` with a new key pair and writes `me.info`.
    pub fn register(&mut self, name: &str) -> Result<ClientId, ClientError> {
        self.check_can_register()?;
        validate_name(name)?;
        let key = PrivateKey::generate()?;
        let request = register_request(self.edition, name, &key.public_key()?);
        let me_info = NewMeInfo::create(&self.dir.join(ME_INFO))?;
        let id = parse_registered(&self.exchange(Operation::Register, &request)?)?;
        let identity = Identity {
            name: name.to_owned(),
            id,
            key,
        };
        me_info.write(&identity)?;
        self.transport.log_in_as(Login {
            id,
            key: identity.key.clone(),
        });
        self.identity = Some(identity);
        self.peers = Ok(Peers::default());
        Ok(id)
    }

    /// Every other registered client; their ids and names are remembered unless the state
    /// file is damaged, which is then left as it is.
    pub fn list_clients(&mut self) -> Result<Vec<ListedClient>, ClientError> {
        let caller = self.me()?.id;
        let request = bare_request(self.edition, Operation::ListClients, caller);
        let listed = parse_client_list(&self.exchange(Operation::ListClients, &request)?)?;
        if let Ok(peers) = &mut self.peers {
            peers.learn(&listed);
        }
        self.save_state()?;
        Ok(listed)
    }

    /// Fetches and remembers `name`'s public key.
    pub fn fetch_public_key(&mut self, name: &str) -> Result<(), ClientError> {
        let caller = self.me()?.id;
        let target = self.peer_id(name)?;
        let request = public_key_request(self.edition, caller, target);
        let (id, key) = parse_public_key(&self.exchange(Operation::PublicKey, &request)?)?;
        if id != target {
            return Err(ClientError::ReplyForOtherClient {
                expected: target,
                actual: id,
            });
        }
        validate_public_key(&key)?;
        self.peers_mut()?.set_public_key(id, key);
        self.save_state()
    }

    /// Sends `name` a request for a symmetric key (type 1).
    pub fn request_symmetric_key(&mut self, name: &str) -> Result<MessageId, ClientError> {
        let to = self.peer_id(name)?;
        self.send(to, name, MessageType::SymmetricKeyRequest, &[])
    }

    /// Makes a new AES key for `name`, sends it encrypted with their public key (type 2) and
    /// remembers it.
    pub fn send_symmetric_key(&mut self, name: &str) -> Result<MessageId, ClientError> {
        self.send_key(name, AesKey::random())
    }

    /// Sends `name` the key already shared with them (a new one if none is), as an answer to
    /// their request: a new key would leave their messages under the old one undecryptable.
    pub(crate) fn resend_symmetric_key(&mut self, name: &str) -> Result<MessageId, ClientError> {
        let to = self.peer_id(name)?;
        let shared = self
            .known_peer(to)
            .and_then(|peer| peer.symmetric_key.clone());
        self.send_key(name, shared.unwrap_or_else(AesKey::random))
    }

    fn send_key(&mut self, name: &str, key: AesKey) -> Result<MessageId, ClientError> {
        let to = self.peer_id(name)?;
        let public_key = self
            .peers()?
            .by_id(to)
            .and_then(|peer| peer.public_key.clone())
            .ok_or_else(|| ClientError::NoPublicKey(name.to_owned()))?;
        let content = encrypt_symmetric_key(&public_key, &key)?;
        let id = self.send(to, name, MessageType::SymmetricKey, &content)?;
        self.peers_mut()?.set_symmetric_key(to, name, key);
        self.save_state()?;
        Ok(id)
    }

    /// Sends `text` to `name` (type 3), encrypted with the key shared with them.
    pub fn send_text(&mut self, name: &str, text: &str) -> Result<MessageId, ClientError> {
        let to = self.peer_id(name)?;
        let key = self.symmetric_key(to, name)?;
        self.send(to, name, MessageType::Text, &encrypt(&key, text.as_bytes()))
    }

    /// Sends the file at `path` to `name` (type 4), encrypting it as it is read and written
    /// to the socket. `progress` gets the plaintext bytes sent so far and the file's length.
    pub fn send_file(
        &mut self,
        name: &str,
        path: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<MessageId, ClientError> {
        let caller = self.me()?.id;
        let file_error = |source| ClientError::File {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(file_error)?;
        let len = file.metadata().map_err(file_error)?.len();
        let content_len = ciphertext_len(len);
        let content_size = u32::try_from(content_len)
            .ok()
            .filter(|&size| size <= MAX_SEND_CONTENT)
            .ok_or_else(|| ClientError::FileTooLarge {
                path: path.to_owned(),
                len,
            })?;
        let to = self.peer_id(name)?;
        let key = self.symmetric_key(to, name)?;
        let head = send_request_head(
            self.edition,
            caller,
            to,
            MessageType::File as u8,
            content_size,
        );
        let reply = self
            .transport
            .call_streaming(
                &head,
                content_len,
                |socket| {
                    let mut sent = 0;
                    // Never more than the request announced, even if the file grows meanwhile.
                    let read = encrypt_stream(&key, file.take(len), socket, |chunk| {
                        sent += chunk;
                        progress(sent, len);
                    })
                    .map_err(|error| match error {
                        StreamError::Read(source) => file_error(source),
                        StreamError::Write(error) => socket_error(error),
                    })?;
                    if read < len {
                        // The request announced `len` bytes; the connection is now unusable.
                        return Err(ClientError::FileChanged {
                            path: path.to_owned(),
                        });
                    }
                    Ok(())
                },
                &mut |_, _| {},
            )
            .map_err(|error| unconfirmed(error, name))?;
        self.sent(to, reply)
    }

    /// Pulls the waiting messages and interprets each: keys are remembered, texts and files
    /// decrypted (files saved in the downloads folder). With `wait`, a server that offers
    /// long-poll (protocol §E6) holds the reply until a message comes or the wait ends.
    /// `progress` gets the reply's bytes received so far and its size as they arrive.
    pub fn pull(
        &mut self,
        wait: Option<Duration>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Vec<Received>, ClientError> {
        let caller = self.me()?.id;
        // Checked first: pulled messages are off the server, and need the keys to be read.
        self.peers()?;
        let payload = match wait {
            Some(wait) => self.long_poll(caller, wait)?,
            None => {
                let request = bare_request(self.edition, Operation::PullMessages, caller);
                let reply = self
                    .transport
                    .call_streaming(&request, 0, |_| Ok(()), &mut progress)
                    .map_err(pull_unconfirmed)?;
                check_reply(self.edition, Operation::PullMessages, &reply)?;
                reply.payload
            }
        };
        let messages = pulled_messages(&payload).collect::<Result<Vec<_>, _>>()?;
        self.receive_all(&messages)
    }

    /// Interprets messages taken off the server (pulled or pushed), naming their senders and
    /// keeping the keys they carry.
    pub(crate) fn receive_all(
        &mut self,
        messages: &[PulledMessage<'_>],
    ) -> Result<Vec<Received>, ClientError> {
        let known = self.peers()?;
        if messages
            .iter()
            .any(|message| known.by_id(message.from).is_none())
        {
            // Only for names: the messages are already off the server, so a failed list must
            // not lose them; unknown senders then show as hex ids.
            let _ = self.list_clients();
        }
        // Borrowing the fields, not `self`, lets the peers change while the key is read.
        let me = self
            .identity
            .as_ref()
            .ok_or_else(|| not_registered(&self.dir))?;
        let peers = self
            .peers
            .as_mut()
            .map_err(|damaged| ClientError::from(damaged.clone()))?;
        let received = messages
            .iter()
            .map(|message| receive(&me.key, peers, message, &self.downloads))
            .collect();
        self.save_state()?;
        Ok(received)
    }

    /// A long-poll's payload: the messages, in a pull's layout. Never sent again if its reply
    /// is lost, as a pull is not.
    fn long_poll(&mut self, caller: ClientId, wait: Duration) -> Result<Vec<u8>, ClientError> {
        match self.transport.learn_server_kind()? {
            ServerKind::Extended(features) if features.has(Features::LONG_POLL) => {}
            _ => return Err(ClientError::NoLongPoll),
        }
        let request = extension_request(Extension::LongPoll, caller, &long_poll_payload(wait));
        let reply = self
            .transport
            .call_waiting(&request, wait)
            .map_err(pull_unconfirmed)?;
        extensions::expect(&reply, Extension::LongPoll)?;
        Ok(reply.payload)
    }

    /// The id of the peer called `name`, fetching the client list if it is not known yet.
    pub(crate) fn peer_id(&mut self, name: &str) -> Result<ClientId, ClientError> {
        if let Some(peer) = self.peers()?.by_name(name) {
            return Ok(peer.id);
        }
        self.list_clients()?;
        self.peers()?
            .by_name(name)
            .map(|peer| peer.id)
            .ok_or_else(|| ClientError::UnknownPeer(name.to_owned()))
    }

    fn symmetric_key(&self, id: ClientId, name: &str) -> Result<AesKey, ClientError> {
        self.peers()?
            .by_id(id)
            .and_then(|peer| peer.symmetric_key.clone())
            .ok_or_else(|| ClientError::NoSymmetricKey(name.to_owned()))
    }

    /// Sends a message to `to`, called `name`; never sent again if its reply is lost.
    fn send(
        &mut self,
        to: ClientId,
        name: &str,
        kind: MessageType,
        content: &[u8],
    ) -> Result<MessageId, ClientError> {
        let caller = self.me()?.id;
        let request = send_request(self.edition, caller, to, kind as u8, content);
        let reply = self
            .transport
            .call(&request)
            .map_err(|error| unconfirmed(error, name))?;
        self.sent(to, reply)
    }

    /// The message id of a send reply, checked to be for `to`.
    fn sent(&self, to: ClientId, reply: Reply) -> Result<MessageId, ClientError> {
        check_reply(self.edition, Operation::SendMessage, &reply)?;
        let (destination, id) = parse_sent(&reply.payload)?;
        if destination != to {
            return Err(ClientError::ReplyForOtherClient {
                expected: to,
                actual: destination,
            });
        }
        Ok(id)
    }

    /// Sends a request held in memory; returns the payload of a reply to `operation`. Used
    /// for the list, a public key and a registration, which are sent again, on the next
    /// node, if their reply is lost: the first two change nothing, and a repeated register at
    /// worst finds its own name taken.
    fn exchange(&mut self, operation: Operation, request: &[u8]) -> Result<Vec<u8>, ClientError> {
        let reply = self.transport.call_repeatable(request, &mut |_, _| {})?;
        check_reply(self.edition, operation, &reply)?;
        Ok(reply.payload)
    }

    /// Protects this client's account, or stops protecting it (protocol §E4): its requests
    /// are then served only on connections that prove to hold its key, as this client's do.
    pub fn protect(&mut self, protection: Protection) -> Result<(), ClientError> {
        let payload = [protection as u8];
        self.extension_call(Extension::Protect, Features::PROTECTION, &payload)
            .map_err(|error| match error {
                ClientError::NotOffered(_) => ClientError::NoProtection,
                error => error,
            })
            .map(drop)
    }

    /// Sends an extension request as this client and returns the payload of its success,
    /// if the server offers `feature`; otherwise [`ClientError::NotOffered`]. Those that
    /// change nothing (or set a state, as protecting does) are sent again on the next node if
    /// their reply is lost; unsend and deleting the account are not.
    pub(crate) fn extension_call(
        &mut self,
        extension: Extension,
        feature: Features,
        payload: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let caller = self.me()?.id;
        let request = extension_request(extension, caller, payload);
        let reply = match extension {
            Extension::ListAccounts | Extension::QueueStatus | Extension::Protect => {
                self.transport.call_repeatable(&request, &mut |_, _| {})?
            }
            _ => self.transport.call(&request)?,
        };
        match self.transport.server_kind() {
            ServerKind::Extended(features) if features.has(feature) => {
                extensions::expect(&reply, extension)?;
                Ok(reply.payload)
            }
            _ => Err(ClientError::NotOffered(extension)),
        }
    }

    /// The name this client knows `id` by, if it does.
    pub(crate) fn peer_name(&self, id: ClientId) -> Option<String> {
        self.known_peer(id).map(|peer| peer.name.clone())
    }

    /// What this client knows of `id`, if anything.
    pub(crate) fn known_peer(&self, id: ClientId) -> Option<&Peer> {
        self.peers.as_ref().ok()?.by_id(id)
    }

    /// Where a subscription connects (the node that last worked first), and who it logs in
    /// as (protocol §E3, §E5).
    pub(crate) fn subscriber(&self) -> Result<(Servers, Login), ClientError> {
        let me = self.me()?;
        let login = Login {
            id: me.id,
            key: me.key.clone(),
        };
        Ok((self.transport.servers().clone(), login))
    }

    fn save_state(&self) -> Result<(), ClientError> {
        match (&self.identity, &self.peers) {
            (Some(me), Ok(peers)) => peers.save(&self.dir.join(STATE_FILE), me.id),
            _ => Ok(()),
        }
    }
}

/// A send to `to` whose reply never came may have been stored: it is reported as such, never
/// repeated here.
fn unconfirmed(error: ClientError, to: &str) -> ClientError {
    match error {
        ClientError::ReplyLost { server, .. } => ClientError::SendUnconfirmed {
            to: to.to_owned(),
            server,
        },
        other => other,
    }
}

/// A pull whose reply never came may have taken messages off the server: it is reported as
/// such, never repeated here.
fn pull_unconfirmed(error: ClientError) -> ClientError {
    match error {
        ClientError::ReplyLost { server, .. } => ClientError::PullUnconfirmed { server },
        other => other,
    }
}

/// Checks that `reply` answers `operation`; a 9000 reply names its likely causes, and the
/// server's reason if it gave one.
fn check_reply(edition: Edition, operation: Operation, reply: &Reply) -> Result<(), ClientError> {
    check_reply_code(edition, operation, &reply.header).map_err(|error| match error {
        ReplyError::ServerError => ClientError::Refused {
            operation,
            reason: extensions::reason_text(reply),
        },
        other => ClientError::Reply(other),
    })
}

/// Fails unless `dir` is a folder, so that its files are not reported missing one by one.
fn check_folder(dir: &Path) -> Result<(), ClientError> {
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(ClientError::NotAFolder(dir.to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            Err(ClientError::NoFolder(dir.to_owned()))
        }
        Err(source) => Err(ClientError::File {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn not_registered(dir: &Path) -> ClientError {
    ClientError::NotRegistered(dir.join(ME_INFO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{self, client_id, hex, other, public_key};
    use messageu_protocol::{ReplyHeader, RequestCode, RequestHeader};
    use serde_json::Value;

    /// The capture's edition: 2025 (codes 600–604).
    const EDITION: Edition = Edition::Y2024;

    fn frame_bytes(frame: &Value) -> Vec<u8> {
        hex(&frame["hex"])
    }

    #[test]
    fn our_codec_reproduces_every_captured_request_byte_for_byte() {
        let vectors = vectors::vectors();
        let id = |who: &str| client_id(&vectors[who]["client_id"]);
        let requests = vectors::capture().into_iter().filter(|f| f["dir"] == "c2s");
        let mut count = 0;
        for frame in requests {
            let who = frame["who"].as_str().expect("who");
            let bytes = frame_bytes(&frame);
            let header = RequestHeader::parse_prefix(&bytes).expect("header");
            let code = RequestCode::from_wire(header.code).expect("known code");
            assert_eq!(code.edition, EDITION);
            let ours = match code.operation {
                Operation::Register => {
                    register_request(EDITION, who, &public_key(&vectors[who]["public_key_der"]))
                }
                Operation::ListClients | Operation::PullMessages => {
                    bare_request(EDITION, code.operation, id(who))
                }
                Operation::PublicKey => public_key_request(EDITION, id(who), id(other(who))),
                Operation::SendMessage => {
                    let kind = frame["message_type"].as_u64().expect("type") as u8;
                    send_request(EDITION, id(who), id(other(who)), kind, &bytes[44..])
                }
            };
            assert_eq!(ours, bytes, "frame {}", frame["n"]);
            count += 1;
        }
        assert_eq!(count, 15);
    }

    #[test]
    fn every_captured_reply_parses() {
        let vectors = vectors::vectors();
        let id = |who: &str| client_id(&vectors[who]["client_id"]);
        let replies = vectors::capture().into_iter().filter(|f| f["dir"] == "s2c");
        let mut count = 0;
        for frame in replies {
            let who = frame["who"].as_str().expect("who");
            let bytes = frame_bytes(&frame);
            let header = ReplyHeader::parse(bytes[..7].try_into().expect("header"));
            let payload = &bytes[7..];
            assert_eq!(header.payload_size as usize, payload.len());
            let operation = Operation::ALL[usize::from(header.code - 2100)];
            check_reply_code(EDITION, operation, &header).expect("expected code");
            match operation {
                Operation::Register => assert_eq!(parse_registered(payload), Ok(id(who))),
                Operation::ListClients => {
                    let listed = parse_client_list(payload).expect("list");
                    assert_eq!(listed.len(), 1);
                    assert_eq!(
                        (listed[0].id, listed[0].name.as_str()),
                        (id(other(who)), other(who))
                    );
                }
                Operation::PublicKey => assert_eq!(
                    parse_public_key(payload),
                    Ok((
                        id(other(who)),
                        public_key(&vectors[other(who)]["public_key_der"])
                    ))
                ),
                Operation::SendMessage => {
                    assert_eq!(parse_sent(payload).map(|(to, _)| to), Ok(id(other(who))))
                }
                Operation::PullMessages => {
                    let messages = pulled_messages(payload).collect::<Result<Vec<_>, _>>();
                    let messages = messages.expect("whole messages");
                    assert_eq!(messages.len(), if who == "bob" { 5 } else { 2 });
                }
            }
            count += 1;
        }
        assert_eq!(count, 15);
    }
}
