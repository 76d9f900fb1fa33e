//! `flotilla-controller join-token create|list|revoke`: the same work as the
//! `/v3/alm/agent/join-token` endpoints, through the running server or,
//! when none runs, on the store directly.

use super::client::{call, is_locked, login, AdminAccess};
use crate::config::Config;
use crate::fleet::join_tokens::{self, JoinTokenInfo, NewJoinToken};
use crate::fleet::pki::Pki;
use crate::server::open_store;
use crate::store::{Pin, DEFAULT_POOL};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    #[command(subcommand)]
    pub action: JoinTokenAction,
    #[command(flatten)]
    pub access: AdminAccess,
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenAction {
    /// Create a token; prints it (once) with the CA fingerprint to pin.
    Create {
        /// Lifetime in seconds.
        #[arg(long, default_value_t = join_tokens::DEFAULT_TTL.as_secs())]
        ttl: u64,
        /// How many VMs may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Pin enrolled agents to this stack's configuration (with --flag).
        #[arg(long, requires = "flag")]
        stack_id: Option<String>,
        #[arg(long, requires = "stack_id")]
        flag: Option<String>,
        /// The pool the agents join (default: `default`, or the pinned
        /// configuration's pool).
        #[arg(long)]
        pool: Option<String>,
        /// May enroll an instance id already enrolled, replacing that
        /// agent's identity.
        #[arg(long)]
        replace: bool,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id (jt-...).
    Revoke { id: String },
}

enum Outcome {
    Created(NewJoinToken),
    Listed(Vec<JoinTokenInfo>),
    Revoked(JoinTokenInfo),
}

/// Runs a join-token action.
pub async fn run(config: &Config, args: JoinTokenArgs) -> anyhow::Result<()> {
    let outcome = match open_store(config) {
        Ok(store) => {
            let outcome = match &args.action {
                JoinTokenAction::Create {
                    ttl,
                    uses,
                    stack_id,
                    flag,
                    pool,
                    replace,
                } => {
                    let pki = Pki::load_or_create(&config.data_dir.join("pki"))?;
                    let admin = store.ensure_user("admin", crate::clock::now_ms())?;
                    let pin = stack_id
                        .clone()
                        .zip(flag.clone())
                        .map(|(stack_id, flag)| Pin { stack_id, flag });
                    let pool = match &pin {
                        Some(pin) => {
                            let stack = store
                                .stack(&pin.stack_id)?
                                .with_context(|| format!("no stack {}", pin.stack_id))?;
                            let version = store
                                .version_by_seq(&stack.stack_id, stack.latest_seq)?
                                .with_context(|| {
                                    format!("stack {} has no version", pin.stack_id)
                                })?;
                            version.pool_of(&pin.flag).to_owned()
                        }
                        None => pool.clone().unwrap_or_else(|| DEFAULT_POOL.to_owned()),
                    };
                    store
                        .pool(&pool)?
                        .with_context(|| format!("no pool {pool}"))?;
                    Outcome::Created(join_tokens::create(
                        &store,
                        &pki.ca_fingerprint,
                        &admin.user_id,
                        join_tokens::JoinTokenOptions {
                            ttl: Duration::from_secs(*ttl),
                            max_uses: *uses,
                            pin,
                            pool,
                            replace: *replace,
                        },
                    )?)
                }
                JoinTokenAction::List => Outcome::Listed(join_tokens::list(&store, "", true)?),
                JoinTokenAction::Revoke { id } => Outcome::Revoked(
                    join_tokens::revoke(&store, id, "", true)?
                        .with_context(|| format!("no join token {id:?}"))?,
                ),
            };
            store.flush().await?;
            outcome
        }
        Err(err) if is_locked(&err) => {
            let remote = login(config, &args.access).await?;
            let url = format!("{}/v3/alm/agent/join-token", remote.base);
            match &args.action {
                JoinTokenAction::Create { ttl, uses, stack_id, flag, pool, replace } => Outcome::Created(
                    call(remote.http.post(&url).bearer_auth(&remote.token).json(&json!({
                        "ttl_secs": ttl, "max_uses": uses, "stack_id": stack_id, "flag": flag,
                        "pool": pool, "replace": replace,
                    })))
                    .await?,
                ),
                JoinTokenAction::List => Outcome::Listed(call(remote.http.get(&url).bearer_auth(&remote.token)).await?),
                JoinTokenAction::Revoke { id } => {
                    Outcome::Revoked(call(remote.http.delete(format!("{url}/{id}")).bearer_auth(&remote.token)).await?)
                }
            }
        }
        Err(err) => return Err(err),
    };
    if args.access.json {
        let value = match &outcome {
            Outcome::Created(token) => serde_json::to_value(token)?,
            Outcome::Listed(list) => serde_json::to_value(list)?,
            Outcome::Revoked(token) => serde_json::to_value(token)?,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match outcome {
        Outcome::Created(token) => {
            println!("id:             {}", token.id);
            println!("token:          {}", token.token);
            println!("expires:        {}", token.expires);
            println!("uses:           {}", token.max_uses);
            println!("pool:           {}", token.pool);
            println!("ca_fingerprint: {}", token.ca_fingerprint);
            println!("On the VM: flotilla-agent enroll --controller HOST:PORT --join-token {} --ca-fingerprint {}", token.token, token.ca_fingerprint);
        }
        Outcome::Listed(list) => {
            println!(
                "{:<14} {:<8} {:<5}/{:<5} {:<26} {:<16} PIN",
                "ID", "STATE", "USED", "MAX", "EXPIRES", "POOL"
            );
            for t in list {
                let pin = t
                    .stack_id
                    .as_ref()
                    .map(|s| format!("{s}/{}", t.flag.clone().unwrap_or_default()))
                    .unwrap_or_default();
                println!(
                    "{:<14} {:<8} {:<5}/{:<5} {:<26} {:<16} {pin}",
                    t.id, t.state, t.uses, t.max_uses, t.expires, t.pool
                );
            }
        }
        Outcome::Revoked(token) => println!("revoked {}", token.id),
    }
    Ok(())
}
