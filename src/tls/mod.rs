//! TLS, on rustls: the one place that builds its configurations (and reads
//! PEM files), the blocking handshake, close and record reader both
//! binaries use, and the key exchange the server adds to rustls's.

pub mod config;
pub mod handshake;
pub mod kx;
