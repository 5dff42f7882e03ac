//! The doctor's DNS questions, through the campaign's resolver (`[dns] nameservers`): an
//! empty answer for NXDOMAIN and NODATA (the checks say what a missing record means), an
//! error for SERVFAIL and timeouts (the check cannot be judged).

use std::net::IpAddr;

use mail_auth::hickory_resolver as hickory;

use hickory::proto::op::ResponseCode;
use hickory::proto::rr::{Name, RData, RecordType};
use hickory::TokioResolver;

/// What a lookup found: records, or "none" (`NXDOMAIN` is told apart for DNSBLs).
pub struct Dns {
    inner: TokioResolver,
}

/// One answer's data.
type Answer = std::result::Result<Vec<RData>, String>;

impl Dns {
    /// Wraps `inner`.
    pub fn new(inner: TokioResolver) -> Dns {
        Dns { inner }
    }

    async fn ask(&self, name: &str, t: RecordType) -> Answer {
        let n = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| format!("{name:?} is not a domain name: {e}"))?;
        match self.inner.lookup(n, t).await {
            Ok(l) => Ok(l.answers().iter().map(|r| r.data.clone()).collect()),
            Err(e) => match crate::dns::no_records(&e) {
                Some(ResponseCode::NXDomain) | Some(ResponseCode::NoError) => Ok(Vec::new()),
                _ => Err(format!("{t} lookup for {name} failed: {e}")),
            },
        }
    }

    /// The TXT records at `name`, each one's strings joined.
    pub async fn txt(&self, name: &str) -> std::result::Result<Vec<String>, String> {
        Ok(self
            .ask(name, RecordType::TXT)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    /// The A and AAAA addresses of `name`.
    pub async fn addrs(&self, name: &str) -> std::result::Result<Vec<IpAddr>, String> {
        let mut out = Vec::new();
        for t in [RecordType::A, RecordType::AAAA] {
            for d in self.ask(name, t).await? {
                match d {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The A addresses of `name` (a DNSBL's answer).
    pub async fn a(&self, name: &str) -> std::result::Result<Vec<std::net::Ipv4Addr>, String> {
        Ok(self
            .ask(name, RecordType::A)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    /// The PTR names of `ip` (lower case, no trailing dot).
    pub async fn ptr(&self, ip: IpAddr) -> std::result::Result<Vec<String>, String> {
        Ok(self
            .ask(
                &reverse_name(ip, "in-addr.arpa", "ip6.arpa"),
                RecordType::PTR,
            )
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::PTR(p) => Some(plain(&p.0)),
                _ => None,
            })
            .collect())
    }

    /// The MX records of `name`: preference and exchange (`""` for a null MX's `.`).
    pub async fn mx(&self, name: &str) -> std::result::Result<Vec<(u16, String)>, String> {
        Ok(self
            .ask(name, RecordType::MX)
            .await?
            .into_iter()
            .filter_map(|d| match d {
                RData::MX(m) => Some((m.preference, plain(&m.exchange))),
                _ => None,
            })
            .collect())
    }
}

fn plain(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// `10.113.0.203.ZONE4` for 203.0.113.10; nibbles for IPv6 (RFC 5782 §2.4).
pub fn reverse_name(ip: IpAddr, zone4: &str, zone6: &str) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone4}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            format!("{s}{zone6}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(reverse_name(ip, "zen.test", "x"), "10.113.0.203.zen.test");
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(reverse_name(ip, "a", "ip6.arpa").starts_with("1.0.0.0.0.0.0.0."));
        assert!(reverse_name(ip, "a", "ip6.arpa").ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }
}
