//! Music v2 fails about MUSIC_ERROR_PERCENT of song reads; v1 none.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::platform::{Options, Platform};

async fn failures_in_1000_reads(p: &Platform) -> usize {
    let id = p.song("Prince", "Kiss").await;
    let mut failures = 0;
    for _ in 0..1000 {
        let response = p
            .call(Method::GET, &p.music, &format!("/api/v1/music/{id}"), None)
            .await;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::INTERNAL_SERVER_ERROR => {
                assert_eq!(
                    response.json::<Value>().await.expect("json"),
                    json!({"error": "get_song failed"})
                );
                failures += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    failures
}

#[tokio::test]
async fn v2_fails_about_half_of_the_reads_and_v1_none() {
    let v2 = Platform::start(Options {
        auth_mode: Some("presence"),
        music_env: vec![
            ("MUSIC_VERSION".into(), "v2".into()),
            ("MUSIC_ERROR_PERCENT".into(), "50".into()),
        ],
        ..Options::default()
    })
    .await;
    let mut v2 = v2;
    v2.auth = Some("Bearer A".into());
    let failed = failures_in_1000_reads(&v2).await;
    println!("v2: {failed} of 1000 reads failed");
    assert!((400..=600).contains(&failed), "v2 failed {failed} of 1000");
    let header = v2.call(Method::GET, &v2.music, "/health", None).await;
    assert_eq!(header.headers()["x-service-version"], "v2");

    let v1 = Platform::presence().await;
    assert_eq!(failures_in_1000_reads(&v1).await, 0);
}
