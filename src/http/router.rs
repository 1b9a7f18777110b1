//! Routes an HTTP request by exact path and method: 404 for an unknown path, 405 (with the
//! allowed methods) for a known path asked with another method.

use tiny_http::{Method, Request};

/// What a route answers.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The methods a path allows, for a 405.
    pub allow: Option<String>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            allow: None,
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }
}

/// A route's handler; it runs on the HTTP thread, never on the event loop.
pub type Handler = Box<dyn Fn(&mut Request) -> Reply + Send + Sync>;

struct Route {
    method: Method,
    path: &'static str,
    handler: Handler,
}

#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a route for `method` on `path` (exact, without the query string).
    pub fn route(
        mut self,
        method: Method,
        path: &'static str,
        handler: impl Fn(&mut Request) -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.routes.push(Route {
            method,
            path,
            handler: Box::new(handler),
        });
        self
    }

    pub fn get(
        self,
        path: &'static str,
        handler: impl Fn(&mut Request) -> Reply + Send + Sync + 'static,
    ) -> Router {
        self.route(Method::Get, path, handler)
    }

    pub fn respond(&self, request: &mut Request) -> Reply {
        let path = request.url().split('?').next().unwrap_or_default();
        let on_path = || self.routes.iter().filter(|route| route.path == path);
        if let Some(route) = on_path().find(|route| route.method == *request.method()) {
            return (route.handler)(request);
        }
        let allowed: Vec<String> = on_path().map(|route| route.method.to_string()).collect();
        if allowed.is_empty() {
            return Reply::text(404, "not found\n");
        }
        Reply {
            allow: Some(allowed.join(", ")),
            ..Reply::text(405, "method not allowed\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use tiny_http::TestRequest;

    use super::*;

    fn router() -> Router {
        Router::new()
            .get("/a", |_| Reply::text(200, "a"))
            .route(Method::Post, "/a", |_| Reply::text(201, "posted"))
            .get("/b", |_| Reply::text(200, "b"))
    }

    fn ask(router: &Router, method: Method, path: &str) -> Reply {
        let mut request = TestRequest::new()
            .with_method(method)
            .with_path(path)
            .into();
        router.respond(&mut request)
    }

    #[test]
    fn requests_go_by_path_and_method() {
        let router = router();
        assert_eq!(ask(&router, Method::Get, "/a").body, b"a");
        assert_eq!(ask(&router, Method::Post, "/a").status, 201);
        assert_eq!(ask(&router, Method::Get, "/b?x=1").body, b"b");
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        let router = router();
        assert_eq!(ask(&router, Method::Get, "/c").status, 404);
        assert_eq!(ask(&router, Method::Get, "/a/").status, 404);
        let refused = ask(&router, Method::Delete, "/a");
        assert_eq!(refused.status, 405);
        assert_eq!(refused.allow.as_deref(), Some("GET, POST"));
        assert_eq!(
            ask(&router, Method::Head, "/b").allow.as_deref(),
            Some("GET")
        );
    }
}
