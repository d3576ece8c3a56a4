//! Helpers shared by the binaries: settings resolution and error rendering.

use std::path::PathBuf;

/// Resolve the storage directory: `-s DIR`, else `$CH_IMAGE_STORAGE`, else
/// `/var/tmp/$USER.grove`. Relative paths are made absolute against the current directory.
pub fn storage_dir(opt: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let p = match opt {
        Some(p) => p,
        None => match std::env::var_os("CH_IMAGE_STORAGE").filter(|v| !v.is_empty()) {
            Some(v) => {
                let p = PathBuf::from(v);
                if !p.is_absolute() {
                    anyhow::bail!("$CH_IMAGE_STORAGE: must be absolute path: {}", p.display());
                }
                p
            }
            None => crate::store::default_storage().map_err(|e| anyhow::anyhow!(e))?,
        },
    };
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Print an error chain as `error: ...`, its causes, and a hint if one applies.
pub fn report(err: &anyhow::Error) {
    eprintln!("error: {err}");
    let mut hint = None;
    for cause in err.chain() {
        if let Some(s) = cause.downcast_ref::<crate::store::StoreError>() {
            hint = hint.or_else(|| s.hint());
        }
        if let Some(r) = cause.downcast_ref::<crate::registry::RegistryError>() {
            hint = hint.or_else(|| r.hint());
        }
        if let Some(s) = cause.downcast_ref::<crate::store::export::ExportError>() {
            hint = hint.or_else(|| s.hint());
        }
    }
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
}

/// Verbosity from repeated -v and -q counts.
pub fn set_verbosity(verbose: u8, quiet: u8) {
    crate::log::set_level(verbose as i32 - quiet as i32);
}

/// Shell-style glob match supporting `*`, `?` and `[...]` (for image name globs).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']').filter(|e| *e > 1) else {
                    return !t.is_empty() && t[0] == '[' && go(&p[1..], &t[1..]);
                };
                let (neg, set) = match p[1] {
                    '!' | '^' => (true, &p[2..end]),
                    _ => (false, &p[1..end]),
                };
                let Some(&c) = t.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &t[1..])
            }
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_the_shell() {
        assert!(glob_match("foo*", "foo:latest"));
        assert!(glob_match("*:1.?", "a:1.0"));
        assert!(!glob_match("*:1.?", "a:1.10"));
        assert!(glob_match("[ab]x", "bx"));
        assert!(!glob_match("[!ab]x", "bx"));
        assert!(glob_match("a[0-9]", "a7"));
    }
}
