//! A typed client of the database gateway's `/api/v1/datastore` API (API.md), for the
//! services that keep their data there. Every call goes through [`HttpClient::send`],
//! so it is a client span of the caller's trace.

use reqwest::StatusCode;
use serde_json::{Map, Value};

use crate::client::{ClientOptions, HttpClient};
use crate::error::ApiError;

/// One item as read, with the ETag to update it conditionally.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub fields: Map<String, Value>,
    pub etag: String,
}

/// What a conditional update found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    Done,
    NotFound,
    /// The item moved on since it was read (412): read again and retry.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatastoreError {
    /// The gateway cannot be reached or answered 5xx/503: worth retrying later.
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    /// The gateway refused the request with this message (a 4xx).
    #[error("{1}")]
    Refused(StatusCode, String),
    #[error("unexpected datastore answer: {0}")]
    Unexpected(String),
    /// The gateway refused this service's own credentials (401/403): the service's
    /// `DATASTORE_TOKEN` is wrong or missing. The caller did nothing wrong.
    #[error("the database gateway refused this service's DATASTORE_TOKEN ({0})")]
    Misconfigured(String),
}

impl From<DatastoreError> for ApiError {
    fn from(error: DatastoreError) -> Self {
        match error {
            DatastoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "datastore unavailable");
                ApiError::unavailable("the datastore is unavailable; retry shortly")
            }
            DatastoreError::Refused(status, message) if status.is_client_error() => {
                ApiError::new(status, message)
            }
            DatastoreError::Misconfigured(cause) => {
                tracing::error!(%cause, "the gateway refused DATASTORE_TOKEN: fix this service's configuration");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this service is misconfigured: the database gateway refused its credentials",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// Whether the gateway can hold an item with this id (its `check_id`: not empty, at
/// most 256 bytes, no NUL, not starting with its reserved `__`). Any other id names no
/// item: reads find nothing, without asking the gateway, instead of passing on its 400.
pub fn is_item_id(key: &str) -> bool {
    !key.is_empty() && key.len() <= 256 && !key.starts_with("__") && !key.contains('\0')
}

/// The id the readiness check reads (no item has it: ids are UUIDs).
const READINESS_KEY: &str = "readiness-check";

#[derive(Debug, Clone)]
pub struct Datastore {
    http: HttpClient,
    base: String,
    token: Option<String>,
}

impl Datastore {
    /// A client of the gateway at `base` (e.g. `http://127.0.0.1:30002`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = HttpClient::new(ClientOptions::default())?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn url(&self, op: &str) -> String {
        format!("{}/api/v1/datastore/{op}", self.base)
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DatastoreError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = self
            .http
            .send(request)
            .await
            .map_err(|e| DatastoreError::Unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_server_error() {
            let body = response.text().await.unwrap_or_default();
            return Err(DatastoreError::Unavailable(format!("{status}: {body}")));
        }
        // The gateway answers 401/403 only to a missing or wrong service token.
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(DatastoreError::Misconfigured(status.to_string()));
        }
        Ok(response)
    }

    async fn json(response: reqwest::Response) -> Result<Value, DatastoreError> {
        response
            .json()
            .await
            .map_err(|e| DatastoreError::Unexpected(e.to_string()))
    }

    async fn refused(response: reqwest::Response) -> DatastoreError {
        let status = response.status();
        let message = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        DatastoreError::Refused(status, message)
    }

    /// The item, or `None` if there is none with that key.
    pub async fn read(
        &self,
        objtype: &str,
        key: &str,
    ) -> Result<Option<Versioned>, DatastoreError> {
        if !is_item_id(key) {
            return Ok(None);
        }
        let response = self
            .send(
                self.http
                    .get(self.url("read"))
                    .query(&[("objtype", objtype), ("objkey", key)]),
            )
            .await?;
        match response.status() {
            StatusCode::OK => {
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = Self::json(response).await?;
                match &body["Items"][0] {
                    Value::Object(fields) => Ok(Some(Versioned {
                        fields: fields.clone(),
                        etag,
                    })),
                    _ => Err(DatastoreError::Unexpected(format!(
                        "read without an item: {body}"
                    ))),
                }
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::refused(response).await),
        }
    }

    /// The gateway's answer to a read as it is (`{"Count": 1, "Items": [...]}`), for
    /// services that pass an item through unchanged; `None` if there is none.
    pub async fn read_raw(
        &self,
        objtype: &str,
        key: &str,
    ) -> Result<Option<bytes::Bytes>, DatastoreError> {
        if !is_item_id(key) {
            return Ok(None);
        }
        let response = self
            .send(
                self.http
                    .get(self.url("read"))
                    .query(&[("objtype", objtype), ("objkey", key)]),
            )
            .await?;
        match response.status() {
            StatusCode::OK => response
                .bytes()
                .await
                .map(Some)
                .map_err(|e| DatastoreError::Unavailable(e.to_string())),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::refused(response).await),
        }
    }

    /// Writes a new item and returns its id (the gateway picks one unless `fields` has
    /// `<objtype>_id`).
    pub async fn write(
        &self,
        objtype: &str,
        mut fields: Map<String, Value>,
    ) -> Result<String, DatastoreError> {
        fields.insert("objtype".to_owned(), Value::String(objtype.to_owned()));
        let response = self
            .send(self.http.post(self.url("write")).json(&fields))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(Self::refused(response).await);
        }
        let body = Self::json(response).await?;
        body[format!("{objtype}_id")]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| DatastoreError::Unexpected(format!("write answered {body}")))
    }

    /// Sets `fields`; with `if_match`, only if the item is still at that ETag.
    pub async fn update(
        &self,
        objtype: &str,
        key: &str,
        fields: &Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<Updated, DatastoreError> {
        if !is_item_id(key) {
            return Ok(Updated::NotFound);
        }
        let mut request = self
            .http
            .put(self.url("update"))
            .query(&[("objtype", objtype), ("objkey", key)])
            .json(fields);
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let response = self.send(request).await?;
        match response.status() {
            StatusCode::OK => Ok(Updated::Done),
            StatusCode::NOT_FOUND => Ok(Updated::NotFound),
            StatusCode::PRECONDITION_FAILED => Ok(Updated::Stale),
            _ => Err(Self::refused(response).await),
        }
    }

    /// Deletes an item; `false` if there was none.
    pub async fn delete(&self, objtype: &str, key: &str) -> Result<bool, DatastoreError> {
        if !is_item_id(key) {
            return Ok(false);
        }
        let response = self
            .send(
                self.http
                    .delete(self.url("delete"))
                    .query(&[("objtype", objtype), ("objkey", key)]),
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::refused(response).await),
        }
    }

    /// One page: `{"Count", "Items", "next"}` as the gateway shapes it.
    pub async fn list(
        &self,
        objtype: &str,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Value, DatastoreError> {
        let mut query = vec![("objtype", objtype)];
        query.extend(limit.map(|l| ("limit", l)));
        query.extend(cursor.map(|c| ("cursor", c)));
        let response = self
            .send(self.http.get(self.url("list")).query(&query))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(Self::refused(response).await);
        }
        Self::json(response).await
    }

    /// One page with each item passed through `shape` (`None` leaves it out; `Count`
    /// follows), for services that hide or reshape fields.
    pub async fn list_shaped(
        &self,
        objtype: &str,
        paging: &crate::api::Paging,
        shape: impl Fn(Map<String, Value>) -> Option<Map<String, Value>>,
    ) -> Result<Value, DatastoreError> {
        let mut page = self
            .list(objtype, paging.limit.as_deref(), paging.cursor.as_deref())
            .await?;
        if let Some(items) = page["Items"].as_array_mut() {
            let shaped: Vec<Value> = items
                .drain(..)
                .filter_map(|item| match item {
                    Value::Object(fields) => shape(fields).map(Value::Object),
                    other => Some(other),
                })
                .collect();
            page["Count"] = Value::from(shaped.len());
            page["Items"] = Value::Array(shaped);
        }
        Ok(page)
    }

    /// Items whose string attribute `field` is `value` (first page, up to `limit`).
    pub async fn find(
        &self,
        objtype: &str,
        field: &str,
        value: &str,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, DatastoreError> {
        let limit = limit.to_string();
        let query = [
            ("objtype", objtype),
            ("field", field),
            ("value", value),
            ("limit", limit.as_str()),
        ];
        let response = self
            .send(self.http.get(self.url("find")).query(&query))
            .await?;
        if response.status() != StatusCode::OK {
            return Err(Self::refused(response).await);
        }
        let body = Self::json(response).await?;
        Ok(body["Items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_object().cloned())
            .collect())
    }

    /// Ok when the gateway says it is ready and accepts this service's token (an
    /// authenticated read of an id that never exists): a wrong `DATASTORE_TOKEN` keeps
    /// the service out of rotation instead of failing every request.
    pub async fn ready(&self) -> Result<(), String> {
        let response = self
            .http
            .send(self.http.get(format!("{}/readiness", self.base)))
            .await
            .map_err(|e| format!("datastore at {} unreachable: {e}", self.base))?;
        if !response.status().is_success() {
            return Err(format!(
                "datastore at {} is not ready ({})",
                self.base,
                response.status()
            ));
        }
        match self.read("user", READINESS_KEY).await {
            Ok(_) => Ok(()),
            Err(e @ DatastoreError::Misconfigured(_)) => Err(e.to_string()),
            Err(e) => Err(format!("datastore at {}: {e}", self.base)),
        }
    }
}
