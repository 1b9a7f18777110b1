//! Fuzzing harnesses for `messageu`: the checks behind each `cargo fuzz` target, its input
//! layout, and its seed corpus. The targets in `fuzz_targets/` only call `check`.

pub mod connection;
pub mod decoding;
pub mod input;
pub mod replies;
pub mod reply_parser;
pub mod request_stream;
pub mod seeds;
