//! A small HTTP server on threads of its own, beside the event loop: the operators' routes
//! ([`ops`]: `/metrics`, `/health`) on a [`Router`] that other features can extend.
//!
//! Built on `tiny_http`: it parses HTTP/1.1 (keep-alive, chunked bodies) on its own threads,
//! so the mio loop stays the protocol's alone and a slow scraper never touches it.

pub mod ops;
pub mod router;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use tiny_http::{Header, Response};

use crate::metrics::Metrics;
use crate::server::ShutdownHandle;
pub use router::{Reply, Router};

/// Serves the server's routes on `addr`: today the operators' ([`ops`]); other features add
/// theirs here.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: ShutdownHandle,
) -> io::Result<HttpServer> {
    HttpServer::start(addr, ops::routes(Router::new(), metrics, shutdown))
}

/// A running HTTP server; stops when dropped.
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `addr` and serves `router`'s routes from a thread.
    pub fn start(addr: SocketAddr, router: Router) -> io::Result<HttpServer> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(io::Error::other)?);
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("not an IP listener"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = Arc::clone(&server);
            let stopping = Arc::clone(&stopping);
            thread::Builder::new().name("http".into()).spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    match server.recv() {
                        Ok(request) => answer(&router, request),
                        Err(error) => log::debug!("http: {error}"),
                    }
                }
            })?
        };
        Ok(HttpServer {
            server,
            addr,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the http thread panicked");
            }
        }
    }
}

fn answer(router: &Router, mut request: tiny_http::Request) {
    let reply = router.respond(&mut request);
    log::debug!(
        "http: {} {} -> {}",
        request.method(),
        request.url(),
        reply.status
    );
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    let headers = [
        ("Content-Type", Some(reply.content_type)),
        ("Allow", reply.allow.as_deref()),
    ];
    for (name, value) in headers {
        let Some(value) = value else { continue };
        match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(header) => response.add_header(header),
            Err(()) => log::error!("http: invalid header {name}: {value}"),
        }
    }
    if let Err(error) = request.respond(response) {
        log::debug!("http: cannot answer: {error}");
    }
}
