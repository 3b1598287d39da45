//! The parsers under generated input: random bytes, and valid messages
//! cut short, mutated and extended, served in reads of every size. A fixed
//! seed makes any failure reproducible. No input may panic, allocate more
//! than a small bound, make a parser read past the message it accepted, or
//! get an answer that is not its protocol's. Each parser is fuzzed too
//! (`make fuzz`), with the reader in `fuzz/fuzz_targets/common`.

mod generated;
#[path = "../../fuzz/fuzz_targets/common/mod.rs"]
mod input;

mod accounts;
mod acl;
mod dns;
mod hello;
mod http_and_socks4;
mod http_body;
mod proxy_protocol;
mod sniff;
mod socks5_and_headers;
mod udp;
mod x509;
