//! `loader data`: seeds the platform from the course CSVs (or generated rows) through
//! the gateway's `/load`, with the rows' own UUIDs, so a second run changes nothing.
//!
//! The course format, exactly: `users.csv` (`fname,lname,email,UUID`), `music.csv`
//! (`Artist,SongTitle,UUID`), `playlist.csv` (`Name,Playlist,UUID`, where Playlist is
//! a quoted comma-separated list of music ids). A malformed row is reported as
//! `file:line: reason` and skipped; the run goes on and exits non-zero at the end.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use futures_util::StreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Folder with users.csv, music.csv and playlist.csv.
    #[arg(default_value = "gatling/resources")]
    pub dir: PathBuf,

    /// Generate rows instead of reading files: `users=N,music=M,playlists=K`.
    #[arg(long, value_parser = parse_generate)]
    pub generate: Option<Generate>,

    /// Seed of the generated rows (the same seed makes the same rows).
    #[arg(long, default_value_t = 756)]
    pub seed: u64,

    /// The gateway.
    #[arg(long, env = "DATASTORE_URL", default_value = "http://127.0.0.1:30002")]
    pub datastore_url: String,

    /// The gateway's SVC_LOADER_TOKEN.
    #[arg(
        long,
        env = "SVC_LOADER_TOKEN",
        hide_env_values = true,
        required_unless_present = "loader_token_file"
    )]
    pub loader_token: Option<String>,

    /// A file holding it instead (a mounted secret).
    #[arg(long, env = "SVC_LOADER_TOKEN_FILE", conflicts_with = "loader_token")]
    pub loader_token_file: Option<std::path::PathBuf>,

    /// Writes in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generate {
    pub users: usize,
    pub music: usize,
    pub playlists: usize,
}

fn parse_generate(text: &str) -> Result<Generate, String> {
    let mut g = Generate {
        users: 0,
        music: 0,
        playlists: 0,
    };
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected name=count"))?;
        let n: usize = value
            .trim()
            .parse()
            .map_err(|_| format!("`{value}` is not a count"))?;
        match key.trim() {
            "users" => g.users = n,
            "music" => g.music = n,
            "playlists" => g.playlists = n,
            other => return Err(format!("unknown table `{other}` (users, music, playlists)")),
        }
    }
    if g.playlists > 0 && g.music == 0 {
        return Err("playlists need music to refer to".to_owned());
    }
    Ok(g)
}

/// One row to load, or why it cannot be.
#[derive(Debug, Clone)]
pub struct Row {
    pub objtype: &'static str,
    /// `file:line` or `generated #n`.
    pub origin: String,
    pub body: Result<Value, String>,
}

/// Reads the three CSVs; a file that does not exist is an error, a bad row is a row
/// with its reason.
pub fn read_course_files(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for table in TABLES {
        let path = dir.join(table.1);
        let file =
            std::fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        rows.extend(read_table(table, &path.display().to_string(), file)?);
    }
    Ok(rows)
}

/// Which course table a CSV holds: objtype, file name and header.
pub type Table = (&'static str, &'static str, &'static [&'static str]);

/// The course tables, in loading order.
pub const TABLES: [Table; 3] = [
    ("user", "users.csv", &["fname", "lname", "email", "UUID"]),
    ("music", "music.csv", &["Artist", "SongTitle", "UUID"]),
    ("playlist", "playlist.csv", &["Name", "Playlist", "UUID"]),
];

/// Reads one course CSV named `name` (in messages): a wrong header is an error, a bad
/// row is a row with its reason.
pub fn read_table(
    (objtype, _, header): Table,
    name: &str,
    input: impl std::io::Read,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let found: Vec<String> = reader
        .headers()
        .with_context(|| format!("reading {name}"))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    anyhow::ensure!(
        found == header,
        "{name}: header is `{}`, expected `{}`",
        found.join(","),
        header.join(",")
    );
    for (i, record) in reader.records().enumerate() {
        let origin = format!(
            "{name}:{}",
            record
                .as_ref()
                .ok()
                .and_then(|r| r.position())
                .map_or(i + 2, |p| p.line() as usize)
        );
        let body = match record {
            Err(e) => Err(format!("unreadable CSV: {e}")),
            Ok(r) if r.len() != header.len() => Err(format!(
                "{} fields, expected {} ({})",
                r.len(),
                header.len(),
                header.join(",")
            )),
            Ok(r) => row_body(objtype, header, &r),
        };
        rows.push(Row {
            objtype,
            origin,
            body,
        });
    }
    Ok(rows)
}

fn row_body(objtype: &str, header: &[&str], record: &csv::StringRecord) -> Result<Value, String> {
    let mut body = Map::new();
    body.insert("objtype".into(), json!(objtype));
    for (name, value) in header.iter().zip(record.iter()) {
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("`{name}` is empty"));
        }
        match *name {
            "UUID" => {
                uuid::Uuid::parse_str(value).map_err(|_| format!("`{value}` is not a UUID"))?;
                body.insert("uuid".into(), json!(value));
            }
            "Playlist" => {
                let ids: Vec<&str> = value.split(',').map(str::trim).collect();
                if let Some(bad) = ids.iter().find(|id| uuid::Uuid::parse_str(id).is_err()) {
                    return Err(format!("Playlist holds `{bad}`, which is not a music UUID"));
                }
                body.insert("Playlist".into(), json!(ids));
            }
            "email" if !value.contains('@') => {
                return Err(format!("`{value}` is not an email address"));
            }
            other => {
                body.insert(other.to_owned(), json!(value));
            }
        }
    }
    Ok(Value::Object(body))
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Radia", "Ken", "Margaret",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Knuth", "Perlman", "Thompson",
    "Hamilton",
];
const ARTISTS: &[&str] = &[
    "Taylor Swift",
    "Backxwash",
    "Sini Sabotage",
    "William Prince",
    "Talking Heads",
    "Cat Power",
];
const WORDS: &[&str] = &[
    "Blue", "Monday", "Heaven", "River", "Dynasty", "Juju", "Planet", "Night", "Golden", "Echo",
];

/// Deterministic synthetic rows: the same seed gives the same rows (and UUIDs).
pub fn generate(g: Generate, seed: u64) -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(seed);
    let uuid = |rng: &mut StdRng| {
        uuid::Builder::from_random_bytes(rng.random())
            .into_uuid()
            .to_string()
    };
    let mut rows = Vec::with_capacity(g.users + g.music + g.playlists);
    for i in 0..g.users {
        let body = json!({
            "objtype": "user", "uuid": uuid(&mut rng),
            "fname": FIRST[rng.random_range(0..FIRST.len())], "lname": LAST[rng.random_range(0..LAST.len())],
            "email": format!("user{i}.{seed}@example.org"),
        });
        rows.push(Row {
            objtype: "user",
            origin: format!("generated user #{i}"),
            body: Ok(body),
        });
    }
    let mut songs = Vec::with_capacity(g.music);
    for i in 0..g.music {
        let id = uuid(&mut rng);
        let title = format!(
            "{} {}",
            WORDS[rng.random_range(0..WORDS.len())],
            WORDS[rng.random_range(0..WORDS.len())]
        );
        let body = json!({"objtype": "music", "uuid": id, "Artist": ARTISTS[rng.random_range(0..ARTISTS.len())], "SongTitle": title});
        songs.push(id);
        rows.push(Row {
            objtype: "music",
            origin: format!("generated music #{i}"),
            body: Ok(body),
        });
    }
    for i in 0..g.playlists {
        let n = rng.random_range(1..=songs.len().min(5));
        let mut picked: Vec<&String> = Vec::with_capacity(n);
        while picked.len() < n {
            let song = &songs[rng.random_range(0..songs.len())];
            if !picked.contains(&song) {
                picked.push(song);
            }
        }
        let body = json!({"objtype": "playlist", "uuid": uuid(&mut rng), "Name": format!("Mix {i}"), "Playlist": picked});
        rows.push(Row {
            objtype: "playlist",
            origin: format!("generated playlist #{i}"),
            body: Ok(body),
        });
    }
    rows
}

/// Per table: loaded (created or replaced), unchanged, failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub loaded: usize,
    pub unchanged: usize,
    pub failed: usize,
}

/// Loads `rows` and prints progress, each failure, and a summary. Returns the tallies.
pub async fn load(
    args: &DataArgs,
    rows: Vec<Row>,
) -> anyhow::Result<BTreeMap<&'static str, Tally>> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!(
        "{}/api/v1/datastore/load",
        args.datastore_url.trim_end_matches('/')
    );
    let mut token = args.loader_token.clone();
    kit::config::read_secret(&mut token, args.loader_token_file.as_deref())
        .map_err(anyhow::Error::msg)?;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("svc-loader:{}", token.unwrap_or_default()))
    );
    let total = rows.len();
    let done = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(progress(done.clone(), total));
    let outcomes: Vec<(&'static str, String, Result<String, String>)> =
        futures_util::stream::iter(rows)
            .map(|row| {
                let (http, url, auth, done) =
                    (http.clone(), url.clone(), auth.clone(), done.clone());
                async move {
                    let result = match row.body {
                        Err(reason) => Err(reason),
                        Ok(body) => send(&http, &url, &auth, &body).await,
                    };
                    done.fetch_add(1, Ordering::Relaxed);
                    (row.objtype, row.origin, result)
                }
            })
            .buffered(args.concurrency.max(1))
            .collect()
            .await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprint!("\r{:60}\r", "");
    }
    let mut tallies: BTreeMap<&'static str, Tally> = ["user", "music", "playlist"]
        .into_iter()
        .map(|t| (t, Tally::default()))
        .collect();
    for (objtype, origin, result) in outcomes {
        let tally = tallies.entry(objtype).or_default();
        match result {
            Ok(outcome) if outcome == "unchanged" => tally.unchanged += 1,
            Ok(_) => tally.loaded += 1,
            Err(reason) => {
                tally.failed += 1;
                eprintln!("{origin}: {reason}");
            }
        }
    }
    println!(
        "{:<10} {:>8} {:>10} {:>7}",
        "table", "loaded", "unchanged", "failed"
    );
    for (table, t) in &tallies {
        println!(
            "{table:<10} {:>8} {:>10} {:>7}",
            t.loaded, t.unchanged, t.failed
        );
    }
    Ok(tallies)
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &Value,
) -> Result<String, String> {
    let response = http
        .post(url)
        .header("authorization", auth)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("gateway unreachable: {e}"))?;
    let status = response.status();
    let outcome = response
        .headers()
        .get("x-load-outcome")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("loaded")
        .to_owned();
    if status.is_success() {
        return Ok(outcome);
    }
    let message = response
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    Err(format!("gateway answered {status}: {message}"))
}

async fn progress(done: Arc<AtomicUsize>, total: usize) {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    });
    loop {
        tick.tick().await;
        let n = done.load(Ordering::Relaxed);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let width = 30;
        let filled = (n * width).checked_div(total).unwrap_or(width);
        let line = format!(
            "[{}{}] {n}/{total} rows, {rate:.0}/s",
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        if tty {
            eprint!("\r{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parses_counts() {
        assert_eq!(
            parse_generate("users=10,music=5,playlists=2"),
            Ok(Generate {
                users: 10,
                music: 5,
                playlists: 2
            })
        );
        assert!(parse_generate("songs=1").is_err());
        assert!(parse_generate("users=x").is_err());
        assert!(parse_generate("playlists=3").is_err());
    }

    #[test]
    fn the_same_seed_makes_the_same_rows() {
        let g = Generate {
            users: 20,
            music: 20,
            playlists: 5,
        };
        let a: Vec<String> = generate(g, 1)
            .into_iter()
            .map(|r| r.body.expect("ok").to_string())
            .collect();
        let b: Vec<String> = generate(g, 1)
            .into_iter()
            .map(|r| r.body.expect("ok").to_string())
            .collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 45);
    }
}
