//! Concurrent edits of one playlist never lose an update.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::platform::Platform;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_adds_of_distinct_songs_all_land() {
    let p = Platform::presence().await;
    let mut songs = Vec::new();
    for i in 0..50 {
        songs.push(p.song("Artist", &format!("Song {i}")).await);
    }
    let created = p
        .call(
            Method::POST,
            &p.playlist,
            "/api/v1/playlist/",
            Some(json!({"Name": "crowd", "Playlist": []})),
        )
        .await;
    let id = created.json::<Value>().await.expect("json")["playlist_id"]
        .as_str()
        .expect("id")
        .to_owned();

    let mut tasks = Vec::new();
    for song in &songs {
        let request = p
            .http
            .post(format!("{}/api/v1/playlist/{id}/add", p.playlist.base))
            .header("Authorization", "Bearer A")
            .json(&json!({"music_id": song}));
        tasks.push(tokio::spawn(async move {
            request.send().await.expect("add").status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    let playlist = p.item(&p.playlist, &format!("/api/v1/playlist/{id}")).await;
    let held: Vec<&str> = playlist["Playlist"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(held.len(), 50, "every add landed once");
    for song in &songs {
        assert!(held.contains(&song.as_str()), "{song} was lost");
    }
}
