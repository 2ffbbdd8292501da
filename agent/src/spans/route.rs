//! Low-cardinality routes from request paths, for span names and metric labels.
//!
//! Without the application's router the agent infers templates: path segments that
//! look like identifiers (numbers, UUIDs, hex digests, long opaque tokens) become
//! `{id}`; configured patterns (`/users/{id}/orders`) win over the inference. Each
//! service gets at most `max_routes` distinct routes; the rest share one overflow
//! route, counted, so a scanner walking random URLs cannot explode metric series.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicU64, Ordering},
};

/// The route given to requests once a service has `max_routes` routes.
pub const OVERFLOW_ROUTE: &str = "/{overflow}";

fn looks_like_id(segment: &str) -> bool {
    let len = segment.len();
    if len == 0 {
        return false;
    }
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    let hex = segment.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = len == 36
        && segment.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    digits == len
        || uuid
        || (hex && len >= 8 && digits > 0)
        || (len >= 20
            && digits > 0
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=.~".contains(&b)))
}

/// The path of a request target: no query, no fragment, no scheme and authority.
pub fn path_of(target: &str) -> &str {
    let path = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// Templates a path: identifier-like segments become `{id}`.
pub fn template(path: &str) -> String {
    if path == "*" {
        return "*".into();
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if looks_like_id(segment) {
            "{id}"
        } else {
            segment
        });
    }
    if out.is_empty() { "/".into() } else { out }
}

/// A configured route pattern: `{name}` segments match any one segment.
#[derive(Clone, Debug)]
pub struct Pattern {
    segments: Vec<String>,
    text: String,
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        Pattern {
            segments: text.split('/').map(str::to_string).collect(),
            text: text.to_string(),
        }
    }

    fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        parts.len() == self.segments.len()
            && self
                .segments
                .iter()
                .zip(&parts)
                .all(|(p, s)| (p.starts_with('{') && p.ends_with('}') && !s.is_empty()) || p == s)
    }
}

/// Routes per service, bounded.
pub struct Routes {
    patterns: Vec<Pattern>,
    max_routes: usize,
    seen: HashMap<String, HashSet<String>>,
    /// Requests given the overflow route.
    pub overflowed: AtomicU64,
}

impl Routes {
    pub fn new(patterns: &[String], max_routes: usize) -> Routes {
        Routes {
            patterns: patterns.iter().map(|p| Pattern::new(p)).collect(),
            max_routes,
            seen: HashMap::new(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// The route of a request path for `service`.
    pub fn route(&mut self, service: &str, path: &str) -> String {
        let route = self
            .patterns
            .iter()
            .find(|p| p.matches(path))
            .map_or_else(|| template(path), |p| p.text.clone());
        let seen = self.seen.entry(service.to_string()).or_default();
        if seen.contains(&route) {
            return route;
        }
        if seen.len() >= self.max_routes {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return OVERFLOW_ROUTE.into();
        }
        seen.insert(route.clone());
        route
    }

    /// Whether a name that is already bounded in form (an RPC method) fits
    /// in `service`'s route budget: names seen before always do, new ones
    /// until the budget is spent.
    pub fn admit(&mut self, service: &str, name: &str) -> bool {
        let seen = self.seen.entry(service.to_string()).or_default();
        if seen.contains(name) {
            return true;
        }
        if seen.len() >= self.max_routes {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        seen.insert(name.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_identifier_segments() {
        for (path, want) in [
            ("/users/42/orders", "/users/{id}/orders"),
            ("/items/550e8400-e29b-41d4-a716-446655440000", "/items/{id}"),
            ("/blobs/sha/9f86d081884c7d65", "/blobs/sha/{id}"),
            ("/s/aGVsbG8gd29ybGQgdG9rZW4xMjM0NTY", "/s/{id}"),
            ("/api/v1/health", "/api/v1/health"),
            ("/static/app.js", "/static/app.js"),
            ("/cafe", "/cafe"),
            ("/", "/"),
            ("", "/"),
        ] {
            assert_eq!(template(path), want, "{path}");
        }
    }

    #[test]
    fn paths_lose_query_and_authority() {
        assert_eq!(path_of("/search?q=secret#frag"), "/search");
        assert_eq!(path_of("http://example.com:8080/a/b?x=1"), "/a/b");
        assert_eq!(path_of("http://example.com"), "/");
    }

    #[test]
    fn patterns_win_and_routes_are_bounded_per_service() {
        let mut r = Routes::new(&["/users/{name}/profile".into()], 2);
        assert_eq!(
            r.route("svc", "/users/alice/profile"),
            "/users/{name}/profile"
        );
        assert_eq!(r.route("svc", "/a"), "/a");
        assert_eq!(r.route("svc", "/b"), OVERFLOW_ROUTE);
        assert_eq!(r.route("svc", "/a"), "/a");
        assert_eq!(r.route("other", "/b"), "/b");
        assert_eq!(r.overflowed.load(Ordering::Relaxed), 1);
    }
}
