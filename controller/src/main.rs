//! `flotilla-controller`: runs the REST API, or manages API clients.

use anyhow::Context;
use clap::Parser;
use flotilla_controller::cli::{Cli, Command, LogFormat};
use flotilla_controller::config::Config;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = Config::load(&cli.overrides).context("invalid configuration")?;
    match cli.command {
        None | Some(Command::Serve) => {
            flotilla_controller::server::run(config, shutdown_signal()).await
        }
        Some(Command::Client(args)) => flotilla_controller::cli::client::run(&config, args).await,
        Some(Command::JoinToken(args)) => {
            flotilla_controller::cli::join_token::run(&config, args).await
        }
    }
}
