use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// 50 writers each add their own field to one item with read / If-Match / retry-on-412.
#[tokio::test]
async fn fifty_conditional_updates_of_one_item_all_land() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"objtype": "playlist", "Name": "shared"}))
        .await;
    let writers = 50;
    let mut tasks = Vec::new();
    for n in 0..writers {
        let client = app.client.clone();
        let base = app.base.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            loop {
                let read = client
                    .get(format!("{base}/api/v1/datastore/read"))
                    .query(&[("objtype", "playlist"), ("objkey", id.as_str())])
                    .send()
                    .await
                    .expect("read");
                let etag = read.headers()["etag"].to_str().expect("etag").to_owned();
                let update = client
                    .put(format!("{base}/api/v1/datastore/update"))
                    .query(&[("objtype", "playlist"), ("objkey", id.as_str())])
                    .header("If-Match", etag)
                    .json(&json!({ format!("writer_{n}"): n }))
                    .send()
                    .await
                    .expect("update");
                match update.status() {
                    StatusCode::OK => return conflicts,
                    StatusCode::PRECONDITION_FAILED => conflicts += 1,
                    other => panic!("writer {n}: unexpected {other}"),
                }
                assert!(conflicts < 10_000, "writer {n} never got through");
            }
        }));
    }
    let mut total_conflicts = 0;
    for task in tasks {
        total_conflicts += task.await.expect("writer");
    }
    let response = app.read("playlist", &id).await;
    assert_eq!(
        response.headers()["etag"],
        format!("\"{}\"", writers + 1).as_str()
    );
    let item: Value = response.json::<Value>().await.expect("json")["Items"][0].clone();
    for n in 0..writers {
        assert_eq!(
            item[format!("writer_{n}")],
            json!(n),
            "writer {n}'s change was lost"
        );
    }
    assert_eq!(item["Name"], "shared");
    println!("{writers} writers, {total_conflicts} retries after 412");
}
