//! The policy check as a table: each section against each policy, with the
//! pointers it must refuse.

use super::*;
use serde_json::{json, Value};

fn spec(section: Value) -> ContainerSpec {
    ContainerSpec::from_value(&section).expect("a well-formed section")
}

fn violations(section: Value, policy: &Policy) -> Vec<String> {
    check(&spec(section), policy)
        .into_iter()
        .map(|v| v.path)
        .collect()
}

#[test]
fn default_deny_and_what_each_allowance_allows() {
    let default = Policy::default();
    let data = Policy {
        host_paths: vec!["/srv/data/".into()],
        ..Policy::default()
    };
    let everything = Policy {
        host_paths: vec!["/".into()],
        allow_privileged: true,
        allow_cap_add: vec!["CAP_NET_ADMIN".into()],
        allow_host_network: true,
        allow_host_pid_ipc: true,
        allow_devices: true,
        allow_security_opt: true,
    };
    let bind = |source: &str| json!({"image": "web", "volumes": [format!("{source}:/x")]});
    let cases: Vec<(Value, &Policy, Vec<&str>)> = vec![
        (json!({"image": "web"}), &default, vec![]),
        (
            json!({"image": "web", "volumes": ["cache:/cache"]}),
            &default,
            vec![],
        ),
        (bind("/var/run/docker.sock"), &default, vec!["/volumes/0"]),
        (bind("/"), &default, vec!["/volumes/0"]),
        (bind("/srv/data"), &default, vec!["/volumes/0"]),
        (bind("/srv/data"), &data, vec![]),
        (bind("/srv/data/x/"), &data, vec![]),
        (bind("/srv/database"), &data, vec!["/volumes/0"]),
        (bind("/srv"), &data, vec!["/volumes/0"]),
        (bind("/srv/data/../../etc"), &data, vec!["/volumes/0"]),
        (bind("/srv/data/../data/y"), &data, vec![]),
        (bind("/var/run/docker.sock"), &data, vec!["/volumes/0"]),
        (
            json!({"image": "web", "volumes": ["cache:/c", "/etc:/etc", "/srv/data:/d"]}),
            &data,
            vec!["/volumes/1"],
        ),
        (
            json!({"image": "web", "privileged": true}),
            &default,
            vec!["/privileged"],
        ),
        (
            json!({"image": "web", "privileged": false}),
            &default,
            vec![],
        ),
        (
            json!({"image": "web", "privileged": true}),
            &everything,
            vec![],
        ),
        (
            json!({"image": "web", "cap_add": ["NET_ADMIN", "SYS_ADMIN"]}),
            &everything,
            vec!["/cap_add/1"],
        ),
        (
            json!({"image": "web", "cap_add": ["cap_net_admin"]}),
            &everything,
            vec![],
        ),
        (
            json!({"image": "web", "cap_add": ["NET_ADMIN"]}),
            &default,
            vec!["/cap_add/0"],
        ),
        (
            json!({"image": "web", "network_mode": "host"}),
            &default,
            vec!["/network_mode"],
        ),
        (
            json!({"image": "web", "network_mode": "none"}),
            &default,
            vec![],
        ),
        (
            json!({"image": "web", "network_mode": "host"}),
            &everything,
            vec![],
        ),
        (
            json!({"image": "web", "pid_mode": "host", "ipc_mode": "host"}),
            &default,
            vec!["/pid_mode", "/ipc_mode"],
        ),
        (
            json!({"image": "web", "pid_mode": "host", "ipc_mode": "host"}),
            &everything,
            vec![],
        ),
        (
            json!({"image": "web", "devices": ["/dev/fuse", "/dev/kvm"]}),
            &default,
            vec!["/devices/0", "/devices/1"],
        ),
        (
            json!({"image": "web", "devices": ["/dev/fuse"]}),
            &everything,
            vec![],
        ),
        (
            json!({"image": "web", "security_opt": ["seccomp=unconfined"]}),
            &default,
            vec!["/security_opt/0"],
        ),
        (
            json!({"image": "web", "security_opt": ["seccomp=unconfined"]}),
            &everything,
            vec![],
        ),
        (bind("/var/run/docker.sock"), &everything, vec![]),
    ];
    for (section, policy, want) in cases {
        assert_eq!(
            violations(section.clone(), policy),
            want,
            "{section} under {policy:?}"
        );
    }
}

#[test]
fn violations_name_what_is_refused() {
    let found = check(
        &spec(json!({"image": "web", "volumes": ["/var/run/docker.sock:/s"], "privileged": true})),
        &Policy::default(),
    );
    assert!(
        found[0].message.contains("/var/run/docker.sock"),
        "{found:?}"
    );
    assert!(found[1].message.contains("privileged"), "{found:?}");
}

#[test]
fn a_policy_is_checked_itself() {
    assert!(Policy::default().problems().is_empty());
    let good = Policy {
        host_paths: vec!["/srv/data".into()],
        allow_cap_add: vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()],
        ..Policy::default()
    };
    assert!(good.problems().is_empty());
    let bad = Policy {
        host_paths: vec!["/srv".into(), "srv/data".into(), String::new()],
        allow_cap_add: vec!["NET_ADMIN".into(), "ALL".into(), "WHATEVER".into()],
        ..Policy::default()
    };
    let paths: Vec<String> = bad.problems().into_iter().map(|p| p.path).collect();
    assert_eq!(
        paths,
        [
            "/host_paths/1",
            "/host_paths/2",
            "/allow_cap_add/1",
            "/allow_cap_add/2"
        ]
    );
    let many = Policy {
        host_paths: (0..65).map(|i| format!("/p{i}")).collect(),
        ..Policy::default()
    };
    assert_eq!(many.problems()[0].path, "/host_paths");
}

#[test]
fn the_stored_shape_is_unchanged() {
    let policy: Policy =
        serde_json::from_value(json!({"host_paths": ["/srv"], "allow_privileged": true}))
            .expect("parses");
    assert_eq!(policy.host_paths, ["/srv"]);
    assert!(serde_json::from_value::<Policy>(json!({"allow_everything": true})).is_err());
    assert_eq!(
        serde_json::to_value(Policy::default()).expect("serialises"),
        json!({"host_paths": [], "allow_privileged": false, "allow_cap_add": [],
               "allow_host_network": false, "allow_host_pid_ipc": false,
               "allow_devices": false, "allow_security_opt": false})
    );
}
