//! `loader sweep` against the Fibonacci service (in-process, real HTTP).

use std::process::Command;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_sweep_prints_the_table_the_sla_answer_and_writes_its_files() {
    let state = fibonacci::AppState::new(&fibonacci::Config::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/fibonacci?n=20",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(fibonacci::run(listener, state, std::future::pending()));
    let out = tempfile::tempdir().expect("temp dir");
    let out_dir = out.path().display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_loader"))
            .args([
                "sweep",
                &url,
                &url,
                "--concurrency",
                "10,100,500",
                "--requests",
                "2000",
            ])
            .args([
                "--sla",
                // Generous: this checks the answer's form, not this machine's speed.
                "max=30s,mean=5s,p98=10s",
                "--users",
                "100",
                "--out",
                &out_dir,
            ])
            .output()
            .expect("run loader")
    })
    .await
    .expect("task");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for header in ["concurrency", "mean ms", "p98 ms", "longest ms"] {
        assert!(stdout.contains(header), "{stdout}");
    }
    assert!(stdout.contains("1 node meets it up to"), "{stdout}");
    assert!(
        stdout.contains("100 users need 1 node under this SLA"),
        "{stdout}"
    );

    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("json file"),
    )
    .expect("json");
    let runs = results["targets"][0]["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3);
    for run in runs {
        assert_eq!(run["requests"], 2000);
        assert_eq!(run["failures"], 0);
        assert!(run["max_ms"].as_f64() >= run["p98_ms"].as_f64());
        assert!(run["p98_ms"].as_f64() >= run["p50_ms"].as_f64());
    }
    let svg = std::fs::read_to_string(out.path().join("sweep.svg")).expect("svg");
    assert_eq!(svg.matches("<polyline").count(), 2, "one line per target");
    assert!(
        std::fs::read_to_string(out.path().join("index.html"))
            .expect("html")
            .contains("<svg")
    );
}
