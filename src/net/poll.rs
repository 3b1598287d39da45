//! Waiting on two sockets (or a few) at once: one `poll(2)`, through nix,
//! where a blocking thread must watch a second socket while it waits on its
//! own, or wait for the first of the connects it races to end, or for a
//! peer to finish sending.

use std::io;
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::SockRef;

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
    let second_events = if second_data { PollFlags::POLLIN } else { PollFlags::empty() };
    let mut fds = [PollFd::new(first.as_fd(), PollFlags::POLLIN), PollFd::new(second.as_fd(), second_events)];
    match poll(&mut fds, poll_timeout(timeout)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(Ready::Neither),
        Ok(_) if fds[0].any().unwrap_or(true) => Ok(Ready::First),
        Ok(_) => Ok(Ready::Second),
        Err(e) => Err(e.into()),
    }
}

/// Waits up to `timeout` until one of `fds` has something to read (bytes,
/// an end, an error or a hang-up); returns the first of them that has, by
/// index, or `None` at the timeout (or when a signal came).
pub fn wait_any(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Option<usize>> {
    first_ready(fds, PollFlags::POLLIN, timeout)
}

/// Waits up to `timeout` until one of `fds` can be written or has an error
/// or a hang-up, which is how a connect in progress shows that it has
/// ended, either way; returns the first of them, by index, or `None` at the
/// timeout (or when a signal came).
pub fn wait_writable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Option<usize>> {
    first_ready(fds, PollFlags::POLLOUT, timeout)
}

/// One `poll(2)` for `events` on each of `fds` (errors and hang-ups are
/// always reported): the index of the first with any, or `None`.
fn first_ready(fds: &[BorrowedFd<'_>], events: PollFlags, timeout: Duration) -> io::Result<Option<usize>> {
    let mut polled: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, events)).collect();
    match poll(&mut polled, poll_timeout(timeout)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(None),
        Ok(_) => Ok(polled.iter().position(|p| p.any().unwrap_or(true))),
        Err(e) => Err(e.into()),
    }
}

/// Whether the peer of `sock` has finished sending, or does within
/// `within`: its FIN has arrived (`POLLRDHUP`), with at most `left` bytes
/// before it still unread (looked at with `MSG_PEEK`, which takes nothing).
/// Bytes that arrive meanwhile do not end the wait; only the FIN, an error
/// or a hang-up does.
pub fn peer_finished(sock: &TcpStream, left: usize, within: Duration) -> bool {
    // nix names no POLLRDHUP (Linux's own), and gives no revents that hold
    // it: `None` there is POLLRDHUP (with or without others).
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(sock.as_fd(), rdhup)];
    let hung_up = matches!(poll(&mut fds, poll_timeout(within)), Ok(n) if n > 0)
        && fds[0].revents().is_none_or(|r| r.contains(rdhup));
    if !hung_up {
        return false;
    }
    let mut buf = vec![MaybeUninit::<u8>::uninit(); left + 1];
    let unread = SockRef::from(sock).recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    // EAGAIN: nothing queued but the end.
    matches!(unread, Ok(n) if n <= left) || unread.is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock)
}

/// A poll timeout, rounded up, so that a wait never ends a little early and spins.
fn poll_timeout(timeout: Duration) -> PollTimeout {
    let ms = timeout.as_micros().div_ceil(1000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}
