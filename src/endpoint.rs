//! The metrics endpoint (`--metrics ADDR:PORT`): `GET /metrics` answered
//! with the Prometheus text exposition ([`crate::metrics`]), and the live
//! view of the open connections ([`crate::live_view`]): `GET /connections`
//! as JSON, `GET /` as an HTML page.
//!
//! It is a listener like the proxies' and runs the same accept loop
//! ([`Acceptor`]): at most [`MAX_SCRAPES`] scrapes at once, each on a setup
//! thread, and once half of those places are taken, at most
//! [`MAX_SCRAPES_PER_SOURCE`] from one address (an IPv6 /64), as the
//! server's per-source limit works; a 503 is written at once to any more.
//! So sockets one address holds open (idle, or reopened as soon as they are
//! closed) never keep another address's scrapes out. A scrape's request
//! head is read with the HTTP proxy's reader ([`http::read_request_line`],
//! [`http::read_headers`]) under [`REQUEST_TIME`], a second, so a scraper
//! that says nothing holds a place only that long and holds up neither the
//! proxy nor later scrapes. A scrape gives its place back before its
//! answer ends, so a scraper that asks again once it has read one answer
//! always finds the place free. Its refusals and scrapes are not
//! connections of the proxy: they are neither counted nor logged as such.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::conn::accept::Acceptor;
use crate::conn::admission::{Place, Refused};
use crate::error::Error;
use crate::live_view::View;
use crate::metrics::{self, Role};
use crate::net::deadline::Deadline;
use crate::proto::http::{self, Fault};

/// Scrapes answered at once; more are answered 503 and closed.
pub const MAX_SCRAPES: usize = 8;
/// Scrapes answered at once from one address (an IPv6 /64) once half of
/// [`MAX_SCRAPES`] are taken; more from it are answered 503 and closed.
pub const MAX_SCRAPES_PER_SOURCE: usize = 2;
/// How long a scraper has to send its request head (a scraper sends it
/// as it connects).
pub const REQUEST_TIME: Duration = Duration::from_secs(1);
/// How long the whole answer may take to write, to a scraper that reads slowly or not at all.
const WRITE_TIME: Duration = Duration::from_secs(5);
/// The stack of the thread that runs the endpoint's accept loop.
const ACCEPT_STACK: usize = 64 * 1024;

/// Binds `addr` and serves the metrics of `role` there from a thread of
/// its own; returns the address bound (port 0 gets a free port).
pub fn serve(addr: &str, role: Role) -> Result<SocketAddr, Error> {
    let acceptor = Acceptor::bind(addr, MAX_SCRAPES, Some(MAX_SCRAPES_PER_SOURCE), None)?;
    let bound = acceptor.local_addr().map_err(Error::Io)?;
    let admit = move |sock: TcpStream, _peer, place| move || answer(&sock, role, place);
    thread::Builder::new()
        .name("metrics".into())
        .stack_size(ACCEPT_STACK)
        .spawn(move || acceptor.run(Duration::ZERO, admit, too_busy))
        .map_err(|e| Error::Config(format!("cannot start its thread: {e}")))?;
    Ok(bound)
}

/// Reads one request head and answers it, gives `place` back, then
/// closes. A scraper that closes, stalls past [`REQUEST_TIME`] or breaks
/// off is closed unanswered.
fn answer(sock: &TcpStream, role: Role, place: Place) {
    let route = match read_route(&mut Deadline::new(sock, Instant::now() + REQUEST_TIME)) {
        Ok(route) => route,
        Err(Fault::Io(_)) => return,
        Err(Fault::Status(status, _)) => Route::Status(status),
    };
    // HEAD gets the length of the body it would have had.
    let (status, body, len, content_type) = match route {
        Route::Found(doc, with_body) => {
            let (body, content_type) = match doc {
                Doc::Metrics => (metrics::render(role), metrics::EXPOSITION),
                Doc::Connections => (View::now(role).json(), JSON),
                Doc::Page => (View::now(role).html(), HTML),
            };
            let len = body.len();
            ("200 OK".to_owned(), if with_body { body } else { String::new() }, len, content_type)
        }
        Route::Status(status) => {
            (format!("{} {}", status.code(), status.reason()), String::new(), 0, "text/plain; charset=utf-8")
        }
    };
    let allow = if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" };
    // The live view changes from one request to the next, and its page runs only its own script.
    let extra = if content_type == HTML {
        PAGE_HEADERS
    } else if content_type == JSON {
        "Cache-Control: no-store\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{allow}{extra}Connection: close\r\n\r\n"
    );
    // One deadline for the whole answer, not one per write: a reader that
    // takes a byte now and then cannot hold the place past it.
    let mut out = Deadline::new(sock, Instant::now() + WRITE_TIME);
    let sent = out.write_all(head.as_bytes()).and_then(|()| out.write_all(body.as_bytes()));
    // Before the scraper can see the end of the answer: its next scrape finds the place free.
    drop(place);
    if sent.is_ok() {
        let _ = sock.shutdown(Shutdown::Write);
    }
}

/// Over [`MAX_SCRAPES`] or [`MAX_SCRAPES_PER_SOURCE`]: a 503 written
/// without waiting, then a close.
fn too_busy(sock: TcpStream, _why: &Refused) {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
    if sock.set_nonblocking(true).is_ok() {
        let _ = (&sock).write(answer);
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// The live view's JSON.
const JSON: &str = "application/json";
/// The live view's page.
const HTML: &str = "text/html; charset=utf-8";
/// The page's headers: never cached, nothing loaded but itself and `/connections`.
const PAGE_HEADERS: &str = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
connect-src 'self'; frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\n";

/// What the endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doc {
    /// `/metrics`: the exposition.
    Metrics,
    /// `/connections`: the open connections as JSON.
    Connections,
    /// `/`: the open connections as an HTML page.
    Page,
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// A document, without its body for HEAD.
    Found(Doc, bool),
    /// Anything else: this status, with no body.
    Status(http::Status),
}

/// Reads a request head and routes it: `GET` or `HEAD` of `/metrics`,
/// `/connections` or `/` (a query is ignored); another method there is
/// 405, another path 404, a
/// request line that is not HTTP/1.x or a target not in origin form 400.
fn read_route(r: &mut impl http::Peek) -> Result<Route, Fault> {
    let line = http::read_request_line(r)?;
    http::read_headers(r)?;
    if !line.target.starts_with('/') {
        return Ok(Route::Status(http::Status::BadRequest));
    }
    let path = line.target.split('?').next().unwrap_or_default();
    let doc = match path {
        "/metrics" => Doc::Metrics,
        "/connections" => Doc::Connections,
        "/" => Doc::Page,
        _ => return Ok(Route::Status(http::Status::NotFound)),
    };
    Ok(match line.method.as_str() {
        "GET" => Route::Found(doc, true),
        "HEAD" => Route::Found(doc, false),
        _ => Route::Status(http::Status::MethodNotAllowed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let r = |s: &str| match read_route(&mut s.as_bytes()) {
            Ok(route) => route,
            Err(Fault::Status(status, _)) => Route::Status(status),
            Err(Fault::Io(e)) => panic!("{s:?}: {e}"),
        };
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Found(Doc::Metrics, true));
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Found(Doc::Metrics, true));
        assert_eq!(r("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Found(Doc::Metrics, false));
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::Status(http::Status::MethodNotAllowed));
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::Found(Doc::Page, true));
        assert_eq!(r("GET /connections?x HTTP/1.1\r\n\r\n"), Route::Found(Doc::Connections, true));
        assert_eq!(r("PUT /connections HTTP/1.1\r\n\r\n"), Route::Status(http::Status::MethodNotAllowed));
        assert_eq!(r("GET /connections/ HTTP/1.1\r\n\r\n"), Route::Status(http::Status::NotFound));
        assert_eq!(r("GET /metricsx HTTP/1.1\r\n\r\n"), Route::Status(http::Status::NotFound));
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET /metrics SPDY/3\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "\u{1}\r\n\r\n",
        ] {
            assert_eq!(r(bad), Route::Status(http::Status::BadRequest), "{bad:?}");
        }
    }

    #[test]
    fn a_head_cut_short_gets_no_answer() {
        assert!(matches!(read_route(&mut &b"GET /metrics HTTP/1.1\r\nHost: x\r\n"[..]), Err(Fault::Io(_))));
    }
}
