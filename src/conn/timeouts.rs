//! The deadlines of one connection, from its first byte to the end of its
//! relay or association: the `--*-timeout` and `--linger` flags.

use std::time::Duration;

/// The deadlines of one connection. Every phase before the relay has one;
/// the relay itself ends after `idle` with no byte in either direction.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// SOCKS5 greeting and request (local); TLS handshake and header (server).
    pub handshake: Duration,
    /// TCP connect and TLS handshake to the server (local); connect to the target (server).
    pub connect: Duration,
    /// No byte in either direction for this long ends the relay.
    pub idle: Duration,
    /// After one direction has ended, the other is closed once it has been quiet this long.
    pub linger: Duration,
    /// On shutdown, how long open connections may go on before the process exits.
    pub drain: Duration,
    /// No datagram in either direction for this long ends a UDP association.
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            linger: Duration::from_secs(30),
            drain: Duration::from_secs(5),
            udp: Duration::from_secs(60),
        }
    }
}
