//! The ingress on 30080: one base URL for every scenario, routing by path prefix to
//! each service's balancer, as the course's Istio gateway did.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use kit::ApiError;

use crate::Platform;

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

pub async fn handler(State(platform): State<Platform>, req: Request) -> Response {
    let Some(service) = route(req.uri().path()) else {
        let known: Vec<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
        return ApiError::not_found(format!(
            "no service serves this path; the ingress routes {}",
            known.join(", ")
        ))
        .into_response();
    };
    match platform.services.get(service) {
        Some(s) => s.balancer.forward(req).await,
        None => ApiError::unavailable(format!("{service} is not running under this scaler"))
            .into_response(),
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
