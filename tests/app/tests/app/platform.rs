//! `Platform`: the real gateway (SQLite in a temp folder), user, music and playlist
//! binaries on free loopback ports, wired together, with typed HTTP helpers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789abcdef";
/// The password of the users `login_new_user` creates.
pub const PASSWORD: &str = "a test password";

/// Builds the four binaries once per test run and returns their folder.
fn binaries() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "database-gateway",
                "-p",
                "user",
                "-p",
                "music",
                "-p",
                "playlist",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the service binaries failed");
        // target/<profile>/deps/<this test> -> target/<profile>
        let exe = std::env::current_exe().expect("test executable");
        exe.parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .to_path_buf()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// One running binary.
pub struct Process {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Process {
    pub fn start(name: &str, envs: &[(String, String)], dir: &std::path::Path) -> Self {
        let port = free_port();
        let log = dir.join(format!("{name}-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binaries().join(name))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The process id (to read its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_ready(&self) {
        self.wait_for("/readiness").await;
    }

    /// Waits (20 s at most) until `path` answers 200.
    pub async fn wait_for(&self, path: &str) {
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}{path}", self.base)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} not 200 in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start the platform.
#[derive(Clone, Default)]
pub struct Options {
    /// `jwt` (default) or `presence`.
    pub auth_mode: Option<&'static str>,
    /// Extra environment for the music service (e.g. MUSIC_VERSION=v2).
    pub music_env: Vec<(String, String)>,
    /// Extra environment for every process (e.g. OTEL_EXPORTER_OTLP_ENDPOINT).
    pub common_env: Vec<(String, String)>,
    /// Extra environment for the user service (e.g. ALLOW_UID_LOGIN).
    pub user_env: Vec<(String, String)>,
}

pub struct Platform {
    pub gateway: Process,
    pub user: Process,
    pub music: Process,
    pub playlist: Process,
    pub http: reqwest::Client,
    /// The Authorization header value the helpers send.
    pub auth: Option<String>,
    _dir: tempfile::TempDir,
}

impl Platform {
    pub async fn start(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut common = options.common_env.clone();
        let gateway = Process::start(
            "database-gateway",
            &[
                common.clone(),
                vec![(
                    "DATABASE_URL".into(),
                    format!("sqlite://{}", dir.path().join("data.db").display()),
                )],
            ]
            .concat(),
            dir.path(),
        );
        gateway.wait_ready().await;
        common.extend([
            ("DATASTORE_URL".to_owned(), gateway.base.clone()),
            (
                "AUTH_MODE".to_owned(),
                options.auth_mode.unwrap_or("jwt").to_owned(),
            ),
            ("JWT_SECRET".to_owned(), SECRET.to_owned()),
        ]);
        let user = Process::start(
            "user",
            &[common.clone(), options.user_env.clone()].concat(),
            dir.path(),
        );
        let music = Process::start(
            "music",
            &[common.clone(), options.music_env.clone()].concat(),
            dir.path(),
        );
        let playlist = Process::start("playlist", &common, dir.path());
        for p in [&user, &music, &playlist] {
            p.wait_ready().await;
        }
        Self {
            gateway,
            user,
            music,
            playlist,
            http: client(),
            auth: None,
            _dir: dir,
        }
    }

    /// The platform in presence mode, sending `Authorization: Bearer A` as the course's CI.
    pub async fn presence() -> Self {
        let mut platform = Self::start(Options {
            auth_mode: Some("presence"),
            ..Options::default()
        })
        .await;
        platform.auth = Some("Bearer A".to_owned());
        platform
    }

    /// The platform in jwt mode, logged in as a fresh user.
    pub async fn logged_in() -> Self {
        let mut platform = Self::start(Options::default()).await;
        let token = platform.login_new_user().await;
        platform.auth = Some(format!("Bearer {token}"));
        platform
    }

    /// Creates a user with a unique email, logs in, and returns the token.
    pub async fn login_new_user(&self) -> String {
        let unique = format!("{}@example.org", free_port());
        let created = self
            .call_as(
                None,
                Method::POST,
                &self.user,
                "/api/v1/user/",
                Some(serde_json::json!({"fname": "Tina", "lname": "Weymouth", "email": unique, "password": PASSWORD})),
            )
            .await;
        assert_eq!(created.status(), StatusCode::OK);
        let id = created.json::<Value>().await.expect("json")["user_id"]
            .as_str()
            .expect("id")
            .to_owned();
        self.login(&id, Some(PASSWORD)).await
    }

    pub async fn login(&self, uid: &str, password: Option<&str>) -> String {
        let mut body = serde_json::json!({"uid": uid});
        if let Some(p) = password {
            body["password"] = Value::String(p.to_owned());
        }
        let response = self
            .call_as(
                None,
                Method::PUT,
                &self.user,
                "/api/v1/user/login",
                Some(body),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "login");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/plain")
        );
        response.text().await.expect("token")
    }

    /// A request with the platform's Authorization header.
    pub async fn call(
        &self,
        method: Method,
        service: &Process,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        self.call_as(self.auth.as_deref(), method, service, path, body)
            .await
    }

    /// A request with the given Authorization header (or none).
    pub async fn call_as(
        &self,
        auth: Option<&str>,
        method: Method,
        service: &Process,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", service.base));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// Creates a song and returns its id.
    pub async fn song(&self, artist: &str, title: &str) -> String {
        let response = self
            .call(
                Method::POST,
                &self.music,
                "/api/v1/music/",
                Some(serde_json::json!({"Artist": artist, "SongTitle": title})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "create song");
        response.json::<Value>().await.expect("json")["music_id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// The single item of a successful GET.
    pub async fn item(&self, service: &Process, path: &str) -> Value {
        let response = self.call(Method::GET, service, path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["Count"], 1, "{body}");
        body["Items"][0].clone()
    }
}

/// Asserts a status and the JSON error envelope; returns the message.
pub async fn assert_error(response: Response, status: StatusCode) -> String {
    let got = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "body: {text}");
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` in {text}"))
        .to_owned()
}
