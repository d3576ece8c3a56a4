//! Registries: pull images into the store and push them out, over the OCI distribution
//! protocol (docs/registry.md).
//!
//! Owns the network side: [`client`] speaks HTTP(S) with token and basic authentication,
//! [`pull`] downloads and verifies blobs into
//! `STORAGE/dlcache/` then unpacks layers through the store's import pieces, [`push`] exports
//! an image as one layer. The documents (manifests, indexes, configs, digests, platforms)
//! are [`crate::oci`]'s, shared with the store's OCI layouts. The store itself never does
//! HTTP.
//!
//! Invariant: nothing from a registry reaches the store unverified: every manifest fetched
//! by digest, config and layer is checked against its sha256 digest first, and image refs
//! change only after the whole image is written.

pub mod client;
mod connect;
pub mod pull;
pub mod push;

use crate::error::IoError;
use std::path::PathBuf;
use std::time::Duration;

use crate::reference::Reference;

pub use client::Client;

/// Docker Hub's registry host, the default.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Errors of registry operations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("can't {action} {url}")]
    Http {
        action: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{action} {url}: HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        action: &'static str,
        url: String,
        status: u16,
        detail: Option<String>,
    },
    #[error("image not found in registry: {0}")]
    NotFound(String),
    #[error("{url}: authentication required or refused (HTTP 401)")]
    Unauthorized { url: String },
    #[error("authentication: {0}")]
    Auth(String),
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("can't download {what}")]
    Download {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] crate::oci::DocumentError),
    #[error("requested architecture {wanted} not available; available: {}", available.join(" "))]
    NoArch {
        wanted: String,
        available: Vec<String>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("CA certificates {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("can't unpack layer {layer}")]
    Layer {
        layer: String,
        #[source]
        source: crate::store::import::ImportError,
    },
    #[error(transparent)]
    Import(#[from] crate::store::import::ImportError),
    #[error(transparent)]
    Export(#[from] crate::store::export::ExportError),
    #[error(transparent)]
    Oci(#[from] crate::store::oci::OciError),
    #[error(transparent)]
    Git(#[from] crate::store::GitError),
    #[error(transparent)]
    Read(#[from] crate::store::ReadError),
    #[error("{action} {url}: no complete answer within {secs} s (deadline set by {var})")]
    Deadline {
        action: &'static str,
        url: String,
        secs: u64,
        var: &'static str,
    },
    #[error("{action} {url}: nothing received for {secs} s ({var}){}", progress(*received, *expected))]
    Stalled {
        action: &'static str,
        url: String,
        /// Bytes of the body received before the stall.
        received: u64,
        /// Bytes the body should have: its `Content-Length`, else the size declared for it.
        expected: Option<u64>,
        secs: u64,
        var: &'static str,
    },
    #[error("{what}: longer than the {declared} bytes declared for it{}", sent.map(|n| format!(" (the registry announced {n})")).unwrap_or_default())]
    Longer {
        what: String,
        declared: u64,
        /// The `Content-Length` of the answer, if it said more than declared.
        sent: Option<u64>,
    },
    #[error("{action} {url}")]
    Interrupted {
        action: &'static str,
        url: String,
        #[source]
        source: crate::interrupt::Interrupted,
    },
    #[error("push to {dest} incomplete: {done}")]
    PushIncomplete {
        dest: String,
        done: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("refusing {what}: {reason}")]
    Refused { what: String, reason: String },
    #[error(
        "{method} {url}: HTTP {status}: the registry asks to wait {secs} s before trying \
         again (Retry-After), more than {var} allows ({max} s)"
    )]
    RetryAfter {
        method: String,
        url: String,
        status: u16,
        /// The wait asked for, rounded up.
        secs: u64,
        max: u64,
        var: &'static str,
    },
    #[error("{action} {url}: no connection within {secs} s ({var})")]
    ConnectTimeout {
        action: &'static str,
        url: String,
        secs: u64,
        var: &'static str,
    },
    #[error("{what}: larger than the limit of {limit} bytes ({var})")]
    TooBig {
        what: String,
        limit: u64,
        var: &'static str,
    },
    #[error("{var}: invalid value {value:?} (expected {expected})")]
    Setting {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// `, after R of E bytes` for a stall error (`after R bytes` if E is unknown; nothing if
/// nothing came, not even the headers).
fn progress(received: u64, expected: Option<u64>) -> String {
    match (received, expected) {
        (0, None) => String::new(),
        (_, Some(e)) => format!(", after {received} of {e} bytes"),
        (_, None) => format!(", after {received} bytes"),
    }
}

impl RegistryError {
    /// The message with its causes, `: `-separated (for errors reported inside another
    /// error's text, such as a Dockerfile location).
    pub fn full_message(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    /// A hint for the user, printed after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::Http { source, .. } if is_tls_error(source) => {
                Some(
                "for a registry with a self-signed certificate, set SSL_CERT_FILE to its CA, or use --tls-no-verify".into(),
            )
            }
            RegistryError::Unauthorized { .. } => Some(
                "use --auth (or CH_IMAGE_AUTH=yes) with CH_IMAGE_USERNAME and CH_IMAGE_PASSWORD".into(),
            ),
            RegistryError::NotFound(_) => Some("check the name and tag; `ch-image list IMAGE` shows what the registry has".into()),
            RegistryError::Status { status: 429, .. } => Some(
                "the registry limits how often it may be asked (HTTP 429): wait, or authenticate (--auth) for a higher limit".into(),
            ),
            RegistryError::Stalled { .. } => Some(format!(
                "the server stopped sending; try again later, or set {READ_TIMEOUT_VAR} to wait longer"
            )),
            RegistryError::PushIncomplete { source, .. } => source.hint(),
            RegistryError::RetryAfter { secs, var, .. } => Some(format!(
                "try again later, or set {var} to {secs} (or more) to wait as long as the registry asks"
            )),
            RegistryError::ConnectTimeout { var, .. } => Some(format!(
                "check the registry's host and port, and the network (a firewall that drops packets looks like this); set {var} to wait longer"
            )),
            _ => None,
        }
    }
}

/// Whether `e` is a TLS failure: ureq's own TLS errors, or a certificate rustls refused
/// during the handshake (which reaches ureq inside an I/O error).
fn is_tls_error(e: &ureq::Error) -> bool {
    let refused_certificate = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
    };
    match e {
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => true,
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(refused_certificate),
        _ => false,
    }
}

/// Text that came from a registry (error codes and messages, header values, names it
/// lists), made safe to print: control characters (C0, DEL, C1), which could move the
/// cursor, erase lines or retitle the terminal, and the bidirectional-override characters,
/// which could reorder what is shown, become `\u{..}` escapes (`\n`, `\r`, `\t` as such); a
/// backslash becomes `\\`, so an escape in the output always stands for one in the input.
/// Everything else, non-ASCII text included, is kept.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// The architectures index `idx` offers ([`crate::oci::Index::archs`]), escaped for the
/// terminal.
pub fn index_archs(idx: &crate::oci::Index) -> Vec<String> {
    idx.archs().iter().map(|a| escape(a)).collect()
}

/// Seconds a manifest, token or small request may take in all, and the base of a blob's
/// deadline.
pub const DEADLINE_VAR: &str = "CH_IMAGE_REGY_DEADLINE";
/// Bytes per second a blob download (or upload) must average at least: each one's deadline
/// is the base deadline plus its declared size divided by this.
pub const MIN_RATE_VAR: &str = "CH_IMAGE_REGY_MIN_RATE";
/// Seconds a request may wait for the next bytes of an answer (headers or body) before it
/// is given up.
pub const READ_TIMEOUT_VAR: &str = "CH_IMAGE_REGY_READ_TIMEOUT";
/// Longest wait a `Retry-After` header (HTTP 429 or 503) may ask for before the retry it
/// delays; a longer one fails the request.
pub const RETRY_AFTER_MAX_VAR: &str = "CH_IMAGE_REGY_RETRY_AFTER_MAX";
/// Seconds a connection to a registry (or an `ADD URL` server) may take to open.
pub const CONNECT_TIMEOUT_VAR: &str = "CH_IMAGE_REGY_CONNECT_TIMEOUT";
/// Largest `ADD URL` download.
pub const ADD_MAX_VAR: &str = "CH_IMAGE_ADD_MAX_SIZE";
/// Default of [`DEADLINE_VAR`], seconds.
pub const DEFAULT_DEADLINE: u64 = 300;
/// Default of [`READ_TIMEOUT_VAR`], seconds.
pub const DEFAULT_READ_TIMEOUT: u64 = 120;
/// Default of [`RETRY_AFTER_MAX_VAR`], seconds.
pub const DEFAULT_RETRY_AFTER_MAX: u64 = 60;
/// Default of [`CONNECT_TIMEOUT_VAR`], seconds.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 30;
/// Default of [`MIN_RATE_VAR`], bytes per second (64 KiB/s).
pub const DEFAULT_MIN_RATE: u64 = 64 << 10;
/// Default of [`ADD_MAX_VAR`], bytes (4 GiB).
pub const DEFAULT_ADD_MAX: u64 = 4 << 30;
/// Largest layer size a manifest may declare (1 TiB); larger is refused before any
/// download.
pub const MAX_LAYER_SIZE: u64 = 1 << 40;

/// Deadlines of registry requests, from [`DEADLINE_VAR`] and [`MIN_RATE_VAR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Of a request with a small body (manifest, token, config, upload start), and the base
    /// of a blob's.
    pub deadline: Duration,
    /// A blob's deadline grows by one second per this many bytes of its size.
    pub min_rate: u64,
    /// Longest wait for the next bytes of an answer.
    pub read_timeout: Duration,
    /// Longest `Retry-After` wait honoured (zero: none).
    pub retry_after_max: Duration,
    /// Longest wait for a connection to open.
    pub connect_timeout: Duration,
}

impl Limits {
    pub fn from_env() -> Result<Limits, RegistryError> {
        Self::from_env_with(&|k| std::env::var(k).ok())
    }

    fn from_env_with(env: &dyn Fn(&str) -> Option<String>) -> Result<Limits, RegistryError> {
        let seconds =
            |var: &str| [DEADLINE_VAR, READ_TIMEOUT_VAR, CONNECT_TIMEOUT_VAR].contains(&var);
        let positive = |var: &'static str, default: u64, expected: &'static str| match env(var)
            .filter(|v| !v.is_empty())
        {
            None => Ok(default),
            Some(v) => parse_size(&v)
                .filter(|n| *n > 0)
                .filter(|_| !seconds(var) || v.trim().bytes().all(|b| b.is_ascii_digit()))
                .ok_or(RegistryError::Setting {
                    var,
                    value: v,
                    expected,
                }),
        };
        Ok(Limits {
            deadline: Duration::from_secs(positive(
                DEADLINE_VAR,
                DEFAULT_DEADLINE,
                "a positive number of seconds",
            )?),
            min_rate: positive(
                MIN_RATE_VAR,
                DEFAULT_MIN_RATE,
                "a positive number of bytes per second, suffix k, M or G allowed",
            )?,
            read_timeout: Duration::from_secs(positive(
                READ_TIMEOUT_VAR,
                DEFAULT_READ_TIMEOUT,
                "a positive number of seconds",
            )?),
            connect_timeout: Duration::from_secs(positive(
                CONNECT_TIMEOUT_VAR,
                DEFAULT_CONNECT_TIMEOUT,
                "a positive number of seconds",
            )?),
            retry_after_max: Duration::from_secs(
                match env(RETRY_AFTER_MAX_VAR).filter(|v| !v.is_empty()) {
                    None => DEFAULT_RETRY_AFTER_MAX,
                    Some(v) => v
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|_| v.trim().bytes().all(|b| b.is_ascii_digit()))
                        .ok_or(RegistryError::Setting {
                            var: RETRY_AFTER_MAX_VAR,
                            value: v,
                            expected: "a number of seconds (0: never wait)",
                        })?,
                },
            ),
        })
    }

    /// The deadline of a transfer of `size` bytes.
    pub fn for_size(&self, size: u64) -> Duration {
        self.deadline
            .saturating_add(Duration::from_secs(size / self.min_rate.max(1)))
    }
}

/// The `ADD URL` size limit, from [`ADD_MAX_VAR`].
pub fn add_max_size() -> Result<u64, RegistryError> {
    match std::env::var(ADD_MAX_VAR).ok().filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_ADD_MAX),
        Some(v) => parse_size(&v).ok_or(RegistryError::Setting {
            var: ADD_MAX_VAR,
            value: v,
            expected: "a number of bytes, suffix k, M, G or T allowed",
        }),
    }
}

/// A size: decimal digits with an optional binary suffix `k`, `M`, `G` or `T` (any case);
/// `None` if malformed or beyond `u64`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        (i, 't' | 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// Which architecture to ask a registry for (`--arch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arch {
    /// The host's, translated to registry names (default).
    Host,
    /// Whatever the registry serves first: bypass architecture selection.
    Yolo,
    /// A registry architecture name such as `arm64/v8`.
    Named(String),
}

impl Arch {
    pub fn parse(s: &str) -> Arch {
        match s {
            "host" => Arch::Host,
            "yolo" => Arch::Yolo,
            other => Arch::Named(other.to_string()),
        }
    }

    /// The wanted architecture name, or `None` for yolo.
    pub fn wanted(&self) -> Option<String> {
        match self {
            Arch::Host => Some(crate::oci::host_arch()),
            Arch::Yolo => None,
            Arch::Named(n) => Some(n.clone()),
        }
    }
}

/// Settings of registry operations: the global options of `ch-image` and their
/// environment variables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub arch: Arch,
    /// Authenticate even when not required (`--auth`, `CH_IMAGE_AUTH=yes`).
    pub auth: bool,
    /// Don't verify TLS certificates (`--tls-no-verify`).
    pub tls_no_verify: bool,
    /// Download everything again, ignoring the download cache and an image already
    /// pulled (`--always-download`, and `pull --no-cache`).
    pub always_download: bool,
}

impl Settings {
    /// Defaults, with `CH_IMAGE_AUTH` read from the environment.
    pub fn from_env() -> Settings {
        Settings {
            arch: Arch::Host,
            auth: std::env::var("CH_IMAGE_AUTH").as_deref() == Ok("yes"),
            tls_no_verify: false,
            always_download: false,
        }
    }
}

/// Where an image lives: registry host and port, repository path, tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    /// Repository name, e.g. `library/alpine`.
    pub repo: String,
    /// Tag or `sha256:HEX`.
    pub version: String,
    /// Plain HTTP instead of HTTPS.
    pub http: bool,
}

impl Remote {
    /// Resolve a reference as Charliecloud does: no host means Docker Hub, or
    /// `$CH_REGY_DEFAULT_HOST` (with `$CH_REGY_DEFAULT_PORT`, default 443, and
    /// `$CH_REGY_PATH_PREFIX` prepended to the path); Docker Hub names without a path get
    /// `library/`. `$CH_IMAGE_REGY_INSECURE` (a Grove extension: comma-separated `HOST` or
    /// `HOST:PORT`) names registries spoken to over plain HTTP.
    pub fn resolve(r: &Reference) -> Remote {
        Self::resolve_with(r, &|k| std::env::var(k).ok())
    }

    fn resolve_with(r: &Reference, env: &dyn Fn(&str) -> Option<String>) -> Remote {
        let mut path = r.path.clone();
        let (host, port) = match &r.host {
            Some(h) => (h.clone(), r.port.unwrap_or(443)),
            None => match env("CH_REGY_DEFAULT_HOST").filter(|h| !h.is_empty()) {
                Some(h) => {
                    let port = env("CH_REGY_DEFAULT_PORT")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(443);
                    if let Some(prefix) = env("CH_REGY_PATH_PREFIX").filter(|p| !p.is_empty()) {
                        let mut p: Vec<String> = prefix
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .map(str::to_string)
                            .collect();
                        p.extend(path);
                        path = p;
                    }
                    (h, port)
                }
                None => (DOCKER_HUB.to_string(), 443),
            },
        };
        if host == DOCKER_HUB && path.is_empty() {
            path.push("library".into());
        }
        path.push(r.name.clone());
        let version = match (&r.tag, &r.digest) {
            (_, Some(d)) => format!("sha256:{d}"),
            (Some(t), None) => t.clone(),
            (None, None) => "latest".into(),
        };
        let hostport = format!("{host}:{port}");
        let http = env("CH_IMAGE_REGY_INSECURE")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .any(|e| e == host || e == hostport)
            })
            .unwrap_or(false);
        Remote {
            host,
            port,
            repo: path.join("/"),
            version,
            http,
        }
    }

    /// `scheme://host:port`.
    pub fn origin(&self) -> String {
        let scheme = if self.http { "http" } else { "https" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.version.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}:{}/{}{sep}{}",
            self.host, self.port, self.repo, self.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(s: &str, env: &[(&str, &str)]) -> Remote {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Remote::resolve_with(&Reference::parse(s).unwrap(), &|k| {
            env.iter().find(|(e, _)| e == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn single_names_go_to_docker_hub_library() {
        let r = resolve("alpine:3.17", &[]);
        assert_eq!(
            r.to_string(),
            "registry-1.docker.io:443/library/alpine:3.17"
        );
        assert_eq!(r.origin(), "https://registry-1.docker.io:443");
        let r = resolve("foo/bar", &[]);
        assert_eq!(r.repo, "foo/bar");
        assert_eq!(r.version, "latest");
    }

    #[test]
    fn default_host_port_and_prefix_come_from_environment() {
        let env = [
            ("CH_REGY_DEFAULT_HOST", "reg.example"),
            ("CH_REGY_DEFAULT_PORT", "5000"),
            ("CH_REGY_PATH_PREFIX", "mirror/hub"),
        ];
        let r = resolve("alpine", &env);
        assert_eq!(r.to_string(), "reg.example:5000/mirror/hub/alpine:latest");
        // An explicit host ignores them.
        let r = resolve("localhost:7000/x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &env);
        assert_eq!(r.host, "localhost");
        assert_eq!(r.port, 7000);
        assert_eq!(r.repo, "x/y");
        assert!(r.version.starts_with("sha256:"));
    }

    #[test]
    fn registry_text_is_escaped_for_the_terminal() {
        assert_eq!(escape("plain text, ünïcode"), "plain text, ünïcode");
        assert_eq!(
            escape("\u{1b}]0;TITLE\u{7}\u{1b}[31mred\u{1b}[2K"),
            "\\u{1b}]0;TITLE\\u{7}\\u{1b}[31mred\\u{1b}[2K"
        );
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(
            escape("\u{7f}\u{9b}\u{202e}\u{2066}"),
            "\\u{7f}\\u{9b}\\u{202e}\\u{2066}"
        );
        // A backslash is doubled, so escaped text can't pose as an escape.
        assert_eq!(escape("\\u{1b}"), "\\\\u{1b}");
        assert!(!escape("\u{0}\u{1}\u{1f}\u{85}")
            .chars()
            .any(char::is_control));
    }

    #[test]
    fn sizes_parse_with_binary_suffixes_and_refuse_overflow() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("10M"), Some(10 << 20));
        assert_eq!(parse_size("4g"), Some(4 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        for bad in [
            "",
            "k",
            "-1",
            "1.5M",
            "12x",
            "99999999999999999999",
            "16777216T",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn deadlines_come_from_environment_and_grow_with_size() {
        let l = Limits::from_env_with(&|_| None).unwrap();
        assert_eq!(l.deadline, Duration::from_secs(DEFAULT_DEADLINE));
        assert_eq!(l.for_size(0), l.deadline);
        assert_eq!(
            l.for_size(DEFAULT_MIN_RATE * 100),
            l.deadline + Duration::from_secs(100)
        );
        // No overflow for the largest sizes.
        assert!(l.for_size(u64::MAX) > l.deadline);
        let l = Limits::from_env_with(&|k| {
            (k == DEADLINE_VAR)
                .then(|| "2".to_string())
                .or_else(|| (k == MIN_RATE_VAR).then(|| "1k".to_string()))
        })
        .unwrap();
        assert_eq!(l.for_size(4096), Duration::from_secs(6));
        let e = Limits::from_env_with(&|k| (k == DEADLINE_VAR).then(|| "0".to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CH_IMAGE_REGY_DEADLINE: invalid value \"0\""),
            "{e}"
        );
    }

    #[test]
    fn connect_timeout_and_retry_after_limit_come_from_the_environment() {
        let l = Limits::from_env_with(&|_| None).unwrap();
        assert_eq!(
            l.connect_timeout,
            Duration::from_secs(DEFAULT_CONNECT_TIMEOUT)
        );
        assert_eq!(
            l.retry_after_max,
            Duration::from_secs(DEFAULT_RETRY_AFTER_MAX)
        );
        let with = |var: &'static str, v: &'static str| {
            Limits::from_env_with(&move |k| (k == var).then(|| v.to_string()))
        };
        assert_eq!(
            with(CONNECT_TIMEOUT_VAR, "5").unwrap().connect_timeout,
            Duration::from_secs(5)
        );
        // No wait at all is a choice; no time to connect is not.
        assert_eq!(
            with(RETRY_AFTER_MAX_VAR, "0").unwrap().retry_after_max,
            Duration::ZERO
        );
        for (var, bad) in [
            (CONNECT_TIMEOUT_VAR, "0"),
            (CONNECT_TIMEOUT_VAR, "1k"),
            (RETRY_AFTER_MAX_VAR, "-1"),
            (RETRY_AFTER_MAX_VAR, "1m"),
        ] {
            let e = with(var, bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{var}: invalid value")), "{e}");
        }
    }

    #[test]
    fn insecure_registries_use_plain_http() {
        let env = [("CH_IMAGE_REGY_INSECURE", "other, localhost:7000")];
        assert!(resolve("localhost:7000/a", &env).http);
        assert!(!resolve("localhost:7001/a", &env).http);
        assert_eq!(
            resolve("localhost:7000/a", &env).origin(),
            "http://localhost:7000"
        );
    }
}
