//! The DynamoDB engine: the course's tables `User`, `Music`, `Playlist` (plus an
//! optional `-<suffix>`), hash key `<objtype>_id` (string).
//!
//! - Attributes map faithfully: strings (S), numbers (N, exact text), booleans,
//!   nulls, lists (L) and maps (M). Sets and binaries written by other tools read back
//!   as arrays and base64 strings.
//! - The version lives in the attribute `__version`; conditional updates and deletes
//!   are condition expressions on it. Every attribute name goes through expression
//!   attribute names, so `Name` and other reserved words are plain data.
//! - An `Idempotency-Key` is recorded as an item `__idempotency/<key>` in the same
//!   table, written in one transaction with the new item, and expires after 24 hours
//!   (attribute `__expires`, the table's TTL attribute). `list` and `find` skip these.
//! - `list` is a consistent scan; `find` queries a global secondary index whose hash
//!   key is the field (the loader creates `email-index` on `User`) and falls back to a
//!   filtered scan for any other field.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TransactWriteItem,
};
use base64::Engine as _;
use serde_json::{Number, Value};

use super::{
    Created, IdempotencyKey, Item, Page, PutOutcome, Store, StoreError, StoreResult, into_page,
};
use crate::domain::{Attrs, ObjType};

const VERSION: &str = "__version";
const FINGERPRINT: &str = "__fingerprint";
const TARGET: &str = "__target";
/// The TTL attribute of every table (seconds since the epoch).
pub const EXPIRES: &str = "__expires";
const IDEMPOTENCY_PREFIX: &str = "__idempotency/";
/// Fields the tables the loader creates index for `find`: `(objtype, field)`; the
/// index is named `<field>-index`.
pub const INDEXED_FIELDS: &[(ObjType, &str)] = &[(ObjType::User, "email")];
/// How many conflicting transactions or version races to retry before giving up.
const MAX_CONFLICT_RETRIES: u32 = 50;

type ItemMap = HashMap<String, AttributeValue>;

/// The table holding `objtype`: `User`, `Music`, `Playlist`, with `-<suffix>` if given.
pub fn table_name(objtype: ObjType, suffix: Option<&str>) -> String {
    let base = match objtype {
        ObjType::User => "User",
        ObjType::Music => "Music",
        ObjType::Playlist => "Playlist",
    };
    match suffix {
        Some(s) if !s.is_empty() => format!("{base}-{s}"),
        _ => base.to_owned(),
    }
}

/// A DynamoDB client from the usual AWS environment (region, credentials, profiles),
/// pointed at `endpoint` when given (`DYNAMODB_URL`, for local servers). Throttling and
/// transient errors are retried by the SDK with its back-off.
pub async fn client(endpoint: Option<&str>) -> Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut config = aws_sdk_dynamodb::config::Builder::from(&shared)
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        );
    if shared.region().is_none() {
        config = config.region(aws_sdk_dynamodb::config::Region::new("us-east-1"));
    }
    if let Some(url) = endpoint.filter(|u| !u.is_empty()) {
        config = config.endpoint_url(url);
    }
    Client::from_conf(config.build())
}

/// Creates the three tables (on-demand billing, the `find` indexes, TTL on
/// `__expires`) and waits until they are active. Tables that exist are left alone.
/// Returns the names of the tables it created.
pub async fn create_tables(client: &Client, suffix: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for objtype in ObjType::ALL {
        let name = table_name(objtype, suffix);
        let key = objtype.id_field();
        let mut request = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attribute(key)?)
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(key)
                    .key_type(KeyType::Hash)
                    .build()?,
            );
        for field in indexed_fields(objtype) {
            request = request
                .attribute_definitions(string_attribute(field)?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(format!("{field}-index"))
                        .key_schema(
                            KeySchemaElement::builder()
                                .attribute_name(field)
                                .key_type(KeyType::Hash)
                                .build()?,
                        )
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::All)
                                .build(),
                        )
                        .build()?,
                );
        }
        match request.send().await {
            Ok(_) => created.push(name.clone()),
            Err(e) if e.code() == Some("ResourceInUseException") => continue,
            Err(e) => {
                return Err(anyhow::anyhow!(describe(&e)))
                    .with_context(|| format!("creating table {name}"));
            }
        }
        wait_active(client, &name).await?;
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(EXPIRES)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))
            .with_context(|| format!("enabling TTL on {name}"))?;
    }
    Ok(created)
}

/// Deletes the three tables; missing ones are skipped. Returns the names it deleted.
pub async fn delete_tables(client: &Client, suffix: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut deleted = Vec::new();
    for objtype in ObjType::ALL {
        let name = table_name(objtype, suffix);
        match client.delete_table().table_name(&name).send().await {
            Ok(_) => deleted.push(name),
            Err(e) if e.code() == Some("ResourceNotFoundException") => {}
            Err(e) => {
                return Err(anyhow::anyhow!(describe(&e)))
                    .with_context(|| format!("deleting table {name}"));
            }
        }
    }
    Ok(deleted)
}

fn indexed_fields(objtype: ObjType) -> impl Iterator<Item = &'static str> {
    INDEXED_FIELDS
        .iter()
        .filter(move |(t, _)| *t == objtype)
        .map(|(_, f)| *f)
}

fn string_attribute(name: &str) -> anyhow::Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()?)
}

async fn wait_active(client: &Client, name: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("table {name} did not become active within a minute")
}

/// One line for an SDK error: the service's code and message, or the transport failure.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
) -> String {
    match error {
        SdkError::ServiceError(e) => {
            format!(
                "{}: {}",
                e.err().code().unwrap_or("service error"),
                e.err().message().unwrap_or_default()
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

/// Transport trouble and throttling (after the SDK's retries) are 503s; the rest 500s.
fn classify<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
>(
    error: SdkError<E, R>,
) -> StoreError {
    let unavailable = match &error {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
        SdkError::ServiceError(e) => matches!(
            e.err().code(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
            )
        ),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(describe(&error))
    } else {
        StoreError::Internal(anyhow::anyhow!(describe(&error)))
    }
}

/// JSON to a DynamoDB attribute.
pub fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attribute).collect()),
        Value::Object(map) => AttributeValue::M(
            map.iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
        ),
    }
}

/// A DynamoDB attribute to JSON.
pub fn from_attribute(value: &AttributeValue) -> Value {
    let number = |text: &str| {
        text.parse::<Number>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::Number)
    };
    let binary =
        |bytes: &[u8]| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::L(items) => Value::Array(items.iter().map(from_attribute).collect()),
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_attribute(v)))
                .collect(),
        ),
        AttributeValue::Ss(items) => {
            Value::Array(items.iter().cloned().map(Value::String).collect())
        }
        AttributeValue::Ns(items) => Value::Array(items.iter().map(|n| number(n)).collect()),
        AttributeValue::B(blob) => binary(blob.as_ref()),
        AttributeValue::Bs(blobs) => {
            Value::Array(blobs.iter().map(|b| binary(b.as_ref())).collect())
        }
        _ => Value::Null,
    }
}

fn version_of(item: &ItemMap) -> i64 {
    match item.get(VERSION) {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
        _ => 0,
    }
}

fn to_item(objtype: ObjType, map: &ItemMap) -> Option<Item> {
    let id = match map.get(objtype.id_field()) {
        Some(AttributeValue::S(id)) => id.clone(),
        _ => return None,
    };
    let attrs: Attrs = map
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(crate::domain::RESERVED_PREFIX) && k.as_str() != objtype.id_field()
        })
        .map(|(k, v)| (k.clone(), from_attribute(v)))
        .collect();
    Some(Item {
        id,
        version: version_of(map),
        attrs,
    })
}

fn stored_item(objtype: ObjType, id: &str, version: i64, attrs: &Attrs) -> ItemMap {
    let mut map: ItemMap = attrs
        .iter()
        .map(|(k, v)| (k.clone(), to_attribute(v)))
        .collect();
    map.insert(
        objtype.id_field().to_owned(),
        AttributeValue::S(id.to_owned()),
    );
    map.insert(VERSION.to_owned(), AttributeValue::N(version.to_string()));
    map
}

fn key(objtype: ObjType, id: &str) -> ItemMap {
    HashMap::from([(
        objtype.id_field().to_owned(),
        AttributeValue::S(id.to_owned()),
    )])
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The condition "the item is at version `expected`" (an item written by another tool
/// has no version and counts as version 0).
fn version_condition(expected: i64) -> (&'static str, Option<AttributeValue>) {
    if expected == 0 {
        ("attribute_not_exists(#ver)", None)
    } else {
        (
            "#ver = :expected",
            Some(AttributeValue::N(expected.to_string())),
        )
    }
}

/// `(objtype, field)` -> name of a global secondary index keyed by that field.
type Indexes = HashMap<(ObjType, String), String>;

#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    suffix: Option<String>,
    /// Discovered from the tables the first time they answer.
    indexes: tokio::sync::OnceCell<Indexes>,
}

impl DynamoStore {
    /// Connects and checks that the three tables exist; a missing table is an error
    /// that says how to create it. An unreachable endpoint is not: the gateway starts,
    /// and `/readiness` reports it until it answers.
    pub async fn open(suffix: Option<&str>, endpoint: Option<&str>) -> anyhow::Result<Self> {
        let store = Self {
            client: client(endpoint).await,
            suffix: suffix.map(str::to_owned),
            indexes: Default::default(),
        };
        match store.indexes().await {
            Ok(indexes) => {
                tracing::info!(indexes = ?indexes.values().collect::<Vec<_>>(), "DynamoDB tables are in place")
            }
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "DynamoDB is not answering yet; starting anyway")
            }
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        }
        Ok(store)
    }

    /// Checks the three tables and learns their `find` indexes (once).
    async fn indexes(&self) -> StoreResult<&Indexes> {
        self.indexes.get_or_try_init(|| self.inspect_tables()).await
    }

    async fn inspect_tables(&self) -> StoreResult<Indexes> {
        let mut indexes = HashMap::new();
        for objtype in ObjType::ALL {
            let name = self.table(objtype);
            let out = match self.client.describe_table().table_name(&name).send().await {
                Ok(out) => out,
                Err(e) if e.code() == Some("ResourceNotFoundException") => {
                    let flag = self
                        .suffix
                        .as_deref()
                        .map(|s| format!(" --suffix {s}"))
                        .unwrap_or_default();
                    return Err(StoreError::Internal(anyhow::anyhow!(
                        "DynamoDB table {name} does not exist: create the tables with `loader tables create{flag}` \
                         or the CloudFormation template k8s/aws/dynamodb-tables.yaml"
                    )));
                }
                Err(e) => return Err(classify(e)),
            };
            let table = out.table();
            let key_ok = table.is_some_and(|t| {
                t.key_schema().iter().any(|k| {
                    k.attribute_name() == objtype.id_field() && k.key_type() == &KeyType::Hash
                })
            });
            if !key_ok {
                return Err(StoreError::Internal(anyhow::anyhow!(
                    "DynamoDB table {name} exists but its hash key is not `{}`",
                    objtype.id_field()
                )));
            }
            for index in table
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
            {
                let all = index.projection().and_then(|p| p.projection_type())
                    == Some(&ProjectionType::All);
                if let ([only], true, Some(index_name)) =
                    (index.key_schema(), all, index.index_name())
                    && only.key_type() == &KeyType::Hash
                {
                    indexes.insert(
                        (objtype, only.attribute_name().to_owned()),
                        index_name.to_owned(),
                    );
                }
            }
        }
        Ok(indexes)
    }

    fn table(&self, objtype: ObjType) -> String {
        table_name(objtype, self.suffix.as_deref())
    }

    async fn get_raw(&self, objtype: ObjType, id: &str) -> StoreResult<Option<ItemMap>> {
        let out = self
            .client
            .get_item()
            .table_name(self.table(objtype))
            .set_key(Some(key(objtype, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item().cloned())
    }

    /// The version of the item now, after a condition failed: `NotFound` if it is gone.
    fn condition_failure(old: Option<&ItemMap>) -> StoreError {
        match old {
            Some(item) => StoreError::VersionMismatch {
                current: version_of(item),
            },
            None => StoreError::NotFound,
        }
    }

    /// Scans (or, for an indexed field, queries) until `limit + 1` items are found or
    /// the table ends, so a page is full unless it is the last.
    async fn page(
        &self,
        objtype: ObjType,
        filter: Option<(&str, &str)>,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page> {
        let table = self.table(objtype);
        let indexes = self.indexes().await?;
        let index = filter.and_then(|(field, _)| indexes.get(&(objtype, field.to_owned())));
        let mut names = HashMap::from([("#pk".to_owned(), objtype.id_field().to_owned())]);
        let mut values = HashMap::from([(
            ":reserved".to_owned(),
            AttributeValue::S(crate::domain::RESERVED_PREFIX.to_owned()),
        )]);
        let mut condition = "NOT begins_with(#pk, :reserved)".to_owned();
        if let Some((field, value)) = filter {
            names.insert("#f".to_owned(), field.to_owned());
            values.insert(":v".to_owned(), AttributeValue::S(value.to_owned()));
            if index.is_none() {
                condition.push_str(" AND #f = :v");
            }
        }
        let mut start = after.map(|a| {
            let mut k = key(objtype, a);
            if let (Some(_), Some((field, value))) = (index, filter) {
                k.insert(field.to_owned(), AttributeValue::S(value.to_owned()));
            }
            k
        });
        let mut found = Vec::new();
        loop {
            let want = (limit + 1 - found.len()) as i32;
            let (items, last) = match (index, filter) {
                (Some(index), Some(_)) => {
                    let out = self
                        .client
                        .query()
                        .table_name(&table)
                        .index_name(index)
                        .key_condition_expression("#f = :v")
                        .filter_expression(&condition)
                        .set_expression_attribute_names(Some(names.clone()))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_exclusive_start_key(start.take())
                        .limit(want)
                        .send()
                        .await
                        .map_err(classify)?;
                    (out.items().to_vec(), out.last_evaluated_key().cloned())
                }
                _ => {
                    // A filtered scan evaluates `limit` items before filtering: read more.
                    let evaluate = if filter.is_some() {
                        want.max(1000)
                    } else {
                        want
                    };
                    let out = self
                        .client
                        .scan()
                        .table_name(&table)
                        .consistent_read(true)
                        .filter_expression(&condition)
                        .set_expression_attribute_names(Some(names.clone()))
                        .set_expression_attribute_values(Some(values.clone()))
                        .set_exclusive_start_key(start.take())
                        .limit(evaluate)
                        .send()
                        .await
                        .map_err(classify)?;
                    (out.items().to_vec(), out.last_evaluated_key().cloned())
                }
            };
            found.extend(items.iter().filter_map(|m| to_item(objtype, m)));
            if found.len() > limit || last.is_none() {
                found.truncate(limit + 1);
                return Ok(into_page(found, limit));
            }
            start = last;
        }
    }

    async fn idempotency_record(
        &self,
        objtype: ObjType,
        key_text: &str,
    ) -> StoreResult<Option<(String, String)>> {
        let Some(record) = self
            .get_raw(objtype, &format!("{IDEMPOTENCY_PREFIX}{key_text}"))
            .await?
        else {
            return Ok(None);
        };
        let expired = matches!(record.get(EXPIRES), Some(AttributeValue::N(n)) if n.parse::<i64>().unwrap_or(0) < now_secs());
        match (record.get(TARGET), record.get(FINGERPRINT)) {
            (Some(AttributeValue::S(target)), Some(AttributeValue::S(fp))) if !expired => {
                Ok(Some((target.clone(), fp.clone())))
            }
            _ => Ok(None),
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    fn engine(&self) -> &'static str {
        "dynamodb"
    }

    async fn ping(&self) -> StoreResult<()> {
        if !self.indexes.initialized() {
            return self.indexes().await.map(|_| ());
        }
        for objtype in ObjType::ALL {
            self.client
                .describe_table()
                .table_name(self.table(objtype))
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn get(&self, objtype: ObjType, id: &str) -> StoreResult<Option<Item>> {
        Ok(self
            .get_raw(objtype, id)
            .await?
            .and_then(|m| to_item(objtype, &m)))
    }

    async fn create(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
        idempotency: Option<&IdempotencyKey>,
    ) -> StoreResult<Created> {
        let table = self.table(objtype);
        let item = stored_item(objtype, id, 1, attrs);
        let Some(idem) = idempotency else {
            return match self
                .client
                .put_item()
                .table_name(&table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", objtype.id_field())
                .send()
                .await
            {
                Ok(_) => Ok(Created::New),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                    Err(StoreError::AlreadyExists)
                }
                Err(e) => Err(classify(e)),
            };
        };

        let record_id = format!("{IDEMPOTENCY_PREFIX}{}", idem.key);
        let record = HashMap::from([
            (objtype.id_field().to_owned(), AttributeValue::S(record_id)),
            (TARGET.to_owned(), AttributeValue::S(id.to_owned())),
            (
                FINGERPRINT.to_owned(),
                AttributeValue::S(idem.fingerprint.clone()),
            ),
            (
                EXPIRES.to_owned(),
                AttributeValue::N((now_secs() + crate::IDEMPOTENCY_TTL_SECS).to_string()),
            ),
        ]);
        let build = |item: ItemMap, condition: &str, now: bool| -> StoreResult<TransactWriteItem> {
            let mut put = Put::builder()
                .table_name(&table)
                .set_item(Some(item))
                .condition_expression(condition)
                .expression_attribute_names("#pk", objtype.id_field());
            if now {
                put = put
                    .expression_attribute_names("#exp", EXPIRES)
                    .expression_attribute_values(":now", AttributeValue::N(now_secs().to_string()));
            }
            let put = put.build().map_err(|e| StoreError::Internal(e.into()))?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        for attempt in 0..MAX_CONFLICT_RETRIES {
            let result = self
                .client
                .transact_write_items()
                .transact_items(build(item.clone(), "attribute_not_exists(#pk)", false)?)
                .transact_items(build(
                    record.clone(),
                    "attribute_not_exists(#pk) OR #exp < :now",
                    true,
                )?)
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(Created::New),
                Err(e) => e,
            };
            let reasons: Vec<Option<String>> = match error.as_service_error() {
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) => {
                    c.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect()
                }
                _ => return Err(classify(error)),
            };
            let failed = |i: usize| {
                reasons.get(i).and_then(Option::as_deref) == Some("ConditionalCheckFailed")
            };
            if failed(1) {
                match self.idempotency_record(objtype, &idem.key).await? {
                    Some((_, fingerprint)) if fingerprint != idem.fingerprint => {
                        return Err(StoreError::IdempotencyKeyReused);
                    }
                    Some((target, _)) => return Ok(Created::Replayed { id: target }),
                    None => {} // expired or removed in between: try again
                }
            } else if failed(0) {
                return Err(StoreError::AlreadyExists);
            }
            // A conflicting concurrent transaction: back off a little and retry.
            tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt + 1))).await;
        }
        Err(StoreError::Unavailable(
            "too many conflicting transactions".to_owned(),
        ))
    }

    async fn update(
        &self,
        objtype: ObjType,
        id: &str,
        set: &Attrs,
        expected: Option<i64>,
    ) -> StoreResult<i64> {
        let mut names = HashMap::from([
            ("#pk".to_owned(), objtype.id_field().to_owned()),
            ("#ver".to_owned(), VERSION.to_owned()),
        ]);
        let mut values = HashMap::from([
            (":one".to_owned(), AttributeValue::N("1".to_owned())),
            (":zero".to_owned(), AttributeValue::N("0".to_owned())),
        ]);
        let mut assignments = vec!["#ver = if_not_exists(#ver, :zero) + :one".to_owned()];
        for (i, (field, value)) in set.iter().enumerate() {
            names.insert(format!("#a{i}"), field.clone());
            values.insert(format!(":a{i}"), to_attribute(value));
            assignments.push(format!("#a{i} = :a{i}"));
        }
        let mut condition = "attribute_exists(#pk)".to_owned();
        if let Some(expected) = expected {
            let (clause, value) = version_condition(expected);
            condition = format!("{condition} AND {clause}");
            if let Some(v) = value {
                values.insert(":expected".to_owned(), v);
            }
        }
        let result = self
            .client
            .update_item()
            .table_name(self.table(objtype))
            .set_key(Some(key(objtype, id)))
            .update_expression(format!("SET {}", assignments.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.attributes().map_or(0, version_of)),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let old = self.get_raw(objtype, id).await?;
                Err(Self::condition_failure(old.as_ref()))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn delete(&self, objtype: ObjType, id: &str, expected: Option<i64>) -> StoreResult<()> {
        let mut request = self
            .client
            .delete_item()
            .table_name(self.table(objtype))
            .set_key(Some(key(objtype, id)))
            .expression_attribute_names("#pk", objtype.id_field());
        let mut condition = "attribute_exists(#pk)".to_owned();
        if let Some(expected) = expected {
            let (clause, value) = version_condition(expected);
            condition = format!("{condition} AND {clause}");
            request = request.expression_attribute_names("#ver", VERSION);
            if let Some(v) = value {
                request = request.expression_attribute_values(":expected", v);
            }
        }
        match request.condition_expression(condition).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let old = self.get_raw(objtype, id).await?;
                Err(Self::condition_failure(old.as_ref()))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn put(
        &self,
        objtype: ObjType,
        id: &str,
        attrs: &Attrs,
    ) -> StoreResult<(PutOutcome, i64)> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let current = self.get_raw(objtype, id).await?;
            let (outcome, version) = match current.as_ref().and_then(|m| to_item(objtype, m)) {
                Some(item) if item.attrs == *attrs => {
                    return Ok((PutOutcome::Unchanged, item.version));
                }
                Some(item) => (PutOutcome::Replaced, item.version + 1),
                None => (PutOutcome::Created, 1),
            };
            let mut request = self
                .client
                .put_item()
                .table_name(self.table(objtype))
                .set_item(Some(stored_item(objtype, id, version, attrs)))
                .expression_attribute_names("#pk", objtype.id_field());
            request = match outcome {
                PutOutcome::Created => request.condition_expression("attribute_not_exists(#pk)"),
                _ => {
                    let (clause, value) = version_condition(version - 1);
                    let request = request
                        .condition_expression(format!("attribute_exists(#pk) AND {clause}"))
                        .expression_attribute_names("#ver", VERSION);
                    match value {
                        Some(v) => request.expression_attribute_values(":expected", v),
                        None => request,
                    }
                }
            };
            match request.send().await {
                Ok(_) => return Ok((outcome, version)),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => continue,
                Err(e) => return Err(classify(e)),
            }
        }
        Err(StoreError::Unavailable(
            "the item kept changing during the load".to_owned(),
        ))
    }

    async fn list(&self, objtype: ObjType, after: Option<&str>, limit: usize) -> StoreResult<Page> {
        self.page(objtype, None, after, limit).await
    }

    async fn find(
        &self,
        objtype: ObjType,
        field: &str,
        value: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page> {
        self.page(objtype, Some((field, value)), after, limit).await
    }

    /// DynamoDB's TTL removes expired records; lookups already ignore them.
    async fn expire_idempotency_keys(&self, _max_age_secs: i64) -> StoreResult<u64> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_course() {
        assert_eq!(table_name(ObjType::User, None), "User");
        assert_eq!(table_name(ObjType::Music, Some("ab12")), "Music-ab12");
        assert_eq!(table_name(ObjType::Playlist, Some("")), "Playlist");
    }

    #[test]
    fn json_round_trips_through_attributes() {
        let value: Value = serde_json::from_str(
            r#"{"s":"x","n":12345678901234567890123456789012345678,"f":0.125,"b":true,"z":null,"l":[1,"a",[]],"m":{"Name":{"k":false}}}"#,
        )
        .expect("json");
        assert_eq!(from_attribute(&to_attribute(&value)), value);
    }

    #[test]
    fn sets_and_binaries_read_as_arrays_and_base64() {
        let set = AttributeValue::Ss(vec!["a".into(), "b".into()]);
        assert_eq!(from_attribute(&set), serde_json::json!(["a", "b"]));
        let blob = AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(b"hi".to_vec()));
        assert_eq!(from_attribute(&blob), serde_json::json!("aGk="));
    }
}
