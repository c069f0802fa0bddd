//! Authentication of the app's services (API.md "Auth").
//!
//! `jwt` mode (default): `PUT /api/v1/user/login` issues an HS256 JWT with the claims
//! `user_id`, `iat`, `exp`, `jti`; every protected route checks the signature, the
//! expiry, that the user still exists and that the token was not revoked by a logoff.
//! Revocations live on the user item (`revoked_tokens`: jti -> exp), so every replica
//! of every service sees them; each replica caches a user's revocations for at most
//! [`REVOCATION_CACHE_TTL`], which bounds how long a revoked token keeps working.
//!
//! `presence` mode: any non-empty `Authorization` header passes, as the course
//! services behaved, so the course's fixed-token clients run unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::datastore::Datastore;
use crate::error::ApiError;

/// The longest a revoked token keeps working on a replica that did not handle the logoff.
pub const REVOCATION_CACHE_TTL: Duration = Duration::from_secs(2);
/// The user attribute holding revoked token ids and their expiry times.
pub const REVOKED_FIELD: &str = "revoked_tokens";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Verify an HS256 JWT from `PUT /api/v1/user/login`.
    Jwt,
    /// Accept any non-empty Authorization header (course compatibility).
    Presence,
}

/// The claims of our tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub user_id: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Signs `claims` as a compact HS256 JWT.
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Why a token was refused; each is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token is not HS256")]
    WrongAlgorithm,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token has been revoked")]
    Revoked,
    #[error("the token's user no longer exists")]
    UnknownUser,
}

/// Checks the signature (constant time) and the expiry, and returns the claims.
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    if header["alg"] != "HS256" {
        return Err(TokenError::WrongAlgorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(&token.as_bytes()[..token.rfind('.').unwrap_or(0)]);
    m.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// A user's revocations as one replica last saw them.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    exists: bool,
    revoked: Arc<[String]>,
}

/// Issues and checks tokens for one service replica. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    mode: AuthMode,
    secret: Arc<[u8]>,
    ttl: Duration,
    datastore: Option<Datastore>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    /// Tokens whose signature was checked already: a token is used many times, and the
    /// check (HMAC, base64, two JSON parses) costs more than the lookup.
    verified: Arc<Mutex<HashMap<String, Claims>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Entries kept in the revocation cache before old ones are dropped.
const SEEN_CAPACITY: usize = 100_000;

impl Auth {
    /// `datastore` is where user items (and their revocations) are read from; `None`
    /// skips the user and revocation checks (tests of token handling alone).
    pub fn new(mode: AuthMode, secret: &[u8], ttl: Duration, datastore: Option<Datastore>) -> Self {
        Self {
            mode,
            secret: secret.into(),
            ttl,
            datastore,
            seen: Arc::default(),
            verified: Arc::default(),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// A new token for `user_id`.
    pub fn issue(&self, user_id: &str) -> (String, Claims) {
        let iat = now_secs();
        let claims = Claims {
            user_id: user_id.to_owned(),
            iat,
            exp: iat + self.ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        (sign(&claims, &self.secret), claims)
    }

    /// Verifies a token's signature and expiry only.
    pub fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        verify(token, &self.secret, now_secs())
    }

    /// [`Auth::decode`], remembering tokens that passed (expiry is still checked).
    fn decode_cached(&self, token: &str) -> Result<Claims, TokenError> {
        let now = now_secs();
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(claims) = verified.get(token) {
            return if claims.exp > now {
                Ok(claims.clone())
            } else {
                Err(TokenError::Expired)
            };
        }
        drop(verified);
        let claims = verify(token, &self.secret, now)?;
        verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if verified.len() >= SEEN_CAPACITY {
            verified.retain(|_, c| c.exp > now);
            if verified.len() >= SEEN_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    /// Checks an `Authorization` header value as this service's mode says.
    pub async fn check(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let Some(header) = header else {
            return Err(ApiError::unauthorized("missing auth"));
        };
        if self.mode == AuthMode::Presence {
            return Ok(Caller { claims: None });
        }
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <token>`"))?;
        let claims = self
            .decode_cached(token)
            .map_err(|e| ApiError::unauthorized(e.to_string()))?;
        self.check_revocation(&claims).await?;
        Ok(Caller {
            claims: Some(claims),
        })
    }

    async fn check_revocation(&self, claims: &Claims) -> Result<(), ApiError> {
        let Some(datastore) = &self.datastore else {
            return Ok(());
        };
        let cached = self
            .lock()
            .get(&claims.user_id)
            .filter(|s| s.at.elapsed() < REVOCATION_CACHE_TTL)
            .cloned();
        let seen = match cached {
            Some(seen) => seen,
            None => {
                let item = datastore
                    .read("user", &claims.user_id)
                    .await
                    .map_err(ApiError::from)?;
                let seen = Seen {
                    at: Instant::now(),
                    exists: item.is_some(),
                    revoked: item
                        .as_ref()
                        .and_then(|v| v.fields.get(REVOKED_FIELD))
                        .and_then(Value::as_object)
                        .map(|m| m.keys().cloned().collect::<Arc<[String]>>())
                        .unwrap_or_default(),
                };
                let mut map = self.lock();
                if map.len() >= SEEN_CAPACITY {
                    map.retain(|_, s| s.at.elapsed() < REVOCATION_CACHE_TTL);
                }
                map.insert(claims.user_id.clone(), seen.clone());
                seen
            }
        };
        if !seen.exists {
            return Err(ApiError::unauthorized(TokenError::UnknownUser.to_string()));
        }
        if seen.revoked.contains(&claims.jti) {
            return Err(ApiError::unauthorized(TokenError::Revoked.to_string()));
        }
        Ok(())
    }

    /// Forgets what this replica knows of `user_id` (after its logoff or deletion here).
    pub fn forget(&self, user_id: &str) {
        self.lock().remove(user_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Who is calling: the verified claims in `jwt` mode, nothing in `presence` mode.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Option<Claims>,
}

/// The attribute naming the user who created a song or a playlist (jwt mode).
pub const OWNER_FIELD: &str = "owner_id";

impl Caller {
    /// The logged-in user's id; `None` in presence mode, where callers are anonymous.
    pub fn user_id(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.user_id.as_str())
    }

    /// Whether the caller may see what belongs to `user_id` alone (their email): they
    /// are that user, or auth is in presence mode (the course's behaviour).
    pub fn is(&self, user_id: &str) -> bool {
        self.user_id().is_none_or(|me| me == user_id)
    }

    /// In jwt mode, only the owner changes or deletes an item: 403 otherwise, also for
    /// items without an owner (loaded course data, items made in presence mode), which
    /// are read-only there. Presence mode lets anyone, as the course services did.
    pub fn must_own(&self, owner: Option<&str>, what: &str) -> Result<(), ApiError> {
        let Some(me) = self.user_id() else {
            return Ok(());
        };
        match owner {
            Some(owner) if owner == me => Ok(()),
            Some(_) => Err(ApiError::forbidden(format!(
                "only the user who created this {what} may change or delete it"
            ))),
            None => Err(ApiError::forbidden(format!(
                "this {what} has no owner (loaded data): it is read-only with AUTH_MODE=jwt"
            ))),
        }
    }

    /// In jwt mode, users change and delete only themselves: 403 otherwise.
    pub fn must_be(&self, user_id: &str) -> Result<(), ApiError> {
        if self.is(user_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "a user may change or delete only their own account",
            ))
        }
    }

    /// The fields that record the caller as an item's owner (none in presence mode).
    pub fn owner_fields(&self) -> Option<(String, serde_json::Value)> {
        self.user_id().map(|me| {
            (
                OWNER_FIELD.to_owned(),
                serde_json::Value::String(me.to_owned()),
            )
        })
    }
}

/// The owner recorded on an item, if any.
pub fn owner_of(fields: &serde_json::Map<String, serde_json::Value>) -> Option<&str> {
    fields.get(OWNER_FIELD).and_then(serde_json::Value::as_str)
}

/// State types that carry an [`Auth`].
pub trait HasAuth {
    fn auth(&self) -> &Auth;
}

/// Extracting a `Caller` authenticates the request (401 with the envelope otherwise).
impl<S> FromRequestParts<S> for Caller
where
    S: HasAuth + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        state.auth().check(header).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            user_id: "u1".into(),
            iat: 100,
            exp,
            jti: "j1".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let token = sign(&claims(200), b"secret");
        assert_eq!(verify(&token, b"secret", 150), Ok(claims(200)));
        assert_eq!(verify(&token, b"secret", 200), Err(TokenError::Expired));
    }

    #[test]
    fn another_key_or_an_edited_payload_fails_the_signature() {
        let token = sign(&claims(200), b"secret");
        assert_eq!(verify(&token, b"other", 150), Err(TokenError::BadSignature));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut edited = claims(200);
        edited.user_id = "admin".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&edited).expect("json"));
        assert_eq!(
            verify(&parts.join("."), b"secret", 150),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_garbage_are_refused() {
        let token = sign(&claims(200), b"secret");
        let body = token.split('.').nth(1).expect("payload");
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(
            verify(&none, b"secret", 150),
            Err(TokenError::WrongAlgorithm)
        );
        for garbage in ["", "a.b", "a.b.c.d", "!!!.???.***"] {
            assert!(verify(garbage, b"secret", 150).is_err(), "{garbage}");
        }
    }
}
