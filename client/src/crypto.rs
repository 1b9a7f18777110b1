//! The client's cryptography (protocol §5), every primitive from the RustCrypto crates.
//!
//! - Identity keys: RSA-1024 with public exponent 17, so that the X.509 public key is exactly
//!   160 bytes; private keys travel as PKCS#8 DER.
//! - Type 2 (symmetric key): RSAES-OAEP with SHA-1 and MGF1-SHA-1, empty label.
//! - Types 3 and 4 (text, file): AES-128-CBC with a zero IV and PKCS#7 padding, streamed so
//!   that a large file is never held in memory.

use std::fmt;
use std::io::{self, Read, Write};

use aes::Aes128;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::generic_array::GenericArray;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;

use messageu_protocol::PublicKey;

/// Modulus size of every MessageU key.
pub const RSA_BITS: usize = 1024;
/// The public exponent that keeps the DER public key at 160 bytes.
pub const RSA_EXPONENT: u32 = 17;
/// Length of the AES-128 keys peers exchange.
pub const AES_KEY_LEN: usize = 16;

const BLOCK_LEN: usize = 16;
/// Every MessageU client uses an all-zero IV; interoperating means doing the same.
const ZERO_IV: [u8; BLOCK_LEN] = [0; BLOCK_LEN];
/// How much plaintext is encrypted per write: large enough for throughput, a multiple of 16.
const STREAM_CHUNK_LEN: usize = 64 * 1024;

type Encryptor = cbc::Encryptor<Aes128>;
type Decryptor = cbc::Decryptor<Aes128>;

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(rsa::Error),
    #[error("the private key is not PKCS#8 RSA: {0}")]
    PrivateKey(rsa::pkcs8::Error),
    #[error("the public key is not X.509 RSA: {0}")]
    PublicKey(rsa::pkcs8::spki::Error),
    #[error("the public key is {0} bytes of DER, not 160: it must be RSA-1024 with exponent 17")]
    PublicKeySize(usize),
    #[error("RSA encryption failed: {0}")]
    Encryption(rsa::Error),
}

/// Why a ciphertext could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// Wrong key, wrong length or bad padding: a console shows this as `can't decrypt message`.
    #[error("can't decrypt message")]
    Undecryptable,
    #[error("writing the decrypted data failed: {0}")]
    Write(#[source] io::Error),
}

/// Why streaming encryption stopped: the source or the destination failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading failed: {0}")]
    Read(#[source] io::Error),
    #[error("writing failed: {0}")]
    Write(#[source] io::Error),
}

/// A client's RSA private key.
#[derive(Clone)]
pub struct PrivateKey(RsaPrivateKey);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    /// A fresh RSA-1024 key with exponent 17.
    pub fn generate() -> Result<PrivateKey, CryptoError> {
        RsaPrivateKey::new_with_exp(&mut OsRng, RSA_BITS, &BigUint::from(RSA_EXPONENT))
            .map(PrivateKey)
            .map_err(CryptoError::KeyGeneration)
    }

    /// Reads a PKCS#8 DER private key, as stored (in Base64) in `me.info`.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, CryptoError> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(PrivateKey)
            .map_err(CryptoError::PrivateKey)
    }

    /// The PKCS#8 DER encoding written (in Base64) to `me.info`.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.0
            .to_pkcs8_der()
            .map(|document| document.as_bytes().to_vec())
            .map_err(CryptoError::PrivateKey)
    }

    /// The 160-byte X.509 SubjectPublicKeyInfo sent at registration.
    pub fn public_key(&self) -> Result<PublicKey, CryptoError> {
        let document = self
            .0
            .to_public_key()
            .to_public_key_der()
            .map_err(CryptoError::PublicKey)?;
        let der = document.as_bytes();
        der.try_into()
            .map(PublicKey)
            .map_err(|_| CryptoError::PublicKeySize(der.len()))
    }

    /// Decrypts a type-2 message: the sender's AES key, OAEP-encrypted to this key.
    pub fn decrypt_symmetric_key(&self, ciphertext: &[u8]) -> Result<AesKey, DecryptError> {
        self.decrypt_oaep(ciphertext).map(AesKey)
    }

    /// Decrypts a server's challenge (protocol §E3): its 32-byte secret, OAEP-encrypted to
    /// this key as a type-2 message is.
    pub fn decrypt_challenge<const N: usize>(&self, ciphertext: &[u8]) -> Option<[u8; N]> {
        self.decrypt_oaep(ciphertext).ok()
    }

    /// RSAES-OAEP with SHA-1, MGF1-SHA-1 and an empty label, to exactly `N` bytes.
    fn decrypt_oaep<const N: usize>(&self, ciphertext: &[u8]) -> Result<[u8; N], DecryptError> {
        let plaintext = self
            .0
            .decrypt(Oaep::new::<Sha1>(), ciphertext)
            .map_err(|_| DecryptError::Undecryptable)?;
        plaintext
            .as_slice()
            .try_into()
            .map_err(|_| DecryptError::Undecryptable)
    }
}

/// Encrypts `key` to a peer's 160-byte public key: the content of a type-2 message.
pub fn encrypt_symmetric_key(recipient: &PublicKey, key: &AesKey) -> Result<Vec<u8>, CryptoError> {
    let public = RsaPublicKey::from_public_key_der(&recipient.0).map_err(CryptoError::PublicKey)?;
    public
        .encrypt(&mut OsRng, Oaep::new::<Sha1>(), &key.0)
        .map_err(CryptoError::Encryption)
}

/// Checks that 160 bytes from a server are an RSA public key this client can encrypt to.
pub fn validate_public_key(key: &PublicKey) -> Result<(), CryptoError> {
    RsaPublicKey::from_public_key_der(&key.0)
        .map(|_| ())
        .map_err(CryptoError::PublicKey)
}

/// An AES-128 key shared with one peer.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey(pub [u8; AES_KEY_LEN]);

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(..)")
    }
}

impl AesKey {
    /// A fresh key from the operating system's random source.
    pub fn random() -> AesKey {
        let mut key = [0; AES_KEY_LEN];
        OsRng.fill_bytes(&mut key);
        AesKey(key)
    }

    fn encryptor(&self) -> Encryptor {
        Encryptor::new(&self.0.into(), &ZERO_IV.into())
    }

    fn decryptor(&self) -> Decryptor {
        Decryptor::new(&self.0.into(), &ZERO_IV.into())
    }
}

/// The ciphertext length of `plaintext_len` bytes: PKCS#7 always adds 1 to 16 bytes.
pub const fn ciphertext_len(plaintext_len: u64) -> u64 {
    (plaintext_len / BLOCK_LEN as u64 + 1) * BLOCK_LEN as u64
}

/// Encrypts everything `plaintext` yields into `out`, a chunk at a time, calling `progress`
/// with the number of plaintext bytes of each chunk. Returns the plaintext length.
pub fn encrypt_stream(
    key: &AesKey,
    mut plaintext: impl Read,
    mut out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, StreamError> {
    let mut encryptor = key.encryptor();
    let mut buffer = vec![0; STREAM_CHUNK_LEN];
    let mut total = 0;
    loop {
        let filled = read_full(&mut plaintext, &mut buffer).map_err(StreamError::Read)?;
        total += filled as u64;
        progress(filled as u64);
        let whole = filled - filled % BLOCK_LEN;
        for block in buffer[..whole].chunks_exact_mut(BLOCK_LEN) {
            encryptor.encrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        out.write_all(&buffer[..whole])
            .map_err(StreamError::Write)?;
        if filled < buffer.len() {
            // The end of the plaintext: its last partial (or empty) block gets the padding.
            let mut last = [0; BLOCK_LEN];
            last[..filled - whole].copy_from_slice(&buffer[whole..filled]);
            let padded = encryptor
                .encrypt_padded_mut::<Pkcs7>(&mut last, filled - whole)
                .expect("one block holds any partial block and its padding");
            out.write_all(padded).map_err(StreamError::Write)?;
            return Ok(total);
        }
    }
}

/// Reads until `buffer` is full or the source ends; returns how much was read.
fn read_full(source: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Encrypts a whole message held in memory (a text).
pub fn encrypt(key: &AesKey, plaintext: &[u8]) -> Vec<u8> {
    let mut ciphertext = Vec::with_capacity(ciphertext_len(plaintext.len() as u64) as usize);
    encrypt_stream(key, plaintext, &mut ciphertext, drop)
        .expect("reading a slice and writing a Vec cannot fail");
    ciphertext
}

/// Decrypts `ciphertext` into `out` a chunk at a time. On an error, `out` may have received
/// part of the plaintext.
pub fn decrypt_to(
    key: &AesKey,
    ciphertext: &[u8],
    mut out: impl Write,
) -> Result<(), DecryptError> {
    if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK_LEN) {
        return Err(DecryptError::Undecryptable);
    }
    let (body, last) = ciphertext.split_at(ciphertext.len() - BLOCK_LEN);
    let mut decryptor = key.decryptor();
    let mut buffer = vec![0; STREAM_CHUNK_LEN.min(body.len())];
    for chunk in body.chunks(STREAM_CHUNK_LEN) {
        let plain = &mut buffer[..chunk.len()];
        plain.copy_from_slice(chunk);
        for block in plain.chunks_exact_mut(BLOCK_LEN) {
            decryptor.decrypt_block_mut(GenericArray::from_mut_slice(block));
        }
        out.write_all(plain).map_err(DecryptError::Write)?;
    }
    let mut last_block = [0; BLOCK_LEN];
    last_block.copy_from_slice(last);
    let unpadded = decryptor
        .decrypt_padded_mut::<Pkcs7>(&mut last_block)
        .map_err(|_| DecryptError::Undecryptable)?;
    out.write_all(unpadded).map_err(DecryptError::Write)
}

/// Decrypts a whole message held in memory (a text).
pub fn decrypt(key: &AesKey, ciphertext: &[u8]) -> Result<Vec<u8>, DecryptError> {
    let mut plaintext = Vec::with_capacity(ciphertext.len());
    decrypt_to(key, ciphertext, &mut plaintext)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{self, aes_key, hex, identity};

    /// The fixed start of a 160-byte RSA-1024 SubjectPublicKeyInfo (protocol §5).
    const SPKI_PREFIX: &str = "30819d300d06092a864886f70d010101050003818b0030818702818100";

    #[test]
    fn registered_public_keys_derive_from_the_me_info_private_keys() {
        let vectors = vectors::vectors();
        for who in ["alice", "bob"] {
            let me = identity(who);
            let key = me.key.public_key().expect("160-byte public key");
            assert_eq!(
                key.0.to_vec(),
                hex(&vectors[who]["public_key_der"]),
                "{who}"
            );
            assert_eq!(
                me.key.to_pkcs8_der().expect("encodes"),
                hex(&vectors[who]["private_key_pkcs8_der"]),
                "{who}: PKCS#8 re-encodes to the stored bytes"
            );
        }
    }

    #[test]
    fn symmetric_keys_from_either_client_decrypt_with_the_recipients_key() {
        let vectors = vectors::vectors();
        for (direction, recipient) in [("alice_to_bob", "bob"), ("bob_to_alice", "alice")] {
            let message = &vectors[direction]["type2_symmetric_key"];
            let ciphertext = hex(&message["ciphertext"]);
            assert_eq!(ciphertext.len(), 128);
            let key = identity(recipient)
                .key
                .decrypt_symmetric_key(&ciphertext)
                .expect("decrypts with the recipient's key");
            assert_eq!(key, aes_key(&message["aes_key"]), "{direction}");
        }
        let to_bob = hex(&vectors["alice_to_bob"]["type2_symmetric_key"]["ciphertext"]);
        assert!(matches!(
            identity("alice").key.decrypt_symmetric_key(&to_bob),
            Err(DecryptError::Undecryptable)
        ));
    }

    #[test]
    fn aes_ciphertexts_of_both_clients_are_reproduced_byte_for_byte() {
        let vectors = vectors::vectors();
        let file = vectors::read("file-1000.bin");
        let messages = [
            ("alice_to_bob", "type3_text"),
            ("alice_to_bob", "type3_text_32_bytes"),
            ("alice_to_bob", "type4_file"),
            ("bob_to_alice", "type3_text"),
        ];
        for (direction, kind) in messages {
            let message = &vectors[direction][kind];
            let key = aes_key(&message["aes_key"]);
            let plaintext = match message.get("plaintext") {
                Some(plaintext) => hex(plaintext),
                None => file.clone(),
            };
            let ciphertext = hex(&message["ciphertext"]);
            assert_eq!(encrypt(&key, &plaintext), ciphertext, "{direction} {kind}");
            assert_eq!(
                decrypt(&key, &ciphertext).expect("decrypts"),
                plaintext,
                "{direction} {kind}"
            );
            assert_eq!(
                ciphertext_len(plaintext.len() as u64),
                ciphertext.len() as u64
            );
        }
    }

    #[test]
    fn the_protocol_test_vector() {
        let key = AesKey(core::array::from_fn(|i| i as u8));
        let ciphertext = encrypt(&key, b"hello world");
        assert_eq!(ciphertext, hex(&"9276fdf384f38518fa6c8310f191678d".into()));
    }

    /// A reader that hands out at most 7 bytes per read, as a pipe or socket may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buffer.len()).min(7);
            buffer[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn streaming_agrees_with_one_shot_cbc_at_every_boundary() {
        let key = AesKey::random();
        let chunk = STREAM_CHUNK_LEN;
        for len in [0, 1, 15, 16, 17, chunk - 1, chunk, chunk + 1, 3 * chunk + 5] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut reference = vec![0; len + BLOCK_LEN];
            let reference = key
                .encryptor()
                .encrypt_padded_b2b_mut::<Pkcs7>(&plaintext, &mut reference)
                .expect("room for padding")
                .to_vec();
            let mut streamed = Vec::new();
            let mut reported = 0;
            let read = encrypt_stream(&key, Trickle(&plaintext), &mut streamed, |n| reported += n)
                .expect("in-memory streams");
            assert_eq!((read, reported), (len as u64, len as u64));
            assert_eq!(streamed, reference, "length {len}");
            assert_eq!(streamed.len() as u64, ciphertext_len(len as u64));
            assert_eq!(decrypt(&key, &streamed).expect("decrypts"), plaintext);
        }
    }

    #[test]
    fn damaged_ciphertexts_are_undecryptable() {
        let vectors = vectors::vectors();
        let message = &vectors["alice_to_bob"]["type3_text"];
        let key = aes_key(&message["aes_key"]);
        let ciphertext = hex(&message["ciphertext"]);
        for damaged in [&[][..], &ciphertext[..15], &ciphertext[..79]] {
            assert!(matches!(
                decrypt(&key, damaged),
                Err(DecryptError::Undecryptable)
            ));
        }
        let other_key = aes_key(&vectors["bob_to_alice"]["type3_text"]["aes_key"]);
        assert!(matches!(
            decrypt(&other_key, &ciphertext),
            Err(DecryptError::Undecryptable)
        ));
    }

    #[test]
    fn generated_keys_have_exponent_17_and_round_trip_a_symmetric_key() {
        let key = PrivateKey::generate().expect("key generation");
        let public = key.public_key().expect("160 bytes");
        assert!(hex_string(&public.0).starts_with(SPKI_PREFIX));
        assert!(public.0.ends_with(&[0x02, 0x01, 0x11]));
        let again =
            PrivateKey::from_pkcs8_der(&key.to_pkcs8_der().expect("encodes")).expect("decodes");
        assert_eq!(again.public_key().expect("160 bytes"), public);

        let shared = AesKey::random();
        let ciphertext = encrypt_symmetric_key(&public, &shared).expect("encrypts");
        assert_eq!(ciphertext.len(), 128);
        assert_eq!(
            key.decrypt_symmetric_key(&ciphertext).expect("decrypts"),
            shared
        );
    }

    #[test]
    fn public_keys_that_are_not_rsa_are_refused() {
        let mut key = identity("bob").key.public_key().expect("160 bytes");
        assert!(validate_public_key(&key).is_ok());
        key.0[1] ^= 0xff;
        assert!(validate_public_key(&key).is_err());
        assert!(encrypt_symmetric_key(&key, &AesKey::random()).is_err());
    }

    fn hex_string(bytes: &[u8]) -> String {
        crate::identity::encode_hex(bytes)
    }
}
