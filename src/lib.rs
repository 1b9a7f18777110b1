//! A MessageU-compatible store-and-forward messaging server.
//!
//! The [`protocol`] crate is the wire format (pure), [`handlers`] the operations, [`store`]
//! the durable state, and [`server`] the mio event loop that ties them to sockets. The
//! `messageu-client` and `messageu-bench` crates speak the same [`protocol`].

pub mod auth;
pub mod config;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod server;
pub mod store;
pub mod worker;

/// The wire format lives in its own crate (shared with the client and the bench); under this
/// name the server's `crate::protocol` paths and its users' `messageu::protocol` keep working.
pub use messageu_protocol as protocol;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
