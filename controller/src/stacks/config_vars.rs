//! Config vars: a configuration's environment variables as a flat map,
//! changes to them as a new version, and the redaction of the ones its
//! container section lists in `secret_variables`.
//!
//! Operators read bodies back (describe, compare, config vars) and send
//! them again; a secret comes back as [`REDACTED`], and [`keep_redacted`]
//! puts the stored value back, so a read-modify-write never loses one.

use super::error::{StackError, StackResult};
use serde_json::{Map, Value};

/// What operators see in place of a secret value.
pub const REDACTED: &str = "[redacted]";

/// The names a container section lists as secret.
fn secret_names(container: &Map<String, Value>) -> Vec<String> {
    container
        .get("secret_variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn configs_mut(body: &mut Value) -> impl Iterator<Item = &mut Value> {
    body.get_mut("configurations")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn flag_of(config: &Value) -> Option<&str> {
    config.get("flag").and_then(Value::as_str)
}

/// Replaces the value of every secret variable in `body` with
/// [`REDACTED`]. Variables not listed stay as they are.
pub fn redact(body: &mut Value) {
    for config in configs_mut(body) {
        if let Some(container) = config.get_mut("container").and_then(Value::as_object_mut) {
            redact_container(container);
        }
    }
}

/// Redacts the listed variables of one container section.
pub fn redact_container(container: &mut Map<String, Value>) {
    let names = secret_names(container);
    let Some(env) = container
        .get_mut("environment_variables")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for name in &names {
        if let Some(value) = env.get_mut(name) {
            *value = Value::String(REDACTED.into());
        }
    }
}

/// In `body`, every secret variable given as [`REDACTED`] takes its value
/// in `previous` (the same configuration's), when it had one there.
pub fn keep_redacted(body: &mut Value, previous: &Value) {
    for config in configs_mut(body) {
        let Some(flag) = flag_of(config).map(str::to_owned) else {
            continue;
        };
        let Some(old_env) = crate::template::configuration(previous, &flag)
            .and_then(|old| old.get("container"))
            .and_then(|c| c.get("environment_variables"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let Some(container) = config.get_mut("container").and_then(Value::as_object_mut) else {
            continue;
        };
        let names = secret_names(container);
        let Some(env) = container
            .get_mut("environment_variables")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for name in names {
            let (Some(value), Some(old)) = (env.get_mut(&name), old_env.get(&name)) else {
                continue;
            };
            if value.as_str() == Some(REDACTED) && old.as_str() != Some(REDACTED) {
                *value = old.clone();
            }
        }
    }
}

/// The text a variable's value gives a container: a string as it is,
/// a number or boolean as the agent passes it.
pub fn env_text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// The environment variables of configuration `flag`, flat and redacted.
pub fn view(body: &Value, flag: &str) -> StackResult<Map<String, Value>> {
    let config =
        crate::template::configuration(body, flag).ok_or_else(|| StackError::NotFound {
            kind: "flag",
            id: flag.to_owned(),
        })?;
    let Some(container) = config.get("container").and_then(Value::as_object) else {
        return Ok(Map::new());
    };
    let secrets = secret_names(container);
    Ok(container
        .get("environment_variables")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let shown = if secrets.contains(name) {
                REDACTED.to_owned()
            } else {
                env_text(value)
            };
            (name.clone(), Value::String(shown))
        })
        .collect())
}

/// What a config change set and removed, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changed {
    pub set: Vec<String>,
    pub unset: Vec<String>,
}

/// `body` with the environment of configuration `flag` changed: a string,
/// number or boolean sets a variable, `null` removes it. Names must be
/// valid variable names; each problem has its pointer into `changes`.
pub fn patch(
    body: &Value,
    flag: &str,
    changes: &Map<String, Value>,
) -> StackResult<(Value, Changed)> {
    let mut problems = Vec::new();
    let mut changed = Changed::default();
    for (name, value) in changes {
        let path = format!("/{}", flotilla_common::spec::fields::segment(name));
        if !flotilla_common::spec::env_name_ok(name) {
            problems.push(crate::template::validate::Problem {
                path,
                message: "is not a valid environment variable name (letters, digits and '_', not starting with a digit, at most 256)".into(),
            });
            continue;
        }
        match value {
            Value::Null => changed.unset.push(name.clone()),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => changed.set.push(name.clone()),
            other => problems.push(crate::template::validate::Problem {
                path,
                message: format!(
                    "must be a string, number or boolean (set) or null (remove), not {}",
                    flotilla_common::spec::fields::kind(other)
                ),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(StackError::Invalid(problems));
    }
    changed.set.sort();
    changed.unset.sort();
    if changes.is_empty() {
        return Err(StackError::invalid(
            "",
            "give at least one variable to set (\"KEY\": \"value\") or remove (\"KEY\": null)",
        ));
    }
    let mut body = body.clone();
    let config = configs_mut(&mut body)
        .find(|config| flag_of(config) == Some(flag))
        .ok_or_else(|| StackError::NotFound {
            kind: "flag",
            id: flag.to_owned(),
        })?;
    let container = config
        .get_mut("container")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            StackError::Conflict(format!(
                "configuration {flag:?} has no container section to set variables in"
            ))
        })?;
    let env = container
        .entry("environment_variables")
        .or_insert_with(|| Value::Object(Map::new()));
    if env.is_null() {
        *env = Value::Object(Map::new());
    }
    let Some(env) = env.as_object_mut() else {
        return Err(StackError::invalid(
            "",
            format!("configuration {flag:?} has environment_variables that are not an object"),
        ));
    };
    for (name, value) in changes {
        if value.is_null() {
            env.shift_remove(name);
        } else {
            env.insert(name.clone(), value.clone());
        }
    }
    Ok((body, changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Value {
        json!({"configurations": [{
            "flag": "Web01",
            "provision": {"instance_count": 1},
            "container": {
                "image": "web",
                "environment_variables": {"STAGE": "dev", "PORT": 80, "TOKEN": "s3cret"},
                "secret_variables": ["TOKEN"]
            }
        }, {"flag": "Bare", "provision": {"instance_count": 1}}]})
    }

    #[test]
    fn secrets_are_redacted_everywhere_they_are_shown() {
        let shown = view(&body(), "Web01").expect("view");
        assert_eq!(
            Value::Object(shown),
            json!({"PORT": "80", "STAGE": "dev", "TOKEN": REDACTED})
        );
        let mut whole = body();
        redact(&mut whole);
        assert_eq!(
            whole.pointer("/configurations/0/container/environment_variables/TOKEN"),
            Some(&json!(REDACTED))
        );
        assert_eq!(
            whole.pointer("/configurations/0/container/environment_variables/STAGE"),
            Some(&json!("dev"))
        );
        assert!(!whole.to_string().contains("s3cret"));
        assert_eq!(view(&body(), "Bare").expect("bare"), Map::new());
    }

    #[test]
    fn a_redacted_value_sent_back_keeps_the_stored_secret() {
        let mut sent = body();
        redact(&mut sent);
        sent["configurations"][0]["container"]["environment_variables"]["STAGE"] = json!("prod");
        keep_redacted(&mut sent, &body());
        let env = &sent["configurations"][0]["container"]["environment_variables"];
        assert_eq!(env["TOKEN"], "s3cret");
        assert_eq!(env["STAGE"], "prod");
        // A secret given a new value takes it.
        let mut changed = body();
        changed["configurations"][0]["container"]["environment_variables"]["TOKEN"] = json!("new");
        keep_redacted(&mut changed, &body());
        assert_eq!(
            changed.pointer("/configurations/0/container/environment_variables/TOKEN"),
            Some(&json!("new"))
        );
    }

    #[test]
    fn patches_set_and_remove_in_one_change() {
        let changes = json!({"STAGE": "prod", "PORT": null, "NEW": 1});
        let (patched, changed) =
            patch(&body(), "Web01", changes.as_object().expect("map")).expect("patched");
        assert_eq!(
            patched["configurations"][0]["container"]["environment_variables"],
            json!({"STAGE": "prod", "TOKEN": "s3cret", "NEW": 1})
        );
        assert_eq!(changed.set, ["NEW", "STAGE"]);
        assert_eq!(changed.unset, ["PORT"]);
    }

    #[test]
    fn bad_patches_are_refused() {
        for (flag, changes, want) in [
            ("Web01", json!({"1BAD": "x"}), "invalid"),
            ("Web01", json!({"OK": ["x"]}), "invalid"),
            ("Web01", json!({}), "invalid"),
            ("Nope", json!({"OK": "x"}), "not found"),
            ("Bare", json!({"OK": "x"}), "conflict"),
        ] {
            let err = patch(&body(), flag, changes.as_object().expect("map")).expect_err("refused");
            let got = match err {
                StackError::Invalid(_) => "invalid",
                StackError::NotFound { .. } => "not found",
                StackError::Conflict(_) => "conflict",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "{flag} {changes}");
        }
    }
}
