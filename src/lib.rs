//! blocking-proxy: a proxy pair that carries every connection over TLS, in
//! plain blocking Rust with one OS thread per direction and no async runtime.
//!
//! ```text
//! app ──SOCKS5/SOCKS4/HTTP──▶ blocking-local ══TLS: header + payload══▶ blocking-server ──TCP/UDP──▶ target
//! ```
//!
//! `blocking-local` runs next to the applications and speaks SOCKS5 to them
//! (and, on the same port, SOCKS4, SOCKS4a and the HTTP proxy protocol).
//! For each client it opens one TLS connection to `blocking-server` (or takes
//! a ready one from its pool) and sends a header naming the target, then the
//! payload. `blocking-server` reads the header, connects to the target and
//! relays; a SOCKS5 UDP association is one such TLS connection too, carrying
//! datagrams in trojan's UDP framing ([`udp`]). Without a password the header is the seed format of the original
//! Python pair; with one it is trojan's, and a server with a fallback site
//! shows probers nothing but that site. The README is the user's guide; the
//! design lives here and in each module's docs. The program runs on Linux.
//!
//! # From the top
//!
//! **A connection's threads.** Each binary's main thread runs an accept loop
//! ([`accept`]). Admission ([`gate`]) caps the connections served at once, by
//! the descriptor and thread limits ([`net`]), and on the server limits the
//! connections one source keeps pending (behind a load balancer, the client
//! its PROXY protocol header names, counted once that header is read).
//! Each admitted socket gets a *setup*
//! thread (512 KiB stack) that does the handshake phase with blocking reads
//! under deadlines: SOCKS5, SOCKS4 or an HTTP request, told apart by the
//! first byte ([`socks5`], [`socks4`], [`http`], [`local`]), or a balancer's
//! PROXY protocol header ([`proxy_protocol`]), TLS and the
//! header ([`tls`], [`wire`], [`server`]), the name lookup and the onward connect
//! ([`net`], with the [`egress`] policy on the server). It then starts two
//! *copy* threads (64 KiB stacks) and is done: each copies one direction with
//! `std::io::copy` ([`relay`]), so an open connection holds two threads in
//! each process. Threads that finish a job wait up to 2 s for another
//! ([`workers`]), so a new connection usually wakes a parked thread. The last
//! copy thread logs the connection's one line ([`accept::Report`]) and gives
//! back its place under the cap; a name lookup that outlives its deadline
//! keeps that place until it returns.
//!
//! **Small while open.** The deep stack a handshake touches leaves with the
//! setup thread, and glibc reuses a cached stack only for a thread of
//! similar size, so a copy thread never inherits one. Copy buffers live on
//! the heap and only while data flows: a direction quiet for 10 ms frees
//! them and waits for its next byte holding none ([`relay`]). An idle
//! connection costs two small stacks per process and rustls's state. glibc's
//! malloc is held to two arenas ([`sys`]), so memory freed by one
//! connection's threads is reused by the next one's.
//!
//! **One TLS connection, two threads.** rustls has no split API. The
//! handshake completes on the setup thread; then the connection sits behind
//! a mutex shared by a reading and a writing half ([`split`]), and no thread
//! holds it while it blocks on the socket. TLS bytes reach the socket in the
//! order rustls produced them, because the socket's writing side is reachable
//! only through a second lock taken before the first is let go.
//!
//! **Ends.** Each direction ends on its own: an EOF becomes close_notify and
//! `shutdown(Write)` on a TLS side, `shutdown(Write)` on a plain one, and the
//! other direction goes on until its own EOF or the linger timeout. An error,
//! or the idle timeout, ends both at once as a reset, so a transfer cut short
//! never passes for a complete one; a thread blocked writing is woken, and a
//! direction waiting for its next byte watches the other end for a reset.
//!
//! **The server's first record.** With passwords the header is taken from
//! the first TLS record that carries data. Anything else goes, with every
//! byte, to the fallback site, whose connection is opened as soon as the TLS
//! handshake is done, so that a silent prober meets the site's own timeout
//! ([`server`]).
//!
//! **Several servers.** A local may have several servers. One whose connect
//! or handshake fails, or that cuts a connection off before any reply, is
//! down for a back-off; clients go to the others, a failed attempt is tried
//! once more on the next one, and a thread of its own checks a down server
//! when its back-off ends ([`upstream`]).
//!
//! **Signals and failures.** SIGTERM and SIGINT are blocked in every thread
//! and taken by one thread with `sigwait` ([`signals`]): the listener closes
//! and open connections get the drain time. Out of descriptors or threads,
//! the accept loop logs at most once a second and backs off for 100 ms; it
//! never spins and never panics. The binaries share their command line,
//! logging and exit statuses ([`cli`]); everything that can fail is one
//! [`error::Error`].
//!
//! # Modules, from the top down
//!
//! Each module uses only modules below it in this list.
//!
//! - [`cli`]: what the two binaries share: options, logging, exit statuses.
//! - [`signals`]: SIGTERM and SIGINT as a graceful drain.
//! - [`server`]: blocking-server's connection: a balancer's PROXY header, TLS, the first record, the fallback.
//! - [`local`]: blocking-local's connection: the protocol by its first byte, the header.
//! - [`upstream`]: the local's servers: failover, back-off, the check, the pool.
//! - [`accept`]: the accept loop, its stop handle, the per-connection report.
//! - [`udp`]: UDP ASSOCIATE: an association's two threads on each side.
//! - [`relay`]: a connection's life: two copy threads, bursts, half-close, abort.
//! - [`split`]: one rustls connection shared by a reading and a writing thread.
//! - [`tls`]: the one place that builds rustls configurations; PEM, pins, handshakes.
//! - [`net`]: listen, connect and resolve, deadlines, waiting on two sockets, limits.
//! - [`gate`]: admission control: the cap, pending per source, a connection's place.
//! - [`workers`]: parked threads reused for the next setup or copy job.
//! - [`egress`]: which target addresses the server may connect to.
//! - [`wire`]: the header the local sends the server (seed and trojan formats).
//! - [`proxy_protocol`]: the PROXY protocol header a load balancer sends first.
//! - [`http`]: the HTTP proxy requests the local serves: CONNECT and absolute form.
//! - [`socks4`]: SOCKS4 and SOCKS4a as the local serves them.
//! - [`socks5`]: RFC 1928 and RFC 1929 as the local serves them.
//! - [`addr`]: the SOCKS address type the three protocols share.
//! - [`x509`]: when a certificate expires (the one field read from its DER).
//! - [`current`]: a value a reload replaces, kept by the connections already open.
//! - [`metrics`]: counters for operators, served in the Prometheus text format.
//! - [`text`]: peer strings escaped for logs, lowercase hex.
//! - [`error`]: the one error type.
//! - [`sys`]: the one place the process talks to libc directly.

#![deny(unsafe_code)]

pub mod cli;
pub mod signals;
pub mod server;
pub mod local;
pub mod upstream;
pub mod accept;
pub mod udp;
pub mod relay;
pub mod split;
pub mod tls;
pub mod net;
pub mod gate;
pub mod workers;
pub mod egress;
pub mod wire;
pub mod proxy_protocol;
pub mod http;
pub mod socks4;
pub mod socks5;
pub mod addr;
pub mod x509;
pub mod current;
pub mod metrics;
pub mod text;
pub mod error;
pub mod sys;
