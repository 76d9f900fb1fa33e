//! Template validation: every problem found, each with its JSON pointer, so
//! an operator fixes a template in one round trip instead of one per error.

use super::COMPUTED;
use flotilla_common::spec::fields::kind;
use flotilla_common::spec::ContainerSpec;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// One thing wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer (RFC 6901) to the offending value, `""` for the root.
    pub path: String,
    pub message: String,
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn report(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// A string field: `required` says whether absence is a problem.
    fn string(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<String> {
        let field = format!("{path}/{key}");
        match object.get(key) {
            None | Some(Value::Null) if required => {
                self.report(&field, format!("{key} is required"));
                None
            }
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if required && s.trim().is_empty() => {
                self.report(&field, format!("{key} must not be empty"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.report(
                    &field,
                    format!("{key} must be a string, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn object<'a>(
        &mut self,
        parent: &'a Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'a Map<String, Value>> {
        let field = format!("{path}/{key}");
        match parent.get(key) {
            None if required => {
                self.report(&field, format!("{key} is required"));
                None
            }
            None => None,
            Some(Value::Object(object)) => Some(object),
            Some(other) => {
                self.report(
                    &field,
                    format!("{key} must be an object, not {}", kind(other)),
                );
                None
            }
        }
    }
}

fn is_flag(flag: &str) -> bool {
    let mut chars = flag.chars();
    (1..=63).contains(&flag.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a template body. Unknown fields are allowed and left alone.
pub fn validate(body: &Value) -> Result<(), Vec<Problem>> {
    let mut check = Checker {
        problems: Vec::new(),
    };
    let Some(root) = body.as_object() else {
        check.report(
            "",
            format!("template body must be a JSON object, not {}", kind(body)),
        );
        return Err(check.problems);
    };
    check.string(root, "", "version", true);
    check.string(root, "", "label", false);
    check.string(root, "", "description", false);
    check.object(root, "", "vendor", false);
    match root.get("configurations") {
        None => check.report("/configurations", "configurations is required"),
        Some(Value::Array(configs)) if configs.is_empty() => check.report(
            "/configurations",
            "configurations must hold at least one configuration",
        ),
        Some(Value::Array(configs)) => {
            for (index, config) in configs.iter().enumerate() {
                configuration(&mut check, config, &format!("/configurations/{index}"));
            }
        }
        Some(other) => check.report(
            "/configurations",
            format!("configurations must be an array, not {}", kind(other)),
        ),
    }
    if check.problems.is_empty() {
        Ok(())
    } else {
        Err(check.problems)
    }
}

/// Flags used by more than one configuration of a (valid) body, each at
/// its repeat. Apart from [`validate`]: JSON Schema cannot say "unique by
/// flag", so a repeat in a well-formed body is a conflict (409), not a
/// malformed body.
pub fn repeated_flags(body: &Value) -> Vec<Problem> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut problems = Vec::new();
    for (index, config) in super::configurations(body).iter().enumerate() {
        let Some(flag) = config.get("flag").and_then(Value::as_str) else {
            continue;
        };
        if let Some(first) = seen.insert(flag, index) {
            problems.push(Problem {
                path: format!("/configurations/{index}/flag"),
                message: format!(
                    "flag {flag:?} is already used by /configurations/{first}; flags must be unique"
                ),
            });
        }
    }
    problems
}

/// Checks one configuration; returns its flag when it has a usable one.
fn configuration(check: &mut Checker, config: &Value, path: &str) -> Option<String> {
    let Some(config) = config.as_object() else {
        check.report(
            path,
            format!("a configuration must be an object, not {}", kind(config)),
        );
        return None;
    };
    check.string(config, path, "role", true);
    let flag = check.string(config, path, "flag", true).filter(|flag| {
        let ok = is_flag(flag);
        if !ok {
            check.report(
                &format!("{path}/flag"),
                "flag must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit",
            );
        }
        ok
    });
    if let Some(provision) = check.object(config, path, "provision", true) {
        let provision_path = format!("{path}/provision");
        check.string(provision, &provision_path, "instance_type", false);
        let count_path = format!("{provision_path}/instance_count");
        match provision.get("instance_count") {
            None => check.report(&count_path, "instance_count is required"),
            Some(Value::Number(n)) if n.as_u64().is_some() => {}
            Some(other) => check.report(
                &count_path,
                format!("instance_count must be an integer >= 0, not {other}"),
            ),
        }
    }
    if let Some(container) = check.object(config, path, "container", false) {
        container_section(check, container, &format!("{path}/container"));
    }
    flag
}

/// Checks a container section with the parser the agents run, so a
/// section that passes here is one every agent can start. Fields holding
/// the `${computed}` placeholder are left for the platform to fill in.
fn container_section(check: &mut Checker, container: &Map<String, Value>, path: &str) {
    let mut section = container.clone();
    section.retain(|_, value| value.as_str() != Some(COMPUTED));
    let computed_image = container.get("image").and_then(Value::as_str) == Some(COMPUTED);
    if let Err(problems) = ContainerSpec::from_value(&Value::Object(section)) {
        for problem in problems {
            if computed_image && problem.path == "/image" {
                continue;
            }
            check.report(&format!("{path}{}", problem.path), problem.message);
        }
    }
}

/// The typed spec of a valid container section, for the pool policy
/// check: `${computed}` fields are left out (a computed image stands in as
/// a placeholder), so what is checked is everything the template asks for
/// itself. `None` when the section does not parse.
pub fn container_spec(container: &Value) -> Option<ContainerSpec> {
    let mut section = container.as_object()?.clone();
    section.retain(|_, value| value.as_str() != Some(COMPUTED));
    if container.get("image").and_then(Value::as_str) == Some(COMPUTED) {
        section.insert("image".into(), Value::from("computed"));
    }
    ContainerSpec::from_value(&Value::Object(section)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "version": "2017-03-03",
            "label": "l",
            "configurations": [{
                "role": "web", "flag": "Web01",
                "provision": {"image": "${computed}", "instance_type": "t2.micro", "instance_count": 1, "keypair": true},
                "container": {"image": "nginx", "environment_variables": {"STAGE": "dev", "PORT": 80}},
                "x-custom": {"kept": true}
            }]
        })
    }

    #[test]
    fn a_valid_template_with_placeholders_and_unknown_fields_passes() {
        assert_eq!(validate(&valid()), Ok(()));
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let body = json!({
            "label": 3,
            "configurations": [
                {"role": "web", "flag": "Web01", "provision": {"instance_count": -1},
                 "container": {"environment_variables": {"1BAD": "x", "OK": {"nested": 1}}}},
                {"role": "", "flag": "Web01", "provision": {"instance_count": "2"}},
                "nonsense"
            ]
        });
        let problems = validate(&body).expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/version",
                "/label",
                "/configurations/0/provision/instance_count",
                "/configurations/0/container/image",
                "/configurations/0/container/environment_variables/1BAD",
                "/configurations/0/container/environment_variables/OK",
                "/configurations/1/role",
                "/configurations/1/provision/instance_count",
                "/configurations/2",
            ]
        );
    }

    #[test]
    fn repeated_flags_are_found_at_each_repeat() {
        let config =
            |flag: &str| json!({"role": "web", "flag": flag, "provision": {"instance_count": 1}});
        let body = json!({"version": "1", "configurations": [config("a"), config("b"), config("a"), config("a")]});
        assert_eq!(validate(&body), Ok(()), "well-formed");
        let problems = repeated_flags(&body);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["/configurations/2/flag", "/configurations/3/flag"]);
        assert!(
            problems[0].message.contains("/configurations/0"),
            "{:?}",
            problems[0]
        );
        assert!(repeated_flags(
            &json!({"version": "1", "configurations": [config("a"), config("b")]})
        )
        .is_empty());
    }

    #[test]
    fn non_objects_and_empty_configurations_are_refused() {
        assert_eq!(validate(&json!([1])).expect_err("array")[0].path, "");
        let problems = validate(&json!({"version": "1", "configurations": []})).expect_err("empty");
        assert_eq!(problems[0].path, "/configurations");
    }
}
