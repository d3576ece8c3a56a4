//! Ending a command that writes the store on SIGINT (^C) or SIGTERM through the same path
//! as a failed command: what it wrote is reclaimed, its temporary files and scratch
//! directories are removed, a running RUN is ended with everything it started; then the
//! process dies of the signal (a shell's `$?` is 130 or 143).
//!
//! [`install`] blocks the signals in every thread (call it while the process is still
//! single-threaded: threads started later inherit the mask); [`listen`] waits for them
//! on a thread of its own, which records the signal and passes it on to the child
//! processes registered with [`watch_child`]. The two are apart so that a command that
//! enters a user namespace (`import` of a directory: unshare(2) refuses a threaded
//! process) does so in between; a signal meanwhile waits, pending, for the listener. The work notices at its next [`check`] (per object
//! stored, per file checked out or copied, per buffer read, per tar entry exported, per
//! build step, after each git that maintenance runs, which gets the signal) and fails
//! with [`Interrupted`], unwinding through the cleanup of its error path. A second signal
//! ends the process at once, as a kill -9 would (which the store survives: docs/
//! store-format.md, "Concurrency and crash safety").
//!
//! A signal the process inherited as ignored stays ignored, as in Charliecloud's
//! ch-image (Python keeps an ignored SIGINT ignored) and as `cmd &` in a script expects.
//! Child processes inherit the mask of the thread that starts them (the standard library
//! does not reset it, Rust 1.95): every program started while the signals are blocked
//! goes through [`unblocked`] (or [`own_group`], which calls it), which gives it back the
//! mask the process started with. Without it a RUN's command had SIGINT and SIGTERM
//! blocked: `timeout 1 sleep 4` ran 4 s, `kill $pid` of a background job did nothing, and
//! git, tar2sqfs or mksquashfs ignored the SIGTERM passed on to them.
//!
//! Work blocked where no [`check`] can run (a read from a registry that has stalled) is
//! woken by a hook registered with [`on_signal`]: the registry client shuts its
//! connections down, so the blocked read fails at once and the caller's next check sees
//! the signal.
//!
//! Depends on nothing of the store, the build or the registry, which call it.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// The signal received, as a number; 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Child processes (negative: process groups) to pass a received signal on to (as
/// SIGTERM).
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// What to run on the signal thread when the first signal comes ([`on_signal`]), by id.
type HookFn = Box<dyn Fn() + Send>;
static HOOKS: Mutex<Vec<(u64, HookFn)>> = Mutex::new(Vec::new());

/// The id of the next hook.
static NEXT_HOOK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether [`install`] handles a signal.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The signals [`install`] blocked, for [`listen`].
static BLOCKED: Mutex<Option<SigSet>> = Mutex::new(None);

/// The signal mask the process had before [`install`], for the programs it starts
/// ([`unblocked`]).
static ORIGINAL: Mutex<Option<SigSet>> = Mutex::new(None);

/// The signals handled this way.
const HANDLED: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// The error of work stopped by a signal.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by {}", .0.as_str())]
pub struct Interrupted(pub Signal);

/// Handle SIGINT and SIGTERM (those not inherited as ignored) as this module describes:
/// block them. Call once, while the process has a single thread, then [`listen`].
pub fn install() -> std::io::Result<()> {
    let mut set = SigSet::empty();
    for s in HANDLED {
        if !crate::run::sys::ignored(s) {
            set.add(s);
        }
    }
    if set == SigSet::empty() {
        return Ok(());
    }
    let mut original = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut original))?;
    *ORIGINAL.lock().expect("interrupt mask lock") = Some(original);
    *BLOCKED.lock().expect("interrupt signals lock") = Some(set);
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Start the thread that waits for the signals [`install`] blocked (once; nothing if
/// it blocked none). Until then a signal stays pending.
pub fn listen() -> std::io::Result<()> {
    let Some(set) = BLOCKED.lock().expect("interrupt signals lock").take() else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                received(sig);
            }
        })?;
    Ok(())
}

/// On the signal thread: record `sig` and pass it on, or die of it if one came before.
fn received(sig: Signal) {
    let children = CHILDREN.lock().expect("interrupt children lock");
    if RECEIVED.swap(sig as i32, Ordering::SeqCst) != 0 {
        crate::run::sys::die_of(sig);
    }
    crate::info!(
        "{}: stopping and removing what this command wrote (again to quit at once)",
        sig.as_str()
    );
    for pid in children.iter() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGTERM);
    }
    drop(children);
    for (_, f) in HOOKS.lock().expect("interrupt hooks lock").iter() {
        f();
    }
}

/// Run `wake` when the first signal comes (on the signal thread; at once if one came
/// already), for as long as the returned value lives: it must end, quickly, whatever
/// blocks the work (a network read) so that the work reaches its next [`check`].
pub fn on_signal(wake: impl Fn() + Send + 'static) -> Hook {
    let id = NEXT_HOOK.fetch_add(1, Ordering::SeqCst);
    let mut hooks = HOOKS.lock().expect("interrupt hooks lock");
    if signal().is_some() {
        wake();
    }
    hooks.push((id, Box::new(wake)));
    Hook(id)
}

/// A hook of [`on_signal`], removed when dropped.
#[derive(Debug)]
pub struct Hook(u64);

impl Drop for Hook {
    fn drop(&mut self) {
        let mut hooks = HOOKS.lock().expect("interrupt hooks lock");
        if let Some(i) = hooks.iter().position(|(id, _)| *id == self.0) {
            // Dropped after the lock is released: the hook may own things whose drop
            // takes time (an agent's connections).
            let h = hooks.swap_remove(i);
            drop(hooks);
            drop(h);
        }
    }
}

/// Whether SIGINT or SIGTERM is handled this way in this process ([`install`] blocked
/// one): a child process it starts may then be put in a process group of its own, which
/// [`watch_group`] passes the signal on to.
pub fn handled() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// Prepare `cmd` to get a signal passed on ([`wait_watched_maybe_group`]) where one is handled
/// here ([`handled`]): in a process group of its own, so that what it starts gets the
/// signal too and a terminal's ^C reaches only this process, and with no signal blocked
/// (the mask [`install`] set would be inherited). Returns whether it did; elsewhere the
/// command stays in this process's group, which a terminal's ^C reaches.
pub fn own_group(cmd: &mut std::process::Command) -> bool {
    if !handled() {
        return false;
    }
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    unblocked(cmd);
    true
}

/// Make `cmd` start with the signal mask this process had before [`install`] blocked
/// SIGINT and SIGTERM (nothing to do if it did not): a program started here must see
/// the signals sent to it, and what it starts too (a RUN's `timeout`, `kill`, traps).
pub fn unblocked(cmd: &mut std::process::Command) -> &mut std::process::Command {
    if let Some(mask) = *ORIGINAL.lock().expect("interrupt mask lock") {
        crate::run::sys::mask_across_exec(cmd, mask);
    }
    cmd
}

/// Wait for `child`, started by a command prepared by [`own_group`] (which returned
/// `group`), passing a signal received meanwhile on to it, or, in a process group of its
/// own, to the whole group ([`watch_group`]; the group is not reused while its leader,
/// `child`, is unreaped).
pub fn wait_watched_maybe_group(
    child: &mut std::process::Child,
    group: bool,
) -> std::io::Result<std::process::ExitStatus> {
    wait_watched_as(child, group)
}

/// The signal received, if any.
pub fn signal() -> Option<Signal> {
    Signal::try_from(RECEIVED.load(Ordering::SeqCst)).ok()
}

/// `Err(Interrupted)` once a signal was received.
pub fn interrupted() -> Result<(), Interrupted> {
    signal().map_or(Ok(()), |s| Err(Interrupted(s)))
}

/// [`interrupted`] as an I/O error, for loops whose errors are I/O errors (its kind is
/// `Other`, not `Interrupted`, which the standard library's loops retry).
pub fn check() -> std::io::Result<()> {
    interrupted().map_err(std::io::Error::other)
}

/// Whether the error `e`, or one of its causes, is [`Interrupted`].
pub fn is_interrupted(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<Interrupted>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<Interrupted>().is_some())
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Take a flock(2) on `file` (exclusive or shared), waiting as long as it takes. Where a
/// signal is handled this way the wait is a try every 50 ms that a signal ends
/// ([`check`]'s error): a blocking flock would go on waiting with the signal blocked.
pub fn lock_waiting(
    file: std::fs::File,
    exclusive: bool,
) -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let (nb, block) = if exclusive {
        (FlockArg::LockExclusiveNonblock, FlockArg::LockExclusive)
    } else {
        (FlockArg::LockSharedNonblock, FlockArg::LockShared)
    };
    if !INSTALLED.load(Ordering::SeqCst) {
        return Flock::lock(file, block).map_err(|(_, e)| e.into());
    }
    let mut file = file;
    loop {
        check()?;
        match Flock::lock(file, nb) {
            Ok(l) => return Ok(l),
            Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(e.into()),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Wait for `child`, passing a signal received meanwhile on to it (as SIGTERM): the
/// process is registered with [`watch_child`] until it has exited, and reaped after (so
/// that its PID can't be another process's when a signal comes).
pub fn wait_watched(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    wait_watched_as(child, false)
}

fn wait_watched_as(
    child: &mut std::process::Child,
    group: bool,
) -> std::io::Result<std::process::ExitStatus> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    {
        let _w = if group {
            watch_group(child.id())
        } else {
            watch_child(child.id())
        };
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => break,
            }
        }
    }
    child.wait()
}

/// A child process that a received signal is passed on to (as SIGTERM) while this is
/// alive; if one was received already, it is passed on at once.
pub struct Watched(i32);

/// Pass a signal received from now on to process `pid` (a child, not yet reaped) until
/// the returned value is dropped; drop it before reaping the child.
pub fn watch_child(pid: u32) -> Watched {
    watch(pid as i32)
}

/// Pass a signal received from now on to every process of the process group `pgid` (a
/// child started with `process_group(0)`, not yet reaped, and what it started: git's
/// pack-objects, whose temporary pack would stay otherwise) until the returned value is
/// dropped.
pub fn watch_group(pgid: u32) -> Watched {
    watch(-(pgid as i32))
}

/// Register `pid` (negative: a process group) with [`CHILDREN`].
fn watch(pid: i32) -> Watched {
    let mut children = CHILDREN.lock().expect("interrupt children lock");
    children.push(pid);
    if signal().is_some() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    }
    Watched(pid)
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut children = CHILDREN.lock().expect("interrupt children lock");
        if let Some(i) = children.iter().position(|p| *p == self.0) {
            children.swap_remove(i);
        }
    }
}
