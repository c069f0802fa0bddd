//! The storage trait the gateway's routes speak to, and the engines behind it.
//!
//! The trait is shaped for key-value stores (DynamoDB included): one item per
//! `(objtype, id)`, attributes as a map of JSON values, a version for conditional
//! updates, paginated listing by id, and lookup by one attribute.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::DatabaseUrl;
use crate::domain::{Attrs, ObjType};

pub mod dynamodb;
mod postgres;
mod sqlite;

pub use dynamodb::DynamoStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// One stored item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    /// Starts at 1 and grows by one with every change; the gateway's ETag.
    pub version: i64,
    pub attrs: Attrs,
}

/// A page of items, and where the next page starts. The order is the engine's: id
/// order on SQLite and PostgreSQL, scan order on DynamoDB.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub items: Vec<Item>,
    /// An engine cursor to pass back as `after`; `None` on the last page.
    pub next: Option<String>,
}

/// An `Idempotency-Key` and the fingerprint of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

/// What `create` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new item, at version 1.
    New,
    /// The idempotency key was seen before with the same request: this is its item id.
    Replayed { id: String },
}

/// What `put` (the loader's upsert) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Unchanged,
    Replaced,
}

impl PutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Unchanged => "unchanged",
            Self::Replaced => "replaced",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such item")]
    NotFound,
    #[error("the item is at version {current}")]
    VersionMismatch { current: i64 },
    #[error("an item with this id already exists")]
    AlreadyExists,
    #[error("the idempotency key was used before with a different request")]
    IdempotencyKeyReused,
    /// The engine cannot be reached right now (a 503, worth retrying).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The engine's name, for logs and `/readiness`.
    fn engine(&self) -> &'static str;

    /// Ok when the engine answers and its schema is in place.
    async fn ping(&self) -> StoreResult<()>;

    async fn get(&self, objtype: ObjType, id: &str) -> StoreResult<Option<Item>>;

    /// Inserts a new item at version 1. With an idempotency key (scoped to the object
    /// type), a request seen before returns the first result instead; the key is
    /// recorded in the same transaction as the item.
    async fn create(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created>;

    /// Sets the given attributes (others are kept) and returns the new version. With
    /// `expected`, only if the item is at that version.
    async fn update(
        &self,
        objtype: ObjType,
        id: &str,
        set: &Attrs,
        expected: Option<i64>,
    ) -> StoreResult<i64>;

    async fn delete(&self, objtype: ObjType, id: &str, expected: Option<i64>) -> StoreResult<()>;

    /// Creates or replaces an item with exactly `attrs` (the loader's write). Replacing
    /// with equal attributes changes nothing, not even the version.
    async fn put(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
    ) -> StoreResult<(PutOutcome, i64)>;

    /// The page of items after the cursor `after` (a `Page::next` of this engine).
    async fn list(&self, objtype: ObjType, after: Option<&str>, limit: usize) -> StoreResult<Page>;

    /// Items whose attribute `field` is the string `value`, paged like `list`.
    async fn find(
        &self,
        objtype: ObjType,
        field: &str,
        value: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page>;

    /// Forgets idempotency keys first used more than `max_age_secs` ago.
    async fn expire_idempotency_keys(&self, max_age_secs: i64) -> StoreResult<u64>;
}

/// Opens the engine `url` names. SQLite is opened (and created) now; PostgreSQL
/// connects lazily, so the gateway starts while the database is still coming up and
/// `/readiness` says when it is there; DynamoDB checks its tables now.
/// `dynamodb_endpoint` overrides the AWS endpoint (a local DynamoDB-compatible server).
pub async fn open(
    url: &DatabaseUrl,
    dynamodb_endpoint: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(SqliteStore::open(path).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PostgresStore::connect_lazy(url)?),
        DatabaseUrl::Dynamodb { suffix } => {
            Arc::new(DynamoStore::open(suffix.as_deref(), dynamodb_endpoint).await?)
        }
    })
}

/// Splits a full page query (`limit + 1` rows) into a page and its cursor.
pub(crate) fn into_page(mut items: Vec<Item>, limit: usize) -> Page {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Page { items, next }
}

/// Classifies an sqlx (PostgreSQL) error: connection trouble is [`StoreError::Unavailable`].
pub(crate) fn classify(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
        sqlx::Error::Database(ref db) if is_unavailable_code(db.code().as_deref()) => {
            StoreError::Unavailable(error.to_string())
        }
        other => StoreError::Internal(anyhow::Error::new(other)),
    }
}

/// PostgreSQL classes 08 (connection exception) and 57P (operator intervention, e.g.
/// shutting down).
fn is_unavailable_code(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c.starts_with("08") || c.starts_with("57P"))
}
