//! Pools and join tokens: `pools`, `pool create|show|delete`,
//! `join-token`.

use crate::client::Client;
use crate::commands::{show_list, Output};
use crate::table::cell;
use reqwest::Method;
use serde_json::{json, Value};

/// What `pool create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewPool {
    pub name: String,
    pub users: Vec<String>,
    pub host_paths: Vec<String>,
    pub cap_add: Vec<String>,
    pub privileged: bool,
    pub host_network: bool,
    pub host_pid_ipc: bool,
    pub devices: bool,
    pub security_opt: bool,
}

impl NewPool {
    /// The request body.
    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "users": self.users,
            "policy": {
                "host_paths": self.host_paths,
                "allow_privileged": self.privileged,
                "allow_cap_add": self.cap_add,
                "allow_host_network": self.host_network,
                "allow_host_pid_ipc": self.host_pid_ipc,
                "allow_devices": self.devices,
                "allow_security_opt": self.security_opt,
            },
        })
    }
}

/// What a policy allows, in a few words (`-` for nothing).
fn allowed(policy: &Value) -> String {
    let mut parts: Vec<String> = policy["host_paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("host:{}", cell(p)))
        .collect();
    for (key, word) in [
        ("allow_privileged", "privileged"),
        ("allow_host_network", "host-network"),
        ("allow_host_pid_ipc", "host-pid-ipc"),
        ("allow_devices", "devices"),
        ("allow_security_opt", "security-opt"),
    ] {
        if policy[key] == true {
            parts.push(word.to_owned());
        }
    }
    parts.extend(
        policy["allow_cap_add"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("cap:{}", cell(c))),
    );
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

fn users(pool: &Value) -> String {
    pool["users"]
        .as_array()
        .map(|u| u.iter().map(cell).collect::<Vec<_>>().join(","))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "-".to_owned())
}

/// `pools`.
pub async fn list(client: &Client, out: Output) -> anyhow::Result<()> {
    let list = client.get("/v3/alm/pools").await?;
    show_list(out, &list, &["POOL", "USERS", "AGENTS", "ALLOWS"], |p| {
        vec![
            cell(&p["name"]),
            users(p),
            cell(&p["agents"]),
            allowed(&p["policy"]),
        ]
    });
    Ok(())
}

fn show(out: Output, pool: &Value) {
    if out.json {
        out.value(pool);
    } else {
        println!("pool:    {}", cell(&pool["name"]));
        println!("users:   {}", users(pool));
        println!("agents:  {}", cell(&pool["agents"]));
        println!("allows:  {}", allowed(&pool["policy"]));
    }
}

/// `pool create NAME --user U ... [--allow-host-path P ...]` (admin).
pub async fn create(client: &Client, out: Output, pool: &NewPool) -> anyhow::Result<()> {
    let created = client
        .call(Method::POST, "/v3/alm/pools", Some(&pool.body()))
        .await?;
    show(out, &created);
    Ok(())
}

/// `pool show NAME`.
pub async fn get(client: &Client, out: Output, name: &str) -> anyhow::Result<()> {
    show(out, &client.get(&format!("/v3/alm/pools/{name}")).await?);
    Ok(())
}

/// `pool delete NAME` (admin).
pub async fn delete(client: &Client, out: Output, name: &str) -> anyhow::Result<()> {
    let gone = client
        .call(Method::DELETE, &format!("/v3/alm/pools/{name}"), None)
        .await?;
    if out.json {
        out.value(&gone);
    } else {
        println!("pool {name} deleted");
    }
    Ok(())
}

/// What `join-token` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewJoinToken {
    pub pool: Option<String>,
    pub stack_id: Option<String>,
    pub flag: Option<String>,
    pub uses: Option<u32>,
    pub ttl_secs: Option<u64>,
    pub replace: bool,
}

/// `join-token [--pool P] [--stack S --flag F] [--uses N] [--ttl SECS] [--replace]`.
pub async fn join_token(client: &Client, out: Output, ask: &NewJoinToken) -> anyhow::Result<()> {
    let mut body = json!({ "replace": ask.replace });
    for (key, value) in [
        ("pool", ask.pool.clone().map(Value::from)),
        ("stack_id", ask.stack_id.clone().map(Value::from)),
        ("flag", ask.flag.clone().map(Value::from)),
        ("max_uses", ask.uses.map(Value::from)),
        ("ttl_secs", ask.ttl_secs.map(Value::from)),
    ] {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    let token = client
        .call(Method::POST, "/v3/alm/agent/join-token", Some(&body))
        .await?;
    if out.json {
        out.value(&token);
        return Ok(());
    }
    println!("id:             {}", cell(&token["id"]));
    println!("pool:           {}", cell(&token["pool"]));
    println!("token:          {}", cell(&token["token"]));
    println!("expires:        {}", cell(&token["expires"]));
    println!("uses:           {}", cell(&token["max_uses"]));
    println!("ca_fingerprint: {}", cell(&token["ca_fingerprint"]));
    println!(
        "On the VM: flotilla-agent enroll --controller HOST:PORT --join-token {} --ca-fingerprint {}",
        cell(&token["token"]),
        cell(&token["ca_fingerprint"])
    );
    Ok(())
}
