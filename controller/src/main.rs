//! `flotilla-controller`: runs the REST API, or manages API clients.

use anyhow::Context;
use clap::Parser;
use flotilla_controller::cli::{Cli, Command};
use flotilla_controller::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli.overrides).context("invalid configuration")?;
    let level = cli
        .log_level
        .clone()
        .or_else(|| config.log_level.clone())
        .unwrap_or_else(|| "info".to_owned());
    flotilla_common::process::init_logging(cli.log_format, &level);
    match cli.command {
        None | Some(Command::Serve) => {
            flotilla_controller::server::run(config, flotilla_common::process::shutdown_signal())
                .await
        }
        Some(Command::Client(args)) => flotilla_controller::cli::client::run(&config, args).await,
        Some(Command::JoinToken(args)) => {
            flotilla_controller::cli::join_token::run(&config, args).await
        }
    }
}
