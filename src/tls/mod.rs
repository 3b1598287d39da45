//! TLS, on rustls: the one place that builds its configurations (and reads
//! PEM files), and the blocking handshake, close and record reader both
//! binaries use.

pub mod config;
pub mod handshake;
