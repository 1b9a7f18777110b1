//! Extension clients for the socket tests: the extension codes of protocol part II, the
//! hello, 9000 reasons, and owners of registered ids who hold their private keys and log in
//! with them (§E3).
#![allow(dead_code)] // each test binary uses a different subset

use messageu::protocol::extension::{hello_payload, proof, Proof, SECRET_LEN};
use messageu::protocol::{ClientId, Edition, Operation, Reason, Refusal};
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::OsRng;
use rsa::{BigUint, Oaep, RsaPrivateKey};
use sha1::Sha1;

use crate::common::{register_body, Client, Reply};

pub mod live;

pub const HELLO: u16 = 1500;
pub const CHALLENGE: u16 = 1501;
pub const PROVE: u16 = 1502;
pub const PROTECT: u16 = 1503;
pub const EDITION: Edition = Edition::Y2024;

/// A client that holds the private key of its registered id.
pub struct Owner {
    pub id: ClientId,
    pub key: RsaPrivateKey,
}

impl Owner {
    /// The secret of a challenge (§E3) for this owner's id, if it opens with the owner's key.
    pub fn open(&self, challenge: &[u8]) -> Option<[u8; SECRET_LEN]> {
        let secret = self.key.decrypt(Oaep::new::<Sha1>(), challenge).ok()?;
        secret.try_into().ok()
    }

    /// The proof that answers a challenge for this owner's id, if it opens with its key.
    pub fn answer(&self, challenge: &[u8]) -> Option<Proof> {
        Some(proof(&self.open(challenge)?, self.id))
    }
}

/// Registers `name` with a fresh RSA-1024 key (exponent 17: 160 bytes of DER).
pub fn register_owner(client: &mut Client, name: &str) -> Owner {
    let key = RsaPrivateKey::new_with_exp(&mut OsRng, 1024, &BigUint::from(17u32)).expect("key");
    let der = key.to_public_key().to_public_key_der().expect("der");
    let der: [u8; 160] = der.as_bytes().try_into().expect("160-byte key");
    let reply = client.call(
        ClientId::default(),
        EDITION.request_code(Operation::Register),
        &register_body(name, &der),
    );
    assert_eq!(reply.code, EDITION.reply_code(Operation::Register));
    let id = ClientId::from_slice(&reply.payload).expect("id");
    Owner { id, key }
}

pub fn hello(client: &mut Client) -> Reply {
    let reply = client.call(ClientId::default(), HELLO, &hello_payload());
    assert_eq!(reply.code, 2500, "hello");
    reply
}

/// The reason code of an extended connection's 9000.
pub fn reason(reply: &Reply) -> u16 {
    assert_eq!(reply.code, 9000, "expected 9000, got {reply:?}");
    let (code, _) = Refusal::parse(&reply.payload).expect("a reason payload");
    code
}

pub fn assert_reason(reply: &Reply, expected: Reason) {
    assert_eq!(reason(reply), expected.code(), "{reply:?}");
}

/// Asks a challenge for `owner` and opens it with the owner's key.
pub fn challenge(client: &mut Client, owner: &Owner) -> [u8; SECRET_LEN] {
    let reply = client.call(owner.id, CHALLENGE, &[]);
    assert_eq!(reply.code, 2501, "challenge: {reply:?}");
    assert_eq!(reply.payload.len(), 128);
    owner
        .open(&reply.payload)
        .expect("the challenge opens with the owner's key")
}

pub fn prove(client: &mut Client, id: ClientId, answer: &[u8; 32]) -> Reply {
    client.call(id, PROVE, answer)
}

/// Says hello and authenticates the connection as `owner`.
pub fn log_in(client: &mut Client, owner: &Owner) {
    hello(client);
    let secret = challenge(client, owner);
    let reply = prove(client, owner.id, &proof(&secret, owner.id));
    assert_eq!((reply.code, reply.payload.len()), (2502, 0), "prove");
}

pub fn protect(client: &mut Client, id: ClientId, on: bool) -> Reply {
    client.call(id, PROTECT, &[u8::from(on)])
}
