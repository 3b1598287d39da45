//! What the process has done, counted for operators and served as
//! `GET /metrics` in the Prometheus text exposition format (`--metrics`).
//!
//! The logs say what happened to each connection; a scraper wants totals it
//! can graph and alert on without parsing them. Every count is a process-wide
//! static (an atomic added to with `Relaxed` ordering): an event costs one
//! atomic add, with no lock and no allocation, so the modules that count
//! (almost all of them) pay nothing they would notice. A family with a fixed
//! set of labels ([`Closed`], [`Refusal`], [`Handshake`], [`Way`]) is an
//! array indexed by its enum.
//!
//! Series known only at run time (one per upstream server, say) come from
//! collectors that higher modules register with [`add_collector`]; they
//! write their families with [`family`] and [`sample`], which escape label
//! values as the format requires.
//!
//! The endpoint that answers scrapes is a service of its own
//! ([`crate::endpoint`]); this folder sits near the bottom of the crate and
//! uses no other module of it, so that any module may count.

pub mod exposition;
pub mod counters;

pub use counters::*;
pub use exposition::{add_collector, family, render, sample, Kind, EXPOSITION};
