//! ch-ssh: the command line that runs a command in a container on another host.
//!
//! `ch-ssh [SSH-OPTION...] HOST CMD [ARG...]` becomes
//! `ssh [SSH-OPTION...] HOST ch-run WORD... CMD [ARG...]`, the words coming from
//! `$CH_RUN_ARGS` split at spaces (not shell syntax). `ch-run --ch-ssh` binds the program
//! at the container's `/usr/bin/ch-ssh`. Pure logic; the binary only runs the result.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Why a ch-ssh command line can't be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshArgsError {
    #[error("CH_RUN_ARGS not set")]
    NoChRunArgs,
    #[error("CH_RUN_ARGS is empty: it must name at least the image")]
    EmptyChRunArgs,
    #[error("no HOST given")]
    NoHost,
    #[error("ssh option {0} needs an argument")]
    MissingOptionArgument(String),
}

/// ssh(1) options that take an argument (`-p 22` or `-p22`).
const SSH_OPTS_WITH_ARG: &[u8] = b"BbcDEeFIiJLlmOoPpQRSWw";

/// The argv (starting with `ssh`) for `ch-ssh` called with `args` (without its own
/// name) and `$CH_RUN_ARGS` = `ch_run_args` (`None`: unset).
pub fn ssh_argv(
    args: &[OsString],
    ch_run_args: Option<&OsStr>,
) -> Result<Vec<OsString>, SshArgsError> {
    let mut out: Vec<OsString> = vec!["ssh".into()];
    let mut i = 0;
    // ssh's own options, up to the host.
    while let Some(a) = args.get(i) {
        let b = a.as_bytes();
        if b == b"--" {
            out.push(a.clone());
            i += 1;
            break;
        }
        if b.len() < 2 || b[0] != b'-' {
            break;
        }
        out.push(a.clone());
        i += 1;
        // In a cluster like `-vp 22`, an option taking an argument ends the cluster; its
        // argument is the rest of the word or, if none, the next word.
        if let Some(pos) = b[1..].iter().position(|c| SSH_OPTS_WITH_ARG.contains(c)) {
            if pos + 2 == b.len() {
                let Some(v) = args.get(i) else {
                    return Err(SshArgsError::MissingOptionArgument(
                        String::from_utf8_lossy(b).into_owned(),
                    ));
                };
                out.push(v.clone());
                i += 1;
            }
        }
    }
    let Some(host) = args.get(i) else {
        return Err(SshArgsError::NoHost);
    };
    out.push(host.clone());
    i += 1;
    let words = ch_run_args.ok_or(SshArgsError::NoChRunArgs)?;
    out.push("ch-run".into());
    let before = out.len();
    out.extend(
        words
            .as_bytes()
            .split(|c| *c == b' ')
            .filter(|w| !w.is_empty())
            .map(|w| OsStr::from_bytes(w).to_os_string()),
    );
    if out.len() == before {
        return Err(SshArgsError::EmptyChRunArgs);
    }
    out.extend(args[i..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &str, run: Option<&str>) -> Result<String, String> {
        let args: Vec<OsString> = args.split_whitespace().map(OsString::from).collect();
        ssh_argv(&args, run.map(OsStr::new))
            .map_err(|e| e.to_string())
            .map(|v| {
                v.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
    }

    #[test]
    fn host_then_ch_run_words_then_the_command() {
        assert_eq!(
            argv("node7 -- echo hi", Some("--cd /x /data/img")).unwrap(),
            "ssh node7 ch-run --cd /x /data/img -- echo hi"
        );
        assert_eq!(
            argv("node7", Some("/img")).unwrap(),
            "ssh node7 ch-run /img"
        );
    }

    #[test]
    fn ch_run_args_split_at_single_spaces_only() {
        assert_eq!(
            argv("h true", Some("  -w   /img ")).unwrap(),
            "ssh h ch-run -w /img true"
        );
        // Tabs are not delimiters: the word is passed as is.
        let args = vec![OsString::from("h")];
        let v = ssh_argv(&args, Some(OsStr::new("a\tb"))).unwrap();
        assert_eq!(v[3], OsString::from("a\tb"));
    }

    #[test]
    fn ssh_options_with_arguments_are_kept_before_the_host() {
        assert_eq!(
            argv(
                "-o StrictHostKeyChecking=no -p 2222 -v h -- id",
                Some("/img")
            )
            .unwrap(),
            "ssh -o StrictHostKeyChecking=no -p 2222 -v h ch-run /img -- id"
        );
        // Attached argument; cluster ending in an option with an argument.
        assert_eq!(
            argv("-p2222 -vl alice h id", Some("/img")).unwrap(),
            "ssh -p2222 -vl alice h ch-run /img id"
        );
        // Cluster where the argument is attached after the option letter.
        assert_eq!(
            argv("-vlalice h id", Some("/img")).unwrap(),
            "ssh -vlalice h ch-run /img id"
        );
        // `--` ends ssh's options: the next word is the host even if it starts with '-'.
        assert_eq!(
            argv("-4 -- -odd-host id", Some("/img")).unwrap(),
            "ssh -4 -- -odd-host ch-run /img id"
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        assert_eq!(argv("h id", None).unwrap_err(), "CH_RUN_ARGS not set");
        assert_eq!(
            argv("h id", Some("   ")).unwrap_err(),
            "CH_RUN_ARGS is empty: it must name at least the image"
        );
        assert_eq!(argv("-v", Some("/img")).unwrap_err(), "no HOST given");
        assert_eq!(
            argv("-p", Some("/img")).unwrap_err(),
            "ssh option -p needs an argument"
        );
    }
}
