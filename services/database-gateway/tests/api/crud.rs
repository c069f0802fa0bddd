use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn a_written_item_reads_back_with_its_fields_and_an_etag() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"objtype": "user", "fname": "Tina", "lname": "Weymouth", "email": "t@x.org", "age": 73, "tags": ["a", {"b": null}]})).await;

    let response = app.read("user", &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"1\"");
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"Count": 1, "Items": [{"user_id": id, "fname": "Tina", "lname": "Weymouth", "email": "t@x.org", "age": 73, "tags": ["a", {"b": null}]}]})
    );
}

#[tokio::test]
async fn a_write_may_choose_its_id_but_not_reuse_one() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"objtype": "music", "music_id": "song-1", "Artist": "A"}))
        .await;
    assert_eq!(id, "song-1");
    let again = app
        .write(json!({"objtype": "music", "music_id": "song-1", "Artist": "B"}))
        .await;
    assert_error(again, StatusCode::CONFLICT).await;
    assert_eq!(app.item("music", "song-1").await["Artist"], "A");
}

#[tokio::test]
async fn reading_an_unknown_key_is_404() {
    let app = TestApp::spawn().await;
    let message = assert_error(
        app.read("playlist", "no-such-id").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(message.contains("no-such-id"), "{message}");
}

#[tokio::test]
async fn an_update_sets_the_given_fields_keeps_the_rest_and_moves_the_etag() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"objtype": "user", "fname": "Leon", "lname": "Beiderbecke"}))
        .await;

    let response = app
        .update("user", &id, json!({"lname": "Bix", "nick": null}), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"], "\"2\"");
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"user_id": id})
    );

    let item = app.item("user", &id).await;
    assert_eq!(
        item,
        json!({"user_id": id, "fname": "Leon", "lname": "Bix", "nick": null})
    );
}

#[tokio::test]
async fn an_update_with_a_stale_if_match_is_412_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"objtype": "music", "Artist": "A"})).await;
    assert_eq!(
        app.update("music", &id, json!({"Artist": "B"}), Some("\"1\""))
            .await
            .status(),
        StatusCode::OK
    );

    let stale = app
        .update("music", &id, json!({"Artist": "C"}), Some("\"1\""))
        .await;
    let message = assert_error(stale, StatusCode::PRECONDITION_FAILED).await;
    assert!(
        message.contains("\"2\""),
        "the error names the current version: {message}"
    );
    assert_eq!(app.item("music", &id).await["Artist"], "B");

    assert_eq!(
        app.update("music", &id, json!({"Artist": "C"}), Some("\"2\""))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.item("music", &id).await["Artist"], "C");
}

#[tokio::test]
async fn updating_or_deleting_an_unknown_key_is_404() {
    let app = TestApp::spawn().await;
    assert_error(
        app.update("user", "ghost", json!({"fname": "x"}), None)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        app.update("user", "ghost", json!({"fname": "x"}), Some("\"1\""))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(app.delete("user", "ghost").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn a_deleted_item_is_gone() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"objtype": "playlist", "Name": "Blue Monday"}))
        .await;
    let response = app.delete("playlist", &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({"playlist_id": id})
    );
    assert_error(app.read("playlist", &id).await, StatusCode::NOT_FOUND).await;
    assert_error(app.delete("playlist", &id).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn list_pages_through_every_item_exactly_once() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(app.create(json!({"objtype": "music", "n": i})).await);
    }
    app.create(json!({"objtype": "user", "fname": "not music"}))
        .await;
    ids.sort();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/api/v1/datastore/list?objtype=music&limit=10".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get(&path).await.json().await.expect("json");
        pages += 1;
        let items = page["Items"].as_array().expect("items");
        assert_eq!(page["Count"].as_u64(), Some(items.len() as u64));
        seen.extend(
            items
                .iter()
                .map(|i| i["music_id"].as_str().expect("id").to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an item appeared on two pages");
    seen.sort();
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn list_of_an_empty_type_is_an_empty_page() {
    let app = TestApp::spawn().await;
    let page: Value = app
        .get("/api/v1/datastore/list?objtype=playlist")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page, json!({"Count": 0, "Items": [], "next": null}));
}

#[tokio::test]
async fn find_matches_one_string_attribute_exactly() {
    let app = TestApp::spawn().await;
    let a = app
        .create(json!({"objtype": "user", "email": "a@x.org", "fname": "A"}))
        .await;
    app.create(json!({"objtype": "user", "email": "b@x.org", "fname": "A"}))
        .await;
    app.create(json!({"objtype": "user", "email": "A@X.ORG"}))
        .await;
    app.create(json!({"objtype": "user", "other": "a@x.org"}))
        .await;

    let page: Value = app
        .get("/api/v1/datastore/find?objtype=user&field=email&value=a%40x.org")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["Count"], 1);
    assert_eq!(page["Items"][0]["user_id"], a.as_str());

    let both: Value = app
        .get("/api/v1/datastore/find?objtype=user&field=fname&value=A")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(both["Count"], 2);

    let none: Value = app
        .get("/api/v1/datastore/find?objtype=music&field=email&value=a%40x.org")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none["Count"], 0);

    let by_key: Value = app
        .get(&format!(
            "/api/v1/datastore/find?objtype=user&field=user_id&value={a}"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(by_key["Count"], 1);
}

#[tokio::test]
async fn find_pages_like_list() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        app.create(json!({"objtype": "music", "Artist": "Same"}))
            .await;
    }
    let first: Value = app
        .get("/api/v1/datastore/find?objtype=music&field=Artist&value=Same&limit=3")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["Count"], 3);
    let next = first["next"].as_str().expect("a second page");
    let second: Value = app
        .get(&format!(
            "/api/v1/datastore/find?objtype=music&field=Artist&value=Same&limit=3&cursor={next}"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["Count"], 2);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn awkward_field_names_are_data_not_query_text() {
    let app = TestApp::spawn().await;
    let fields = json!({"Name": "reserved word", "a b": "space", "x\"y": "quote", "'; DROP TABLE items; --": "injection", "ünï": "unicode"});
    let mut body = fields.clone();
    body["objtype"] = json!("playlist");
    let id = app.create(body).await;

    let mut expected = fields.clone();
    expected["playlist_id"] = json!(id);
    assert_eq!(app.item("playlist", &id).await, expected);

    let response = app
        .update(
            "playlist",
            &id,
            json!({"Name": "renamed", "'; DROP TABLE items; --": 2}),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let item = app.item("playlist", &id).await;
    assert_eq!(item["Name"], "renamed");
    assert_eq!(item["'; DROP TABLE items; --"], 2);
    assert_eq!(item["x\"y"], "quote");

    for (field, value) in [("Name", "renamed"), ("a b", "space"), ("x\"y", "quote")] {
        let page: Value = app
            .client
            .get(app.url("/api/v1/datastore/find"))
            .query(&[("objtype", "playlist"), ("field", field), ("value", value)])
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert_eq!(page["Count"], 1, "find by {field}");
    }
    // The table survived the name that looks like SQL.
    let page: Value = app
        .get("/api/v1/datastore/list?objtype=playlist")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["Count"], 1);
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_write_return_the_first_result() {
    let app = TestApp::spawn().await;
    let send = |body: Value, key: &'static str| {
        app.client
            .post(app.url("/api/v1/datastore/write"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first: Value = send(json!({"objtype": "music", "Artist": "X"}), "k-1")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let retry = send(json!({"objtype": "music", "Artist": "X"}), "k-1")
        .await
        .expect("request");
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.expect("json"), first);

    let page: Value = app
        .get("/api/v1/datastore/list?objtype=music")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["Count"], 1, "the retry did not add a second item");

    let misuse = send(json!({"objtype": "music", "Artist": "Y"}), "k-1")
        .await
        .expect("request");
    assert_error(misuse, StatusCode::UNPROCESSABLE_ENTITY).await;
    let other: Value = send(json!({"objtype": "music", "Artist": "X"}), "k-2")
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_ne!(other, first, "another key is another write");
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_create_one_item() {
    let app = TestApp::spawn().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let request = app
            .client
            .post(app.url("/api/v1/datastore/write"))
            .header("Idempotency-Key", "same")
            .json(&json!({"objtype": "user", "fname": "Once"}));
        tasks.push(tokio::spawn(async move {
            request
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        ids.insert(
            task.await.expect("task")["user_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let page: Value = app
        .get("/api/v1/datastore/list?objtype=user")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["Count"], 1);
}

#[tokio::test]
async fn big_and_exact_numbers_survive_a_round_trip() {
    let app = TestApp::spawn().await;
    let body: Value = serde_json::from_str(
        r#"{"objtype":"music","big":12345678901234567890123456789012345678,"neg":-42,"frac":0.125,"u64max":18446744073709551615}"#,
    )
    .expect("json");
    let id = app.create(body).await;
    let text = app.read("music", &id).await.text().await.expect("body");
    assert!(
        text.contains("12345678901234567890123456789012345678"),
        "{text}"
    );
    assert!(text.contains("18446744073709551615"), "{text}");
    assert!(text.contains("-42") && text.contains("0.125"), "{text}");
}

#[tokio::test]
async fn an_idempotency_key_is_scoped_to_its_object_type() {
    let app = TestApp::spawn().await;
    let send = |body: Value| {
        app.client
            .post(app.url("/api/v1/datastore/write"))
            .header("Idempotency-Key", "shared-key")
            .json(&body)
            .send()
    };
    let user = send(json!({"objtype": "user", "fname": "A"}))
        .await
        .expect("request");
    assert_eq!(user.status(), StatusCode::OK);
    let music = send(json!({"objtype": "music", "fname": "A"}))
        .await
        .expect("request");
    assert_eq!(music.status(), StatusCode::OK);
    assert!(!music.headers().contains_key("idempotent-replayed"));
    let music_id = music.json::<Value>().await.expect("json")["music_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.item("music", &music_id).await["fname"], "A");
}

#[tokio::test]
async fn reserved_names_are_refused() {
    let app = TestApp::spawn().await;
    assert_error(
        app.write(json!({"objtype": "user", "__version": 9})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.write(json!({"objtype": "user", "user_id": "__idempotency/x"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        app.read("user", "__idempotency/x").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
