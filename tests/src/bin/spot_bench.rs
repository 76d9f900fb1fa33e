//! Spot benchmark: the spot scenario on the real Docker engine, repeated,
//! with the delays from the moment the notice appears in the metadata
//! service (polled every second) until the controller records it, the
//! replacement on the on-demand agent runs, the spot agent's container has
//! stopped through its SIGTERM handler, and the agent reports drained.
//!
//! `cargo run --release -p flotilla-tests --bin spot_bench [-- --rounds N]`

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// How many times to run the scenario.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn summary(name: &str, mut values: Vec<i64>) {
    values.sort_unstable();
    let median = values[values.len() / 2];
    let max = values[values.len() - 1];
    println!("{name:<34} median {median:>5} ms   max {max:>5} ms   all {values:?}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let mut all = Vec::new();
    for round in 0..args.rounds {
        let outcome = flotilla_tests::spot::run(&format!("bench{round}")).await?;
        anyhow::ensure!(
            outcome.handler_output.trim() == "handled",
            "round {round}: the SIGTERM handler did not run"
        );
        println!("round {round}: {:?}", outcome.figures);
        all.push(outcome.figures);
    }
    println!("spot poll interval 1 s; delays from the notice appearing:");
    summary(
        "controller recorded the notice",
        all.iter().map(|f| f.recorded_ms).collect(),
    );
    summary(
        "replacement running (on-demand)",
        all.iter().map(|f| f.replacement_running_ms).collect(),
    );
    summary(
        "spot container stopped (SIGTERM)",
        all.iter().map(|f| f.old_stopped_ms).collect(),
    );
    summary("drain complete", all.iter().map(|f| f.drained_ms).collect());
    Ok(())
}
