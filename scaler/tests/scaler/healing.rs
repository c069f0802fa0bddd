//! Self-healing with real processes: 3 music replicas under a steady 200 req/s through
//! the balancer; one is SIGKILLed, then another SIGSTOPped (hung).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scaler::actuator::{Fault, ProcessActuator, ServiceSpec};
use scaler::pool::State;
use scaler::supervisor::Supervisor;

use crate::support::{binaries, client};

struct Gateway(std::process::Child, String);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn gateway(dir: &std::path::Path) -> Gateway {
    let port = crate::support::closed_port();
    let child = std::process::Command::new(binaries().join("database-gateway"))
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("db.sqlite").display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gateway");
    let base = format!("http://127.0.0.1:{port}");
    while client()
        .get(format!("{base}/readiness"))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Gateway(child, base)
}

/// Sends GETs at `rate` per second until `stop`; counts answers and failures.
fn load(
    url: String,
    rate: u64,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = client();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut inflight = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let (http, url, ok, failed) = (http.clone(), url.clone(), ok.clone(), failed.clone());
            inflight.push(tokio::spawn(async move {
                match http
                    .get(&url)
                    .header("Authorization", "Bearer A")
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }));
        }
        for task in inflight {
            let _ = task.await;
        }
    })
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_hung_replicas_are_replaced_without_failing_clients() {
    let _alone = crate::support::ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = gateway(dir.path()).await;
    let song: serde_json::Value = client()
        .post(format!("{}/api/v1/datastore/write", gw.1))
        .json(&serde_json::json!({"objtype": "music", "Artist": "Talking Heads", "SongTitle": "Heaven"}))
        .send()
        .await
        .expect("write")
        .json()
        .await
        .expect("json");
    let song = song["music_id"].as_str().expect("id").to_owned();

    let (balancer, base) = crate::support::balancer("music").await;
    tokio::spawn(
        balancer
            .clone()
            .health_loop(Duration::from_secs(1), Duration::from_millis(500)),
    );
    let spec = ServiceSpec {
        name: "music".into(),
        program: binaries().join("music"),
        env: [
            ("DATASTORE_URL".to_owned(), gw.1.clone()),
            ("AUTH_MODE".to_owned(), "presence".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ]
        .into_iter()
        .collect(),
        log_dir: dir.path().join("logs"),
    };
    let supervisor = Supervisor::new(spec, balancer.clone(), Arc::new(ProcessActuator), 3);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(supervisor.clone().run(stop_rx));
    wait_until("3 ready replicas", Duration::from_secs(20), || {
        balancer.pool.alive().len() == 3
    })
    .await;

    let (stop, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let traffic = load(
        format!("{base}/api/v1/music/{song}"),
        200,
        stop.clone(),
        ok.clone(),
        failed.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // SIGKILL: replaced, and no client notices.
    let victim = supervisor.replicas().into_iter().next().expect("a replica");
    supervisor.inject(&victim, Fault::Crash);
    let killed_at = Instant::now();
    wait_until(
        "a replacement after SIGKILL",
        Duration::from_secs(15),
        || !supervisor.recoveries().is_empty(),
    )
    .await;
    let recovery = supervisor.recoveries()[0];
    println!(
        "SIGKILL of {victim}: replacement ready {} ms after the kill ({} ms by the supervisor's clock)",
        killed_at.elapsed().as_millis(),
        recovery.as_millis()
    );
    // A bound on behaviour, not a speed: starting a debug build on a busy machine.
    assert!(
        recovery < Duration::from_secs(5),
        "recovery took {recovery:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_after_kill = failed.load(Ordering::Relaxed);
    assert_eq!(
        failed_after_kill, 0,
        "client requests failed around the SIGKILL"
    );

    // SIGSTOP: a hung replica is ejected, killed and replaced.
    let hung = supervisor
        .replicas()
        .into_iter()
        .find(|id| *id != victim)
        .expect("another replica");
    let backend = balancer
        .pool
        .all()
        .into_iter()
        .find(|b| b.id == hung)
        .expect("backend");
    supervisor.inject(&hung, Fault::Hang);
    let ejected = wait_until(
        "ejection of the hung replica",
        Duration::from_secs(10),
        || backend.state() != State::Alive,
    )
    .await;
    println!(
        "SIGSTOP of {hung}: ejected after {} ms",
        ejected.as_millis()
    );
    assert!(
        ejected <= Duration::from_secs(5),
        "ejection took {ejected:?}"
    );
    wait_until(
        "a replacement of the hung replica",
        Duration::from_secs(20),
        || supervisor.recoveries().len() >= 2,
    )
    .await;
    let hung_recovery = supervisor.recoveries()[1];
    println!(
        "SIGSTOP of {hung}: replaced {} ms after it was declared dead",
        hung_recovery.as_millis()
    );
    wait_until("3 ready replicas again", Duration::from_secs(10), || {
        balancer.pool.alive().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{ok} requests answered, {failed} failed");
    assert!(ok > 1000, "the load ran ({ok})");
    assert!(
        (failed as f64) < 0.001 * (ok + failed) as f64,
        "{failed} of {} failed",
        ok + failed
    );

    let _ = stop_tx.send(true);
    run.await.expect("supervisor");
    assert!(
        supervisor.replicas().is_empty() && balancer.pool.all().is_empty(),
        "every replica stopped"
    );
}
