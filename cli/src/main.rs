//! `flotilla`: operate a Flotilla controller from the command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use flotilla_cli::client::Client;
use flotilla_cli::commands::{self, Output};
use flotilla_cli::releases;
use flotilla_cli::session;
use std::path::PathBuf;
use std::time::Duration;

/// Operate a Flotilla controller: stacks, agents, events, logs.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
struct Cli {
    /// Controller URL (default: the one `login` saved).
    #[arg(long, env = "FLOTILLA_URL", global = true)]
    url: Option<String>,
    /// Access token (default: the one `login` saved).
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Items per request when listing (1-10000; default: the controller's
    /// page, 1000). Every page is fetched either way.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=10000))]
    page_size: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in with API client credentials; the token is saved (0600).
    Login {
        #[arg(long, env = "FLOTILLA_CLIENT_ID")]
        client_id: String,
        #[arg(long, env = "FLOTILLA_CLIENT_SECRET", hide_env_values = true)]
        client_secret: String,
    },
    /// Apply a template: creates a stack.
    Apply {
        /// The template (JSON); `-` for standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Update a stack with a new template version.
    Update {
        stack_id: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// What changed between two versions (default: the two newest), or
    /// between the latest and a file.
    Diff {
        stack_id: String,
        #[arg(long, requires = "to")]
        from: Option<String>,
        #[arg(long, requires = "from")]
        to: Option<String>,
        #[arg(short = 'f', long = "file", conflicts_with_all = ["from", "to"])]
        file: Option<PathBuf>,
    },
    /// A stack's versions, newest first.
    Versions { stack_id: String },
    /// Set instance counts: a new version, the latest with these counts.
    Scale {
        stack_id: String,
        /// `FLAG=COUNT`, one per configuration to change.
        #[arg(required = true, value_name = "FLAG=COUNT")]
        counts: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run an earlier version's template again, as a new version.
    Rollback {
        stack_id: String,
        /// The version to go back to (default: the one before the latest).
        version_id: Option<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// A configuration's environment variables (secrets redacted).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// List stacks.
    Stacks {
        /// Include deleted stacks.
        #[arg(long)]
        all: bool,
    },
    /// A stack and its instances.
    Describe { stack_id: String },
    /// Delete a stack.
    Delete {
        stack_id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List agents (admin).
    Agents {
        /// Include agents removed from the fleet.
        #[arg(long)]
        all: bool,
    },
    /// List the pools you may use (an admin: every pool).
    Pools,
    /// Create, show or delete a pool.
    Pool {
        #[command(subcommand)]
        action: PoolAction,
    },
    /// Create a join token for enrolling VMs into a pool.
    JoinToken {
        /// The pool the VMs join (default: `default`, or the pinned
        /// configuration's pool).
        #[arg(long)]
        pool: Option<String>,
        /// Pin the VMs to this stack's configuration (with --flag).
        #[arg(long = "stack", requires = "flag")]
        stack_id: Option<String>,
        #[arg(long, requires = "stack_id")]
        flag: Option<String>,
        /// How many VMs may enroll with it (default 1).
        #[arg(long)]
        uses: Option<u32>,
        /// Lifetime in seconds (default one day).
        #[arg(long)]
        ttl: Option<u64>,
        /// May enroll an instance id already enrolled, replacing that
        /// agent's identity (admin).
        #[arg(long)]
        replace: bool,
    },
    /// Remove an agent whose VM is gone for good (admin): its identity
    /// stops working, its work moves.
    Revoke { agent_id: String },
    /// Drain an agent: its work moves, then its containers stop (admin).
    Drain {
        agent_id: String,
        /// Undo the drain.
        #[arg(long)]
        undo: bool,
        /// Stop waiting for replacements after this many seconds.
        #[arg(long, conflicts_with = "undo")]
        deadline: Option<u64>,
    },
    /// An instance's container output.
    Logs {
        stack_id: String,
        instance_id: String,
        /// Keep streaming new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines from the end to start with.
        #[arg(long)]
        tail: Option<u32>,
        /// One configuration (default: all of the stack's on the instance).
        #[arg(long)]
        flag: Option<String>,
    },
    /// The event history, or with `-f` the live stream (resumed after
    /// disconnects).
    Events {
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long = "stack")]
        stack_id: Option<String>,
        #[arg(long = "instance")]
        instance_id: Option<String>,
        /// Event type, e.g. `spot.shutdown`.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only events after this id.
        #[arg(long)]
        since: Option<u64>,
    },
    /// The audit trail: who did what, when (admins: everything; users:
    /// their stacks').
    Audit {
        #[arg(long = "stack")]
        stack_id: Option<String>,
        /// By user name.
        #[arg(long)]
        user: Option<String>,
        /// One action, e.g. `stack.update` or `pool.create`.
        #[arg(long)]
        action: Option<String>,
        /// Only entries after this event id.
        #[arg(long)]
        since: Option<u64>,
    },
    /// Stop a stack's containers everywhere and keep them stopped (new
    /// versions are recorded, not started) until `start`; given an
    /// instance, only that instance's containers.
    Stop(Operate),
    /// Start a stopped stack (or, given an instance, that instance's
    /// stopped containers).
    Start(Operate),
    /// Restart a stack's containers one instance at a time, each back and
    /// healthy before the next (or, given an instance, only that one's).
    Restart(Operate),
}

/// What `stop`, `start` and `restart` act on.
#[derive(Debug, clap::Args)]
struct Operate {
    stack_id: String,
    /// One instance only (its containers of the stack).
    instance_id: Option<String>,
    /// Only this configuration.
    #[arg(long)]
    flag: Option<String>,
    /// With no instance: follow the operation until its task ends.
    #[command(flatten)]
    wait: WaitArgs,
}

/// `stop`, `start` or `restart` (`action`): of one instance when given,
/// else of the whole stack.
async fn operate(client: &Client, out: Output, action: &str, args: Operate) -> anyhow::Result<()> {
    let flag = args.flag.as_deref();
    match args.instance_id {
        Some(instance_id) => {
            commands::act(client, out, action, &args.stack_id, &instance_id, flag).await
        }
        None if action == "restart" => {
            flotilla_cli::restarts::restart(client, out, &args.stack_id, flag, args.wait.duration())
                .await
        }
        None => {
            flotilla_cli::restarts::hold(client, out, &args.stack_id, action, args.wait.duration())
                .await
        }
    }
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Show the variables.
    Get { stack_id: String, flag: String },
    /// Set variables, in one new version.
    Set {
        stack_id: String,
        flag: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove variables, in one new version.
    Unset {
        stack_id: String,
        flag: String,
        #[arg(required = true, value_name = "KEY")]
        names: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PoolAction {
    /// Create a pool (admin). Containers there may ask for nothing of the
    /// host unless allowed here.
    Create {
        name: String,
        /// A user who may place stacks here (repeat for more).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Allow host bind mounts at or below this path (repeat for more).
        #[arg(long = "allow-host-path")]
        host_paths: Vec<String>,
        /// Allow `cap_add` of this capability (repeat for more).
        #[arg(long = "allow-cap-add")]
        cap_add: Vec<String>,
        /// Allow `privileged: true`.
        #[arg(long)]
        allow_privileged: bool,
        /// Allow `network_mode: host`.
        #[arg(long)]
        allow_host_network: bool,
        /// Allow `pid_mode: host` and `ipc_mode: host`.
        #[arg(long)]
        allow_host_pid_ipc: bool,
        /// Allow `devices`.
        #[arg(long)]
        allow_devices: bool,
        /// Allow `security_opt`.
        #[arg(long)]
        allow_security_opt: bool,
    },
    /// One pool.
    Show { name: String },
    /// Delete a pool with no agents and no stacks (admin).
    Delete { name: String },
}

#[derive(Debug, clap::Args)]
struct WaitArgs {
    /// Follow the stack until it settles; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
    /// Longest wait, in seconds.
    #[arg(long, default_value_t = 600, requires = "wait")]
    timeout: u64,
}

impl WaitArgs {
    fn duration(&self) -> Option<Duration> {
        self.wait.then(|| Duration::from_secs(self.timeout))
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let given: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    match serde_urlencoded::to_string(&given) {
        Ok(encoded) if !encoded.is_empty() => format!("?{encoded}"),
        _ => String::new(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    if let Command::Login {
        client_id,
        client_secret,
    } = &cli.command
    {
        let url = cli
            .url
            .as_deref()
            .context("give the controller with --url http://host:port")?
            .trim_end_matches('/')
            .to_owned();
        let (token, expires) = flotilla_cli::client::login(&url, client_id, client_secret).await?;
        let path = session::save(&session::Session {
            url: url.clone(),
            token,
            expires_at: session::expires_in(expires),
        })?;
        println!(
            "logged in to {url}; token saved in {} for {} h",
            path.display(),
            expires / 3600
        );
        return Ok(());
    }
    let session = session::resolve(cli.url.as_deref(), cli.token.as_deref())?;
    let mut client = Client::new(session);
    client.page_size = cli.page_size.map(usize::from);
    match cli.command {
        Command::Login { .. } => Ok(()),
        Command::Apply { file, wait } => {
            let template = commands::read_template(&file)?;
            commands::apply(&client, out, &template, wait.duration()).await
        }
        Command::Update {
            stack_id,
            file,
            wait,
        } => {
            let template = commands::read_template(&file)?;
            commands::update(&client, out, &stack_id, &template, wait.duration()).await
        }
        Command::Diff {
            stack_id,
            from,
            to,
            file,
        } => {
            let template = file.as_deref().map(commands::read_template).transpose()?;
            commands::diff(
                &client,
                out,
                &stack_id,
                from.as_deref(),
                to.as_deref(),
                template.as_ref(),
            )
            .await
        }
        Command::Versions { stack_id } => commands::versions(&client, out, &stack_id).await,
        Command::Scale {
            stack_id,
            counts,
            wait,
        } => releases::scale(&client, out, &stack_id, &counts, wait.duration()).await,
        Command::Rollback {
            stack_id,
            version_id,
            wait,
        } => {
            releases::rollback(
                &client,
                out,
                &stack_id,
                version_id.as_deref(),
                wait.duration(),
            )
            .await
        }
        Command::Config { action } => match action {
            ConfigAction::Get { stack_id, flag } => {
                releases::get(&client, out, &stack_id, &flag).await
            }
            ConfigAction::Set {
                stack_id,
                flag,
                vars,
                wait,
            } => {
                let changes = releases::to_set(&vars)?;
                releases::change(&client, out, &stack_id, &flag, changes, wait.duration()).await
            }
            ConfigAction::Unset {
                stack_id,
                flag,
                names,
                wait,
            } => {
                let changes = releases::to_unset(&names);
                releases::change(&client, out, &stack_id, &flag, changes, wait.duration()).await
            }
        },
        Command::Stacks { all } => commands::stacks(&client, out, all).await,
        Command::Describe { stack_id } => commands::describe(&client, out, &stack_id).await,
        Command::Delete { stack_id, wait } => {
            commands::delete(&client, out, &stack_id, wait.duration()).await
        }
        Command::Agents { all } => commands::agents(&client, out, all).await,
        Command::Pools => flotilla_cli::pools::list(&client, out).await,
        Command::Pool { action } => match action {
            PoolAction::Create {
                name,
                users,
                host_paths,
                cap_add,
                allow_privileged,
                allow_host_network,
                allow_host_pid_ipc,
                allow_devices,
                allow_security_opt,
            } => {
                let pool = flotilla_cli::pools::NewPool {
                    name,
                    users,
                    host_paths,
                    cap_add,
                    privileged: allow_privileged,
                    host_network: allow_host_network,
                    host_pid_ipc: allow_host_pid_ipc,
                    devices: allow_devices,
                    security_opt: allow_security_opt,
                };
                flotilla_cli::pools::create(&client, out, &pool).await
            }
            PoolAction::Show { name } => flotilla_cli::pools::get(&client, out, &name).await,
            PoolAction::Delete { name } => flotilla_cli::pools::delete(&client, out, &name).await,
        },
        Command::JoinToken {
            pool,
            stack_id,
            flag,
            uses,
            ttl,
            replace,
        } => {
            let ask = flotilla_cli::pools::NewJoinToken {
                pool,
                stack_id,
                flag,
                uses,
                ttl_secs: ttl,
                replace,
            };
            flotilla_cli::pools::join_token(&client, out, &ask).await
        }
        Command::Revoke { agent_id } => commands::revoke(&client, out, &agent_id).await,
        Command::Drain {
            agent_id,
            undo,
            deadline,
        } => commands::drain(&client, out, &agent_id, undo, deadline).await,
        Command::Logs {
            stack_id,
            instance_id,
            follow,
            tail,
            flag,
        } => {
            let path = format!(
                "/v3/alm/stack/{stack_id}/instances/{instance_id}/logs{}",
                query(&[
                    ("follow", follow.then(|| "true".to_owned())),
                    ("tail", tail.map(|t| t.to_string())),
                    ("flag", flag),
                ])
            );
            flotilla_cli::stream::logs(&client, &path).await?;
            Ok(())
        }
        Command::Events {
            follow,
            stack_id,
            instance_id,
            kind,
            since,
        } => {
            let q = query(&[
                ("stack_id", stack_id),
                ("instance_id", instance_id),
                ("type", kind),
            ]);
            commands::events(&client, out, &q, follow, since).await
        }
        Command::Audit {
            stack_id,
            user,
            action,
            since,
        } => {
            let q = query(&[
                ("stack_id", stack_id),
                ("user", user),
                ("action", action),
                ("since", since.map(|s| s.to_string())),
            ]);
            flotilla_cli::audit::audit(&client, out, &q).await
        }
        Command::Stop(args) => operate(&client, out, "stop", args).await,
        Command::Start(args) => operate(&client, out, "start", args).await,
        Command::Restart(args) => operate(&client, out, "restart", args).await,
    }
}
