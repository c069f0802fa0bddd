//! The `/api/v1/datastore` routes (API.md). Handlers parse into domain types, call one
//! store method, and shape the course's response (`{"Count", "Items"}`).

use axum::Json;
use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kit::{ApiError, AppJson, AppQuery};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::AppState;
use crate::domain::{Attrs, ObjType, check_attrs, check_id, truncate};
use crate::store::{Created, IdempotencyKey, Item, Page, StoreError};

/// Items per page when `limit` is not given, and the most a page may hold.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::not_found("no such item"),
            StoreError::VersionMismatch { current } => ApiError::precondition_failed(format!(
                "the item changed: it is at version \"{current}\"; read it again and retry"
            )),
            StoreError::AlreadyExists => ApiError::conflict("an item with this id already exists"),
            StoreError::IdempotencyKeyReused => ApiError::unprocessable(
                "this Idempotency-Key was already used for a different request",
            ),
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "storage unavailable");
                ApiError::unavailable("storage is unavailable; retry shortly")
            }
            StoreError::Internal(cause) => ApiError::internal(format!("{cause:#}")),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    objtype: Option<String>,
    objkey: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    objtype: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FindQuery {
    objtype: Option<String>,
    field: Option<String>,
    value: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .ok_or_else(|| ApiError::bad_request(format!("`{name}` is required")))
}

fn objtype_param(value: &Option<String>) -> Result<ObjType, ApiError> {
    ObjType::parse(required(value, "objtype")?)
}

/// The object type and key of a read, update or delete. Public for the fuzz targets.
pub fn key_params(q: &KeyQuery) -> Result<(ObjType, &str), ApiError> {
    let objtype = objtype_param(&q.objtype)?;
    let key = required(&q.objkey, "objkey")?;
    check_id(key, "objkey")?;
    Ok((objtype, key))
}

/// A page's `limit`: [`DEFAULT_LIMIT`] when absent, 1 to [`MAX_LIMIT`]. Public for the
/// fuzz targets.
pub fn limit_param(value: &Option<String>) -> Result<usize, ApiError> {
    let Some(text) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "`limit` must be a whole number from 1 to {MAX_LIMIT}"
        ))),
    }
}

/// The id a page starts after, from a `cursor` that [`encode_cursor`] made. Public for
/// the fuzz targets.
pub fn cursor_param(value: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(text) = value.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| !id.contains('\0'))
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("`cursor` is not a cursor this gateway returned"))
}

/// The `next` cursor of a page that ends at an engine cursor `after`. Public for the
/// fuzz targets.
pub fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(after)
}

/// A list's object type, page size and cursor. Public for the fuzz targets.
pub fn list_params(q: &ListQuery) -> Result<(ObjType, usize, Option<String>), ApiError> {
    Ok((
        objtype_param(&q.objtype)?,
        limit_param(&q.limit)?,
        cursor_param(&q.cursor)?,
    ))
}

/// A search, parsed from its [`FindQuery`].
#[derive(Debug, PartialEq, Eq)]
pub struct FindParams<'a> {
    pub objtype: ObjType,
    pub field: &'a str,
    pub value: &'a str,
    pub limit: usize,
    pub after: Option<String>,
}

/// A search: object type, field, value, page size and cursor. Public for the fuzz
/// targets.
pub fn find_params(q: &FindQuery) -> Result<FindParams<'_>, ApiError> {
    let objtype = objtype_param(&q.objtype)?;
    let field = required(&q.field, "field")?;
    let value = required(&q.value, "value")?;
    if field.is_empty() {
        return Err(ApiError::bad_request("`field` must not be empty"));
    }
    if field.contains('\0') || value.contains('\0') {
        // No stored name or value holds one (writes refuse them), and PostgreSQL cannot compare them.
        return Err(ApiError::bad_request(
            "`field` and `value` must not contain NUL characters",
        ));
    }
    Ok(FindParams {
        objtype,
        field,
        value,
        limit: limit_param(&q.limit)?,
        after: cursor_param(&q.cursor)?,
    })
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::try_from(format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` header asks for: `None` without one (or with `*`).
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<i64>().map(Some).map_err(|_| {
        ApiError::bad_request("If-Match must be an ETag this gateway returned, such as \"3\"")
    })
}

fn object_body(body: Value) -> Result<Attrs, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_request(format!(
            "request body must be a JSON object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
    }
}

/// Removes a string field from a body: absent is `None`, any other type is a 400.
fn take_string(body: &mut Attrs, field: &str) -> Result<Option<String>, ApiError> {
    match body.remove(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(format!("`{field}` must be a string"))),
    }
}

fn item_json(objtype: ObjType, item: Item) -> Value {
    let mut fields = item.attrs;
    fields.insert(objtype.id_field().to_owned(), Value::String(item.id));
    Value::Object(fields)
}

fn id_response(objtype: ObjType, id: &str, version: Option<i64>) -> Response {
    let body = Json(json!({ objtype.id_field(): id }));
    match version {
        Some(v) => ([(ETAG, etag(v))], body).into_response(),
        None => body.into_response(),
    }
}

fn page_response(objtype: ObjType, page: Page) -> Response {
    let next = page.next.as_deref().map(encode_cursor);
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(|i| item_json(objtype, i))
        .collect();
    Json(json!({ "Count": items.len(), "Items": items, "next": next })).into_response()
}

pub async fn read(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<KeyQuery>,
) -> Result<Response, ApiError> {
    let (objtype, key) = key_params(&q)?;
    let item = state
        .store
        .get(objtype, key)
        .await?
        .ok_or_else(|| not_found(objtype, key))?;
    let version = item.version;
    Ok((
        [(ETAG, etag(version))],
        Json(json!({ "Count": 1, "Items": [item_json(objtype, item)] })),
    )
        .into_response())
}

fn not_found(objtype: ObjType, key: &str) -> ApiError {
    ApiError::not_found(format!(
        "no {} with {} `{}`",
        objtype.as_str(),
        objtype.id_field(),
        truncate(key, 64)
    ))
}

pub async fn write(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let mut attrs = object_body(body)?;
    let fingerprint = fingerprint(&attrs);
    let objtype = ObjType::parse(
        &take_string(&mut attrs, "objtype")?
            .ok_or_else(|| ApiError::bad_request("`objtype` is required"))?,
    )?;
    let id = match take_string(&mut attrs, objtype.id_field())? {
        Some(id) => {
            check_id(&id, objtype.id_field())?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    check_attrs(&attrs)?;
    let idempotency = idempotency_key(&headers, fingerprint)?;
    match state
        .store
        .create(objtype, &id, &attrs, idempotency.as_ref())
        .await?
    {
        Created::New => Ok(id_response(objtype, &id, Some(1))),
        Created::Replayed { id } => {
            let mut response = id_response(objtype, &id, None);
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

fn fingerprint(body: &Attrs) -> String {
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn idempotency_key(
    headers: &HeaderMap,
    fingerprint: String,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        fingerprint,
    }))
}

pub async fn update(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<KeyQuery>,
    headers: HeaderMap,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    let (objtype, key) = key_params(&q)?;
    let expected = if_match(&headers)?;
    let mut set = object_body(body)?;
    if let Some(named) = take_string(&mut set, "objtype")?
        && named != objtype.as_str()
    {
        return Err(ApiError::bad_request(
            "`objtype` in the body differs from the query",
        ));
    }
    if let Some(id) = take_string(&mut set, objtype.id_field())?
        && id != key
    {
        return Err(ApiError::bad_request(format!(
            "`{}` cannot be changed",
            objtype.id_field()
        )));
    }
    if set.is_empty() {
        return Err(ApiError::bad_request("the body names no fields to update"));
    }
    check_attrs(&set)?;
    let version = state
        .store
        .update(objtype, key, &set, expected)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => not_found(objtype, key),
            other => other.into(),
        })?;
    Ok(id_response(objtype, key, Some(version)))
}

pub async fn delete(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<KeyQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (objtype, key) = key_params(&q)?;
    let expected = if_match(&headers)?;
    state
        .store
        .delete(objtype, key, expected)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => not_found(objtype, key),
            other => other.into(),
        })?;
    Ok(id_response(objtype, key, None))
}

pub async fn list(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let (objtype, limit, after) = list_params(&q)?;
    let page = state.store.list(objtype, after.as_deref(), limit).await?;
    Ok(page_response(objtype, page))
}

pub async fn find(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<FindQuery>,
) -> Result<Response, ApiError> {
    let FindParams {
        objtype,
        field,
        value,
        limit,
        after,
    } = find_params(&q)?;
    if field == objtype.id_field() {
        // The key itself: a point read, shaped as a page.
        let items = match state.store.get(objtype, value).await? {
            Some(item) if after.as_deref().is_none_or(|a| item.id.as_str() > a) => vec![item],
            _ => Vec::new(),
        };
        return Ok(page_response(objtype, Page { items, next: None }));
    }
    let page = state
        .store
        .find(objtype, field, value, after.as_deref(), limit)
        .await?;
    Ok(page_response(objtype, page))
}

/// The loader's write: an upsert keyed by the given `uuid`, authenticated separately
/// (Basic `svc-loader:<SVC_LOADER_TOKEN>`). Re-loading the same row changes nothing;
/// the `X-Load-Outcome` header says `created`, `unchanged` or `replaced`.
pub async fn load(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<Value>,
) -> Result<Response, ApiError> {
    crate::auth::check_loader(&state, &headers)?;
    let mut attrs = object_body(body)?;
    let objtype = ObjType::parse(
        &take_string(&mut attrs, "objtype")?
            .ok_or_else(|| ApiError::bad_request("`objtype` is required"))?,
    )?;
    let id = take_string(&mut attrs, "uuid")?
        .ok_or_else(|| ApiError::bad_request("`uuid` is required"))?;
    check_id(&id, "uuid")?;
    if let Some(other) = take_string(&mut attrs, objtype.id_field())?
        && other != id
    {
        return Err(ApiError::bad_request(format!(
            "`{}` differs from `uuid`",
            objtype.id_field()
        )));
    }
    check_attrs(&attrs)?;
    let (outcome, version) = state.store.put(objtype, &id, &attrs).await?;
    let mut response = id_response(objtype, &id, Some(version));
    response
        .headers_mut()
        .insert("x-load-outcome", HeaderValue::from_static(outcome.as_str()));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_reads_strong_weak_and_bare_etags() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers), Ok(None));
        for (value, want) in [
            ("\"7\"", Some(7)),
            ("W/\"7\"", Some(7)),
            ("7", Some(7)),
            ("*", None),
        ] {
            headers.insert(IF_MATCH, HeaderValue::from_static(value));
            assert_eq!(if_match(&headers), Ok(want), "{value}");
        }
        headers.insert(IF_MATCH, HeaderValue::from_static("\"abc\""));
        assert_eq!(
            if_match(&headers).map_err(|e| e.status().as_u16()),
            Err(400)
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let encoded = URL_SAFE_NO_PAD.encode("some-id");
        assert_eq!(cursor_param(&Some(encoded)), Ok(Some("some-id".to_owned())));
        assert!(cursor_param(&Some("!!!".to_owned())).is_err());
        assert_eq!(cursor_param(&None), Ok(None));
    }

    #[test]
    fn limits_outside_one_to_max_are_rejected() {
        assert_eq!(limit_param(&None), Ok(DEFAULT_LIMIT));
        assert_eq!(limit_param(&Some("5".into())), Ok(5));
        for bad in ["0", "-1", "1001", "ten", "1.5"] {
            assert!(limit_param(&Some(bad.into())).is_err(), "{bad}");
        }
    }
}
