//! What Prometheus sees of the scaler: the HTTP service discovery of every replica
//! (following the supervisor as it scales), and the balancer's request metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use scaler::actuator::{ProcessActuator, ServiceSpec};
use scaler::discovery::AdminAddress;
use scaler::pool::{Backend, State};
use scaler::supervisor::Supervisor;
use serde_json::Value;

use crate::support::{balancer, binaries, client, closed_port, serve};

/// Serves the admin API on a free port and tells the platform where it listens.
async fn admin(
    services: BTreeMap<String, scaler::Service>,
    events: Arc<scaler::events::Events>,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let listen = listener.local_addr().expect("addr");
    let platform = scaler::Platform {
        services: Arc::new(services),
        events,
        token: None,
        monitor: Default::default(),
        admin: Some(AdminAddress {
            listen,
            advertise: None,
        }),
    };
    let app = scaler::admin::app(platform);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{listen}")
}

/// `(service, replica, target)` of each group of `GET /prometheus/targets`, sorted.
async fn targets(admin: &str) -> Vec<(String, String, String)> {
    let groups: Vec<Value> = client()
        .get(format!("{admin}/prometheus/targets"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("http_sd JSON");
    let mut out: Vec<_> = groups
        .iter()
        .map(|g| {
            let targets = g["targets"].as_array().expect("targets");
            assert_eq!(targets.len(), 1, "one target per group: {g}");
            (
                g["labels"]["service"].as_str().expect("service").to_owned(),
                g["labels"]["replica"].as_str().expect("replica").to_owned(),
                targets[0].as_str().expect("target").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn until<F, Fut>(what: &str, within: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn prometheus_targets_list_every_replica_and_follow_a_scale_up_and_down() {
    let (fib, _) = balancer("fibonacci").await;
    let spec = ServiceSpec {
        name: "fibonacci".into(),
        program: binaries().join("fibonacci"),
        env: Default::default(),
        log_dir: std::env::temp_dir().join("scaler-prometheus-test"),
    };
    let supervisor = Supervisor::new(spec, fib.clone(), Arc::new(ProcessActuator), 1);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(supervisor.clone().run(stop_rx));
    // A static backend that is down stays listed: its scrape fails, `up` is 0.
    let (fixed, _) = balancer("static").await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    fixed.pool.add(Backend::new(
        dead.clone(),
        dead.clone(),
        State::Disconnected,
    ));
    let services = BTreeMap::from([
        (
            "fibonacci".to_owned(),
            scaler::Service {
                balancer: fib.clone(),
                supervisor: Some(supervisor.clone()),
            },
        ),
        (
            "static".to_owned(),
            scaler::Service {
                balancer: fixed,
                supervisor: None,
            },
        ),
    ]);
    let admin = admin(services, fib.events.clone()).await;
    let admin_target = admin.trim_start_matches("http://").to_owned();
    let fib_targets = |all: &[(String, String, String)]| -> Vec<(String, String)> {
        all.iter()
            .filter(|(s, _, _)| s == "fibonacci")
            .map(|(_, r, t)| (r.clone(), t.clone()))
            .collect()
    };

    until(
        "one fibonacci replica ready",
        Duration::from_secs(30),
        || async { fib.pool.alive().len() == 1 },
    )
    .await;
    let listed = targets(&admin).await;
    let one = fib.pool.all()[0]
        .url
        .trim_start_matches("http://")
        .to_owned();
    assert_eq!(
        listed,
        [
            ("fibonacci".into(), "fibonacci-1".into(), one.clone()),
            ("scaler".into(), "scaler".into(), admin_target.clone()),
            (
                "static".into(),
                dead.clone(),
                dead.trim_start_matches("http://").into()
            ),
        ]
    );

    supervisor.set_desired(3);
    until(
        "three fibonacci targets",
        Duration::from_secs(30),
        || async { fib_targets(&targets(&admin).await).len() == 3 },
    )
    .await;
    let three = fib_targets(&targets(&admin).await);
    let replicas: Vec<&str> = three.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(replicas, ["fibonacci-1", "fibonacci-2", "fibonacci-3"]);
    // Each target is what Prometheus will scrape: its /metrics answers, once ready.
    until(
        "the new replicas ready",
        Duration::from_secs(30),
        || async { fib.pool.alive().len() == 3 },
    )
    .await;
    for (replica, target) in &three {
        let metrics = client()
            .get(format!("http://{target}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("process_cpu_seconds_total"),
            "{replica} at {target} serves no metrics"
        );
    }
    let scaler_metrics = client()
        .get(format!("http://{admin_target}/metrics"))
        .send()
        .await
        .expect("scrape the scaler")
        .text()
        .await
        .expect("text");
    assert!(
        scaler_metrics.contains(r#"scaler_events_total{kind="scaled",service="fibonacci"} 1"#),
        "{scaler_metrics}"
    );

    supervisor.set_desired(1);
    until(
        "back to one fibonacci target",
        Duration::from_secs(30),
        || async {
            fib_targets(&targets(&admin).await) == [("fibonacci-1".to_owned(), one.clone())]
        },
    )
    .await;

    let _ = stop.send(true);
    run.await.expect("supervisor");
}

#[tokio::test]
async fn the_balancer_counts_requests_by_status_and_times_them() {
    let (music, base) = balancer("music").await;
    let replica = serve(Router::new().route("/ok", get(|| async { "ok" })).route(
        "/missing",
        get(|| async { axum::http::StatusCode::NOT_FOUND }),
    ))
    .await;
    music
        .pool
        .add(Backend::new("music-1", replica, State::Alive));
    let services = BTreeMap::from([(
        "music".to_owned(),
        scaler::Service {
            balancer: music.clone(),
            supervisor: None,
        },
    )]);
    let admin = admin(services, music.events.clone()).await;
    let http = client();
    let scrape = || async {
        http.get(format!("{admin}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    };
    let get = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}{path}"))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };

    for _ in 0..5 {
        assert_eq!(get("/ok").await, 200);
    }
    assert_eq!(get("/missing").await, 404);
    let metrics = scrape().await;
    for line in [
        r#"scaler_balancer_requests_total{code="200",service="music"} 5"#,
        r#"scaler_balancer_requests_total{code="404",service="music"} 1"#,
        r#"scaler_balancer_request_duration_seconds_count{service="music"} 6"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }

    // The only replica stops answering: a failed forward is a 502, and it counts.
    music.pool.remove("music-1");
    music.pool.add(Backend::new(
        "music-2",
        format!("http://127.0.0.1:{}", closed_port()),
        State::Alive,
    ));
    assert_eq!(get("/ok").await, 502);
    assert_eq!(get("/ok").await, 503, "no replica left in rotation");
    let metrics = scrape().await;
    for line in [
        r#"scaler_balancer_requests_total{code="200",service="music"} 5"#,
        r#"scaler_balancer_requests_total{code="502",service="music"} 1"#,
        r#"scaler_balancer_requests_total{code="503",service="music"} 1"#,
        r#"scaler_balancer_request_duration_seconds_count{service="music"} 8"#,
        r#"scaler_balancer_request_duration_seconds_bucket{service="music",le="30"} 8"#,
        r#"scaler_events_total{kind="ejected",service="music"} 1"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
}
