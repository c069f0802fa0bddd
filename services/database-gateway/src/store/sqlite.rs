//! The embedded engine: one SQLite file in WAL mode with `synchronous=FULL`, so an
//! acknowledged write is on disk before the response leaves. Reads go through a pool
//! of connections; writes through one connection, which serialises them without lock
//! contention (SQLite has a single writer anyway).

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};

use super::{
    Created, IdempotencyKey, Item, Page, PutOutcome, Store, StoreError, StoreResult, classify,
    into_page, is_unique_violation,
};
use crate::domain::{Attrs, ObjType};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS items (
        objtype TEXT NOT NULL,
        id      TEXT NOT NULL,
        version INTEGER NOT NULL,
        attrs   TEXT NOT NULL,
        PRIMARY KEY (objtype, id)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS idempotency (
        key         TEXT PRIMARY KEY,
        objtype     TEXT NOT NULL,
        id          TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS idempotency_created_at ON idempotency (created_at)",
];

#[derive(Debug, Clone)]
pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens `path`, creating the file, its folder and the schema on first start.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let memory = path.as_os_str() == ":memory:";
        if !memory && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the data folder {}", parent.display()))?;
        }
        let options = if memory {
            // A shared in-memory database, so that the reader and writer pools see the same data.
            SqliteConnectOptions::from_str(&format!(
                "sqlite:file:mem-{}?mode=memory&cache=shared",
                uuid::Uuid::new_v4()
            ))?
        } else {
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
        }
        .busy_timeout(Duration::from_secs(5));

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the SQLite database {}", path.display()))?;
        for &statement in SCHEMA {
            sqlx::query(statement)
                .execute(&writer)
                .await
                .context("creating the SQLite schema")?;
        }
        let readers = std::thread::available_parallelism().map_or(4, |n| n.get().max(2) * 2) as u32;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers)
            .min_connections(1)
            .connect_with(options)
            .await
            .context("opening SQLite read connections")?;
        Ok(Self { reader, writer })
    }
}

fn to_text(attrs: &Attrs) -> StoreResult<String> {
    serde_json::to_string(attrs).map_err(|e| StoreError::Internal(e.into()))
}

fn item_from_row(row: &SqliteRow) -> StoreResult<Item> {
    let id: String = row.try_get("id").map_err(classify)?;
    let version: i64 = row.try_get("version").map_err(classify)?;
    let text: &str = row.try_get("attrs").map_err(classify)?;
    let attrs = serde_json::from_str(text)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("corrupt attributes of {id}: {e}")))?;
    Ok(Item { id, version, attrs })
}

async fn current(
    tx: &mut Transaction<'_, Sqlite>,
    objtype: ObjType,
    id: &str,
) -> StoreResult<Option<Item>> {
    let row = sqlx::query("SELECT id, version, attrs FROM items WHERE objtype = ?1 AND id = ?2")
        .bind(objtype.as_str())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(classify)?;
    row.as_ref().map(item_from_row).transpose()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn get(&self, objtype: ObjType, id: &str) -> StoreResult<Option<Item>> {
        let row =
            sqlx::query("SELECT id, version, attrs FROM items WHERE objtype = ?1 AND id = ?2")
                .bind(objtype.as_str())
                .bind(id)
                .fetch_optional(&self.reader)
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
        let text = to_text(attrs)?;
        let mut tx = self.writer.begin().await.map_err(classify)?;
        if let Some(key) = idempotency {
            let seen = sqlx::query("SELECT id, fingerprint FROM idempotency WHERE key = ?1")
                .bind(&key.key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
            if let Some(row) = seen {
                let fingerprint: String = row.try_get("fingerprint").map_err(classify)?;
                if fingerprint != key.fingerprint {
                    return Err(StoreError::IdempotencyKeyReused);
                }
                return Ok(Created::Replayed {
                    id: row.try_get("id").map_err(classify)?,
                });
            }
        }
        let inserted =
            sqlx::query("INSERT INTO items (objtype, id, version, attrs) VALUES (?1, ?2, 1, ?3)")
                .bind(objtype.as_str())
                .bind(id)
                .bind(&text)
                .execute(&mut *tx)
                .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists),
            other => other.map_err(classify)?,
        };
        if let Some(key) = idempotency {
            sqlx::query("INSERT INTO idempotency (key, objtype, id, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")
                .bind(&key.key)
                .bind(objtype.as_str())
                .bind(id)
                .bind(&key.fingerprint)
                .bind(now_secs())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
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
        let mut tx = self.writer.begin().await.map_err(classify)?;
        let Some(mut item) = current(&mut tx, objtype, id).await? else {
            return Err(StoreError::NotFound);
        };
        if expected.is_some_and(|v| v != item.version) {
            return Err(StoreError::VersionMismatch {
                current: item.version,
            });
        }
        item.attrs
            .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        let version = item.version + 1;
        sqlx::query("UPDATE items SET version = ?1, attrs = ?2 WHERE objtype = ?3 AND id = ?4")
            .bind(version)
            .bind(to_text(&item.attrs)?)
            .bind(objtype.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(version)
    }

    async fn delete(&self, objtype: ObjType, id: &str, expected: Option<i64>) -> StoreResult<()> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        let Some(item) = current(&mut tx, objtype, id).await? else {
            return Err(StoreError::NotFound);
        };
        if expected.is_some_and(|v| v != item.version) {
            return Err(StoreError::VersionMismatch {
                current: item.version,
            });
        }
        sqlx::query("DELETE FROM items WHERE objtype = ?1 AND id = ?2")
            .bind(objtype.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn put(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
    ) -> StoreResult<(PutOutcome, i64)> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        let (outcome, version) = match current(&mut tx, objtype, id).await? {
            Some(item) if item.attrs == *attrs => return Ok((PutOutcome::Unchanged, item.version)),
            Some(item) => (PutOutcome::Replaced, item.version + 1),
            None => (PutOutcome::Created, 1),
        };
        sqlx::query(
            "INSERT INTO items (objtype, id, version, attrs) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (objtype, id) DO UPDATE SET version = excluded.version, attrs = excluded.attrs",
        )
        .bind(objtype.as_str())
        .bind(id)
        .bind(version)
        .bind(to_text(attrs)?)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok((outcome, version))
    }

    async fn list(&self, objtype: ObjType, after: Option<&str>, limit: usize) -> StoreResult<Page> {
        let rows = sqlx::query(
            "SELECT id, version, attrs FROM items WHERE objtype = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(objtype.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit as i64 + 1)
        .fetch_all(&self.reader)
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
        // `json_each` compares the field name as data: no name is ever spliced into SQL.
        let rows = sqlx::query(
            "SELECT i.id, i.version, i.attrs FROM items i
             WHERE i.objtype = ?1 AND i.id > ?2
               AND EXISTS (SELECT 1 FROM json_each(i.attrs) j WHERE j.key = ?3 AND j.type = 'text' AND j.atom = ?4)
             ORDER BY i.id LIMIT ?5",
        )
        .bind(objtype.as_str())
        .bind(after.unwrap_or(""))
        .bind(field)
        .bind(value)
        .bind(limit as i64 + 1)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let items = rows
            .iter()
            .map(item_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(into_page(items, limit))
    }

    async fn expire_idempotency_keys(&self, max_age_secs: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM idempotency WHERE created_at < ?1")
            .bind(now_secs() - max_age_secs)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
