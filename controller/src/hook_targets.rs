//! Where a webhook may deliver: never inward. Loopback, private,
//! multicast, unspecified and link-local addresses (the last holds the
//! cloud metadata services) are refused, at subscription and again at
//! every connection, after DNS resolution (a name can change).
//! `--webhook-allow-private` lets an operator allow loopback and private
//! receivers; link-local stays refused whatever the flag.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an address is no place for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Link-local (169.254.0.0/16, fe80::/10): cloud metadata lives here.
    LinkLocal,
    /// Loopback, private or shared ranges (allowed by the flag).
    Private,
    /// Unspecified, multicast, broadcast or reserved.
    NotUnicast,
}

fn v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() {
        Some(Refusal::LinkLocal)
    } else if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || a >= 240 || a == 0 {
        Some(Refusal::NotUnicast)
    } else if ip.is_loopback() || ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(Refusal::Private)
    } else {
        None
    }
}

fn v6(ip: Ipv6Addr) -> Option<Refusal> {
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return v4(mapped);
    }
    let first = ip.segments()[0];
    if first & 0xffc0 == 0xfe80 {
        Some(Refusal::LinkLocal)
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some(Refusal::NotUnicast)
    } else if ip.is_loopback() || first & 0xfe00 == 0xfc00 {
        Some(Refusal::Private)
    } else {
        None
    }
}

/// Whether a delivery may go to `ip`; the reason when not.
pub fn refused(ip: IpAddr, allow_private: bool) -> Option<Refusal> {
    let refusal = match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => v6(ip),
    };
    match refusal {
        Some(Refusal::Private) if allow_private => None,
        other => other,
    }
}

/// The host and port of an `http(s)://` URL.
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((host.to_owned(), parsed.port_or_known_default()?))
}

/// Resolves `url`'s host and checks every address it gives; `Err` says
/// why in words that reveal nothing about the network behind it.
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), &'static str> {
    let (host, port) = host_port(url).ok_or("the URL has no host")?;
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| "the host does not resolve")?
            .collect(),
    };
    if addresses.is_empty() {
        return Err("the host does not resolve");
    }
    if addresses
        .iter()
        .any(|a| refused(a.ip(), allow_private).is_some())
    {
        return Err("the target is an internal address");
    }
    Ok(())
}

/// The webhook client's resolver: only addresses a delivery may go to.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| refused(a.ip(), allow_private).is_none())
                .collect();
            if found.is_empty() {
                return Err("refused: the target is an internal address".into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
}

/// The resolver, shared.
pub fn resolver(allow_private: bool) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { allow_private })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_table() {
        let cases = [
            ("127.0.0.1", false, Some(Refusal::Private)),
            ("127.0.0.1", true, None),
            ("10.1.2.3", false, Some(Refusal::Private)),
            ("172.16.0.1", false, Some(Refusal::Private)),
            ("192.168.1.1", true, None),
            ("100.64.0.1", false, Some(Refusal::Private)),
            ("169.254.169.254", false, Some(Refusal::LinkLocal)),
            ("169.254.169.254", true, Some(Refusal::LinkLocal)),
            ("0.0.0.0", true, Some(Refusal::NotUnicast)),
            ("224.0.0.1", true, Some(Refusal::NotUnicast)),
            ("255.255.255.255", true, Some(Refusal::NotUnicast)),
            ("93.184.216.34", false, None),
            ("::1", false, Some(Refusal::Private)),
            ("::1", true, None),
            ("fe80::1", true, Some(Refusal::LinkLocal)),
            ("fd00::1", false, Some(Refusal::Private)),
            ("::", true, Some(Refusal::NotUnicast)),
            ("ff02::1", true, Some(Refusal::NotUnicast)),
            ("::ffff:169.254.169.254", true, Some(Refusal::LinkLocal)),
            ("::ffff:127.0.0.1", false, Some(Refusal::Private)),
            ("2606:4700::1111", false, None),
        ];
        for (ip, allow, expected) in cases {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(refused(ip, allow), expected, "{ip} allow_private={allow}");
        }
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host_port("http://[::1]:22/x"), Some(("::1".into(), 22)));
        assert_eq!(
            host_port("https://hooks.example/p"),
            Some(("hooks.example".into(), 443))
        );
        assert_eq!(host_port("nonsense"), None);
    }

    #[tokio::test]
    async fn urls_are_checked_after_resolution() {
        for url in [
            "http://127.0.0.1:9/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:22/",
            "http://10.0.0.1/",
            "http://localhost:8080/",
        ] {
            assert!(check_url(url, false).await.is_err(), "{url}");
        }
        assert!(check_url("http://127.0.0.1:9/", true).await.is_ok());
        assert!(check_url("http://169.254.169.254/", true).await.is_err());
    }
}
