//! HTTP(S) client for one registry repository: requests with the authentication dance
//! (a 401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...` fetches a token,
//! anonymously unless authenticated mode is on; `Basic` sends the credentials), TLS with
//! the system CA bundle or `$SSL_CERT_FILE`, and blob/manifest helpers.
//!
//! Credentials come from `$CH_IMAGE_USERNAME`/`$CH_IMAGE_PASSWORD`, else a prompt on the
//! terminal; they are asked for at most once per process.
//!
//! Where they go (docs/registry.md, "Where credentials go, and what Grove refuses"): the
//! `Authorization` header is sent only to the registry's own scheme, host and port, and
//! the basic credentials to the token realm it names (never a plain-http realm of an https
//! registry). A URL the registry hands out on another origin (an upload `Location`) is
//! followed without credentials; an https registry's `http://` location is refused. Every
//! request has an overall deadline ([`super::Limits`]), and text from the registry is
//! escaped ([`super::escape`]) before it reaches an error message.

use crate::error::IoResultExt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{escape, Limits, RegistryError, Remote, Settings};
use crate::oci::{self, Digest, Document};

/// The `Accept` header of manifest requests: every kind we read.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.5, \
application/vnd.docker.distribution.manifest.v1+json;q=0.5";

/// How long the DELETE of a failed upload session may take ([`Client::abandon`]), or the
/// deadline of small requests if shorter: best-effort cleanup must not hold a push that
/// is going to try again or fail.
const ABANDON_DEADLINE: Duration = Duration::from_secs(30);
/// How long that DELETE may take once SIGINT or SIGTERM came.
const ABANDON_AFTER_SIGNAL: Duration = Duration::from_secs(2);

/// Default CA bundle (Debian's ca-certificates).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a request sends.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A file, re-opened on each attempt.
    File(&'a Path),
}

impl Body<'_> {
    /// How many bytes it sends.
    fn len(&self) -> Result<u64, RegistryError> {
        Ok(match self {
            Body::Empty => 0,
            Body::Bytes(d) => d.len() as u64,
            Body::File(p) => std::fs::metadata(p).at("stat", p)?.len(),
        })
    }
}

/// The overall deadline of one request, body included: started when made, it ends the
/// request when `limit` has passed, however slowly the registry trickles its answer.
#[derive(Debug, Clone)]
pub struct Deadline {
    started: Instant,
    limit: Duration,
    /// The settings that made it, for the error message.
    var: &'static str,
    /// The longest wait for the next bytes ([`super::READ_TIMEOUT_VAR`]), for the message
    /// of a stall.
    stall: Duration,
    /// The longest wait for a connection ([`super::CONNECT_TIMEOUT_VAR`]), for the message
    /// of a connection that did not open.
    connect: Duration,
}

impl Deadline {
    /// A deadline of `limit` (set by `var`), with the waits of `limits`.
    pub fn new(limit: Duration, var: &'static str, limits: &Limits) -> Deadline {
        Deadline {
            started: Instant::now(),
            limit,
            var,
            stall: limits.read_timeout,
            connect: limits.connect_timeout,
        }
    }

    /// Time left, at least a millisecond (ureq treats zero as "no time at all" anyway).
    fn remaining(&self) -> Duration {
        self.limit
            .saturating_sub(self.started.elapsed())
            .max(Duration::from_millis(1))
    }

    pub fn passed(&self) -> bool {
        self.started.elapsed() >= self.limit
    }

    /// The error saying `action url` ran out of time.
    pub fn error(&self, action: &'static str, url: &str) -> RegistryError {
        RegistryError::Deadline {
            action,
            url: url.to_string(),
            secs: self.limit.as_secs_f64().ceil() as u64,
            var: self.var,
        }
    }

    /// An HTTP error before any body was read, reported as what ended the request if that
    /// was not the registry: a signal (the client shut its connections down), the
    /// deadline, the wait for a connection ([`super::CONNECT_TIMEOUT_VAR`]) or for the
    /// answer ([`super::READ_TIMEOUT_VAR`]).
    pub fn http<'u>(
        &self,
        action: &'static str,
        url: &'u str,
    ) -> impl FnOnce(ureq::Error) -> RegistryError + 'u {
        let d = self.clone();
        move |e| match d.ended(action, url, 0, None, is_stall(&e)) {
            Some(ended) => ended,
            None if matches!(e, ureq::Error::Timeout(ureq::Timeout::Connect)) => {
                RegistryError::ConnectTimeout {
                    action,
                    url: url.to_string(),
                    secs: d.connect.as_secs(),
                    var: super::CONNECT_TIMEOUT_VAR,
                }
            }
            None => http_err(action, url)(e),
        }
    }

    /// An error reading a body, `received` bytes of `expected` in: what [`Deadline::http`]
    /// says, or [`RegistryError::Download`] of `what`.
    pub fn body(
        &self,
        action: &'static str,
        url: &str,
        what: &str,
        (received, expected): (u64, Option<u64>),
        e: io::Error,
    ) -> RegistryError {
        let stalled = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<ureq::Error>())
            .is_some_and(is_stall)
            || e.kind() == io::ErrorKind::TimedOut;
        match self.ended(action, url, received, expected, stalled) {
            Some(ended) => ended,
            None => RegistryError::Download {
                what: what.to_string(),
                source: e,
            },
        }
    }

    /// What ended a request, if not the registry: see [`Deadline::http`].
    fn ended(
        &self,
        action: &'static str,
        url: &str,
        received: u64,
        expected: Option<u64>,
        stalled: bool,
    ) -> Option<RegistryError> {
        if let Err(source) = crate::interrupt::interrupted() {
            return Some(RegistryError::Interrupted {
                action,
                url: url.to_string(),
                source,
            });
        }
        if self.passed() {
            return Some(self.error(action, url));
        }
        stalled.then(|| RegistryError::Stalled {
            action,
            url: url.to_string(),
            received,
            expected,
            secs: self.stall.as_secs(),
            var: super::READ_TIMEOUT_VAR,
        })
    }
}

/// Whether ureq gave up waiting for the next bytes of an answer (the global timeout is
/// the deadline's, told apart by [`Deadline::passed`]).
fn is_stall(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Timeout(ureq::Timeout::PerRead | ureq::Timeout::RecvResponse)
    )
}

/// The `Content-Length` of a response, if it has one that is a number.
pub fn content_length(resp: &Response) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Read the body of `resp` (the answer to `action url`) into memory, within `deadline`:
/// at most `declared` bytes plus one when its size is declared (refused with
/// [`RegistryError::Longer`] if longer, before anything is read if its `Content-Length`
/// says so), else at most `cap` bytes ([`RegistryError::TooBig`], naming `cap_var`;
/// before anything is read if its `Content-Length` says more).
/// `what` names the document in errors (with its digest where it has one).
#[allow(clippy::too_many_arguments)]
pub fn read_body(
    resp: &mut Response,
    action: &'static str,
    url: &str,
    what: &str,
    declared: Option<u64>,
    (cap, cap_var): (u64, &'static str),
    deadline: &Deadline,
) -> Result<Vec<u8>, RegistryError> {
    let announced = content_length(resp);
    if let (Some(d), Some(n)) = (declared, announced) {
        if n > d {
            return Err(RegistryError::Longer {
                what: what.to_string(),
                declared: d,
                sent: Some(n),
            });
        }
    }
    // Nothing declared: an announced length over the bound is refused unread.
    if declared.is_none() && announced.is_some_and(|n| n > cap) {
        return Err(RegistryError::TooBig {
            what: what.to_string(),
            limit: cap,
            var: cap_var,
        });
    }
    let limit = declared.unwrap_or(cap).min(cap);
    let mut reader = resp.body_mut().as_reader().take(limit.saturating_add(1));
    let mut body = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = match reader.read(&mut buf) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let received = body.len() as u64;
                return Err(deadline.body(
                    action,
                    url,
                    what,
                    (received, announced.or(declared)),
                    e,
                ));
            }
        };
        if k == 0 {
            break;
        }
        body.extend_from_slice(&buf[..k]);
        if deadline.passed() {
            return Err(deadline.error(action, url));
        }
    }
    let n = body.len() as u64;
    match declared {
        Some(d) if n > d => Err(RegistryError::Longer {
            what: what.to_string(),
            declared: d,
            sent: None,
        }),
        None if n > cap => Err(RegistryError::TooBig {
            what: what.to_string(),
            limit: cap,
            var: cap_var,
        }),
        _ => Ok(body),
    }
}

/// How many times a GET or HEAD is sent at most ([`Client::send`]).
pub const ATTEMPTS: u32 = 3;

/// Statuses of a GET or HEAD that is tried again: server errors a registry (or the proxy
/// or load balancer before it) gives while it restarts or is overloaded.
const RETRY_STATUSES: [u16; 4] = [500, 502, 503, 504];

/// Whether a request was cut off before its answer (the connection reset or closed, or
/// closed while an upload's body was being sent), as a registry that restarts does; not a
/// refused connection, a timeout or a TLS error.
fn cut_off(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// A request tried again ([`Client::send`]): why, the `Retry-After` wait the registry
/// asked for (and the header's text) if it did, and the wait before the next attempt.
struct Retry {
    why: String,
    asked: Option<(Duration, String)>,
    delay: Duration,
}

/// A reader that adds the bytes read through it to a count.
struct Counting<R>(R, std::sync::Arc<std::sync::atomic::AtomicU64>);

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A step of a blob upload that did not succeed: its method, URL (and as errors show it:
/// escaped if the registry handed it out for elsewhere), the action its error names, and
/// what came of it (an answer of the wrong status, or an error).
struct FailedStep {
    method: &'static str,
    url: String,
    shown: String,
    action: &'static str,
    outcome: Result<Response, RegistryError>,
}

/// The wait a `Retry-After` header value asks for (RFC 9110 10.2.3): a number of
/// seconds, or an HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms) less
/// `now`, a date already past being no wait. `None` if it is neither.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than any cap: beyond u64 seconds is as good as for ever.
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(v)?;
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Some(Duration::from_secs(at.saturating_sub(now).max(0) as u64))
}

/// Seconds since the epoch of an HTTP date (RFC 9110 5.6.7): `Sun, 06 Nov 1994 08:49:37
/// GMT`, `Sunday, 06-Nov-94 08:49:37 GMT` or `Sun Nov  6 08:49:37 1994`.
fn http_date(v: &str) -> Option<i64> {
    let t: Vec<&str> = v.split([' ', ',']).filter(|t| !t.is_empty()).collect();
    let (day, month, year, time) = match t.as_slice() {
        [_, d, m, y, time, "GMT"] => (*d, *m, y.parse::<i64>().ok()?, *time),
        [_, dmy, time, "GMT"] => {
            let mut p = dmy.split('-');
            let (d, m, y) = (p.next()?, p.next()?, p.next()?);
            let y: i64 = y.parse().ok()?;
            // Two-digit years: RFC 9110 says one more than 50 years ahead is in the past.
            let y = if y < 100 {
                if y < 70 {
                    2000 + y
                } else {
                    1900 + y
                }
            } else {
                y
            };
            (d, m, y, *time)
        }
        [_, m, d, time, y] => (*d, *m, y.parse::<i64>().ok()?, *time),
        _ => return None,
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let mut hms = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days since the epoch of a civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + s)
}

/// The variables that set a blob's deadline.
pub const BLOB_DEADLINE_VARS: &str = "CH_IMAGE_REGY_DEADLINE and CH_IMAGE_REGY_MIN_RATE";

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    /// The agent's configuration, for the one request sent after SIGINT or SIGTERM (the
    /// agent refuses new ones then): the DELETE of an abandoned upload session.
    config: ureq::config::Config,
    pub remote: Remote,
    /// Access wanted: `pull` or `pull,push`.
    actions: &'static str,
    /// Authenticate even when anonymous access would do.
    auth_mode: bool,
    /// Current `Authorization` header value.
    authz: Mutex<Option<String>>,
    creds: Mutex<Option<(String, String)>>,
    limits: Limits,
    /// Bytes of [`Body::File`] bodies read to be sent (and reported to the progress
    /// display): those of an upload that starts again are taken back from the display.
    file_sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Shuts the agent's connections down on SIGINT or SIGTERM, so that a read blocked on
    /// a stalled registry ends at once (crate::interrupt).
    _wake: crate::interrupt::Hook,
}

/// How many redirects a registry request follows (as ureq's default, and curl's `-L`
/// bound is 50, Go's 10).
const MAX_REDIRECTS: u32 = 10;

/// `loc` (a `Location` header) resolved against the URL `base` (RFC 3986 section 5.2, for
/// the forms servers send: absolute, `//host/path`, `/path`, or a relative path).
fn resolve(base: &str, loc: &str) -> Option<String> {
    let loc = loc.trim();
    let b: ureq::http::Uri = base.parse().ok()?;
    let scheme = b.scheme_str()?;
    let origin = format!("{scheme}://{}", b.authority()?);
    let out = if loc.starts_with("//") {
        format!("{scheme}:{loc}")
    } else if loc.starts_with('/') {
        format!("{origin}{loc}")
    } else if loc
        .split_once(':')
        .is_some_and(|(s, _)| !s.is_empty() && !s.contains('/') && !s.contains('?'))
    {
        loc.to_string()
    } else {
        let path = b.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{origin}{dir}{loc}")
    };
    out.parse::<ureq::http::Uri>().ok()?;
    Some(out)
}

/// Where a URL points, seen from the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The registry's own scheme, host and port: gets the `Authorization` header.
    Registry,
    /// Anywhere else: no credentials.
    Elsewhere,
}

/// What a manifest request got: an index or image manifest, or a Docker schema 1
/// manifest (deprecated, [`oci::schema1`]).
#[derive(Debug, Clone)]
pub enum Fetched {
    Doc(Document),
    Schema1(oci::Schema1),
}

/// A response with its status checked by the caller.
pub type Response = ureq::http::Response<ureq::Body>;

fn http_err<'u>(
    action: &'static str,
    url: &'u str,
) -> impl FnOnce(ureq::Error) -> RegistryError + 'u {
    move |e| RegistryError::Http {
        action,
        url: url.to_string(),
        source: Box::new(e),
    }
}

/// Load root certificates from `$SSL_CERT_FILE`, else `$REQUESTS_CA_BUNDLE` (as
/// Charliecloud's FAQ documents), else the system bundle.
fn root_certs() -> Result<ureq::tls::RootCerts, RegistryError> {
    let path = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(&path).at("read CA certificates", &path)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(RegistryError::Tls {
                    path,
                    reason: e.to_string(),
                })
            }
        }
    }
    if certs.is_empty() {
        return Err(RegistryError::Tls {
            path,
            reason: "no certificates found".into(),
        });
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Download `url` (http or https, system CA bundle or `$SSL_CERT_FILE`) into the new
/// file `dest` (for Dockerfile `ADD URL`). Redirects are followed; a non-2xx status is an
/// error, and so is a body larger than `$CH_IMAGE_ADD_MAX_SIZE` ([`super::add_max_size`]),
/// whether declared (`Content-Length`) or sent. A wait for the next bytes is bounded by
/// [`super::READ_TIMEOUT_VAR`]; SIGINT and SIGTERM end it at once.
pub fn fetch_url(url: &str, dest: &Path) -> Result<(), RegistryError> {
    let max = super::add_max_size()?;
    let limits = Limits::from_env()?;
    let too_big = || RegistryError::TooBig {
        what: format!("download {url}"),
        limit: max,
        var: super::ADD_MAX_VAR,
    };
    let tls = if url.starts_with("https://") {
        ureq::tls::TlsConfig::builder()
            .root_certs(root_certs()?)
            .build()
    } else {
        ureq::tls::TlsConfig::default()
    };
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(limits.connect_timeout))
        .timeout_recv_response(Some(limits.read_timeout))
        .timeout_per_read(Some(limits.read_timeout))
        .user_agent(concat!("grove/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = super::connect::agent(config);
    let shut = agent.clone();
    let _wake = crate::interrupt::on_signal(move || shut.clone().shutdown());
    // No overall deadline here (the size limit bounds the download), only the stall's.
    let deadline = Deadline::new(Duration::MAX, super::DEADLINE_VAR, &limits);
    let mut resp = agent
        .get(url)
        .call()
        .map_err(deadline.http("download", url))?;
    if !resp.status().is_success() {
        return Err(status_err("download", url, &mut resp));
    }
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_big());
    }
    let mut out = std::fs::File::create_new(dest).at("create", dest)?;
    // One byte more than allowed tells a body that is too big.
    let mut body = resp.body_mut().as_reader().take(max.saturating_add(1));
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                drop(out);
                let _ = std::fs::remove_file(dest);
                return Err(deadline.body("download", url, url, (n, declared), e));
            }
        };
        out.write_all(&buf[..k]).at("download into", dest)?;
        n += k as u64;
    }
    if n > max {
        drop(out);
        let _ = std::fs::remove_file(dest);
        return Err(too_big());
    }
    Ok(())
}

/// Parse a `WWW-Authenticate` header: scheme and parameters (quoted values may hold
/// commas).
pub fn parse_challenge(h: &str) -> (String, Vec<(String, String)>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n)
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        params.push((key.trim().to_ascii_lowercase(), val.trim().to_string()));
    }
    (scheme.to_ascii_lowercase(), params)
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Ask for a line on the terminal; with `secret`, without echo.
fn prompt(question: &str, secret: bool) -> Result<String, RegistryError> {
    use nix::sys::termios;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            RegistryError::Auth(
                "credentials needed but no terminal to ask on; set CH_IMAGE_USERNAME and CH_IMAGE_PASSWORD".into(),
            )
        })?;
    let mut out = &tty;
    let _ = write!(out, "{question}");
    let _ = out.flush();
    let saved = if secret {
        termios::tcgetattr(&tty).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_flags.remove(termios::LocalFlags::ECHO);
            let _ = termios::tcsetattr(&tty, termios::SetArg::TCSANOW, &quiet);
        })
    } else {
        None
    };
    let mut line = String::new();
    let r = io::BufRead::read_line(&mut io::BufReader::new(&tty), &mut line);
    if let Some(t) = saved {
        let _ = termios::tcsetattr(&tty, termios::SetArg::TCSANOW, &t);
        let _ = writeln!(out);
    }
    r.map_err(|e| RegistryError::Auth(format!("can't read from terminal: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

impl Client {
    /// A client for `remote`; `push` asks for push access too (and authenticates, as
    /// Charliecloud's push always does).
    pub fn new(remote: Remote, settings: &Settings, push: bool) -> Result<Client, RegistryError> {
        let limits = Limits::from_env()?;
        let tls = if settings.tls_no_verify {
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build()
        } else if remote.http {
            ureq::tls::TlsConfig::default()
        } else {
            ureq::tls::TlsConfig::builder()
                .root_certs(root_certs()?)
                .build()
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(limits.connect_timeout))
            .timeout_recv_response(Some(limits.read_timeout))
            .timeout_recv_body(None)
            .timeout_per_read(Some(limits.read_timeout))
            .user_agent(concat!("grove/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `send_once`, which decides where credentials go
            // and refuses an https registry's redirect to plain http (ureq would follow it).
            .max_redirects(0)
            .max_idle_connections_per_host(8)
            .build();
        let agent = super::connect::agent(config.clone());
        let shut = agent.clone();
        Ok(Client {
            _wake: crate::interrupt::on_signal(move || shut.clone().shutdown()),
            agent,
            config,
            remote,
            actions: if push { "pull,push" } else { "pull" },
            auth_mode: settings.auth || push,
            authz: Mutex::new(None),
            creds: Mutex::new(None),
            limits,
            file_sent: Default::default(),
        })
    }

    /// `scheme://host:port/v2/REPO/` followed by `rest`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.remote.origin(), self.remote.repo)
    }

    /// The deadline of a request with a small body.
    fn small(&self) -> Deadline {
        Deadline::new(self.limits.deadline, super::DEADLINE_VAR, &self.limits)
    }

    /// The deadline of a transfer of `size` bytes.
    fn sized(&self, size: u64) -> Deadline {
        Deadline::new(self.limits.for_size(size), BLOB_DEADLINE_VARS, &self.limits)
    }

    /// Whether `url` is the registry's own origin, or elsewhere; refused if it is not
    /// http(s), or plain http while the registry is https. `what` names the URL's role
    /// in the error.
    fn target(&self, what: &str, url: &str) -> Result<Target, RegistryError> {
        let refuse = |reason: String| RegistryError::Refused {
            what: format!("{what} {}", escape(url)),
            reason,
        };
        let uri: ureq::http::Uri = url.parse().map_err(|_| refuse("not a valid URL".into()))?;
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(refuse("only http and https URLs are followed".into())),
        };
        if scheme == "http" && !self.remote.http {
            return Err(refuse(format!(
                "plain http, handed out by the https registry {}:{} (credentials and images \
                 would travel unencrypted)",
                self.remote.host, self.remote.port
            )));
        }
        let same = (scheme == "http") == self.remote.http
            && uri.host().is_some_and(|h| {
                h.trim_matches(['[', ']'])
                    .eq_ignore_ascii_case(&self.remote.host)
            })
            && uri.port_u16().unwrap_or(default_port) == self.remote.port;
        Ok(if same {
            Target::Registry
        } else {
            Target::Elsewhere
        })
    }

    fn credentials(&self) -> Result<(String, String), RegistryError> {
        let mut c = self.creds.lock().expect("creds lock");
        if let Some(c) = &*c {
            return Ok(c.clone());
        }
        let user = match std::env::var("CH_IMAGE_USERNAME") {
            Ok(u) => u,
            Err(_) => prompt(&format!("Username for {}: ", self.remote.host), false)?,
        };
        let pass = match std::env::var("CH_IMAGE_PASSWORD") {
            Ok(p) => p,
            Err(_) => prompt(&format!("Password for {user}@{}: ", self.remote.host), true)?,
        };
        *c = Some((user, pass));
        Ok(c.clone().expect("just set"))
    }

    fn basic(&self) -> Result<String, RegistryError> {
        let (u, p) = self.credentials()?;
        Ok(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ))
    }

    /// Answer a 401 challenge: returns the new `Authorization` value. An error about the
    /// challenge itself quotes it (escaped: it is the registry's text).
    fn authenticate(&self, url: &str, challenge: &str) -> Result<String, RegistryError> {
        self.answer(url, challenge).map_err(|e| match e {
            RegistryError::Auth(m) => {
                RegistryError::Auth(format!("{m} (WWW-Authenticate: {})", escape(challenge)))
            }
            e => e,
        })
    }

    fn answer(&self, url: &str, challenge: &str) -> Result<String, RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        let get = |k: &str| {
            params
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        match scheme.as_str() {
            // Charliecloud's rule: credentials are used only when asked for (--auth,
            // $CH_IMAGE_AUTH, or a push); else a registry that wants them is an error
            // whose hint says so.
            "basic" if self.auth_mode => self.basic(),
            "basic" => Err(RegistryError::Unauthorized {
                url: url.to_string(),
            }),
            "bearer" => {
                let realm = get("realm").ok_or_else(|| {
                    RegistryError::Auth(format!("{url}: Bearer challenge without realm"))
                })?;
                // The realm gets the credentials (as Docker sends them), so it must be
                // reached as safely as the registry itself: never plain http for https.
                self.target("token realm", realm)?;
                let scope = format!("repository:{}:{}", self.remote.repo, self.actions);
                let mut turl = format!("{realm}?scope={}", query_escape(&scope));
                if let Some(s) = get("service") {
                    turl.push_str(&format!("&service={}", query_escape(s)));
                }
                // For messages: the realm is the registry's text.
                let shown = escape(&turl);
                let deadline = self.small();
                let mut req = self.agent.get(&turl);
                if self.auth_mode {
                    req = req.header("Authorization", self.basic()?);
                }
                // The realm's redirects are followed by ureq (without the credentials:
                // ureq's `RedirectAuthHeaders::Never`), never to plain http for https.
                let mut resp = req
                    .config()
                    .timeout_global(Some(deadline.remaining()))
                    .max_redirects(MAX_REDIRECTS)
                    .https_only(!self.remote.http)
                    .build()
                    .call()
                    .map_err(deadline.http("get token from", &shown))?;
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    return Err(RegistryError::Unauthorized { url: shown });
                }
                if status != 200 {
                    return Err(RegistryError::Status {
                        action: "get token from",
                        url: shown,
                        status,
                        detail: None,
                    });
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = read_body(
                    &mut resp,
                    "read token from",
                    &shown,
                    &format!("token from {shown}"),
                    None,
                    (1 << 20, "a fixed limit"),
                    &deadline,
                )?;
                let t: Token = serde_json::from_slice(&body).map_err(|e| {
                    // A login page (an SSO portal, a proxy's) is the usual reason: say
                    // what came instead.
                    let ct = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none");
                    let start = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
                    RegistryError::Auth(format!(
                        "{shown}: token response is not valid JSON ({e}); Content-Type {}, starting {:?}",
                        escape(ct),
                        escape(&start)
                    ))
                })?;
                let t = t.token.or(t.access_token).ok_or_else(|| {
                    RegistryError::Auth(format!("{shown}: token response has no token"))
                })?;
                Ok(format!("Bearer {t}"))
            }
            other => Err(RegistryError::Auth(format!(
                "{url}: unsupported authentication scheme {other:?}"
            ))),
        }
    }

    /// Send a request, authenticating on a 401 and retrying once, within `deadline` (which
    /// goes on for the body the caller reads). The status is left to the caller (except 401
    /// after authenticating, an error). The `Authorization` header goes only to the
    /// registry's own origin; a URL elsewhere gets none, and its 401 is an error.
    ///
    /// A GET or HEAD answered with a server error (500, 502, 503, 504) or cut off before
    /// its answer (connection reset or closed) is tried again, [`ATTEMPTS`] times in all,
    /// 1 s then 2 s apart, each retry warned about, while the deadline leaves time;
    /// Charliecloud fails at the first. A 429 or 503 with a `Retry-After` header
    /// ([`retry_after`]) is tried again after the wait it asks for, if that is at most
    /// [`super::RETRY_AFTER_MAX_VAR`]'s, and is [`RegistryError::RetryAfter`] if longer; a
    /// 429 without one is not tried again (a retry a second later counts against the same
    /// rate limit). Every wait ends at once on SIGINT or SIGTERM. Other methods are sent
    /// once: [`Client::send_retrying`] tries them again too.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        deadline: &Deadline,
    ) -> Result<Response, RegistryError> {
        if matches!(method, "GET" | "HEAD") {
            self.send_retrying(method, url, headers, body, deadline)
        } else {
            self.send_once(method, url, headers, &body, deadline)
        }
    }

    /// [`Client::send`], tried again as a GET is whatever the method: for a request that
    /// may be sent twice (a manifest PUT: the same bytes under the same tag).
    pub fn send_retrying(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
        deadline: &Deadline,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 1;
        loop {
            let r = self.send_once(method, url, headers, &body, deadline);
            match self.again(method, url, &r, attempt, Some(deadline))? {
                None => return r,
                Some(retry) => {
                    drop(r);
                    attempt += 1;
                    self.wait_to_retry(method, url, &retry, attempt, "")?;
                }
            }
        }
    }

    /// Whether the outcome `r` of attempt `attempt` of `method url` is tried again, and
    /// after what wait: `None` if it is the answer (a success, a status that is not a
    /// server error, a failure other than a cut connection, or the last attempt, or a wait
    /// `deadline` leaves no time for); [`RegistryError::RetryAfter`] if the registry asks
    /// for a longer wait than allowed. See [`Client::send`].
    fn again(
        &self,
        method: &str,
        url: &str,
        r: &Result<Response, RegistryError>,
        attempt: u32,
        deadline: Option<&Deadline>,
    ) -> Result<Option<Retry>, RegistryError> {
        // Why to try again, and the wait the registry asked for (Retry-After).
        let (why, asked) = match r {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let asked = if matches!(status, 429 | 503) {
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| {
                            retry_after(v, std::time::SystemTime::now())
                                .map(|w| (w, v.trim().to_string()))
                        })
                } else {
                    None
                };
                if asked.is_none() && !RETRY_STATUSES.contains(&status) {
                    return Ok(None);
                }
                (format!("HTTP {status}"), asked)
            }
            Err(RegistryError::Http { source, .. }) if cut_off(source) => {
                (source.to_string(), None)
            }
            Err(_) => return Ok(None),
        };
        if let Some((wait, _)) = &asked {
            if *wait > self.limits.retry_after_max {
                let status = r.as_ref().map_or(0, |resp| resp.status().as_u16());
                return Err(RegistryError::RetryAfter {
                    method: method.to_string(),
                    url: escape(url),
                    status,
                    secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    max: self.limits.retry_after_max.as_secs(),
                    var: super::RETRY_AFTER_MAX_VAR,
                });
            }
        }
        let delay = asked
            .as_ref()
            .map_or(Duration::from_secs(1 << (attempt - 1)), |(w, _)| *w);
        if attempt == ATTEMPTS || deadline.is_some_and(|d| d.remaining() <= delay) {
            return Ok(None);
        }
        Ok(Some(Retry { why, asked, delay }))
    }

    /// Say that `method url` is tried again (`then` ends the message: what the next
    /// attempt does), and wait for it; SIGINT or SIGTERM end the wait at once.
    fn wait_to_retry(
        &self,
        method: &str,
        url: &str,
        retry: &Retry,
        attempt: u32,
        then: &str,
    ) -> Result<(), RegistryError> {
        let Retry { why, asked, delay } = retry;
        match asked {
            Some((wait, value)) => crate::warn!(
                "{method} {}: {why}, Retry-After: {}; waiting {} s as the registry asks, \
                 then trying again{then} (attempt {attempt} of {ATTEMPTS})",
                escape(url),
                escape(value),
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            ),
            None => crate::warn!(
                "{method} {}: {why}; trying again{then} in {} s (attempt {attempt} of {ATTEMPTS})",
                escape(url),
                delay.as_secs()
            ),
        }
        let until = Instant::now() + *delay;
        while Instant::now() < until {
            crate::interrupt::interrupted().map_err(|source| RegistryError::Interrupted {
                action: "reach",
                url: escape(url),
                source,
            })?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// One request, its redirects followed (ureq follows none: see [`Client::new`]) for a
    /// GET or HEAD, at most [`MAX_REDIRECTS`] of them: each `Location` is checked by
    /// [`Client::target`] (only http and https, no plain http from an https registry) and
    /// gets the `Authorization` header only if it is the registry's own origin.
    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
        deadline: &Deadline,
    ) -> Result<Response, RegistryError> {
        let mut at = url.to_string();
        let mut hops = 0;
        loop {
            let what = if hops == 0 {
                "to send to"
            } else {
                "redirect to"
            };
            let resp = self.send_to(method, &at, what, headers, body, deadline)?;
            let follow = matches!(method, "GET" | "HEAD")
                && matches!(resp.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let (true, Some(loc)) = (follow, loc) else {
                return Ok(resp);
            };
            drop(resp);
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(RegistryError::Refused {
                    what: format!("{method} {url}"),
                    reason: format!(
                        "more than {MAX_REDIRECTS} redirects, the last to {}",
                        escape(&loc)
                    ),
                });
            }
            at = resolve(&at, &loc).ok_or_else(|| RegistryError::Refused {
                what: format!("redirect to {} (from {})", escape(&loc), escape(&at)),
                reason: "not a valid URL".into(),
            })?;
        }
    }

    /// One request to `url` (`what` it is, for a refusal), answering a 401 of the
    /// registry's own origin once.
    fn send_to(
        &self,
        method: &str,
        url: &str,
        what: &str,
        headers: &[(&str, &str)],
        body: &Body<'_>,
        deadline: &Deadline,
    ) -> Result<Response, RegistryError> {
        let target = self.target(what, url)?;
        // For messages: a URL elsewhere came from the registry.
        let shown = match target {
            Target::Registry => url.to_string(),
            Target::Elsewhere => escape(url),
        };
        for attempt in 0..2 {
            crate::interrupt::interrupted().map_err(|source| RegistryError::Interrupted {
                action: "reach",
                url: shown.clone(),
                source,
            })?;
            let mut b = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            if target == Target::Registry {
                if let Some(a) = &*self.authz.lock().expect("auth lock") {
                    b = b.header("Authorization", a.as_str());
                }
            }
            let resp = match body {
                Body::Empty => {
                    let req = b
                        .body(())
                        .map_err(|e| http_err("request", &shown)(e.into()))?;
                    self.run(req, deadline)
                }
                Body::Bytes(d) => {
                    let req = b
                        .header("Content-Length", d.len().to_string())
                        .body(*d)
                        .map_err(|e| http_err("request", &shown)(e.into()))?;
                    self.run(req, deadline)
                }
                Body::File(p) => {
                    let f = std::fs::File::open(p).at("open", p)?;
                    let len = f.metadata().at("stat", p)?.len();
                    let req = b
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_owned_reader(
                            io::BufReader::with_capacity(
                                1 << 20,
                                Counting(crate::progress::Reading(f), self.file_sent.clone()),
                            ),
                        ))
                        .map_err(|e| http_err("request", &shown)(e.into()))?;
                    self.run(req, deadline)
                }
            }
            .map_err(deadline.http("reach", &shown))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            if attempt == 1 || target == Target::Elsewhere {
                break;
            }
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let Some(challenge) = challenge else { break };
            let a = self.authenticate(url, &challenge)?;
            *self.authz.lock().expect("auth lock") = Some(a);
        }
        Err(RegistryError::Unauthorized { url: shown })
    }

    /// Run a request within what is left of `deadline`.
    fn run<S: ureq::AsSendBody>(
        &self,
        req: ureq::http::Request<S>,
        deadline: &Deadline,
    ) -> Result<Response, ureq::Error> {
        use ureq::RequestExt as _;
        req.with_agent(&self.agent)
            .configure()
            .timeout_global(Some(deadline.remaining()))
            .run()
    }

    /// Authenticate up front when in authenticated mode (so a wrong password fails early).
    pub fn login(&self) -> Result<(), RegistryError> {
        if self.auth_mode {
            let url = format!("{}/v2/", self.remote.origin());
            let resp = self.send("GET", &url, &[], Body::Empty, &self.small())?;
            let _ = resp;
        }
        Ok(())
    }

    /// Fetch a manifest or index by tag or digest. Returns the parsed document, the body
    /// and its digest (for a signed schema 1 manifest, its payload's:
    /// [`oci::schema1`]). A digest reference is verified, and a size `declared` for it (by
    /// the index that lists it) is all that is read, plus a byte; `None` if the registry
    /// has no such manifest.
    pub fn manifest(
        &self,
        version: &str,
        declared: Option<u64>,
    ) -> Result<Option<(Fetched, Vec<u8>, String)>, RegistryError> {
        let url = self.url(&format!("manifests/{version}"));
        let deadline = self.small();
        let mut resp = self.send("GET", &url, &[("Accept", ACCEPT)], Body::Empty, &deadline)?;
        let status = resp.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(status_err("get manifest", &url, &mut resp));
        }
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = read_body(
            &mut resp,
            "read manifest",
            &url,
            &format!("manifest {url}"),
            declared,
            (oci::MAX_MANIFEST, "a fixed limit"),
            &deadline,
        )?;
        let of_body = Digest::of(&body).to_string();
        // A schema 1 manifest's digest is that of its payload, which only its parse finds.
        let (doc, digest) = if oci::schema1::is_schema1(&ct, &body) {
            let m = match oci::Schema1::parse(&body) {
                Ok(m) => m,
                // A digest reference that does not match says more than a parse error.
                Err(_) if version.starts_with("sha256:") && of_body != version => {
                    return Err(RegistryError::Digest {
                        what: format!("manifest {url}"),
                        expected: version.to_string(),
                        actual: of_body,
                    })
                }
                Err(e) => return Err(e.into()),
            };
            let d = m.digest.to_string();
            // Asked for by either digest, it is the manifest asked for.
            if version.starts_with("sha256:") && d != version && of_body != version {
                return Err(RegistryError::Digest {
                    what: format!("manifest {url}"),
                    expected: version.to_string(),
                    actual: d,
                });
            }
            (Fetched::Schema1(m), d)
        } else {
            if version.starts_with("sha256:") && of_body != version {
                return Err(RegistryError::Digest {
                    what: format!("manifest {url}"),
                    expected: version.to_string(),
                    actual: of_body,
                });
            }
            let doc = Document::parse(&ct, &body)?;
            if let Some((header, own)) = doc.disagrees_with(&ct) {
                return Err(RegistryError::Refused {
                    what: format!("manifest {url}"),
                    reason: format!(
                        "its Content-Type is {} but its body says {}",
                        escape(&header),
                        escape(&own)
                    ),
                });
            }
            (Fetched::Doc(doc), of_body)
        };
        Ok(Some((doc, body, digest)))
    }

    /// GET a blob of declared `size`; the caller reads and verifies the body, within the
    /// deadline returned (which has begun).
    pub fn blob(&self, digest: &str, size: u64) -> Result<(Response, Deadline), RegistryError> {
        self.blob_from(digest, size, 0)
    }

    /// [`Client::blob`] from byte `offset` on, if not 0: asks for the rest with `Range:
    /// bytes=OFFSET-` (a resumed download), the deadline being that of the rest. The
    /// answer is 206 (the rest, whose `Content-Range` the caller checks) or 200 (the
    /// whole blob, from a registry that does not do ranges).
    pub fn blob_from(
        &self,
        digest: &str,
        size: u64,
        offset: u64,
    ) -> Result<(Response, Deadline), RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let deadline = self.sized(size.saturating_sub(offset));
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 {
            &[("Range", range.as_str())]
        } else {
            &[]
        };
        let mut resp = self.send("GET", &url, headers, Body::Empty, &deadline)?;
        match resp.status().as_u16() {
            200 => Ok((resp, deadline)),
            206 if offset > 0 => Ok((resp, deadline)),
            404 => Err(RegistryError::Status {
                action: "get blob",
                url,
                status: 404,
                detail: Some("blob not found".into()),
            }),
            _ => Err(status_err("get blob", &url, &mut resp)),
        }
    }

    /// Fetch a small blob (a config) of declared `size` into memory, verified; refused if
    /// declared or sent larger than `limit`.
    pub fn blob_bytes(
        &self,
        what: &str,
        digest: &str,
        size: u64,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        if size > limit {
            return Err(RegistryError::TooBig {
                what: format!("{what} {digest} (declared {size} bytes)"),
                limit,
                var: "a fixed limit",
            });
        }
        let url = self.url(&format!("blobs/{digest}"));
        let (mut resp, deadline) = self.blob(digest, size)?;
        // The declared size is all that is read (plus a byte to tell a longer body).
        let body = read_body(
            &mut resp,
            "read",
            &url,
            &format!("{what} {digest}"),
            Some(size),
            (limit, "a fixed limit"),
            &deadline,
        )?;
        let actual = Digest::of(&body);
        if actual != *digest {
            return Err(RegistryError::Digest {
                what: format!("{what} {url}"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(body)
    }

    /// The size of a blob, from the `Content-Length` of a HEAD (for a Docker schema 1
    /// manifest, which declares none); refused above [`super::MAX_LAYER_SIZE`].
    pub fn blob_size(&self, digest: &str) -> Result<u64, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let mut resp = self.send("HEAD", &url, &[], Body::Empty, &self.small())?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(RegistryError::Status {
                    action: "check blob",
                    url,
                    status: 404,
                    detail: Some("blob not found".into()),
                })
            }
            _ => return Err(status_err("check blob", &url, &mut resp)),
        }
        let n = content_length(&resp).ok_or_else(|| RegistryError::Status {
            action: "check blob",
            url: url.clone(),
            status: 200,
            detail: Some("no Content-Length, and a schema 1 manifest declares no size".into()),
        })?;
        if n > super::MAX_LAYER_SIZE {
            return Err(RegistryError::TooBig {
                what: format!("blob {digest} (announced {n} bytes)"),
                limit: super::MAX_LAYER_SIZE,
                var: "a fixed limit",
            });
        }
        Ok(n)
    }

    /// Whether the registry already has a blob.
    pub fn has_blob(&self, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let mut resp = self.send("HEAD", &url, &[], Body::Empty, &self.small())?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(status_err("check blob", &url, &mut resp)),
        }
    }

    /// Upload a blob monolithically (POST to start, PUT with the digest). The upload URL
    /// is the registry's `Location`: on the registry's origin it gets the credentials,
    /// elsewhere (a storage service) none; plain http for an https registry is refused.
    ///
    /// A step answered with a server error or cut off (as [`Client::send`] tries a GET
    /// again, `Retry-After` included) starts the upload again from a new POST, a session
    /// that failed being no longer trusted: [`ATTEMPTS`] times in all, 1 s then 2 s apart,
    /// each warned about. Any other status (a 4xx but 429) fails at once. A session that
    /// failed after its POST is deleted first ([`Client::abandon`]).
    pub fn upload_blob(&self, digest: &str, body: Body<'_>) -> Result<(), RegistryError> {
        use std::sync::atomic::Ordering;
        let mut attempt = 1;
        loop {
            let sent_before = self.file_sent.load(Ordering::Relaxed);
            let Err(failed) = self.upload_session(digest, &body)? else {
                return Ok(());
            };
            let FailedStep {
                method,
                url,
                shown,
                action,
                outcome,
            } = failed;
            // Each session's requests have deadlines of their own, as each attempt of a
            // layer's download does.
            match self.again(method, &url, &outcome, attempt, None)? {
                None => {
                    return Err(match outcome {
                        Ok(mut resp) => status_err(action, &shown, &mut resp),
                        Err(e) => e,
                    })
                }
                Some(retry) => {
                    drop(outcome);
                    // The progress display counts the next attempt's bytes afresh.
                    crate::progress::unbytes(
                        self.file_sent
                            .load(Ordering::Relaxed)
                            .saturating_sub(sent_before),
                    );
                    attempt += 1;
                    self.wait_to_retry(method, &url, &retry, attempt, " from a new upload")?;
                }
            }
        }
    }

    /// One upload session of [`Client::upload_blob`]: `Ok(Ok(()))` if the blob is
    /// uploaded, `Ok(Err(step))` if a step got an answer other than success or failed on
    /// the way (the caller decides whether to start again), `Err` for errors before any
    /// request (a refused location, the body's file).
    fn upload_session(
        &self,
        digest: &str,
        body: &Body<'_>,
    ) -> Result<Result<(), FailedStep>, RegistryError> {
        let url = self.url("blobs/uploads/");
        let post = self.send_once(
            "POST",
            &url,
            &[("Content-Length", "0")],
            &Body::Empty,
            &self.small(),
        );
        let resp = match post {
            Ok(resp) if resp.status().as_u16() == 202 => resp,
            outcome => {
                return Ok(Err(FailedStep {
                    method: "POST",
                    shown: url.clone(),
                    url,
                    action: "start upload at",
                    outcome,
                }))
            }
        };
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                action: "start upload at",
                url: url.clone(),
                status: 202,
                detail: Some("no Location header (or not text)".into()),
            })?
            .to_string();
        drop(resp);
        // The session's URL: where its DELETE goes if it fails.
        let session = if loc.starts_with('/') {
            format!("{}{}", self.remote.origin(), loc)
        } else {
            loc
        };
        let mut put = session.clone();
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={}", query_escape(digest)));
        let target = self.target("upload location", &put)?;
        let shown = match target {
            Target::Registry => put.clone(),
            Target::Elsewhere => escape(&put),
        };
        let size = match body.len() {
            Ok(size) => size,
            Err(e) => {
                self.abandon(&session, target);
                return Err(e);
            }
        };
        let outcome = self.send_once(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            body,
            &self.sized(size),
        );
        Ok(match outcome {
            Ok(resp) if resp.status().as_u16() == 201 => Ok(()),
            outcome => {
                self.abandon(&session, target);
                Err(FailedStep {
                    method: "PUT",
                    url: put,
                    shown,
                    action: "upload blob to",
                    outcome,
                })
            }
        })
    }

    /// Delete the upload session at `session` (its `Location`, where `target` is), one
    /// that failed and is not used again (OCI distribution spec, "Deleting an upload":
    /// 204), so that the registry need not keep what it received until the session
    /// expires. Best effort, sent once: any answer but a 2xx, or an error, is only a
    /// debug note, never the push's error. After SIGINT or SIGTERM it is still sent, on
    /// an agent of its own (the client's refuses new requests then) and within
    /// [`ABANDON_AFTER_SIGNAL`], so a stalled registry does not hold the interrupted push
    /// (else within [`ABANDON_DEADLINE`]).
    fn abandon(&self, session: &str, target: Target) {
        let shown = match target {
            Target::Registry => session.to_string(),
            Target::Elsewhere => escape(session),
        };
        let outcome = if crate::interrupt::interrupted().is_ok() {
            let deadline = Deadline::new(
                self.limits.deadline.min(ABANDON_DEADLINE),
                super::DEADLINE_VAR,
                &self.limits,
            );
            self.send_once("DELETE", session, &[], &Body::Empty, &deadline)
        } else {
            use ureq::RequestExt as _;
            let mut b = ureq::http::Request::builder().method("DELETE").uri(session);
            if target == Target::Registry {
                if let Some(a) = &*self.authz.lock().expect("auth lock") {
                    b = b.header("Authorization", a.as_str());
                }
            }
            b.body(())
                .map_err(|e| e.into())
                .and_then(|req| {
                    req.with_agent(ureq::Agent::new_with_config(self.config.clone()))
                        .configure()
                        .timeout_global(Some(ABANDON_AFTER_SIGNAL))
                        .run()
                })
                .map_err(http_err("delete upload session", &shown))
        };
        match outcome {
            Ok(resp) if resp.status().is_success() => crate::debug!(
                "DELETE {shown}: HTTP {}: failed upload session deleted",
                resp.status().as_u16()
            ),
            Ok(resp) => crate::debug!(
                "DELETE {shown}: HTTP {}: failed upload session not deleted (the registry \
                 drops it when it expires)",
                resp.status().as_u16()
            ),
            Err(e) => crate::debug!(
                "DELETE {shown}: failed upload session not deleted (the registry drops it \
                 when it expires): {e}"
            ),
        }
    }

    /// Upload a manifest under a tag; a server error or a cut connection is tried again
    /// as a GET is ([`Client::send_retrying`]: the same bytes under the same tag).
    pub fn put_manifest(
        &self,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("manifests/{tag}"));
        let mut resp = self.send_retrying(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Body::Bytes(body),
            &self.small(),
        )?;
        if resp.status().as_u16() != 201 {
            return Err(status_err("upload manifest to", &url, &mut resp));
        }
        Ok(())
    }
}

/// An error for an unexpected status, with the registry's error message if it sent one
/// (escaped: it is the registry's text).
pub fn status_err(action: &'static str, url: &str, resp: &mut Response) -> RegistryError {
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_vec()
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    let detail = serde_json::from_slice::<Errors>(&body).ok().map(|e| {
        e.errors
            .iter()
            .map(|i| {
                format!(
                    "{}{}",
                    escape(i.code.as_deref().unwrap_or("")),
                    i.message
                        .as_deref()
                        .map(|m| format!(" ({})", escape(m)))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    });
    RegistryError::Status {
        action,
        url: url.to_string(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parses_with_commas_in_quotes() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
    }

    #[test]
    fn basic_challenge_parses() {
        let (s, p) = parse_challenge(r#"Basic realm=Registry"#);
        assert_eq!(s, "basic");
        assert_eq!(p, vec![("realm".to_string(), "Registry".to_string())]);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        use std::time::{Duration as D, SystemTime, UNIX_EPOCH};
        // 1994-11-06 08:49:37 UTC, RFC 9110's example.
        let at = UNIX_EPOCH + D::from_secs(784111777);
        let now = at - D::from_secs(90);
        assert_eq!(retry_after("120", now), Some(D::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(D::ZERO));
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(retry_after(date, now), Some(D::from_secs(90)), "{date}");
        }
        // A date past is no wait.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + D::from_secs(5)),
            Some(D::ZERO)
        );
        assert_eq!(
            retry_after("Thu, 01 Jan 1970 00:00:00 GMT", SystemTime::UNIX_EPOCH),
            Some(D::ZERO)
        );
        assert_eq!(http_date("Tue, 29 Feb 2028 23:59:60 GMT"), Some(1835481600));
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }
}
