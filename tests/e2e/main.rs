//! The pair end to end, against the real things people run beside it:
//! curl, wget, urllib and PySocks, Debian's trojan, nginx behind the
//! fallback, HAProxy in front, promtool. Most tests run the pair in this
//! process through the library; those about processes themselves (the
//! command line, signals, reloads, installs, threads, descriptors and
//! memory, the metrics' process-wide counts) run the real binaries. See
//! docs/DEVELOPING.md for what each module covers.

mod support;

mod auth;
mod cli;
mod clients;
mod dial;
mod dns;
mod egress;
mod failover;
mod faults;
mod flood;
mod forward;
mod haproxy;
mod http_proxy;
mod install;
mod limits;
mod live;
mod logs;
mod memory;
mod messages;
mod metrics;
mod pair;
mod probe;
mod proxy_protocol;
mod reload;
mod routing;
mod seed;
mod soak;
mod tls;
mod tls_face;
mod transparent;
mod trojan;
mod udp;
mod users;
