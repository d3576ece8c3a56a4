//! `--join` and `--join-pid`: several ch-run invocations sharing one container (user and
//! mount namespaces), FAQ 11.4.2.
//!
//! Peer groups coordinate through a state file `/dev/shm/ch-run_shm-TAG` (Charliecloud's
//! shared-memory name, which tools watch; under `/tmp` when `/dev/shm` is missing) guarded
//! by `flock(2)`:
//! - the first peer finds the file empty (or naming dead processes), keeps the lock while it
//!   builds the container, starts a *holder* (see below), then writes its [`State`] (PID,
//!   peers joined, start time, digest of the container's options, holder PID, image path)
//!   and releases the lock: it is the winner;
//! - later peers take the lock, check that the winner runs the same image with the same
//!   options and that the group has not timed out, count themselves in and `setns(2)` into
//!   `/proc/HOLDER/ns/{user,mnt}`; the last expected peer removes the file so the tag can be
//!   reused.
//!
//! The holder is a process the winner forks (twice, so that it is nobody's child) inside
//! the new namespaces, right before its command starts. It keeps the namespaces alive until
//! every expected peer has joined (the state file is gone or names another holder) or the
//! group has timed out, so that a peer never finds a vanished winner when the winner's
//! command is short (`/bin/true` ranks). It looks at the state file every few milliseconds
//! under a shared lock, and decides to end only while holding that lock, so a peer that has
//! read the state under the exclusive lock joins a living holder.
//!
//! The lock is released by the kernel if a winner dies while setting up, and a file naming
//! a dead winner and a dead holder is treated as empty.
//!
//! Default tags are job-scoped ([`default_tag`]) and default counts are per node
//! ([`default_count`]), so that two jobs on one node never share a group (docs/hpc.md).

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

/// Seconds after its winner started that a peer group accepts no more peers, unless
/// `CH_RUN_JOIN_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: u64 = 60;

/// What a container is, for peers to compare: the image path and a digest of the options
/// that shape the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub image: String,
    pub digest: String,
}

/// A group's state file: `PID JOINED STARTED DIGEST HOLDER` on the first line (STARTED in
/// seconds since the epoch; HOLDER the PID of the process holding the namespaces), the
/// image path on the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub pid: i32,
    pub joined: u32,
    pub started: u64,
    pub id: Identity,
    pub holder: i32,
}

impl State {
    fn render(&self) -> String {
        format!(
            "{} {} {} {} {}\n{}\n",
            self.pid, self.joined, self.started, self.id.digest, self.holder, self.id.image
        )
    }
}

/// Whether the holder `me` of a group of `count` (timeout in seconds) must keep holding,
/// given the state file's text (`None`: the file is gone): the file still names it, the
/// group is short of peers and has not timed out at `now`.
pub fn keep_holding(text: Option<&str>, me: i32, count: u32, now: u64, timeout: u64) -> bool {
    text.and_then(parse_state).is_some_and(|st| {
        st.holder == me && st.joined < count && now.saturating_sub(st.started) <= timeout
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Join timeout in seconds: `CH_RUN_JOIN_TIMEOUT` if a number, else [`DEFAULT_TIMEOUT`].
fn timeout() -> u64 {
    std::env::var("CH_RUN_JOIN_TIMEOUT")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn write_state(f: &mut std::fs::File, st: &State) -> Result<(), RunError> {
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| f.write_all(st.render().as_bytes()))
        .map_err(|e| RunError::io("can't write join state", &e))
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
    id: Identity,
}

impl Winner {
    /// Start the holder of the namespaces, publish it and `pid` (this process, inside the
    /// new namespaces) and release the lock. Call it last before the command starts: the
    /// holder is a copy of this process. Returns the group while peers may still come.
    pub fn ready(mut self, pid: i32) -> Result<Option<Group>, RunError> {
        let mut group = None;
        if self.count > 1 {
            let holder = start_holder(&self.path, self.count)?;
            group = Some(Group {
                path: self.path.clone(),
                holder,
            });
            crate::verbose!("join: namespaces held by PID {holder} until all peers joined");
            let st = State {
                pid,
                joined: 1,
                started: now(),
                id: self.id.clone(),
                holder,
            };
            write_state(&mut self.lock, &st)?;
        }
        end(self.count - 1, &self.path);
        drop(self.lock);
        Ok(group)
    }
}

/// A peer group as its winner knows it once the command runs: its state file and holder.
pub struct Group {
    path: PathBuf,
    holder: i32,
}

impl Group {
    /// The holder: it keeps the namespaces for late peers but uses nothing in them.
    pub fn holder(&self) -> i32 {
        self.holder
    }

    /// Close the group if `may_close` and `idle` says, under the group's lock, that no peer
    /// is left in the container: empty and remove the state file, so that the holder ends
    /// and a peer that comes later builds a container of its own. True if the group is
    /// closed or no longer this one (complete, or timed out and replaced); false if it
    /// stays open (not `may_close`, or a peer joined before the lock was taken).
    ///
    /// A SquashFS winner calls it after its command: it must serve the mount as long as a
    /// peer may use it, and without it waited for the holder's timeout when the group
    /// never filled (a batch script's `ch-run --join` outside `srun`).
    pub fn close_if(&self, may_close: bool, idle: impl FnOnce() -> bool) -> bool {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path);
        let Ok(file) = file else {
            return true;
        };
        let Ok(mut lock) = Flock::lock(file, FlockArg::LockExclusive) else {
            return true;
        };
        let mut text = String::new();
        let ours = lock
            .read_to_string(&mut text)
            .ok()
            .and_then(|_| parse_state(&text))
            .is_some_and(|st| st.holder == self.holder);
        if !ours {
            return true;
        }
        if !may_close || !idle() {
            return false;
        }
        crate::verbose!("join: closing the group, no peer left in the container");
        // Emptied first: a peer that opened the file before it was removed reads no group.
        let _ = lock.set_len(0);
        let _ = std::fs::remove_file(&self.path);
        true
    }
}

/// Fork the holder of a group (see the module doc) and return its PID. The holder is
/// forked twice so that it is nobody's child (the winner's command must not inherit a
/// child it does not know), and has no open file but /dev/null on 0, 1 and 2 (it must not
/// keep a pipe of the winner's caller open).
fn start_holder(path: &std::path::Path, count: u32) -> Result<i32, RunError> {
    use super::sys::{exit_now, fork, Forked};
    let (r, w) = nix::unistd::pipe().map_err(|e| RunError::sys("can't create pipe", e))?;
    let limit = timeout();
    match fork().map_err(|e| RunError::sys("can't fork join holder", e))? {
        Forked::Child => {
            drop(r);
            match fork() {
                Ok(Forked::Child) => {
                    let me = nix::unistd::getpid().as_raw();
                    let mut w = std::fs::File::from(w);
                    let _ = w.write_all(&me.to_ne_bytes());
                    drop(w);
                    detach_files();
                    // Ends holding the lock it decided under (see [`hold`]).
                    let _decided = hold(path, me, count, limit);
                    exit_now(0)
                }
                Ok(Forked::Parent(_)) => exit_now(0),
                Err(_) => exit_now(1),
            }
        }
        Forked::Parent(child) => {
            drop(w);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut buf = [0u8; 4];
            std::fs::File::from(r)
                .read_exact(&mut buf)
                .map_err(|e| RunError::io("can't start join holder", &e))?;
            Ok(i32::from_ne_bytes(buf))
        }
    }
}

/// In the holder: /dev/null on 0, 1 and 2, every other descriptor closed.
fn detach_files() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|fd| *fd > 2) {
        let _ = nix::unistd::close(fd);
    }
}

/// The holder's loop: look at the state file every few milliseconds until
/// [`keep_holding`] says no. Returns the shared lock it decided under (if the file still
/// exists), for the holder to keep until it exits, so that the decision and the exit are
/// one step for the peers.
fn hold(path: &std::path::Path, me: i32, count: u32, limit: u64) -> Option<Flock<std::fs::File>> {
    let mut pause = std::time::Duration::from_millis(2);
    let mut held = None;
    loop {
        drop(held.take());
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path);
        let Ok(file) = file else {
            return None;
        };
        let Ok(mut lock) = Flock::lock(file, FlockArg::LockShared) else {
            return None;
        };
        let mut text = String::new();
        let text = lock.read_to_string(&mut text).ok().map(|_| text);
        if !keep_holding(text.as_deref(), me, count, now(), limit) {
            return Some(lock);
        }
        held = Some(lock);
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
                RunError::io(format!("join: can't open {p}"), &e)
            }
        })
    };
    let user = open("user")?;
    let mnt = open("mnt")?;
    // A process in a user namespace of its own whose root directory is ours has not
    // entered a container: a SquashFS image's squashfuse_ll (whose command line names the
    // image, so `pgrep -f IMG` finds it) runs in the namespace made to mount the image,
    // before the container pivots. Joining it would run the command on the host's files
    // as (namespace) root. One in our user namespace is refused by setns below; a root we
    // can't stat is left to setns too.
    {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        let own_userns = id(&format!("/proc/{pid}/ns/user")).ok() == id("/proc/self/ns/user").ok();
        if let (false, Ok(theirs), Ok(ours)) =
            (own_userns, id(&format!("/proc/{pid}/root")), id("/"))
        {
            if theirs == ours {
                return Err(RunError::msg(format!(
                    "join: PID {pid} is not in a container (its root directory is the host's)"
                ))
                .with_hint("give the PID of ch-run or of a process it started"));
            }
        }
    }
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

/// Whether `pid` lives, in a user namespace other than ours: a winner or holder, not a
/// host process that reused a dead one's PID (the state file is then stale). A process
/// that has exited but is not yet reaped still shows its user namespace, not its mount
/// namespace: it must show both.
fn in_a_container(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    if pid <= 0 || ns(&format!("/proc/{pid}/ns/mnt")).is_err() {
        return false;
    }
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

/// Parse a state file (see [`State`]); `None` if it is empty or not one.
pub fn parse_state(s: &str) -> Option<State> {
    let (first, rest) = s.split_once('\n')?;
    let mut it = first.split(' ');
    let pid = it.next()?.parse().ok()?;
    let joined = it.next()?.parse().ok()?;
    let started = it.next()?.parse().ok()?;
    let digest = it.next()?.to_string();
    let holder = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    let image = rest.strip_suffix('\n')?.to_string();
    Some(State {
        pid,
        joined,
        started,
        id: Identity { image, digest },
        holder,
    })
}

/// Why a peer may not join the group in `st`, if it may not: it wants a different
/// container, or the group timed out (`now` and `timeout` in seconds).
pub fn refusal(
    tag: &str,
    st: &State,
    count: u32,
    me: &Identity,
    now: u64,
    timeout: u64,
) -> Option<String> {
    if st.id.image != me.image {
        return Some(format!(
            "join: peer group {tag} runs image {}, not {}: refusing to join a different image \
             (another job with the same tag?)",
            st.id.image, me.image
        ));
    }
    if st.id.digest != me.digest {
        return Some(format!(
            "join: peer group {tag} runs image {} with different options: refusing to join \
             (all peers must be given the same container options)",
            st.id.image
        ));
    }
    let age = now.saturating_sub(st.started);
    if age > timeout {
        return Some(format!(
            "join: peer group {tag} timed out: expected {count} peers, found {} after {timeout} s \
             (winner PID {}); check --join-ct or the launcher's tasks per node",
            st.joined, st.pid
        ));
    }
    None
}

/// Enter a peer group: become the winner, or join the winner if it runs the container
/// `id` describes.
pub fn peers(uid: u32, tag: &str, count: u32, id: &Identity) -> Result<Role, RunError> {
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
    if let Some(st) = parse_state(&text) {
        // The holder keeps the namespaces until the group is complete or timed out; after
        // a timeout, a winner still running tells a late peer so (the refusal below).
        let pid = [st.holder, st.pid].into_iter().find(|p| in_a_container(*p));
        if let Some(pid) = pid.filter(|_| st.joined < count) {
            crate::verbose!("join: I lost");
            if let Some(why) = refusal(tag, &st, count, id, now(), timeout()) {
                return Err(RunError::msg(why));
            }
            let joined = st.joined + 1;
            if joined < count {
                write_state(&mut lock, &State { joined, ..st })?;
            }
            // Charliecloud's line names the winner (scripts take its PID for a later
            // --join-pid); the holder, when the namespaces come from it, is said after.
            if pid != st.pid && in_a_container(st.pid) {
                crate::verbose!("joining namespaces of pid {}", st.pid);
                crate::verbose!("join: namespaces held by PID {pid}");
            } else {
                crate::verbose!("joining namespaces of pid {pid}");
            }
            join_pid(pid)?;
            // The last peer frees the tag.
            end(count - joined, &path);
            drop(lock);
            return Ok(Role::Joined);
        }
    }
    crate::verbose!("join: I won");
    crate::verbose!("join: winner initializing shared data");
    Ok(Role::Winner(Winner {
        lock,
        count,
        path,
        id: id.clone(),
    }))
}

/// Default peer count from the launcher's environment, with the variable it came from;
/// an error names a launcher variable that can't be read.
pub fn default_count() -> Result<Option<(&'static str, u32)>, String> {
    count_from(|v| std::env::var(v).ok())
}

/// The peer count from the first launcher variable that `lookup` finds: Open MPI's local
/// size, else Slurm's tasks per node (the entry for `SLURM_NODEID`, see
/// [`tasks_on_node`]), else Slurm's CPUs on the node.
fn count_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<(&'static str, u32)>, String> {
    let number = |var: &'static str, s: &str| {
        env_count(s)
            .map(|n| Some((var, n)))
            .map_err(|why| format!("{var}: {why}"))
    };
    if let Some(s) = lookup("OMPI_COMM_WORLD_LOCAL_SIZE") {
        return number("OMPI_COMM_WORLD_LOCAL_SIZE", &s);
    }
    if let Some(s) = lookup("SLURM_STEP_TASKS_PER_NODE") {
        let node = match lookup("SLURM_NODEID") {
            Some(n) => n
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("join: $SLURM_NODEID not a number: {n:?}"))?,
            None => 0,
        };
        return tasks_on_node(&s, node)
            .map(|n| Some(("SLURM_STEP_TASKS_PER_NODE", n)))
            .map_err(|e| format!("join: $SLURM_STEP_TASKS_PER_NODE={s:?}: {e}"));
    }
    if let Some(s) = lookup("SLURM_CPUS_ON_NODE") {
        return number("SLURM_CPUS_ON_NODE", &s);
    }
    Ok(None)
}

/// A peer count from a launcher variable as Charliecloud reads it (`strtol`, extra
/// characters after the digits allowed: `1foo` is 1): leading blanks and a sign, then
/// digits; "no digits found" or "out of range" (beyond a C `int`) otherwise. Zero and
/// negative counts are 0, which the caller refuses as "no valid peer group size found".
fn env_count(s: &str) -> Result<u32, &'static str> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = &t[..t.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return Err("no digits found");
    }
    let n = digits.parse::<u64>().map_err(|_| "out of range")?;
    match (neg, n) {
        (false, n) if n <= i32::MAX as u64 => Ok(n as u32),
        (true, n) if n <= 1 << 31 => Ok(0),
        _ => Err("out of range"),
    }
}

/// The number of tasks on node `node` (0-based, `SLURM_NODEID`) from Slurm's compressed
/// list `SLURM_STEP_TASKS_PER_NODE`: comma-separated `N` or `N(xM)` (N tasks on each of M
/// nodes), e.g. `2(x3),1` is 2, 2, 2, 1.
pub fn tasks_on_node(list: &str, node: u32) -> Result<u32, String> {
    let mut first = 0u64; // first node of the current entry
    for entry in list.trim().split(',') {
        let (n, reps) = match entry.split_once('(') {
            None => (entry, 1u64),
            Some((n, r)) => {
                let r = r
                    .strip_prefix('x')
                    .and_then(|r| r.strip_suffix(')'))
                    .and_then(|r| r.parse::<u64>().ok())
                    .filter(|r| *r > 0)
                    .ok_or_else(|| format!("bad repeat in entry {entry:?}"))?;
                (n, r)
            }
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad entry {entry:?}"));
        }
        let n: u32 = n.parse().map_err(|_| format!("bad entry {entry:?}"))?;
        // Saturating: repeats are any u64 (`1(x18446744073709551615)`); a sum past it
        // covers every node anyway. (`first + reps` overflowed: ch-run panicked.)
        if u64::from(node) < first.saturating_add(reps) {
            return Ok(n);
        }
        first = first.saturating_add(reps);
    }
    Err(format!(
        "no entry for node {node} (the list covers {first} nodes)"
    ))
}

/// Default tag, job-scoped, with where it came from (for `-v`): Slurm's job and step ids
/// (`SLURM_JOB_ID.SLURM_STEP_ID`), else the PMIx namespace of the job (Open MPI 4 and other
/// PMIx launchers), else Open MPI's job id, else the parent's PID.
///
/// A `SLURM_STEP_ID` that is set but empty, with nothing else to go by, gives an empty tag
/// (refused by the caller, "peer group tag cannot be empty string"), as in Charliecloud,
/// which takes the tag from that variable whenever it is set.
pub fn default_tag() -> (&'static str, String) {
    tag_from(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::env::var_os("SLURM_STEP_ID")
                .filter(|s| s.is_empty())
                .map(|_| ("SLURM_STEP_ID", String::new()))
        })
        .unwrap_or_else(|| ("getppid(2)", nix::unistd::getppid().to_string()))
}

fn tag_from(lookup: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    if let Some(job) = lookup("SLURM_JOB_ID") {
        return Some(match lookup("SLURM_STEP_ID") {
            Some(step) => ("SLURM_JOB_ID and SLURM_STEP_ID", format!("{job}.{step}")),
            None => ("SLURM_JOB_ID", job),
        });
    }
    ["PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "SLURM_STEP_ID"]
        .iter()
        .find_map(|v| lookup(v).map(|t| (*v, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(image: &str, digest: &str) -> Identity {
        Identity {
            image: image.into(),
            digest: digest.into(),
        }
    }

    #[test]
    fn state_round_trip_and_garbage() {
        let st = State {
            pid: 123,
            joined: 2,
            started: 1700000000,
            id: id("/img/with space", "ab12"),
            holder: 124,
        };
        assert_eq!(parse_state(&st.render()), Some(st));
        assert_eq!(parse_state("123 2\n"), None);
        // A state without a holder (an older ch-run's) is not one: its winner may be gone.
        assert_eq!(parse_state("123 2 1700000000 ab12\n/img\n"), None);
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("x"), None);
    }

    #[test]
    fn peers_refuse_another_image_other_options_or_a_timed_out_group() {
        let st = State {
            pid: 7,
            joined: 1,
            started: 100,
            id: id("/a.sqfs", "d1"),
            holder: 8,
        };
        assert_eq!(refusal("t", &st, 2, &id("/a.sqfs", "d1"), 110, 60), None);
        let e = refusal("t", &st, 2, &id("/b.sqfs", "d1"), 110, 60).expect("image");
        assert!(e.contains("runs image /a.sqfs, not /b.sqfs"), "{e}");
        let e = refusal("t", &st, 2, &id("/a.sqfs", "d2"), 110, 60).expect("options");
        assert!(e.contains("different options"), "{e}");
        let e = refusal("t", &st, 3, &id("/a.sqfs", "d1"), 161, 60).expect("timeout");
        assert!(e.contains("expected 3 peers, found 1"), "{e}");
    }

    #[test]
    fn holder_holds_until_all_peers_joined_or_the_group_timed_out() {
        let st = |joined, holder| {
            State {
                pid: 7,
                joined,
                started: 100,
                id: id("/a", "d"),
                holder,
            }
            .render()
        };
        assert!(keep_holding(Some(&st(1, 8)), 8, 3, 110, 60));
        assert!(keep_holding(Some(&st(2, 8)), 8, 3, 160, 60));
        // Every peer counted in (the last one removes the file, so this is for safety).
        assert!(!keep_holding(Some(&st(3, 8)), 8, 3, 110, 60));
        // Timed out.
        assert!(!keep_holding(Some(&st(1, 8)), 8, 3, 161, 60));
        // Removed by the last peer, or reused by another group, or garbage.
        assert!(!keep_holding(None, 8, 3, 110, 60));
        assert!(!keep_holding(Some(&st(1, 9)), 8, 3, 110, 60));
        assert!(!keep_holding(Some(""), 8, 3, 110, 60));
    }

    #[test]
    fn tasks_per_node_compressed_form() {
        let l = "2(x3),1";
        let got: Vec<u32> = (0..4)
            .map(|n| tasks_on_node(l, n).expect("entry"))
            .collect();
        assert_eq!(got, [2, 2, 2, 1]);
        assert_eq!(tasks_on_node("3,1", 1), Ok(1));
        assert_eq!(tasks_on_node("4", 0), Ok(4));
        assert_eq!(tasks_on_node("1,5(x2),2", 2), Ok(5));
        assert_eq!(tasks_on_node("1,5(x2),2", 3), Ok(2));
        let e = tasks_on_node("2(x3),1", 4).expect_err("past the end");
        assert!(e.contains("no entry for node 4"), "{e}");
        for bad in ["", "x", "2(3)", "2(x0)", "2(x", "-1", "(x2)"] {
            assert!(tasks_on_node(bad, 0).is_err(), "{bad}");
        }
        assert!(tasks_on_node("2,,1", 1).is_err());
        // Repeats that add up past u64::MAX cover every node (this overflowed).
        let max = u64::MAX;
        assert_eq!(tasks_on_node(&format!("1(x1),3(x{max})"), 5), Ok(3));
        assert_eq!(tasks_on_node(&format!("1(x{max}),3(x{max})"), 5), Ok(1));
    }

    /// A launcher environment made of `pairs`, as the lookup function the code takes.
    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn default_tag_is_job_scoped() {
        assert_eq!(
            tag_from(env(&[("SLURM_JOB_ID", "41"), ("SLURM_STEP_ID", "0")])),
            Some(("SLURM_JOB_ID and SLURM_STEP_ID", "41.0".into()))
        );
        assert_eq!(
            tag_from(env(&[
                ("PMIX_NAMESPACE", "slurm.pmix.41.0"),
                ("SLURM_JOB_ID", "41")
            ])),
            Some(("SLURM_JOB_ID", "41".into()))
        );
        assert_eq!(
            tag_from(env(&[("PMIX_NAMESPACE", "prterun-x-12@1")])),
            Some(("PMIX_NAMESPACE", "prterun-x-12@1".into()))
        );
        assert_eq!(tag_from(env(&[])), None);
    }

    #[test]
    fn peer_count_from_launcher_variables() {
        assert_eq!(
            count_from(env(&[("SLURM_STEP_TASKS_PER_NODE", "2(x3),1")])),
            Ok(Some(("SLURM_STEP_TASKS_PER_NODE", 2)))
        );
        assert_eq!(
            count_from(env(&[
                ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
                ("SLURM_NODEID", "3")
            ])),
            Ok(Some(("SLURM_STEP_TASKS_PER_NODE", 1)))
        );
        assert!(count_from(env(&[
            ("SLURM_STEP_TASKS_PER_NODE", "2(x3),1"),
            ("SLURM_NODEID", "4")
        ]))
        .is_err());
        assert_eq!(
            count_from(env(&[
                ("SLURM_CPUS_ON_NODE", "8"),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
                ("SLURM_STEP_TASKS_PER_NODE", "2")
            ])),
            Ok(Some(("OMPI_COMM_WORLD_LOCAL_SIZE", 4)))
        );
        assert_eq!(
            count_from(env(&[("SLURM_CPUS_ON_NODE", "16")])),
            Ok(Some(("SLURM_CPUS_ON_NODE", 16)))
        );
        assert_eq!(
            count_from(env(&[("SLURM_CPUS_ON_NODE", "x3")])),
            Err("SLURM_CPUS_ON_NODE: no digits found".into())
        );
        // As Charliecloud's strtol: goop after the digits is fine, a sign is read.
        assert_eq!(
            count_from(env(&[("SLURM_CPUS_ON_NODE", "1foo")])),
            Ok(Some(("SLURM_CPUS_ON_NODE", 1)))
        );
        assert_eq!(
            count_from(env(&[("SLURM_CPUS_ON_NODE", "-1")])),
            Ok(Some(("SLURM_CPUS_ON_NODE", 0)))
        );
        for big in [
            &[("OMPI_COMM_WORLD_LOCAL_SIZE", "2147483648")][..],
            &[("OMPI_COMM_WORLD_LOCAL_SIZE", "-2147483649")][..],
            &[("OMPI_COMM_WORLD_LOCAL_SIZE", "9223372036854775808")][..],
        ] {
            assert_eq!(
                count_from(env(big)),
                Err("OMPI_COMM_WORLD_LOCAL_SIZE: out of range".into()),
                "{big:?}"
            );
        }
        assert_eq!(count_from(env(&[])), Ok(None));
    }

    #[test]
    fn state_path_escapes_slashes() {
        assert!(state_path("a/b")
            .to_string_lossy()
            .ends_with("/ch-run_shm-a%b"));
    }
}
