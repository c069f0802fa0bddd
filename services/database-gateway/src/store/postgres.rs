//! The PostgreSQL engine: attributes in a JSONB column with a GIN index for `find`,
//! updates as one conditional statement (`attrs || $set`, version check), and the
//! schema created on first contact under an advisory lock (replicas may race).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Executor as _, Row as _};

use super::{
    Created, IdempotencyKey, Item, Page, PutOutcome, Store, StoreError, StoreResult, classify,
    into_page,
};
use crate::domain::{Attrs, ObjType};

const SCHEMA: &str = r#"
    SELECT pg_advisory_xact_lock(7564302);
    CREATE TABLE IF NOT EXISTS items (
        objtype TEXT NOT NULL,
        id      TEXT COLLATE "C" NOT NULL,
        version BIGINT NOT NULL,
        attrs   JSONB NOT NULL,
        PRIMARY KEY (objtype, id)
    );
    CREATE INDEX IF NOT EXISTS items_attrs ON items USING GIN (attrs jsonb_path_ops);
    CREATE TABLE IF NOT EXISTS idempotency (
        objtype     TEXT NOT NULL,
        key         TEXT NOT NULL,
        id          TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (objtype, key)
    );
    CREATE INDEX IF NOT EXISTS idempotency_created_at ON idempotency (created_at);
"#;

#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    schema_ready: AtomicBool,
    schema_lock: tokio::sync::Mutex<()>,
}

impl PostgresStore {
    /// A pool that connects on first use.
    pub fn connect_lazy(url: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse().context("parsing the PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            schema_ready: AtomicBool::new(false),
            schema_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Creates the schema once; later calls return at once.
    async fn ready(&self) -> StoreResult<&PgPool> {
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(&self.pool);
        }
        let _guard = self.schema_lock.lock().await;
        if !self.schema_ready.load(Ordering::Acquire) {
            let mut tx = self.pool.begin().await.map_err(classify)?;
            tx.execute(SCHEMA).await.map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            self.schema_ready.store(true, Ordering::Release);
            tracing::info!("PostgreSQL schema is in place");
        }
        Ok(&self.pool)
    }
}

fn item_from_row(row: &PgRow) -> StoreResult<Item> {
    let id: String = row.try_get("id").map_err(classify)?;
    let version: i64 = row.try_get("version").map_err(classify)?;
    let Json(attrs): Json<Attrs> = row.try_get("attrs").map_err(classify)?;
    Ok(Item { id, version, attrs })
}

/// The current version of an item, to tell "missing" from "moved on" after a
/// conditional statement matched no row.
async fn version_of(pool: &PgPool, objtype: ObjType, id: &str) -> StoreResult<Option<i64>> {
    sqlx::query_scalar("SELECT version FROM items WHERE objtype = $1 AND id = $2")
        .bind(objtype.as_str())
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(classify)
}

fn mismatch_or_missing(current: Option<i64>) -> StoreError {
    match current {
        Some(current) => StoreError::VersionMismatch { current },
        None => StoreError::NotFound,
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        let pool = self.ready().await?;
        sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn get(&self, objtype: ObjType, id: &str) -> StoreResult<Option<Item>> {
        let pool = self.ready().await?;
        let row =
            sqlx::query("SELECT id, version, attrs FROM items WHERE objtype = $1 AND id = $2")
                .bind(objtype.as_str())
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(classify)?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn create(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let pool = self.ready().await?;
        let mut tx = pool.begin().await.map_err(classify)?;
        if let Some(key) = idempotency {
            // A concurrent request with the same key waits here until the first commits.
            let claimed: Option<String> = sqlx::query_scalar(
                "INSERT INTO idempotency (key, objtype, id, fingerprint) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (objtype, key) DO NOTHING RETURNING key",
            )
            .bind(&key.key)
            .bind(objtype.as_str())
            .bind(id)
            .bind(&key.fingerprint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
            if claimed.is_none() {
                let row = sqlx::query(
                    "SELECT id, fingerprint FROM idempotency WHERE objtype = $1 AND key = $2",
                )
                .bind(objtype.as_str())
                .bind(&key.key)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
                let fingerprint: String = row.try_get("fingerprint").map_err(classify)?;
                if fingerprint != key.fingerprint {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                return Ok(Created::Replayed {
                    id: row.try_get("id").map_err(classify)?,
                });
            }
        }
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO items (objtype, id, version, attrs) VALUES ($1, $2, 1, $3)
             ON CONFLICT (objtype, id) DO NOTHING RETURNING id",
        )
        .bind(objtype.as_str())
        .bind(id)
        .bind(Json(attrs))
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        if inserted.is_none() {
            return Err(StoreError::AlreadyExists);
        }
        tx.commit().await.map_err(classify)?;
        Ok(Created::New)
    }

    async fn update(
        &self,
        objtype: ObjType,
        id: &str,
        set: &Attrs,
        expected: Option<i64>,
    ) -> StoreResult<i64> {
        let pool = self.ready().await?;
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE items SET attrs = attrs || $3, version = version + 1
             WHERE objtype = $1 AND id = $2 AND ($4::BIGINT IS NULL OR version = $4)
             RETURNING version",
        )
        .bind(objtype.as_str())
        .bind(id)
        .bind(Json(set))
        .bind(expected)
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        match version {
            Some(v) => Ok(v),
            None => Err(mismatch_or_missing(version_of(pool, objtype, id).await?)),
        }
    }

    async fn delete(&self, objtype: ObjType, id: &str, expected: Option<i64>) -> StoreResult<()> {
        let pool = self.ready().await?;
        let done = sqlx::query(
            "DELETE FROM items WHERE objtype = $1 AND id = $2 AND ($3::BIGINT IS NULL OR version = $3)",
        )
        .bind(objtype.as_str())
        .bind(id)
        .bind(expected)
        .execute(pool)
        .await
        .map_err(classify)?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        Err(mismatch_or_missing(version_of(pool, objtype, id).await?))
    }

    async fn put(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
    ) -> StoreResult<(PutOutcome, i64)> {
        let pool = self.ready().await?;
        let row = sqlx::query(
            "INSERT INTO items AS i (objtype, id, version, attrs) VALUES ($1, $2, 1, $3)
             ON CONFLICT (objtype, id) DO UPDATE SET attrs = EXCLUDED.attrs, version = i.version + 1
             WHERE i.attrs IS DISTINCT FROM EXCLUDED.attrs
             RETURNING version, (xmax = 0) AS inserted",
        )
        .bind(objtype.as_str())
        .bind(id)
        .bind(Json(attrs))
        .fetch_optional(pool)
        .await
        .map_err(classify)?;
        match row {
            Some(row) => {
                let version: i64 = row.try_get("version").map_err(classify)?;
                let inserted: bool = row.try_get("inserted").map_err(classify)?;
                Ok((
                    if inserted {
                        PutOutcome::Created
                    } else {
                        PutOutcome::Replaced
                    },
                    version,
                ))
            }
            None => {
                let version = version_of(pool, objtype, id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                Ok((PutOutcome::Unchanged, version))
            }
        }
    }

    async fn list(&self, objtype: ObjType, after: Option<&str>, limit: usize) -> StoreResult<Page> {
        let pool = self.ready().await?;
        let rows = sqlx::query(
            "SELECT id, version, attrs FROM items WHERE objtype = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(objtype.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit as i64 + 1)
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        let items = rows
            .iter()
            .map(item_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(items, limit))
    }

    async fn find(
        &self,
        objtype: ObjType,
        field: &str,
        value: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page> {
        let pool = self.ready().await?;
        // Containment (`@>`) uses the GIN index; the field name is a bound value.
        let rows = sqlx::query(
            "SELECT id, version, attrs FROM items
             WHERE objtype = $1 AND id > $2 AND attrs @> jsonb_build_object($3::TEXT, $4::TEXT)
             ORDER BY id LIMIT $5",
        )
        .bind(objtype.as_str())
        .bind(after.unwrap_or(""))
        .bind(field)
        .bind(value)
        .bind(limit as i64 + 1)
        .fetch_all(pool)
        .await
        .map_err(classify)?;
        let items = rows
            .iter()
            .map(item_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(items, limit))
    }

    async fn expire_idempotency_keys(&self, max_age_secs: i64) -> StoreResult<u64> {
        let pool = self.ready().await?;
        let done = sqlx::query(
            "DELETE FROM idempotency WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(max_age_secs as f64)
        .execute(pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
