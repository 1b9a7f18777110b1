//! Proof of key possession (protocol §E3) and what it gives a connection: the per-connection
//! [`Session`] (hello said, challenge pending, authenticated id), the server-wide
//! [`ProofLimiter`] of failed proofs, and the sealing of a challenge's secret to a registered
//! key. I/O-free but for the operating system's random bytes.

mod limiter;
mod session;

use rsa::pkcs8::DecodePublicKey;
use rsa::rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPublicKey};
use sha1::Sha1;

use crate::protocol::extension::{CHALLENGE_LEN, SECRET_LEN};
use crate::protocol::PublicKey;

pub use limiter::{ProofLimiter, RateLimited};
pub use session::{ProofFailure, Session};

/// A challenge's secret: random bytes from the operating system.
pub fn draw_secret() -> [u8; SECRET_LEN] {
    let mut secret = [0; SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// Why a secret cannot be sealed to a registered key.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the public key is not X.509 RSA: {0}")]
    NotRsa(rsa::pkcs8::spki::Error),
    #[error("the RSA key cannot encrypt the secret: {0}")]
    Encryption(rsa::Error),
    #[error("the RSA key is not 1024 bits: its ciphertext is {0} bytes")]
    WrongSize(usize),
}

/// Encrypts `secret` to `key` (a 160-byte X.509 SubjectPublicKeyInfo of RSA-1024) with
/// RSAES-OAEP, SHA-1 and MGF1-SHA-1, the scheme of the clients' key exchange (protocol §5).
/// About 50 µs: cheap enough for the loop.
pub fn seal(secret: &[u8; SECRET_LEN], key: &PublicKey) -> Result<[u8; CHALLENGE_LEN], SealError> {
    let key = RsaPublicKey::from_public_key_der(&key.0).map_err(SealError::NotRsa)?;
    let sealed = key
        .encrypt(&mut OsRng, Oaep::new::<Sha1>(), secret)
        .map_err(SealError::Encryption)?;
    let len = sealed.len();
    sealed.try_into().map_err(|_| SealError::WrongSize(len))
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::EncodePublicKey;
    use rsa::{BigUint, RsaPrivateKey};

    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_the_private_key_only() {
        let private =
            RsaPrivateKey::new_with_exp(&mut OsRng, 1024, &BigUint::from(17u32)).expect("a key");
        let der = private.to_public_key().to_public_key_der().expect("der");
        let key = PublicKey(der.as_bytes().try_into().expect("160 bytes"));
        let secret = draw_secret();
        let sealed = seal(&secret, &key).expect("sealed");
        let opened = private
            .decrypt(Oaep::new::<Sha1>(), &sealed)
            .expect("opens");
        assert_eq!(opened, secret);
        assert_ne!(draw_secret(), secret);
    }

    #[test]
    fn a_key_that_is_not_rsa_cannot_be_sealed_to() {
        let key = PublicKey([0x30; 160]);
        assert!(matches!(
            seal(&draw_secret(), &key),
            Err(SealError::NotRsa(_))
        ));
    }
}
