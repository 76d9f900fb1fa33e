//! The nftables table the agent owns, rendered from its routes: pure, so
//! the whole ruleset is table-tested without a kernel.
//!
//! One table per agent (`ip flotilla_<agent>`), replaced whole in one `nft
//! -f` transaction, so a change is atomic: a new connection meets either
//! the old routes or the new ones, never none. Connections already open
//! keep their translation (conntrack), which is what lets an old container
//! drain while new connections go to its successor.

use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// A transport protocol a host port is published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name nft and Docker use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Traffic to a host port, sent on to a container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    pub protocol: Protocol,
    /// The host address it is published on; `None`: every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    /// The container's address on its network, and its port.
    pub target: Ipv4Addr,
    pub target_port: u16,
}

/// Whether two routes claim the same host port: one protocol, one port,
/// and the same address or either on every address.
pub fn overlap(a: &Route, b: &Route) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_none() || b.host_ip.is_none())
}

/// Priority of the agent's NAT chains: just before Docker's own (-100), so
/// a port the agent routes is never taken by an older Docker binding.
const PRIORITY: i32 = -110;

/// The table's name for an agent: `flotilla_` and the id, with anything
/// but letters, digits and `_` made `_`.
pub fn table_name(agent_id: &str) -> String {
    let id: String = agent_id
        .chars()
        .take(200)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("flotilla_{id}")
}

/// The `nft -f` script that replaces the table with one holding `routes`.
/// (`add` then `delete` then the definition: the delete never fails, and
/// the kernel applies the three at once.)
pub fn ruleset(table: &str, routes: &[Route]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "add table ip {table}");
    let _ = writeln!(out, "delete table ip {table}");
    let _ = writeln!(out, "table ip {table} {{");
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let name = protocol.name();
        let mut addressed: Vec<&Route> = routes
            .iter()
            .filter(|r| r.protocol == protocol && r.host_ip.is_some())
            .collect();
        addressed.sort();
        addressed.dedup_by_key(|r| (r.host_ip, r.host_port));
        let mut any: Vec<&Route> = routes
            .iter()
            .filter(|r| r.protocol == protocol && r.host_ip.is_none())
            .collect();
        any.sort();
        any.dedup_by_key(|r| r.host_port);
        let _ = writeln!(out, "    map {name}_addr {{");
        let _ = writeln!(
            out,
            "        type ipv4_addr . inet_service : ipv4_addr . inet_service"
        );
        if !addressed.is_empty() {
            let elements: Vec<String> = addressed
                .iter()
                .filter_map(|r| {
                    r.host_ip.map(|ip| {
                        format!("{ip} . {} : {} . {}", r.host_port, r.target, r.target_port)
                    })
                })
                .collect();
            let _ = writeln!(out, "        elements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(out, "    }}");
        let _ = writeln!(out, "    map {name}_any {{");
        let _ = writeln!(out, "        type inet_service : ipv4_addr . inet_service");
        if !any.is_empty() {
            let elements: Vec<String> = any
                .iter()
                .map(|r| format!("{} : {} . {}", r.host_port, r.target, r.target_port))
                .collect();
            let _ = writeln!(out, "        elements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(out, "    }}");
    }
    // Connections from outside (prerouting) and from this host (output),
    // to any of its own addresses.
    let dnat: Vec<String> = ["tcp", "udp"]
        .iter()
        .flat_map(|name| {
            [
                format!("fib daddr type local dnat to ip daddr . {name} dport map @{name}_addr"),
                format!("fib daddr type local dnat to {name} dport map @{name}_any"),
            ]
        })
        .collect();
    for hook in ["prerouting", "output"] {
        chain(
            &mut out,
            hook,
            &format!("nat hook {hook} priority {PRIORITY}"),
            &dnat,
        );
    }
    // A connection from 127.0.0.1 leaves for a bridge with a loopback
    // source the container could not answer: it takes the bridge's.
    chain(
        &mut out,
        "postrouting",
        "nat hook postrouting priority srcnat",
        &["ip saddr 127.0.0.0/8 oifname != \"lo\" ct status dnat masquerade".to_owned()],
    );
    // route_localnet is on for routed bridges ([`super::localnet`]): only
    // replies of connections the agent translated may reach 127.0.0.0/8
    // from outside `lo`.
    chain(
        &mut out,
        "input",
        "filter hook input priority filter",
        &["iifname != \"lo\" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop".to_owned()],
    );
    let _ = writeln!(out, "}}");
    out
}

/// A base chain: its `type ... hook ... priority` and its rules.
fn chain(out: &mut String, name: &str, hook: &str, rules: &[String]) {
    let _ = writeln!(out, "    chain {name} {{");
    let _ = writeln!(out, "        type {hook}; policy accept;");
    for rule in rules {
        let _ = writeln!(out, "        {rule}");
    }
    let _ = writeln!(out, "    }}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(protocol: Protocol, host_ip: Option<[u8; 4]>, port: u16, target: [u8; 4]) -> Route {
        Route {
            protocol,
            host_ip: host_ip.map(Ipv4Addr::from),
            host_port: port,
            target: Ipv4Addr::from(target),
            target_port: 80,
        }
    }

    #[test]
    fn overlapping_claims() {
        let local = route(Protocol::Tcp, Some([127, 0, 0, 1]), 8081, [172, 18, 0, 2]);
        for (other, overlaps) in [
            (
                route(Protocol::Tcp, Some([127, 0, 0, 1]), 8081, [172, 18, 0, 9]),
                true,
            ),
            (route(Protocol::Tcp, None, 8081, [172, 18, 0, 9]), true),
            (
                route(Protocol::Tcp, Some([10, 0, 0, 1]), 8081, [172, 18, 0, 9]),
                false,
            ),
            (
                route(Protocol::Udp, Some([127, 0, 0, 1]), 8081, [172, 18, 0, 9]),
                false,
            ),
            (
                route(Protocol::Tcp, Some([127, 0, 0, 1]), 8082, [172, 18, 0, 9]),
                false,
            ),
        ] {
            assert_eq!(overlap(&local, &other), overlaps, "{other:?}");
            assert_eq!(overlap(&other, &local), overlaps, "{other:?}");
        }
    }

    #[test]
    fn table_names_are_nft_identifiers() {
        for (agent, table) in [
            ("ag-1f2e", "flotilla_ag_1f2e"),
            ("a.b c;d", "flotilla_a_b_c_d"),
        ] {
            assert_eq!(table_name(agent), table);
        }
    }

    #[test]
    fn maps_hold_each_route_once_and_empty_maps_have_no_elements() {
        let cases = [
            (vec![], vec![], vec![]),
            (
                vec![route(
                    Protocol::Tcp,
                    Some([127, 0, 0, 1]),
                    8081,
                    [172, 18, 0, 2],
                )],
                vec!["elements = { 127.0.0.1 . 8081 : 172.18.0.2 . 80 }"],
                vec!["map tcp_any {\n        type inet_service : ipv4_addr . inet_service\n    }"],
            ),
            (
                vec![
                    route(Protocol::Udp, None, 5353, [172, 18, 0, 3]),
                    route(Protocol::Tcp, None, 8080, [172, 18, 0, 3]),
                    route(Protocol::Tcp, None, 8080, [172, 18, 0, 3]),
                ],
                vec![
                    "elements = { 5353 : 172.18.0.3 . 80 }",
                    "elements = { 8080 : 172.18.0.3 . 80 }",
                ],
                vec!["8080 : 172.18.0.3 . 80, 8080"],
            ),
        ];
        for (routes, present, absent) in cases {
            let text = ruleset("flotilla_t", &routes);
            assert!(text.starts_with(
                "add table ip flotilla_t\ndelete table ip flotilla_t\ntable ip flotilla_t {\n"
            ));
            for needle in present {
                assert!(text.contains(needle), "{needle} in {text}");
            }
            for needle in absent
                .iter()
                .filter(|n| n.contains("elements") || n.contains(", 8080"))
            {
                assert!(!text.contains(needle), "{needle} not in {text}");
            }
            assert_eq!(
                text.matches("elements").count(),
                routes
                    .iter()
                    .map(|r| (r.protocol, r.host_ip.is_some()))
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            );
            for hook in ["prerouting", "output"] {
                assert!(text.contains(&format!(
                    "type nat hook {hook} priority -110; policy accept;"
                )));
            }
            assert!(
                text.contains("ip saddr 127.0.0.0/8 oifname != \"lo\" ct status dnat masquerade")
            );
            assert!(
                text.contains("iifname != \"lo\" ip daddr 127.0.0.0/8 ct status & dnat == 0 drop")
            );
        }
    }
}
