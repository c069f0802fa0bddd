//! The Fibonacci service over HTTP: values, validation, per-replica status, the
//! CPU-load simulator (against the real binary, reading its own CPU metric), the page.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fibonacci::{AppState, Config};
use num_bigint::BigUint;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Tests that burn or measure CPU run one at a time, so neither takes the other's core.
static CPU_BOUND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const F1000: &str = "43466557686937456435688527675040625802564660517371780402481729089536555417949051890403879840079255169295922593080322634775209689623239873322471161642996440906533187938298969649928516003704476137795166849228875";

struct TestApp {
    base: String,
    client: reqwest::Client,
}

impl TestApp {
    async fn spawn() -> Self {
        let state = AppState::new(&Config::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(fibonacci::run(listener, state, std::future::pending()));
        Self {
            base,
            client: client(),
        }
    }

    async fn post(&self, body: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/fibonacci", self.base))
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    /// F(n) as the exact decimal text of the JSON integer in the response.
    async fn value(&self, n: u64) -> String {
        let response = self.post(&format!("{{\"fibonacci_number\": {n}}}")).await;
        assert_eq!(response.status(), StatusCode::OK, "F({n})");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["fibonacci_number"], json!(n));
        assert!(
            body["value"].is_number(),
            "the value is a JSON integer, not a string"
        );
        body["value"].to_string()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn assert_400(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|_| panic!("{what}: envelope is JSON"));
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn small_values_and_the_u64_boundary_are_exact() {
    let app = TestApp::spawn().await;
    assert_eq!(app.value(0).await, "0");
    assert_eq!(app.value(1).await, "1");
    assert_eq!(app.value(20).await, "6765");
    assert_eq!(app.value(93).await, "12200160415121876738");
    assert_eq!(app.value(94).await, "19740274219868223167");
    assert_eq!(app.value(1000).await, F1000);
    assert_eq!(F1000.len(), 209);
}

#[tokio::test]
async fn f_100000_has_20899_digits_and_matches_plain_addition() {
    let _alone = CPU_BOUND.lock().await;
    let app = TestApp::spawn().await;
    let served = app.value(100_000).await;
    assert_eq!(served.len(), 20_899);
    // Independent: 100000 big additions, no doubling formulas.
    let (mut a, mut b) = (BigUint::from(0u32), BigUint::from(1u32));
    for _ in 0..100_000 {
        let next = &a + &b;
        a = std::mem::replace(&mut b, next);
    }
    assert_eq!(served, a.to_string());
}

#[tokio::test]
async fn get_with_n_and_post_with_a_body_agree() {
    let app = TestApp::spawn().await;
    for n in [0u64, 7, 94, 300, 5000] {
        let get: Value = app
            .get(&format!("/fibonacci?n={n}"))
            .await
            .json()
            .await
            .expect("json");
        let post: Value = app
            .post(&format!("{{\"fibonacci_number\":{n}}}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(get, post, "n = {n}");
    }
    let named: Value = app
        .get("/fibonacci?fibonacci_number=12")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(named["value"], json!(144));
}

#[tokio::test]
async fn bad_n_is_400_with_the_envelope() {
    let app = TestApp::spawn().await;
    for body in [
        r#"{"fibonacci_number": -1}"#,
        r#"{"fibonacci_number": 1.5}"#,
        r#"{"fibonacci_number": "20"}"#,
        r#"{"fibonacci_number": 100001}"#,
        r#"{"fibonacci_number": 1e3}"#,
        r#"{"fibonacci_number": null}"#,
        r#"{"fibonacci_number": 123456789012345678901234567890}"#,
        r#"{}"#,
        r#"{"n": 20}"#,
        r#"{"fibonacci_number": 20"#,
        r#"[20]"#,
        "",
    ] {
        assert_400(app.post(body).await, body).await;
    }
    for query in ["n=-1", "n=1.5", "n=100001", "n=abc", "n=", ""] {
        assert_400(app.get(&format!("/fibonacci?{query}")).await, query).await;
    }
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn status_counts_requests_and_the_cache_grows_with_new_n() {
    let app = TestApp::spawn().await;
    let before: Value = app.get("/status").await.json().await.expect("json");
    assert_eq!(before["requests"], 0);
    assert_eq!(before["cache_length"], 0);
    for n in [10, 11, 12, 10, 10] {
        app.value(n).await;
    }
    let after: Value = app.get("/status").await.json().await.expect("json");
    assert_eq!(after["requests"], 5);
    assert_eq!(after["cache_length"], 3, "three distinct n");
    assert_400(app.post("{}").await, "bad request").await;

    let other = TestApp::spawn().await;
    let theirs: Value = other.get("/status").await.json().await.expect("json");
    assert!(after["instance"].as_str().is_some_and(|s| !s.is_empty()));
    assert_ne!(
        after["instance"], theirs["instance"],
        "replicas have distinct instance ids"
    );
}

#[tokio::test]
async fn the_page_is_self_contained_and_has_the_load_buttons() {
    let app = TestApp::spawn().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let html = response.text().await.expect("body");
    for profile in ["high", "medium", "low", "off"] {
        assert!(
            html.contains(&format!("data-p=\"{profile}\"")),
            "{profile} button"
        );
    }
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains(" src="),
        "no external assets"
    );
    let stats = app.get("/stats").await;
    assert_eq!(stats.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_load_profile_is_400() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .put(format!("{}/load/cpu", app.base))
        .body(r#"{"profile":"max"}"#)
        .send()
        .await
        .expect("request");
    assert_400(response, "unknown profile").await;
    let current: Value = app.get("/load/cpu").await.json().await.expect("json");
    assert_eq!(current["profile"], "off");
}

/// The real binary, so that its CPU metric is the service's own.
struct Replica {
    child: Child,
    base: String,
}

impl Replica {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_fibonacci"))
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fibonacci");
        let replica = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while client()
            .get(format!("{}/readiness", replica.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "fibonacci did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        replica
    }

    async fn cpu_seconds(&self) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        text.lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("process_cpu_seconds_total")
    }

    /// Share of one core used over `window`.
    async fn cpu_share(&self, window: Duration) -> f64 {
        let (c0, t0) = (self.cpu_seconds().await, Instant::now());
        tokio::time::sleep(window).await;
        (self.cpu_seconds().await - c0) / t0.elapsed().as_secs_f64()
    }

    async fn set(&self, profile: &str) {
        let response = client()
            .put(format!("{}/load/cpu", self.base))
            .json(&json!({"profile": profile}))
            .send()
            .await
            .expect("set profile");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn high_load_burns_most_of_a_core_and_off_stops_it() {
    let _alone = CPU_BOUND.lock().await;
    let replica = Replica::start().await;
    replica.set("high").await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // the climb
    let high = replica.cpu_share(Duration::from_secs(3)).await;
    println!("high: {:.1}% of one core", high * 100.0);
    // 72% of a core when the machine has one to spare; a busy machine may give less.
    assert!(
        (0.45..=0.90).contains(&high),
        "high burned {:.1}% of a core",
        high * 100.0
    );

    replica.set("off").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let off = replica.cpu_share(Duration::from_secs(2)).await;
    println!("off: {:.1}% of one core", off * 100.0);
    assert!(off < 0.10, "off still burned {:.1}% of a core", off * 100.0);
}
