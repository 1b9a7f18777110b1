//! A MessageU-compatible store-and-forward messaging server.
//!
//! The [`protocol`] module is the wire format (pure), [`handlers`] the operations, [`store`]
//! the durable state, and [`server`] the mio event loop that ties them to sockets.
//! [`client`] is the `messageu-client`, which speaks the same [`protocol`].

pub mod client;
pub mod config;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod store;
pub mod worker;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
