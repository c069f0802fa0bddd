//! The course's own flows (its test suite's create / read / add / delete), in presence
//! mode with `Authorization: Bearer A` as the course's CI, and in jwt mode after login.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::platform::{PASSWORD, Platform};

async fn song_flow(p: &Platform) {
    let id = p
        .song("Taylor Swift", "The Last Great American Dynasty")
        .await;
    let song = p.item(&p.music, &format!("/api/v1/music/{id}")).await;
    assert_eq!(song["Artist"], "Taylor Swift");
    assert_eq!(song["SongTitle"], "The Last Great American Dynasty");
    assert_eq!(song["music_id"], id.as_str());
    let deleted = p
        .call(
            Method::DELETE,
            &p.music,
            &format!("/api/v1/music/{id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        deleted.json::<Value>().await.expect("json"),
        json!({"music_id": id})
    );
    let gone = p
        .call(Method::GET, &p.music, &format!("/api/v1/music/{id}"), None)
        .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

async fn playlist_flow(p: &Platform) {
    let first = p.song("Backxwash", "Bad Juju").await;
    let second = p.song("Sini Sabotage", "Mun Planeeta").await;
    let third = p.song("William Prince", "Reliever").await;
    // The course sends the list as one comma-separated string.
    let created = p
        .call(
            Method::POST,
            &p.playlist,
            "/api/v1/playlist/",
            Some(json!({"Name": "Favourite", "Playlist": format!("{first},{second}")})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let id = created.json::<Value>().await.expect("json")["playlist_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/api/v1/playlist/{id}");

    let playlist = p.item(&p.playlist, &path).await;
    assert_eq!(playlist["Name"], "Favourite");
    assert_eq!(playlist["Playlist"], json!([first, second]));
    assert_eq!(playlist["playlist_id"], id.as_str());

    let added = p
        .call(
            Method::POST,
            &p.playlist,
            &format!("{path}/add"),
            Some(json!({"music_id": third})),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(
        added.json::<Value>().await.expect("json"),
        json!({"playlist_id": id})
    );
    assert_eq!(
        p.item(&p.playlist, &path).await["Playlist"],
        json!([first, second, third])
    );

    let removed = p
        .call(
            Method::POST,
            &p.playlist,
            &format!("{path}/delete"),
            Some(json!({"music_id": first})),
        )
        .await;
    assert_eq!(removed.status(), StatusCode::OK);
    assert_eq!(
        p.item(&p.playlist, &path).await["Playlist"],
        json!([second, third])
    );

    let deleted = p.call(Method::DELETE, &p.playlist, &path, None).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        p.call(Method::GET, &p.playlist, &path, None).await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn read_as(p: &Platform, auth: Option<&str>, path: &str) -> Value {
    let response = p.call_as(auth, Method::GET, &p.user, path, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.expect("json")["Items"][0].clone()
}

async fn user_flow(p: &Platform) {
    let created = p
        .call(
            Method::POST,
            &p.user,
            "/api/v1/user/",
            Some(json!({"fname": "Louis", "lname": "Armstrong", "email": "satchmo@nola.gov", "password": PASSWORD})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let id = created.json::<Value>().await.expect("json")["user_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // In jwt mode a user changes only themselves: act as the new user.
    let me = if p.auth.as_deref() == Some("Bearer A") {
        p.auth.clone()
    } else {
        Some(format!("Bearer {}", p.login(&id, Some(PASSWORD)).await))
    };
    let path = format!("/api/v1/user/{id}");
    assert_eq!(
        read_as(p, me.as_deref(), &path).await,
        json!({"user_id": id, "fname": "Louis", "lname": "Armstrong", "email": "satchmo@nola.gov"})
    );
    let updated = p
        .call_as(
            me.as_deref(),
            Method::PUT,
            &p.user,
            &path,
            Some(json!({"lname": "Satchmo"})),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::OK);
    // The names are not swapped, as they were in the course's service.
    let user = read_as(p, me.as_deref(), &path).await;
    assert_eq!(
        (user["fname"].as_str(), user["lname"].as_str()),
        (Some("Louis"), Some("Satchmo"))
    );
    let list: Value = p
        .call(Method::GET, &p.user, "/api/v1/user/", None)
        .await
        .json()
        .await
        .expect("json");
    assert!(list["Count"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(
        p.call_as(me.as_deref(), Method::DELETE, &p.user, &path, None)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_course_flows_pass_in_presence_mode_with_a_fixed_token() {
    let p = Platform::presence().await;
    song_flow(&p).await;
    playlist_flow(&p).await;
    user_flow(&p).await;
}

#[tokio::test]
async fn the_course_flows_pass_in_jwt_mode_after_a_real_login() {
    let p = Platform::logged_in().await;
    song_flow(&p).await;
    playlist_flow(&p).await;
    user_flow(&p).await;
}

#[tokio::test]
async fn list_all_pages_through_every_song() {
    let p = Platform::presence().await;
    for i in 0..7 {
        p.song("Artist", &format!("Song {i}")).await;
    }
    let first: Value = p
        .call(Method::GET, &p.music, "/api/v1/music/?limit=5", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["Count"], 5);
    let next = first["next"].as_str().expect("a next page");
    let second: Value = p
        .call(
            Method::GET,
            &p.music,
            &format!("/api/v1/music/?limit=5&cursor={next}"),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["Count"], 2);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn the_original_artist_can_be_written_read_and_cleared() {
    let p = Platform::presence().await;
    let id = p.song("Cat Power", "The Greatest").await;
    async fn read(p: &Platform, id: &str) -> Value {
        let path = format!("/api/v1/music/read_orig_artist/{id}");
        p.call(Method::GET, &p.music, &path, None)
            .await
            .json::<Value>()
            .await
            .expect("json")
    }
    assert_eq!(read(&p, &id).await, json!({"orig_artist": null}));
    let written = p
        .call(
            Method::PUT,
            &p.music,
            &format!("/api/v1/music/write_orig_artist/{id}"),
            Some(json!({"orig_artist": "Bob Dylan"})),
        )
        .await;
    assert_eq!(written.status(), StatusCode::OK);
    assert_eq!(read(&p, &id).await, json!({"orig_artist": "Bob Dylan"}));
    p.call(
        Method::PUT,
        &p.music,
        &format!("/api/v1/music/write_orig_artist/{id}"),
        Some(json!({"orig_artist": null})),
    )
    .await;
    assert_eq!(read(&p, &id).await, json!({"orig_artist": null}));
}
