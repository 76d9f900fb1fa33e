//! `flotilla-controller client create|list|revoke`.
//!
//! sled lets one process open a store, so when a controller is running these
//! go through its admin REST endpoints; when none is, they open the store
//! directly. Either way the same [`crate::auth::clients`] code does the work.

use crate::auth::clients::{self, ClientInfo, NewClient};
use crate::config::Config;
use crate::server::{open_store, CredentialsFile, ADMIN_CREDENTIALS_FILE};
use crate::store::StoreError;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug, Args)]
pub struct ClientArgs {
    #[command(subcommand)]
    pub action: ClientAction,
    #[command(flatten)]
    pub access: AdminAccess,
}

/// How an admin command reaches a running controller.
#[derive(Debug, Args)]
pub struct AdminAccess {
    /// Controller URL to use when the server is running (default: from
    /// `--listen`).
    #[arg(long, env = "FLOTILLA_SERVER")]
    pub server: Option<String>,
    /// Admin client id for the REST call (default: the data dir's
    /// admin-credentials.json).
    #[arg(long, env = "FLOTILLA_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Admin client secret for the REST call.
    #[arg(long, env = "FLOTILLA_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientAction {
    /// Create a client for a user (created when new); prints its secret once.
    Create {
        #[arg(long)]
        username: String,
        /// Give the client admin rights (sees and manages everything).
        #[arg(long)]
        admin: bool,
    },
    /// List clients (never their secrets).
    List,
    /// Revoke a client; its tokens stop working at once.
    Revoke { client_id: String },
}

/// What a client action produced, printed the same whichever path ran it.
enum Outcome {
    Created(NewClient),
    Listed(Vec<ClientInfo>),
    Revoked(ClientInfo),
}

/// Runs a client action.
pub async fn run(config: &Config, args: ClientArgs) -> anyhow::Result<()> {
    if let ClientAction::Create { username, .. } = &args.action {
        clients::check_username(username).map_err(anyhow::Error::msg)?;
    }
    let outcome = match open_store(config) {
        Ok(store) => {
            let outcome = local(&store, &args.action)?;
            store.flush().await?;
            outcome
        }
        Err(err) if is_locked(&err) => remote(config, &args).await?,
        Err(err) => return Err(err),
    };
    print(&outcome, args.access.json)
}

/// Whether opening the store failed because a running controller holds it.
pub(super) fn is_locked(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::Locked { .. })
        )
    })
}

fn local(store: &crate::store::Store, action: &ClientAction) -> anyhow::Result<Outcome> {
    Ok(match action {
        ClientAction::Create { username, admin } => {
            Outcome::Created(clients::create(store, username, *admin, None)?)
        }
        ClientAction::List => Outcome::Listed(clients::list(store)?),
        ClientAction::Revoke { client_id } => Outcome::Revoked(
            clients::revoke(store, client_id)?
                .with_context(|| format!("no client {client_id:?}"))?,
        ),
    })
}

/// A logged-in REST session with a running controller.
pub(super) struct Remote {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// Logs in to the running controller as an admin.
pub(super) async fn login(config: &Config, args: &AdminAccess) -> anyhow::Result<Remote> {
    let base = args
        .server
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen))
        .trim_end_matches('/')
        .to_owned();
    let (client_id, client_secret) = match (&args.client_id, &args.client_secret) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => {
            let path = config.data_dir.join(ADMIN_CREDENTIALS_FILE);
            let text = std::fs::read(&path).with_context(|| {
                format!("the store is in use by a running controller; give --client-id/--client-secret or make {} readable", path.display())
            })?;
            let file: CredentialsFile = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a credentials file", path.display()))?;
            (file.client_id, file.client_secret)
        }
    };
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let token: serde_json::Value =
        call(http.post(format!("{base}/v3/access_token")).json(&json!({
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        })))
        .await
        .context("cannot log in to the controller")?;
    let token = token["access_token"]
        .as_str()
        .context("no access_token in the answer")?
        .to_owned();
    Ok(Remote { http, base, token })
}

async fn remote(config: &Config, args: &ClientArgs) -> anyhow::Result<Outcome> {
    let Remote { http, base, token } = login(config, &args.access).await?;
    let clients_url = format!("{base}/v3/admin/clients");
    Ok(match &args.action {
        ClientAction::Create { username, admin } => Outcome::Created(
            call(
                http.post(&clients_url)
                    .bearer_auth(&token)
                    .json(&json!({"username": username, "admin": admin})),
            )
            .await?,
        ),
        ClientAction::List => {
            Outcome::Listed(call(http.get(&clients_url).bearer_auth(&token)).await?)
        }
        ClientAction::Revoke { client_id } => Outcome::Revoked(
            call(
                http.delete(format!("{clients_url}/{client_id}"))
                    .bearer_auth(&token),
            )
            .await?,
        ),
    })
}

/// Sends a request and decodes a success, or turns the error shape into a
/// readable error.
pub(super) async fn call<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> anyhow::Result<T> {
    let response = request
        .send()
        .await
        .context("cannot reach the controller")?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<crate::api::error::ErrorBody>(&body)
            .ok()
            .and_then(|e| e.errors.into_iter().next())
            .map_or_else(
                || String::from_utf8_lossy(&body).into_owned(),
                |e| e.message,
            );
        bail!("controller answered {status}: {message}");
    }
    serde_json::from_slice(&body).context("unexpected answer from the controller")
}

fn print(outcome: &Outcome, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let value = match outcome {
            Outcome::Created(client) => serde_json::to_value(client)?,
            Outcome::Listed(list) => serde_json::to_value(list)?,
            Outcome::Revoked(client) => serde_json::to_value(client)?,
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match outcome {
        Outcome::Created(client) => {
            println!("client_id:     {}", client.client_id);
            println!("client_secret: {}", client.client_secret);
            println!("user:          {} ({})", client.username, client.user_id);
            println!("admin:         {}", client.admin);
            println!("The secret is shown only now; store it safely.");
        }
        Outcome::Listed(list) => {
            println!(
                "{:<32} {:<16} {:<14} {:<6} STATE",
                "CLIENT_ID", "USERNAME", "USER_ID", "ADMIN"
            );
            for client in list {
                let state = client
                    .revoked
                    .as_deref()
                    .map_or("active".to_owned(), |at| format!("revoked {at}"));
                println!(
                    "{:<32} {:<16} {:<14} {:<6} {}",
                    client.client_id, client.username, client.user_id, client.admin, state
                );
            }
        }
        Outcome::Revoked(client) => println!("revoked {}", client.client_id),
    }
    Ok(())
}
