//! Readiness follows the store: PostgreSQL is stopped and started under a running
//! gateway. Needs the commands to do that, which `ci/postgres.sh` provides; run it
//! alone (`--ignored`), since stopping the server would fail the other tests.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error};

fn run(var: &str) {
    let command = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set; run this through ci/postgres.sh"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .status()
        .expect("run the command");
    assert!(status.success(), "`{command}` failed");
}

async fn wait_for_readiness(app: &TestApp, want: StatusCode, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.get("/readiness").await.status() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/readiness did not become {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "stops the PostgreSQL server; ci/postgres.sh runs it with TEST_PG_STOP / TEST_PG_START"]
async fn readiness_is_503_while_postgres_is_down_and_200_when_it_is_back() {
    let app = TestApp::spawn().await;
    wait_for_readiness(&app, StatusCode::OK, Duration::from_secs(10)).await;
    let id = app
        .create(json!({"objtype": "user", "fname": "before"}))
        .await;

    run("TEST_PG_STOP");
    let down = wait_for_readiness(
        &app,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    let message = assert_error(app.read("user", &id).await, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        !message.contains("127.0.0.1"),
        "no connection details leak: {message}"
    );
    app.assert_alive().await;

    run("TEST_PG_START");
    let up = wait_for_readiness(&app, StatusCode::OK, Duration::from_secs(30)).await;
    assert_eq!(app.item("user", &id).await["fname"], "before");
    app.create(json!({"objtype": "user", "fname": "after"}))
        .await;
    println!("readiness went 503 {down:?} after the stop and 200 {up:?} after the start");
}
