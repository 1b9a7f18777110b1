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

use crate::protocol::PublicKey;

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
        let plaintext = self
            .0
            .decrypt(Oaep::new::<Sha1>(), ciphertext)
            .map_err(|_| DecryptError::Undecryptable)?;
        plaintext
            .as_slice()
            .try_into()
            .map(AesKey)
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
