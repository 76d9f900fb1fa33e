//! The parser as a whole: a full section, defaults, every problem with its
//! pointer, and a property test that no input panics.

use super::*;
use proptest::prelude::*;
use serde_json::json;

#[test]
fn a_full_spec_parses() {
    let spec = ContainerSpec::parse(
        r#"{
            "image": "localhost:5000/web:1",
            "command": "httpd -f -p 80",
            "environment_variables": {"STAGE": "dev", "PORT": 80, "DEBUG": true},
            "ports": ["8080:80/tcp", 9000, "127.0.0.1:5353:53/udp"],
            "volumes": ["/srv/data:/data:ro", "cache:/cache"],
            "labels": {"team": "web"},
            "restart": {"policy": "on-failure", "max_attempts": 3},
            "memory": "256m",
            "cpus": 0.5,
            "stop_grace_period": "10s",
            "health_check": {"http": {"path": "/health", "port": 80}, "interval": "2s", "retries": 2},
            "registry": {"username": "u", "password": "p"},
            "pull_policy": "always",
            "privileged": true,
            "cap_add": ["CAP_NET_ADMIN", "sys_time"],
            "devices": ["/dev/fuse"],
            "security_opt": ["no-new-privileges"],
            "pid_mode": "host",
            "ipc_mode": "host",
            "gitRepo": "https://git.example.com/site.git",
            "gitPoll": "1m",
            "secret_variables": ["DEBUG"],
            "x-unknown": {"kept": "ignored"}
        }"#,
    )
    .expect("valid");
    assert_eq!(spec.secret_variables, ["DEBUG"]);
    assert_eq!(
        spec.command.as_deref(),
        Some(&["httpd".to_owned(), "-f".into(), "-p".into(), "80".into()][..])
    );
    assert_eq!(spec.env, ["DEBUG=true", "PORT=80", "STAGE=dev"]);
    assert_eq!(spec.ports[0].host_port, Some(8080));
    assert_eq!(spec.ports[1].host_port, None);
    assert_eq!(spec.ports[2].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        spec.volumes[0].source,
        VolumeSource::HostPath("/srv/data".into())
    );
    assert!(spec.volumes[0].read_only);
    assert_eq!(spec.volumes[1].source, VolumeSource::Named("cache".into()));
    assert_eq!(spec.restart, Restart::OnFailure { max_attempts: 3 });
    assert_eq!(spec.memory_bytes, Some(256 << 20));
    assert_eq!(spec.nano_cpus, Some(500_000_000));
    assert_eq!(spec.stop_grace, Duration::from_secs(10));
    let health = spec.health.expect("health");
    assert_eq!(
        health.probe,
        Probe::Http {
            path: "/health".into(),
            port: 80
        }
    );
    assert_eq!(health.interval, Duration::from_secs(2));
    assert_eq!(health.timeout, Duration::from_secs(5));
    assert_eq!(health.retries, 2);
    let registry = spec.registry.expect("registry");
    assert_eq!(registry.server, "localhost:5000");
    assert!(
        !format!("{registry:?}").contains("\"p\""),
        "the password is never printed"
    );
    assert_eq!(spec.pull, PullPolicy::Always);
    assert!(spec.host.privileged);
    assert_eq!(spec.host.cap_add, ["NET_ADMIN", "SYS_TIME"]);
    assert_eq!(spec.host.devices[0].container, "/dev/fuse");
    assert!(spec.host.host_pid && spec.host.host_ipc);
    assert_eq!(spec.host.network, NetworkMode::Bridge);
    let git = spec.git.expect("git");
    assert_eq!(git.reference, "master");
    assert_eq!(git.poll, Some(Duration::from_secs(60)));
}

#[test]
fn defaults() {
    let spec = ContainerSpec::parse(r#"{"image": "web"}"#).expect("minimal");
    assert_eq!(spec.restart, Restart::Always);
    assert_eq!(spec.stop_grace, DEFAULT_GRACE);
    assert_eq!(spec.pull, PullPolicy::IfNotPresent);
    assert_eq!(spec.host, HostAccess::default());
    let spec = ContainerSpec::parse(r#"{"image": "web", "gitRepo": "", "memory": null}"#)
        .expect("empty and null fields are absent");
    assert!(spec.git.is_none() && spec.memory_bytes.is_none());
}

#[test]
fn pre_stop_hooks_take_exec_or_http_with_a_bounded_timeout() {
    for (section, want) in [
        (json!({"image": "web"}), None),
        (json!({"image": "web", "pre_stop": null}), None),
        (
            json!({"image": "web", "pre_stop": {"exec": ["/pre_shutdown.sh"], "timeout": "30s"}}),
            Some(PreStop {
                action: Probe::Command(vec!["/pre_shutdown.sh".into()]),
                timeout: Duration::from_secs(30),
            }),
        ),
        (
            json!({"image": "web", "pre_stop": {"exec": "sh -c drain"}}),
            Some(PreStop {
                action: Probe::Command(vec!["sh".into(), "-c".into(), "drain".into()]),
                timeout: DEFAULT_PRE_STOP,
            }),
        ),
        (
            json!({"image": "web", "pre_stop": {"http": {"path": "/drain", "port": 80}, "timeout": "10s"}}),
            Some(PreStop {
                action: Probe::Http {
                    path: "/drain".into(),
                    port: 80,
                },
                timeout: Duration::from_secs(10),
            }),
        ),
    ] {
        let spec = ContainerSpec::from_value(&section).expect("valid");
        assert_eq!(spec.pre_stop, want, "{section}");
    }
    for (section, want) in [
        (json!({"image": "web", "pre_stop": {}}), "/pre_stop"),
        (
            json!({"image": "web", "pre_stop": {"exec": ["a"], "http": {"port": 80}}}),
            "/pre_stop",
        ),
        (
            json!({"image": "web", "pre_stop": {"exec": []}}),
            "/pre_stop/exec",
        ),
        (
            json!({"image": "web", "pre_stop": {"exec": "a", "timeout": "11m"}}),
            "/pre_stop/timeout",
        ),
        (
            json!({"image": "web", "pre_stop": {"exec": "a", "timeout": "1ms"}}),
            "/pre_stop/timeout",
        ),
        (
            json!({"image": "web", "pre_stop": {"http": {"port": 0}}}),
            "/pre_stop/http",
        ),
        (
            json!({"image": "web", "network_mode": "host", "pre_stop": {"http": {"port": 80}}}),
            "/pre_stop/http",
        ),
        (
            json!({"image": "web", "pre_stop": "/pre_shutdown.sh"}),
            "/pre_stop",
        ),
    ] {
        assert_eq!(pointers(section.clone()), [want], "{section}");
    }
}

/// The pointers of the problems `section` has.
fn pointers(section: Value) -> Vec<String> {
    ContainerSpec::from_value(&section)
        .expect_err("invalid")
        .into_iter()
        .map(|p| p.path)
        .collect()
}

#[test]
fn each_refusal_has_its_pointer() {
    for (section, want) in [
        (json!({"image": "bad image"}), "/image"),
        (json!({"image": "Web:1"}), "/image"),
        (json!({"image": "web//x"}), "/image"),
        (json!({"image": "-web"}), "/image"),
        (json!({"command": "x"}), "/image"),
        (json!({"image": "web", "command": 3}), "/command"),
        (
            json!({"image": "web", "environment_variables": {"1X": "y"}}),
            "/environment_variables/1X",
        ),
        (
            json!({"image": "web", "environment_variables": {"A/B": "y"}}),
            "/environment_variables/A~1B",
        ),
        (
            json!({"image": "web", "environment_variables": {"X": [1]}}),
            "/environment_variables/X",
        ),
        (
            json!({"image": "web", "environment_variables": {"X": "a\u{0}b"}}),
            "/environment_variables/X",
        ),
        (
            json!({"image": "web", "secret_variables": ["OK", "1BAD"]}),
            "/secret_variables/1",
        ),
        (
            json!({"image": "web", "secret_variables": "TOKEN"}),
            "/secret_variables",
        ),
        (json!({"image": "web", "ports": ["abc"]}), "/ports/0"),
        (
            json!({"image": "web", "ports": [80, "80:99999"]}),
            "/ports/1",
        ),
        (json!({"image": "web", "ports": "80"}), "/ports"),
        (
            json!({"image": "web", "volumes": ["relative"]}),
            "/volumes/0",
        ),
        (
            json!({"image": "web", "labels": {"flotilla.stack": "x"}}),
            "/labels/flotilla.stack",
        ),
        (json!({"image": "web", "labels": {"x": 1}}), "/labels/x"),
        (json!({"image": "web", "restart": "sometimes"}), "/restart"),
        (
            json!({"image": "web", "restart": {"policy": "on-failure", "max_attempts": -1}}),
            "/restart",
        ),
        (json!({"image": "web", "memory": "1k"}), "/memory"),
        (json!({"image": "web", "memory": "1000000t"}), "/memory"),
        (json!({"image": "web", "cpus": 0}), "/cpus"),
        (json!({"image": "web", "cpus": 1e9}), "/cpus"),
        (
            json!({"image": "web", "stop_grace_period": "2h"}),
            "/stop_grace_period",
        ),
        (
            json!({"image": "web", "stop_grace_period": 1e20}),
            "/stop_grace_period",
        ),
        (
            json!({"image": "web", "stop_grace_period": -1}),
            "/stop_grace_period",
        ),
        (
            json!({"image": "web", "health_check": {"retries": 2}}),
            "/health_check",
        ),
        (
            json!({"image": "web", "health_check": {"command": "true", "interval": 1e300}}),
            "/health_check/interval",
        ),
        (
            json!({"image": "web", "health_check": {"command": "true", "timeout": "1ms"}}),
            "/health_check/timeout",
        ),
        (
            json!({"image": "web", "health_check": {"http": {"port": 80, "path": "/a\r\nX: y"}}}),
            "/health_check/http",
        ),
        (
            json!({"image": "web", "health_check": {"http": {"port": 0}}}),
            "/health_check/http",
        ),
        (
            json!({"image": "web", "registry": {"username": "u"}}),
            "/registry/password",
        ),
        (
            json!({"image": "web", "pull_policy": "never"}),
            "/pull_policy",
        ),
        (json!({"image": "web", "privileged": "yes"}), "/privileged"),
        (
            json!({"image": "web", "cap_add": ["NET_ADMIN", "ALL"]}),
            "/cap_add/1",
        ),
        (
            json!({"image": "web", "cap_add": ["NET_ADMIN; x"]}),
            "/cap_add/0",
        ),
        (
            json!({"image": "web", "network_mode": "container:db"}),
            "/network_mode",
        ),
        (
            json!({"image": "web", "network_mode": "host", "ports": [80, "8080:80"]}),
            "/ports/1",
        ),
        (
            json!({"image": "web", "network_mode": "none", "health_check": {"http": {"port": 80}}}),
            "/health_check/http",
        ),
        (json!({"image": "web", "pid_mode": "private"}), "/pid_mode"),
        (
            json!({"image": "web", "ipc_mode": "shareable"}),
            "/ipc_mode",
        ),
        (
            json!({"image": "web", "devices": ["/etc/shadow"]}),
            "/devices/0",
        ),
        (
            json!({"image": "web", "security_opt": ["rootless"]}),
            "/security_opt/0",
        ),
        (
            json!({"image": "web", "gitRepo": "/srv/site.git"}),
            "/gitRepo",
        ),
        (
            json!({"image": "web", "gitRepo": "file:///srv/site.git"}),
            "/gitRepo",
        ),
        (
            json!({"image": "web", "gitRepo": "http://example.com/site.git"}),
            "/gitRepo",
        ),
        (
            json!({"image": "web", "gitRepo": "git://example.com/site.git"}),
            "/gitRepo",
        ),
        (
            json!({"image": "web", "gitReference": "--upload-pack=x"}),
            "/gitReference",
        ),
        (json!({"image": "web", "gitPoll": "0s"}), "/gitPoll"),
        (json!({"image": "web", "gitPoll": 1e20}), "/gitPoll"),
        (
            json!({"image": "web", "gitTrustOnFirstUse": "yes"}),
            "/gitTrustOnFirstUse",
        ),
        (json!({"image": "web", "codeDir": "www"}), "/codeDir"),
        (json!(["image"]), ""),
    ] {
        assert_eq!(pointers(section.clone()), [want], "{section}");
    }
}

#[test]
fn every_problem_is_listed_and_secrets_are_not_repeated() {
    let problems = ContainerSpec::from_value(&json!({
        "ports": ["abc", 80, "1:2:3:4"],
        "stop_grace_period": 1e20,
        "environment_variables": {"DB_PASSWORD": {"secret": "hunter2"}},
        "gitRepo": "/home/user:hunter2@x",
    }))
    .expect_err("invalid");
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/image",
            "/environment_variables/DB_PASSWORD",
            "/ports/0",
            "/ports/2",
            "/stop_grace_period",
            "/gitRepo"
        ]
    );
    let text = sentence(&problems);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("/ports/0"), "{text}");
}

#[test]
fn counts_and_lengths_are_bounded() {
    let many: Vec<Value> = (0..=limits::PORT_COUNT).map(|_| json!(80)).collect();
    assert_eq!(pointers(json!({"image": "web", "ports": many})), ["/ports"]);
    let env: serde_json::Map<String, Value> = (0..=limits::ENV_COUNT)
        .map(|i| (format!("V{i}"), json!("x")))
        .collect();
    assert_eq!(
        pointers(json!({"image": "web", "environment_variables": env})),
        ["/environment_variables"]
    );
    let long = "x".repeat(limits::ENV_VALUE_LEN + 1);
    assert_eq!(
        pointers(json!({"image": "web", "environment_variables": {"X": long}})),
        ["/environment_variables/X"]
    );
    let words: Vec<Value> = (0..=limits::WORD_COUNT).map(|_| json!("a")).collect();
    assert_eq!(
        pointers(json!({"image": "web", "command": words})),
        ["/command"]
    );
    let line = "a ".repeat(limits::WORD_COUNT + 1);
    assert_eq!(
        pointers(json!({"image": "web", "command": line})),
        ["/command"]
    );
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        "[0-9.e+-]{1,12}(ms|s|m|h|k|g|t)?".prop_map(Value::String),
        "/?[a-z./:-]{0,20}(:/[a-z]{1,5})?(:ro|:rw|:rwm)?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The section's field names, so generated sections reach every parser.
const KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment_variables",
    "ports",
    "volumes",
    "labels",
    "restart",
    "memory",
    "cpus",
    "stop_grace_period",
    "health_check",
    "registry",
    "pull_policy",
    "gitRepo",
    "gitReference",
    "gitPrivateKey",
    "gitKnownHosts",
    "gitTrustOnFirstUse",
    "gitPoll",
    "codeDir",
    "privileged",
    "cap_add",
    "network_mode",
    "pid_mode",
    "ipc_mode",
    "devices",
    "security_opt",
];

/// A section with known keys holding arbitrary values.
fn any_section() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), any_json()), 0..12).prop_map(|fields| {
        let mut section: serde_json::Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if let Some(Value::Object(health)) = section.get_mut("health_check") {
            health.insert("command".into(), json!("true"));
        }
        Value::Object(section)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_section_panics(section in any_section()) {
        match ContainerSpec::from_value(&section) {
            Ok(spec) => {
                prop_assert!(spec.stop_grace <= MAX_GRACE);
                prop_assert!(spec.ports.len() <= limits::PORT_COUNT);
            }
            Err(problems) => {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|p| p.path.is_empty() || p.path.starts_with('/')));
            }
        }
    }

    #[test]
    fn no_value_panics(value in any_json()) {
        let _ = ContainerSpec::from_value(&value);
    }

    #[test]
    fn no_text_panics(text in ".{0,200}") {
        let _ = ContainerSpec::parse(&text);
    }
}
