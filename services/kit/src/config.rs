//! Config helpers and the flags every service shares (DESIGN.md §8).
//!
//! Each binary derives its own clap `Parser` with its `--listen` default and flattens
//! [`ServerArgs`] into it. Values are parsed once at start; a bad one is a one-line
//! clap error and exit code 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags shared by every HTTP service.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Longest a request may take before it is answered with 504 (e.g. `30s`, `500ms`).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long in-flight requests may finish after SIGTERM/SIGINT before the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Longest a client may take to send a request's headers, from its connection
    /// opening or its first byte after an idle keep-alive wait; then the connection
    /// closes (slowloris).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Longest a keep-alive connection may wait, idle, for its next request before it
    /// is closed.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Largest request line plus headers, in bytes (at least 8192): the most a
    /// connection buffers for a request it has not finished sending. Above it the
    /// answer is 431 (414 for a request line alone).
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 64 * 1024, value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,

    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Log format: `text` for people, `json` for machines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Cores this replica may use (e.g. `0.5`), enforced in the process like a
    /// container's CPU limit: over budget, new requests wait. Unset: no limit.
    #[arg(long, env = "CPU_LIMIT", value_parser = crate::cpu_limit::parse_cores)]
    pub cpu_limit: Option<f64>,

    /// Fault injection, as a service mesh's delay fault: hold `FAULT_DELAY_PERCENT` of
    /// the service's own requests (never the probes or `/metrics`) this long before
    /// handling them (e.g. `600ms`). `0s`, the default: no delay.
    #[arg(long, env = "FAULT_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub fault_delay: Duration,

    /// Percentage of requests `FAULT_DELAY` holds (0 to 100).
    #[arg(long, env = "FAULT_DELAY_PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub fault_delay_percent: u8,

    /// Probe the instance that listens on the same address (`GET /health`) and exit:
    /// 0 when it answers 200, 1 otherwise. For container health checks (the images
    /// have no shell or curl).
    #[arg(long)]
    pub healthcheck: bool,
}

impl ServerArgs {
    /// With `--healthcheck`: probes `listen` and exits with the answer. Otherwise returns.
    pub fn healthcheck_and_exit(&self, listen: SocketAddr) {
        if self.healthcheck {
            std::process::exit(crate::health::probe(listen, "/health"));
        }
    }
}

impl Default for ServerArgs {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            log_format: "text".to_owned(),
            cpu_limit: None,
            fault_delay: Duration::ZERO,
            fault_delay_percent: 100,
            healthcheck: false,
        }
    }
}

/// The shortest JWT secret accepted, in bytes: HS256's key should be at least as long
/// as its 256-bit output (RFC 7518 §3.2).
pub const MIN_JWT_SECRET: usize = 32;

/// Flags of the services that keep data in the gateway and authenticate callers
/// (user, music, playlist).
#[derive(Debug, Clone, clap::Args)]
pub struct AppArgs {
    /// Base URL of the database gateway.
    #[arg(long, env = "DATASTORE_URL", default_value = "http://127.0.0.1:30002")]
    pub datastore_url: String,

    /// Bearer token for the gateway (its DATASTORE_TOKEN); unset sends none.
    #[arg(long, env = "DATASTORE_TOKEN", hide_env_values = true)]
    pub datastore_token: Option<String>,

    /// `jwt` (verify tokens from /api/v1/user/login) or `presence` (any Authorization
    /// header, as the course services did).
    #[arg(long, env = "AUTH_MODE", value_enum, default_value = "jwt")]
    pub auth_mode: crate::auth::AuthMode,

    /// HS256 key of the tokens; required in `jwt` mode, the same for every service.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// A file holding the JWT secret instead (a mounted secret).
    #[arg(long, env = "JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,

    /// A file holding the gateway's token instead.
    #[arg(long, env = "DATASTORE_TOKEN_FILE", conflicts_with = "datastore_token")]
    pub datastore_token_file: Option<PathBuf>,

    /// Lifetime of issued tokens (e.g. `1h`, `30m`).
    #[arg(long, env = "JWT_TTL", default_value = "1h", value_parser = parse_duration)]
    pub jwt_ttl: Duration,
}

impl AppArgs {
    /// Reads the secrets given as files (`JWT_SECRET_FILE`, `DATASTORE_TOKEN_FILE`) into
    /// their values, then checks what clap cannot: a JWT secret in `jwt` mode. The
    /// error is one line.
    pub fn validate(&mut self) -> Result<(), String> {
        read_secret(&mut self.jwt_secret, self.jwt_secret_file.as_deref())?;
        read_secret(
            &mut self.datastore_token,
            self.datastore_token_file.as_deref(),
        )?;
        if self.auth_mode == crate::auth::AuthMode::Jwt {
            let length = self.jwt_secret.as_deref().map_or(0, str::len);
            if length == 0 {
                return Err("--jwt-secret / JWT_SECRET is required when AUTH_MODE=jwt (or set AUTH_MODE=presence)".to_owned());
            }
            if length < MIN_JWT_SECRET {
                return Err(format!(
                    "JWT_SECRET is {length} bytes; an HS256 key needs at least {MIN_JWT_SECRET} (e.g. `openssl rand -hex 32`)"
                ));
            }
        }
        if self.datastore_token.as_deref() == Some("") {
            return Err(
                "DATASTORE_TOKEN is empty: give the gateway's token or leave it unset".to_owned(),
            );
        }
        Ok(())
    }

    /// The gateway client and the authenticator these flags describe.
    pub fn connect(&self) -> anyhow::Result<(crate::datastore::Datastore, crate::auth::Auth)> {
        let datastore =
            crate::datastore::Datastore::new(&self.datastore_url, self.datastore_token.clone())?;
        let secret = self.jwt_secret.as_deref().unwrap_or_default().as_bytes();
        let auth = crate::auth::Auth::new(
            self.auth_mode,
            secret,
            self.jwt_ttl,
            Some(datastore.clone()),
        );
        Ok((datastore, auth))
    }
}

/// Fills `value` from `file` when one is given (a secret mounted as a file, as container
/// platforms do; a trailing newline is not part of it). An empty or unreadable file is
/// an error, not "no secret".
pub fn read_secret(value: &mut Option<String>, file: Option<&Path>) -> Result<(), String> {
    let Some(file) = file else {
        return Ok(());
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("reading the secret file {}: {e}", file.display()))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("the secret file {} is empty", file.display()));
    }
    *value = Some(secret.to_owned());
    Ok(())
}

/// Parses a duration written as a number and a unit: `250ms`, `2s`, `1.5s`, `5m`, `1h`.
/// A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 500ms, 2s, 5m)"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

/// The smallest header buffer hyper accepts (it panics below it).
pub const MIN_HEADER_BYTES: usize = 8192;

/// Parses `--max-header-bytes`: a byte count of at least [`MIN_HEADER_BYTES`].
pub fn parse_header_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if bytes < MIN_HEADER_BYTES {
        return Err(format!(
            "{bytes} is below the minimum of {MIN_HEADER_BYTES} bytes"
        ));
    }
    Ok(bytes)
}

/// Parses a listen address, accepting a bare port (`8080`) as `0.0.0.0:8080`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not an address like 0.0.0.0:30002 or a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn header_bytes_below_the_minimum_are_refused() {
        assert_eq!(parse_header_bytes("65536"), Ok(65536));
        assert!(parse_header_bytes("4096").is_err());
        assert!(parse_header_bytes("lots").is_err());
    }

    #[test]
    fn listen_accepts_a_bare_port() {
        assert_eq!(
            parse_listen("30002"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 30002)))
        );
        assert_eq!(
            parse_listen("127.0.0.1:0"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        assert!(parse_listen("localhost:x").is_err());
    }
}
