//! Passwords are stored only as Argon2id hashes (PHC strings). Each hash takes tens of
//! milliseconds of CPU and 19 MiB of memory on purpose, so they run on a few worker
//! threads of their own, each reusing one memory block for every hash: however many
//! logins arrive at once, the service holds at most `workers` blocks, a short queue
//! waits, and the rest are answered 503 with `Retry-After`. Repeated failures for one
//! user are throttled (429) before any hashing.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use kit::ApiError;

/// Most hashing threads, whatever the core count: each holds a 19 MiB block.
const MAX_WORKERS: usize = 4;
/// Hashes that may wait for a worker, per worker, before new ones are refused.
const QUEUE_PER_WORKER: usize = 8;

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing workers. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    jobs: SyncSender<Job>,
    workers: usize,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// About one worker per core (at most [`MAX_WORKERS`]).
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_workers(cores.clamp(1, MAX_WORKERS))
    }

    pub fn with_workers(workers: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(workers * QUEUE_PER_WORKER);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password worker");
            }
        }
        Self { jobs, workers }
    }

    /// Runs `job` on a worker with its memory block; 503 when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(job(memory));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::unavailable(
                    "too many password checks at once; retry shortly",
                )
                .retry_after(1));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::internal("the password workers have stopped"));
            }
        }
        rx.await
            .map_err(|_| ApiError::internal("a password worker dropped its job"))
    }

    /// The PHC string of a new Argon2id hash of `password` with a random salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |memory| {
            // 16 random bytes from the OS (a v4 UUID's randomness) as the salt.
            let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())?;
            let params = Params::default();
            let mut salt_bytes = [0u8; 64];
            let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
            let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
            compute(
                Algorithm::Argon2id,
                Version::V0x13,
                params.clone(),
                password.as_bytes(),
                salt_bytes,
                &mut out,
                memory,
            )?;
            let phc = PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: (&params).try_into()?,
                salt: Some(salt.as_salt()),
                hash: Some(Output::new(&out)?),
            };
            Ok::<_, argon2::password_hash::Error>(phc.to_string())
        })
        .await?
        .map_err(ApiError::internal)
    }

    /// Whether `password` matches the stored PHC `hash` (constant-time comparison).
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, ApiError> {
        self.run(move |memory| {
            let parsed = PasswordHash::new(&hash)?;
            let algorithm = Algorithm::try_from(parsed.algorithm)?;
            let version = parsed
                .version
                .map(Version::try_from)
                .transpose()?
                .unwrap_or_default();
            let params = Params::try_from(&parsed)?;
            let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
                return Err(argon2::password_hash::Error::PhcStringField);
            };
            let mut salt_bytes = [0u8; 64];
            let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
            let mut out = vec![0u8; expected.len()];
            compute(
                algorithm,
                version,
                params,
                password.as_bytes(),
                salt_bytes,
                &mut out,
                memory,
            )?;
            Ok(Output::new(&out)? == expected)
        })
        .await?
        .map_err(ApiError::internal)
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

/// One worker: takes jobs until the service stops, with one memory block for all.
fn work(queue: &Mutex<Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

/// Argon2 into `out`, in `memory` (grown to the parameters' size once, then reused).
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if memory.len() < blocks {
        // Only hashes stored with larger parameters than ours grow the block.
        memory.resize(blocks, Block::default());
    }
    Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        out,
        &mut memory[..blocks],
    )
}

/// Failed logins allowed for one user within [`FAILURE_WINDOW`] before 429.
pub const MAX_FAILURES: u32 = 5;
/// How long failures count, from the first of them.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Users whose failures this replica remembers at most.
const THROTTLE_CAPACITY: usize = 100_000;

/// Counts failed logins per user id on this replica: after [`MAX_FAILURES`] within
/// [`FAILURE_WINDOW`], further attempts get 429 until the window ends. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    failures: Arc<Mutex<HashMap<String, (u32, Instant)>>>,
}

impl Throttle {
    /// 429 with `Retry-After` when `uid` has failed too often lately.
    pub fn check(&self, uid: &str) -> Result<(), ApiError> {
        let map = self.lock();
        if let Some(&(count, since)) = map.get(uid) {
            let elapsed = since.elapsed();
            if count >= MAX_FAILURES && elapsed < FAILURE_WINDOW {
                let wait = (FAILURE_WINDOW - elapsed).as_secs().max(1);
                return Err(ApiError::too_many_requests(format!(
                    "too many failed logins for this user; retry in {wait} s"
                ))
                .retry_after(wait));
            }
        }
        Ok(())
    }

    pub fn failed(&self, uid: &str) {
        let mut map = self.lock();
        if map.len() >= THROTTLE_CAPACITY && !map.contains_key(uid) {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if map.len() >= THROTTLE_CAPACITY {
                map.clear();
            }
        }
        let entry = map.entry(uid.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = Hasher::with_workers(1);
        let hash = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(
            hasher
                .verify("correct horse".into(), hash.clone())
                .await
                .expect("verify")
        );
        assert!(!hasher.verify("wrong".into(), hash).await.expect("verify"));
    }

    #[tokio::test]
    async fn hashes_of_the_argon2_crate_verify_here_and_ours_there() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .expect("hash")
            .to_string();
        let hasher = Hasher::with_workers(1);
        assert!(
            hasher
                .verify("battery staple".into(), theirs)
                .await
                .expect("verify")
        );
        let ours = hasher.hash("battery staple".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(
            Argon2::default()
                .verify_password(b"battery staple", &parsed)
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_503_with_retry_after() {
        let hasher = Hasher::with_workers(1);
        // Hold the only worker, then fill its queue.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let first = hasher.clone();
        let busy = tokio::spawn(async move {
            first
                .run(move |_| {
                    let _ = started_tx.send(());
                    let _ = hold.recv();
                })
                .await
        });
        started.await.expect("the worker took the first job");
        let mut answers = Vec::new();
        for _ in 0..QUEUE_PER_WORKER + 3 {
            let hasher = hasher.clone();
            answers.push(tokio::spawn(async move { hasher.run(|_| ()).await }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = release.send(());
        busy.await.expect("join").expect("the first job ran");
        let mut refused = 0;
        for answer in answers {
            if let Err(e) = answer.await.expect("join") {
                assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
                refused += 1;
            }
        }
        assert!(refused >= 2, "{refused} refused");
    }

    #[test]
    fn repeated_failures_are_throttled_until_a_success() {
        let throttle = Throttle::default();
        for _ in 0..MAX_FAILURES {
            assert!(throttle.check("u").is_ok());
            throttle.failed("u");
        }
        let refused = throttle.check("u").expect_err("throttled");
        assert_eq!(refused.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(throttle.check("someone else").is_ok());
        throttle.succeeded("u");
        assert!(throttle.check("u").is_ok());
    }
}
