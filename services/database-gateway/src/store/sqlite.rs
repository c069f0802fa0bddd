//! The embedded engine: one SQLite file in WAL mode with `synchronous=FULL`, so an
//! acknowledged write is on disk before the response leaves.
//!
//! Reads run on the calling worker thread over a small set of read connections: a
//! primary-key lookup in a WAL database takes microseconds and never waits for the
//! writer, and handing it to another thread would cost more than the lookup. Writes
//! (which wait for an fsync) run on the blocking pool through the one writer
//! connection, which serialises them without lock contention (SQLite has a single
//! writer anyway).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension as _, Transaction, TransactionBehavior,
    params,
};

use super::{
    Created, IdempotencyKey, Item, Page, PutOutcome, Store, StoreError, StoreResult, into_page,
};
use crate::domain::{Attrs, ObjType};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS items (
        objtype TEXT NOT NULL,
        id      TEXT NOT NULL,
        version INTEGER NOT NULL,
        attrs   TEXT NOT NULL,
        PRIMARY KEY (objtype, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS idempotency (
        objtype     TEXT NOT NULL,
        key         TEXT NOT NULL,
        id          TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (objtype, key)
    );
    CREATE INDEX IF NOT EXISTS idempotency_created_at ON idempotency (created_at);
";

const GET: &str = "SELECT id, version, attrs FROM items WHERE objtype = ?1 AND id = ?2";
const LIST: &str =
    "SELECT id, version, attrs FROM items WHERE objtype = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
// `json_each` compares the field name as data: no name is ever spliced into SQL.
const FIND: &str = "SELECT i.id, i.version, i.attrs FROM items i
     WHERE i.objtype = ?1 AND i.id > ?2
       AND EXISTS (SELECT 1 FROM json_each(i.attrs) j WHERE j.key = ?3 AND j.type = 'text' AND j.atom = ?4)
     ORDER BY i.id LIMIT ?5";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<Connection>,
    /// Empty for an in-memory database, whose only connection is the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl SqliteStore {
    /// Opens `path` (`:memory:` for a private in-memory database), creating the file,
    /// its folder and the schema on first start.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path)).await?
    }

    fn open_blocking(path: &Path) -> anyhow::Result<Self> {
        let memory = path.as_os_str() == ":memory:";
        if memory {
            let writer = Connection::open_in_memory()?;
            writer
                .execute_batch(SCHEMA)
                .context("creating the SQLite schema")?;
            return Ok(Self::from_parts(writer, Vec::new()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the data folder {}", parent.display()))?;
        }
        let open = |flags| -> anyhow::Result<Connection> {
            let conn = Connection::open_with_flags(path, flags)
                .with_context(|| format!("opening the SQLite database {}", path.display()))?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(32);
            Ok(conn)
        };
        let writer = open(
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "SQLite refused WAL mode (got {mode}) for {}",
            path.display()
        );
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer
            .execute_batch(SCHEMA)
            .context("creating the SQLite schema")?;
        let count = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let readers = (0..count)
            .map(|_| {
                open(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                    .map(Mutex::new)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::from_parts(writer, readers))
    }

    fn from_parts(writer: Connection, readers: Vec<Mutex<Connection>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs a read on this thread with a free read connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let inner = &self.inner;
        if inner.readers.is_empty() {
            return f(&lock(&inner.writer)).map_err(classify);
        }
        let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = inner.readers.len();
        let guard = (0..n)
            .find_map(|i| inner.readers[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| lock(&inner.readers[start % n]));
        f(&guard).map_err(classify)
    }

    /// Runs a write transaction on the blocking pool with the writer connection.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            let value = f(&tx)?;
            tx.commit().map_err(classify)?;
            Ok(value)
        })
        .await
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("SQLite write task failed: {e}")))?
    }
}

/// A poisoned lock only means another request panicked mid-call; SQLite rolled its
/// transaction back, so the connection is still sound.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn classify(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Internal(anyhow::Error::new(error)),
    }
}

fn is_unique_violation(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

fn to_text(attrs: &Attrs) -> StoreResult<String> {
    serde_json::to_string(attrs).map_err(|e| StoreError::Internal(e.into()))
}

/// A row as read: `(id, version, attrs as JSON text)`.
type RawItem = (String, i64, String);

fn raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawItem> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn decode((id, version, text): RawItem) -> StoreResult<Item> {
    let attrs = serde_json::from_str(&text)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("corrupt attributes of {id}: {e}")))?;
    Ok(Item { id, version, attrs })
}

fn current(tx: &Transaction<'_>, objtype: ObjType, id: &str) -> StoreResult<Option<Item>> {
    tx.prepare_cached(GET)
        .and_then(|mut s| s.query_row(params![objtype.as_str(), id], raw).optional())
        .map_err(classify)?
        .map(decode)
        .transpose()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn page(rows: Vec<RawItem>, limit: usize) -> StoreResult<Page> {
    let items = rows
        .into_iter()
        .map(decode)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(items, limit))
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        })?;
        Ok(())
    }

    async fn get(&self, objtype: ObjType, id: &str) -> StoreResult<Option<Item>> {
        self.read(|c| {
            c.prepare_cached(GET)?
                .query_row(params![objtype.as_str(), id], raw)
                .optional()
        })?
        .map(decode)
        .transpose()
    }

    async fn create(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let text = to_text(attrs)?;
        let (id, idempotency) = (id.to_owned(), idempotency.cloned());
        self.write(move |tx| {
            if let Some(key) = &idempotency {
                let seen: Option<(String, String)> = tx
                    .prepare_cached("SELECT id, fingerprint FROM idempotency WHERE objtype = ?1 AND key = ?2")
                    .and_then(|mut s| {
                        s.query_row(params![objtype.as_str(), key.key], |r| Ok((r.get(0)?, r.get(1)?))).optional()
                    })
                    .map_err(classify)?;
                if let Some((first_id, fingerprint)) = seen {
                    if fingerprint != key.fingerprint {
                        return Err(StoreError::IdempotencyKeyReused);
                    }
                    return Ok(Created::Replayed { id: first_id });
                }
            }
            let inserted = tx
                .prepare_cached("INSERT INTO items (objtype, id, version, attrs) VALUES (?1, ?2, 1, ?3)")
                .and_then(|mut s| s.execute(params![objtype.as_str(), id, text]));
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::AlreadyExists),
                other => other.map_err(classify)?,
            };
            if let Some(key) = &idempotency {
                tx.prepare_cached(
                    "INSERT INTO idempotency (key, objtype, id, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(params![key.key, objtype.as_str(), id, key.fingerprint, now_secs()]))
                .map_err(classify)?;
            }
            Ok(Created::New)
        })
        .await
    }

    async fn update(
        &self,
        objtype: ObjType,
        id: &str,
        set: &Attrs,
        expected: Option<i64>,
    ) -> StoreResult<i64> {
        let (id, set) = (id.to_owned(), set.clone());
        self.write(move |tx| {
            let Some(mut item) = current(tx, objtype, &id)? else {
                return Err(StoreError::NotFound);
            };
            if expected.is_some_and(|v| v != item.version) {
                return Err(StoreError::VersionMismatch {
                    current: item.version,
                });
            }
            item.attrs.extend(set);
            let version = item.version + 1;
            let text = to_text(&item.attrs)?;
            tx.prepare_cached(
                "UPDATE items SET version = ?1, attrs = ?2 WHERE objtype = ?3 AND id = ?4",
            )
            .and_then(|mut s| s.execute(params![version, text, objtype.as_str(), id]))
            .map_err(classify)?;
            Ok(version)
        })
        .await
    }

    async fn delete(&self, objtype: ObjType, id: &str, expected: Option<i64>) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |tx| {
            let Some(item) = current(tx, objtype, &id)? else {
                return Err(StoreError::NotFound);
            };
            if expected.is_some_and(|v| v != item.version) {
                return Err(StoreError::VersionMismatch {
                    current: item.version,
                });
            }
            tx.prepare_cached("DELETE FROM items WHERE objtype = ?1 AND id = ?2")
                .and_then(|mut s| s.execute(params![objtype.as_str(), id]))
                .map_err(classify)?;
            Ok(())
        })
        .await
    }

    async fn put(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
    ) -> StoreResult<(PutOutcome, i64)> {
        let (id, attrs) = (id.to_owned(), attrs.clone());
        self.write(move |tx| {
            let (outcome, version) = match current(tx, objtype, &id)? {
                Some(item) if item.attrs == attrs => return Ok((PutOutcome::Unchanged, item.version)),
                Some(item) => (PutOutcome::Replaced, item.version + 1),
                None => (PutOutcome::Created, 1),
            };
            let text = to_text(&attrs)?;
            tx.prepare_cached(
                "INSERT INTO items (objtype, id, version, attrs) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (objtype, id) DO UPDATE SET version = excluded.version, attrs = excluded.attrs",
            )
            .and_then(|mut s| s.execute(params![objtype.as_str(), id, version, text]))
            .map_err(classify)?;
            Ok((outcome, version))
        })
        .await
    }

    async fn list(&self, objtype: ObjType, after: Option<&str>, limit: usize) -> StoreResult<Page> {
        let rows = self.read(|c| {
            c.prepare_cached(LIST)?
                .query_map(
                    params![objtype.as_str(), after.unwrap_or(""), limit as i64 + 1],
                    raw,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        page(rows, limit)
    }

    async fn find(
        &self,
        objtype: ObjType,
        field: &str,
        value: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page> {
        let rows = self.read(|c| {
            c.prepare_cached(FIND)?
                .query_map(
                    params![
                        objtype.as_str(),
                        after.unwrap_or(""),
                        field,
                        value,
                        limit as i64 + 1
                    ],
                    raw,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        page(rows, limit)
    }

    async fn expire_idempotency_keys(&self, max_age_secs: i64) -> StoreResult<u64> {
        let cutoff = now_secs() - max_age_secs;
        self.write(move |tx| {
            tx.execute("DELETE FROM idempotency WHERE created_at < ?1", [cutoff])
                .map(|n| n as u64)
                .map_err(classify)
        })
        .await
    }
}
