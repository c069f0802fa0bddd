//! Generated bad input against every route of the three services: never a 5xx, always
//! the JSON envelope on a 4xx, and the services stay up.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::Value;

use crate::platform::Platform;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::String("\u{0}".into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "\\PC{0,6}",
                    Just("Artist".to_owned()),
                    Just("SongTitle".to_owned()),
                    Just("Name".to_owned()),
                    Just("Playlist".to_owned()),
                    Just("music_id".to_owned()),
                    Just("fname".to_owned()),
                    Just("email".to_owned()),
                    Just("uid".to_owned()),
                    Just("jwt".to_owned()),
                    Just("orig_artist".to_owned())
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![4 => json_value().prop_map(|v| v.to_string()), 1 => "\\PC{0,30}"]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("known".to_owned()),
        "[a-zA-Z0-9_%.-]{1,12}",
        Just("__reserved".to_owned()),
        Just("a".repeat(300))
    ]
}

#[test]
fn no_generated_request_gets_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let p = runtime.block_on(Platform::presence());
    let song = runtime.block_on(p.song("Known", "Song"));
    let routes: Vec<(Method, &crate::platform::Process, &str)> = vec![
        (Method::POST, &p.music, "/api/v1/music/"),
        (Method::GET, &p.music, "/api/v1/music/"),
        (Method::GET, &p.music, "/api/v1/music/{}"),
        (Method::PUT, &p.music, "/api/v1/music/{}"),
        (Method::DELETE, &p.music, "/api/v1/music/{}"),
        (Method::GET, &p.music, "/api/v1/music/read_orig_artist/{}"),
        (Method::PUT, &p.music, "/api/v1/music/write_orig_artist/{}"),
        (Method::POST, &p.user, "/api/v1/user/"),
        (Method::GET, &p.user, "/api/v1/user/"),
        (Method::GET, &p.user, "/api/v1/user/{}"),
        (Method::PUT, &p.user, "/api/v1/user/{}"),
        (Method::DELETE, &p.user, "/api/v1/user/{}"),
        (Method::PUT, &p.user, "/api/v1/user/login"),
        (Method::PUT, &p.user, "/api/v1/user/logoff"),
        (Method::POST, &p.playlist, "/api/v1/playlist/"),
        (Method::GET, &p.playlist, "/api/v1/playlist/"),
        (Method::GET, &p.playlist, "/api/v1/playlist/{}"),
        (Method::POST, &p.playlist, "/api/v1/playlist/{}/add"),
        (Method::POST, &p.playlist, "/api/v1/playlist/{}/delete"),
        (Method::DELETE, &p.playlist, "/api/v1/playlist/{}"),
    ];
    let config = ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(route in 0..routes.len(), id in segment(), body in body(), query in "[a-z=&%0-9]{0,20}")| {
        let (method, service, template) = &routes[route];
        let id = if id == "known" { song.clone() } else { id };
        let path = template.replace("{}", &id);
        let status = runtime.block_on(async {
            let response = p
                .http
                .request(method.clone(), format!("{}{path}?{query}", service.base))
                .header("Authorization", "Bearer A")
                .body(body.clone())
                .send()
                .await
                .expect("the service answers");
            let status = response.status();
            let text = response.text().await.expect("body");
            if status.is_client_error() {
                let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} without the envelope: {text}"));
                assert!(json["error"].is_string(), "{text}");
            }
            status
        });
        prop_assert!(!status.is_server_error(), "{method} {path}?{query} with {body:?} -> {status}");
    });
    for service in [&p.user, &p.music, &p.playlist, &p.gateway] {
        let health = runtime
            .block_on(async { p.http.get(format!("{}/health", service.base)).send().await })
            .expect("health");
        assert!(health.status().is_success());
    }
}
