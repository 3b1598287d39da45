//! The network underneath both binaries: dialling and listening, the
//! limits that size the connection cap, which addresses the server may
//! reach, deadlines on blocking sockets and waiting on two at once.
//!
//! Everything here is blocking `std::net` with socket timeouts; `poll(2)`
//! (through nix) only where one thread must watch two sockets, or the few
//! connects a dial races. Linux is the target: the limits come from `/proc`
//! and the cgroup files.

pub mod dial;
pub mod limits;
pub mod egress;
pub mod deadline;
pub mod drain;
pub mod poll;
#[cfg(test)]
pub(crate) mod testing;
