//! The data path's threads: one single-threaded tokio runtime per core, as nginx runs
//! one worker process per core.
//!
//! A connection is accepted where the proxy's server runs (the scaler's main runtime,
//! which keeps the connection cap and the graceful drain) and handed whole to one worker,
//! round robin. From then on its reads and writes, its timers and the replica
//! connections it uses (kept per worker, see [`super::upstream::Idle`]) are driven by that
//! worker's thread alone: a request never wakes another thread, and a work-stealing
//! scheduler's wake-ups of idle threads, which showed in the tail at 50 connections
//! (ci/bench-balancer.sh), are gone.
//!
//! The default is half the cores available, rounded up (one on 2 cores): the proxy
//! shares its machine with the replicas it balances (`scaler up`, Compose), and a
//! second thread there bought throughput at 500 connections but lost p99 at 50 to the
//! replicas and the load generator (ci/bench-balancer.sh, issue 18's notes).
//! `SCALER_PROXY_WORKERS` sets another count (1 to 256).

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

thread_local! {
    /// This thread's worker index, if it is one of the workers.
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The workers: started on first use, for the life of the process.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

/// The process's workers.
pub fn get() -> &'static Workers {
    static WORKERS: OnceLock<Workers> = OnceLock::new();
    WORKERS.get_or_init(|| Workers::start(count()))
}

/// How many workers the process runs.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        crate::pool::count_from_env("SCALER_PROXY_WORKERS", 256).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| usize::from(n).div_ceil(2))
        })
    })
}

/// The worker this thread is (`0..count()`), or `count()` on any other thread: an index
/// into per-worker state with one slot more than there are workers.
pub fn current() -> usize {
    INDEX.with(Cell::get).unwrap_or_else(count)
}

impl Workers {
    fn start(n: usize) -> Self {
        let handles = (0..n)
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a proxy worker's runtime");
                let handle = runtime.handle().clone();
                std::thread::Builder::new()
                    .name(format!("proxy-{index}"))
                    .spawn(move || {
                        INDEX.with(|i| i.set(Some(index)));
                        runtime.block_on(std::future::pending::<()>());
                    })
                    .expect("a proxy worker's thread");
                handle
            })
            .collect();
        Self {
            handles,
            next: AtomicUsize::new(0),
        }
    }

    /// Runs `task` on the next worker. Dropping the returned handle aborts the task.
    pub fn spawn<F>(&self, task: F) -> AbortOnDrop
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        AbortOnDrop(self.handles[i].spawn(task))
    }
}

/// A worker's task, aborted when this is dropped (so that a drain that runs out of grace
/// ends the connections it gave up on, as it does its own tasks).
pub struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    /// Waits for the task to end.
    pub async fn finished(&mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
