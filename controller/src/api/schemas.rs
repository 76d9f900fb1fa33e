//! JSON Schemas the derive macros cannot state: the template body and its
//! container section (the grammar of `flotilla_common::spec`, bounded by
//! its `limits`), a pool's container policy, and the join-token rule "both
//! or neither". They are added to the served document's components by
//! [`install`], so the document names every bound the server checks.
//!
//! The container section's string grammars (image references, port
//! mappings, durations, sizes) are written as patterns that admit only
//! what the parser accepts; where a grammar has a numeric range the
//! pattern cannot carry (a duration string's seconds), the pattern admits
//! the part of it inside the range.

use flotilla_common::spec::limits::{
    CPUS, ENV_COUNT, ENV_VALUE_LEN, HOST_LIST_COUNT, IMAGE_LEN, KEY_LEN, LABEL_COUNT, MAX_ATTEMPTS,
    MAX_GIT_POLL, MAX_GRACE, MAX_MEMORY, MAX_PROBE, MIN_GIT_POLL, MIN_MEMORY, MIN_PROBE, NAME_LEN,
    PORT_COUNT, RETRIES, TEXT_LEN, VOLUME_COUNT, WORD_COUNT,
};
use serde_json::{json, Value};
use std::time::Duration;

/// A string without NUL of at most `max` characters, or null (the parser
/// reads null as absent).
fn text(max: usize) -> Value {
    json!({"type": ["string", "null"], "maxLength": max, "pattern": "^[^\\u0000]*$"})
}

/// A port number or mapping (`80`, `"8080:80/tcp"`, `"127.0.0.1:8080:80"`).
fn port_number() -> &'static str {
    "\\+?0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
}

fn ipv4() -> &'static str {
    "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
}

fn protocol() -> &'static str {
    "(/([Tt][Cc][Pp]|[Uu][Dd][Pp]))?"
}

/// A port: exposed only, or published on the host when `publish`.
fn port(publish: bool) -> Value {
    let n = port_number();
    let mapping = if publish {
        format!(
            "^({n}|{n}:{n}|\\[?{ip}\\]?:{n}:{n}){p}$",
            ip = ipv4(),
            p = protocol()
        )
    } else {
        format!("^{n}{p}$", p = protocol())
    };
    json!({"anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 65535},
        {"type": "string", "maxLength": 64, "pattern": mapping},
    ]})
}

/// How many digits a whole number may have and stay at most `limit`.
fn digits(limit: u128) -> u32 {
    let mut d = 0;
    while 10u128.pow(d + 1) - 1 <= limit {
        d += 1;
    }
    d
}

/// Seconds as a number within `min..=max`, or a string like `"30s"`,
/// `"500ms"`, `"2m"`, `"1h"` (a bare number is seconds) whose digit count
/// keeps it within the range.
fn duration(min: Duration, max: Duration) -> Value {
    let (min_ms, max_ms) = (min.as_millis(), max.as_millis());
    let mut forms = Vec::new();
    for (unit_ms, suffixes) in [
        (1, &["ms"][..]),
        (1000, &["", "s"][..]),
        (60_000, &["m"][..]),
        (3_600_000, &["h"][..]),
    ] {
        let most = digits(max_ms / unit_ms);
        // The fewest digits that reach `min` (a value of 10^(k-1) or more).
        let least = if min_ms == 0 {
            1
        } else {
            digits(min_ms.div_ceil(unit_ms).saturating_sub(1)) + 1
        };
        if most == 0 || least > most {
            continue;
        }
        let number = if min_ms == 0 {
            format!("[0-9]{{1,{most}}}")
        } else {
            format!("[1-9][0-9]{{{},{}}}", least - 1, most - 1)
        };
        for suffix in suffixes {
            forms.push(format!("{number}{suffix}"));
        }
    }
    json!({"anyOf": [
        {"type": "number", "minimum": min.as_secs_f64(), "maximum": max.as_secs_f64()},
        {"type": "string", "maxLength": 64, "pattern": format!("^({})$", forms.join("|"))},
        {"type": "null"},
    ]})
}

/// Words: one string split on whitespace, or a list of strings.
fn words() -> Value {
    json!({"anyOf": [
        {"type": "string", "maxLength": ENV_VALUE_LEN, "pattern": "^[^\\u0000]*$"},
        {"type": "array", "maxItems": WORD_COUNT, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^[^\\u0000]*$"}},
        {"type": "null"},
    ]})
}

/// An absolute path that normalises to something other than `/`: its
/// components never `.` or `..`.
const DEEP_PATH: &str = "(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+/?";

fn capabilities() -> Vec<String> {
    let mut names = Vec::new();
    for name in flotilla_common::spec::host::CAPABILITIES {
        names.push((*name).to_owned());
        names.push(format!("CAP_{name}"));
    }
    names
}

/// A value an environment variable may take in a template.
fn env_value() -> Value {
    json!({"anyOf": [
        {"type": "string", "maxLength": ENV_VALUE_LEN, "pattern": "^[^\\u0000]*$"},
        {"type": "number"},
        {"type": "boolean"},
    ]})
}

/// The name pattern of an environment variable.
fn env_name() -> Value {
    json!({"pattern": format!("^[A-Za-z_][A-Za-z0-9_]{{0,{}}}$", NAME_LEN - 1)})
}

/// A config vars change: names to new values, or to `null` to remove.
pub fn config_changes() -> Value {
    json!({
        "type": "object",
        "description": "Names to values to set (string, number or boolean), or to null to remove.",
        "minProperties": 1,
        "maxProperties": ENV_COUNT,
        "propertyNames": env_name(),
        "additionalProperties": {"anyOf": [env_value(), {"type": "null"}]},
    })
}

/// The characters Rust's `trim` and `char::is_whitespace` take for space
/// (Unicode White_Space), spelled out: a pattern's `\s` means ECMAScript's
/// set, which differs (U+0085, U+FEFF), and the document must say exactly
/// what the parser does.
const SPACE: &str =
    "\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// A string with something other than space in it (what `trim` leaves
/// non-empty).
fn not_blank() -> String {
    format!("[^{SPACE}]")
}

/// An HTTP GET on the container's port: a health check's or a pre-stop
/// hook's `http`.
fn http_target() -> Value {
    json!({"type": "object", "maxProperties": 8, "required": ["port"], "properties": {
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "path": {"type": ["string", "null"], "maxLength": 2048, "pattern": "^/[!-~]*$"},
    }})
}

/// `health_check`: exactly one of `http` and `command`.
fn health_check() -> Value {
    json!({"anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 16, "properties": {
                "http": http_target(),
                "command": {"anyOf": [
                    {"type": "string", "maxLength": ENV_VALUE_LEN, "pattern": format!("^[^\\u0000]*[^\\u0000{SPACE}][^\\u0000]*$")},
                    {"type": "array", "minItems": 1, "maxItems": WORD_COUNT, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^[^\\u0000]*$"}},
                ]},
                "interval": duration(MIN_PROBE, MAX_PROBE),
                "timeout": duration(MIN_PROBE, MAX_PROBE),
                "start_period": duration(Duration::ZERO, MAX_PROBE),
                "retries": {"type": ["integer", "null"], "minimum": 0, "maximum": RETRIES},
            }, "oneOf": [{"required": ["http"]}, {"required": ["command"]}]}]})
}

/// `pre_stop`: exactly one of `exec` and `http` (a null is not given).
fn pre_stop() -> Value {
    json!({"anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 8,
    "description": "Runs before SIGTERM on every stop (update, delete, drain, spot, scale-down, operator stop), waited for up to its timeout; its outcome goes into the status reason.",
    "properties": {
        "exec": {"anyOf": [
            {"type": "string", "maxLength": ENV_VALUE_LEN, "pattern": format!("^[^\\u0000]*[^\\u0000{SPACE}][^\\u0000]*$")},
            {"type": "array", "minItems": 1, "maxItems": WORD_COUNT, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^[^\\u0000]*$"}},
            {"type": "null"},
        ]},
        "http": {"anyOf": [http_target(), {"type": "null"}]},
        "timeout": duration(MIN_PROBE, MAX_GRACE),
    },
    "oneOf": [
        {"required": ["exec"], "properties": {"exec": {"not": {"type": "null"}}}},
        {"required": ["http"], "properties": {"http": {"not": {"type": "null"}}}},
    ]}]})
}

/// The container section, as `flotilla_common::spec` parses it.
pub fn container_section() -> Value {
    let ws = format!("[^{SPACE}\\u0000-\\u001f\\u007f-\\u009f");
    // The parser's rule exactly: a tag is what follows the last ':' when
    // that comes after the last '/' (and is not the first character); the
    // repository before it, or the whole name when there is no tag, is
    // lowercase parts that are never empty.
    let repository = "[a-z0-9._:][a-z0-9._:-]*(/[a-z0-9._:-]+)*";
    let image = format!(
        "^({repository}:{ws}/@:]*|{repository}/[a-z0-9._-]+|[a-z0-9._][a-z0-9._-]*|:[a-z0-9._-]*)(@{ws}]*)?$"
    );
    let env_value = env_value();
    let volume_name = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}";
    let volume = format!("^({volume_name}|/[^\\u0000:]*):{DEEP_PATH}(:(ro|rw))?$");
    let permissions = "r|w|m|rw|wr|rm|mr|wm|mw|rwm|rmw|wrm|wmr|mrw|mwr";
    let device = format!(
        "^/dev/[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]*)*(:{DEEP_PATH})?(:({permissions}))?$"
    );
    json!({
        "type": "object",
        "description": "The container a configuration runs (what every agent can start). Unknown members are kept and ignored.",
        "maxProperties": 256,
        "required": ["image"],
        "properties": {
            "image": {"anyOf": [
                {"type": "string", "minLength": 1, "maxLength": IMAGE_LEN, "pattern": image},
                {"const": "${computed}"},
            ]},
            "command": words(),
            "entrypoint": words(),
            "environment_variables": {
                "type": ["object", "null"],
                "maxProperties": ENV_COUNT,
                "propertyNames": env_name(),
                "additionalProperties": env_value,
            },
            "secret_variables": {
                "type": ["array", "null"],
                "description": "Names of environment variables whose values operators see as \"[redacted]\" (describe, config vars); agents get the values.",
                "maxItems": ENV_COUNT,
                "items": {"type": "string", "pattern": env_name()["pattern"]},
            },
            "ports": {"type": ["array", "null"], "maxItems": PORT_COUNT, "items": port(true)},
            "volumes": {"type": ["array", "null"], "maxItems": VOLUME_COUNT, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": volume}},
            "labels": {
                "type": ["object", "null"],
                "maxProperties": LABEL_COUNT,
                "propertyNames": {"minLength": 1, "maxLength": NAME_LEN, "pattern": "^(?!flotilla\\.)[^\\u0000]*$"},
                "additionalProperties": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^[^\\u0000]*$"},
            },
            "restart": {"anyOf": [
                {"enum": ["always", "never", "no", "on-failure", null]},
                {"type": "object", "maxProperties": 4, "required": ["policy"], "properties": {
                    "policy": {"enum": ["always", "never", "no", "on-failure"]},
                    "max_attempts": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_ATTEMPTS},
                }},
            ]},
            "memory": {"anyOf": [
                {"type": "integer", "minimum": MIN_MEMORY, "maximum": MAX_MEMORY},
                {"type": "string", "pattern": "^([7-9]|[1-9][0-9]{1,5})[mM]$|^[1-9][0-9]{0,2}[gG]$"},
                {"type": "null"},
            ]},
            "cpus": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": CPUS},
            "stop_grace_period": duration(Duration::ZERO, MAX_GRACE),
            "health_check": health_check(),
            "pre_stop": pre_stop(),
            "registry": {"type": ["object", "null"], "maxProperties": 8, "required": ["username", "password"], "properties": {
                "server": {"type": ["string", "null"], "minLength": 1, "maxLength": 256, "pattern": "^[!-~]+$"},
                "username": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^[^\\u0000]*$"},
                "password": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^[^\\u0000]*$"},
            }},
            "pull_policy": {"enum": ["if-not-present", "always", null]},
            "gitRepo": {"anyOf": [
                {"type": "string", "maxLength": TEXT_LEN, "pattern": "^(https://([A-Za-z0-9._-]+@)?|ssh://([A-Za-z0-9._][A-Za-z0-9._-]*@)?)[A-Za-z0-9._][A-Za-z0-9._-]*(:[0-9]{1,5})?/[!-~]+$|^[A-Za-z0-9._][A-Za-z0-9._-]*@[A-Za-z0-9._][A-Za-z0-9._-]*:[!-~]+$|^$"},
                {"type": "null"},
            ]},
            "gitReference": {"type": ["string", "null"], "maxLength": 256, "pattern": "^([A-Za-z0-9_/+][A-Za-z0-9_/+-]*(\\.[A-Za-z0-9_/+-]+)*)?$"},
            "gitPrivateKey": text(KEY_LEN),
            "gitKnownHosts": text(KEY_LEN),
            "gitTrustOnFirstUse": {"type": ["boolean", "null"]},
            "gitPoll": duration(MIN_GIT_POLL, MAX_GIT_POLL),
            "codeDir": {"type": ["string", "null"], "maxLength": TEXT_LEN, "pattern": format!("^{DEEP_PATH}$")},
            "privileged": {"type": ["boolean", "null"]},
            "cap_add": {"type": ["array", "null"], "maxItems": HOST_LIST_COUNT, "items": {"enum": capabilities()}},
            "network_mode": {"enum": ["bridge", "none", "host", null]},
            "pid_mode": {"enum": ["host", null]},
            "ipc_mode": {"enum": ["host", null]},
            "devices": {"type": ["array", "null"], "maxItems": HOST_LIST_COUNT, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": device}},
            "security_opt": {"type": ["array", "null"], "maxItems": HOST_LIST_COUNT, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": format!("^({})([=:][^\\u0000]*)?$", flotilla_common::spec::host::SECURITY_OPTS.join("|"))}},
        },
        // A container without the agent's bridge publishes no host port
        // and probes by command.
        "if": {"required": ["network_mode"], "properties": {"network_mode": {"enum": ["none", "host"]}}},
        "then": {"properties": {
            "ports": {"type": ["array", "null"], "items": port(false)},
            "health_check": {"anyOf": [{"type": "null"}, {"not": {"required": ["http"]}}]},
            "pre_stop": {"anyOf": [{"type": "null"}, {"not": {"required": ["http"]}}, {"properties": {"http": {"type": "null"}}}]},
        }},
    })
}

/// The template body: the ALM template, every configuration with a
/// unique flag, a provision and (optionally) a container section.
pub fn template() -> Value {
    json!({
        "type": "object",
        "description": "An ALM template. Unknown members are kept as they are.",
        "required": ["version", "configurations"],
        "properties": {
            "version": {"type": "string", "pattern": not_blank()},
            "label": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"]},
            "vendor": {"type": "object"},
            "configurations": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/Configuration"},
            },
        },
    })
}

/// One configuration of a template.
pub fn configuration() -> Value {
    json!({
        "type": "object",
        "required": ["role", "flag", "provision"],
        "properties": {
            "role": {"type": "string", "pattern": not_blank()},
            "flag": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                "description": "Unique within the template (a repeat is 409 `duplicate_flag`)."},
            "provision": {
                "type": "object",
                "required": ["instance_count"],
                "properties": {
                    "instance_type": {"type": ["string", "null"]},
                    "instance_count": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
                    "pool": {"type": ["string", "null"], "description": "The pool to run in (default: the owner's first pool)."},
                },
            },
            "container": {"$ref": "#/components/schemas/ContainerSection"},
        },
    })
}

/// A pool's container policy (`flotilla_common::policy::Policy`).
pub fn policy() -> Value {
    json!({
        "type": "object",
        "description": "What containers in the pool may ask of the host; everything is refused unless allowed.",
        "additionalProperties": false,
        "properties": {
            "host_paths": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": TEXT_LEN, "pattern": "^/[^\\u0000]*$"}},
            "allow_privileged": {"type": "boolean"},
            "allow_cap_add": {"type": "array", "maxItems": 64, "items": {"enum": capabilities()}},
            "allow_host_network": {"type": "boolean"},
            "allow_host_pid_ipc": {"type": "boolean"},
            "allow_devices": {"type": "boolean"},
            "allow_security_opt": {"type": "boolean"},
        },
    })
}

/// Adds the schemas above to `doc`'s components and points the template
/// bodies and the pools' `policy` at them; the join-token request gets
/// its "both or neither" rule.
pub fn install(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    schemas.insert("Template".into(), template());
    schemas.insert("Configuration".into(), configuration());
    schemas.insert("ContainerSection".into(), container_section());
    schemas.insert("Policy".into(), policy());
    if let Some(mut create) = schemas.get("PoolRequest").cloned() {
        create["required"] = json!(["name"]);
        if let Some(name) = create.pointer_mut("/properties/name/type") {
            *name = json!("string");
        }
        schemas.insert("CreatePool".into(), create);
    }
    let statuses: Vec<&str> = flotilla_common::status::ContainerStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let policy = json!({"$ref": "#/components/schemas/Policy"});
    // The same bound as a template's count (utoipa would say int64).
    let count = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
    for (name, pointer, value) in [
        ("FormationItem", "/properties/instance_count", &count),
        ("PoolRequest", "/properties/policy", &policy),
        ("CreatePool", "/properties/policy", &policy),
        ("PoolView", "/properties/policy", &policy),
        (
            "ContainerStatusReport",
            "/properties/status",
            &json!({"enum": statuses}),
        ),
    ] {
        if let Some(slot) = schemas.get_mut(name).and_then(|s| s.pointer_mut(pointer)) {
            *slot = value.clone();
        }
    }
    for (name, keyword, value) in [
        // Both or neither: a pin names a stack and its flag.
        (
            "CreateJoinToken",
            "anyOf",
            json!([
                {"required": ["stack_id", "flag"], "properties": {"stack_id": {"type": "string"}, "flag": {"type": "string"}}},
                {"properties": {"stack_id": {"type": "null"}, "flag": {"type": "null"}}},
            ]),
        ),
        ("VersionItem", "minProperties", json!(1)),
        ("VersionItem", "maxProperties", json!(1)),
        (
            "CompareRequest",
            "oneOf",
            json!([
                {"required": ["id"], "properties": {"id": {"type": "array"}, "body": {"type": "null"}}},
                {"required": ["body"], "properties": {"body": {"type": "array"}, "id": {"type": "null"}}},
            ]),
        ),
    ] {
        if let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            schema.insert(keyword.into(), value);
        }
    }
    schemas.insert("ConfigChanges".into(), config_changes());
    let template = json!({"$ref": "#/components/schemas/Template"});
    let create_pool = json!({"$ref": "#/components/schemas/CreatePool"});
    let config_changes = json!({"$ref": "#/components/schemas/ConfigChanges"});
    let formation = json!({
        "type": "array",
        "minItems": 1,
        "maxItems": 1024,
        "items": {"$ref": "#/components/schemas/FormationItem"},
    });
    for (pointer, schema) in [
        ("/paths/~1v3~1alm~1template/post/requestBody/content/application~1json/schema", &template),
        ("/paths/~1v3~1alm~1template~1{template_id}/put/requestBody/content/application~1json/schema", &template),
        ("/paths/~1v3~1alm~1pools/post/requestBody/content/application~1json/schema", &create_pool),
        ("/paths/~1v3~1alm~1stack~1{stack_id}~1config~1{flag}/patch/requestBody/content/application~1json/schema", &config_changes),
        ("/paths/~1v3~1alm~1stack~1{stack_id}~1formation/patch/requestBody/content/application~1json/schema", &formation),
    ] {
        if let Some(slot) = doc.pointer_mut(pointer) {
            *slot = schema.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{container_section, digits, duration, install, template};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::time::Duration;

    /// The image pattern as a regex, and whether the parser takes `image`.
    fn image_pattern() -> regex::Regex {
        let section = container_section();
        let pattern = section
            .pointer("/properties/image/anyOf/0/pattern")
            .and_then(Value::as_str)
            .expect("an image pattern");
        regex::Regex::new(pattern).expect("a regex")
    }

    fn parser_takes(image: &str) -> bool {
        flotilla_common::spec::ContainerSpec::parse(&json!({ "image": image }).to_string()).is_ok()
    }

    #[test]
    fn the_image_pattern_is_the_parser_table() {
        let pattern = image_pattern();
        for image in [
            "web",
            "localhost:5000/web:1",
            "a/b:c",
            "a/:b/c",
            ":m",
            "a:",
            "a/b@sha256:abc",
            "t0/zqgfqpe/p/:m",
            "web//x",
            "Web:1",
            "a/b/",
            "-a",
            "a b",
        ] {
            assert_eq!(pattern.is_match(image), parser_takes(image), "{image:?}");
        }
    }

    #[test]
    fn not_blank_is_what_trim_leaves() {
        let pattern = regex::Regex::new(&super::not_blank()).expect("a regex");
        for text in [
            "web",
            " a ",
            "\u{85}",
            "\u{feff}",
            "\u{3000}",
            "\u{a0}\t",
            "",
            " ",
            "\u{2028}x",
            "\u{180e}",
        ] {
            assert_eq!(pattern.is_match(text), !text.trim().is_empty(), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn the_image_pattern_agrees_with_the_parser(image in "[a0._:/@A \\té#\u{85}\u{feff}-]{1,12}") {
            prop_assert_eq!(image_pattern().is_match(&image), parser_takes(&image), "{:?}", image);
        }
    }

    fn pattern(schema: &Value) -> &str {
        schema["anyOf"][1]["pattern"].as_str().unwrap_or_default()
    }

    #[test]
    fn digits_table() {
        for (limit, want) in [
            (0, 0),
            (8, 0),
            (9, 1),
            (99, 2),
            (600, 2),
            (999, 3),
            (1000, 3),
        ] {
            assert_eq!(digits(limit), want, "{limit}");
        }
    }

    #[test]
    fn duration_strings_stay_within_their_range() {
        let cases = [
            // 0..=600 s: at most 99 s, 99999 ms, 9 m; no hours.
            (
                Duration::ZERO,
                Duration::from_secs(600),
                "^([0-9]{1,5}ms|[0-9]{1,2}|[0-9]{1,2}s|[0-9]{1,1}m)$",
            ),
            // 100 ms..=1 h: 100..=999999 ms, 1..=999 s, 1..=9 m (every
            // whole hour count of one digit could pass 1 h: none).
            (
                Duration::from_millis(100),
                Duration::from_secs(3600),
                "^([1-9][0-9]{2,5}ms|[1-9][0-9]{0,2}|[1-9][0-9]{0,2}s|[1-9][0-9]{0,0}m)$",
            ),
        ];
        for (min, max, want) in cases {
            let schema = duration(min, max);
            assert_eq!(pattern(&schema), want, "{min:?}..={max:?}");
            assert_eq!(schema["anyOf"][0]["minimum"], json!(min.as_secs_f64()));
            assert_eq!(schema["anyOf"][0]["maximum"], json!(max.as_secs_f64()));
        }
    }

    #[test]
    fn install_points_the_bodies_at_the_schemas() {
        let mut doc = json!({
            "components": {"schemas": {"PoolRequest": {"properties": {"policy": {}, "name": {"type": ["string", "null"]}}}}},
            "paths": {"/v3/alm/template": {"post": {"requestBody": {"content": {"application/json": {"schema": {}}}}}}},
        });
        install(&mut doc);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Template"], template());
        assert_eq!(schemas["CreatePool"]["required"], json!(["name"]));
        assert_eq!(
            schemas["CreatePool"]["properties"]["name"]["type"],
            "string"
        );
        assert_eq!(
            schemas["PoolRequest"]["properties"]["policy"]["$ref"],
            "#/components/schemas/Policy"
        );
        assert_eq!(
            doc.pointer(
                "/paths/~1v3~1alm~1template/post/requestBody/content/application~1json/schema/$ref"
            ),
            Some(&json!("#/components/schemas/Template"))
        );
    }
}
