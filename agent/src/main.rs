//! `flotilla-agent`: the VM agent.
//!
//! The agent enrolls with a controller, holds the QUIC fleet link, and runs
//! the pushed containers on the local Docker engine. This build carries the
//! command-line entry point only; `enroll` and `run` arrive with the fleet
//! link and refuse to start until then, rather than pretending to work.

use clap::{Parser, Subcommand};

/// Flotilla VM agent.
#[derive(Debug, Parser)]
#[command(name = "flotilla-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll this VM with a controller (once).
    Enroll,
    /// Run the agent.
    Run,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Enroll => "enroll",
        Command::Run => "run",
    };
    anyhow::bail!(
        "`flotilla-agent {name}` needs the fleet link, which this build does not include yet"
    )
}
