//! Issue 15's findings, each as an attacker or a misconfigured deployment meets it:
//! ownership in jwt mode, login by uid alone, password hashing under a flood, a wrong
//! gateway token, a short JWT secret, and an empty change.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::platform::{Options, PASSWORD, Platform, Process, SECRET, assert_error, client};

/// A new user with a password, logged in: (id, `Authorization` value).
async fn member(p: &Platform, name: &str) -> (String, String) {
    let created = p
        .call_as(
            None,
            Method::POST,
            &p.user,
            "/api/v1/user/",
            Some(json!({"fname": name, "lname": "X", "email": format!("{name}@example.org"), "password": PASSWORD})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK, "create {name}");
    let id = created.json::<Value>().await.expect("json")["user_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let token = p.login(&id, Some(PASSWORD)).await;
    (id, format!("Bearer {token}"))
}

async fn id_of(response: reqwest::Response, field: &str) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.expect("json")[field]
        .as_str()
        .expect("id")
        .to_owned()
}

#[tokio::test]
async fn in_jwt_mode_users_change_only_themselves_and_what_they_created() {
    let p = Platform::start(Options::default()).await;
    let (alice, as_alice) = member(&p, "alice").await;
    let (_, as_mallory) = member(&p, "mallory").await;
    let alice_path = format!("/api/v1/user/{alice}");

    // Another user: no change, no deletion, no email.
    for (method, body) in [
        (Method::PUT, Some(json!({"fname": "Owned"}))),
        (Method::DELETE, None),
    ] {
        let response = p
            .call_as(Some(&as_mallory), method, &p.user, &alice_path, body)
            .await;
        assert_error(response, StatusCode::FORBIDDEN).await;
    }
    let seen: Value = p
        .call_as(Some(&as_mallory), Method::GET, &p.user, &alice_path, None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(seen["Items"][0]["fname"], "alice");
    assert!(seen["Items"][0].get("email").is_none(), "{seen}");
    let list = p
        .call_as(
            Some(&as_mallory),
            Method::GET,
            &p.user,
            "/api/v1/user/",
            None,
        )
        .await
        .text()
        .await
        .expect("body");
    assert!(!list.contains("alice@example.org"), "{list}");
    assert!(
        list.contains("mallory@example.org"),
        "one's own email shows: {list}"
    );

    // Alice's song and playlist.
    let song = id_of(
        p.call_as(
            Some(&as_alice),
            Method::POST,
            &p.music,
            "/api/v1/music/",
            Some(json!({"Artist": "Alice", "SongTitle": "Mine"})),
        )
        .await,
        "music_id",
    )
    .await;
    let playlist = id_of(
        p.call_as(
            Some(&as_alice),
            Method::POST,
            &p.playlist,
            "/api/v1/playlist/",
            Some(json!({"Name": "Mine", "Playlist": [song]})),
        )
        .await,
        "playlist_id",
    )
    .await;
    let mallorys_song = id_of(
        p.call_as(
            Some(&as_mallory),
            Method::POST,
            &p.music,
            "/api/v1/music/",
            Some(json!({"Artist": "Mallory", "SongTitle": "Hers"})),
        )
        .await,
        "music_id",
    )
    .await;
    let attempts = [
        (
            Method::PUT,
            &p.music,
            format!("/api/v1/music/{song}"),
            Some(json!({"SongTitle": "Stolen"})),
        ),
        (
            Method::PUT,
            &p.music,
            format!("/api/v1/music/write_orig_artist/{song}"),
            Some(json!({"orig_artist": "Mallory"})),
        ),
        (
            Method::DELETE,
            &p.music,
            format!("/api/v1/music/{song}"),
            None,
        ),
        (
            Method::POST,
            &p.playlist,
            format!("/api/v1/playlist/{playlist}/add"),
            Some(json!({"music_id": mallorys_song})),
        ),
        (
            Method::POST,
            &p.playlist,
            format!("/api/v1/playlist/{playlist}/delete"),
            Some(json!({"music_id": song})),
        ),
        (
            Method::DELETE,
            &p.playlist,
            format!("/api/v1/playlist/{playlist}"),
            None,
        ),
    ];
    for (method, service, path, body) in &attempts {
        let response = p
            .call_as(
                Some(&as_mallory),
                method.clone(),
                service,
                path,
                body.clone(),
            )
            .await;
        let message = assert_error(response, StatusCode::FORBIDDEN).await;
        assert!(
            message.contains("only the user who created"),
            "{method} {path}: {message}"
        );
    }
    // Nothing changed, and the owner can do all of it.
    let read: Value = p
        .call_as(
            Some(&as_alice),
            Method::GET,
            &p.playlist,
            &format!("/api/v1/playlist/{playlist}"),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(read["Items"][0]["Playlist"], json!([song]));
    for (method, service, path, body) in attempts {
        let response = p
            .call_as(Some(&as_alice), method.clone(), service, &path, body)
            .await;
        // The song is gone by the time the playlist drops it: 409 is the owner's answer.
        assert!(
            matches!(response.status(), StatusCode::OK | StatusCode::CONFLICT),
            "{method} {path}: {}",
            response.status()
        );
    }
    let own = p
        .call_as(
            Some(&as_alice),
            Method::PUT,
            &p.user,
            &alice_path,
            Some(json!({"fname": "Alice"})),
        )
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    let gone = p
        .call_as(Some(&as_alice), Method::DELETE, &p.user, &alice_path, None)
        .await;
    assert_eq!(gone.status(), StatusCode::OK);
}

#[tokio::test]
async fn loaded_data_without_an_owner_is_read_only_in_jwt_mode() {
    let p = Platform::start(Options::default()).await;
    let (_, as_member) = member(&p, "member").await;
    // A song as the loader writes the course data: straight to the gateway, no owner.
    let written: Value = client()
        .post(format!("{}/api/v1/datastore/write", p.gateway.base))
        .json(&json!({"objtype": "music", "Artist": "Course", "SongTitle": "Loaded"}))
        .send()
        .await
        .expect("write")
        .json()
        .await
        .expect("json");
    let song = written["music_id"].as_str().expect("id");
    let response = p
        .call_as(
            Some(&as_member),
            Method::DELETE,
            &p.music,
            &format!("/api/v1/music/{song}"),
            None,
        )
        .await;
    let message = assert_error(response, StatusCode::FORBIDDEN).await;
    assert!(message.contains("read-only"), "{message}");
    let read = p
        .call_as(
            Some(&as_member),
            Method::GET,
            &p.music,
            &format!("/api/v1/music/{song}"),
            None,
        )
        .await;
    assert_eq!(read.status(), StatusCode::OK);
}

/// A user as the course CSVs load them: no password.
async fn course_user(p: &Platform) -> String {
    let written: Value = client()
        .post(format!("{}/api/v1/datastore/write", p.gateway.base))
        .json(&json!({"objtype": "user", "fname": "Course", "lname": "User", "email": "course@example.org"}))
        .send()
        .await
        .expect("write")
        .json()
        .await
        .expect("json");
    written["user_id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn in_jwt_mode_sign_up_needs_a_password_and_uid_login_needs_the_switch() {
    let p = Platform::start(Options::default()).await;
    let no_password = p
        .call_as(
            None,
            Method::POST,
            &p.user,
            "/api/v1/user/",
            Some(json!({"fname": "No", "lname": "Password", "email": "none@example.org"})),
        )
        .await;
    let message = assert_error(no_password, StatusCode::BAD_REQUEST).await;
    assert!(message.contains("password"), "{message}");

    let uid = course_user(&p).await;
    let by_uid = p
        .call_as(
            None,
            Method::PUT,
            &p.user,
            "/api/v1/user/login",
            Some(json!({"uid": uid})),
        )
        .await;
    let message = assert_error(by_uid, StatusCode::UNAUTHORIZED).await;
    assert!(message.contains("ALLOW_UID_LOGIN"), "{message}");

    // With the switch (as `scaler up` and `scaler demo` set it), course users log in.
    let allowed = Platform::start(Options {
        user_env: vec![("ALLOW_UID_LOGIN".into(), "true".into())],
        ..Options::default()
    })
    .await;
    let uid = course_user(&allowed).await;
    let token = allowed.login(&uid, None).await;
    assert_eq!(token.split('.').count(), 3, "{token}");

    // Presence mode keeps the course's behaviour: no password needed anywhere.
    let presence = Platform::presence().await;
    let created = presence
        .call_as(
            None,
            Method::POST,
            &presence.user,
            "/api/v1/user/",
            Some(json!({"fname": "Course", "lname": "Style", "email": "style@example.org"})),
        )
        .await;
    let uid = id_of(created, "user_id").await;
    presence.login(&uid, None).await;
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_flood_of_wrong_passwords_leaves_memory_bounded_and_is_throttled() {
    let p = Platform::start(Options::default()).await;
    let (id, _) = member(&p, "target").await;
    let idle = resident_kib(p.user.pid());

    let mut tasks = Vec::new();
    for _ in 0..64 {
        let request = p
            .http
            .put(format!("{}/api/v1/user/login", p.user.base))
            .json(&json!({"uid": id, "password": "wrong"}));
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.expect("login");
            let retry_after = response.headers().contains_key("retry-after");
            (response.status(), retry_after)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for task in tasks {
        let (status, retry_after) = task.await.expect("task");
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry_after, "{status} without Retry-After");
            }
            other => panic!("unexpected {other}"),
        }
        *counts.entry(status.as_u16()).or_insert(0) += 1;
    }
    let after = resident_kib(p.user.pid());
    println!("64 wrong logins: {counts:?}; resident {idle} KiB idle, {after} KiB after");
    assert!(
        after < idle + 64 * 1024,
        "resident memory grew from {idle} KiB to {after} KiB"
    );
    // Enough failures were counted: the right password is refused for a while too.
    let throttled = p
        .call_as(
            None,
            Method::PUT,
            &p.user,
            "/api/v1/user/login",
            Some(json!({"uid": id, "password": PASSWORD})),
        )
        .await;
    assert!(throttled.headers().contains_key("retry-after"));
    assert_error(throttled, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn a_wrong_gateway_token_keeps_a_service_unready_and_says_it_is_misconfigured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = Process::start(
        "database-gateway",
        &[
            (
                "DATABASE_URL".into(),
                format!("sqlite://{}", dir.path().join("data.db").display()),
            ),
            ("DATASTORE_TOKEN".into(), "the-right-token".into()),
        ],
        dir.path(),
    );
    gateway.wait_ready().await;
    let music = Process::start(
        "music",
        &[
            ("DATASTORE_URL".into(), gateway.base.clone()),
            ("DATASTORE_TOKEN".into(), "a-wrong-token".into()),
            ("AUTH_MODE".into(), "presence".into()),
        ],
        dir.path(),
    );
    // Up (its health answers), but never ready.
    music.wait_for("/health").await;
    let http = client();
    let ready = http
        .get(format!("{}/readiness", music.base))
        .send()
        .await
        .expect("readiness");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let why = ready.text().await.expect("body");
    assert!(why.contains("DATASTORE_TOKEN"), "{why}");
    // A client's request: the service's fault (5xx), not the client's token (401).
    let response = http
        .get(format!("{}/api/v1/music/", music.base))
        .header("Authorization", "Bearer A")
        .send()
        .await
        .expect("list");
    let message = assert_error(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(message.contains("misconfigured"), "{message}");
}

#[tokio::test]
async fn a_short_jwt_secret_or_an_empty_token_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (env, expected) in [
        (vec![("JWT_SECRET", "x")], "at least 32"),
        (vec![("JWT_SECRET", &SECRET[..31])], "at least 32"),
        (
            vec![("JWT_SECRET", SECRET), ("DATASTORE_TOKEN", "")],
            "DATASTORE_TOKEN is empty",
        ),
    ] {
        let envs: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut process = Process::start("user", &envs, dir.path());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = process.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "{env:?}: still running");
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(status.code(), Some(2), "{env:?}");
        let log = process.log();
        assert!(log.contains(expected), "{env:?}: {log}");
    }
}

#[tokio::test]
async fn a_missing_orig_artist_is_a_400_not_a_null() {
    let p = Platform::presence().await;
    let response = p
        .call(
            Method::POST,
            &p.music,
            "/api/v1/music/",
            Some(json!({"Artist": "A", "SongTitle": "B", "OrigArtist": "C"})),
        )
        .await;
    let id = id_of(response, "music_id").await;
    for body in [json!({}), json!({"Artist": null})] {
        for path in [
            format!("/api/v1/music/write_orig_artist/{id}"),
            format!("/api/v1/music/{id}"),
        ] {
            let response = p
                .call(Method::PUT, &p.music, &path, Some(body.clone()))
                .await;
            assert_error(response, StatusCode::BAD_REQUEST).await;
        }
    }
    let song = p.item(&p.music, &format!("/api/v1/music/{id}")).await;
    assert_eq!(song["OrigArtist"], "C");
}
