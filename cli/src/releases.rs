//! `scale`, `rollback` and `config`: the operations that make a stack's
//! next version from one it has.

use crate::client::Client;
use crate::commands::{finish, Output};
use crate::table::{cell, render};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// `NAME=VALUE` words as pairs; `what` names the form in errors.
pub fn pairs(words: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    words
        .iter()
        .map(|word| match word.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => bail!("{word:?} is not {what}"),
        })
        .collect()
}

/// `FLAG=COUNT` words as the formation request's items.
pub fn formation(words: &[String]) -> anyhow::Result<Value> {
    let items = pairs(words, "FLAG=COUNT")?
        .into_iter()
        .map(|(flag, count)| {
            let count: u64 = count
                .parse()
                .with_context(|| format!("{flag}={count}: the count is not a whole number >= 0"))?;
            Ok(json!({ "flag": flag, "instance_count": count }))
        })
        .collect::<anyhow::Result<Vec<Value>>>()?;
    Ok(Value::Array(items))
}

/// `scale STACK FLAG=COUNT... [--wait]`.
pub async fn scale(
    client: &Client,
    out: Output,
    stack_id: &str,
    counts: &[String],
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let body = formation(counts)?;
    let answer = client
        .call(
            Method::PATCH,
            &format!("/v3/alm/stack/{stack_id}/formation"),
            Some(&body),
        )
        .await?;
    finish(client, out, &answer, stack_id, "scaled", wait_for).await
}

/// `rollback STACK [VERSION] [--wait]`.
pub async fn rollback(
    client: &Client,
    out: Output,
    stack_id: &str,
    version_id: Option<&str>,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let answer = client
        .call(
            Method::POST,
            &format!("/v3/alm/template/{stack_id}/rollback"),
            Some(&json!({ "version_id": version_id })),
        )
        .await?;
    finish(client, out, &answer, stack_id, "rolled back", wait_for).await
}

/// `config get STACK FLAG`: the variables, secrets redacted.
pub async fn get(client: &Client, out: Output, stack_id: &str, flag: &str) -> anyhow::Result<()> {
    let vars = client
        .get(&format!("/v3/alm/stack/{stack_id}/config/{flag}"))
        .await?;
    if out.json {
        out.value(&vars);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = vars
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| vec![name.clone(), cell(value)])
        .collect();
    print!("{}", render(&["NAME", "VALUE"], &rows));
    Ok(())
}

/// `config set STACK FLAG KEY=VALUE...` and `config unset STACK FLAG
/// KEY...`: one new version either way.
pub async fn change(
    client: &Client,
    out: Output,
    stack_id: &str,
    flag: &str,
    changes: Map<String, Value>,
    wait_for: Option<Duration>,
) -> anyhow::Result<()> {
    let answer = client
        .call(
            Method::PATCH,
            &format!("/v3/alm/stack/{stack_id}/config/{flag}"),
            Some(&Value::Object(changes)),
        )
        .await?;
    finish(client, out, &answer, stack_id, "reconfigured", wait_for).await
}

/// The change `config set` sends.
pub fn to_set(words: &[String]) -> anyhow::Result<Map<String, Value>> {
    Ok(pairs(words, "KEY=VALUE")?
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect())
}

/// The change `config unset` sends.
pub fn to_unset(names: &[String]) -> Map<String, Value> {
    names
        .iter()
        .map(|name| (name.clone(), Value::Null))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(items: &[&str]) -> Vec<String> {
        items.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn formation_words_become_items() {
        for (given, want) in [
            (
                words(&["Web01=3"]),
                Some(json!([{"flag": "Web01", "instance_count": 3}])),
            ),
            (
                words(&["Web01=0", "Job01=2"]),
                Some(
                    json!([{"flag": "Web01", "instance_count": 0}, {"flag": "Job01", "instance_count": 2}]),
                ),
            ),
            (words(&["Web01"]), None),
            (words(&["=3"]), None),
            (words(&["Web01=-1"]), None),
            (words(&["Web01=two"]), None),
        ] {
            assert_eq!(formation(&given).ok(), want, "{given:?}");
        }
    }

    #[test]
    fn config_words_become_changes() {
        let set = to_set(&words(&["A=1", "B=x=y", "C="])).expect("set");
        assert_eq!(Value::Object(set), json!({"A": "1", "B": "x=y", "C": ""}));
        assert!(to_set(&words(&["NOEQUALS"])).is_err());
        assert_eq!(
            Value::Object(to_unset(&words(&["A", "B"]))),
            json!({"A": null, "B": null})
        );
    }
}
