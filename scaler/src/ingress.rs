//! The ingress on 30080: one base URL for every scenario, routing by path prefix to
//! each service's balancer, as the course's Istio gateway did.

use std::sync::Arc;

use kit::ApiError;

use crate::Platform;
use crate::balancer::Balancer;

/// Path prefixes and the service that owns them.
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/user", "user"),
    ("/api/v1/music", "music"),
    ("/api/v1/playlist", "playlist"),
    ("/fibonacci", "fibonacci"),
    ("/status", "fibonacci"),
];

/// The service a path belongs to, if any.
pub fn route(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(prefix, _)| {
            path == *prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .map(|(_, service)| *service)
}

/// The balancer of the service that owns `path`: 404 for a path no service owns,
/// 503 for a service this scaler does not run.
pub fn balancer_for(platform: &Platform, path: &str) -> Result<Arc<Balancer>, ApiError> {
    let Some(service) = route(path) else {
        let known: Vec<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
        return Err(ApiError::not_found(format!(
            "no service serves this path; the ingress routes {}",
            known.join(", ")
        )));
    };
    match platform.services.get(service) {
        Some(s) => Ok(s.balancer.clone()),
        None => Err(ApiError::unavailable(format!(
            "{service} is not running under this scaler"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn prefixes_route_to_their_service() {
        assert_eq!(route("/api/v1/music/abc"), Some("music"));
        assert_eq!(route("/api/v1/music/"), Some("music"));
        assert_eq!(route("/api/v1/user/login"), Some("user"));
        assert_eq!(route("/fibonacci"), Some("fibonacci"));
        assert_eq!(route("/status"), Some("fibonacci"));
        assert_eq!(route("/api/v1/musical"), None);
        assert_eq!(route("/"), None);
    }
}
