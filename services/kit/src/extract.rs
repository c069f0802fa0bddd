//! Extractors whose rejections use the JSON error envelope.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. Unlike `axum::Json` it does not insist on a `Content-Type` (the course
/// clients and `curl -d` users do not always send one) and every rejection is an
/// [`ApiError`]: 400 for bad JSON or a wrong shape, 413 over the body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(AppJson)
    }
}

/// Parses a JSON body into `T`, with the messages [`AppJson`] uses.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON object was expected",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "invalid JSON"
        } else {
            "invalid body"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

/// For an optional body field that may be left out but is never `null` (a name can be
/// changed, not cleared): `#[serde(default, deserialize_with = "kit::extract::not_null")]`,
/// with `#[schema(value_type = String, required = false)]` so the document says the same.
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For an optional body field where `null` means "clear it": tells absent (`None`,
/// with `#[serde(default)]`) from `null` (`Some(None)`).
pub fn absent_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
    } else {
        ApiError::bad_request(format!("could not read the request body: {rejection}"))
    }
}

/// A query string deserialized into `T`; a bad one is a 400 with the envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| AppQuery(v))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
            })
    }
}
