//! A DNS server on loopback UDP answering MX and A queries from a static zone, speaking the
//! real protocol (messages encoded by hickory-proto) so the connector's hickory resolver is
//! exercised as in production.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr as _;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Default, Clone)]
pub struct Zone {
    mx: HashMap<String, Vec<(u16, String)>>,
    a: HashMap<String, Ipv4Addr>,
}

impl Zone {
    #[must_use]
    pub fn mx(mut self, domain: &str, preference: u16, host: &str) -> Self {
        self.mx
            .entry(domain.to_owned())
            .or_default()
            .push((preference, host.to_owned()));
        self
    }

    #[must_use]
    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Self {
        self.a.insert(host.to_owned(), ip);
        self
    }
}

/// The server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    pub async fn start(zone: Zone) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Ok(bytes) = answer(&zone, &query).to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Ok(Self { addr, task })
    }
}

fn answer(zone: &Zone, query: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let mut known = false;
    for q in query.queries() {
        response.add_query(q.clone());
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        known |= zone.mx.contains_key(&name) || zone.a.contains_key(&name);
        match q.query_type() {
            RecordType::MX => {
                for (pref, host) in zone.mx.get(&name).into_iter().flatten() {
                    if let Ok(exchange) = Name::from_str(&format!("{host}.")) {
                        response.add_answer(Record::from_rdata(
                            q.name().clone(),
                            60,
                            RData::MX(MX::new(*pref, exchange)),
                        ));
                    }
                }
            }
            RecordType::A => {
                if let Some(ip) = zone.a.get(&name) {
                    response.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A(*ip))));
                }
            }
            _ => {}
        }
    }
    response.set_response_code(if known {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    });
    response
}
