//! The `/api/v1/user` routes (API.md "user").

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use kit::api::{Paging, short, text};
use kit::auth::REVOKED_FIELD;
use kit::datastore::{DatastoreError, Updated};
use kit::docs::ErrorBody;
use kit::{ApiError, AppJson, AppQuery, Caller};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::AppState;

const OBJTYPE: &str = "user";
const PASSWORD_FIELD: &str = "password_hash";
/// Fields kept on the user item that are never returned.
const INTERNAL: [&str; 2] = [PASSWORD_FIELD, REVOKED_FIELD];
/// Longest accepted password, in characters (Argon2 takes any, but bodies stay small).
const MAX_PASSWORD: usize = 1024;
/// Conditional-update attempts before a logoff gives up (it has heavy contention only
/// if one user logs off hundreds of tokens at once).
const MAX_ATTEMPTS: usize = 50;

#[derive(OpenApi)]
#[openapi(
    info(title = "scalelab user service", description = "CMPT 756 user service (s1): users, login and logoff."),
    paths(create, list, read, update, delete, login, logoff),
    components(schemas(NewUser, UserChanges, Login, Logoff, UserId, User, UserPage, UserRead, Empty, ErrorBody)),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// A new user; the email must not belong to another user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    fname: String,
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    lname: String,
    #[schema(
        min_length = 3,
        max_length = 1024,
        pattern = r"^\s*[^@\s\x00]+@[^\s\x00]+\s*$"
    )]
    email: String,
    /// Stored only as an Argon2 hash, and then required at login. Required with
    /// `AUTH_MODE=jwt`; optional in presence mode (as the course's users).
    #[schema(min_length = 1, max_length = 1024)]
    password: Option<String>,
}

/// Fields of a user to change; at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UserChanges {
    #[serde(default, deserialize_with = "kit::extract::not_null")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 1024, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    fname: Option<String>,
    #[serde(default, deserialize_with = "kit::extract::not_null")]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 1024, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    lname: Option<String>,
    #[serde(default, deserialize_with = "kit::extract::not_null")]
    #[schema(value_type = String, required = false, min_length = 3, max_length = 1024, pattern = r"^\s*[^@\s\x00]+@[^\s\x00]+\s*$")]
    email: Option<String>,
}

/// The id of the user a change was made to.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct UserId {
    user_id: String,
}

/// A user as others see them; `email` only to the user themselves (and in presence mode).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct User {
    user_id: String,
    fname: String,
    lname: String,
    email: Option<String>,
}

/// One page of users; `next` is the `cursor` of the following page (`null` at the end).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct UserPage {
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Items")]
    items: Vec<User>,
    next: Option<String>,
}

/// A user read: `Count` 1 and the user.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct UserRead {
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Items")]
    #[schema(min_items = 1, max_items = 1)]
    items: Vec<User>,
}

/// An empty object.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Empty {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user's id.
    #[schema(min_length = 1, max_length = 256)]
    uid: String,
    password: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Logoff {
    /// The token to revoke.
    jwt: String,
}

fn id_body(id: &str) -> Json<Value> {
    Json(json!({ "user_id": id }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no user with user_id `{}`", short(id)))
}

/// A user as `caller` may see them: never the password hash or revocations, and in
/// jwt mode another user's email neither.
fn public(mut fields: Map<String, Value>, caller: &Caller) -> Map<String, Value> {
    for internal in INTERNAL {
        fields.remove(internal);
    }
    let theirs = fields.get("user_id").and_then(Value::as_str);
    if !theirs.is_some_and(|id| caller.is(id)) {
        fields.remove("email");
    }
    fields
}

fn email(value: &str) -> Result<Value, ApiError> {
    let email = text(value, "email")?;
    let ok = email
        .as_str()
        .and_then(|e| e.split_once('@'))
        .is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !local.contains(char::is_whitespace)
                && !domain.contains(char::is_whitespace)
        });
    if ok {
        Ok(email)
    } else {
        Err(ApiError::bad_request("`email` is not an email address"))
    }
}

fn duplicate_email() -> ApiError {
    ApiError::conflict("another user already has this email")
}

/// Emails are kept unique with a claim item per address in the user table
/// (`user_id` = `email:<address>`, `claim_owner` = the user's id): the gateway's
/// create-if-absent makes two sign-ups with one address race-free. Claims never
/// appear in answers.
const CLAIM_PREFIX: &str = "email:";

/// A claim whose user does not exist is taken over only after this long (creating a
/// user takes milliseconds; a claim older than this was left by a failed creation).
const STALE_CLAIM_MS: u64 = 30_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `owner` still holds the claim on `address`.
async fn holds_claim(state: &AppState, address: &str, owner: &str) -> Result<bool, ApiError> {
    let claim = state.datastore.read(OBJTYPE, &claim_id(address)).await?;
    Ok(claim.is_some_and(|c| c.fields.get("claim_owner").and_then(Value::as_str) == Some(owner)))
}

fn claim_id(address: &str) -> String {
    format!("{CLAIM_PREFIX}{}", address.to_lowercase())
}

/// Takes the claim on `address` for `owner`; `Err(409)` if a live user holds it.
async fn claim(state: &AppState, address: &str, owner: &str) -> Result<(), ApiError> {
    let id = claim_id(address);
    let mut claimed = false;
    for _ in 0..5 {
        let fields = Map::from_iter([
            ("user_id".to_owned(), Value::String(id.clone())),
            ("claim_owner".to_owned(), Value::String(owner.to_owned())),
            ("claimed_at".to_owned(), json!(now_ms())),
        ]);
        match state.datastore.write(OBJTYPE, fields).await {
            Ok(_) => {
                claimed = true;
                break;
            }
            Err(DatastoreError::Refused(StatusCode::CONFLICT, _)) => {
                let Some(existing) = state.datastore.read(OBJTYPE, &id).await? else {
                    continue;
                };
                let holder = existing
                    .fields
                    .get("claim_owner")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if holder == owner {
                    claimed = true;
                    break;
                }
                // A live holder, or a claim so fresh that its user is still being
                // written: the address is taken.
                let claimed_at = existing
                    .fields
                    .get("claimed_at")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if now_ms().saturating_sub(claimed_at) < STALE_CLAIM_MS
                    || state.datastore.read(OBJTYPE, &holder).await?.is_some()
                {
                    return Err(duplicate_email());
                }
                // Left behind by a user that is gone: take it over.
                let fields = Map::from_iter([
                    ("claim_owner".to_owned(), Value::String(owner.to_owned())),
                    ("claimed_at".to_owned(), json!(now_ms())),
                ]);
                if state
                    .datastore
                    .update(OBJTYPE, &id, &fields, Some(&existing.etag))
                    .await?
                    == Updated::Done
                {
                    claimed = true;
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !claimed {
        return Err(ApiError::unavailable(
            "this email is being claimed right now; retry",
        ));
    }
    // Users loaded without claims (the course CSVs): found by their email field.
    let found = state.datastore.find(OBJTYPE, "email", address, 10).await?;
    if found
        .iter()
        .filter_map(|u| u.get("user_id").and_then(Value::as_str))
        .any(|holder| holder != owner)
    {
        release(state, address, owner).await?;
        return Err(duplicate_email());
    }
    Ok(())
}

/// Gives up `owner`'s claim on `address` (if it is still theirs).
async fn release(state: &AppState, address: &str, owner: &str) -> Result<(), ApiError> {
    let id = claim_id(address);
    if let Some(existing) = state.datastore.read(OBJTYPE, &id).await?
        && existing.fields.get("claim_owner").and_then(Value::as_str) == Some(owner)
    {
        state.datastore.delete(OBJTYPE, &id).await?;
    }
    Ok(())
}

fn is_claim(id: &str) -> bool {
    id.starts_with(CLAIM_PREFIX)
}

/// Create a user. With `AUTH_MODE=jwt` a password is required.
#[utoipa::path(post, path = "/api/v1/user/", request_body = NewUser, security(()),
    responses((status = 200, body = UserId, example = json!({"user_id": "b66f61e7-4fad-402f-aaad-101e3e2522d3"})),
              (status = 400, body = ErrorBody), (status = 409, description = "The email is taken", body = ErrorBody),
              (status = 503, description = "Too many password hashes at once (`Retry-After`)", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    AppJson(user): AppJson<NewUser>,
) -> Result<Response, ApiError> {
    let mut fields = Map::new();
    fields.insert("fname".into(), text(&user.fname, "fname")?);
    fields.insert("lname".into(), text(&user.lname, "lname")?);
    let address = email(&user.email)?;
    let address_text = address.as_str().unwrap_or_default().to_owned();
    fields.insert("email".into(), address);
    if user.password.is_none() && state.auth.mode() == kit::auth::AuthMode::Jwt {
        return Err(ApiError::bad_request(
            "`password` is required (AUTH_MODE=jwt): users log in with it",
        ));
    }
    if let Some(password) = user.password {
        if password.is_empty() || password.chars().count() > MAX_PASSWORD {
            return Err(ApiError::bad_request(format!(
                "`password` must be 1 to {MAX_PASSWORD} characters"
            )));
        }
        fields.insert(
            PASSWORD_FIELD.into(),
            Value::String(state.passwords.hash(password).await?),
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    claim(&state, &address_text, &id).await?;
    fields.insert("user_id".into(), Value::String(id.clone()));
    if let Err(e) = state.datastore.write(OBJTYPE, fields).await {
        release(&state, &address_text, &id).await?;
        return Err(e.into());
    }
    // The claim could only have been taken over if this creation stalled for longer
    // than STALE_CLAIM_MS; then the other user keeps the address.
    if !holds_claim(&state, &address_text, &id).await? {
        state.datastore.delete(OBJTYPE, &id).await?;
        return Err(duplicate_email());
    }
    Ok(id_body(&id).into_response())
}

/// List users, a page at a time.
#[utoipa::path(get, path = "/api/v1/user/", params(Paging),
    responses((status = 200, body = UserPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    AppQuery(paging): AppQuery<Paging>,
) -> Result<Response, ApiError> {
    let page = state
        .datastore
        .list_shaped(OBJTYPE, &paging, |fields| {
            let claim = fields
                .get("user_id")
                .and_then(Value::as_str)
                .is_some_and(is_claim);
            (!claim).then(|| public(fields, &caller))
        })
        .await?;
    Ok(Json(page).into_response())
}

/// Read a user.
#[utoipa::path(get, path = "/api/v1/user/{user_id}", params(("user_id" = String, Path)),
    responses((status = 200, body = UserRead), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = find_user(&state, &id).await?;
    Ok(Json(json!({"Count": 1, "Items": [public(user.fields, &caller)]})).into_response())
}

/// Change a user's names or email (in jwt mode, only one's own).
#[utoipa::path(put, path = "/api/v1/user/{user_id}", params(("user_id" = String, Path)), request_body = UserChanges,
    responses((status = 200, body = UserId, example = json!({"user_id": "b66f61e7-4fad-402f-aaad-101e3e2522d3"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Another user", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(changes): AppJson<UserChanges>,
) -> Result<Response, ApiError> {
    caller.must_be(&id)?;
    let mut fields = Map::new();
    if let Some(fname) = &changes.fname {
        fields.insert("fname".into(), text(fname, "fname")?);
    }
    if let Some(lname) = &changes.lname {
        fields.insert("lname".into(), text(lname, "lname")?);
    }
    let new_email = changes.email.as_deref().map(email).transpose()?;
    if fields.is_empty() && new_email.is_none() {
        return Err(ApiError::bad_request(
            "name at least one of fname, lname, email",
        ));
    }
    let current = find_user(&state, &id).await?;
    let old_email = current
        .fields
        .get("email")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let changed_email = new_email
        .as_ref()
        .and_then(Value::as_str)
        .filter(|new| {
            old_email
                .as_deref()
                .is_none_or(|old| !old.eq_ignore_ascii_case(new))
        })
        .map(str::to_owned);
    if let Some(address) = &changed_email {
        claim(&state, address, &id).await?;
    }
    if let Some(address) = new_email {
        fields.insert("email".into(), address);
    }
    match state.datastore.update(OBJTYPE, &id, &fields, None).await? {
        Updated::Done => {
            if let (Some(_), Some(old)) = (&changed_email, &old_email) {
                release(&state, old, &id).await?;
            }
            Ok(id_body(&id).into_response())
        }
        Updated::NotFound => Err(not_found(&id)),
        Updated::Stale => Err(ApiError::internal("unconditional update answered 412")),
    }
}

/// Delete a user (their tokens stop working; in jwt mode, only one's own account).
#[utoipa::path(delete, path = "/api/v1/user/{user_id}", params(("user_id" = String, Path)),
    responses((status = 200, body = UserId, example = json!({"user_id": "b66f61e7-4fad-402f-aaad-101e3e2522d3"})),
              (status = 401, body = ErrorBody), (status = 403, description = "Another user", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.must_be(&id)?;
    let user = find_user(&state, &id).await?;
    let deleted = state.datastore.delete(OBJTYPE, &id).await?;
    state.auth.forget(&id);
    if !deleted {
        return Err(not_found(&id));
    }
    if let Some(address) = user.fields.get("email").and_then(Value::as_str) {
        release(&state, address, &id).await?;
    }
    Ok(id_body(&id).into_response())
}

/// A user by id; claims are not users.
async fn find_user(state: &AppState, id: &str) -> Result<kit::datastore::Versioned, ApiError> {
    if is_claim(id) {
        return Err(not_found(id));
    }
    state
        .datastore
        .read(OBJTYPE, id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Log in: the body of the answer is the bare JWT (text/plain), as the course's.
///
/// A user with a password needs it. A user without one (course data loaded from CSV)
/// logs in by `uid` alone only in presence mode or where `ALLOW_UID_LOGIN` is on.
/// Repeated failures for one user are answered 429 for a while (per replica).
#[utoipa::path(put, path = "/api/v1/user/login", request_body = Login, security(()),
    responses((status = 200, description = "The token", body = String, content_type = "text/plain"),
              (status = 400, body = ErrorBody), (status = 401, description = "Unknown user or wrong password", body = ErrorBody),
              (status = 429, description = "Too many failed logins for this user (`Retry-After`)", body = ErrorBody),
              (status = 503, description = "Too many password checks at once (`Retry-After`)", body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    AppJson(login): AppJson<Login>,
) -> Result<Response, ApiError> {
    if login.uid.is_empty() || login.uid.len() > 256 {
        return Err(ApiError::bad_request("`uid` must be a user id"));
    }
    state.throttle.check(&login.uid)?;
    let outcome = check_login(&state, &login).await;
    match &outcome {
        Ok(()) => state.throttle.succeeded(&login.uid),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => state.throttle.failed(&login.uid),
        Err(_) => {}
    }
    outcome?;
    let (token, _) = state.auth.issue(&login.uid);
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response())
}

/// Ok when `login` names a user and proves it as this deployment requires; 401 otherwise.
async fn check_login(state: &AppState, login: &Login) -> Result<(), ApiError> {
    let refused = || ApiError::unauthorized("unknown user or wrong password");
    if is_claim(&login.uid) {
        return Err(refused());
    }
    let user = match state.datastore.read(OBJTYPE, &login.uid).await {
        Ok(Some(user)) => user,
        Ok(None) => return Err(refused()),
        // An id the gateway refuses (e.g. a reserved one) is no user of ours.
        Err(kit::datastore::DatastoreError::Refused(status, _)) if status.is_client_error() => {
            return Err(refused());
        }
        Err(e) => return Err(e.into()),
    };
    match user.fields.get(PASSWORD_FIELD).and_then(Value::as_str) {
        Some(hash) => {
            let Some(password) = login.password.clone() else {
                return Err(refused());
            };
            if state.passwords.verify(password, hash.to_owned()).await? {
                Ok(())
            } else {
                Err(refused())
            }
        }
        None if state.allow_uid_login || state.auth.mode() == kit::auth::AuthMode::Presence => {
            Ok(())
        }
        None => Err(ApiError::unauthorized(
            "this user has no password, and login by uid alone is off (ALLOW_UID_LOGIN)",
        )),
    }
}

/// Log off: revoke a token for every replica (within seconds) until it expires.
#[utoipa::path(put, path = "/api/v1/user/logoff", request_body = Logoff,
    responses((status = 200, body = Empty, example = json!({})), (status = 400, description = "Not a token of ours", body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn logoff(
    _: Caller,
    State(state): State<AppState>,
    AppJson(logoff): AppJson<Logoff>,
) -> Result<Response, ApiError> {
    let claims = match state.auth.decode(&logoff.jwt) {
        Ok(claims) => claims,
        // Expired already: nothing left to revoke.
        Err(kit::auth::TokenError::Expired) => return Ok(Json(json!({})).into_response()),
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "`jwt` is not a token this service issued: {e}"
            )));
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for _ in 0..MAX_ATTEMPTS {
        // The user is gone: their tokens are refused anyway.
        let Some(user) = state.datastore.read(OBJTYPE, &claims.user_id).await? else {
            break;
        };
        let mut revoked: Map<String, Value> = user
            .fields
            .get(REVOKED_FIELD)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        revoked.retain(|_, exp| exp.as_u64().is_some_and(|e| e > now));
        revoked.insert(claims.jti.clone(), json!(claims.exp));
        let fields = Map::from_iter([(REVOKED_FIELD.to_owned(), Value::Object(revoked))]);
        match state
            .datastore
            .update(OBJTYPE, &claims.user_id, &fields, Some(&user.etag))
            .await?
        {
            Updated::Done | Updated::NotFound => break,
            Updated::Stale => continue,
        }
    }
    state.auth.forget(&claims.user_id);
    Ok(Json(json!({})).into_response())
}
