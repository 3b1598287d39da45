//! What every proxied connection goes through, whichever binary serves it:
//! the accept loop and admission, the relay of a TCP connection on two copy
//! threads and of a UDP association on two threads, the TLS connection the
//! two share, the deadlines, and the account that logs and counts it.

pub mod accept;
pub mod udp;
pub mod relay;
pub mod split;
pub mod report;
pub mod live;
pub mod end;
pub mod admission;
pub mod timeouts;

pub use end::End;
pub use report::{Outcome, Report};
pub use timeouts::Timeouts;
