//! A tiny in-process DNS responder built on hickory-proto (already in the tree under
//! mail-auth's resolver): answers from a table of MX and A records, SERVFAIL for every name
//! under the zones it is told are broken, NXDOMAIN for the rest. It stops when dropped, and
//! after 2 minutes whatever happens (a bounded loop).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{A, MX};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// The records and broken zones of a [`Zone`].
#[derive(Default, Clone)]
pub struct Records {
    mx: HashMap<String, Vec<(u16, String)>>,
    a: HashMap<String, Ipv4Addr>,
    servfail: Vec<String>,
}

impl Records {
    /// `domain MX pref host`.
    pub fn mx(mut self, domain: &str, host: &str, pref: u16) -> Records {
        self.mx
            .entry(domain.to_string())
            .or_default()
            .push((pref, host.to_string()));
        self
    }

    /// `host A ip`.
    pub fn a(mut self, host: &str, ip: &str) -> Records {
        self.a.insert(host.to_string(), ip.parse().unwrap());
        self
    }

    /// SERVFAIL for `zone` and every name under it.
    pub fn servfail(mut self, zone: &str) -> Records {
        self.servfail.push(zone.to_string());
        self
    }

    fn answer(&self, q: &Message) -> Message {
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.authoritative = true;
        let Some(query) = q.queries.first() else {
            r.metadata.response_code = ResponseCode::FormErr;
            return r;
        };
        r.add_query(query.clone());
        let name = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if self
            .servfail
            .iter()
            .any(|z| name == *z || name.ends_with(&format!(".{z}")))
        {
            r.metadata.response_code = ResponseCode::ServFail;
            return r;
        }
        let known = self.mx.contains_key(&name) || self.a.contains_key(&name);
        if !known {
            r.metadata.response_code = ResponseCode::NXDomain;
            return r;
        }
        let owner = query.name().clone();
        match query.query_type() {
            RecordType::MX => {
                for (pref, host) in self.mx.get(&name).into_iter().flatten() {
                    let exch = Name::from_ascii(format!("{host}.")).unwrap();
                    r.add_answer(Record::from_rdata(
                        owner.clone(),
                        300,
                        RData::MX(MX::new(*pref, exch)),
                    ));
                }
            }
            RecordType::A => {
                if let Some(ip) = self.a.get(&name) {
                    r.add_answer(Record::from_rdata(owner, 300, RData::A(A(*ip))));
                }
            }
            // Anything else: NODATA (NOERROR, no answer).
            _ => {}
        }
        r
    }
}

/// The responder on 127.0.0.1 (UDP); stops when dropped.
pub struct Zone {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Queries answered with SERVFAIL so far.
    pub servfails: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Zone {
    /// Starts answering from `records`.
    pub fn start(records: Records) -> Zone {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind DNS responder");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let servfails = Arc::new(AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), servfails.clone());
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if q.metadata.message_type != MessageType::Query {
                    continue;
                }
                let r = records.answer(&q);
                if r.metadata.response_code == ResponseCode::ServFail {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        Zone {
            addr,
            servfails,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Zone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
