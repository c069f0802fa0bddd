use database_gateway::{AppState, Config, DatabaseUrl};
use kit::ServerArgs;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{LOADER_TOKEN, Options, TestApp, assert_error};

#[tokio::test]
async fn load_writes_the_given_uuid_and_reloading_changes_nothing() {
    let app = TestApp::spawn().await;
    let row = json!({"objtype": "user", "uuid": "b66f61e7-4fad-402f-aaad-101e3e2522d3", "fname": "George", "lname": "Clinton", "email": "starchild@pfunk.org"});

    let first = app.load(row.clone(), Some(LOADER_TOKEN)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-load-outcome"], "created");
    assert_eq!(
        first.json::<Value>().await.expect("json"),
        json!({"user_id": "b66f61e7-4fad-402f-aaad-101e3e2522d3"})
    );

    let again = app.load(row.clone(), Some(LOADER_TOKEN)).await;
    assert_eq!(again.headers()["x-load-outcome"], "unchanged");
    assert_eq!(again.headers()["etag"], "\"1\"");

    let mut changed = row.clone();
    changed["email"] = json!("george@pfunk.org");
    let replaced = app.load(changed, Some(LOADER_TOKEN)).await;
    assert_eq!(replaced.headers()["x-load-outcome"], "replaced");
    assert_eq!(replaced.headers()["etag"], "\"2\"");

    let item = app
        .item("user", "b66f61e7-4fad-402f-aaad-101e3e2522d3")
        .await;
    assert_eq!(
        item,
        json!({"user_id": "b66f61e7-4fad-402f-aaad-101e3e2522d3", "fname": "George", "lname": "Clinton", "email": "george@pfunk.org"})
    );
}

#[tokio::test]
async fn load_refuses_missing_or_wrong_credentials() {
    let app = TestApp::spawn().await;
    let row = json!({"objtype": "music", "uuid": "u-1", "Artist": "A"});
    assert_error(app.load(row.clone(), None).await, StatusCode::UNAUTHORIZED).await;
    assert_error(
        app.load(row.clone(), Some("wrong")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let other_user = app
        .client
        .post(app.url("/api/v1/datastore/load"))
        .basic_auth("someone", Some(LOADER_TOKEN))
        .json(&row)
        .send()
        .await
        .expect("request");
    assert_error(other_user, StatusCode::UNAUTHORIZED).await;
    assert_error(app.read("music", "u-1").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn load_checks_its_body() {
    let app = TestApp::spawn().await;
    assert_error(
        app.load(
            json!({"objtype": "music", "Artist": "A"}),
            Some(LOADER_TOKEN),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.load(json!({"objtype": "music", "uuid": 7}), Some(LOADER_TOKEN))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.load(json!({"objtype": "song", "uuid": "x"}), Some(LOADER_TOKEN))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.load(json!(["x"]), Some(LOADER_TOKEN)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn load_is_disabled_without_a_loader_token() {
    let app = TestApp::spawn_with(Options::default()).await;
    let message = assert_error(
        app.load(json!({"objtype": "music", "uuid": "x"}), Some("anything"))
            .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(message.contains("SVC_LOADER_TOKEN"), "{message}");
}

#[tokio::test]
async fn the_service_token_guards_every_datastore_route_but_not_the_probes() {
    let app = TestApp::spawn_with(Options {
        datastore_token: Some("svc-token".to_owned()),
        loader_token: Some(LOADER_TOKEN.to_owned()),
    })
    .await;
    let url = app.url("/api/v1/datastore/write");
    let body = json!({"objtype": "user", "fname": "x"});

    assert_error(
        app.client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("request"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_error(
        app.client
            .post(&url)
            .bearer_auth("nope")
            .json(&body)
            .send()
            .await
            .expect("request"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/list?objtype=user").await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let ok = app
        .client
        .post(&url)
        .bearer_auth("svc-token")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), StatusCode::OK);

    for probe in [
        "/health",
        "/readiness",
        "/metrics",
        "/api/v1/datastore/health",
        "/api/v1/datastore/readiness",
    ] {
        assert_eq!(app.get(probe).await.status(), StatusCode::OK, "{probe}");
    }
    // The loader authenticates with its own Basic credentials.
    let loaded = app
        .load(json!({"objtype": "user", "uuid": "u"}), Some(LOADER_TOKEN))
        .await;
    assert_eq!(loaded.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_empty_token_is_a_start_up_error_not_no_check() {
    for (datastore_token, loader_token) in [(Some(""), None), (None, Some(""))] {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database_url: DatabaseUrl::parse("sqlite::memory:").expect("url"),
            database_url_file: None,
            dynamodb_url: None,
            datastore_token: datastore_token.map(str::to_owned),
            loader_token: loader_token.map(str::to_owned),
            datastore_token_file: None,
            loader_token_file: None,
            server: ServerArgs::default(),
        };
        let error = AppState::from_config(&config)
            .await
            .err()
            .expect("an empty token is refused");
        assert!(error.to_string().contains("is set but empty"), "{error:#}");
    }
}
