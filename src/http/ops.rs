//! The operators' routes: Prometheus metrics, and a health check for load balancers.

use std::sync::Arc;

use super::{Reply, Router};
use crate::metrics::{prometheus, Metrics};
use crate::server::ShutdownHandle;

/// Adds `GET /metrics` and `GET /health` (200 "ok" while serving, 503 once shutting down, so
/// that a balancer stops sending clients before the listener closes).
pub fn routes(router: Router, metrics: Arc<Metrics>, shutdown: ShutdownHandle) -> Router {
    router
        .get("/metrics", move |_| {
            Reply::new(200, prometheus::CONTENT_TYPE, prometheus::encode(&metrics))
        })
        .get("/health", move |_| {
            if shutdown.is_requested() {
                Reply::text(503, "shutting down\n")
            } else {
                Reply::text(200, "ok\n")
            }
        })
}

#[cfg(test)]
mod tests {
    use mio::{Poll, Token, Waker};
    use tiny_http::TestRequest;

    use super::*;

    fn get(router: &Router, path: &str) -> Reply {
        let mut request = TestRequest::new().with_path(path).into();
        router.respond(&mut request)
    }

    #[test]
    fn health_is_ok_until_shutdown_begins() {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let shutdown = ShutdownHandle::new(waker);
        let router = routes(Router::new(), Arc::default(), shutdown.clone());
        let health = get(&router, "/health");
        assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
        shutdown.shutdown();
        assert_eq!(get(&router, "/health").status, 503);
        let metrics = get(&router, "/metrics");
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, prometheus::CONTENT_TYPE);
    }
}
