//! `RUN --mount=...` and `ch-image build --secret ...` as data, in BuildKit's syntax:
//! [`parse`] reads one `--mount` value (after variable substitution) into a [`Mount`],
//! [`parse_secret`] one `--secret` value into a [`SecretSource`], [`target`] resolves a
//! mount's target against the working directory. Pure functions, unit-tested here;
//! [`super::exec`] prepares the host side of each mount (cache directories, context or
//! stage content, secret files) and hands them to `ch-run` (docs/dockerfile.md).
//!
//! Nothing here reads a secret's content: a [`SecretSource`] names where it is.

use std::path::PathBuf;

/// One `RUN --mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The target as written (`target=`, `dst=`, `destination=`); absolute or relative to
    /// the working directory. For a secret without one, `/run/secrets/ID`.
    pub target: String,
    pub kind: Kind,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `type=cache`: a directory kept across builds in the storage directory.
    Cache {
        /// `id=`, default: the target.
        id: String,
        sharing: Sharing,
        readonly: bool,
        /// `mode=` of the directory when created (default 0755).
        mode: u32,
        uid: u32,
        gid: u32,
        /// `from=`: a stage or image whose `source=` path fills a new cache directory.
        from: Option<String>,
        source: Option<String>,
    },
    /// `type=bind` (BuildKit's default type): context or stage content.
    Bind {
        /// `source=` (default: the root of the context or of `from`).
        source: String,
        /// `from=`: a stage or image instead of the context.
        from: Option<String>,
        /// `rw`/`readwrite`: writable, writes discarded.
        writable: bool,
    },
    /// `type=secret`.
    Secret {
        id: String,
        required: bool,
        /// `mode=` of the file (default 0400, as BuildKit).
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `type=tmpfs`.
    Tmpfs {
        /// `size=`, as tmpfs takes it (bytes, or with a `k`, `m` or `g` suffix).
        size: Option<String>,
    },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Cache { .. } => "cache",
            Kind::Bind { .. } => "bind",
            Kind::Secret { .. } => "secret",
            Kind::Tmpfs { .. } => "tmpfs",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Used by concurrent builds at once (default).
    Shared,
    /// A fresh directory when another build is using the cache.
    Private,
    /// Concurrent builds using the same cache wait for each other.
    Locked,
}

/// Why a `--mount` or `--secret` value can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("--mount: unknown type: {0} (cache, bind, secret or tmpfs)")]
    UnknownType(String),
    #[error("--mount: type={kind}: unknown option: {option}")]
    UnknownOption { kind: &'static str, option: String },
    #[error("--mount: type={kind}: {option} needs a value (e.g. {option}=...)")]
    NoValue { kind: &'static str, option: String },
    #[error("--mount: {option}: invalid value: {value}")]
    BadValue { option: String, value: String },
    #[error("--mount: type={0}: no target (target=DIR)")]
    NoTarget(&'static str),
    #[error("--mount: type=secret: no id and no target (id=ID)")]
    NoSecretId,
    #[error("--mount: target {0:?}: {1}")]
    BadTarget(String, &'static str),
    #[error("--mount: type=bind: source {0:?} climbs out of the context")]
    SourceOutside(String),
    #[error("--secret: {0}")]
    Secret(String),
}

/// Split a BuildKit CSV value into `(key, value)` fields: `key=value` or a bare `key`.
/// Keys are lowercased; values keep their case. Quoting is not supported (BuildKit's
/// fields rarely need it): a field is what lies between commas.
fn fields(s: &str) -> Vec<(String, Option<String>)> {
    s.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (f.trim().to_ascii_lowercase(), None),
        })
        .collect()
}

/// A boolean option: bare (`ro`) or `ro=true|false`.
fn boolean(key: &str, v: Option<&str>) -> Result<bool, MountError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(MountError::BadValue {
            option: key.to_string(),
            value: v.unwrap_or_default().to_string(),
        }),
    }
}

fn octal(key: &str, v: &str) -> Result<u32, MountError> {
    u32::from_str_radix(v.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| MountError::BadValue {
            option: key.to_string(),
            value: v.to_string(),
        })
}

fn number(key: &str, v: &str) -> Result<u32, MountError> {
    v.parse().map_err(|_| MountError::BadValue {
        option: key.to_string(),
        value: v.to_string(),
    })
}

/// A tmpfs size: digits with an optional `k`, `m`, `g` (any case, optional `b`/`ib`), as
/// the kernel's tmpfs `size=` takes it (lowercased, without the `b`).
fn tmpfs_size(v: &str) -> Result<String, MountError> {
    let lower = v.to_ascii_lowercase();
    let t = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let digits = t.trim_end_matches(['k', 'm', 'g']);
    let suffix = &t[digits.len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || suffix.len() > 1 {
        return Err(MountError::BadValue {
            option: "size".into(),
            value: v.to_string(),
        });
    }
    Ok(t.to_string())
}

/// Parse one `--mount` value (variables already substituted).
pub fn parse(value: &str) -> Result<Mount, MountError> {
    let fs = fields(value);
    let kind_name = fs
        .iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.clone().unwrap_or_default().to_ascii_lowercase())
        .unwrap_or_else(|| "bind".to_string());
    let kind: &'static str = match kind_name.as_str() {
        "cache" => "cache",
        "bind" => "bind",
        "secret" => "secret",
        "tmpfs" => "tmpfs",
        _ => return Err(MountError::UnknownType(kind_name)),
    };
    let mut target = None;
    let (mut id, mut source, mut from, mut size) = (None, None, None, None);
    let (mut readonly, mut writable, mut required) = (None, false, false);
    let mut sharing = Sharing::Shared;
    let (mut mode, mut uid, mut gid) = (None, 0, 0);
    for (k, v) in &fs {
        let unknown = || MountError::UnknownOption {
            kind,
            option: k.clone(),
        };
        let val = || {
            v.clone().ok_or_else(|| MountError::NoValue {
                kind,
                option: k.clone(),
            })
        };
        match (k.as_str(), kind) {
            ("type", _) => {}
            ("target" | "dst" | "destination", _) => target = Some(val()?),
            ("id", "cache" | "secret") => id = Some(val()?),
            ("source" | "src", "cache" | "bind") => source = Some(val()?),
            ("from", "cache" | "bind") => from = Some(val()?),
            ("readonly" | "ro", "cache" | "bind") => readonly = Some(boolean(k, v.as_deref())?),
            ("readwrite" | "rw", "bind") => writable = boolean(k, v.as_deref())?,
            ("sharing", "cache") => {
                sharing = match val()?.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(MountError::BadValue {
                            option: k.clone(),
                            value: val()?,
                        })
                    }
                }
            }
            ("mode", "cache" | "secret") => mode = Some(octal(k, &val()?)?),
            ("uid", "cache" | "secret") => uid = number(k, &val()?)?,
            ("gid", "cache" | "secret") => gid = number(k, &val()?)?,
            ("required", "secret") => required = boolean(k, v.as_deref())?,
            ("size", "tmpfs") => size = Some(tmpfs_size(&val()?)?),
            _ => return Err(unknown()),
        }
    }
    if kind == "bind" {
        if let Some(r) = readonly {
            writable = !r;
        }
    }
    let kind = match kind {
        "cache" => {
            let t = target.clone().ok_or(MountError::NoTarget("cache"))?;
            Kind::Cache {
                id: id.unwrap_or(t),
                sharing,
                readonly: readonly.unwrap_or(false),
                mode: mode.unwrap_or(0o755),
                uid,
                gid,
                from,
                source,
            }
        }
        "bind" => {
            let s = source.unwrap_or_else(|| ".".into());
            if from.is_none() && super::context::escapes(s.trim_start_matches('/')) {
                return Err(MountError::SourceOutside(s));
            }
            Kind::Bind {
                source: s,
                from,
                writable,
            }
        }
        "secret" => {
            let id = match (id, &target) {
                (Some(i), _) => i,
                (None, Some(t)) => t
                    .rsplit('/')
                    .find(|c| !c.is_empty())
                    .ok_or(MountError::NoSecretId)?
                    .to_string(),
                (None, None) => return Err(MountError::NoSecretId),
            };
            if target.is_none() {
                target = Some(format!("/run/secrets/{id}"));
            }
            Kind::Secret {
                id,
                required,
                mode: mode.unwrap_or(0o400),
                uid,
                gid,
            }
        }
        _ => Kind::Tmpfs { size },
    };
    let target = target.ok_or(MountError::NoTarget(kind.name()))?;
    if target.is_empty() {
        return Err(MountError::NoTarget(kind.name()));
    }
    Ok(Mount { target, kind })
}

/// The absolute, normalized container path of `target` for a RUN in `cwd`. Refuses `/`,
/// NUL and `:` (the `ch-run --build-mount` separator).
pub fn target(target: &str, cwd: &str) -> Result<String, MountError> {
    if target.contains('\0') {
        return Err(MountError::BadTarget(target.into(), "contains a NUL byte"));
    }
    if target.contains(':') {
        return Err(MountError::BadTarget(target.into(), "contains a `:`"));
    }
    let abs = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", cwd.trim_end_matches('/'), target)
    };
    let n = super::exec::normalize_abs(&abs);
    if n == "/" {
        return Err(MountError::BadTarget(target.into(), "can't mount over /"));
    }
    Ok(n)
}

/// Where a `--secret`'s content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    File(PathBuf),
    Env(String),
}

/// One `ch-image build --secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub id: String,
    pub from: SecretFrom,
}

/// Parse one `--secret` value as BuildKit does: `id=ID,src=FILE` (also `source=`),
/// `id=ID,env=VAR`, with an optional `type=file|env`; `id=ID` alone (or `env=VAR`
/// alone) reads environment variable ID (VAR) if `env_set` says it is set, else file ID.
pub fn parse_secret(
    value: &str,
    env_set: impl Fn(&str) -> bool,
) -> Result<SecretSource, MountError> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut ty = None;
    for (k, v) in fields(value) {
        let v = v.ok_or_else(|| MountError::Secret(format!("{k}: needs a value ({k}=...)")))?;
        match k.as_str() {
            "id" => id = Some(v),
            "src" | "source" => src = Some(v),
            "env" => env = Some(v),
            "type" => ty = Some(v.to_ascii_lowercase()),
            _ => return Err(MountError::Secret(format!("unknown option: {k}"))),
        }
    }
    let id = id
        .or_else(|| env.clone())
        .or_else(|| {
            src.as_deref().and_then(|s| {
                std::path::Path::new(s)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
        })
        .filter(|i| !i.is_empty())
        .ok_or_else(|| MountError::Secret(format!("no id: {value:?} (id=ID,src=FILE)")))?;
    let from = match (ty.as_deref(), src, env) {
        (Some("file") | None, Some(s), None) => SecretFrom::File(PathBuf::from(s)),
        (Some("env") | None, None, Some(e)) => SecretFrom::Env(e),
        (Some("env"), Some(s), None) => SecretFrom::Env(s),
        (None, None, None) if env_set(&id) => SecretFrom::Env(id.clone()),
        (Some("env"), None, None) => SecretFrom::Env(id.clone()),
        (Some("file") | None, None, None) => SecretFrom::File(PathBuf::from(&id)),
        (Some(t), _, _) if t != "file" && t != "env" => {
            return Err(MountError::Secret(format!(
                "unknown type: {t} (file or env)"
            )))
        }
        _ => {
            return Err(MountError::Secret(format!(
                "{id}: give either src=FILE or env=VAR, not both"
            )))
        }
    };
    Ok(SecretSource { id, from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount_takes_buildkit_options_and_defaults_its_id_to_the_target() {
        let m = parse("type=cache,target=/var/cache/apt,sharing=locked").unwrap();
        assert_eq!(m.target, "/var/cache/apt");
        assert_eq!(
            m.kind,
            Kind::Cache {
                id: "/var/cache/apt".into(),
                sharing: Sharing::Locked,
                readonly: false,
                mode: 0o755,
                uid: 0,
                gid: 0,
                from: None,
                source: None,
            }
        );
        let m =
            parse("type=cache,id=pip,dst=/root/.cache,ro,mode=0700,uid=0,gid=0,sharing=private")
                .unwrap();
        assert!(matches!(
            m.kind,
            Kind::Cache { ref id, sharing: Sharing::Private, readonly: true, mode: 0o700, .. } if id == "pip"
        ));
    }

    #[test]
    fn bind_is_the_default_type_read_only_with_the_context_root_as_source() {
        let m = parse("target=/src").unwrap();
        assert_eq!(
            m.kind,
            Kind::Bind {
                source: ".".into(),
                from: None,
                writable: false
            }
        );
        let m = parse("type=bind,source=a/b,target=/x,rw").unwrap();
        assert!(matches!(m.kind, Kind::Bind { writable: true, .. }));
        let m = parse("type=bind,src=a,target=/x,readwrite=true,from=build").unwrap();
        assert!(
            matches!(m.kind, Kind::Bind { writable: true, from: Some(ref f), .. } if f == "build")
        );
        let m = parse("type=bind,target=/x,ro=false").unwrap();
        assert!(matches!(m.kind, Kind::Bind { writable: true, .. }));
    }

    #[test]
    fn bind_source_climbing_out_of_the_context_is_refused() {
        assert_eq!(
            parse("type=bind,source=../etc,target=/x"),
            Err(MountError::SourceOutside("../etc".into()))
        );
        assert!(parse("type=bind,source=a/../../b,target=/x").is_err());
        // Within a stage, `..` is resolved inside the stage's tree.
        assert!(parse("type=bind,source=a/../b,target=/x").is_ok());
    }

    #[test]
    fn secret_target_defaults_to_run_secrets_and_id_to_the_target_name() {
        let m = parse("type=secret,id=tok").unwrap();
        assert_eq!(m.target, "/run/secrets/tok");
        assert_eq!(
            m.kind,
            Kind::Secret {
                id: "tok".into(),
                required: false,
                mode: 0o400,
                uid: 0,
                gid: 0
            }
        );
        let m = parse("type=secret,target=/etc/key,required,mode=0444").unwrap();
        assert!(
            matches!(m.kind, Kind::Secret { ref id, required: true, mode: 0o444, .. } if id == "key")
        );
        assert_eq!(parse("type=secret"), Err(MountError::NoSecretId));
    }

    #[test]
    fn tmpfs_takes_a_size() {
        let m = parse("type=tmpfs,target=/t,size=64M").unwrap();
        assert_eq!(
            m.kind,
            Kind::Tmpfs {
                size: Some("64m".into())
            }
        );
        assert!(parse("type=tmpfs,target=/t,size=lots").is_err());
        assert!(parse("type=tmpfs,target=/t,size=1kg").is_err());
        assert_eq!(
            parse("type=tmpfs,target=/t,size=1048576").unwrap().kind,
            Kind::Tmpfs {
                size: Some("1048576".into())
            }
        );
    }

    #[test]
    fn unknown_types_and_options_are_named() {
        assert_eq!(
            parse("type=ssh,target=/x"),
            Err(MountError::UnknownType("ssh".into()))
        );
        let e = parse("type=cache,target=/x,colour=red").unwrap_err();
        assert_eq!(e.to_string(), "--mount: type=cache: unknown option: colour");
        // An option of another type is unknown to this one.
        assert!(parse("type=tmpfs,target=/x,id=a").is_err());
        assert!(parse("type=bind,target=/x,sharing=locked").is_err());
        assert!(parse("type=cache,target=/x,sharing=sometimes").is_err());
        assert!(parse("type=cache,target=/x,mode=999").is_err());
        assert!(parse("type=cache,target").is_err());
        assert_eq!(parse("type=cache"), Err(MountError::NoTarget("cache")));
        assert_eq!(
            parse("type=tmpfs,size=1m"),
            Err(MountError::NoTarget("tmpfs"))
        );
    }

    #[test]
    fn targets_are_made_absolute_against_the_working_directory() {
        assert_eq!(target("cache", "/src").unwrap(), "/src/cache");
        assert_eq!(target("/a/./b/../c/", "/w").unwrap(), "/a/c");
        assert!(target("/", "/w").is_err());
        assert!(target("..", "/").is_err());
        assert!(target("/a:b", "/").is_err());
    }

    #[test]
    fn secrets_come_from_a_file_or_an_environment_variable() {
        let none = |_: &str| false;
        assert_eq!(
            parse_secret("id=tok,src=/run/t", none).unwrap(),
            SecretSource {
                id: "tok".into(),
                from: SecretFrom::File("/run/t".into())
            }
        );
        assert_eq!(
            parse_secret("id=tok,env=TOKEN", none).unwrap().from,
            SecretFrom::Env("TOKEN".into())
        );
        assert_eq!(
            parse_secret("id=TOKEN", |v| v == "TOKEN").unwrap().from,
            SecretFrom::Env("TOKEN".into())
        );
        assert_eq!(
            parse_secret("id=tok,type=env", none).unwrap().from,
            SecretFrom::Env("tok".into())
        );
        assert_eq!(
            parse_secret("src=/a/key.pem", none).unwrap().id,
            "key.pem".to_string()
        );
        assert!(parse_secret("id=a,src=f,env=E", none).is_err());
        assert!(parse_secret("id=a,type=ssh", none).is_err());
        assert!(parse_secret("id=a,colour=red", none).is_err());
        assert!(parse_secret("", none).is_err());
    }
}
