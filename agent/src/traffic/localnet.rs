//! Connections from the host's own 127.0.0.1 to a routed port: after DNAT
//! they leave for a container's bridge with a loopback source, which the
//! kernel lets through only where `route_localnet` is on. The agent turns
//! it on for the bridges it routes to (as Docker does for its own), and its
//! table drops any packet for 127.0.0.0/8 that arrives from outside `lo`
//! and is not the reply of such a connection, so a neighbour or a
//! container cannot use the setting to reach the host's local services.

use std::net::Ipv4Addr;

/// The interface of the most specific non-default route in `table` (the
/// text of `/proc/net/route`) that holds `ip`.
pub fn interface_for(table: &str, ip: Ipv4Addr) -> Option<String> {
    let ip = u32::from(ip);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parse = |hex: &str| {
                u32::from_str_radix(hex, 16)
                    .ok()
                    .map(|raw| u32::from(Ipv4Addr::from(raw.to_le_bytes())))
            };
            let destination = parse(fields.get(1)?)?;
            let mask = parse(fields.get(7)?)?;
            (mask != 0 && ip & mask == destination & mask).then(|| (mask, fields[0].to_owned()))
        })
        .max_by_key(|(mask, _)| *mask)
        .map(|(_, name)| name)
}

/// Turns `route_localnet` on for the interface that reaches `target`.
pub async fn allow(target: Ipv4Addr) -> Result<(), String> {
    let table = tokio::fs::read_to_string("/proc/net/route")
        .await
        .map_err(|err| format!("cannot read /proc/net/route: {err}"))?;
    let name =
        interface_for(&table, target).ok_or_else(|| format!("no interface reaches {target}"))?;
    if name.contains('/') || name.contains("..") {
        return Err(format!("unexpected interface name {name:?}"));
    }
    let path = format!("/proc/sys/net/ipv4/conf/{name}/route_localnet");
    if tokio::fs::read_to_string(&path)
        .await
        .is_ok_and(|v| v.trim() == "1")
    {
        return Ok(());
    }
    tokio::fs::write(&path, "1")
        .await
        .map_err(|err| format!("cannot set {path}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
br-615fcb108479\t0070A8C0\t00000000\t0001\t0\t0\t0\t00F0FFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn the_most_specific_route_names_the_interface() {
        for (ip, iface) in [
            ([172, 17, 0, 2], Some("docker0")),
            ([192, 168, 112, 2], Some("br-615fcb108479")),
            ([192, 0, 2, 9], Some("eth0")),
            ([8, 8, 8, 8], None),
        ] {
            assert_eq!(
                interface_for(ROUTES, Ipv4Addr::from(ip)).as_deref(),
                iface,
                "{ip:?}"
            );
        }
        assert_eq!(interface_for("", Ipv4Addr::LOCALHOST), None);
    }
}
