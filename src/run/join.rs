//! `--join` and `--join-pid`: several ch-run invocations sharing one container (user and
//! mount namespaces), FAQ 11.4.2.
//!
//! Peer groups coordinate through a state file `/dev/shm/ch-run_shm-TAG` (Charliecloud's
//! shared-memory name, which tools watch; under `/tmp` when `/dev/shm` is missing) guarded
//! by `flock(2)`:
//! - the first peer finds the file empty (or naming a dead process), keeps the lock while it
//!   builds the container, then writes `PID JOINED` and releases the lock: it is the winner;
//! - later peers take the lock, read the winner's PID, count themselves in and `setns(2)`
//!   into `/proc/PID/ns/{user,mnt}`; the last expected peer removes the file so the tag can
//!   be reused.
//!
//! The lock is released by the kernel if a winner dies while setting up, and a file naming
//! a dead PID is treated as empty.

use super::error::RunError;
use nix::fcntl::{Flock, FlockArg};
use nix::sched::{setns, CloneFlags};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// How to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// `--join-pid=PID`.
    Pid(i32),
    /// `--join` with a tag and a peer count.
    Peers { tag: String, count: u32 },
}

/// This process's role in a peer group.
pub enum Role {
    /// Build the container, then call [`Winner::ready`].
    Winner(Winner),
    /// Already inside the winner's namespaces.
    Joined,
}

/// A winner holding the group lock while it sets up.
pub struct Winner {
    lock: Flock<std::fs::File>,
    count: u32,
    path: PathBuf,
}

impl Winner {
    /// Publish `pid` (a process inside the new namespaces) and release the lock.
    pub fn ready(mut self, pid: i32) -> Result<(), RunError> {
        if self.count > 1 {
            let f: &mut std::fs::File = &mut self.lock;
            f.set_len(0)
                .and_then(|_| f.rewind())
                .and_then(|_| writeln!(f, "{pid} 1"))
                .map_err(|e| RunError::io("can't write join state", &e))?;
        }
        end(self.count - 1, &self.path);
        drop(self.lock);
        Ok(())
    }
}

/// Charliecloud's end of joining, with its `-v` lines: `left` peers still to come; the
/// last one removes the state file so that the tag can be reused.
fn end(left: u32, path: &std::path::Path) {
    crate::verbose!("join: {left} peers left excluding myself");
    if left == 0 {
        crate::verbose!("join: cleaning up IPC resources");
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::warn!("can't unlink shm: {}: {e}", path.display());
            }
        }
    }
    crate::verbose!("join: done");
}

/// Join the user and mount namespaces of `pid`.
pub fn join_pid(pid: i32) -> Result<(), RunError> {
    let open = |ns: &str| {
        let p = format!("/proc/{pid}/ns/{ns}");
        std::fs::File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RunError::msg(format!("join: no PID {pid}: {p} not found"))
            } else {
                RunError::io(format!("can't open join namespace: {p}"), &e)
            }
        })
    };
    let user = open("user")?;
    let mnt = open("mnt")?;
    // The user namespace first: it gives the capabilities needed to join the mount one.
    setns(&user, CloneFlags::CLONE_NEWUSER).map_err(|e| {
        if e == nix::errno::Errno::EINVAL {
            // setns(2): EINVAL when joining the namespace the caller is already in.
            RunError::sys(
                format!("join: PID {pid} is not in a container (its user namespace is ours)"),
                e,
            )
        } else {
            RunError::sys(format!("can't join user namespace of {pid}"), e)
        }
    })?;
    setns(&mnt, CloneFlags::CLONE_NEWNS)
        .map_err(|e| RunError::sys(format!("can't join mount namespace of {pid}"), e))?;
    crate::verbose!("joined namespaces of {pid}");
    Ok(())
}

/// Whether `pid` lives, in a user namespace other than ours: a winner, not a host process
/// that reused a dead winner's PID (the state file is then stale).
fn in_a_container(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    match (
        ns(&format!("/proc/{pid}/ns/user")),
        ns("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs != ours,
        _ => false,
    }
}

/// Path of a peer group's state file.
pub fn state_path(tag: &str) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    PathBuf::from(dir).join(format!("ch-run_shm-{}", tag.replace('/', "%")))
}

/// Parse a state file: `PID JOINED`.
pub fn parse_state(s: &str) -> Option<(i32, u32)> {
    let mut it = s.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let joined = it.next()?.parse().ok()?;
    Some((pid, joined))
}

/// Enter a peer group: become the winner, or join the winner.
pub fn peers(uid: u32, tag: &str, count: u32) -> Result<Role, RunError> {
    let path = state_path(tag);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| RunError::io(format!("can't open join state: {}", path.display()), &e))?;
    // Someone else's file could name a process of theirs: only trust our own.
    let owner = std::os::unix::fs::MetadataExt::uid(
        &file
            .metadata()
            .map_err(|e| RunError::io(format!("can't stat join state: {}", path.display()), &e))?,
    );
    if owner != uid {
        return Err(RunError::msg(format!(
            "join state file not owned by you: {}",
            path.display()
        )));
    }
    let mut lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| RunError::sys(format!("can't lock join state: {}", path.display()), e))?;
    let mut text = String::new();
    lock.read_to_string(&mut text)
        .map_err(|e| RunError::io("can't read join state", &e))?;
    if let Some((pid, joined)) = parse_state(&text) {
        if joined < count && in_a_container(pid) {
            crate::verbose!("join: I lost");
            let joined = joined + 1;
            if joined < count {
                let f: &mut std::fs::File = &mut lock;
                f.set_len(0)
                    .and_then(|_| f.rewind())
                    .and_then(|_| writeln!(f, "{pid} {joined}"))
                    .map_err(|e| RunError::io("can't write join state", &e))?;
            }
            crate::verbose!("joining namespaces of pid {pid}");
            join_pid(pid)?;
            // The last peer frees the tag.
            end(count - joined, &path);
            drop(lock);
            return Ok(Role::Joined);
        }
    }
    crate::verbose!("join: I won");
    crate::verbose!("join: winner initializing shared data");
    Ok(Role::Winner(Winner { lock, count, path }))
}

/// Default peer count from the launcher's environment, with the variable it came from.
pub fn default_count() -> Option<(&'static str, u32)> {
    count_from(|v| std::env::var(v).ok())
}

/// The peer count from the first launcher variable that `lookup` finds: Open MPI's local
/// size, else Slurm's tasks per node (`2(x3),1` gives 2, like C's `atoi`), else Slurm's
/// CPUs on the node.
fn count_from(lookup: impl Fn(&str) -> Option<String>) -> Option<(&'static str, u32)> {
    [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_CPUS_ON_NODE",
    ]
    .iter()
    .find_map(|v| lookup(v).map(|s| (*v, s)))
    .and_then(|(v, s)| {
        s.split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .map(|n| (v, n))
    })
}

/// Default tag: `SLURM_STEP_ID`, else the parent's PID; with where it came from, in
/// Charliecloud's words (`SLURM_STEP_ID`, `getppid(2)`).
pub fn default_tag() -> (&'static str, String) {
    match std::env::var("SLURM_STEP_ID") {
        Ok(t) => ("SLURM_STEP_ID", t),
        Err(_) => ("getppid(2)", nix::unistd::getppid().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_garbage() {
        assert_eq!(parse_state("123 2\n"), Some((123, 2)));
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("x"), None);
    }

    #[test]
    fn peer_count_from_launcher_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            count_from(env(&[("SLURM_STEP_TASKS_PER_NODE", "2(x3),1")])),
            Some(("SLURM_STEP_TASKS_PER_NODE", 2))
        );
        assert_eq!(
            count_from(env(&[
                ("SLURM_CPUS_ON_NODE", "8"),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
                ("SLURM_STEP_TASKS_PER_NODE", "2")
            ])),
            Some(("OMPI_COMM_WORLD_LOCAL_SIZE", 4))
        );
        assert_eq!(
            count_from(env(&[("SLURM_CPUS_ON_NODE", "16")])),
            Some(("SLURM_CPUS_ON_NODE", 16))
        );
        assert_eq!(count_from(env(&[("SLURM_CPUS_ON_NODE", "x3")])), None);
        assert_eq!(count_from(env(&[])), None);
    }

    #[test]
    fn state_path_escapes_slashes() {
        assert!(state_path("a/b")
            .to_string_lossy()
            .ends_with("/ch-run_shm-a%b"));
    }
}
