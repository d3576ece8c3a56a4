//! The container environment, computed as pure data from the host environment and the
//! `--set-env`/`--unset-env` options, following Charliecloud's rules (ch-run(1)):
//! default tweaks first (HOME, PATH, TMPDIR), then the options in command-line order, then
//! `CH_RUNNING`.
//!
//! Names and values are bytes: the host environment need not be UTF-8.

use super::error::RunError;

/// One environment variable.
pub type Var = (Vec<u8>, Vec<u8>);

/// An environment option, in command-line order, with files already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOp {
    /// Set variables (from `--set-env`/`--set-env0`; `from` names the file, or the
    /// option's value); `expand` is false after `--env-no-expand`.
    Set {
        vars: Vec<Var>,
        expand: bool,
        from: String,
    },
    /// `--unset-env=GLOB`.
    Unset { glob: Vec<u8> },
}

/// Where `--set-env` variables come from, before files are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// `--set-env=NAME=VALUE`.
    Var(Vec<u8>),
    /// `--set-env=FILE` (host path) with its delimiter.
    File { path: std::path::PathBuf, nul: bool },
    /// `--set-env` without argument: `/ch/environment` in the image.
    ImageDefault { nul: bool },
}

/// An environment option as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvArg {
    Set(EnvSource),
    Unset(Vec<u8>),
    NoExpand,
}

/// Parse one `NAME=VALUE` assignment. Single quotes around the whole value are stripped
/// when `strip_quotes` (newline-delimited input and command-line values).
pub fn parse_assignment(line: &[u8], strip_quotes: bool) -> Result<Var, &'static str> {
    let eq = line.iter().position(|&b| b == b'=').ok_or("no delimiter")?;
    let (name, value) = (&line[..eq], &line[eq + 1..]);
    if name.is_empty() {
        return Err("empty name");
    }
    let value =
        if strip_quotes && value.len() >= 2 && value[0] == b'\'' && value[value.len() - 1] == b'\''
        {
            &value[1..value.len() - 1]
        } else {
            value
        };
    Ok((name.to_vec(), value.to_vec()))
}

/// Parse a `--set-env` file's contents; `label` names it in errors.
pub fn parse_file(contents: &[u8], nul: bool, label: &str) -> Result<Vec<Var>, RunError> {
    let delim = if nul { 0u8 } else { b'\n' };
    let mut vars = Vec::new();
    for (i, line) in contents.split(|&b| b == delim).enumerate() {
        if line.is_empty() {
            continue;
        }
        if line.contains(&0) {
            // An environment string cannot hold one; dropping the variable would be silent.
            return Err(RunError::msg(format!(
                "can't parse variable: NUL byte in line (NUL-delimited files need --set-env0): {label}:{}",
                i + 1
            )));
        }
        // Quotes are stripped in both forms: the man page gives --set-env0 the same syntax
        // (Charliecloud 0.38 strips them too).
        let v = parse_assignment(line, true).map_err(|why| {
            RunError::msg(format!("can't parse variable: {why}: {label}:{}", i + 1))
        })?;
        vars.push(v);
    }
    Ok(vars)
}

/// Expand `$NAME` items of a colon-separated value from `env`; an item whose variable is
/// unset or empty is dropped together with its colon. A lone `$` names nothing and is
/// kept (`bar:$` stays `bar:$`, as in Charliecloud 0.38).
pub fn expand(value: &[u8], env: &[Var]) -> Vec<u8> {
    expand_items(value, env).join(&b':')
}

/// The items [`expand`] joins with colons.
fn expand_items<'a>(value: &'a [u8], env: &'a [Var]) -> Vec<&'a [u8]> {
    if !value.contains(&b'$') {
        return vec![value];
    }
    let mut items: Vec<&[u8]> = Vec::new();
    for item in value.split(|&b| b == b':') {
        if let Some(name) = item.strip_prefix(b"$").filter(|n| !n.is_empty()) {
            match get(env, name) {
                Some(v) if !v.is_empty() => items.push(v),
                _ => {}
            }
        } else {
            items.push(item);
        }
    }
    items
}

/// Largest environment `--set-env` may build, in bytes of `NAME=VALUE\0` strings (16
/// MiB): Linux execs at most 6 MiB of arguments and environment together. Each expansion
/// of `A=$A:$A` doubles `A`: 40 such lines, 324 bytes, asked for 2^40 bytes (ch-run
/// aborted, "memory allocation of 2147483647 bytes failed", under a 2 GB limit).
pub const MAX_ENV_BYTES: usize = 16 << 20;

/// Size of `NAME=VALUE\0`.
fn env_bytes(name: &[u8], value_len: usize) -> usize {
    name.len() + value_len + 2
}

/// The value of `name` in `env`.
pub fn get<'a>(env: &'a [Var], name: &[u8]) -> Option<&'a [u8]> {
    env.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Set (replace in place, or append) a variable.
pub fn set(env: &mut Vec<Var>, name: &[u8], value: Vec<u8>) {
    match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.to_vec(), value)),
    }
}

/// Inputs of the default tweaks.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// `--home` given: HOME becomes `/home/USER`.
    pub home_user: Option<Vec<u8>>,
    /// `PMIX_SERVER_TMPDIR` is set but that directory is not visible in the container
    /// (Slurm's spool is not bound): PMIx clients then fail to attach the server's shared
    /// data store and print `PMIX ERROR … gds_ds12_lock_pthread.c`. Selecting PMIx's `hash`
    /// data store, which asks the server over its socket instead, avoids it (docs/hpc.md).
    pub pmix_dir_hidden: bool,
}

/// Compute the container environment.
pub fn compute(
    host: Vec<Var>,
    defaults: &Defaults,
    ops: &[EnvOp],
    matches: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Result<Vec<Var>, RunError> {
    let mut env = host;
    // HOME: /home/$USER with --home (where the host home is bound); otherwise unset, as
    // the FAQ (11.2.6) describes: the host's path means nothing in the image, and a
    // made-up default would hide the problem until later.
    match &defaults.home_user {
        Some(u) => set(&mut env, b"HOME", [b"/home/".as_slice(), u].concat()),
        None => env.retain(|(k, _)| k.as_slice() != b"HOME"),
    }
    // PATH: append /bin if no entry is /bin (merged-/usr hosts, non-merged guests).
    if let Some(path) = get(&env, b"PATH") {
        if !path
            .split(|&b| b == b':')
            .any(|p| p == b"/bin" || p == b"/bin/")
        {
            let mut p = path.to_vec();
            if !p.is_empty() {
                p.push(b':');
            }
            p.extend_from_slice(b"/bin");
            set(&mut env, b"PATH", p);
        }
    }
    // TMPDIR is a host path; the host's temporary directory is /tmp inside.
    env.retain(|(n, _)| n != b"TMPDIR");
    // PMIx's shared-memory data store lives under the server's directory; when the image
    // cannot see it, use the data store that needs no shared files. A user's own choice
    // wins.
    if defaults.pmix_dir_hidden && get(&env, b"PMIX_MCA_gds").is_none() {
        crate::verbose!("environment: PMIX_MCA_gds=hash");
        set(&mut env, b"PMIX_MCA_gds", b"hash".to_vec());
    }
    let mut total: usize = env.iter().map(|(n, v)| env_bytes(n, v.len())).sum();
    for op in ops {
        match op {
            EnvOp::Set {
                vars,
                expand: ex,
                from,
            } => {
                for (n, v) in vars {
                    // Sized before it is built: an expansion may ask for any amount.
                    let items = if *ex {
                        expand_items(v, &env)
                    } else {
                        vec![&v[..]]
                    };
                    let len = items.iter().map(|i| i.len() + 1).sum::<usize>().max(1) - 1;
                    let old = get(&env, n).map_or(0, |o| env_bytes(n, o.len()));
                    let new_total = total - old + env_bytes(n, len);
                    if new_total > MAX_ENV_BYTES {
                        return Err(RunError::msg(format!(
                            "can't set variable {}: the environment would exceed {MAX_ENV_BYTES} \
                             bytes: {}",
                            crate::log::shown(&String::from_utf8_lossy(n)),
                            crate::log::shown(from),
                        )));
                    }
                    total = new_total;
                    let v = items.join(&b':');
                    // Charliecloud's -v line, which scripts parse.
                    crate::verbose!(
                        "environment: {}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(&v)
                    );
                    set(&mut env, n, v);
                }
            }
            EnvOp::Unset { glob } => env.retain(|(n, v)| {
                let unset = matches(glob, n);
                if unset {
                    crate::verbose!("environment: unset {}", String::from_utf8_lossy(n));
                    total -= env_bytes(n, v.len());
                }
                !unset
            }),
        }
    }
    set(&mut env, b"CH_RUNNING", b"Weird Al Yankovic".to_vec());
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: &str, x: &str) -> Var {
        (n.as_bytes().to_vec(), x.as_bytes().to_vec())
    }

    fn fnm(p: &[u8], n: &[u8]) -> bool {
        crate::run::sys::fnmatch(p, n)
    }

    /// [`super::compute`], which must succeed.
    fn compute(
        host: Vec<Var>,
        defaults: &Defaults,
        ops: &[EnvOp],
        matches: &dyn Fn(&[u8], &[u8]) -> bool,
    ) -> Vec<Var> {
        super::compute(host, defaults, ops, matches).expect("compute")
    }

    fn defaults() -> Defaults {
        Defaults {
            pmix_dir_hidden: false,
            home_user: None,
        }
    }

    #[test]
    fn assignment_table_from_man_page() {
        let env = vec![v("BAR", "bar")];
        let cases = [
            ("FOO=bar", "FOO", "bar"),
            ("FOO=bar=baz", "FOO", "bar=baz"),
            ("FOO=", "FOO", ""),
            ("FOO=$UNSET", "FOO", ""),
            ("FOO=baz:$UNSET:qux", "FOO", "baz:qux"),
            ("FOO=:bar:baz::", "FOO", ":bar:baz::"),
            ("FOO=''", "FOO", ""),
            ("FOO=''''", "FOO", "''"),
            ("FOO=\"bar\"", "FOO", "\"bar\""),
            ("FOO=$BAR baz:qux", "FOO", "qux"),
            ("FOO=$BAR:x", "FOO", "bar:x"),
            ("$FOO=bar", "$FOO", "bar"),
            ("FOO=bar:$", "FOO", "bar:$"),
            ("FOO=$", "FOO", "$"),
        ];
        for (line, name, value) in cases {
            let (n, val) = parse_assignment(line.as_bytes(), true).expect(line);
            assert_eq!(n, name.as_bytes(), "{line}");
            assert_eq!(
                String::from_utf8_lossy(&expand(&val, &env)),
                value,
                "{line}"
            );
        }
        assert_eq!(parse_assignment(b"FOO bar", true), Err("no delimiter"));
        assert_eq!(parse_assignment(b"=bar", true), Err("empty name"));
    }

    #[test]
    fn expansion_past_the_environment_bound_is_refused_before_it_is_built() {
        // 2^40 bytes asked for by 41 lines: refused once past MAX_ENV_BYTES.
        let mut text = b"A=x\n".to_vec();
        for _ in 0..40 {
            text.extend_from_slice(b"A=$A:$A\n");
        }
        let ops = [EnvOp::Set {
            vars: parse_file(&text, false, "bomb").expect("parse"),
            expand: true,
            from: "bomb".into(),
        }];
        let e = super::compute(vec![], &defaults(), &ops, &fnm).unwrap_err();
        assert_eq!(
            e.message(),
            format!(
                "can't set variable A: the environment would exceed {MAX_ENV_BYTES} bytes: bomb"
            )
        );
        // Up to the bound (32 bytes short), and again after an unset, values are built.
        let a = "x".repeat(MAX_ENV_BYTES / 4 - 10);
        let ops = [
            EnvOp::Set {
                vars: vec![v("A", &a), v("B", &a), v("C", &a)],
                expand: false,
                from: "f".into(),
            },
            EnvOp::Unset {
                glob: b"[BC]".to_vec(),
            },
            EnvOp::Set {
                vars: vec![v("B", "$A:$A:$A")],
                expand: true,
                from: "f".into(),
            },
        ];
        let env = compute(vec![], &defaults(), &ops, &fnm);
        assert_eq!(
            get(&env, b"B").map(<[u8]>::len),
            Some(3 * (MAX_ENV_BYTES / 4 - 10) + 2)
        );
    }

    #[test]
    fn file_errors_name_file_and_line() {
        let e = parse_file(b"A=1\n\nB\n", false, "/f").unwrap_err();
        assert_eq!(e.message(), "can't parse variable: no delimiter: /f:3");
        assert_eq!(
            parse_file(b"A=1\0B='x'\0C=''y''\0", true, "f").expect("ok"),
            vec![v("A", "1"), v("B", "x"), v("C", "'y'")]
        );
        let e = parse_file(b"A=1\nB=2\0C=3\n", false, "/e").unwrap_err();
        assert_eq!(
            e.message(),
            "can't parse variable: NUL byte in line (NUL-delimited files need --set-env0): /e:2"
        );
    }

    #[test]
    fn defaults_fix_home_path_tmpdir_and_set_ch_running() {
        let host = vec![
            v("PATH", "/usr/bin"),
            v("TMPDIR", "/scratch"),
            v("HOME", "/home/u"),
        ];
        let env = compute(host, &defaults(), &[], &fnm);
        assert_eq!(get(&env, b"PATH"), Some(b"/usr/bin:/bin".as_slice()));
        assert_eq!(get(&env, b"TMPDIR"), None);
        assert_eq!(get(&env, b"HOME"), None, "HOME is unset without --home");
        assert_eq!(
            get(&env, b"CH_RUNNING"),
            Some(b"Weird Al Yankovic".as_slice())
        );
        let env = compute(
            vec![v("PATH", "/bin:/usr/bin")],
            &Defaults {
                home_user: None,
                pmix_dir_hidden: false,
            },
            &[],
            &fnm,
        );
        assert_eq!(get(&env, b"PATH"), Some(b"/bin:/usr/bin".as_slice()));
        // --set-env can still give HOME a value.
        let env = compute(
            vec![v("HOME", "/home/u")],
            &defaults(),
            &[EnvOp::Set {
                vars: vec![v("HOME", "/opt/home")],
                expand: false,
                from: "f".into(),
            }],
            &fnm,
        );
        assert_eq!(get(&env, b"HOME"), Some(b"/opt/home".as_slice()));
        let env = compute(
            vec![],
            &Defaults {
                home_user: Some(b"alice".to_vec()),
                pmix_dir_hidden: false,
            },
            &[],
            &fnm,
        );
        assert_eq!(get(&env, b"HOME"), Some(b"/home/alice".as_slice()));
    }

    #[test]
    fn hidden_pmix_server_directory_selects_the_hash_data_store_unless_chosen() {
        let hidden = Defaults {
            home_user: None,
            pmix_dir_hidden: true,
        };
        let env = compute(vec![], &hidden, &[], &fnm);
        assert_eq!(get(&env, b"PMIX_MCA_gds"), Some(b"hash".as_slice()));
        // The user's own choice is kept.
        let env = compute(vec![v("PMIX_MCA_gds", "ds21")], &hidden, &[], &fnm);
        assert_eq!(get(&env, b"PMIX_MCA_gds"), Some(b"ds21".as_slice()));
        // --unset-env can still remove it.
        let ops = [EnvOp::Unset {
            glob: b"PMIX_*".to_vec(),
        }];
        let env = compute(vec![], &hidden, &ops, &fnm);
        assert_eq!(get(&env, b"PMIX_MCA_gds"), None);
        // A visible directory changes nothing.
        let env = compute(vec![], &defaults(), &[], &fnm);
        assert_eq!(get(&env, b"PMIX_MCA_gds"), None);
    }

    #[test]
    fn options_apply_in_order_and_ch_running_survives_unset_all() {
        let host = vec![
            v("A_1", "a"),
            v("B_1", "b"),
            v("C_1", "c"),
            v("PATH", "/bin"),
        ];
        let ops = [
            EnvOp::Unset {
                glob: b"!(A_*|B_*)".to_vec(),
            },
            EnvOp::Set {
                vars: vec![v("X", "$A_1:y")],
                expand: true,
                from: "f".into(),
            },
            EnvOp::Set {
                vars: vec![v("Y", "$A_1")],
                expand: false,
                from: "f".into(),
            },
        ];
        let env = compute(host, &defaults(), &ops, &fnm);
        let names: Vec<_> = env
            .iter()
            .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect();
        assert_eq!(names, ["A_1", "B_1", "X", "Y", "CH_RUNNING"]);
        assert_eq!(get(&env, b"X"), Some(b"a:y".as_slice()));
        assert_eq!(get(&env, b"Y"), Some(b"$A_1".as_slice()));
        let env = compute(
            vec![v("A", "1")],
            &defaults(),
            &[EnvOp::Unset {
                glob: b"*".to_vec(),
            }],
            &fnm,
        );
        assert_eq!(env, vec![v("CH_RUNNING", "Weird Al Yankovic")]);
    }
}
