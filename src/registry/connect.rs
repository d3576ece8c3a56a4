//! The HTTP agent of registry requests and `ADD URL` downloads: ureq's own resolver and
//! connector chain (CONNECT proxy, TCP, rustls), except that looking the host's name up
//! and opening a TCP connection end at once on SIGINT or SIGTERM ([`crate::interrupt`]).
//!
//! ureq opens a connection with a blocking `connect(2)` bounded only by the connect
//! timeout ([`super::CONNECT_TIMEOUT_VAR`]), and the standard library retries it through
//! `EINTR`: a registry whose address drops packets (a firewall, a full listen backlog)
//! held a pull for the whole timeout whatever signal came. Here ureq's TCP connector runs
//! on a thread of its own while the request's thread waits for it, looking for a signal
//! every [`POLL`]: on one, the request fails with [`crate::interrupt::Interrupted`] (and
//! so through the caller's error path) and the connecting thread is left to end by its
//! timeout, its socket closed then. Once open, the connection is ureq's as usual (its
//! shutdown on a signal included: [`super::Client`]).
//!
//! The name lookup before it is the same story: `getaddrinfo(3)` blocks until the
//! resolver answers or gives up (`options timeout:N attempts:N` of resolv.conf, seconds
//! each), and ureq waits for it up to the request's deadline. It runs on a thread of its
//! own too ([`Lookup`]), given up on a signal the same way; the lookup itself cannot be
//! cancelled, so its thread ends when the resolver gives up (or with the process).
//!
//! Depends only on ureq and [`crate::interrupt`].

use std::sync::mpsc;
use std::time::Duration;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs};
use ureq::unversioned::transport::NextTimeout;
use ureq::unversioned::transport::{
    ConnectProxyConnector, ConnectionDetails, Connector, Either, RustlsConnector, TcpConnector,
    Transport,
};

/// How often a connection being opened looks for a signal.
const POLL: Duration = Duration::from_millis(20);

/// An agent with `config` whose connections open as this module describes.
pub fn agent(config: ureq::config::Config) -> ureq::Agent {
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(Interruptible)
            .chain(RustlsConnector::default());
    ureq::Agent::with_parts(config, connector, Lookup)
}

/// Whether SIGINT or SIGTERM came, as ureq's error.
fn interrupted() -> Result<(), ureq::Error> {
    crate::interrupt::interrupted().map_err(|e| ureq::Error::Io(std::io::Error::other(e)))
}

/// The answer `thread` sends on `rx`, looking for a signal every [`POLL`] while it
/// comes: on one, [`interrupted`]'s error, the thread being left to end on its own.
fn wait_for<T>(rx: mpsc::Receiver<Result<T, ureq::Error>>, thread: &str) -> Result<T, ureq::Error> {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(r) => return r,
            Err(mpsc::RecvTimeoutError::Timeout) => interrupted()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ureq::Error::Io(std::io::Error::other(format!(
                    "{thread} thread ended without an answer"
                ))))
            }
        }
    }
}

/// ureq's [`DefaultResolver`] (the system's `getaddrinfo`, within the request's
/// timeout), on a thread of its own, given up on a signal.
#[derive(Debug)]
struct Lookup;

impl ureq::unversioned::resolver::Resolver for Lookup {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        interrupted()?;
        let (uri, config) = (uri.clone(), config.clone());
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("resolve".into())
            .spawn(move || {
                let r = DefaultResolver::default().resolve(&uri, &config, timeout);
                // Nobody waits any more after a signal.
                let _ = tx.send(r);
            })
            .map_err(ureq::Error::Io)?;
        wait_for(rx, "name lookup")
    }
}

/// ureq's [`TcpConnector`], on a thread of its own, given up on a signal.
#[derive(Debug)]
struct Interruptible;

impl<In: Transport> Connector<In> for Interruptible {
    type Out = Either<In, Box<dyn Transport>>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(t) = chained {
            // A CONNECT proxy's tunnel, opened through this connector already.
            return Ok(Some(Either::A(t)));
        }
        interrupted()?;
        // What the thread needs of `details`, owned.
        let uri = details.uri.clone();
        let addrs = details.addrs.clone();
        let config = details.config.clone();
        let (request_level, now, timeout) = (details.request_level, details.now, details.timeout);
        let current_time = details.current_time.clone();
        let run_connector = details.run_connector.clone();
        let register_shutdown = details.register_shutdown.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let resolver = DefaultResolver::default();
                let d = ConnectionDetails {
                    uri: &uri,
                    addrs,
                    config: &config,
                    request_level,
                    resolver: &resolver,
                    now,
                    timeout,
                    current_time,
                    run_connector,
                    register_shutdown,
                };
                let r = Connector::<()>::connect(&TcpConnector::default(), &d, None)
                    .map(|t| t.map(|t| Box::new(t) as Box<dyn Transport>));
                // Nobody waits any more after a signal: the connection just closes.
                let _ = tx.send(r);
            })
            .map_err(ureq::Error::Io)?;
        wait_for(rx, "connecting").map(|t| t.map(Either::B))
    }
}
