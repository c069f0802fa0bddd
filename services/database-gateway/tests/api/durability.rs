use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{GatewayProcess, TestDatabase, client};

/// 16 clients write to the real binary; once 1000 writes are acknowledged the gateway
/// is SIGKILLed with writes still in flight. Restarted on the same store, it has every
/// acknowledged write with its exact fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_kill_9() {
    let db = TestDatabase::new().await;
    let logs = tempfile::tempdir().expect("temp dir");
    let mut gateway = GatewayProcess::start(&db.url, &[], logs.path().join("first.log")).await;

    let acknowledged: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let clients = 16;
    let target = 1000;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = client();
        let url = format!("{}/api/v1/datastore/write", gateway.base);
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            for n in (c..).step_by(clients) {
                let fields = json!({"client": c, "seq": n, "Name": format!("item {n}"), "tags": [n, "x y", {"deep": n % 7}]});
                let mut body = fields.clone();
                body["objtype"] = json!("music");
                // After the kill, requests fail: that is the end of this writer.
                let Ok(response) = http.post(&url).json(&body).send().await else { return };
                assert_eq!(response.status(), StatusCode::OK);
                let Ok(json) = response.json::<Value>().await else { return };
                let id = json["music_id"].as_str().expect("id").to_owned();
                acknowledged.lock().await.insert(id, fields);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().await.len() < target {
        assert!(Instant::now() < deadline, "1000 writes took over 2 minutes");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill9();
    for task in tasks {
        task.await.expect("writer");
    }

    let gateway = GatewayProcess::start(&db.url, &[], logs.path().join("second.log")).await;
    let acknowledged = acknowledged.lock().await;
    assert!(acknowledged.len() >= target);
    let http = client();
    for (id, fields) in acknowledged.iter() {
        let response = http
            .get(format!("{}/api/v1/datastore/read", gateway.base))
            .query(&[("objtype", "music"), ("objkey", id.as_str())])
            .send()
            .await
            .expect("read");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged write {id} was lost"
        );
        let mut expected = fields.clone();
        expected["music_id"] = json!(id);
        assert_eq!(
            response.json::<Value>().await.expect("json")["Items"][0],
            expected
        );
    }
    println!(
        "{} acknowledged writes all present after SIGKILL",
        acknowledged.len()
    );
}
