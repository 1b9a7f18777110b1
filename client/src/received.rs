//! What a pulled or pushed message turned out to hold: keys are remembered, texts and files
//! decrypted (files saved in the downloads folder), and how each is printed, as the console
//! or as JSON.

use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::crypto::{decrypt, decrypt_to, AesKey, DecryptError, PrivateKey};
use super::state::Peers;
use messageu_protocol::client::PulledMessage;
use messageu_protocol::{ClientId, MessageId, MessageType};

/// Interprets one pulled message with `key` (ours) and the keys shared with `peers`; a file
/// is saved in `downloads`.
pub(crate) fn receive(
    key: &PrivateKey,
    peers: &mut Peers,
    message: &PulledMessage<'_>,
    downloads: &Path,
) -> Received {
    let from_name = peers
        .by_id(message.from)
        .map_or_else(|| message.from.to_string(), |peer| peer.name.clone());
    let shared_key = peers
        .by_id(message.from)
        .and_then(|peer| peer.symmetric_key.clone());
    let content = match MessageType::try_from(message.kind) {
        Ok(MessageType::SymmetricKeyRequest) => Content::KeyRequest,
        Ok(MessageType::SymmetricKey) => match key.decrypt_symmetric_key(message.content) {
            Ok(received) => {
                peers.set_symmetric_key(message.from, &from_name, received);
                Content::KeyReceived
            }
            Err(_) => Content::Undecryptable,
        },
        Ok(MessageType::Text) => shared_key
            .and_then(|shared| decrypt(&shared, message.content).ok())
            .map_or(Content::Undecryptable, |text| {
                Content::Text(String::from_utf8_lossy(&text).into_owned())
            }),
        Ok(MessageType::File) => match shared_key {
            Some(shared) => {
                let name = format!("{}-{}", file_name_part(&from_name), message.id.0);
                save_received_file(&shared, message.content, downloads, &name)
            }
            None => Content::Undecryptable,
        },
        Err(kind) => Content::UnknownType(kind),
    };
    Received {
        from: message.from,
        from_name,
        id: message.id,
        kind: message.kind,
        content,
    }
}

/// Decrypts a received file into `folder` (created if needed) as `name`, or `name-2`,
/// `name-3`… rather than replace a file.
fn save_received_file(key: &AesKey, ciphertext: &[u8], folder: &Path, name: &str) -> Content {
    let not_saved = |error: io::Error| Content::FileNotSaved(error.to_string());
    // Decrypted under a temporary name first, so a failure leaves nothing behind.
    let temporary = fs::create_dir_all(folder).and_then(|()| {
        tempfile::Builder::new()
            .prefix(".messageu-")
            .tempfile_in(folder)
    });
    let mut temporary = match temporary {
        Ok(temporary) => temporary,
        Err(error) => return not_saved(error),
    };
    let mut writer = BufWriter::new(temporary.as_file());
    let written = decrypt_to(key, ciphertext, &mut writer)
        .and_then(|()| writer.flush().map_err(DecryptError::Write));
    drop(writer);
    match written {
        Ok(()) => {}
        Err(DecryptError::Undecryptable) => return Content::Undecryptable,
        Err(DecryptError::Write(error)) => return not_saved(error),
    }
    let mut attempt = 1;
    loop {
        let path = match attempt {
            1 => folder.join(name),
            _ => folder.join(format!("{name}-{attempt}")),
        };
        match temporary.persist_noclobber(&path) {
            Ok(_) => return Content::File(path),
            Err(error) if error.error.kind() == io::ErrorKind::AlreadyExists => {
                temporary = error.file;
                attempt += 1;
            }
            Err(error) => return not_saved(error.error),
        }
    }
}

/// `name` as part of a file name: ASCII letters, digits, `-`, `_` and `.` kept, anything
/// else (separators included) as `_`, no leading dot, at most 100 characters.
fn file_name_part(name: &str) -> String {
    name.chars()
        .take(100)
        .enumerate()
        .map(|(at, c)| match c {
            '.' if at > 0 => c,
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// A pulled message as this client understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: ClientId,
    /// The sender's name from the client list, or its id in hex if the list lacks it.
    pub from_name: String,
    pub id: MessageId,
    /// The type byte as sent.
    pub kind: u8,
    pub content: Content,
}

/// What a pulled message turned out to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    KeyRequest,
    KeyReceived,
    Text(String),
    /// A received file, decrypted and saved here.
    File(PathBuf),
    /// No shared key, a wrong one, or a damaged ciphertext.
    Undecryptable,
    /// The file decrypted but could not be written.
    FileNotSaved(String),
    UnknownType(u8),
}

impl Content {
    /// Whether the message carried something encrypted, and if so whether it decrypted.
    pub fn decrypted(&self) -> Option<bool> {
        match self {
            Content::KeyReceived | Content::Text(_) | Content::File(_) => Some(true),
            Content::Undecryptable | Content::FileNotSaved(_) => Some(false),
            Content::KeyRequest | Content::UnknownType(_) => None,
        }
    }
}

impl fmt::Display for Content {
    /// The console's text for each type (protocol §6).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::KeyRequest => f.write_str("Request for symmetric key"),
            Content::KeyReceived => f.write_str("symmetric key received"),
            Content::Text(text) => f.write_str(text),
            Content::File(path) => write!(f, "{}", path.display()),
            Content::Undecryptable => f.write_str("can't decrypt message"),
            Content::FileNotSaved(reason) => write!(f, "can't save the file: {reason}"),
            Content::UnknownType(kind) => write!(f, "unknown message type {kind}"),
        }
    }
}

impl fmt::Display for Received {
    /// The message as the console prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "From: {}\nContent:\n{}\n-----<EOM>-----",
            self.from_name, self.content
        )
    }
}

/// Messages as the console prints them, with an empty line between two, as the C++ clients do.
pub fn console_text(messages: &[Received]) -> String {
    messages
        .iter()
        .map(|message| format!("{message}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Received {
    /// One JSON object: sender name and id, message id, type, the console's content text
    /// (the text itself for type 3, the saved file's path for type 4), and for types 2–4
    /// whether it decrypted.
    pub fn to_json(&self) -> String {
        let mut object = serde_json::json!({
            "from": self.from_name,
            "from_id": self.from.to_string(),
            "message_id": self.id.0,
            "type": self.kind,
            "content": self.content.to_string(),
        });
        if let Some(decrypted) = self.content.decrypted() {
            object["decrypted"] = decrypted.into();
        }
        object.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{encrypt, encrypt_symmetric_key};
    use crate::vectors::{self, client_id, hex, identity, other};
    use messageu_protocol::client::{pulled_messages, ListedClient};
    use serde_json::Value;

    /// The peers `who` knows after listing: the other side, by name and id.
    fn peers_of(who: &str) -> Peers {
        let vectors = vectors::vectors();
        let mut peers = Peers::default();
        peers.learn(&[ListedClient {
            id: client_id(&vectors[other(who)]["client_id"]),
            name: other(who).to_owned(),
        }]);
        peers
    }

    /// Receives every message of `payload` as `who`; files are saved in `downloads`.
    fn receive_all(
        who: &str,
        peers: &mut Peers,
        payload: &[u8],
        downloads: &Path,
    ) -> Vec<Received> {
        let me = identity(who);
        pulled_messages(payload)
            .map(|message| {
                let message = message.expect("whole message");
                receive(&me.key, peers, &message, downloads)
            })
            .collect()
    }

    fn temporary_folder() -> tempfile::TempDir {
        tempfile::tempdir().expect("temporary directory")
    }

    #[test]
    fn captured_pulls_decrypt_and_print_as_the_cpp_client_printed_them() {
        let vectors = vectors::vectors();
        let to_bob = &vectors["alice_to_bob"];
        let mut peers = peers_of("bob");
        let downloads = temporary_folder();
        let payload = &hex(&vectors["pull_reply_to_bob"])[7..];
        let received = receive_all("bob", &mut peers, payload, downloads.path());
        let file_path = match &received[4].content {
            Content::File(path) => path.clone(),
            other => panic!("expected a saved file, got {other:?}"),
        };
        assert_eq!(file_path, downloads.path().join("alice-5"));
        let file = std::fs::read(&file_path).expect("saved file");
        assert_eq!(file, vectors::read("file-1000.bin"));
        let text = |kind: &str| {
            to_bob[kind]["plaintext_text"]
                .as_str()
                .expect("text")
                .to_owned()
        };
        let contents: Vec<_> = received.iter().map(|m| m.content.clone()).collect();
        assert_eq!(
            contents,
            [
                Content::KeyRequest,
                Content::KeyReceived,
                Content::Text(text("type3_text")),
                Content::Text(text("type3_text_32_bytes")),
                Content::File(file_path),
            ]
        );
        assert!(received.iter().all(|m| m.from_name == "alice"));
        assert_eq!(received[2].id, MessageId(3));

        let mut peers = peers_of("alice");
        let received = receive_all(
            "alice",
            &mut peers,
            &hex(&vectors["pull_reply_to_alice"])[7..],
            downloads.path(),
        );
        let cpp_output = vectors["bob_to_alice"]["cpp_console_output"]
            .as_str()
            .expect("text");
        // The one difference: that C++ client capitalizes the type-2 line; §6 does not.
        let cpp_output = cpp_output.replace("Symmetric key received", "symmetric key received");
        assert_eq!(console_text(&received), cpp_output);
    }

    /// A pull reply's payload: each message as sender | id | type | size | content.
    fn pull_payload(from: ClientId, messages: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (index, (kind, content)) in messages.iter().enumerate() {
            payload.extend_from_slice(&from.0);
            payload.extend_from_slice(&(index as u32 + 1).to_le_bytes());
            payload.push(*kind);
            payload.extend_from_slice(&(content.len() as u32).to_le_bytes());
            payload.extend_from_slice(content);
        }
        payload
    }

    #[test]
    fn each_message_type_round_trips_between_our_clients() {
        let vectors = vectors::vectors();
        let alice = client_id(&vectors["alice"]["client_id"]);
        let bob_public = identity("bob").key.public_key().expect("160 bytes");
        let shared = AesKey::random();
        let file: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let messages = [
            (1, Vec::new()),
            (
                2,
                encrypt_symmetric_key(&bob_public, &shared).expect("encrypts"),
            ),
            (3, encrypt(&shared, b"Michael Jackson says hi")),
            (4, encrypt(&shared, &file)),
        ];
        let mut peers = peers_of("bob");
        let downloads = temporary_folder();
        let payload = pull_payload(alice, &messages);
        let received = receive_all("bob", &mut peers, &payload, downloads.path());
        assert_eq!(received[0].content, Content::KeyRequest);
        assert_eq!(received[1].content, Content::KeyReceived);
        assert_eq!(
            peers.by_name("alice").and_then(|p| p.symmetric_key.clone()),
            Some(shared)
        );
        assert_eq!(
            received[2].content,
            Content::Text("Michael Jackson says hi".into())
        );
        assert!(matches!(received[3].content, Content::File(_)));
    }

    #[test]
    fn what_cannot_be_understood_is_said_so() {
        let stranger = ClientId([0xab; 16]);
        let messages = [
            (3, encrypt(&AesKey::random(), b"no key shared yet")),
            (4, encrypt(&AesKey::random(), b"nor for files")),
            (2, vec![1; 128]),
            (9, Vec::new()),
        ];
        let mut peers = Peers::default();
        let downloads = temporary_folder();
        let payload = pull_payload(stranger, &messages);
        let received = receive_all("bob", &mut peers, &payload, downloads.path());
        let contents: Vec<_> = received.iter().map(|m| m.content.clone()).collect();
        assert_eq!(
            contents,
            [
                Content::Undecryptable,
                Content::Undecryptable,
                Content::Undecryptable,
                Content::UnknownType(9),
            ]
        );
        assert_eq!(received[0].from_name, "ab".repeat(16));
    }

    #[test]
    fn received_messages_print_as_the_console_and_as_json() {
        let message = Received {
            from: ClientId([1; 16]),
            from_name: "alice".into(),
            id: MessageId(7),
            kind: 3,
            content: Content::Text("hi\nthere".into()),
        };
        assert_eq!(
            message.to_string(),
            "From: alice\nContent:\nhi\nthere\n-----<EOM>-----"
        );
        let json: Value = serde_json::from_str(&message.to_json()).expect("JSON");
        assert_eq!(json["from"], "alice");
        assert_eq!(json["from_id"], "01".repeat(16));
        assert_eq!(json["message_id"], 7);
        assert_eq!(json["type"], 3);
        assert_eq!(json["content"], "hi\nthere");
        assert_eq!(json["decrypted"], true);
        let request = Received {
            kind: 1,
            content: Content::KeyRequest,
            ..message
        };
        let json: Value = serde_json::from_str(&request.to_json()).expect("JSON");
        assert_eq!(json["content"], "Request for symmetric key");
        assert!(json.get("decrypted").is_none());
    }

    #[test]
    fn received_files_are_named_by_sender_and_id_and_never_replace_a_file() {
        let downloads = temporary_folder();
        let folder = downloads.path().join("new");
        let key = AesKey::random();
        let saved: Vec<_> = [b"first", b"again"]
            .iter()
            .map(|content| save_received_file(&key, &encrypt(&key, *content), &folder, "bob-7"))
            .collect();
        let names = ["bob-7", "bob-7-2"].map(|name| Content::File(folder.join(name)));
        assert_eq!(saved, names);
        assert_eq!(fs::read(folder.join("bob-7")).expect("first"), b"first");
        assert_eq!(fs::read(folder.join("bob-7-2")).expect("second"), b"again");
        let damaged = save_received_file(&key, &[1; 15], &folder, "bob-8");
        assert_eq!(damaged, Content::Undecryptable);
        assert_eq!(
            fs::read_dir(&folder).expect("folder").count(),
            2,
            "no leftovers"
        );

        assert_eq!(file_name_part("Michael Jackson"), "Michael_Jackson");
        assert_eq!(file_name_part("../etc/passwd"), "_._etc_passwd");
        assert_eq!(file_name_part("a.b"), "a.b");
        assert_eq!(file_name_part(&"x".repeat(254)).len(), 100);
    }
}
