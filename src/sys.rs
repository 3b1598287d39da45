//! The one place the process talks to libc directly, for what no safe API
//! offers. Everything else goes through `std`, `socket2` or `nix`, and the
//! rest of the crate denies `unsafe` code.
//!
//! What it does: bound glibc's malloc arenas. glibc gives threads their own
//! arenas, up to 8 per core, and keeps the memory freed into each. A program
//! with a thread per direction of every connection spreads its allocations
//! over all of them, and each keeps its own high-water mark of free memory:
//! resident memory grows over hours of varied load although nothing leaks
//! (tests/e2e/memory.rs shows it; docs/PERFORMANCE.md has the numbers). With a
//! small fixed number of arenas, memory freed by one connection's threads is
//! reused by the next one's.

/// Arenas glibc may create. Chosen by measurement (docs/PERFORMANCE.md,
/// "Memory over time"): with 2, resident memory levels off after the second
/// cycle of the soak test and every benchmark figure is within noise of
/// glibc's default; with 1, new connections at concurrency 32 were about 6 %
/// slower; with 4 or more, memory was still rising. A fixed number keeps
/// memory flat whatever the core count.
pub const MALLOC_ARENAS: i32 = 2;

/// The variable with which a user sets the arena count glibc itself reads;
/// when it is set, it wins and [`bound_malloc_arenas`] leaves glibc alone.
pub const ARENA_ENV: &str = "MALLOC_ARENA_MAX";

/// Bounds glibc's malloc arenas to [`MALLOC_ARENAS`], unless the user set
/// [`ARENA_ENV`]. Call it first in `main`, before any thread exists. On
/// other C libraries (musl has no per-thread arenas) it does nothing. A
/// failure leaves glibc's default, which works, only with more memory.
pub fn bound_malloc_arenas() {
    if std::env::var_os(ARENA_ENV).is_none() {
        set_arena_max(MALLOC_ARENAS);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: mallopt takes two integers and changes a malloc tunable; it has
    // no pointer arguments and no preconditions. glibc takes its own lock to
    // change the parameter, so the call is sound with threads running; called
    // before any exists, every arena the process creates is under the bound.
    // It returns 1 on success and 0 on error.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_bound() {
        assert!(set_arena_max(MALLOC_ARENAS));
    }
}
