//! Port mappings: `"8080:80/tcp"`, `"127.0.0.1:8080:80"`, `"80"` or `80`.

use super::fields::kind;
use serde_json::Value;

/// A parsed port mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The host address to publish on (all when absent).
    pub host_ip: Option<String>,
    /// `None`: exposed only, not published.
    pub host_port: Option<u16>,
    /// The port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One entry of `ports`.
pub(crate) fn port(value: &Value) -> Result<Port, String> {
    let spec = match value {
        Value::Number(number) => number
            .as_u64()
            .map(|n| n.to_string())
            .ok_or("is not a port number")?,
        Value::String(text) if text.len() <= 64 => text.trim().to_owned(),
        Value::String(_) => return Err("is too long for a port mapping".into()),
        other => {
            return Err(format!(
                "must be a port number or a mapping like \"8080:80/tcp\", not {}",
                kind(other)
            ))
        }
    };
    let bad = |why: &str| format!("{spec:?} {why} (expected \"8080:80/tcp\", \"80\" or 80)");
    let (mapping, protocol) = match spec.split_once('/') {
        Some((mapping, protocol)) => (mapping, protocol.to_ascii_lowercase()),
        None => (spec.as_str(), "tcp".to_owned()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad("has an unknown protocol"));
    }
    let number = |text: &str| -> Result<u16, String> {
        text.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("has an invalid port number"))
    };
    let parts: Vec<&str> = mapping.rsplitn(3, ':').collect();
    match parts.as_slice() {
        [container] => Ok(Port {
            host_ip: None,
            host_port: None,
            container_port: number(container)?,
            protocol,
        }),
        [container, host] => Ok(Port {
            host_ip: None,
            host_port: Some(number(host)?),
            container_port: number(container)?,
            protocol,
        }),
        [container, host, ip] => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| bad("has an invalid host address"))?;
            Ok(Port {
                host_ip: Some(ip.to_owned()),
                host_port: Some(number(host)?),
                container_port: number(container)?,
                protocol,
            })
        }
        _ => Err(bad("is malformed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports() {
        let tcp = |ip: Option<&str>, host: Option<u16>, container: u16| Port {
            host_ip: ip.map(str::to_owned),
            host_port: host,
            container_port: container,
            protocol: "tcp".into(),
        };
        for (value, want) in [
            (json!(80), Some(tcp(None, None, 80))),
            (json!("8080:80"), Some(tcp(None, Some(8080), 80))),
            (json!("8080:80/TCP"), Some(tcp(None, Some(8080), 80))),
            (
                json!("127.0.0.1:8080:80"),
                Some(tcp(Some("127.0.0.1"), Some(8080), 80)),
            ),
            (json!("abc"), None),
            (json!("80:99999"), None),
            (json!("0"), None),
            (json!(70000), None),
            (json!(-1), None),
            (json!("80/sctp"), None),
            (json!("nohost:80:80"), None),
            (json!([80]), None),
        ] {
            assert_eq!(port(&value).ok(), want, "{value}");
        }
    }
}
