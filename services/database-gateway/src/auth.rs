//! The gateway's two credentials: the service token every caller presents
//! (`DATASTORE_TOKEN`, when set), and the loader's Basic auth on `/load`.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kit::ApiError;

use crate::AppState;

/// The user name the loader presents in Basic auth.
pub const LOADER_USER: &str = "svc-loader";

/// Requires `Authorization: Bearer <DATASTORE_TOKEN>` when a token is configured.
pub async fn require_service_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(expected) = state.datastore_token.as_deref() {
        let presented = bearer(req.headers());
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), expected.as_bytes())) {
            return ApiError::unauthorized("missing or invalid service token").into_response();
        }
    }
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks Basic `svc-loader:<SVC_LOADER_TOKEN>`.
pub fn check_loader(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = state.loader_token.as_deref() else {
        return Err(ApiError::forbidden(
            "/load is disabled: start the gateway with SVC_LOADER_TOKEN set",
        ));
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| STANDARD.decode(encoded.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let Some(credentials) = presented else {
        return Err(ApiError::unauthorized(
            "/load needs Basic auth as svc-loader",
        ));
    };
    let ok = credentials.split_once(':').is_some_and(|(user, token)| {
        user == LOADER_USER && constant_time_eq(token.as_bytes(), expected.as_bytes())
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid loader credentials"))
    }
}

/// Compares without an early exit, so timing does not reveal a token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_only_equal_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
