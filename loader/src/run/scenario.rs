//! Scenario files (TOML, in `gatling/scenarios/`): where to send, what, how often, and
//! how many users. `${env.NAME:-default}` is replaced from the environment before the
//! file is read (the course scripts pass `USERS` that way); `${field}` in a path or a
//! header is filled from the user's feeder row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A CSV feeder (course format, first line the header) and how rows are handed out.
    #[serde(default)]
    pub feeder: Option<Feeder>,
    /// The chain each user runs, in order, then thinks, then starts again.
    pub requests: Vec<Step>,
    #[serde(default)]
    pub think: Think,
    pub injection: Injection,
    /// Loop the chain until the run's duration ends (the course's `forever`).
    #[serde(default)]
    pub forever: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feeder {
    pub file: PathBuf,
    #[serde(default)]
    pub mode: FeederMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeederMode {
    #[default]
    Circular,
    Random,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    #[serde(default = "get")]
    pub method: String,
    /// Which `--service NAME=URL` this goes to; the base URL otherwise.
    #[serde(default)]
    pub service: Option<String>,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "ok")]
    pub expect: u16,
}

fn get() -> String {
    "GET".to_owned()
}

fn ok() -> u16 {
    200
}

/// Pause between iterations: fixed (`"1s"`) or uniform in a range (`["1s", "60s"]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Think {
    #[default]
    None,
    Fixed(String),
    Range(String, String),
}

impl Think {
    pub fn bounds(&self) -> anyhow::Result<(Duration, Duration)> {
        let d = |t: &str| kit::config::parse_duration(t).map_err(anyhow::Error::msg);
        Ok(match self {
            Self::None => (Duration::ZERO, Duration::ZERO),
            Self::Fixed(t) => (d(t)?, d(t)?),
            Self::Range(a, b) => (d(a)?, d(b)?),
        })
    }
}

/// How users (closed model) or requests (open model) arrive.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Injection {
    /// Gatling's atOnceUsers.
    AtOnce { users: u64 },
    /// Gatling's rampUsers: `users` start evenly over `over`.
    Ramp { users: u64, over: String },
    /// Gatling's rampConcurrentUsers: the number of active users moves from `from` to
    /// `to` over `over`, or over `over_per_user` x `to` (the course's 10 s x USERS).
    RampConcurrent {
        from: u64,
        to: u64,
        #[serde(default)]
        over: Option<String>,
        #[serde(default)]
        over_per_user: Option<String>,
    },
    /// Held steps of concurrent users: `[[users, "hold"], ...]`.
    Steps { steps: Vec<(u64, String)> },
    /// Open model: chains started at a constant rate, whatever the answers (latency is
    /// measured from each request's intended start: coordinated omission corrected).
    ConstantRate { per_second: f64, during: String },
}

impl Injection {
    /// The most users active at once; for the open model, a guess (a second's
    /// arrivals) since its concurrency follows the answers.
    pub fn peak_users(&self) -> u64 {
        match self {
            Self::AtOnce { users } | Self::Ramp { users, .. } => *users,
            Self::RampConcurrent { from, to, .. } => (*from).max(*to),
            Self::Steps { steps } => steps.iter().map(|(users, _)| *users).max().unwrap_or(0),
            Self::ConstantRate { per_second, .. } => per_second.ceil().clamp(0.0, 10_000.0) as u64,
        }
    }
}

/// The number of active users a closed-model injection wants at `t` seconds (scaled
/// time); `None` once it has ended.
pub type Profile = Box<dyn Fn(f64) -> Option<i64> + Send>;

/// A scenario duration (`"10s"`) compressed by the run's time scale; one too long to
/// represent is an error.
pub fn scaled(text: &str, scale: f64) -> anyhow::Result<Duration> {
    let d = kit::config::parse_duration(text).map_err(anyhow::Error::msg)?;
    compress(d, scale).with_context(|| format!("`{text}` at time scale {scale} is too long"))
}

/// `d` divided by the time scale, `None` when that overflows.
pub fn compress(d: Duration, scale: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(d.as_secs_f64() / scale.max(1e-6)).ok()
}

impl Injection {
    /// The closed model's user profile at time scale `scale`. The open model
    /// (`constant_rate`) has none: the engine paces its arrivals itself.
    pub fn profile(&self, scale: f64) -> anyhow::Result<Profile> {
        Ok(match self {
            Self::AtOnce { users } => {
                let users = *users as i64;
                Box::new(move |_| Some(users))
            }
            Self::Ramp { users, over } => {
                // Users start evenly over the window; each runs its chain (and loops if forever).
                let over = scaled(over, scale)?.as_secs_f64().max(1e-3);
                let users = *users as f64;
                Box::new(move |t| Some(((t / over).min(1.0) * users).ceil() as i64))
            }
            Self::RampConcurrent {
                from,
                to,
                over,
                over_per_user,
            } => {
                let over = match (over, over_per_user) {
                    (Some(over), _) => scaled(over, scale)?,
                    (None, Some(each)) => u32::try_from((*to).max(1))
                        .ok()
                        .and_then(|to| scaled(each, scale).ok()?.checked_mul(to))
                        .context("`over_per_user` times `to` is too long")?,
                    (None, None) => {
                        anyhow::bail!("ramp_concurrent needs `over` or `over_per_user`")
                    }
                };
                let over = over.as_secs_f64().max(1e-3);
                let (from, to) = (*from as f64, *to as f64);
                Box::new(move |t| Some((from + (to - from) * (t / over).min(1.0)).round() as i64))
            }
            Self::Steps { steps } => {
                let mut ends = Vec::new();
                let mut at = 0.0;
                for (users, hold) in steps {
                    at += scaled(hold, scale)?.as_secs_f64();
                    ends.push((at, *users as i64));
                }
                Box::new(move |t| ends.iter().find(|(end, _)| t < *end).map(|(_, u)| *u))
            }
            Self::ConstantRate { .. } => {
                anyhow::bail!("constant_rate is an open model: it has no user profile")
            }
        })
    }
}

impl Scenario {
    /// Reads a scenario from its TOML text (after `${env.…}` substitution): its
    /// durations and injection are checked here, so a bad file fails before a run.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let scenario: Scenario = toml::from_str(&substitute_env(text))?;
        anyhow::ensure!(!scenario.requests.is_empty(), "no requests");
        scenario.think.bounds()?;
        match &scenario.injection {
            Injection::ConstantRate { per_second, during } => {
                anyhow::ensure!(*per_second > 0.0, "per_second must be positive");
                scaled(during, 1.0)?;
            }
            closed => {
                drop(closed.profile(1.0)?);
            }
        }
        Ok(scenario)
    }

    /// A name in `gatling/scenarios/` (with or without `.toml`), or a path.
    pub fn load(name: &str, dirs: &[PathBuf]) -> anyhow::Result<(Self, PathBuf)> {
        let direct = Path::new(name);
        let path = if direct.is_file() {
            direct.to_path_buf()
        } else {
            let file = if name.ends_with(".toml") {
                name.to_owned()
            } else {
                format!("{name}.toml")
            };
            dirs.iter()
                .map(|d| d.join(&file))
                .find(|p| p.is_file())
                .with_context(|| {
                    let known: Vec<String> = dirs
                        .iter()
                        .filter_map(|d| std::fs::read_dir(d).ok())
                        .flatten()
                        .filter_map(|e| {
                            e.ok()?
                                .file_name()
                                .to_str()?
                                .strip_suffix(".toml")
                                .map(str::to_owned)
                        })
                        .collect();
                    format!("no scenario `{name}` (known: {})", known.join(", "))
                })?
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let scenario = Self::parse(&text)
            .with_context(|| format!("{}: not a valid scenario", path.display()))?;
        Ok((scenario, path))
    }
}

/// Replaces `${env.NAME:-default}` (or `${env.NAME}`) with the environment's value.
pub fn substitute_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${env.") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 6..start + end];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(&std::env::var(name).unwrap_or_else(|_| default.to_owned()));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Fills `${field}` from a feeder row.
pub fn fill(template: &str, row: &BTreeMap<String, String>) -> String {
    let mut out = template.to_owned();
    for (k, v) in row {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_feeder_placeholders_are_filled() {
        assert_eq!(
            substitute_env("users = ${env.SCALELAB_TEST_UNSET:-50}"),
            "users = 50"
        );
        let row = BTreeMap::from([("UUID".to_owned(), "abc".to_owned())]);
        assert_eq!(fill("/api/v1/music/${UUID}", &row), "/api/v1/music/abc");
    }

    /// Found while fuzzing scenarios: durations too long once multiplied or compressed
    /// by the time scale panicked (`Duration` overflow) instead of failing the file.
    #[test]
    fn durations_that_overflow_are_errors_not_panics() {
        let text = |injection: &str| {
            format!(
                "name = \"x\"\ninjection = {injection}\n[[requests]]\nname = \"r\"\npath = \"/\"\n"
            )
        };
        let per_user = text(
            r#"{ kind = "ramp_concurrent", from = 0, to = 4294967295, over_per_user = "10000000000s" }"#,
        );
        assert!(Scenario::parse(&per_user).is_err());
        let long = text(r#"{ kind = "ramp", users = 1, over = "20000000000000s" }"#);
        let scenario = Scenario::parse(&long).expect("fits at time scale 1");
        assert!(scenario.injection.profile(1e-9).is_err());
        assert!(scaled("20000000000000s", 1e-9).is_err());
    }

    #[test]
    fn every_shipped_scenario_parses() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../gatling/scenarios"));
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .replace(".toml", "");
            Scenario::load(&name, std::slice::from_ref(&dir))
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            n += 1;
        }
        assert!(n >= 10, "{n} scenarios");
    }
}
