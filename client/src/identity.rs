//! The client's files of protocol §6: `server.info` and `me.info`.
//!
//! `me.info` is shared with the C++ clients in both directions: this reader accepts the id in
//! either hex case and the Base64 private key wrapped at any width, and the writer produces
//! what Crypto++ writes (upper-case hex, Base64 wrapped at 72 characters, LF line endings).

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::crypto::{CryptoError, PrivateKey};
use super::error::ClientError;
use messageu_protocol::{ClientId, NAME_FIELD_LEN};

/// The file holding the user's name, id and private key.
pub const ME_INFO: &str = "me.info";
/// The file holding the server's `host:port` (or several, one a line: see [`Servers`]).
///
/// [`Servers`]: super::servers::Servers
pub const SERVER_INFO: &str = "server.info";
/// Crypto++'s Base64Encoder inserts a line break after this many characters.
const BASE64_LINE_LEN: usize = 72;

/// What is wrong with the contents of `me.info` or `server.info`.
#[derive(Debug, thiserror::Error)]
pub enum FileFormatError {
    #[error("the file is not text")]
    NotText,
    #[error("line 1 (the user name) is missing or empty")]
    MissingName,
    #[error("line 2 is not a client id of 32 hex digits")]
    BadClientId,
    #[error("the private key (line 3 onward) is missing")]
    MissingKey,
    #[error("the private key is not valid Base64: {0}")]
    BadBase64(#[from] base64::DecodeError),
    #[error("{0}")]
    BadKey(#[from] CryptoError),
    #[error("{0:?} is not host:port (e.g. 127.0.0.1:1357)")]
    BadServerAddress(String),
    #[error("no server in it: write host:port (e.g. 127.0.0.1:1357), one server a line")]
    NoServerAddress,
}

/// A user name the protocol can carry: 1–254 printable ASCII characters (spaces included).
pub fn validate_name(name: &str) -> Result<(), ClientError> {
    let printable = name.bytes().all(|byte| (b' '..=b'~').contains(&byte));
    if name.is_empty() || name.len() >= NAME_FIELD_LEN || !printable {
        return Err(ClientError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The server to connect to, as `server.info` or `--server` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    pub host: String,
    pub port: u16,
}

impl ServerAddress {
    /// Parses `host:port`; surrounding whitespace (the line ending) is ignored.
    pub fn parse(text: &str) -> Result<ServerAddress, FileFormatError> {
        let bad = || FileFormatError::BadServerAddress(text.trim().to_owned());
        let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match port.parse::<u16>() {
            Ok(port) if port != 0 && !host.is_empty() && !host.contains(char::is_whitespace) => {
                Ok(ServerAddress {
                    host: host.to_owned(),
                    port,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Who this client is: the contents of `me.info`.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub id: ClientId,
    pub key: PrivateKey,
}

impl Identity {
    /// Parses `me.info`: name, 32 hex digits, then Base64 PKCS#8 over any number of lines.
    pub fn parse(text: &str) -> Result<Identity, FileFormatError> {
        let mut lines = text.lines();
        let name = lines
            .next()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|name| !name.is_empty())
            .ok_or(FileFormatError::MissingName)?;
        let id = lines
            .next()
            .and_then(|line| decode_hex::<16>(line.trim()))
            .map(ClientId)
            .ok_or(FileFormatError::BadClientId)?;
        let base64: String = lines
            .flat_map(str::chars)
            .filter(|c| !c.is_whitespace())
            .collect();
        if base64.is_empty() {
            return Err(FileFormatError::MissingKey);
        }
        let key = PrivateKey::from_pkcs8_der(&BASE64.decode(base64)?)?;
        Ok(Identity {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The text of `me.info` as a C++ (Crypto++) client writes it.
    pub fn to_me_info(&self) -> Result<String, CryptoError> {
        let base64 = BASE64.encode(self.key.to_pkcs8_der()?);
        let mut text = format!("{}\n{}\n", self.name, encode_hex(&self.id.0).to_uppercase());
        // Base64 is ASCII, so any byte offset is a character boundary.
        for start in (0..base64.len()).step_by(BASE64_LINE_LEN) {
            text.push_str(&base64[start..base64.len().min(start + BASE64_LINE_LEN)]);
            text.push('\n');
        }
        Ok(text)
    }

    /// Reads `me.info`.
    pub fn load(path: &Path) -> Result<Identity, ClientError> {
        let text = read_text(path)?;
        Identity::parse(&text).map_err(|source| ClientError::BadFile {
            path: path.to_owned(),
            source,
        })
    }
}

/// A `me.info` created empty before registering, so that a folder where it cannot be written
/// is found before the server registers the name. Removed again unless written.
#[derive(Debug)]
pub struct NewMeInfo {
    file: fs::File,
    path: PathBuf,
    written: bool,
}

impl NewMeInfo {
    /// Creates `path`, readable by the owner only (it will hold the private key); fails if
    /// it exists.
    pub fn create(path: &Path) -> Result<NewMeInfo, ClientError> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|source| ClientError::File {
            path: path.to_owned(),
            source,
        })?;
        Ok(NewMeInfo {
            file,
            path: path.to_owned(),
            written: false,
        })
    }

    /// Writes `identity` and keeps the file.
    pub fn write(mut self, identity: &Identity) -> Result<(), ClientError> {
        let text = identity.to_me_info()?;
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_all());
        written.map_err(|source| ClientError::File {
            path: self.path.clone(),
            source,
        })?;
        self.written = true;
        Ok(())
    }
}

impl Drop for NewMeInfo {
    fn drop(&mut self) {
        if !self.written {
            // Nothing useful is in it; a failure here leaves an empty file the user can see.
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(crate) fn read_text(path: &Path) -> Result<String, ClientError> {
    let bytes = fs::read(path).map_err(|source| ClientError::File {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| ClientError::BadFile {
        path: path.to_owned(),
        source: FileFormatError::NotText,
    })
}

/// Whether `path` exists; an error other than "not found" (say, permissions) is reported.
pub(crate) fn exists(path: &Path) -> Result<bool, ClientError> {
    match fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ClientError::File {
            path: PathBuf::from(path),
            source,
        }),
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Exactly `N` bytes from `2 * N` hex digits of either case.
pub(crate) fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        // `pair` is two hex digits (checked above), so it is valid UTF-8.
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{self, client_id, identity, read_text};

    #[test]
    fn a_cpp_me_info_is_read_and_written_back_byte_for_byte() {
        let text = read_text("alice.me.info");
        let alice = Identity::parse(&text).expect("parses");
        assert_eq!(alice.name, "alice");
        assert_eq!(
            alice.id,
            client_id(&vectors::vectors()["alice"]["client_id"])
        );
        assert_eq!(alice.to_me_info().expect("encodes"), text);
    }

    #[test]
    fn a_me_info_wrapped_at_64_columns_reads_and_is_rewritten_as_cpp_writes_it() {
        let bob = identity("bob");
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.id, client_id(&vectors::vectors()["bob"]["client_id"]));
        let rewritten = bob.to_me_info().expect("encodes");
        let mut lines = rewritten.lines();
        assert_eq!(lines.next(), Some("bob"));
        assert_eq!(lines.next(), Some("42DA437C281947CFBAFE16ED4170DBC2"));
        assert!(lines.all(|line| line.len() <= BASE64_LINE_LEN));
        let again = Identity::parse(&rewritten).expect("parses");
        assert_eq!(again.id, bob.id);
        assert_eq!(
            again.key.to_pkcs8_der().expect("encodes"),
            bob.key.to_pkcs8_der().expect("encodes")
        );
    }

    #[test]
    fn lower_case_ids_crlf_line_endings_and_one_line_keys_are_read() {
        let text = read_text("alice.me.info");
        let mut lines: Vec<&str> = text.lines().collect();
        let lower = lines[1].to_lowercase();
        lines[1] = &lower;
        let key: String = lines[2..].concat();
        let crlf = format!("{}\r\n{}\r\n{key}\r\n\r\n", lines[0], lines[1]);
        let alice = Identity::parse(&crlf).expect("parses");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.id, identity("alice").id);
    }

    #[test]
    fn damaged_me_info_files_are_refused_with_the_reason() {
        let text = read_text("alice.me.info");
        let (name_and_id, _) = text.split_at(text.find("MIIC").expect("key"));
        let cases = [
            ("".to_owned(), "MissingName"),
            ("alice\n".to_owned(), "BadClientId"),
            (
                "alice\n6A5F779FD37349D5A08F05C86A42B77\nMIIC\n".to_owned(),
                "BadClientId",
            ),
            (
                "alice\n+A5F779FD37349D5A08F05C86A42B772\nMIIC\n".to_owned(),
                "BadClientId",
            ),
            (
                "alice\nGA5F779FD37349D5A08F05C86A42B772\nMIIC\n".to_owned(),
                "BadClientId",
            ),
            (name_and_id.to_owned(), "MissingKey"),
            (format!("{name_and_id}not base64!\n"), "BadBase64"),
            (format!("{name_and_id}AAAA\n"), "BadKey"),
        ];
        for (text, expected) in cases {
            let error = Identity::parse(&text).expect_err(expected);
            assert!(
                format!("{error:?}").starts_with(expected),
                "{text:?}: {error:?}"
            );
        }
    }

    #[test]
    fn a_me_info_never_written_is_removed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(ME_INFO);
        drop(NewMeInfo::create(&path).expect("created"));
        assert!(!path.exists());
        let missing = dir.path().join("no such folder").join(ME_INFO);
        assert!(matches!(
            NewMeInfo::create(&missing),
            Err(ClientError::File { .. })
        ));
    }

    #[test]
    fn me_info_is_written_once_and_private() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(ME_INFO);
        let alice = identity("alice");
        let new = NewMeInfo::create(&path).expect("created");
        new.write(&alice).expect("written");
        assert_eq!(
            fs::read_to_string(&path).expect("readable"),
            read_text("alice.me.info")
        );
        assert!(matches!(
            NewMeInfo::create(&path),
            Err(ClientError::File { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("exists").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn server_info_is_host_colon_port() {
        let parse = |text| ServerAddress::parse(text).ok().map(|a| a.to_string());
        assert_eq!(parse("127.0.0.1:1357\n"), Some("127.0.0.1:1357".into()));
        assert_eq!(parse("  localhost:80 \r\n"), Some("localhost:80".into()));
        assert_eq!(parse("[::1]:1357"), Some("[::1]:1357".into()));
        for bad in [
            "",
            "localhost",
            ":1357",
            "host:0",
            "host:65536",
            "host:port",
            "a b:1",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_are_one_to_254_printable_ascii_characters() {
        assert!(validate_name("Michael Jackson").is_ok());
        assert!(validate_name(&"x".repeat(254)).is_ok());
        for bad in ["", "two\nlines", "tab\there", "Zoë"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"x".repeat(255)).is_err());
    }

    #[test]
    fn hex_round_trips_in_either_case() {
        assert_eq!(decode_hex::<2>("aBcD"), Some([0xab, 0xcd]));
        assert_eq!(encode_hex(&[0xab, 0x01]), "ab01");
        assert_eq!(decode_hex::<2>("abc"), None);
        assert_eq!(decode_hex::<1>("+f"), None);
    }
}
