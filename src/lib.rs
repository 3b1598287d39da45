#![doc = include_str!("../docs/ARCHITECTURE.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

// The modules from the top down: each uses only those below it, and
// `make layers` shows that this holds (each folder's `mod.rs` lists its own
// modules the same way).
pub mod cli;
pub mod local;
pub mod server;
pub mod endpoint;
pub mod live_view;
pub mod conn;
pub mod tls;
pub mod net;
pub mod proto;
pub mod metrics;
pub mod workers;
pub mod current;
pub mod file;
pub mod text;
pub mod error;
pub mod sys;
