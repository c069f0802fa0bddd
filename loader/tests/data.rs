//! `loader data` against a real gateway (in-process, SQLite) through HTTP.

use std::process::Command;
use std::time::Duration;

use database_gateway::{AppState, Config, DatabaseUrl};
use serde_json::Value;

const TOKEN: &str = "load-token";

async fn gateway(dir: &std::path::Path) -> String {
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: DatabaseUrl::parse(&format!("sqlite://{}", dir.join("db.sqlite").display()))
            .expect("url"),
        database_url_file: None,
        dynamodb_url: None,
        datastore_token: None,
        loader_token: Some(TOKEN.to_owned()),
        datastore_token_file: None,
        loader_token_file: None,
        server: kit::ServerArgs::default(),
    };
    let state = AppState::from_config(&config).await.expect("store");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(database_gateway::run(
        listener,
        state,
        std::future::pending(),
    ));
    base
}

fn loader(args: &[&str], gateway: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(args)
        .env("DATASTORE_URL", gateway)
        .env("SVC_LOADER_TOKEN", TOKEN)
        .output()
        .expect("run loader");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn course_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../gatling/resources").to_owned()
}

async fn count(gateway: &str, objtype: &str) -> usize {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut total = 0;
    let mut cursor = String::new();
    loop {
        let page: Value = http
            .get(format!(
                "{gateway}/api/v1/datastore/list?objtype={objtype}&limit=1000{cursor}"
            ))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        total += page["Count"].as_u64().expect("count") as usize;
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return total,
        }
    }
}

fn table_row(stdout: &str, table: &str) -> Vec<usize> {
    stdout
        .lines()
        .find(|l| l.starts_with(table))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_course_data_loads_once_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway(dir.path()).await;
    let course = course_dir();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let gw = gw.clone();
        move || loader(&["data", &course], &gw)
    })
    .await
    .expect("task");
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(table_row(&stdout, "user"), vec![4, 0, 0], "{stdout}");
    assert_eq!(table_row(&stdout, "music"), vec![6, 0, 0], "{stdout}");
    assert_eq!(table_row(&stdout, "playlist"), vec![2, 0, 0], "{stdout}");
    let user: Value = reqwest::get(format!(
        "{gw}/api/v1/datastore/read?objtype=user&objkey=b66f61e7-4fad-402f-aaad-101e3e2522d3"
    ))
    .await
    .expect("read")
    .json()
    .await
    .expect("json");
    assert_eq!(user["Items"][0]["fname"], "George");
    assert_eq!(user["Items"][0]["lname"], "Clinton");

    let course = course_dir();
    let (ok, stdout, _) = tokio::task::spawn_blocking({
        let gw = gw.clone();
        move || loader(&["data", &course], &gw)
    })
    .await
    .expect("task");
    assert!(ok);
    assert_eq!(table_row(&stdout, "user"), vec![0, 4, 0], "{stdout}");
    assert_eq!(table_row(&stdout, "music"), vec![0, 6, 0], "{stdout}");
    assert_eq!(table_row(&stdout, "playlist"), vec![0, 2, 0], "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_row_is_reported_by_line_and_the_good_rows_still_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway(dir.path()).await;
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("dir");
    for file in ["music.csv", "playlist.csv"] {
        std::fs::copy(format!("{}/{file}", course_dir()), data.join(file)).expect("copy");
    }
    std::fs::write(
        data.join("users.csv"),
        "fname,lname,email,UUID\nGeorge,Clinton,starchild@pfunk.org,b66f61e7-4fad-402f-aaad-101e3e2522d3\nBroken,Row,not-a-uuid-email\nTina,Weymouth,onlytina@tomtomclub.com,75ebc062-a808-4a0f-a79b-8ac568564bfe\n",
    )
    .expect("csv");
    let data_dir = data.display().to_string();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let gw = gw.clone();
        move || loader(&["data", &data_dir], &gw)
    })
    .await
    .expect("task");
    assert!(!ok, "a failed row makes the exit code non-zero");
    assert!(
        stderr.contains("users.csv:3:"),
        "the line is named: {stderr}"
    );
    assert_eq!(table_row(&stdout, "user"), vec![2, 0, 1], "{stdout}");
    assert_eq!(count(&gw, "user").await, 2);
    assert_eq!(count(&gw, "music").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_rows_load_and_the_counts_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway(dir.path()).await;
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let gw = gw.clone();
        move || {
            loader(
                &[
                    "data",
                    "--generate",
                    "users=10000,music=10000,playlists=1000",
                    "--concurrency",
                    "64",
                ],
                &gw,
            )
        }
    })
    .await
    .expect("task");
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(table_row(&stdout, "user"), vec![10000, 0, 0], "{stdout}");
    assert_eq!(count(&gw, "user").await, 10000);
    assert_eq!(count(&gw, "music").await, 10000);
    assert_eq!(count(&gw, "playlist").await, 1000);
}
