//! The only `unsafe` code of `run`: thin wrappers over system calls that `nix` does not
//! expose safely. Each wrapper is safe to call under the conditions its doc states.

#![allow(unsafe_code)]

use nix::errno::Errno;
use std::ffi::CString;

/// glibc's `FNM_EXTMATCH` (ksh-style `!(a|b)` patterns); not exported by `libc`.
const FNM_EXTMATCH: libc::c_int = 1 << 5;

/// `fnmatch(3)` with `FNM_EXTMATCH`. Patterns or names containing NUL never match.
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    let (Ok(p), Ok(n)) = (CString::new(pattern), CString::new(name)) else {
        return false;
    };
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call;
    // fnmatch only reads them.
    unsafe { libc::fnmatch(p.as_ptr(), n.as_ptr(), FNM_EXTMATCH) == 0 }
}

/// Give SIGPIPE its default action again. The Rust runtime ignores it at startup, and an
/// ignored signal stays ignored across `execve`: without this, `ch-run IMG -- yes | head`
/// makes `yes` fail with "Broken pipe" instead of ending quietly as in a shell.
pub fn default_sigpipe() -> Result<(), Errno> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler code, so nothing can run in signal context.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map(|_| ())
}

/// Outcome of [`fork`].
pub enum Forked {
    Parent(nix::unistd::Pid),
    Child,
}

/// `fork(2)`. Call only while the process is single-threaded (ch-run never starts threads),
/// so the child may allocate and run arbitrary code before exec.
pub fn fork() -> Result<Forked, Errno> {
    // SAFETY: ch-run is single-threaded (unshare(CLONE_NEWUSER) would have failed
    // otherwise), so no lock can be held by another thread at the fork and the child may
    // run ordinary Rust code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Install a seccomp BPF filter (`no_new_privs` must already be set).
pub fn install_seccomp_filter(filter: &[super::seccomp::SockFilter]) -> Result<(), Errno> {
    let len = u16::try_from(filter.len()).map_err(|_| Errno::E2BIG)?;
    let prog = libc::sock_fprog {
        len,
        // SockFilter is #[repr(C)] with the same fields, sizes and order as sock_filter.
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `len` valid instructions that live until the call returns (the
    // kernel copies the program); PR_SET_SECCOMP with SECCOMP_MODE_FILTER reads only prog.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Wait for a signal of `set` (whose signals must be blocked): `sigtimedwait(2)`, for ever
/// if `timeout` is `None`. Returns the signal and whether the kernel sent it (e.g. a
/// terminal's ^C, which the whole foreground process group receives) rather than a process
/// with kill(2); `None` once `timeout` passes without one. EINTR is retried when waiting
/// for ever.
pub fn sigwait(
    set: &nix::sys::signal::SigSet,
    timeout: Option<std::time::Duration>,
) -> Result<Option<(i32, bool)>, Errno> {
    let raw: &libc::sigset_t = set.as_ref();
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: an all-zero siginfo_t is a valid value for the kernel to overwrite.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: raw and info are valid and live for the call; ts_ptr is null (wait for
        // ever) or points to ts, which lives for the call.
        let sig = unsafe { libc::sigtimedwait(raw, &mut info, ts_ptr) };
        if sig >= 0 {
            return Ok(Some((sig, info.si_code == libc::SI_KERNEL)));
        }
        match Errno::last() {
            Errno::EINTR if timeout.is_none() => continue,
            Errno::EAGAIN | Errno::EINTR => return Ok(None),
            e => return Err(e),
        }
    }
}

/// Make the process `cmd` starts receive `sig` when ch-run dies (`PR_SET_PDEATHSIG`, set
/// between fork and exec). Spawning fails if ch-run is already gone by then.
pub fn die_with_parent(cmd: &mut std::process::Command, sig: nix::sys::signal::Signal) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system calls prctl(2) and getppid(2); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(sig).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// Make `cmd` start with `sigs` ignored (a disposition exec keeps). libfuse installs its
/// exit handlers for SIGHUP, SIGINT and SIGTERM only where the disposition is the default
/// (`fuse_set_signal_handlers(3)`), so a FUSE daemon started so ignores them.
pub fn ignore_across_exec(
    cmd: &mut std::process::Command,
    sigs: &'static [nix::sys::signal::Signal],
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system call sigaction(2) (through signal); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for s in sigs {
                nix::sys::signal::signal(*s, nix::sys::signal::SigHandler::SigIgn)
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// Make `cmd` start with the signal mask `mask`. The standard library leaves a child the
/// mask of the thread that spawned it (Rust 1.95, checked: a child of a thread that
/// blocked SIGTERM has it blocked), and `grove::interrupt` blocks SIGINT and SIGTERM in
/// every thread: a tool started so ignored the SIGTERM passed on to it until it exited.
pub fn mask_across_exec(cmd: &mut std::process::Command, mask: nix::sys::signal::SigSet) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe system call sigprocmask(2) (through pthread_sigmask, on a set
    // copied into the closure); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&mask),
                None,
            )
            .map_err(std::io::Error::from)
        });
    }
}

/// Run the calling thread, and the threads it starts afterwards, at the lowest CPU and
/// I/O priority that still makes progress on a busy machine: nice 19 and the lowest
/// level of the best-effort I/O class (not `SCHED_IDLE` or the idle I/O class, under
/// which background work may wait for as long as anything else runs). For background
/// work (compaction) that must not slow the commands a user runs meanwhile. Needs no
/// privilege (setpriority(2), ioprio_set(2)).
pub fn background_priority() -> Result<(), Errno> {
    // SAFETY: setpriority takes integers only; who 0 is the calling thread.
    Errno::result(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) })?;
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_BE: libc::c_long = 2;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (IOPRIO_CLASS_BE << 13) | 7,
        )
    })?;
    Ok(())
}

/// Terminate the process immediately without running destructors or flushing stdio
/// (used in a forked child whose exec failed).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// Bring the loopback interface `lo` up in the current network namespace (a new one has it
/// down), as Docker's `none` network has it: `127.0.0.1` works, nothing else does. Needs
/// `CAP_NET_ADMIN` over the namespace (root of the user namespace that owns it).
pub fn loopback_up() -> Result<(), Errno> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new descriptor that
    // only this function owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: fd is a valid descriptor nobody else owns (above).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: req is a valid ifreq that outlives both calls; SIOCGIFFLAGS writes only its
    // flags and SIOCSIFFLAGS reads it.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(Errno::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// End the process with signal `sig`, so that its parent's `waitpid` reports the same
/// death as that of the command it ran (a shell's `$?` is 128+N, and a shell loop stops
/// on a ^C its command died of). No core dump is written for the process itself
/// (`PR_SET_DUMPABLE` 0; the command's own dump, if any, is already written). Returns only
/// if `sig` does not end a process by default (SIGCHLD, SIGWINCH, a stop signal). The
/// signal is sent to the calling thread (`pthread_kill`), so that no other thread waiting
/// for it with sigwait(2) takes it; its default action ends the whole process.
pub fn die_of(sig: nix::sys::signal::Signal) {
    use nix::sys::signal::{signal, SigHandler, SigSet, SigmaskHow};
    let _ = nix::sys::prctl::set_dumpable(false);
    // SAFETY: SIG_DFL installs no handler code, so nothing can run in signal context.
    // (Fails for SIGKILL and SIGSTOP, whose action is fixed.)
    let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    let _ = nix::sys::pthread::pthread_kill(nix::sys::pthread::pthread_self(), sig);
    // A blocked signal stays pending until unblocked, and is delivered by the unblocking.
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
}

/// Whether `sig` is ignored (`SIG_IGN`), as a process may inherit it across execve: a
/// shell ignores SIGINT and SIGQUIT in the background jobs it starts without job control
/// (`cmd &` in a script), and `nohup` ignores SIGHUP.
pub fn ignored(sig: nix::sys::signal::Signal) -> bool {
    // SAFETY: an all-zero sigaction is a valid value for the kernel to overwrite.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action makes sigaction(2) only read the current one into `old`,
    // which is valid for the call; nothing is installed.
    let rc = unsafe { libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// Make programs this process executes from now on (its children's too) get no
/// capabilities for being root (`SECBIT_NOROOT`, locked; capabilities(7)): root of a user
/// namespace gets every capability over the namespace's inodes back at execve(2)
/// otherwise, whatever it dropped. Needs `CAP_SETPCAP`.
pub fn no_capabilities_for_root_on_exec() -> Result<(), Errno> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    // SAFETY: PR_SET_SECUREBITS takes integers only and changes only this thread's
    // securebits (threads started later inherit them).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Keep only capability `cap` (a `CAP_*` number below 32) in this thread's effective and
/// permitted sets, and none inheritable (capset(2), version 3). Threads started later
/// inherit the sets; a capability dropped from the permitted set can't come back.
pub fn keep_only_capability(cap: u32) -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    if cap >= 32 {
        return Err(Errno::EINVAL);
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two Data words
        pid: 0,
    };
    let only = Data {
        effective: 1 << cap,
        permitted: 1 << cap,
        inheritable: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let data = [only, none];
    // SAFETY: header and data are valid, properly laid out (#[repr(C)], as the kernel's
    // __user_cap_header_struct and two __user_cap_data_struct) and outlive the call;
    // capset reads data and may write header.version only.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    Errno::result(rc).map(drop)
}

/// `openat(2)` of `name` relative to the directory `dir`, the descriptor owned (used by
/// `store::checkout` to write trees through directory handles, whatever their depth).
pub fn openat_owned(
    dir: std::os::fd::RawFd,
    name: &[u8],
    flags: nix::fcntl::OFlag,
    mode: nix::sys::stat::Mode,
) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::openat(Some(dir), name, flags, mode)?;
    // SAFETY: openat just returned this descriptor, open and owned by no one else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_supports_extglob() {
        assert!(fnmatch(b"*", b"ANY"));
        assert!(fnmatch(b"SLURM*", b"SLURM_JOB"));
        assert!(!fnmatch(b"SLURM*", b"XSLURM"));
        assert!(fnmatch(b"!(A_*|B_*)", b"C_1"));
        assert!(!fnmatch(b"!(A_*|B_*)", b"A_1"));
    }
}
