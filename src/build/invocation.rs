//! The RUN invocation as data: the command's argv (shell form through the image's shell,
//! heredocs, root emulation), its environment, the environment file and the `ch-run`
//! arguments. Pure functions, unit-tested here; [`super::exec`] gathers their inputs
//! (the stage's variables, the host's proxy variables, the overlay directories) and
//! spawns `ch-run` with their output.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::dockerfile::{self, CmdForm, Heredoc};
use super::exec::Force;
use super::plan::MAGIC_ARGS;

/// `PATH` of a RUN whose stage sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where an image may have fakeroot (Debian's fakeroot package, or pseudo's wrapper).
pub const FAKEROOT_PATHS: &[&str] = &[
    "usr/bin/fakeroot",
    "usr/bin/fakeroot-sysv",
    "usr/bin/fakeroot-tcp",
    "bin/fakeroot",
];

/// Where a RUN whose command is one heredoc starting with `#!` finds its script.
pub const HEREDOC_DIR: &str = "/run/heredoc";

/// For a RUN whose whole command is one heredoc whose body starts with `#!` (`RUN <<EOF`
/// then `#!/usr/bin/env python3`): the container path of the script and its content.
/// BuildKit writes such a body to a file (mode 0755, named after the delimiter) and
/// executes it, so that the kernel runs the interpreter; the builder binds the file
/// there, read-only, for the RUN. Any other heredoc RUN runs through the shell.
pub fn shebang_heredoc(form: &CmdForm, heredocs: &[Heredoc]) -> Option<(String, String)> {
    let CmdForm::Shell(s) = form else {
        return None;
    };
    let [h] = heredocs else {
        return None;
    };
    if s.trim() != h.word.trim() || !h.content.starts_with("#!") {
        return None;
    }
    let name = if h.name.is_empty() || h.name.contains('/') || h.name.starts_with('.') {
        "heredoc"
    } else {
        &h.name
    };
    Some((format!("{HEREDOC_DIR}/{name}"), h.content.clone()))
}

/// The script file of a `#!` heredoc RUN: its path and content as [`shebang_heredoc`]
/// gives them, except that under `--force=seccomp` a script whose interpreter is a shell
/// (`sh`, `bash`, `dash`, `ash`, `zsh`, directly or through `env`) gets apt's no-sandbox
/// option as a shell-form RUN does ([`apt_no_sandbox`]). The bool says whether it did.
pub fn shebang_script(
    form: &CmdForm,
    heredocs: &[Heredoc],
    force: Force,
) -> Option<(String, String, bool)> {
    let (path, content) = shebang_heredoc(form, heredocs)?;
    if force != Force::Seccomp || !interpreter_is_shell(&content) {
        return Some((path, content, false));
    }
    let (mut v, changed) = apt_no_sandbox(vec![content], true);
    Some((path, v.pop().unwrap_or_default(), changed))
}

/// Whether a script's `#!` line names a shell (by basename; `env [-S] [-OPTS] SHELL`
/// too).
fn interpreter_is_shell(script: &str) -> bool {
    let line = script
        .strip_prefix("#!")
        .and_then(|s| s.lines().next())
        .unwrap_or_default();
    let mut words = line.split_whitespace();
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    let mut interp = words.next().map(base).unwrap_or_default();
    if interp == "env" {
        interp = words
            .find(|w| !w.starts_with('-') && !w.contains('='))
            .map(base)
            .unwrap_or_default();
    }
    ["sh", "bash", "dash", "ash", "zsh"].contains(&interp.as_str())
}

/// What the image offers for `--force=fakeroot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fakeroot {
    /// fakeroot at this image path (one of [`FAKEROOT_PATHS`], without the leading `/`).
    At(String),
    /// Not present, but the image is Debian or a derivative: install it with apt-get.
    Install,
    /// Not present and no way to get it.
    Missing,
}

/// Why a RUN can't be invoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvocationError {
    #[error("RUN: empty command")]
    Empty,
    #[error("--force=fakeroot: fakeroot not found in the image (install it in an earlier RUN, e.g. apt-get install -y fakeroot, or use --force=seccomp)")]
    NoFakeroot,
}

/// The command a RUN executes, and notes for the log (what root emulation changed).
/// `shell` is the image's `SHELL`; `fakeroot` is asked only under `--force=fakeroot`.
pub fn command(
    form: &CmdForm,
    heredocs: &[Heredoc],
    shell: &[String],
    force: Force,
    fakeroot: impl FnOnce() -> Fakeroot,
) -> Result<(Vec<String>, Vec<String>), InvocationError> {
    let argv: Vec<String> = match form {
        CmdForm::Exec(v) => v.clone(),
        CmdForm::Shell(_) if shebang_heredoc(form, heredocs).is_some() => {
            let (path, _) = shebang_heredoc(form, heredocs).expect("checked");
            vec![path]
        }
        CmdForm::Shell(s) => {
            let script = if heredocs.len() == 1 && s.trim() == heredocs[0].word.trim() {
                heredocs[0].content.clone()
            } else {
                dockerfile::shell_script_with_heredocs(s, heredocs)
            };
            let mut v = shell.to_vec();
            v.push(script);
            v
        }
    };
    if argv.is_empty() {
        return Err(InvocationError::Empty);
    }
    let mut notes = Vec::new();
    let argv = match force {
        // fakeroot(1) intercepts chown and friends in the command's processes and keeps
        // their effects in its own database (Charliecloud's --force=fakeroot).
        Force::Fakeroot => match fakeroot() {
            Fakeroot::At(fr) => {
                let mut v = vec![format!("/{fr}")];
                v.extend(argv);
                v
            }
            // Debian and derivatives: install fakeroot first, in this step, as
            // Charliecloud's fakeroot mode does (apt must not drop privileges).
            Fakeroot::Install => {
                notes.push(
                    "--force=fakeroot: fakeroot not in image; installing it with apt-get".into(),
                );
                let mut v: Vec<String> = vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "apt-get -o APT::Sandbox::User=root update -qq \
                     && apt-get -o APT::Sandbox::User=root install -y -qq fakeroot >/dev/null \
                     && exec /usr/bin/fakeroot \"$0\" \"$@\""
                        .into(),
                ];
                v.extend(argv);
                v
            }
            Fakeroot::Missing => return Err(InvocationError::NoFakeroot),
        },
        Force::Seccomp => {
            // A `#!` heredoc's argv is its script's path: the script itself is changed.
            let (argv, changed) = match shebang_script(form, heredocs, force) {
                Some((_, _, changed)) => (argv, changed),
                None => apt_no_sandbox(argv, matches!(form, CmdForm::Shell(_))),
            };
            if changed {
                notes.push(format!(
                    "RUN: apt: adding -o {APT_NO_SANDBOX} (root emulation can't drop privileges)"
                ));
            }
            argv
        }
        Force::None => argv,
    };
    Ok((argv, notes))
}

/// The environment of a RUN: the stage's ARGs and ENV (`stage`, as
/// [`super::subst::Vars::run_env`] gives them), then what the stage does not set: the
/// magic ARGs from the host (`host`), `PATH`, `FAKEROOTDONTTRYCHOWN=1` (fakeroot must not
/// try the real chown first, as in Charliecloud), `TAR_OPTIONS=--no-same-owner`, and the
/// build's `SOURCE_DATE_EPOCH` (reproducible-builds.org: tools that honour it see it).
pub fn environment(
    stage: Vec<(String, String)>,
    host: impl Fn(&str) -> Option<String>,
    source_date_epoch: Option<i64>,
) -> Vec<(String, String)> {
    let mut env = stage;
    let has = |env: &[(String, String)], k: &str| env.iter().any(|(n, _)| n == k);
    for m in MAGIC_ARGS {
        if let Some(v) = host(m) {
            if !has(&env, m) {
                env.push((m.to_string(), v));
            }
        }
    }
    let mut defaults = vec![
        ("PATH", DEFAULT_PATH.to_string()),
        ("FAKEROOTDONTTRYCHOWN", "1".to_string()),
        ("TAR_OPTIONS", "--no-same-owner".to_string()),
    ];
    if let Some(t) = source_date_epoch {
        defaults.push(("SOURCE_DATE_EPOCH", t.to_string()));
    }
    for (k, v) in defaults {
        if !has(&env, k) {
            env.push((k.to_string(), v));
        }
    }
    env
}

/// The file `ch-run --set-env0` reads: `NAME='VALUE'` records ending in NUL. Each value
/// in single quotes, which ch-run strips (exactly one pair), so that a value that is
/// itself quoted (`'x'`) reaches the command unchanged.
pub fn environment_file(env: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in env {
        out.extend_from_slice(format!("{k}='{v}'\0").as_bytes());
    }
    out
}

/// Where a RUN executes: the overlay of the parent's view.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Lower directories, top first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

/// The `ch-run` arguments of a RUN: as root in the image (`-u0 -g0`), writable, no
/// host environment (only `env_file`'s), in `cwd`, with root emulation, the user's binds
/// (`-b`), the RUN's mounts (`--mount`), the overlay, then `--` and `argv`. A RUN with a
/// mount target in `/tmp` gets a private `/tmp` (`-t`, an empty tmpfs) instead of the
/// host's, where its mount point could not be made without writing to the host.
#[allow(clippy::too_many_arguments)]
pub fn ch_run_args(
    env_file: &Path,
    cwd: &str,
    force: Force,
    binds: &[String],
    mounts: &[crate::run::BuildMount],
    overlay: &Overlay,
    no_network: bool,
    argv: &[String],
) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "-w",
        "-u0",
        "-g0",
        "--no-passwd",
        "--env-no-expand",
        "--unset-env=*",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let prefixed = |p: &str, path: &Path| {
        let mut s = OsString::from(p);
        s.push(path);
        s
    };
    a.push(prefixed("--set-env0=", env_file));
    a.push(format!("--cd={cwd}").into());
    if force == Force::Seccomp {
        a.push("--seccomp".into());
    }
    if mounts.iter().any(|m| m.dst().starts_with("/tmp")) {
        a.push("--private-tmp".into());
    }
    if no_network {
        a.push("--no-network".into());
    }
    for b in binds {
        a.push(format!("--bind={b}").into());
    }
    for m in mounts {
        let mut s = OsString::from("--build-mount=");
        s.push(m.to_arg());
        a.push(s);
    }
    for l in &overlay.lowers {
        a.push(prefixed("--lower=", l));
    }
    a.push(prefixed("--upper=", &overlay.upper));
    a.push(prefixed("--work=", &overlay.work));
    a.push(overlay.merged.clone().into());
    a.push("--".into());
    a.extend(argv.iter().map(OsString::from));
    a
}

/// apt's option to keep its download methods as root. apt drops privileges to the
/// `_apt` user for downloads and checks that it worked; the seccomp root emulation fakes
/// setuid/setgid/setgroups success without changing ids, so that check fails ("Could not
/// switch group", "Method http has died unexpectedly"). Like Charliecloud under
/// `--force=seccomp`, the RUN command is modified (not the image, e.g. with an
/// apt.conf.d file): the option goes right after each `apt-get` or `apt` command word.
/// The cache key covers the command as written plus the force mode, which together
/// determine this change.
pub const APT_NO_SANDBOX: &str = "APT::Sandbox::User=root";

/// Insert `-o APT::Sandbox::User=root` after apt commands in a RUN's argv: in the script
/// (last argument) of a shell-form RUN, after every `apt-get` or `apt` word (optionally
/// with a directory) that is in command position; in an exec-form RUN, after `argv[0]` if
/// it is apt-get or apt. Words are split at whitespace and at `;&|()`<>`. A word is in
/// command position at the start of the script, after a newline, `;`, `&`, `|`, `(` or a
/// backquote, after a shell keyword (`then`, `do`, `!`, ...), after variable assignments
/// (`DEBIAN_FRONTEND=noninteractive apt-get`), and after a command that runs its
/// arguments (`sudo`, `env`, `xargs`, `nice`, `timeout`, ..., with their `-` options and
/// numeric arguments). Other words are
/// left alone: `command -v apt-get`, `ls /usr/bin/apt-get` and `echo apt` run as written
/// (Charliecloud 0.38 changes any `apt-get` followed by whitespace, breaking such tests).
/// Returns the argv and whether it changed.
pub fn apt_no_sandbox(mut argv: Vec<String>, shell_form: bool) -> (Vec<String>, bool) {
    fn is_apt(word: &str) -> bool {
        let base = word.rsplit('/').next().unwrap_or(word);
        base == "apt-get" || base == "apt"
    }
    fn is_assignment(word: &str) -> bool {
        match word.split_once('=') {
            Some((name, _)) => {
                !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            None => false,
        }
    }
    const KEYWORDS: &[&str] = &[
        "if", "then", "else", "elif", "do", "while", "until", "!", "{", "time",
    ];
    const WRAPPERS: &[&str] = &[
        "sudo",
        "env",
        "xargs",
        "nice",
        "nohup",
        "exec",
        "eatmydata",
        "fakeroot",
        "stdbuf",
        "ionice",
        "chronic",
        "timeout",
    ];
    // A wrapper's numeric argument (`timeout 300`, `nice -n 10`, `timeout 5m`).
    fn is_number(word: &str) -> bool {
        let w = word.trim_end_matches(['s', 'm', 'h', 'd']);
        !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.')
    }
    if !shell_form {
        if argv.first().is_some_and(|a| is_apt(a)) {
            argv.splice(1..1, ["-o".to_string(), APT_NO_SANDBOX.to_string()]);
            return (argv, true);
        }
        return (argv, false);
    }
    let Some(script) = argv.last_mut() else {
        return (argv, false);
    };
    let mut out = String::with_capacity(script.len());
    let mut changed = false;
    let mut rest = script.as_str();
    let mut prev: Option<char> = None;
    let mut command_position = true;
    let mut after_wrapper = false;
    // The wrapper last seen, and whether its option just read takes the next word
    // (`sudo -u user apt-get`, `timeout -k 5 60 apt-get`).
    let mut wrapper = "";
    let mut option_argument = false;
    fn takes_argument(wrapper: &str, option: &str) -> bool {
        let opts: &[&str] = match wrapper {
            "sudo" => &["-u", "-g", "-h", "-p", "-C", "-D", "-U", "-r", "-t"],
            "timeout" => &["-k", "-s"],
            "nice" => &["-n"],
            "ionice" => &["-c", "-n", "-p"],
            "env" => &["-u", "-C"],
            "stdbuf" => &["-i", "-o", "-e"],
            "xargs" => &["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s"],
            _ => &[],
        };
        opts.contains(&option)
    }
    while !rest.is_empty() {
        let at_word_start = prev.is_none_or(|c| c.is_whitespace() || ";&|(`".contains(c));
        let word_len = rest
            .find(|c: char| c.is_whitespace() || ";&|()`<>".contains(c))
            .unwrap_or(rest.len());
        if at_word_start && word_len > 0 {
            let word = &rest[..word_len];
            out.push_str(word);
            if command_position {
                if is_apt(word) {
                    out.push_str(" -o ");
                    out.push_str(APT_NO_SANDBOX);
                    changed = true;
                    command_position = false;
                } else if WRAPPERS.contains(&word) {
                    after_wrapper = true;
                    wrapper = word;
                    option_argument = false;
                } else if after_wrapper && option_argument {
                    // The argument of the wrapper's option: still in command position.
                    option_argument = false;
                } else if after_wrapper && word.starts_with('-') {
                    option_argument = takes_argument(wrapper, word);
                } else if is_assignment(word)
                    || KEYWORDS.contains(&word)
                    || (after_wrapper && is_number(word))
                {
                    // Still in command position.
                } else {
                    command_position = false;
                    after_wrapper = false;
                }
            }
            prev = word.chars().last();
            rest = &rest[word_len..];
        } else {
            let c = rest.chars().next().expect("rest is not empty");
            if c == '\n' || ";&|(`".contains(c) {
                command_position = true;
                after_wrapper = false;
            } else if !c.is_whitespace() {
                // Part of a word that does not start a word (`>file`, `)x`).
                command_position = false;
                after_wrapper = false;
            }
            out.push(c);
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if changed {
        *script = out;
    }
    (argv, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines_naming_a_shell_are_told_apart() {
        for (script, want) in [
            ("#!/bin/sh\napt-get update\n", true),
            ("#! /bin/bash -e\n", true),
            ("#!/usr/bin/env -S zsh -f\n", true),
            ("#!/usr/bin/env dash\n", true),
            ("#!/usr/bin/python3\n", false),
            ("#!/usr/bin/env perl\n", false),
            ("#!/bin/shell\n", false),
        ] {
            assert_eq!(interpreter_is_shell(script), want, "{script}");
        }
    }

    fn shell(script: &str) -> (String, bool) {
        let (v, c) = apt_no_sandbox(vec!["/bin/sh".into(), "-c".into(), script.into()], true);
        (v[2].clone(), c)
    }

    #[test]
    fn apt_commands_get_the_no_sandbox_option() {
        assert_eq!(
            shell("apt-get update && apt-get install -y hello"),
            (
                "apt-get -o APT::Sandbox::User=root update && apt-get -o APT::Sandbox::User=root install -y hello"
                    .to_string(),
                true
            )
        );
        assert_eq!(
            shell("set -e;apt update\n/usr/bin/apt-get -q install x|cat").0,
            "set -e;apt -o APT::Sandbox::User=root update\n/usr/bin/apt-get -o APT::Sandbox::User=root -q install x|cat"
        );
    }

    #[test]
    fn apt_after_assignments_keywords_and_wrappers_gets_the_option() {
        let o = "-o APT::Sandbox::User=root";
        for (script, want) in [
            (
                "DEBIAN_FRONTEND=noninteractive apt-get install -y x",
                format!("DEBIAN_FRONTEND=noninteractive apt-get {o} install -y x"),
            ),
            (
                "if true; then apt-get update; fi",
                format!("if true; then apt-get {o} update; fi"),
            ),
            (
                "sudo -E apt install x",
                format!("sudo -E apt {o} install x"),
            ),
            (
                "echo x | xargs -r apt-get install",
                format!("echo x | xargs -r apt-get {o} install"),
            ),
            ("(apt-get update)", format!("(apt-get {o} update)")),
            (
                "timeout 5m nice -n 10 apt-get update",
                format!("timeout 5m nice -n 10 apt-get {o} update"),
            ),
            ("x=$(apt list)", format!("x=$(apt {o} list)")),
            (
                "sudo -u builder -E apt-get install x",
                format!("sudo -u builder -E apt-get {o} install x"),
            ),
            (
                "timeout -k 5 -s KILL 60 apt-get update",
                format!("timeout -k 5 -s KILL 60 apt-get {o} update"),
            ),
            ("sudo -s apt update", format!("sudo -s apt {o} update")),
        ] {
            assert_eq!(shell(script), (want, true), "{script}");
        }
    }

    #[test]
    fn apt_as_an_argument_is_left_alone() {
        for s in [
            "command -v apt-get >/dev/null && echo yes",
            "ls -l /usr/bin/apt-get; which apt",
            "echo apt-get",
            "[ -x /usr/bin/apt-get ] && echo yes",
            "dpkg -L apt | head",
            "cat >apt-get",
        ] {
            assert_eq!(shell(s), (s.to_string(), false), "{s}");
        }
        // The apt of `command -v apt-get && apt-get update` that runs does get it.
        assert_eq!(
            shell("command -v apt-get && apt-get update").0,
            "command -v apt-get && apt-get -o APT::Sandbox::User=root update"
        );
    }

    #[test]
    fn other_words_mentioning_apt_are_left_alone() {
        for s in [
            "apt-cache policy",
            "echo hi > /etc/apt/sources.list",
            "cat /etc/apt/apt.conf",
            "aptitude install x",
            "dpkg -i apt-get.deb",
            "true",
        ] {
            assert_eq!(shell(s), (s.to_string(), false), "{s}");
        }
    }

    #[test]
    fn exec_form_apt_gets_the_option_after_the_program() {
        let (v, c) = apt_no_sandbox(vec!["apt-get".into(), "update".into()], false);
        assert!(c);
        assert_eq!(v, ["apt-get", "-o", "APT::Sandbox::User=root", "update"]);
        let (v, c) = apt_no_sandbox(vec!["echo".into(), "apt-get".into()], false);
        assert!(!c);
        assert_eq!(v, ["echo", "apt-get"]);
    }

    fn heredoc(word: &str, content: &str) -> Heredoc {
        let df = dockerfile::parse(
            &format!("FROM scratch\nRUN {word}\n{content}EOF\n"),
            "Dockerfile",
        )
        .unwrap();
        match &df.instructions[1].kind {
            dockerfile::InstrKind::Run { heredocs, .. } => heredocs[0].clone(),
            k => panic!("{k:?}"),
        }
    }

    fn sh() -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into()]
    }

    #[test]
    fn shell_form_runs_through_the_image_shell_and_exec_form_as_given() {
        let (v, n) = command(
            &CmdForm::Shell("echo hi".into()),
            &[],
            &["/bin/bash".into(), "-e".into()],
            Force::None,
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(v, ["/bin/bash", "-e", "echo hi"]);
        assert!(n.is_empty());
        let (v, _) = command(
            &CmdForm::Exec(vec!["/x".into(), "a b".into()]),
            &[],
            &sh(),
            Force::Seccomp,
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(v, ["/x", "a b"]);
        assert_eq!(
            command(&CmdForm::Exec(vec![]), &[], &sh(), Force::None, || {
                unreachable!()
            }),
            Err(InvocationError::Empty)
        );
    }

    #[test]
    fn a_run_that_is_only_a_heredoc_runs_its_body_as_the_script() {
        let h = heredoc("<<EOF", "echo a\necho b\n");
        let (v, _) = command(
            &CmdForm::Shell("<<EOF".into()),
            &[h],
            &sh(),
            Force::None,
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(v, ["/bin/sh", "-c", "echo a\necho b\n"]);
    }

    #[test]
    fn a_heredoc_with_a_shebang_is_executed_as_a_file() {
        let h = heredoc("<<EOF", "#!/usr/bin/python3\nprint(1)\n");
        let (v, _) = command(
            &CmdForm::Shell("<<EOF".into()),
            std::slice::from_ref(&h),
            &sh(),
            Force::None,
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(v, ["/run/heredoc/EOF"]);
        assert_eq!(
            shebang_heredoc(&CmdForm::Shell("<<EOF".into()), std::slice::from_ref(&h)),
            Some((
                "/run/heredoc/EOF".into(),
                "#!/usr/bin/python3\nprint(1)\n".into()
            ))
        );
        // Not the whole command: the shell runs it.
        assert_eq!(
            shebang_heredoc(&CmdForm::Shell("cat <<EOF".into()), &[h]),
            None
        );
    }

    #[test]
    fn seccomp_mode_gives_apt_its_option_and_says_so() {
        let (v, n) = command(
            &CmdForm::Shell("apt-get update".into()),
            &[],
            &sh(),
            Force::Seccomp,
            || unreachable!(),
        )
        .unwrap();
        assert_eq!(v[2], "apt-get -o APT::Sandbox::User=root update");
        assert_eq!(n.len(), 1, "{n:?}");
    }

    #[test]
    fn fakeroot_mode_wraps_the_command_or_installs_fakeroot_or_fails() {
        let run = |f: Fakeroot| {
            command(
                &CmdForm::Shell("chown 1 /x".into()),
                &[],
                &sh(),
                Force::Fakeroot,
                || f,
            )
        };
        let (v, _) = run(Fakeroot::At("usr/bin/fakeroot".into())).unwrap();
        assert_eq!(v, ["/usr/bin/fakeroot", "/bin/sh", "-c", "chown 1 /x"]);
        let (v, n) = run(Fakeroot::Install).unwrap();
        assert_eq!(&v[..2], ["/bin/sh", "-c"]);
        assert!(v[2].contains("install -y -qq fakeroot"), "{}", v[2]);
        assert!(
            v[2].ends_with("exec /usr/bin/fakeroot \"$0\" \"$@\""),
            "{}",
            v[2]
        );
        assert_eq!(&v[3..], ["/bin/sh", "-c", "chown 1 /x"]);
        assert_eq!(n.len(), 1);
        assert_eq!(run(Fakeroot::Missing), Err(InvocationError::NoFakeroot));
    }

    #[test]
    fn run_environment_is_the_stage_then_host_proxies_then_defaults() {
        let stage = vec![
            ("A".to_string(), "1".to_string()),
            ("http_proxy".to_string(), "stage".to_string()),
        ];
        let host = |k: &str| match k {
            "http_proxy" => Some("host".to_string()),
            "NO_PROXY" => Some("localhost".to_string()),
            "HOME" => Some("/root".to_string()),
            _ => None,
        };
        let env = environment(stage.clone(), host, None);
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("http_proxy", "stage"),
            ("NO_PROXY", "localhost"),
            ("PATH", DEFAULT_PATH),
            ("FAKEROOTDONTTRYCHOWN", "1"),
            ("TAR_OPTIONS", "--no-same-owner"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        // The stage's own PATH and SOURCE_DATE_EPOCH win; the build's is added otherwise.
        let env = environment(
            vec![("PATH".into(), "/p".into())],
            |_| None,
            Some(1700000000),
        );
        assert_eq!(env[0], ("PATH".to_string(), "/p".to_string()));
        assert_eq!(
            env.last(),
            Some(&("SOURCE_DATE_EPOCH".to_string(), "1700000000".to_string()))
        );
        let env = environment(
            vec![("SOURCE_DATE_EPOCH".into(), "5".into())],
            |_| None,
            Some(1700000000),
        );
        assert_eq!(
            env.iter().filter(|(k, _)| k == "SOURCE_DATE_EPOCH").count(),
            1
        );
    }

    #[test]
    fn environment_file_quotes_every_value_once() {
        let env = vec![
            ("A".to_string(), "x y".to_string()),
            ("B".to_string(), "'q'".to_string()),
        ];
        assert_eq!(environment_file(&env), b"A='x y'\0B=''q''\0");
    }

    #[test]
    fn ch_run_arguments_put_options_then_overlay_then_command() {
        let o = Overlay {
            lowers: vec!["/l1".into(), "/l2".into()],
            upper: "/s/upper".into(),
            work: "/s/work".into(),
            merged: "/s/merged".into(),
        };
        let a = ch_run_args(
            Path::new("/s/env"),
            "/w",
            Force::Seccomp,
            &["/h:/g".to_string()],
            &[
                crate::run::BuildMount::Bind {
                    src: "/ctx".into(),
                    dst: "/src".into(),
                    writable: false,
                },
                crate::run::BuildMount::Tmpfs {
                    dst: "/t".into(),
                    options: "mode=1777".into(),
                },
            ],
            &o,
            true,
            &["/bin/sh".to_string(), "-c".to_string(), "true".to_string()],
        );
        let a: Vec<&str> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "-w",
                "-u0",
                "-g0",
                "--no-passwd",
                "--env-no-expand",
                "--unset-env=*",
                "--set-env0=/s/env",
                "--cd=/w",
                "--seccomp",
                "--no-network",
                "--bind=/h:/g",
                "--build-mount=bind-ro:/src:/ctx",
                "--build-mount=tmpfs:/t:mode=1777",
                "--lower=/l1",
                "--lower=/l2",
                "--upper=/s/upper",
                "--work=/s/work",
                "/s/merged",
                "--",
                "/bin/sh",
                "-c",
                "true",
            ]
        );
        let a = ch_run_args(Path::new("/e"), "/", Force::None, &[], &[], &o, false, &[]);
        assert!(!a.iter().any(|s| s == "--seccomp"));
        assert!(!a.iter().any(|s| s == "--private-tmp"));
        let in_tmp = [crate::run::BuildMount::Tmpfs {
            dst: "/tmp/x".into(),
            options: String::new(),
        }];
        let a = ch_run_args(
            Path::new("/e"),
            "/",
            Force::None,
            &[],
            &in_tmp,
            &o,
            false,
            &[],
        );
        assert!(a.iter().any(|s| s == "--private-tmp"));
    }
}
