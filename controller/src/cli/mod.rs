//! The `flotilla-controller` command line.

pub mod client;
pub mod join_token;

use crate::config::Overrides;
use clap::{Parser, Subcommand};

/// Flotilla controller: serves the REST API (the default) or manages API
/// clients.
#[derive(Debug, Parser)]
#[command(name = "flotilla-controller", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    /// Log format: `auto` (journald under systemd, text otherwise),
    /// `text`, `json` or `journald`.
    #[arg(
        long,
        env = "FLOTILLA_LOG_FORMAT",
        default_value = "auto",
        global = true
    )]
    pub log_format: flotilla_common::process::LogFormat,
    /// Log level or filter (`info`, `debug`, `flotilla_controller=debug`;
    /// default: the file's `log_level`, else `info`); `RUST_LOG` wins.
    #[arg(long, env = "FLOTILLA_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default when no subcommand is given).
    Serve,
    /// Manage API clients (through the running server, or the store directly
    /// when no server holds it).
    Client(client::ClientArgs),
    /// Manage join tokens for enrolling agents (through the running server,
    /// or the store directly when no server holds it).
    JoinToken(join_token::JoinTokenArgs),
}
