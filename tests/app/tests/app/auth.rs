//! Tokens: what is refused (401), revocation across services within 5 s, passwords,
//! unique emails.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::platform::{PASSWORD, Platform, SECRET, assert_error};

/// A token signed here, independently of the services' code.
fn forge(claims: &Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

#[tokio::test]
async fn login_issues_a_token_with_the_documented_claims() {
    let p = Platform::start(Default::default()).await;
    let token = p.login_new_user().await;
    let claims = payload(&token);
    for claim in ["user_id", "iat", "exp", "jti"] {
        assert!(!claims[claim].is_null(), "{claim} in {claims}");
    }
    assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
    // The service's own token passes where a forged one (same claims, other key) does not.
    let bearer = format!("Bearer {token}");
    let ok = p
        .call_as(Some(&bearer), Method::GET, &p.music, "/api/v1/music/", None)
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_tokens_are_401_on_every_service() {
    let p = Platform::start(Default::default()).await;
    let token = p.login_new_user().await;
    let mut claims = payload(&token);
    let user_id = claims["user_id"].as_str().expect("user").to_owned();

    let other_key = forge(&claims, "not-the-secret");
    claims["exp"] = json!(now() - 10);
    let expired = forge(&claims, SECRET);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut edited_claims = payload(&token);
    edited_claims["user_id"] = json!("someone-else");
    parts[1] = URL_SAFE_NO_PAD.encode(edited_claims.to_string());
    let edited = parts.join(".");
    let valid_for_ghost = forge(
        &json!({"user_id": "ghost", "iat": now(), "exp": now() + 60, "jti": "x"}),
        SECRET,
    );

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing auth"),
        (
            "another key",
            Some(format!("Bearer {other_key}")),
            "signature",
        ),
        ("expired", Some(format!("Bearer {expired}")), "expired"),
        (
            "edited payload",
            Some(format!("Bearer {edited}")),
            "signature",
        ),
        ("not a JWT", Some("Bearer A".to_owned()), "malformed"),
        (
            "no such user",
            Some(format!("Bearer {valid_for_ghost}")),
            "no longer exists",
        ),
    ];
    for (service, path) in [
        (&p.music, "/api/v1/music/"),
        (&p.playlist, "/api/v1/playlist/"),
        (&p.user, &*format!("/api/v1/user/{user_id}")),
    ] {
        for (what, header, expect) in &cases {
            let response = p
                .call_as(header.as_deref(), Method::GET, service, path, None)
                .await;
            let message = assert_error(response, StatusCode::UNAUTHORIZED).await;
            assert!(message.contains(expect), "{what} on {path}: {message}");
        }
    }
}

#[tokio::test]
async fn a_logged_off_token_is_refused_by_every_service_within_5_seconds() {
    let p = Platform::start(Default::default()).await;
    let token = p.login_new_user().await;
    let bearer = format!("Bearer {token}");
    // Warm every service's view of this user first, so caches hold the old state.
    for (service, path) in [
        (&p.music, "/api/v1/music/"),
        (&p.playlist, "/api/v1/playlist/"),
    ] {
        assert_eq!(
            p.call_as(Some(&bearer), Method::GET, service, path, None)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let other = p.login_new_user().await;
    let logoff = p
        .call_as(
            Some(&format!("Bearer {other}")),
            Method::PUT,
            &p.user,
            "/api/v1/user/logoff",
            Some(json!({"jwt": token})),
        )
        .await;
    assert_eq!(logoff.status(), StatusCode::OK);
    assert_eq!(logoff.json::<Value>().await.expect("json"), json!({}));
    let started = Instant::now();

    for (service, path) in [
        (&p.music, "/api/v1/music/"),
        (&p.playlist, "/api/v1/playlist/"),
        (&p.user, "/api/v1/user/"),
    ] {
        loop {
            let response = p
                .call_as(Some(&bearer), Method::GET, service, path, None)
                .await;
            if response.status() == StatusCode::UNAUTHORIZED {
                assert!(
                    assert_error(response, StatusCode::UNAUTHORIZED)
                        .await
                        .contains("revoked")
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{path} still accepts a revoked token after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "revoked everywhere {:?} after the logoff",
        started.elapsed()
    );
    // The other token of the same platform still works.
    let still = p
        .call_as(
            Some(&format!("Bearer {other}")),
            Method::GET,
            &p.music,
            "/api/v1/music/",
            None,
        )
        .await;
    assert_eq!(still.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_is_required_at_login_and_never_returned() {
    let p = Platform::logged_in().await;
    let created = p
        .call_as(None, Method::POST, &p.user, "/api/v1/user/", Some(json!({"fname": "Leon", "lname": "Beiderbecke", "email": "bix@aa.org", "password": "in a mist"})))
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let id = created.json::<Value>().await.expect("json")["user_id"]
        .as_str()
        .expect("id")
        .to_owned();

    for body in [
        json!({"uid": id}),
        json!({"uid": id, "password": "wrong"}),
        json!({"uid": "no-such-user"}),
    ] {
        let response = p
            .call_as(
                None,
                Method::PUT,
                &p.user,
                "/api/v1/user/login",
                Some(body.clone()),
            )
            .await;
        assert_error(response, StatusCode::UNAUTHORIZED).await;
    }
    let token = p.login(&id, Some("in a mist")).await;
    assert_eq!(payload(&token)["user_id"], id.as_str());

    let own: Value = p
        .call_as(
            Some(&format!("Bearer {token}")),
            Method::GET,
            &p.user,
            &format!("/api/v1/user/{id}"),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        own["Items"][0],
        json!({"user_id": id, "fname": "Leon", "lname": "Beiderbecke", "email": "bix@aa.org"})
    );
    let list = p
        .call(Method::GET, &p.user, "/api/v1/user/", None)
        .await
        .text()
        .await
        .expect("body");
    assert!(
        !list.contains("argon2") && !list.contains("in a mist") && !list.contains("password"),
        "{list}"
    );
}

#[tokio::test]
async fn an_email_belongs_to_one_user() {
    let p = Platform::logged_in().await;
    let body = json!({"fname": "George", "lname": "Clinton", "email": "starchild@pfunk.org", "password": PASSWORD});
    assert_eq!(
        p.call_as(
            None,
            Method::POST,
            &p.user,
            "/api/v1/user/",
            Some(body.clone())
        )
        .await
        .status(),
        StatusCode::OK
    );
    assert_error(
        p.call_as(None, Method::POST, &p.user, "/api/v1/user/", Some(body))
            .await,
        StatusCode::CONFLICT,
    )
    .await;

    let other = p
        .call_as(
            None,
            Method::POST,
            &p.user,
            "/api/v1/user/",
            Some(json!({"fname": "Tina", "lname": "W", "email": "tina@ttc.com", "password": PASSWORD})),
        )
        .await
        .json::<Value>()
        .await
        .expect("json")["user_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let as_other = format!("Bearer {}", p.login(&other, Some(PASSWORD)).await);
    let taken = p
        .call_as(
            Some(&as_other),
            Method::PUT,
            &p.user,
            &format!("/api/v1/user/{other}"),
            Some(json!({"email": "starchild@pfunk.org"})),
        )
        .await;
    assert_error(taken, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn concurrent_sign_ups_with_one_email_leave_one_user() {
    let p = Platform::logged_in().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let request = p
            .http
            .post(format!("{}/api/v1/user/", p.user.base))
            .json(&json!({"fname": format!("Twin{i}"), "lname": "X", "email": "same@example.org", "password": PASSWORD}));
        tasks.push(tokio::spawn(async move {
            request.send().await.expect("request").status()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            StatusCode::OK => ok += 1,
            // 503: more sign-ups than the password workers queue at once.
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
    }
    let holders: Value = p
        .http
        .get(format!(
            "{}/api/v1/datastore/find?objtype=user&field=email&value=same%40example.org",
            p.gateway.base
        ))
        .send()
        .await
        .expect("find")
        .json()
        .await
        .expect("json");
    assert_eq!(holders["Count"], 1, "exactly one user keeps the email");
    assert_eq!(ok, 1);
}
