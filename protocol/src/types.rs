//! The protocol's value types, so that a raw byte array never stands for two things.

use std::fmt;

/// Length of a name field on the wire: up to 254 ASCII characters and a terminating NUL.
pub const NAME_FIELD_LEN: usize = 255;
/// Length of an RSA-1024 public key in X.509 SubjectPublicKeyInfo DER with exponent 17.
pub const PUBLIC_KEY_LEN: usize = 160;

/// A client's 16-byte id (the raw bytes of a version-4 UUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientId(pub [u8; 16]);

impl ClientId {
    /// A fresh random version-4 UUID with no zero byte: some clients keep the id as a C
    /// string, and one with a 0x00 byte (about 6% of random ones) is cut short when they
    /// reload it (protocol §3).
    pub fn random() -> ClientId {
        loop {
            let id = *uuid::Uuid::new_v4().as_bytes();
            if !id.contains(&0) {
                return ClientId(id);
            }
        }
    }

    /// Reads an id from a slice of exactly 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<ClientId> {
        bytes.try_into().ok().map(ClientId)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

/// A message id, unique among stored messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u32);

/// A client's public key, stored and returned verbatim.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} bytes)", self.0.len())
    }
}

/// The four message types; the server treats their content as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    SymmetricKeyRequest = 1,
    SymmetricKey = 2,
    Text = 3,
    File = 4,
}

impl TryFrom<u8> for MessageType {
    type Error = u8;

    fn try_from(value: u8) -> Result<Self, u8> {
        match value {
            1 => Ok(MessageType::SymmetricKeyRequest),
            2 => Ok(MessageType::SymmetricKey),
            3 => Ok(MessageType::Text),
            4 => Ok(MessageType::File),
            other => Err(other),
        }
    }
}

/// A time as the extensions carry it (protocol §E0): milliseconds since the Unix epoch; 0
/// for a time before it.
pub fn unix_millis(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_version_4_uuids_without_zero_bytes() {
        for _ in 0..10_000 {
            let id = ClientId::random();
            assert_eq!(id.0[6] >> 4, 4);
            assert_eq!(id.0[8] >> 6, 0b10);
            assert!(!id.0.contains(&0), "{id}");
        }
        assert_ne!(ClientId::random(), ClientId::random());
    }

    #[test]
    fn ids_display_as_lower_case_hex() {
        let id = ClientId([0xAB; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(ClientId::from_slice(&[1; 15]), None);
    }

    #[test]
    fn message_types_outside_one_to_four_are_rejected() {
        assert_eq!(MessageType::try_from(3), Ok(MessageType::Text));
        assert_eq!(MessageType::try_from(0), Err(0));
        assert_eq!(MessageType::try_from(5), Err(5));
    }
}
