use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use reqwest::StatusCode;
use scaler::events::Events;
use scaler::pool::{Backend, Pool, State, Strategy};
use serde_json::json;

use crate::support::{balancer, client, closed_port, serve};

fn echo(name: &'static str) -> Router {
    Router::new()
        .route(
            "/echo",
            post(move |body: String| async move { format!("{name}:{body}") }),
        )
        .route("/health", get(|| async { "ok" }))
}

#[tokio::test]
async fn post_bodies_arrive_intact_when_the_first_replica_refuses_the_connection() {
    let (balancer, base) = balancer("echo").await;
    balancer.pool.add(Backend::new(
        "refuses",
        format!("http://127.0.0.1:{}", closed_port()),
        State::Alive,
    ));
    balancer.pool.add(Backend::new(
        "answers",
        serve(echo("answers")).await,
        State::Alive,
    ));
    let http = client();
    for i in 0..40 {
        let body = format!("{{\"n\": {i}, \"pad\": \"{}\"}}", "x".repeat(i * 100));
        let response = http
            .post(format!("{base}/echo"))
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-replica"], "answers");
        assert_eq!(
            response.text().await.expect("body"),
            format!("answers:{body}")
        );
    }
    let refusing = balancer
        .pool
        .all()
        .into_iter()
        .find(|b| b.id == "refuses")
        .expect("still listed");
    assert_ne!(
        refusing.state(),
        State::Alive,
        "a refused connection ejects the replica"
    );
}

#[tokio::test]
async fn with_no_alive_replica_readiness_is_503() {
    let (balancer, base) = balancer("music").await;
    let response = client()
        .get(format!("{base}/readiness"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("envelope")
            .contains("no ready replica of music")
    );
    balancer.pool.add(Backend::new(
        "starting",
        serve(echo("s")).await,
        State::Starting,
    ));
    let still = client()
        .get(format!("{base}/readiness"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        still.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a starting replica gets no traffic"
    );
}

#[tokio::test]
async fn least_request_sends_a_ten_times_slower_replica_under_10_percent() {
    let (balancer, base) = balancer("work").await;
    for (name, delay) in [("fast-1", 2u64), ("fast-2", 2), ("slow", 20)] {
        let router = Router::new().route(
            "/work",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                "done"
            }),
        );
        balancer
            .pool
            .add(Backend::new(name, serve(router).await, State::Alive));
    }
    let http = client();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = http.clone();
        let url = format!("{base}/work");
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..60 {
                let response = http.get(&url).send().await.expect("request");
                *counts
                    .entry(
                        response.headers()["x-replica"]
                            .to_str()
                            .expect("ascii")
                            .to_owned(),
                    )
                    .or_default() += 1;
            }
            counts
        }));
    }
    let mut total: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (k, v) in task.await.expect("task") {
            *total.entry(k).or_default() += v;
        }
    }
    let all: usize = total.values().sum();
    let slow = total.get("slow").copied().unwrap_or(0) as f64 / all as f64;
    println!(
        "least-request shares: {total:?} (slow {:.1}%)",
        slow * 100.0
    );
    assert!(slow < 0.10, "the slow replica got {:.1}%", slow * 100.0);
}

#[tokio::test]
async fn put_servers_adds_and_deletes_static_backends() {
    let (balancer, base) = balancer("static").await;
    let services = std::collections::BTreeMap::from([(
        "static".to_owned(),
        scaler::Service {
            balancer: balancer.clone(),
            supervisor: None,
        },
    )]);
    let platform = scaler::Platform {
        services: Arc::new(services),
        events: Arc::new(Events::default()),
        token: Some("t0k".into()),
        monitor: Default::default(),
        admin: None,
    };
    let admin = serve(scaler::admin::router(platform)).await;
    let one = serve(echo("one")).await;
    let two = serve(echo("two")).await;
    let http = client();

    let refused = http
        .put(format!("{admin}/servers?service=static"))
        .json(&json!({"adds": [one]}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "mutations need SCALER_TOKEN"
    );
    let added = http
        .put(format!("{admin}/servers?service=static"))
        .bearer_auth("t0k")
        .json(&json!({"adds": [one, two]}))
        .send()
        .await
        .expect("request");
    assert_eq!(added.status(), StatusCode::OK);
    let listed: Vec<String> = http
        .get(format!("{admin}/servers?service=static"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 2);
    let answer = http
        .post(format!("{base}/echo"))
        .body("hi")
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), StatusCode::OK);

    http.put(format!("{admin}/servers?service=static"))
        .bearer_auth("t0k")
        .json(&json!({"deletes": [one]}))
        .send()
        .await
        .expect("request");
    for _ in 0..20 {
        let response = http
            .post(format!("{base}/echo"))
            .body("x")
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.headers()["x-replica"].to_str().expect("ascii"),
            two.as_str()
        );
    }
    assert_eq!(
        http.get(format!("{admin}/health_check"))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body"),
        "alive"
    );
}

#[test]
fn round_robin_is_also_available() {
    let pool = Pool::new(Strategy::RoundRobin);
    pool.add(Backend::new("a", "http://a", State::Alive));
    pool.add(Backend::new("b", "http://b", State::Alive));
    let mut rng = rand::rng();
    let picks: Vec<String> = (0..4)
        .map(|_| pool.choose(&[], &mut rng).expect("pick").id.clone())
        .collect();
    assert_eq!(picks, ["a", "b", "a", "b"]);
}

/// Scaling 1 -> 2 with a replica that takes 1.5 s to start: it gets no request before
/// its readiness passes, and traffic reaches it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_starting_replica_gets_no_traffic_before_it_is_ready() {
    use scaler::actuator::{ProcessActuator, ServiceSpec};
    use scaler::supervisor::Supervisor;
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("slow-start.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$INSTANCE_ID\" in *-2) sleep 1.5;; esac\nexec {}\n",
            crate::support::binaries().join("fibonacci").display()
        ),
    )
    .expect("script");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    let (balancer, base) = balancer("fibonacci").await;
    let spec = ServiceSpec {
        name: "fib".into(),
        program: script,
        env: Default::default(),
        log_dir: dir.path().join("logs"),
    };
    let supervisor = Supervisor::new(
        spec,
        balancer.clone(),
        std::sync::Arc::new(ProcessActuator),
        1,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(supervisor.clone().run(stop_rx));
    let http = client();
    while balancer.pool.alive().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    supervisor.set_desired(2);
    let started = std::time::Instant::now();
    let mut before_ready = 0;
    let mut by_second = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let response = http
            .get(format!("{base}/fibonacci?n=5"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let replica = response.headers()["x-replica"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let second_ready = balancer.pool.alive().iter().any(|b| b.id == "fib-2");
        if replica == "fib-2" {
            by_second += 1;
        } else if !second_ready {
            before_ready += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        before_ready > 50,
        "traffic flowed while fib-2 started ({before_ready})"
    );
    assert!(by_second > 0, "fib-2 took traffic once ready");
    let refused = balancer
        .events
        .recent()
        .iter()
        .any(|e| e.replica == "fib-2" && e.kind == scaler::events::Kind::Ejected);
    assert!(!refused, "no request was sent to fib-2 before it listened");
    let _ = stop_tx.send(true);
    run.await.expect("supervisor");
}

#[tokio::test]
async fn reports_eject_replicas_and_metrics_count_them() {
    let (balancer, _) = balancer("music").await;
    let alive = serve(echo("a")).await;
    balancer
        .pool
        .add(Backend::new("music-1", alive.clone(), State::Alive));
    let services = std::collections::BTreeMap::from([(
        "music".to_owned(),
        scaler::Service {
            balancer: balancer.clone(),
            supervisor: None,
        },
    )]);
    let events = balancer.events.clone();
    let platform = scaler::Platform {
        services: Arc::new(services),
        events,
        token: None,
        monitor: Default::default(),
        admin: None,
    };
    let admin = serve(scaler::admin::app(platform)).await;
    let http = client();

    let monitor = http
        .put(format!("{admin}/monitor"))
        .json(&json!({"monitor": "http://127.0.0.1:9"}))
        .send()
        .await
        .expect("put");
    assert_eq!(monitor.status(), StatusCode::OK);
    let got: serde_json::Value = http
        .get(format!("{admin}/monitor"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["monitor"], "http://127.0.0.1:9");

    let report = http
        .put(format!("{admin}/report"))
        .json(&json!({"dead": [alive]}))
        .send()
        .await
        .expect("put");
    assert_eq!(report.status(), StatusCode::OK);
    assert_eq!(
        balancer.pool.alive().len(),
        0,
        "a reported replica leaves rotation"
    );

    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"scaler_replicas{service="music",state="disconnected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"scaler_events_total{kind="ejected",service="music"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn put_servers_refuses_to_delete_a_supervised_replica() {
    let (balancer, _) = balancer("music").await;
    let spec = scaler::actuator::ServiceSpec {
        name: "music".into(),
        program: "music".into(),
        env: Default::default(),
        log_dir: std::env::temp_dir(),
    };
    // Not running: only its pool matters here.
    let supervisor = scaler::supervisor::Supervisor::new(
        spec,
        balancer.clone(),
        Arc::new(scaler::actuator::ProcessActuator),
        1,
    );
    let url = "http://127.0.0.1:9";
    balancer
        .pool
        .add(Backend::new("music-1", url, State::Alive));
    let platform = scaler::Platform {
        services: Arc::new(std::collections::BTreeMap::from([(
            "music".to_owned(),
            scaler::Service {
                balancer: balancer.clone(),
                supervisor: Some(supervisor),
            },
        )])),
        events: Arc::new(Events::default()),
        token: Some("t0k".into()),
        monitor: Default::default(),
        admin: None,
    };
    let admin = serve(scaler::admin::router(platform)).await;
    let refused = client()
        .put(format!("{admin}/servers?service=music"))
        .bearer_auth("t0k")
        .json(&json!({"deletes": [url]}))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("PUT /replicas")),
        "{body}"
    );
    assert_eq!(balancer.pool.all().len(), 1, "the replica stays");
}
