//! The protocols, as pure code: parsers and writers over `Read`, `Write`
//! and byte slices, with no sockets, threads or clocks, so that each is
//! tested one byte per read and with bytes coalesced after its message, run
//! on generated input (tests/parsers) and fuzzed (`make fuzz`).
//!
//! Every field is read with exact reads and every length is bounded, so a
//! parser never reads past its message: what a client sends after its
//! request stays unread for the relay. The ACL files that route and
//! refuse connections (`acl`) are read here too, from text the caller has
//! read, into lookups by name and address. DNS messages (`dns`) are read
//! and edited here for the local's caching forwarder, from whole messages
//! the caller has received. The name a connection's first bytes carry, a
//! ClientHello's server_name or an HTTP request's Host, is read here too
//! (`sniff`), from the bytes the caller has read so far.

pub mod socks5;
pub mod socks4;
pub mod http;
pub mod accounts;
pub mod wire;
pub mod proxy_protocol;
pub mod x509;
pub mod hello;
pub mod failure;
pub mod users;
pub mod addr;
pub mod acl;
pub mod dns;
pub mod sniff;
#[cfg(test)]
pub(crate) mod testing;
