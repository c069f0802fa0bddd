//! The gateway's command line and environment (DESIGN.md §8).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kit::ServerArgs;
use kit::config::parse_listen;

/// scalelab database gateway: /api/v1/datastore over SQLite or PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "database-gateway", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:30002", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Storage engine: `sqlite://<path>` (created on first start), `sqlite::memory:`,
    /// `postgres://user:password@host:port/database`, or `dynamodb://[table-suffix]`
    /// (tables `User`, `Music`, `Playlist`, each with `-<suffix>` when given).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/datastore.db", value_parser = DatabaseUrl::parse)]
    pub database_url: DatabaseUrl,

    /// A file holding the database URL instead (it carries a password: a mounted secret).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Endpoint of a DynamoDB-compatible server (e.g. http://127.0.0.1:8000); unset
    /// means AWS itself, with the usual AWS environment (region, credentials, profiles).
    #[arg(long, env = "DYNAMODB_URL")]
    pub dynamodb_url: Option<String>,

    /// Bearer token callers must present; unset means no check.
    #[arg(long, env = "DATASTORE_TOKEN", hide_env_values = true)]
    pub datastore_token: Option<String>,

    /// Token of the `/load` route (Basic auth, user `svc-loader`); unset disables `/load`.
    #[arg(long, env = "SVC_LOADER_TOKEN", hide_env_values = true)]
    pub loader_token: Option<String>,

    /// A file holding the bearer token instead (a mounted secret).
    #[arg(long, env = "DATASTORE_TOKEN_FILE", conflicts_with = "datastore_token")]
    pub datastore_token_file: Option<PathBuf>,

    /// A file holding the `/load` token instead.
    #[arg(long, env = "SVC_LOADER_TOKEN_FILE", conflicts_with = "loader_token")]
    pub loader_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
    Dynamodb { suffix: Option<String> },
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "sqlite::memory:" {
            return Ok(Self::Sqlite(PathBuf::from(":memory:")));
        }
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite://data/datastore.db".to_owned(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        if let Some(suffix) = text.strip_prefix("dynamodb://") {
            let valid = suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid || suffix.len() > 200 {
                return Err(format!(
                    "`{suffix}` is not a table suffix: use letters, digits, `-`, `_` and `.`"
                ));
            }
            return Ok(Self::Dynamodb {
                suffix: (!suffix.is_empty()).then(|| suffix.to_owned()),
            });
        }
        let scheme = text.split_once(':').map_or(text, |(s, _)| s);
        Err(format!(
            "unsupported DATABASE_URL scheme `{scheme}`: use sqlite://<path>, postgres://... or dynamodb://[suffix]"
        ))
    }
}

/// Never prints a password.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Dynamodb { suffix } => {
                write!(f, "dynamodb://{}", suffix.as_deref().unwrap_or_default())
            }
            Self::Postgres(url) => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(start), Some(at)) if at > start => {
                        format!("{}://***{}", &url[..start], &url[at..])
                    }
                    _ => url.clone(),
                };
                f.write_str(&shown)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_pick_their_engine() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/x.db"),
            Ok(DatabaseUrl::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db"),
            Ok(DatabaseUrl::Sqlite("/tmp/x.db".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@127.0.0.1/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(DatabaseUrl::parse("mysql://x"), Err(e) if e.contains("unsupported")));
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert_eq!(
            DatabaseUrl::parse("dynamodb://"),
            Ok(DatabaseUrl::Dynamodb { suffix: None })
        );
        assert_eq!(
            DatabaseUrl::parse("dynamodb://ab-12"),
            Ok(DatabaseUrl::Dynamodb {
                suffix: Some("ab-12".into())
            })
        );
        assert!(DatabaseUrl::parse("dynamodb://a b").is_err());
    }

    #[test]
    fn debug_output_hides_the_password() {
        let url = DatabaseUrl::parse("postgres://app:s3cret@db:5432/scalelab").expect("valid url");
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("@db:5432/scalelab"), "{shown}");
    }
}
