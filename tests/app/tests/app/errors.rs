//! The error table of API.md, service by service.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::platform::{Platform, assert_error};

#[tokio::test]
async fn unknown_ids_are_404() {
    let p = Platform::presence().await;
    for (service, path) in [
        (&p.music, "/api/v1/music/no-such-song"),
        (&p.music, "/api/v1/music/read_orig_artist/no-such-song"),
        (&p.user, "/api/v1/user/no-such-user"),
        (&p.playlist, "/api/v1/playlist/no-such-list"),
    ] {
        assert_error(
            p.call(Method::GET, service, path, None).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        if !path.contains("orig") {
            assert_error(
                p.call(Method::DELETE, service, path, None).await,
                StatusCode::NOT_FOUND,
            )
            .await;
        }
    }
    assert_error(
        p.call(
            Method::PUT,
            &p.music,
            "/api/v1/music/no-such-song",
            Some(json!({"Artist": "x"})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_error(
        p.call(
            Method::PUT,
            &p.user,
            "/api/v1/user/no-such-user",
            Some(json!({"fname": "x"})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let song = p.song("A", "B").await;
    assert_error(
        p.call(
            Method::POST,
            &p.playlist,
            "/api/v1/playlist/no-such-list/add",
            Some(json!({"music_id": song})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn unknown_songs_are_422_and_duplicates_or_absent_songs_409() {
    let p = Platform::presence().await;
    let song = p.song("A", "B").await;
    let unknown = p
        .call(
            Method::POST,
            &p.playlist,
            "/api/v1/playlist/",
            Some(json!({"Name": "x", "Playlist": [song, "not-a-song"]})),
        )
        .await;
    assert!(
        assert_error(unknown, StatusCode::UNPROCESSABLE_ENTITY)
            .await
            .contains("not-a-song")
    );

    let created = p
        .call(
            Method::POST,
            &p.playlist,
            "/api/v1/playlist/",
            Some(json!({"Name": "x", "Playlist": [song]})),
        )
        .await;
    let id = created.json::<serde_json::Value>().await.expect("json")["playlist_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let add_path = format!("/api/v1/playlist/{id}/add");
    let add = |music_id: &str| {
        p.call(
            Method::POST,
            &p.playlist,
            &add_path,
            Some(json!({"music_id": music_id})),
        )
    };
    assert_error(add("not-a-song").await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_error(add(&song).await, StatusCode::CONFLICT).await;
    let remove = p
        .call(
            Method::POST,
            &p.playlist,
            &format!("/api/v1/playlist/{id}/delete"),
            Some(json!({"music_id": "never-there"})),
        )
        .await;
    assert_error(remove, StatusCode::CONFLICT).await;
    // Nothing changed.
    assert_eq!(
        p.item(&p.playlist, &format!("/api/v1/playlist/{id}")).await["Playlist"],
        json!([song])
    );
}

#[tokio::test]
async fn bad_bodies_are_400() {
    let p = Platform::presence().await;
    let song = p.song("A", "B").await;
    let raw =
        |service: &crate::platform::Process, method: Method, path: &str, body: &'static str| {
            let request = p
                .http
                .request(method, format!("{}{path}", service.base))
                .header("Authorization", "Bearer A")
                .body(body);
            async move { request.send().await.expect("request") }
        };
    let cases: Vec<(&crate::platform::Process, Method, String, &'static str)> = vec![
        (&p.music, Method::POST, "/api/v1/music/".into(), "{not json"),
        (
            &p.music,
            Method::POST,
            "/api/v1/music/".into(),
            r#"{"Artist": "only"}"#,
        ),
        (
            &p.music,
            Method::POST,
            "/api/v1/music/".into(),
            r#"{"Artist": "", "SongTitle": "x"}"#,
        ),
        (
            &p.music,
            Method::POST,
            "/api/v1/music/".into(),
            r#"{"Artist": 5, "SongTitle": "x"}"#,
        ),
        (
            &p.music,
            Method::POST,
            "/api/v1/music/".into(),
            r#"{"Artist": "a", "SongTitle": "x", "Extra": 1}"#,
        ),
        (&p.music, Method::PUT, format!("/api/v1/music/{song}"), "{}"),
        // A song's names can be changed, never cleared (the document says so too).
        (
            &p.music,
            Method::PUT,
            format!("/api/v1/music/{song}"),
            r#"{"SongTitle": null}"#,
        ),
        (
            &p.music,
            Method::PUT,
            format!("/api/v1/music/{song}"),
            r#"{"Artist": null, "OrigArtist": "x"}"#,
        ),
        (
            &p.music,
            Method::PUT,
            format!("/api/v1/music/write_orig_artist/{song}"),
            r#"{"orig": "x"}"#,
        ),
        (
            &p.user,
            Method::POST,
            "/api/v1/user/".into(),
            r#"{"fname": "a", "lname": "b"}"#,
        ),
        (
            &p.user,
            Method::POST,
            "/api/v1/user/".into(),
            r#"{"fname": "a", "lname": "b", "email": "not an email"}"#,
        ),
        (
            &p.user,
            Method::PUT,
            "/api/v1/user/login".into(),
            r#"{"user": "x"}"#,
        ),
        (
            &p.user,
            Method::PUT,
            "/api/v1/user/logoff".into(),
            r#"{"jwt": "garbage"}"#,
        ),
        (
            &p.playlist,
            Method::POST,
            "/api/v1/playlist/".into(),
            r#"{"Name": "x"}"#,
        ),
        (
            &p.playlist,
            Method::POST,
            "/api/v1/playlist/".into(),
            r#"{"Name": "x", "Playlist": 7}"#,
        ),
        (
            &p.playlist,
            Method::POST,
            "/api/v1/playlist/".into(),
            r#"{"Name": "x", "Playlist": "a,,b"}"#,
        ),
        (
            &p.playlist,
            Method::POST,
            "/api/v1/playlist/".into(),
            r#"[1, 2]"#,
        ),
        (&p.music, Method::GET, "/api/v1/music/?limit=0".into(), ""),
        (
            &p.music,
            Method::GET,
            "/api/v1/music/?cursor=%%%".into(),
            "",
        ),
    ];
    for (service, method, path, body) in cases {
        let response = raw(service, method.clone(), &path, body).await;
        let message = assert_error(response, StatusCode::BAD_REQUEST).await;
        assert!(!message.is_empty(), "{method} {path} {body}");
    }
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let p = Platform::presence().await;
    let big = json!({"Artist": "x".repeat(100 * 1024), "SongTitle": "y"});
    for (service, path) in [
        (&p.music, "/api/v1/music/"),
        (&p.user, "/api/v1/user/"),
        (&p.playlist, "/api/v1/playlist/"),
    ] {
        assert_error(
            p.call(Method::POST, service, path, Some(big.clone())).await,
            StatusCode::PAYLOAD_TOO_LARGE,
        )
        .await;
    }
}

#[tokio::test]
async fn every_response_names_the_music_version() {
    let p = Platform::presence().await;
    for path in [
        "/health",
        "/api/v1/music/",
        "/api/v1/music/nope",
        "/no/such/route",
    ] {
        let response = p.call(Method::GET, &p.music, path, None).await;
        assert_eq!(response.headers()["x-service-version"], "v1", "{path}");
    }
}
