//! The fallback site (`--fallback`), and the first record that decides
//! whether a client goes there.
//!
//! With passwords, the header is taken from the first TLS record that
//! carries data, as trojan takes it: the local always sends the whole header
//! in its first record. The fallback's connection is opened as soon as the
//! TLS handshake is done ([`open`]), so that from the first moment a client
//! meets the site's own behaviour: a first record that is not a complete
//! valid header goes there at once with every byte, and a client that says
//! nothing is closed when (and as) the site closes it ([`first_record`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Instant;

use rustls::ServerConnection;

use crate::error::Error;
use crate::net::deadline::Deadline;
use crate::net::dial;
use crate::net::drain::{draining, Drain};
use crate::net::poll::wait_any;
use crate::proto::addr::Target;
use crate::proto::proxy_protocol;
use crate::tls::handshake::Records;

/// Opens the plain TCP connection to the fallback `site` for the client
/// `from`, before `until`; with `proxy_header`, it begins with a PROXY
/// version 2 header saying that the client connected to `to`. A name
/// lookup that outlives `until` holds a clone of `hold`.
pub fn open<H: Clone + Send + 'static>(
    site: &Target,
    until: Instant,
    proxy_header: Option<(SocketAddr, SocketAddr)>,
    hold: &H,
) -> Result<TcpStream, Error> {
    let out = dial::connect(site, until, None, hold)?;
    if let Some((from, to)) = proxy_header {
        let mut header = Vec::with_capacity(64);
        proxy_protocol::write_v2(from, to, &mut header);
        Deadline::new(&out, until).write_all(&header)?;
    }
    Ok(out)
}

/// How a connection's first record came, or did not.
pub enum First {
    /// The plaintext of the first record that carried any.
    Data(Vec<u8>),
    /// The client ended (close_notify or a bare FIN) before sending any.
    End,
    /// The fallback sent something or closed before the client said anything.
    FallbackSpoke,
}

/// Reads records until one carries plaintext, and returns all of it. While
/// waiting, a `fallback` that speaks or closes first ends the wait: its
/// reaction to a silent client (a header timeout, say) is passed on as it is.
pub fn first_record(
    sock: &TcpStream,
    conn: &mut ServerConnection,
    fallback: Option<&TcpStream>,
    drain: &Drain,
    until: Instant,
) -> Result<First, Error> {
    let mut io = Records::new(Deadline::new(sock, until).or_drain(drain));
    loop {
        if let Some(out) = fallback {
            if !client_first(sock, out, drain, until)? {
                return Ok(First::FallbackSpoke);
            }
        }
        if conn.read_tls(&mut io)? == 0 {
            return Ok(First::End);
        }
        let state = conn.process_new_packets();
        // Alerts, or a reply to a KeyUpdate.
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        let state = state?;
        if !io.between_records() {
            continue;
        }
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let mut bytes = vec![0; n];
            conn.reader().read_exact(&mut bytes)?;
            return Ok(First::Data(bytes));
        }
        if state.peer_has_closed() {
            return Ok(First::End);
        }
    }
}

/// Waits until the client or the fallback has something to read (data, an
/// end or an error); true when the client has, which is looked at first.
/// Fails with a [`Draining`](crate::net::drain::Draining) error once the
/// drain has started.
fn client_first(
    client: &TcpStream,
    fallback: &TcpStream,
    drain: &Drain,
    until: Instant,
) -> Result<bool, Error> {
    let fds = [client.as_fd(), fallback.as_fd(), drain.watch().as_fd()];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")));
        }
        let ready = wait_any(&fds, left)?;
        if drain.started() {
            return Err(Error::Io(draining()));
        }
        match ready {
            Some(0) => return Ok(true),
            Some(_) => return Ok(false),
            None => {}
        }
    }
}
