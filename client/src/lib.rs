//! `messageu-client`: a MessageU client that interoperates with the C++ clients.
//!
//! [`crypto`] is protocol §5, [`identity`] the files of §6, [`state`] what scripted use keeps
//! between runs, [`servers`] the nodes of the service and the order they are tried in,
//! [`transport`] the three ways of connecting (§4), [`extensions`] the hello and
//! log-in of protocol part II on each new connection, [`session`] the operations (the
//! accounts extensions of §E8 in [`accounts`]), [`received`] what a message turned out to
//! hold, [`actions`] what a user asks for and how it is reported, and [`console`] the menu.
//! The live commands (§E5, §E7): [`push_frames`] reads a subscribed connection's frames,
//! [`live`] keeps a subscription across connections, [`watch`] and [`chat`] use it, and
//! [`input`] reads typed lines beside it. The wire format itself is the shared codec in
//! [`messageu_protocol::client`].

pub mod accounts;
pub mod actions;
pub mod chat;
pub mod console;
pub mod crypto;
pub mod error;
pub mod extensions;
pub mod identity;
pub mod input;
pub mod live;
pub mod push_frames;
pub mod received;
pub mod servers;
pub mod session;
pub mod state;
pub mod transport;
pub mod watch;

pub use actions::{perform, Action};
pub use error::ClientError;
pub use session::{Session, SessionOptions};
pub use transport::{ConnectionMode, Greeting};

use messageu_protocol::Edition;

/// The edition a user names by year: 2021, 2022 or 2023, 2024 or 2025, 2026.
pub fn edition_from_year(year: &str) -> Option<Edition> {
    match year.trim() {
        "2021" => Some(Edition::Y2021),
        "2022" | "2023" => Some(Edition::Y2022),
        "2024" | "2025" => Some(Edition::Y2024),
        "2026" => Some(Edition::Y2026),
        _ => None,
    }
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editions_are_named_by_any_of_their_years() {
        let named = edition_from_year;
        assert_eq!(named("2021"), Some(Edition::Y2021));
        assert_eq!(named("2022"), Some(Edition::Y2022));
        assert_eq!(named("2023"), Some(Edition::Y2022));
        assert_eq!(named("2024"), Some(Edition::Y2024));
        assert_eq!(named("2025"), Some(Edition::Y2024));
        assert_eq!(named("2026"), Some(Edition::Y2026));
        assert_eq!(named("2020"), None);
    }
}
