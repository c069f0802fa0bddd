//! Live autoscaling with real processes: a policy reads the replicas' CPU from their
//! `/metrics`, and the supervisor follows its decisions, recorded as events with reasons.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use scaler::actuator::{ProcessActuator, ServiceSpec};
use scaler::events::Kind;
use scaler::policy::Bounds;
use scaler::policy::littles::{Littles, LittlesConfig};
use scaler::policy::threshold::Threshold;
use scaler::supervisor::Supervisor;

use crate::support::{ONE_AT_A_TIME, balancer, binaries, client};

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

/// One supervised fibonacci replica behind a balancer, ready.
struct Fibonacci {
    _dir: tempfile::TempDir,
    balancer: Arc<scaler::balancer::Balancer>,
    base: String,
    supervisor: Arc<Supervisor>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    run: tokio::task::JoinHandle<()>,
    /// The first replica's own URL.
    first: String,
}

async fn one_fibonacci(env: &[(&str, &str)]) -> Fibonacci {
    let dir = tempfile::tempdir().expect("temp dir");
    let (balancer, base) = balancer("fibonacci").await;
    let spec = ServiceSpec {
        name: "fib".into(),
        program: binaries().join("fibonacci"),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
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
    Fibonacci {
        _dir: dir,
        balancer,
        base,
        supervisor,
        stop_tx,
        stop_rx,
        run,
        first,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_brings_a_second_and_an_idle_pair_goes_back_to_one() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Fibonacci {
        _dir,
        balancer,
        base,
        supervisor,
        stop_tx,
        stop_rx,
        run,
        first,
    } = one_fibonacci(&[("RUST_LOG", "warn")]).await;

    // The CPU-load simulator burns about 72% of a core on the only replica.
    let http = client();
    let busy = http
        .put(format!("{base}/load/cpu"))
        .json(&serde_json::json!({"profile": "high"}))
        .send()
        .await
        .expect("put");
    assert!(busy.status().is_success());
    // Above 35% scales up: the burner's 72% stays well above it on a busy machine.
    let policy = Box::new(Threshold {
        high: 0.35,
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

/// The replica's own CPU seconds, from its `/metrics`.
async fn cpu_seconds(http: &reqwest::Client, replica: &str) -> f64 {
    let text = http
        .get(format!("{replica}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("process_cpu_seconds_total")
}

/// (sent at, latency, status) of every request the open-model generator sent.
type Samples = Arc<std::sync::Mutex<Vec<(Instant, Duration, u16)>>>;

/// Sends `GET url` at `rate` requests per second (read every 10 ms; 0 pauses), each
/// on its own task, whether or not earlier ones were answered (an open model).
fn open_model(url: String, rate: Arc<std::sync::atomic::AtomicU64>, samples: Samples) {
    let http = client();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut owed = 0.0;
        loop {
            tick.tick().await;
            owed += rate.load(Ordering::Relaxed) as f64 / 100.0;
            while owed >= 1.0 {
                owed -= 1.0;
                let (http, url, samples) = (http.clone(), url.clone(), samples.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let status = match http.get(&url).send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    samples
                        .lock()
                        .expect("samples")
                        .push((sent, sent.elapsed(), status));
                });
            }
        }
    });
}

/// What one `GET /fibonacci?n=` costs `replica` in CPU seconds on this machine, in this
/// build profile: `count` requests one after another, over the CPU its `/metrics` reports.
async fn cpu_per_request(http: &reqwest::Client, replica: &str, n: u64, count: u32) -> f64 {
    let before = cpu_seconds(http, replica).await;
    for _ in 0..count {
        let answer = http
            .get(format!("{replica}/fibonacci?n={n}"))
            .send()
            .await
            .expect("fibonacci");
        assert!(answer.status().is_success(), "{}", answer.status());
        let _ = answer.bytes().await;
    }
    (cpu_seconds(http, replica).await - before) / f64::from(count)
}

/// Picks the n whose request costs about `target` CPU seconds here (a replica at
/// `limit` cores then serves `limit / target` req/s), and measures what it costs.
async fn calibrate(http: &reqwest::Client, replica: &str, target: f64) -> (u64, f64) {
    const PROBE_N: u64 = 50_000;
    let probe = cpu_per_request(http, replica, PROBE_N, 8).await;
    // The cost grows about as n^2 (printing the decimal digits dominates).
    let n = ((PROBE_N as f64) * (target / probe).sqrt()).clamp(10_000.0, 1_000_000.0) as u64;
    let count = ((0.5 / target).ceil() as u32).clamp(10, 200);
    let cost = cpu_per_request(http, replica, n, count).await;
    println!(
        "calibration: n = {PROBE_N} costs {:.2} ms of CPU here; n = {n} costs {:.2} ms (over {count} requests)",
        probe * 1e3,
        cost * 1e3
    );
    (n, cost)
}

/// ECE 422's experiment with our policy: fibonacci replicas limited to a quarter core
/// each (CPU_LIMIT, like a pod's CPU limit) and a CPU-bound n with the cache off, a
/// light load while the policy learns a replica's capacity, then a step that the policy
/// sizes at three replicas (one saturates, two run above the utilization the SLO
/// allows), held, then stopped. The work per request and every rate follow from what a
/// request costs on this machine, measured first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_step_that_needs_three_replicas_gets_them_within_seconds_and_one_after() {
    const SLO_MS: f64 = 600.0;
    const LIMIT: f64 = 0.25;
    let _alone = ONE_AT_A_TIME.lock().await;
    let limit = LIMIT.to_string();
    let Fibonacci {
        _dir,
        balancer,
        base,
        supervisor,
        stop_tx,
        stop_rx,
        run,
        first,
    } = one_fibonacci(&[
        ("RUST_LOG", "warn"),
        ("CPU_LIMIT", &limit),
        ("FIB_CACHE_BYTES", "0"),
        ("FIB_MAX_N", "1000000"),
    ])
    .await;

    // A replica should serve about 60 req/s at its quarter core: enough requests a
    // second for the policy to learn from a light load, few enough for this generator.
    let http = client();
    let (n, cost) = calibrate(&http, &first, LIMIT / 60.0).await;
    let capacity = LIMIT / cost;
    let config = LittlesConfig {
        slo_p99_ms: SLO_MS,
        ..LittlesConfig::new(Bounds { min: 1, max: 6 })
    };
    // Light: 40% of a replica. The step: 2.5 replicas' worth at the utilization the
    // policy sizes for, in the middle of the load that three replicas serve.
    let light = (0.4 * capacity).round() as u64;
    let step = (2.5 * capacity * config.utilization(capacity)).round() as u64;
    let needed = config.replicas_for(step as f64, capacity);
    assert_eq!(needed, 3, "the step is sized for three replicas");
    println!(
        "one replica: {capacity:.1} req/s at its quarter core; light load {light} req/s, \
         step to {step} req/s ({needed} replicas at {:.0}% each)",
        100.0 * config.utilization(capacity)
    );
    let autoscaler = tokio::spawn(scaler::autoscale::run(
        supervisor.clone(),
        Box::new(Littles::new(config)),
        stop_rx,
    ));

    // Warm-up: the policy learns a replica's capacity from the light load.
    let rate = Arc::new(std::sync::atomic::AtomicU64::new(light));
    let samples: Samples = Arc::default();
    open_model(
        format!("{base}/fibonacci?n={n}"),
        rate.clone(),
        samples.clone(),
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        supervisor.desired.load(Ordering::SeqCst),
        1,
        "light load keeps 1"
    );

    // The step.
    rate.store(step, Ordering::Relaxed);
    let stepped = Instant::now();
    wait_until("three ready replicas", Duration::from_secs(10), || {
        balancer.pool.alive().len() >= 3
    })
    .await;
    let reached = stepped.elapsed();
    println!(
        "3 ready replicas {:.2} s after the step",
        reached.as_secs_f64()
    );

    // Held for 30 s: never below 3.
    let hold = Instant::now();
    let mut most = 0;
    while hold.elapsed() < Duration::from_secs(30) {
        let desired = supervisor.desired.load(Ordering::SeqCst);
        assert!(desired >= 3, "scaled down to {desired} while the load held");
        most = most.max(desired);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held_from = hold + Duration::from_secs(15);
    let (p99, count, failed) = {
        let samples = samples.lock().expect("samples");
        let mut late: Vec<Duration> = samples
            .iter()
            .filter(|(sent, _, _)| *sent >= held_from)
            .map(|(_, latency, _)| *latency)
            .collect();
        late.sort();
        let failed = samples.iter().filter(|(_, _, s)| *s != 200).count();
        (late[late.len() * 99 / 100], late.len(), failed)
    };
    println!(
        "held at {most} replicas; p99 of the last 15 s {:.0} ms over {count} requests (SLO {SLO_MS} ms)",
        p99.as_secs_f64() * 1000.0
    );
    assert!(
        p99.as_secs_f64() * 1000.0 < SLO_MS,
        "p99 {p99:?} over the SLO"
    );
    assert!(most <= 4, "over-scaled to {most} for a load sized for 3");
    assert_eq!(failed, 0, "every request answered 200");

    // The load stops: back to the minimum, only downwards.
    rate.store(0, Ordering::Relaxed);
    let stopped = Instant::now();
    let mut last = supervisor.desired.load(Ordering::SeqCst);
    while last > 1 {
        assert!(
            stopped.elapsed() < Duration::from_secs(90),
            "still {last} replicas 90 s after the load stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = supervisor.desired.load(Ordering::SeqCst);
        assert!(now <= last, "scaled up from {last} to {now} with no load");
        last = now;
    }
    println!(
        "back to 1 replica {:.1} s after the load stopped",
        stopped.elapsed().as_secs_f64()
    );
    let decisions: Vec<String> = balancer
        .events
        .recent()
        .into_iter()
        .filter(|e| e.kind == Kind::Scaled)
        .map(|e| e.detail)
        .collect();
    println!("decisions: {decisions:#?}");
    let _ = stop_tx.send(true);
    autoscaler.await.expect("autoscaler");
    run.await.expect("supervisor");
}
