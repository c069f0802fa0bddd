//! `TestApp`: a real gateway on a free loopback port over a fresh, isolated store.
//!
//! The engine comes from `TEST_DATABASE_URL`: unset means a SQLite file in a temp
//! folder; `postgres://.../<admin db>` means a new database per test on that server;
//! `dynamodb://` means three new tables per test (a fresh suffix) on the server at
//! `DYNAMODB_URL`. The same tests therefore run unchanged against every engine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use database_gateway::{AppState, Config, DatabaseUrl};
use kit::ServerArgs;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::Connection as _;

pub const LOADER_TOKEN: &str = "loader-secret";

/// An isolated store location and whatever keeps it alive.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new() -> Self {
        match std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty() && u != "sqlite")
        {
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("datastore.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
            Some(admin) if admin.starts_with("postgres") => {
                let name = format!("gw_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(base, _)| base);
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
            Some(dynamo) if dynamo.starts_with("dynamodb://") => {
                let suffix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let client =
                    database_gateway::store::dynamodb::client(dynamodb_url().as_deref()).await;
                database_gateway::store::dynamodb::create_tables(&client, Some(&suffix))
                    .await
                    .expect("create tables");
                Self {
                    url: format!("dynamodb://{suffix}"),
                    _dir: None,
                }
            }
            Some(other) => panic!("TEST_DATABASE_URL `{other}` names no engine this suite knows"),
        }
    }
}

/// The DynamoDB endpoint the suite uses (`DYNAMODB_URL`).
pub fn dynamodb_url() -> Option<String> {
    std::env::var("DYNAMODB_URL").ok().filter(|u| !u.is_empty())
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// Keeps the store alive as long as the app.
    _db: TestDatabase,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Knobs a test may turn before the gateway starts.
#[derive(Default, Clone)]
pub struct Options {
    pub datastore_token: Option<String>,
    pub loader_token: Option<String>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options {
            loader_token: Some(LOADER_TOKEN.to_owned()),
            ..Options::default()
        })
        .await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let db = TestDatabase::new().await;
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: DatabaseUrl::parse(&db.url).expect("test url"),
            database_url_file: None,
            dynamodb_url: dynamodb_url(),
            datastore_token: options.datastore_token,
            loader_token: options.loader_token,
            datastore_token_file: None,
            loader_token_file: None,
            server: ServerArgs::default(),
        };
        let state = AppState::from_config(&config).await.expect("open store");
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = database_gateway::run(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            base: format!("http://{addr}"),
            client: client(),
            _db: db,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn write(&self, body: Value) -> Response {
        self.client
            .post(self.url("/api/v1/datastore/write"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Writes and returns the new id, asserting success.
    pub async fn create(&self, body: Value) -> String {
        let objtype = body["objtype"].as_str().expect("objtype").to_owned();
        let response = self.write(body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let json: Value = response.json().await.expect("json");
        json[format!("{objtype}_id")]
            .as_str()
            .expect("id")
            .to_owned()
    }

    pub async fn read(&self, objtype: &str, key: &str) -> Response {
        self.client
            .get(self.url("/api/v1/datastore/read"))
            .query(&[("objtype", objtype), ("objkey", key)])
            .send()
            .await
            .expect("request")
    }

    /// The single item of a successful read.
    pub async fn item(&self, objtype: &str, key: &str) -> Value {
        let response = self.read(objtype, key).await;
        assert_eq!(response.status(), StatusCode::OK, "reading {objtype} {key}");
        let json: Value = response.json().await.expect("json");
        assert_eq!(json["Count"], 1);
        json["Items"][0].clone()
    }

    pub async fn update(
        &self,
        objtype: &str,
        key: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Response {
        let mut request = self
            .client
            .put(self.url("/api/v1/datastore/update"))
            .query(&[("objtype", objtype), ("objkey", key)])
            .json(&body);
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        request.send().await.expect("request")
    }

    pub async fn delete(&self, objtype: &str, key: &str) -> Response {
        self.client
            .delete(self.url("/api/v1/datastore/delete"))
            .query(&[("objtype", objtype), ("objkey", key)])
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path_and_query: &str) -> Response {
        self.client
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("request")
    }

    pub async fn load(&self, body: Value, token: Option<&str>) -> Response {
        let mut request = self
            .client
            .post(self.url("/api/v1/datastore/load"))
            .json(&body);
        if let Some(token) = token {
            request = request.basic_auth("svc-loader", Some(token));
        }
        request.send().await.expect("request")
    }

    pub async fn assert_alive(&self) {
        let response = self.get("/health").await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the gateway should still be up"
        );
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Asserts a status and the JSON error envelope; returns the message.
pub async fn assert_error(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "unexpected status");
    let text = response.text().await.expect("body");
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    let message = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` in {text}"))
        .to_owned();
    assert!(!message.is_empty());
    assert_eq!(
        json.as_object().map(|o| o.len()),
        Some(1),
        "the envelope holds only `error`: {text}"
    );
    message
}

/// A free loopback port (bound and released; the caller binds it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real `database-gateway` binary, for tests that kill it.
pub struct GatewayProcess {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl GatewayProcess {
    pub async fn start(database_url: &str, envs: &[(&str, &str)], log: PathBuf) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_database-gateway"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN", addr.to_string())
            .env("DATABASE_URL", database_url)
            // The AWS environment (endpoint, region, dummy credentials) reaches the binary.
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("AWS_") || k == "DYNAMODB_URL"))
            .env("RUST_LOG", "info")
            .envs(envs.iter().copied())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the gateway binary");
        let process = Self {
            child,
            base: format!("http://{addr}"),
            log,
        };
        process.wait_ready().await;
        process
    }

    async fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/readiness", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready in 20 s; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the gateway");
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
