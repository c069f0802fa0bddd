use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error};

async fn raw_write(app: &TestApp, body: &'static str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/datastore/write"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn malformed_bodies_are_400_with_the_envelope() {
    let app = TestApp::spawn().await;
    for body in [
        "{not json",
        "",
        "[1, 2]",
        "42",
        "\"user\"",
        "null",
        "{\"objtype\": \"user\",}",
    ] {
        let message = assert_error(raw_write(&app, body).await, StatusCode::BAD_REQUEST).await;
        assert!(!message.contains("panicked"), "{body}: {message}");
    }
    app.assert_alive().await;
}

#[tokio::test]
async fn a_missing_or_unknown_objtype_is_400() {
    let app = TestApp::spawn().await;
    let message = assert_error(
        app.write(json!({"fname": "x"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("objtype"), "{message}");
    let message = assert_error(
        app.write(json!({"objtype": "users"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("users"), "{message}");
    assert_error(
        app.write(json!({"objtype": 1})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(app.read("items", "x").await, StatusCode::BAD_REQUEST).await;
    assert_error(
        app.get("/api/v1/datastore/read?objkey=x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/list").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/list?objtype=DROP%20TABLE").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_non_string_or_missing_objkey_is_400() {
    let app = TestApp::spawn().await;
    assert_error(
        app.write(json!({"objtype": "user", "user_id": 5})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.write(json!({"objtype": "user", "user_id": ["a"]}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.write(json!({"objtype": "user", "user_id": ""})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/read?objtype=user").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/read?objtype=user&objkey=").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/read?objtype=user&objkey=a&objkey=b")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let long = "k".repeat(300);
    assert_error(app.read("user", &long).await, StatusCode::BAD_REQUEST).await;
    let id = app.create(json!({"objtype": "user", "fname": "x"})).await;
    assert_error(
        app.update("user", &id, json!({"user_id": "other"}), None)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.update("user", &id, json!({}), None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.update("user", &id, json!([1]), None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.update("user", &id, json!({"x": 1}), Some("not-an-etag"))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn values_no_engine_can_store_exactly_are_400() {
    let app = TestApp::spawn().await;
    assert_error(
        app.write(json!({"objtype": "user", "fname": "nul\u{0}byte"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.write(json!({"objtype": "user", "": 1})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let too_precise = raw_write(
        &app,
        r#"{"objtype":"user","n":1234567890123456789012345678901234567890}"#,
    )
    .await;
    assert_error(too_precise, StatusCode::BAD_REQUEST).await;
    let too_big = raw_write(&app, r#"{"objtype":"user","n":1e400}"#).await;
    assert_error(too_big, StatusCode::BAD_REQUEST).await;
    let page: serde_json::Value = app
        .get("/api/v1/datastore/list?objtype=user")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["Count"], 0, "nothing was stored");
}

#[tokio::test]
async fn bad_paging_parameters_are_400() {
    let app = TestApp::spawn().await;
    for query in [
        "limit=0",
        "limit=-3",
        "limit=1001",
        "limit=ten",
        "cursor=%%%",
        "cursor=***",
    ] {
        let response = app
            .get(&format!("/api/v1/datastore/list?objtype=user&{query}"))
            .await;
        assert_error(response, StatusCode::BAD_REQUEST).await;
    }
    assert_error(
        app.get("/api/v1/datastore/find?objtype=user&field=email")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/find?objtype=user&value=x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn a_one_mebibyte_body_is_413_and_the_gateway_lives_on() {
    let app = TestApp::spawn().await;
    let big = format!(
        r#"{{"objtype":"user","blob":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let response = app
        .client
        .post(app.url("/api/v1/datastore/write"))
        .body(big.clone())
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Without a Content-Length (chunked), the limit still holds.
    let status = chunked_post(&app, "/api/v1/datastore/write", big.as_bytes()).await;
    assert_eq!(status, 413);
    app.assert_alive().await;
    assert_eq!(
        app.write(json!({"objtype": "user", "fname": "after"}))
            .await
            .status(),
        StatusCode::OK
    );
}

/// Posts `body` with `Transfer-Encoding: chunked` over a raw connection; returns the status.
async fn chunked_post(app: &TestApp, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    for chunk in body.chunks(16 * 1024) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer 413 and close before the whole body is sent.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"))
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_the_envelope() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/api/v1/datastore/nope").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let response = app
        .client
        .delete(app.url("/api/v1/datastore/read"))
        .send()
        .await
        .expect("request");
    assert!(response.headers().contains_key("allow"));
    assert_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn nul_characters_in_find_and_cursors_are_400() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/api/v1/datastore/find?objtype=user&field=user&value=%00")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.get("/api/v1/datastore/find?objtype=user&field=a%00b&value=x")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // base64url of "a\0b"
    assert_error(
        app.get("/api/v1/datastore/list?objtype=user&cursor=YQBi")
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    app.assert_alive().await;
}
