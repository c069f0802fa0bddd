//! Generated bodies and query strings against every route: nothing is ever a 5xx and
//! the gateway stays up.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Map, Value};

use crate::helpers::TestApp;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("music"),
            Just("playlist"),
            Just("Name"),
            Just("\u{0}")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies that look like datastore requests often enough to get past the first checks.
fn body() -> impl Strategy<Value = String> {
    let object = (
        prop_oneof![
            Just(None),
            Just(Some("user")),
            Just(Some("music")),
            Just(Some("playlist")),
            Just(Some("nope"))
        ],
        prop::collection::btree_map(
            prop_oneof![
                "\\PC{0,8}",
                Just("user_id".to_owned()),
                Just("uuid".to_owned()),
                Just("objtype".to_owned())
            ],
            json_value(),
            0..6,
        ),
    )
        .prop_map(|(objtype, fields)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            if let Some(t) = objtype {
                map.insert("objtype".to_owned(), Value::String(t.to_owned()));
            }
            Value::Object(map).to_string()
        });
    prop_oneof![
        4 => object,
        2 => json_value().prop_map(|v| v.to_string()),
        1 => "\\PC{0,40}",
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("objtype".to_owned()),
        Just("objkey".to_owned()),
        Just("limit".to_owned()),
        Just("cursor".to_owned()),
        Just("field".to_owned()),
        Just("value".to_owned()),
        "[a-z%&=]{0,6}",
    ];
    let value = prop_oneof![
        Just("user".to_owned()),
        Just("music".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("%00".to_owned()),
        Just("%ZZ".to_owned()),
        "[ -~]{0,16}",
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.replace(['#', ' '], "+")))
            .collect::<Vec<_>>()
            .join("&")
    })
}

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/datastore/read"),
    ("POST", "/api/v1/datastore/write"),
    ("PUT", "/api/v1/datastore/update"),
    ("DELETE", "/api/v1/datastore/delete"),
    ("GET", "/api/v1/datastore/list"),
    ("GET", "/api/v1/datastore/find"),
    ("POST", "/api/v1/datastore/load"),
];

#[test]
fn no_generated_request_gets_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(TestApp::spawn());
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(route in 0..ROUTES.len(), query in query(), body in body(), basic in any::<bool>())| {
        let (method, path) = ROUTES[route];
        let status = runtime.block_on(async {
            let mut request = app
                .client
                .request(Method::from_bytes(method.as_bytes()).expect("method"), format!("{}{path}?{query}", app.base))
                .body(body.clone());
            if basic {
                request = request.basic_auth("svc-loader", Some(crate::helpers::LOADER_TOKEN));
            }
            let response = request.send().await.expect("the gateway answers");
            let status = response.status();
            let text = response.text().await.expect("body");
            if status.is_client_error() {
                let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} without the JSON envelope: {text}"));
                assert!(json["error"].is_string(), "{text}");
            }
            (status, text)
        });
        let (status, text) = status;
        prop_assert!(!status.is_server_error(), "{method} {path}?{query} with {body:?} -> {status}: {text}");
    });
    runtime.block_on(app.assert_alive());
}
