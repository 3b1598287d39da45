//! The network underneath both binaries: listening, connecting (with the
//! name lookup and the egress check), deadlines on blocking sockets, waiting
//! on two sockets at once, and the limits that size the connection cap.
//!
//! Everything here is blocking `std::net` with socket timeouts; `poll(2)`
//! (through nix) only where one thread must watch two sockets. Linux is the
//! target: the limits come from `/proc` and the cgroup files.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::addr::Target;
use crate::egress;
use crate::error::Error;
use crate::gate::Place;
use crate::metrics;
use crate::workers::{self, SETUP_THREADS};

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

/// A socket wrapper whose reads and writes fail once `until` has passed.
///
/// The socket timeout is set to what is left, so a peer that trickles one
/// byte at a time cannot stretch a handshake past its deadline. It is set
/// again only when `REARM` (50 ms) has passed since the last time, which bounds the
/// overshoot by that much and spares a system call per read.
pub struct Deadline<'a> {
    sock: &'a TcpStream,
    until: Instant,
    read_armed: Option<Instant>,
    write_armed: Option<Instant>,
}

/// How stale a deadline's socket timeout may get before it is set again.
const REARM: Duration = Duration::from_millis(50);

impl<'a> Deadline<'a> {
    /// Wraps `sock` with a deadline at `until`.
    pub fn new(sock: &'a TcpStream, until: Instant) -> Self {
        Deadline { sock, until, read_armed: None, write_armed: None }
    }

    /// Sets a socket timeout to what is left, unless it was set less than [`REARM`] ago.
    fn arm(
        &self,
        armed: Option<Instant>,
        set: impl Fn(&TcpStream, Option<Duration>) -> io::Result<()>,
    ) -> io::Result<Option<Instant>> {
        let now = Instant::now();
        let left = self.until.saturating_duration_since(now);
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        if armed.is_some_and(|at| now < at + REARM) {
            return Ok(armed);
        }
        set(self.sock, Some(left))?;
        Ok(Some(now))
    }

    /// Reads what has arrived into `buf` without taking it off the socket,
    /// waiting for at least one byte (or an end) until the deadline. Returns
    /// 0 at the peer's end of stream. How a listener serving several
    /// protocols tells them apart before handing the socket to the parser.
    pub fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_armed = self.arm(self.read_armed, TcpStream::set_read_timeout)?;
        self.sock.peek(buf).map_err(timed_out)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_armed = self.arm(self.read_armed, TcpStream::set_read_timeout)?;
        self.sock.read(buf).map_err(timed_out)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_armed = self.arm(self.write_armed, TcpStream::set_write_timeout)?;
        self.sock.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket timeout shows up as EAGAIN; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
    } else {
        e
    }
}

/// A reader of whatever `sock` has already received, without waiting: each
/// read is one `recv(MSG_DONTWAIT)`, which fails with `WouldBlock` when
/// nothing has arrived. The socket stays blocking for everyone else, and no
/// system call goes to switching it to non-blocking and back.
pub struct Arrived<'a>(pub &'a TcpStream);

impl Read for Arrived<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        loop {
            match recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                got => return got.map_err(io::Error::from),
            }
        }
    }
}

/// Which of two sockets [`wait`] found ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The first has bytes, an end or an error to read.
    First,
    /// The second has an error or has hung up (or, when asked, bytes).
    Second,
    /// Neither, before the timeout (or a signal came).
    Neither,
}

/// Waits up to `timeout` until `first` has something to read (bytes, an
/// end or an error), or `second` has an error or has hung up, or, with
/// `second_data`, has bytes or an end too. `first` wins a tie. One
/// `poll(2)`: how a blocking thread watches a second socket while it waits
/// on its own.
pub fn wait(
    first: &impl AsFd,
    second: &impl AsFd,
    second_data: bool,
    timeout: Duration,
) -> io::Result<Ready> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let second_events = if second_data { PollFlags::POLLIN } else { PollFlags::empty() };
    let mut fds = [PollFd::new(first.as_fd(), PollFlags::POLLIN), PollFd::new(second.as_fd(), second_events)];
    // Rounded up, so that a wait never ends a little early and spins.
    let ms = timeout.as_micros().div_ceil(1000);
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(Ready::Neither),
        Ok(_) if fds[0].any().unwrap_or(true) => Ok(Ready::First),
        Ok(_) => Ok(Ready::Second),
        Err(e) => Err(e.into()),
    }
}

/// Closes a connection that failed before the relay without resetting it:
/// stop writing, then discard what the peer still sends for a moment, so a
/// reply already written is not lost to a RST.
pub fn close_gently(sock: &TcpStream) {
    let _ = sock.shutdown(Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 512];
    let mut io = Deadline::new(sock, until);
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match io.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Descriptors a process keeps for itself (stdio, listener, logging, the odd file).
const RESERVED_FDS: u64 = 64;
/// Descriptors one connection holds: the client's socket and the onward one.
pub const FDS_PER_CONNECTION: u64 = 2;

/// Raises the soft descriptor limit to the hard one and returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The connection cap that `fd_limit` descriptors allow, at `per_connection` each.
pub fn connection_cap(fd_limit: u64, per_connection: u64) -> usize {
    let cap = fd_limit.saturating_sub(RESERVED_FDS) / per_connection.max(1);
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// Threads one connection may need at once: its setup thread and a name
/// lookup, or its two copy threads, plus a lookup that outlived its deadline.
pub const THREADS_PER_CONNECTION: u64 = 4;

/// Threads a process keeps for itself: the accept loop, the signal thread,
/// pool fillers, and the parked threads of both worker sets.
pub const RESERVED_THREADS: u64 = 16 + 2 * workers::MAX_IDLE as u64;

/// The connection cap that `thread_limit` threads allow.
pub fn thread_cap(thread_limit: u64) -> usize {
    let cap = thread_limit.saturating_sub(RESERVED_THREADS) / THREADS_PER_CONNECTION;
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// The tightest limit on this process's threads, and its name: the
/// RLIMIT_NPROC soft limit (raised to the hard one first), the cgroup's
/// `pids.max` (of this cgroup and every one above it) and the system's
/// `kernel.threads-max`. None when none is set.
pub fn thread_limit() -> Option<(u64, &'static str)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let mut limits: Vec<(u64, &'static str)> = Vec::new();
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NPROC) {
        let limit =
            if soft < hard && setrlimit(Resource::RLIMIT_NPROC, hard, hard).is_ok() { hard } else { soft };
        if limit != RLIM_INFINITY {
            limits.push((limit, "RLIMIT_NPROC"));
        }
    }
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    if let Some(cgroups) = read(std::path::Path::new("/proc/self/cgroup")) {
        if let Some(max) = cgroup_pids_max(&cgroups, read) {
            limits.push((max, "the cgroup's pids.max"));
        }
    }
    let threads_max = read(std::path::Path::new("/proc/sys/kernel/threads-max"));
    if let Some(max) = threads_max.and_then(|t| t.trim().parse().ok()) {
        limits.push((max, "kernel.threads-max"));
    }
    limits.into_iter().min_by_key(|(limit, _)| *limit)
}

/// The smallest `pids.max` that applies to the cgroups listed in
/// `proc_self_cgroup` (the text of `/proc/self/cgroup`): for the cgroup v2
/// path and the v1 `pids` hierarchy, the file of the cgroup and of every one
/// above it, up to the mount point; `max` means no limit.
pub fn cgroup_pids_max(
    proc_self_cgroup: &str,
    read: impl Fn(&std::path::Path) -> Option<String>,
) -> Option<u64> {
    let mut found: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let mounts: &[&str] = match controllers {
            "" => &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
            c if c.split(',').any(|c| c == "pids") => &["/sys/fs/cgroup/pids"],
            _ => continue,
        };
        for mount in mounts {
            let mut dir = std::path::PathBuf::from(mount);
            dir.push(path.trim_start_matches('/'));
            loop {
                let limit = read(&dir.join("pids.max")).and_then(|t| t.trim().parse::<u64>().ok());
                if let Some(limit) = limit {
                    found = Some(found.map_or(limit, |f| f.min(limit)));
                }
                if dir.as_os_str() == *mount || !dir.pop() {
                    break;
                }
            }
        }
    }
    found
}

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket; the error names the address.
pub fn listen(addr: &str) -> Result<TcpListener, Error> {
    let fail = |e: &dyn fmt::Display| Error::Config(format!("cannot listen on {addr}: {e}"));
    let sa = addr.to_socket_addrs().map_err(|e| fail(&e))?.next().ok_or_else(|| fail(&"no such address"))?;
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(|e| fail(&e))?;
    sock.set_reuse_address(true).map_err(|e| fail(&e))?;
    sock.bind(&sa.into()).map_err(|e| fail(&e))?;
    sock.listen(LISTEN_BACKLOG).map_err(|e| fail(&e))?;
    Ok(sock.into())
}

/// Connects to `target`, trying each address it resolves to until one
/// answers; resolution and all attempts together end at `until`. With a
/// `policy`, only the addresses it permits are tried, and none is a
/// [`Error::Denied`]. A name lookup that outlives `until` keeps holding
/// `place` (the connection's place under the cap) until it returns.
pub fn connect(
    target: &Target,
    until: Instant,
    policy: Option<&egress::Policy>,
    place: Option<&Place>,
) -> Result<TcpStream, Error> {
    let mut addrs: Vec<SocketAddr> = match target {
        Target::Ip(a) => vec![*a],
        Target::Domain(name, port) => resolve(name, *port, until, place)?,
    };
    if let Some(policy) = policy {
        let resolved = addrs.len();
        addrs.retain(|a| policy.permits(a.ip()));
        if addrs.is_empty() && resolved > 0 {
            metrics::EGRESS_DENIALS.inc();
            return Err(Error::Denied(format!("{target} is not a public address")));
        }
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for (i, addr) in addrs.iter().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            break;
        }
        // Each address gets its share of what is left, so one that never
        // answers (an AAAA without a route, say) does not starve the rest.
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        match TcpStream::connect_timeout(addr, share) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Io(last))
}

/// Resolves `name` with the system resolver, giving up at `until`. The
/// lookup runs on a worker thread, since getaddrinfo cannot be interrupted;
/// a late answer is dropped. That thread holds `place` until getaddrinfo
/// returns, so lookups that never end (a resolver that does not answer)
/// keep their connections' places and cannot pile up past the cap.
pub fn resolve(
    name: &str,
    port: u16,
    until: Instant,
    place: Option<&Place>,
) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = name.to_owned();
    let held = place.cloned();
    let in_flight = metrics::LOOKUPS_IN_FLIGHT.hold();
    SETUP_THREADS.spawn(move || {
        let found = (owned.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>);
        drop(in_flight);
        let _ = tx.send(found);
        drop(held);
    })?;
    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(found) => Ok(found?),
        Err(_) => Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "name resolution timed out"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn pids_max_is_the_smallest_of_the_cgroup_and_those_above_it() {
        let files = |p: &Path| match p.to_str()? {
            "/sys/fs/cgroup/system.slice/proxy.service/pids.max" => Some("max\n".into()),
            "/sys/fs/cgroup/system.slice/pids.max" => Some("4096\n".into()),
            "/sys/fs/cgroup/pids/user.slice/pids.max" => Some("10000\n".into()),
            "/sys/fs/cgroup/pids/pids.max" => Some("2000\n".into()),
            _ => None,
        };
        assert_eq!(cgroup_pids_max("0::/system.slice/proxy.service\n", files), Some(4096));
        assert_eq!(cgroup_pids_max("5:pids:/user.slice\n1:cpu:/\n", files), Some(2000));
        assert_eq!(cgroup_pids_max("0::/other\n4:memory:/x\n", files), None);
        assert_eq!(cgroup_pids_max("", files), None);
    }

    #[test]
    fn four_threads_per_connection_must_fit_under_the_thread_limit() {
        assert_eq!(thread_cap(1000), (1000 - RESERVED_THREADS as usize) / 4);
        assert_eq!(thread_cap(10), 1, "never below one connection");
        assert_eq!(connection_cap(1024, 2), 480);
    }
}
