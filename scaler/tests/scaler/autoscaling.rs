//! Live autoscaling with real processes: a policy reads the replicas' CPU from their
//! `/metrics`, and the supervisor follows its decisions, recorded as events with reasons.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use scaler::actuator::{ProcessActuator, ServiceSpec};
use scaler::events::Kind;
use scaler::policy::Bounds;
use scaler::policy::threshold::Threshold;
use scaler::supervisor::Supervisor;

use crate::support::{balancer, binaries, client};

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_brings_a_second_and_an_idle_pair_goes_back_to_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (balancer, base) = balancer("fibonacci").await;
    let spec = ServiceSpec {
        name: "fib".into(),
        program: binaries().join("fibonacci"),
        env: [("RUST_LOG".to_owned(), "warn".to_owned())]
            .into_iter()
            .collect(),
        log_dir: dir.path().join("logs"),
    };
    let supervisor = Supervisor::new(spec, balancer.clone(), Arc::new(ProcessActuator), 1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(supervisor.clone().run(stop_rx.clone()));
    wait_until("one ready replica", Duration::from_secs(10), || {
        balancer.pool.alive().len() == 1
    })
    .await;
    let first = balancer.pool.alive()[0].url.clone();

    // The CPU-load simulator burns about 72% of a core on the only replica.
    let http = client();
    let busy = http
        .put(format!("{base}/load/cpu"))
        .json(&serde_json::json!({"profile": "high"}))
        .send()
        .await
        .expect("put");
    assert!(busy.status().is_success());
    let policy = Box::new(Threshold {
        high: 0.5,
        low: 0.1,
        bounds: Bounds { min: 1, max: 2 },
        interval_s: 1.0,
    });
    let autoscaler = tokio::spawn(scaler::autoscale::run(supervisor.clone(), policy, stop_rx));

    wait_until("a scale-up to 2", Duration::from_secs(15), || {
        supervisor.desired.load(Ordering::SeqCst) == 2
    })
    .await;
    wait_until("two ready replicas", Duration::from_secs(10), || {
        balancer.pool.alive().len() == 2
    })
    .await;
    let reason = balancer
        .events
        .recent()
        .into_iter()
        .find(|e| e.kind == Kind::Scaled && e.detail.contains("CPU"))
        .expect("a scaled event");
    println!("scaled up: {}", reason.detail);

    // Idle again: back to the minimum.
    let off = http
        .put(format!("{first}/load/cpu"))
        .json(&serde_json::json!({"profile": "off"}))
        .send()
        .await
        .expect("put");
    assert!(off.status().is_success());
    wait_until("a scale-down to 1", Duration::from_secs(20), || {
        supervisor.desired.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_until("one replica left", Duration::from_secs(15), || {
        balancer.pool.all().len() == 1
    })
    .await;

    let _ = stop_tx.send(true);
    autoscaler.await.expect("autoscaler");
    run.await.expect("supervisor");
}
