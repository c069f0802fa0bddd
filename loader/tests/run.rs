//! `loader run` against real services (in-process gateway and music, SQLite, HTTP), and
//! the open model's coordinated-omission correction against a stalling endpoint.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

const TOKEN: &str = "load-token";

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn platform(dir: &std::path::Path) -> (String, String) {
    let config = database_gateway::Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: database_gateway::DatabaseUrl::parse(&format!(
            "sqlite://{}",
            dir.join("db.sqlite").display()
        ))
        .expect("url"),
        database_url_file: None,
        dynamodb_url: None,
        datastore_token: None,
        loader_token: Some(TOKEN.to_owned()),
        datastore_token_file: None,
        loader_token_file: None,
        server: kit::ServerArgs::default(),
    };
    let state = database_gateway::AppState::from_config(&config)
        .await
        .expect("store");
    let gateway = serve(database_gateway::app(state)).await;
    let app = kit::config::AppArgs {
        datastore_url: gateway.clone(),
        datastore_token: None,
        auth_mode: kit::AuthMode::Presence,
        jwt_secret: None,
        jwt_secret_file: None,
        datastore_token_file: None,
        jwt_ttl: Duration::from_secs(3600),
    };
    let service = kit::app::ServiceState::new(&app, &kit::ServerArgs::default()).expect("state");
    let music = serve(music::app(music::AppState {
        service,
        version: music::Version::V1,
        error_percent: 0,
    }))
    .await;
    (gateway, music)
}

fn loader(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loader"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run loader");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_music_sim_with_50_users_for_20_s_writes_its_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (gateway, music) = platform(dir.path()).await;
    let out = dir.path().join("report");
    let out_arg = out.display().to_string();
    let (loaded, run) = tokio::task::spawn_blocking(move || {
        let loaded = loader(
            &["data"],
            &[("DATASTORE_URL", &gateway), ("SVC_LOADER_TOKEN", TOKEN)],
        );
        let service = format!("music={music}");
        let run = loader(
            &[
                "run",
                "ReadMusicSim",
                "--service",
                &service,
                "--duration",
                "20s",
                "--out",
                &out_arg,
            ],
            &[("USERS", "50")],
        );
        (loaded, run)
    })
    .await
    .expect("task");
    assert!(loaded.0, "{}{}", loaded.1, loaded.2);
    let (ok, stdout, stderr) = run;
    assert!(ok, "{stdout}{stderr}");
    let all = stdout
        .lines()
        .find(|l| l.starts_with("all requests"))
        .expect("the table");
    let columns: Vec<&str> = all.split_whitespace().collect();
    let (count, oks, kos): (usize, usize, usize) = (
        columns[2].parse().expect("count"),
        columns[3].parse().expect("ok"),
        columns[4].parse().expect("ko"),
    );
    assert_eq!((oks, kos), (count, 0), "every request answered 200: {all}");
    assert!(stderr.contains("users    50"), "live progress: {stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).expect("json"))
            .expect("json");
    // Closed users: each sends one request, waits for it, pauses 1 s. How many fit in
    // 20 s follows from the run's own mean latency, whatever this machine's speed.
    let mean_s = results["requests"]
        .as_array()
        .and_then(|r| r.last())
        .and_then(|all| all["mean_ms"].as_f64())
        .expect("mean")
        / 1000.0;
    let expected = 50.0 * 20.0 / (1.0 + mean_s);
    println!("{count} requests, {expected:.0} expected at a mean of {mean_s:.3} s");
    assert!(
        count as f64 >= 0.85 * expected,
        "50 users x 20 s / (1 s + {mean_s:.3} s) is {expected:.0}: {all}"
    );
    assert_eq!(results["scenario"], "ReadMusicSim");
    assert!(
        results["timeline"]
            .as_array()
            .is_some_and(|t| t.len() >= 19)
    );
    let html = std::fs::read_to_string(out.join("index.html")).expect("html");
    assert_eq!(
        html.matches("<svg class=\"chart\"").count(),
        4,
        "users, req/s, percentiles, errors"
    );
    assert!(html.matches("<polyline").count() >= 6 && html.contains("<table>"));
    assert!(
        !html.contains("src=") && !html.contains("<link"),
        "self-contained: no external assets"
    );
}

/// Every 200th request holds a global lock for 200 ms (a stall, like a pause in GC):
/// everything queues behind it. An open-model run keeps sending and sees the queue;
/// a closed-model run with one user sends nothing while it waits and hides it (its
/// stalls are 0.5% of its requests, beyond its p99, and the rest are fast whatever the
/// machine's speed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_sees_stalls_the_closed_model_hides() {
    let counter = Arc::new(AtomicU64::new(0));
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let router = axum::Router::new().route(
        "/work",
        axum::routing::get(move || {
            let (counter, lock) = (counter.clone(), lock.clone());
            async move {
                let guard = lock.lock().await;
                if counter.fetch_add(1, Ordering::SeqCst) % 200 == 199 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                drop(guard);
                "ok"
            }
        }),
    );
    let base = serve(router).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = |injection: &str| {
        format!(
            "name = \"stall\"\nforever = true\ninjection = {injection}\n\n[[requests]]\nname = \"work\"\npath = \"/work\"\n"
        )
    };
    std::fs::write(
        dir.path().join("open.toml"),
        scenario("{ kind = \"constant_rate\", per_second = 200, during = \"6s\" }"),
    )
    .expect("w");
    std::fs::write(
        dir.path().join("closed.toml"),
        scenario("{ kind = \"at_once\", users = 1 }"),
    )
    .expect("w");
    let p99 = |name: &str| {
        let (file, out) = (
            dir.path().join(format!("{name}.toml")),
            dir.path().join(name),
        );
        let (base, file, out) = (
            base.clone(),
            file.display().to_string(),
            out.display().to_string(),
        );
        move || {
            let (ok, stdout, stderr) = loader(
                &[
                    "run",
                    &file,
                    "--base-url",
                    &base,
                    "--duration",
                    "6s",
                    "--out",
                    &out,
                ],
                &[],
            );
            assert!(ok, "{stdout}{stderr}");
            let results: Value = serde_json::from_str(
                &std::fs::read_to_string(format!("{out}/results.json")).expect("json"),
            )
            .expect("json");
            let all = results["requests"]
                .as_array()
                .and_then(|r| r.last())
                .cloned()
                .expect("all");
            (
                all["p99_ms"].as_f64().expect("p99"),
                all["count"].as_u64().expect("count"),
            )
        }
    };
    let (open_p99, open_count) = tokio::task::spawn_blocking(p99("open"))
        .await
        .expect("task");
    let (closed_p99, closed_count) = tokio::task::spawn_blocking(p99("closed"))
        .await
        .expect("task");
    println!(
        "open model: p99 {open_p99:.1} ms over {open_count} requests; closed model: p99 {closed_p99:.1} ms over {closed_count}"
    );
    assert!(
        open_p99 >= 100.0,
        "the open model's p99 reflects the 200 ms stalls ({open_p99} ms)"
    );
    assert!(
        closed_p99 < open_p99 / 2.0,
        "the closed model reports less ({closed_p99} vs {open_p99} ms)"
    );
}
