//! Scaling: the latest body with new instance counts, nothing else changed.

use super::error::{StackError, StackResult};
use crate::template::validate::Problem;
use serde_json::{json, Value};

/// `body` with `provision.instance_count` of each named configuration set
/// to its new count. A flag named twice is refused as a conflict (which
/// count would win is not for the controller to guess), and so is an
/// unknown flag (the stack is there; the request does not fit it).
pub fn scale(body: &Value, counts: &[(String, u64)]) -> StackResult<Value> {
    if counts.is_empty() {
        return Err(StackError::invalid(
            "",
            "give at least one {\"flag\", \"instance_count\"}",
        ));
    }
    for (index, (flag, _)) in counts.iter().enumerate() {
        if counts[..index].iter().any(|(seen, _)| seen == flag) {
            return Err(StackError::DuplicateFlag(vec![Problem {
                path: format!("/{index}/flag"),
                message: format!("flag {flag:?} is given twice"),
            }]));
        }
    }
    let mut body = body.clone();
    for (index, (flag, count)) in counts.iter().enumerate() {
        let config = body
            .get_mut("configurations")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .find(|config| config.get("flag").and_then(Value::as_str) == Some(flag))
            .ok_or_else(|| StackError::UnknownFlag {
                flag: flag.clone(),
                path: format!("/{index}/flag"),
            })?;
        let Some(config) = config.as_object_mut() else {
            continue;
        };
        let provision = config.entry("provision").or_insert_with(|| json!({}));
        if let Some(provision) = provision.as_object_mut() {
            provision.insert("instance_count".into(), json!(count));
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({
            "label": "l",
            "configurations": [
                {"flag": "Web01", "provision": {"instance_count": 1, "instance_type": "t2"}, "container": {"image": "web"}},
                {"flag": "Job01", "provision": {"instance_count": 2}},
            ]
        })
    }

    fn counts(items: &[(&str, u64)]) -> Vec<(String, u64)> {
        items.iter().map(|(f, n)| ((*f).to_owned(), *n)).collect()
    }

    #[test]
    fn only_the_named_counts_change() {
        for (given, web, job) in [
            (counts(&[("Web01", 3)]), 3, 2),
            (counts(&[("Job01", 0)]), 1, 0),
            (counts(&[("Job01", 5), ("Web01", 4)]), 4, 5),
        ] {
            let scaled = scale(&body(), &given).expect("scaled");
            assert_eq!(
                scaled.pointer("/configurations/0/provision/instance_count"),
                Some(&json!(web))
            );
            assert_eq!(
                scaled.pointer("/configurations/1/provision/instance_count"),
                Some(&json!(job))
            );
            assert_eq!(
                scaled.pointer("/configurations/0/provision/instance_type"),
                Some(&json!("t2"))
            );
            assert_eq!(
                scaled["configurations"][0]["container"],
                body()["configurations"][0]["container"]
            );
            assert_eq!(scaled["label"], "l");
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        for (given, want) in [
            (counts(&[]), "invalid"),
            (counts(&[("Web01", 1), ("Web01", 2)]), "duplicate"),
            (counts(&[("Nope", 1)]), "/0/flag"),
            (counts(&[("Web01", 1), ("Nope", 1)]), "/1/flag"),
        ] {
            let err = scale(&body(), &given).expect_err("refused");
            let got = match &err {
                StackError::Invalid(_) => "invalid",
                StackError::DuplicateFlag(_) => "duplicate",
                StackError::UnknownFlag { path, .. } => path.as_str(),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want, "{given:?}");
        }
    }
}
