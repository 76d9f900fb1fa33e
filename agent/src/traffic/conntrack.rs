//! Connections still open to a container, read from the kernel's
//! connection tracking table (`/proc/net/nf_conntrack`): an old container
//! is stopped only once the connections it was serving have closed (or its
//! grace runs out).

use std::net::Ipv4Addr;

/// TCP connections in `table` that `target:port` serves and that are not
/// closing: the reply direction's source is the server.
pub fn open_connections(table: &str, target: Ipv4Addr, port: u16) -> usize {
    let src = format!("src={target}");
    let sport = format!("sport={port}");
    table
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(2) != Some(&"tcp") {
                return false;
            }
            let open = fields.get(5).is_some_and(|state| {
                !matches!(
                    *state,
                    "TIME_WAIT" | "CLOSE" | "CLOSE_WAIT" | "LAST_ACK" | "FIN_WAIT"
                )
            });
            // The second src=/sport= pair is the reply direction's.
            let reply_src = fields.iter().filter(|f| f.starts_with("src=")).nth(1);
            let reply_sport = fields.iter().filter(|f| f.starts_with("sport=")).nth(1);
            open && reply_src == Some(&src.as_str()) && reply_sport == Some(&sport.as_str())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=51000 dport=8081 src=172.18.0.2 dst=172.18.0.1 sport=80 dport=51000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 119 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=51002 dport=8081 src=172.18.0.2 dst=172.18.0.1 sport=80 dport=51002 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.9 dst=10.0.0.1 sport=40000 dport=8081 src=172.18.0.2 dst=10.0.0.9 sport=80 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=51004 dport=8081 src=172.18.0.3 dst=172.18.0.1 sport=80 dport=51004 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=5000 dport=5353 src=172.18.0.2 dst=172.18.0.1 sport=80 dport=5000 mark=0 zone=0 use=2
ipv4     2 tcp      6 60 SYN_SENT src=172.18.0.1 dst=172.18.0.2 sport=52000 dport=80 [UNREPLIED] src=172.18.0.2 dst=172.18.0.1 sport=80 dport=52000 mark=0 zone=0 use=2
garbage
";

    #[test]
    fn counts_open_tcp_connections_the_target_serves() {
        for (target, port, count) in [
            ([172, 18, 0, 2], 80, 3),
            ([172, 18, 0, 3], 80, 1),
            ([172, 18, 0, 2], 81, 0),
            ([172, 18, 0, 9], 80, 0),
        ] {
            assert_eq!(
                open_connections(TABLE, Ipv4Addr::from(target), port),
                count,
                "{target:?}:{port}"
            );
        }
        assert_eq!(open_connections("", Ipv4Addr::LOCALHOST, 80), 0);
    }
}
