//! The command line (contract: `README.md`, "Commands"). One module per subcommand; each returns
//! `Result<(), crate::Error>` and reports through [`crate::output::Output`]; `main.rs` turns the
//! error's class into the exit code.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod apply;
mod check;
mod keygen;
mod plugin;
mod publish;
mod rollback;
mod scaffold;
mod status;
mod verify;

use crate::Error;
use crate::output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "molt",
    version,
    about = "Keeps an install directory at the release its deployment wants"
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new ed25519 key pair: DIR/NAME.key.pem (0600) and DIR/NAME.pub.pem.
    Keygen {
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value = "release")]
        name: String,
    },
    /// Add a release (full package + patches from earlier releases) to a repository and re-sign it.
    Publish(publish::PublishArgs),
    /// Verify the repository, ask the strategy and print the plan; change nothing.
    Check {
        #[command(flatten)]
        common: ConfigArgs,
        /// Plan for this version instead of the strategy's choice.
        #[arg(long)]
        version: Option<String>,
        /// Plan a full install even when a patch exists.
        #[arg(long)]
        force_full: bool,
    },
    /// Bring the install to the release the strategy chooses.
    Apply(apply::ApplyArgs),
    /// Go back to the previous release from the kept backup.
    Rollback {
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Installed version, serial, interrupted transaction, history.
    Status {
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Compare installed files against their recorded hashes.
    Verify {
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show a component's world, WIT version, info(), imports and exports.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Start a plugin: write a standalone crate (SDK dependency, release profile, a passing
    /// unit test, a README) that builds with `cargo build --release --target wasm32-wasip2`.
    New {
        /// The crate's name (lowercase, `-` and `_` allowed).
        name: String,
        #[arg(long, value_enum)]
        kind: scaffold::Kind,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The molt-plugin-sdk crate to depend on (default: the one this molt was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The operator config (molt.toml).
    #[arg(long, short = 'c', env = "MOLT_CONFIG")]
    pub config: PathBuf,
    /// JSON Lines on stdout: events, then one final object.
    #[arg(long)]
    pub json: bool,
}

impl Command {
    pub fn json(&self) -> bool {
        match self {
            Command::Check { common, .. }
            | Command::Rollback { common }
            | Command::Status { common }
            | Command::Verify { common } => common.json,
            Command::Apply(a) => a.common.json,
            Command::Plugin {
                command: PluginCommand::Inspect { json, .. } | PluginCommand::New { json, .. },
            } => *json,
            Command::Keygen { .. } | Command::Publish(_) => false,
        }
    }

    pub fn run(self, out: &Output) -> Result<(), Error> {
        match self {
            Command::Keygen { out_dir, name } => keygen::run(&out_dir, &name, out),
            Command::Publish(args) => publish::run(&args, out),
            Command::Check {
                common,
                version,
                force_full,
            } => check::run(&common, version.as_deref(), force_full, out),
            Command::Apply(args) => apply::run(&args, out),
            Command::Rollback { common } => rollback::run(&common, out),
            Command::Status { common } => status::run(&common, out),
            Command::Verify { common } => verify::run(&common, out),
            Command::Plugin {
                command: PluginCommand::Inspect { file, .. },
            } => plugin::inspect(&file, out),
            Command::Plugin {
                command:
                    PluginCommand::New {
                        name,
                        kind,
                        dir,
                        sdk,
                        ..
                    },
            } => scaffold::run(&name, kind, dir.as_deref(), sdk.as_deref(), out),
        }
    }
}
