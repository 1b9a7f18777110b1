//! Loaders for the captured C++ client session in `tests/vectors/` (see its README).

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use super::crypto::AesKey;
use super::identity::Identity;
use messageu_protocol::{ClientId, PublicKey};

fn path(name: &str) -> PathBuf {
    // At the workspace root: the server's tests read the capture too.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/vectors")
        .join(name)
}

pub fn read(name: &str) -> Vec<u8> {
    fs::read(path(name)).expect("test vector file")
}

pub fn read_text(name: &str) -> String {
    String::from_utf8(read(name)).expect("text test vector")
}

/// `vectors.json`.
pub fn vectors() -> Value {
    serde_json::from_slice(&read("vectors.json")).expect("vectors.json is JSON")
}

/// The frames of `session-capture.json`, in time order.
pub fn capture() -> Vec<Value> {
    match serde_json::from_slice(&read("session-capture.json")).expect("capture is JSON") {
        Value::Array(frames) => frames,
        other => panic!("capture is not a list: {other}"),
    }
}

/// The bytes of a hex string field.
pub fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().expect("a hex string");
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digits"))
        .collect()
}

pub fn client_id(value: &Value) -> ClientId {
    ClientId::from_slice(&hex(value)).expect("16-byte id")
}

pub fn public_key(value: &Value) -> PublicKey {
    PublicKey(hex(value).try_into().expect("160-byte key"))
}

pub fn aes_key(value: &Value) -> AesKey {
    AesKey(hex(value).try_into().expect("16-byte key"))
}

/// The identity in `<who>.me.info` (`alice` is the C++ client, `bob` the Python one).
pub fn identity(who: &str) -> Identity {
    Identity::parse(&read_text(&format!("{who}.me.info"))).expect("me.info parses")
}

/// The other side of the captured session.
pub fn other(who: &str) -> &'static str {
    if who == "alice" {
        "bob"
    } else {
        "alice"
    }
}
