//! The limits that size the connection cap: descriptors (raised to the
//! hard limit), threads (RLIMIT_NPROC, the cgroup's `pids.max`,
//! `kernel.threads-max`), and what one connection takes of each.

use crate::workers;

/// Descriptors a process keeps for itself (stdio, listener, logging, the odd file).
const RESERVED_FDS: u64 = 64;
/// Descriptors one connection holds: the client's socket and the onward one.
pub const FDS_PER_CONNECTION: u64 = 2;
/// Descriptors a local's UDP association holds: its control connection, its
/// UDP socket and its TLS connection to the server (a server's holds two:
/// the TLS connection and its UDP socket).
pub const FDS_PER_LOCAL_ASSOCIATION: u64 = 3;

/// Raises the soft descriptor limit to the hard one and returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The descriptors connections may hold between them under `fd_limit`:
/// all but the process's own and `kept` more (a pool's ready connections).
pub fn fd_budget(fd_limit: u64, kept: u64) -> u64 {
    fd_limit.saturating_sub(RESERVED_FDS + kept)
}

/// The connection cap that a budget of `fds` descriptors allows, at `per_connection` each.
pub fn connection_cap(fds: u64, per_connection: u64) -> usize {
    let cap = fds / per_connection.max(1);
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// Threads one connection may need at once: its setup thread and a name
/// lookup, or its two copy threads, plus a lookup that outlived its deadline.
pub const THREADS_PER_CONNECTION: u64 = 4;

/// Threads a process keeps for itself: the threads waiting in accept, the signal thread,
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
        assert_eq!(connection_cap(fd_budget(1024, 0), 2), 480);
        assert_eq!(fd_budget(1024, 18), 1024 - 64 - 18);
        assert_eq!(fd_budget(10, 0), 0);
    }
}
