//! What the unit tests of the modules above share: connected sockets on
//! loopback, each with a timeout, so that a hang fails instead of blocking.

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The longest any single step of a unit test may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Two connected sockets on loopback: the one that connected, then the one accepted.
pub fn socket_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect_timeout(&l.local_addr().unwrap(), TIMEOUT).unwrap();
    let (b, _) = l.accept().unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
    }
    (a, b)
}
