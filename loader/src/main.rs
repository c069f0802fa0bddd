//! `loader`: seeds the platform's data and drives load at it. This version loads the
//! course data (or generated rows) and manages the DynamoDB tables of the gateway's
//! `dynamodb://` engine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use database_gateway::store::dynamodb;
use loader::{data, run, sweep};

/// scalelab loader.
#[derive(Debug, Parser)]
#[command(name = "loader", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load users, music and playlists (the course CSVs, or generated rows) through
    /// the gateway's `/load`, with their own UUIDs: a second run changes nothing.
    Data(data::DataArgs),
    /// Lab 02's concurrency sweep: mean / longest / p98 per concurrency, an SLA answer,
    /// and nodes needed for a user count when several targets are given.
    Sweep(sweep::SweepArgs),
    /// Run a scenario (the course's Gatling simulations, the CMPT 756 scaling steps, or
    /// a file of your own) and report a table, results.json and an HTML report.
    Run(run::RunArgs),
    /// Create or delete the DynamoDB tables `User`, `Music` and `Playlist`.
    Tables {
        #[command(subcommand)]
        action: TablesAction,
    },
}

#[derive(Debug, Subcommand)]
enum TablesAction {
    /// Create the three tables (on-demand billing, the `email-index` on `User`, TTL on
    /// `__expires`) and wait until they are active. Existing tables are left alone.
    Create(TablesArgs),
    /// Delete the three tables.
    Delete {
        #[command(flatten)]
        tables: TablesArgs,
        /// Confirm the deletion (the data in the tables is lost).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
struct TablesArgs {
    /// Table-name suffix: tables are `User-<suffix>`, ... (the course's `-<REGID>`).
    #[arg(long, env = "DYNAMODB_TABLE_SUFFIX")]
    suffix: Option<String>,

    /// Endpoint of a DynamoDB-compatible server; unset means AWS with the usual AWS
    /// environment (region, credentials, profiles).
    #[arg(long, env = "DYNAMODB_URL")]
    dynamodb_url: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loader: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let clean = run::run(&args).await?;
            anyhow::ensure!(
                clean,
                "some requests failed or none was sent (see the KO column)"
            );
        }
        Command::Sweep(args) => {
            sweep::sweep(&args).await?;
        }
        Command::Data(args) => {
            let rows = match args.generate {
                Some(g) => data::generate(g, args.seed),
                None => data::read_course_files(&args.dir)?,
            };
            let tallies = data::load(&args, rows).await?;
            let failed: usize = tallies.values().map(|t| t.failed).sum();
            anyhow::ensure!(
                failed == 0,
                "{failed} row(s) failed (listed above); the others were loaded"
            );
        }
        Command::Tables {
            action: TablesAction::Create(args),
        } => {
            let client = dynamodb::client(args.dynamodb_url.as_deref()).await;
            let suffix = args.suffix.as_deref().filter(|s| !s.is_empty());
            let created = dynamodb::create_tables(&client, suffix).await?;
            for objtype in database_gateway::domain::ObjType::ALL {
                let name = dynamodb::table_name(objtype, suffix);
                let state = if created.contains(&name) {
                    "created"
                } else {
                    "already there"
                };
                println!("{name:<24} {state}");
            }
        }
        Command::Tables {
            action: TablesAction::Delete { tables: args, yes },
        } => {
            let suffix = args.suffix.as_deref().filter(|s| !s.is_empty());
            let names: Vec<String> = database_gateway::domain::ObjType::ALL
                .iter()
                .map(|t| dynamodb::table_name(*t, suffix))
                .collect();
            anyhow::ensure!(
                yes,
                "this deletes {} and all their data; add --yes to confirm",
                names.join(", ")
            );
            let client = dynamodb::client(args.dynamodb_url.as_deref()).await;
            let deleted = dynamodb::delete_tables(&client, suffix).await?;
            for name in names {
                let state = if deleted.contains(&name) {
                    "deleted"
                } else {
                    "not there"
                };
                println!("{name:<24} {state}");
            }
        }
    }
    Ok(())
}
