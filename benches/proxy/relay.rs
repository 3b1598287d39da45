//! A TCP forwarder on 127.0.0.1:0 that simulates a link with a round trip of
//! `2 × one_way` between a proxy's client and its server.
//!
//! Each chunk read from one side is written to the other no earlier than
//! `one_way` after it arrived, in order. The TCP handshake is modelled on the
//! client side: a real client could send its first byte only once the SYN-ACK
//! has come back (one round trip after connect()), and that byte would take
//! one more one-way trip. So bytes from the client are delivered no earlier
//! than accept time + 3 × one_way, then no earlier than arrival + one_way.
//! Bytes from the server are delivered at arrival + one_way. EOF is passed on
//! with the same delay, as a half-close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::loadgen::{listen, CONNECT_TIMEOUT};

/// Relayed sockets may sit idle for a long time (a pool of connections kept
/// warm by a client), so their timeouts are long, but they exist.
const RELAY_IO_TIMEOUT: Duration = Duration::from_secs(600);

pub struct DelayRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl DelayRelay {
    pub fn start(upstream: SocketAddr, one_way: Duration) -> io::Result<DelayRelay> {
        let l = listen(Duration::from_millis(200))?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        spawn("relay", move || accept_loop(&l, upstream, one_way, &st))?;
        Ok(DelayRelay { addr, stop })
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(name.into()).stack_size(128 * 1024).spawn(f)
}

fn accept_loop(l: &TcpListener, upstream: SocketAddr, one_way: Duration, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let client = match l.accept() {
            Ok((client, _)) => client,
            // The accept timeout, to look at `stop`; other errors (EMFILE) get a pause.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let accepted = Instant::now();
        let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else { continue };
        let _ = forward(client, server, accepted, one_way);
    }
}

fn tune(s: &TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(RELAY_IO_TIMEOUT))?;
    s.set_write_timeout(Some(RELAY_IO_TIMEOUT))?;
    s.set_nodelay(true)
}

fn forward(client: TcpStream, server: TcpStream, accepted: Instant, one_way: Duration) -> io::Result<()> {
    tune(&client)?;
    tune(&server)?;
    let first = accepted + 3 * one_way;
    direction(client.try_clone()?, server.try_clone()?, move |now| (now + one_way).max(first))?;
    direction(server, client, move |now| now + one_way)?;
    Ok(())
}

/// Two threads for one direction: a reader that stamps each chunk with its
/// delivery time, and a writer that holds it until then.
fn direction(
    mut from: TcpStream,
    mut to: TcpStream,
    due: impl Fn(Instant) -> Instant + Send + 'static,
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    spawn("relay-read", move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((due(Instant::now()), None));
                    return;
                }
                Ok(n) => {
                    if tx.send((due(Instant::now()), Some(buf[..n].to_vec()))).is_err() {
                        let _ = from.shutdown(Shutdown::Read);
                        return;
                    }
                }
            }
        }
    })?;
    spawn("relay-write", move || {
        while let Ok((at, chunk)) = rx.recv_timeout(RELAY_IO_TIMEOUT) {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                thread::sleep(wait);
            }
            match chunk {
                Some(bytes) if to.write_all(&bytes).is_ok() => {}
                _ => break,
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    })?;
    Ok(())
}
