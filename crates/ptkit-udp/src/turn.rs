//! Sans-IO TURN server (RFC 5766 UDP allocations, RFC 5389 long-term credentials): the
//! state of every allocation, permission and channel, driven by datagrams in and the time
//! passed in. No sockets, no clock: [`crate::turn_front`] is the driver.
//!
//! What it decides: replies to the client (success and error responses, Data indications,
//! ChannelData) and datagrams for peers ([`Output::ToPeer`]), which the driver carries
//! through a transport. Limits: [`TurnConfig`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::stun::{self, Builder, Class, Message, attr, method};

/// Default allocation lifetime (RFC 5766 §2.2).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Permission lifetime (RFC 5766 §8).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 5766 §11).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// The TURN front end's configuration and limits.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// REALM sent in 401/438 answers.
    pub realm: String,
    /// Long-term users: (username, password).
    pub users: Vec<(String, String)>,
    /// Longest allocation lifetime granted (default 3600 s).
    pub max_lifetime: Duration,
    /// Most allocations at once (486 Allocation Quota Reached beyond; default 256).
    pub max_allocations: usize,
    /// Most permissions per allocation (508 Insufficient Capacity beyond; default 64).
    pub max_permissions: usize,
    /// Most channels per allocation (508 beyond; default 64).
    pub max_channels: usize,
    /// How long a NONCE stays valid (438 Stale Nonce after; default 3600 s).
    pub nonce_lifetime: Duration,
    /// The address reported in XOR-RELAYED-ADDRESS (its port is made unique per
    /// allocation). Relayed addresses are virtual: peers reach the client only through the
    /// transport server, never at this address.
    pub relay_ip: IpAddr,
    /// SOFTWARE attribute of responses (`None`: omitted).
    pub software: Option<String>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: "ptkit".into(),
            users: Vec::new(),
            max_lifetime: Duration::from_secs(3600),
            max_allocations: 256,
            max_permissions: 64,
            max_channels: 64,
            nonce_lifetime: Duration::from_secs(3600),
            relay_ip: IpAddr::from([127, 0, 0, 1]),
            software: Some("ptkit".into()),
        }
    }
}

/// What the driver must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the client that spoke.
    Reply(Vec<u8>),
    /// Carry `data` from allocation `client` to `peer`.
    ToPeer {
        /// The allocation's client (its 5-tuple is client address + the front end's socket).
        client: SocketAddr,
        /// The peer (XOR-PEER-ADDRESS or the channel's peer).
        peer: SocketAddr,
        /// The UDP payload.
        data: Vec<u8>,
    },
    /// The allocation of `client` is gone: close its peer flows.
    Closed {
        /// The allocation's client.
        client: SocketAddr,
    },
}

#[derive(Debug)]
struct Allocation {
    username: String,
    key: [u8; 16],
    expires: Instant,
    relayed: SocketAddr,
    last_allocate: [u8; 12],
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }
}

/// The TURN server state machine.
#[derive(Debug)]
pub struct TurnServer {
    cfg: TurnConfig,
    keys: HashMap<String, [u8; 16]>,
    allocations: HashMap<SocketAddr, Allocation>,
    nonce: (String, Instant),
    old_nonce: Option<String>,
    next_port: u16,
    nonce_seed: u64,
}

/// RFC 5389 §15.3/§15.7 limits on text attributes.
const MAX_USERNAME: usize = 513;
const MAX_REALM_NONCE: usize = 763;

/// Comprehension-required attributes this server understands in requests.
const KNOWN: &[u16] = &[
    attr::MAPPED_ADDRESS,
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REALM,
    attr::NONCE,
    attr::XOR_RELAYED_ADDRESS,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::XOR_MAPPED_ADDRESS,
    attr::RESERVATION_TOKEN,
];

impl TurnServer {
    /// A server with no allocations; `seed` makes its nonces unpredictable (pass random
    /// bytes), `now` starts the first nonce's lifetime.
    pub fn new(cfg: TurnConfig, seed: u64, now: Instant) -> TurnServer {
        let keys = cfg
            .users
            .iter()
            .map(|(u, p)| (u.clone(), stun::long_term_key(u, &cfg.realm, p)))
            .collect();
        let mut s = TurnServer {
            cfg,
            keys,
            allocations: HashMap::new(),
            nonce: (String::new(), now),
            old_nonce: None,
            next_port: 49152,
            nonce_seed: seed,
        };
        s.nonce = (s.make_nonce(), now);
        s
    }

    fn make_nonce(&mut self) -> String {
        // A splitmix64 step over the seed: unpredictable to clients as long as the seed is.
        self.nonce_seed = self.nonce_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.nonce_seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("ptkit{:016x}", z ^ (z >> 31))
    }

    /// Number of live allocations.
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// The config.
    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// One datagram from `from` (a TURN client) at `now`.
    pub fn handle(&mut self, from: SocketAddr, b: &[u8], now: Instant) -> Vec<Output> {
        if b.first().is_some_and(|x| x >> 6 == 1) {
            return self.channel_data(from, b, now).into_iter().collect();
        }
        let msg = match Message::parse(b) {
            Ok(m) => m,
            Err(_) => {
                // A request whose header parses gets 400; anything else is silently dropped
                // (RFC 5389 §7.3).
                if stun::looks_like_stun(b)
                    && stun::split_type(u16::from_be_bytes([b[0], b[1]])).1 == Class::Request
                {
                    let mut txid = [0u8; 12];
                    txid.copy_from_slice(&b[8..20]);
                    let (m, _) = stun::split_type(u16::from_be_bytes([b[0], b[1]]));
                    return vec![Output::Reply(self.error(m, txid, 400, "Bad Request", None))];
                }
                return Vec::new();
            }
        };
        match msg.class {
            Class::Indication if msg.method == method::SEND => {
                self.send_indication(from, &msg, now).into_iter().collect()
            }
            Class::Request => self.request(from, &msg, now),
            _ => Vec::new(),
        }
    }

    /// Data from `peer` for the allocation of `client`: the bytes to send to the client (a
    /// ChannelData message when a channel is bound, else a Data indication), or `None` when
    /// there is no allocation or no permission for the peer (the datagram is dropped).
    pub fn from_peer(
        &self,
        client: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Option<Vec<u8>> {
        let a = self.allocations.get(&client)?;
        if a.expires <= now || !a.permitted(peer.ip(), now) {
            return None;
        }
        if let Some((ch, _)) = a
            .channels
            .iter()
            .find(|(_, (p, exp))| *p == peer && *exp > now)
        {
            return Some(stun::channel_data(*ch, data));
        }
        let mut txid = [0u8; 12];
        let r = self.nonce_seed.to_be_bytes();
        txid[..8].copy_from_slice(&r);
        txid[8..].copy_from_slice(&(data.len() as u32).to_be_bytes());
        Some(
            Builder::new(method::DATA, Class::Indication, txid)
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data)
                .finish(None, false),
        )
    }

    /// Expires allocations, permissions, channels and the nonce; reports closed allocations.
    pub fn expire(&mut self, now: Instant) -> Vec<Output> {
        if now.saturating_duration_since(self.nonce.1) >= self.cfg.nonce_lifetime {
            let fresh = self.make_nonce();
            let old = std::mem::replace(&mut self.nonce, (fresh, now));
            self.old_nonce = Some(old.0);
        }
        let mut out = Vec::new();
        self.allocations.retain(|client, a| {
            a.permissions.retain(|_, e| *e > now);
            a.channels.retain(|_, (_, e)| *e > now);
            let alive = a.expires > now;
            if !alive {
                out.push(Output::Closed { client: *client });
            }
            alive
        });
        out
    }

    fn channel_data(&self, from: SocketAddr, b: &[u8], now: Instant) -> Option<Output> {
        let (ch, data) = stun::parse_channel_data(b).ok()?;
        let a = self.allocations.get(&from)?;
        let (peer, exp) = a.channels.get(&ch)?;
        if *exp <= now || !a.permitted(peer.ip(), now) {
            return None;
        }
        Some(Output::ToPeer {
            client: from,
            peer: *peer,
            data: data.to_vec(),
        })
    }

    fn send_indication(&self, from: SocketAddr, m: &Message, now: Instant) -> Option<Output> {
        let a = self.allocations.get(&from)?;
        let peer = m.xor_address(attr::XOR_PEER_ADDRESS).ok()??;
        let data = m.get(attr::DATA)?;
        if a.expires <= now || !a.permitted(peer.ip(), now) {
            return None;
        }
        Some(Output::ToPeer {
            client: from,
            peer,
            data: data.to_vec(),
        })
    }

    fn builder(&self, method: u16, class: Class, txid: [u8; 12]) -> Builder {
        let b = Builder::new(method, class, txid);
        match &self.cfg.software {
            Some(s) => b.attr(attr::SOFTWARE, s.as_bytes()),
            None => b,
        }
    }

    fn error(
        &self,
        method: u16,
        txid: [u8; 12],
        code: u16,
        reason: &str,
        key: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut b = self.builder(method, Class::Error, txid).error(code, reason);
        if matches!(code, 401 | 438) {
            b = b
                .attr(attr::REALM, self.cfg.realm.as_bytes())
                .attr(attr::NONCE, self.nonce.0.as_bytes());
        }
        b.finish(key, true)
    }

    fn request(&mut self, from: SocketAddr, m: &Message, now: Instant) -> Vec<Output> {
        let txid = m.transaction_id;
        let unknown: Vec<u16> = m
            .attributes
            .iter()
            .map(|a| a.typ)
            .filter(|t| *t < 0x8000 && !KNOWN.contains(t))
            .collect();
        if !unknown.is_empty() {
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            let reply = self
                .builder(m.method, Class::Error, txid)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &list)
                .finish(None, true);
            return vec![Output::Reply(reply)];
        }
        if m.method == method::BINDING {
            let reply = self
                .builder(method::BINDING, Class::Success, txid)
                .xor_address(attr::XOR_MAPPED_ADDRESS, from)
                .finish(None, true);
            return vec![Output::Reply(reply)];
        }
        if !matches!(
            m.method,
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND
        ) {
            return vec![Output::Reply(self.error(
                m.method,
                txid,
                400,
                "Bad Request",
                None,
            ))];
        }
        // Long-term credentials (RFC 5389 §10.2.2).
        if !m.has_integrity() {
            return vec![Output::Reply(self.error(
                m.method,
                txid,
                401,
                "Unauthorized",
                None,
            ))];
        }
        let (user, realm, nonce) = match (
            m.text(attr::USERNAME, MAX_USERNAME),
            m.text(attr::REALM, MAX_REALM_NONCE),
            m.text(attr::NONCE, MAX_REALM_NONCE),
        ) {
            (Ok(Some(u)), Ok(Some(r)), Ok(Some(n))) => (u.to_owned(), r.to_owned(), n.to_owned()),
            _ => {
                return vec![Output::Reply(self.error(
                    m.method,
                    txid,
                    400,
                    "Bad Request",
                    None,
                ))];
            }
        };
        if nonce != self.nonce.0 && self.old_nonce.as_deref() != Some(nonce.as_str()) {
            return vec![Output::Reply(self.error(
                m.method,
                txid,
                438,
                "Stale Nonce",
                None,
            ))];
        }
        let key = match self.keys.get(&user) {
            Some(k) if realm == self.cfg.realm && m.verify_integrity(k) => *k,
            _ => {
                return vec![Output::Reply(self.error(
                    m.method,
                    txid,
                    401,
                    "Unauthorized",
                    None,
                ))];
            }
        };
        let key_s = key.as_slice();
        if m.method == method::ALLOCATE {
            return self.allocate(from, m, key, &user, now);
        }
        let Some(a) = self.allocations.get_mut(&from) else {
            return vec![Output::Reply(self.error(
                m.method,
                txid,
                437,
                "Allocation Mismatch",
                Some(key_s),
            ))];
        };
        if a.username != user {
            return vec![Output::Reply(self.error(
                m.method,
                txid,
                441,
                "Wrong Credentials",
                Some(key_s),
            ))];
        }
        match m.method {
            method::REFRESH => {
                let want = match m.u32_attr(attr::LIFETIME) {
                    Ok(v) => v.map(|s| Duration::from_secs(u64::from(s))),
                    Err(_) => {
                        return vec![Output::Reply(self.error(
                            m.method,
                            txid,
                            400,
                            "Bad Request",
                            Some(key_s),
                        ))];
                    }
                };
                let life = match want {
                    Some(d) if d.is_zero() => Duration::ZERO,
                    Some(d) => d.clamp(DEFAULT_LIFETIME, self.cfg.max_lifetime),
                    None => DEFAULT_LIFETIME,
                };
                let mut out = Vec::new();
                if life.is_zero() {
                    self.allocations.remove(&from);
                    out.push(Output::Closed { client: from });
                } else {
                    a.expires = now + life;
                }
                let reply = self
                    .builder(method::REFRESH, Class::Success, txid)
                    .u32_attr(attr::LIFETIME, life.as_secs() as u32)
                    .finish(Some(key_s), true);
                out.insert(0, Output::Reply(reply));
                out
            }
            method::CREATE_PERMISSION => {
                let peers: Result<Vec<SocketAddr>, _> = m
                    .get_all(attr::XOR_PEER_ADDRESS)
                    .map(|v| stun::decode_xor_address(v, &txid))
                    .collect();
                let peers = match peers {
                    Ok(p) if !p.is_empty() => p,
                    _ => {
                        return vec![Output::Reply(self.error(
                            m.method,
                            txid,
                            400,
                            "Bad Request",
                            Some(key_s),
                        ))];
                    }
                };
                if peers.iter().any(|p| p.is_ipv4() != a.relayed.is_ipv4()) {
                    return vec![Output::Reply(self.error(
                        m.method,
                        txid,
                        443,
                        "Peer Address Family Mismatch",
                        Some(key_s),
                    ))];
                }
                let fresh = peers
                    .iter()
                    .filter(|p| !a.permissions.contains_key(&p.ip()))
                    .count();
                if a.permissions.len() + fresh > self.cfg.max_permissions {
                    return vec![Output::Reply(self.error(
                        m.method,
                        txid,
                        508,
                        "Insufficient Capacity",
                        Some(key_s),
                    ))];
                }
                for p in peers {
                    a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME);
                }
                let reply = self
                    .builder(method::CREATE_PERMISSION, Class::Success, txid)
                    .finish(Some(key_s), true);
                vec![Output::Reply(reply)]
            }
            _ => {
                // ChannelBind.
                let ch = match m.get(attr::CHANNEL_NUMBER) {
                    Some(&[a, b, _, _]) => u16::from_be_bytes([a, b]),
                    _ => {
                        return vec![Output::Reply(self.error(
                            m.method,
                            txid,
                            400,
                            "Bad Request",
                            Some(key_s),
                        ))];
                    }
                };
                let peer = match m.xor_address(attr::XOR_PEER_ADDRESS) {
                    Ok(Some(p)) => p,
                    _ => {
                        return vec![Output::Reply(self.error(
                            m.method,
                            txid,
                            400,
                            "Bad Request",
                            Some(key_s),
                        ))];
                    }
                };
                let bad_bind = !(0x4000..=0x7FFE).contains(&ch)
                    || a.channels.get(&ch).is_some_and(|(p, _)| *p != peer)
                    || a.channels.iter().any(|(c, (p, _))| *p == peer && *c != ch);
                if bad_bind {
                    return vec![Output::Reply(self.error(
                        m.method,
                        txid,
                        400,
                        "Bad Request",
                        Some(key_s),
                    ))];
                }
                if peer.is_ipv4() != a.relayed.is_ipv4() {
                    return vec![Output::Reply(self.error(
                        m.method,
                        txid,
                        443,
                        "Peer Address Family Mismatch",
                        Some(key_s),
                    ))];
                }
                let new_perm = !a.permissions.contains_key(&peer.ip());
                if (!a.channels.contains_key(&ch) && a.channels.len() >= self.cfg.max_channels)
                    || (new_perm && a.permissions.len() >= self.cfg.max_permissions)
                {
                    return vec![Output::Reply(self.error(
                        m.method,
                        txid,
                        508,
                        "Insufficient Capacity",
                        Some(key_s),
                    ))];
                }
                a.channels.insert(ch, (peer, now + CHANNEL_LIFETIME));
                a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
                let reply = self
                    .builder(method::CHANNEL_BIND, Class::Success, txid)
                    .finish(Some(key_s), true);
                vec![Output::Reply(reply)]
            }
        }
    }

    fn allocate(
        &mut self,
        from: SocketAddr,
        m: &Message,
        key: [u8; 16],
        user: &str,
        now: Instant,
    ) -> Vec<Output> {
        let txid = m.transaction_id;
        let k = Some(key.as_slice());
        if let Some(a) = self.allocations.get(&from) {
            if a.last_allocate == txid && a.username == user {
                // A retransmission: answer again.
                let reply = self.allocate_success(
                    from,
                    txid,
                    a.relayed,
                    a.expires.saturating_duration_since(now),
                    &key,
                );
                return vec![Output::Reply(reply)];
            }
            return vec![Output::Reply(self.error(
                method::ALLOCATE,
                txid,
                437,
                "Allocation Mismatch",
                k,
            ))];
        }
        match m.get(attr::REQUESTED_TRANSPORT) {
            Some(&[17, _, _, _]) => {}
            Some(&[_, _, _, _]) => {
                return vec![Output::Reply(self.error(
                    method::ALLOCATE,
                    txid,
                    442,
                    "Unsupported Transport Protocol",
                    k,
                ))];
            }
            _ => {
                return vec![Output::Reply(self.error(
                    method::ALLOCATE,
                    txid,
                    400,
                    "Bad Request",
                    k,
                ))];
            }
        }
        if m.get(attr::DONT_FRAGMENT).is_some() {
            // Unknown comprehension-required for us: the transport cannot set DF.
            let reply = self
                .builder(method::ALLOCATE, Class::Error, txid)
                .error(420, "Unknown Attribute")
                .attr(attr::UNKNOWN_ATTRIBUTES, &attr::DONT_FRAGMENT.to_be_bytes())
                .finish(k, true);
            return vec![Output::Reply(reply)];
        }
        if m.get(attr::RESERVATION_TOKEN).is_some() {
            return vec![Output::Reply(self.error(
                method::ALLOCATE,
                txid,
                508,
                "Insufficient Capacity",
                k,
            ))];
        }
        match m.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None | Some(&[1, _, _, _]) if self.cfg.relay_ip.is_ipv4() => {}
            Some(&[2, _, _, _]) if self.cfg.relay_ip.is_ipv6() => {}
            None if self.cfg.relay_ip.is_ipv6() => {}
            _ => {
                return vec![Output::Reply(self.error(
                    method::ALLOCATE,
                    txid,
                    440,
                    "Address Family not Supported",
                    k,
                ))];
            }
        }
        if self.allocations.len() >= self.cfg.max_allocations {
            return vec![Output::Reply(self.error(
                method::ALLOCATE,
                txid,
                486,
                "Allocation Quota Reached",
                k,
            ))];
        }
        let life = match m.u32_attr(attr::LIFETIME) {
            Ok(Some(s)) => {
                Duration::from_secs(u64::from(s)).clamp(DEFAULT_LIFETIME, self.cfg.max_lifetime)
            }
            Ok(None) => DEFAULT_LIFETIME,
            Err(_) => {
                return vec![Output::Reply(self.error(
                    method::ALLOCATE,
                    txid,
                    400,
                    "Bad Request",
                    k,
                ))];
            }
        };
        // Virtual relayed port: even (EVEN-PORT is honoured), unique among live allocations.
        let mut port = self.next_port;
        for _ in 0..8192 {
            port = if port >= 65534 { 49152 } else { port + 2 };
            if !self.allocations.values().any(|a| a.relayed.port() == port) {
                break;
            }
        }
        self.next_port = port;
        let relayed = SocketAddr::new(self.cfg.relay_ip, port);
        self.allocations.insert(
            from,
            Allocation {
                username: user.to_owned(),
                key,
                expires: now + life,
                relayed,
                last_allocate: txid,
                permissions: HashMap::new(),
                channels: HashMap::new(),
            },
        );
        vec![Output::Reply(
            self.allocate_success(from, txid, relayed, life, &key),
        )]
    }

    fn allocate_success(
        &self,
        from: SocketAddr,
        txid: [u8; 12],
        relayed: SocketAddr,
        life: Duration,
        key: &[u8],
    ) -> Vec<u8> {
        self.builder(method::ALLOCATE, Class::Success, txid)
            .xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
            .u32_attr(attr::LIFETIME, life.as_secs() as u32)
            .xor_address(attr::XOR_MAPPED_ADDRESS, from)
            .finish(Some(key), true)
    }

    /// The key of the allocation of `client` (for tests and drivers that sign).
    pub fn allocation_key(&self, client: SocketAddr) -> Option<[u8; 16]> {
        self.allocations.get(&client).map(|a| a.key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const C: &str = "10.0.0.1:5000";
    const P: &str = "192.0.2.9:7000";

    fn server(now: Instant) -> TurnServer {
        let cfg = TurnConfig {
            users: vec![("user".into(), "pass".into())],
            realm: "realm".into(),
            ..TurnConfig::default()
        };
        TurnServer::new(cfg, 42, now)
    }

    fn reply(out: &[Output]) -> Message {
        match &out[0] {
            Output::Reply(b) => Message::parse(b).unwrap(),
            o => panic!("{o:?}"),
        }
    }

    fn code(m: &Message) -> u16 {
        m.error_code().unwrap().map(|c| c.0).unwrap_or(0)
    }

    struct Client {
        nonce: String,
        key: [u8; 16],
        n: u8,
    }

    impl Client {
        fn req(&mut self, method: u16, f: impl FnOnce(Builder) -> Builder) -> Vec<u8> {
            self.n += 1;
            let b = Builder::new(method, Class::Request, [self.n; 12])
                .attr(attr::USERNAME, b"user")
                .attr(attr::REALM, b"realm")
                .attr(attr::NONCE, self.nonce.as_bytes());
            f(b).finish(Some(&self.key), true)
        }
    }

    fn login(s: &mut TurnServer, now: Instant) -> Client {
        let c: SocketAddr = C.parse().unwrap();
        let first = Builder::new(method::ALLOCATE, Class::Request, [0; 12])
            .attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .finish(None, false);
        let r = reply(&s.handle(c, &first, now));
        assert_eq!(code(&r), 401);
        let nonce = r.text(attr::NONCE, 763).unwrap().unwrap().to_owned();
        assert_eq!(r.text(attr::REALM, 763).unwrap(), Some("realm"));
        Client {
            nonce,
            key: stun::long_term_key("user", "realm", "pass"),
            n: 0,
        }
    }

    #[test]
    fn allocate_permission_send_and_data() {
        let now = Instant::now();
        let mut s = server(now);
        let mut cl = login(&mut s, now);
        let c: SocketAddr = C.parse().unwrap();
        let p: SocketAddr = P.parse().unwrap();
        let req = cl.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        let r = reply(&s.handle(c, &req, now));
        assert_eq!(r.class, Class::Success, "{:?}", r.error_code());
        assert!(r.verify_integrity(&cl.key));
        assert_eq!(r.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(), Some(c));
        assert_eq!(r.u32_attr(attr::LIFETIME).unwrap(), Some(600));
        // Retransmission answers again; a new Allocate is a mismatch.
        assert_eq!(reply(&s.handle(c, &req, now)).class, Class::Success);
        let again = cl.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        assert_eq!(code(&reply(&s.handle(c, &again, now))), 437);
        // No permission: Send is dropped, peer data is dropped.
        let send = Builder::new(method::SEND, Class::Indication, [9; 12])
            .xor_address(attr::XOR_PEER_ADDRESS, p)
            .attr(attr::DATA, b"hi")
            .finish(None, false);
        assert!(s.handle(c, &send, now).is_empty());
        assert!(s.from_peer(c, p, b"x", now).is_none());
        let perm = cl.req(method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, p)
        });
        assert_eq!(reply(&s.handle(c, &perm, now)).class, Class::Success);
        assert_eq!(
            s.handle(c, &send, now),
            vec![Output::ToPeer {
                client: c,
                peer: p,
                data: b"hi".to_vec()
            }]
        );
        let data = Message::parse(&s.from_peer(c, p, b"back", now).unwrap()).unwrap();
        assert_eq!((data.method, data.class), (method::DATA, Class::Indication));
        assert_eq!(data.get(attr::DATA), Some(&b"back"[..]));
        assert_eq!(data.xor_address(attr::XOR_PEER_ADDRESS).unwrap(), Some(p));
        // Channel: ChannelData both ways.
        let bind = cl.req(method::CHANNEL_BIND, |b| {
            b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x01, 0, 0])
                .xor_address(attr::XOR_PEER_ADDRESS, p)
        });
        assert_eq!(reply(&s.handle(c, &bind, now)).class, Class::Success);
        assert_eq!(
            s.handle(c, &stun::channel_data(0x4001, b"cd"), now),
            vec![Output::ToPeer {
                client: c,
                peer: p,
                data: b"cd".to_vec()
            }]
        );
        assert_eq!(
            s.from_peer(c, p, b"cd", now).unwrap(),
            stun::channel_data(0x4001, b"cd")
        );
        // Permissions expire after 300 s unless refreshed; the allocation after 600 s.
        let later = now + Duration::from_secs(301);
        assert!(s.expire(later).is_empty());
        assert!(s.from_peer(c, p, b"x", later).is_none());
        assert_eq!(
            s.expire(now + Duration::from_secs(601)),
            vec![Output::Closed { client: c }]
        );
        assert_eq!(s.allocations(), 0);
    }

    #[test]
    fn refresh_and_delete() {
        let now = Instant::now();
        let mut s = server(now);
        let mut cl = login(&mut s, now);
        let c: SocketAddr = C.parse().unwrap();
        let r = cl.req(method::REFRESH, |b| b);
        assert_eq!(code(&reply(&s.handle(c, &r, now))), 437);
        let a = cl.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .u32_attr(attr::LIFETIME, 99_999)
        });
        assert_eq!(
            reply(&s.handle(c, &a, now))
                .u32_attr(attr::LIFETIME)
                .unwrap(),
            Some(3600)
        );
        let r = cl.req(method::REFRESH, |b| b.u32_attr(attr::LIFETIME, 0));
        let out = s.handle(c, &r, now);
        assert_eq!(reply(&out).u32_attr(attr::LIFETIME).unwrap(), Some(0));
        assert_eq!(out[1], Output::Closed { client: c });
    }

    #[test]
    fn bad_requests_get_their_error_codes() {
        let now = Instant::now();
        let mut s = server(now);
        let mut cl = login(&mut s, now);
        let c: SocketAddr = C.parse().unwrap();
        // 401: wrong password.
        let mut wrong = Client {
            nonce: cl.nonce.clone(),
            key: stun::long_term_key("user", "realm", "nope"),
            n: 50,
        };
        let a = wrong.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        assert_eq!(code(&reply(&s.handle(c, &a, now))), 401);
        // 438: stale nonce.
        let mut stale = Client {
            nonce: "old".into(),
            key: cl.key,
            n: 60,
        };
        let a = stale.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        let r = reply(&s.handle(c, &a, now));
        assert_eq!(code(&r), 438);
        assert!(r.get(attr::NONCE).is_some());
        // 400: no REQUESTED-TRANSPORT; 442: TCP.
        let a = cl.req(method::ALLOCATE, |b| b);
        assert_eq!(code(&reply(&s.handle(c, &a, now))), 400);
        let a = cl.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])
        });
        assert_eq!(code(&reply(&s.handle(c, &a, now))), 442);
        // 420 with UNKNOWN-ATTRIBUTES.
        let a = cl.req(method::ALLOCATE, |b| b.attr(0x0077, b"??"));
        let r = reply(&s.handle(c, &a, now));
        assert_eq!(code(&r), 420);
        assert_eq!(r.get(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x77][..]));
        // 437: CreatePermission without allocation.
        let p = cl.req(method::CREATE_PERMISSION, |b| {
            b.xor_address(attr::XOR_PEER_ADDRESS, P.parse().unwrap())
        });
        assert_eq!(code(&reply(&s.handle(c, &p, now))), 437);
        // 400: truncated request.
        let a = cl.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        let mut cut = a.clone();
        cut[3] = cut[3].wrapping_add(4);
        assert_eq!(code(&reply(&s.handle(c, &cut, now))), 400);
        // Stale nonce after rotation is still accepted once (previous nonce), then 438.
        let t1 = now + Duration::from_secs(3600);
        s.expire(t1);
        let a = cl.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        assert_eq!(reply(&s.handle(c, &a, t1)).class, Class::Success);
        s.expire(t1 + Duration::from_secs(3600));
        let r = cl.req(method::REFRESH, |b| b);
        assert_eq!(code(&reply(&s.handle(c, &r, t1))), 438);
        // 486: quota.
        let mut small = TurnServer::new(
            TurnConfig {
                users: vec![("user".into(), "pass".into())],
                realm: "realm".into(),
                max_allocations: 0,
                ..TurnConfig::default()
            },
            1,
            now,
        );
        let mut cl2 = login(&mut small, now);
        let a = cl2.req(method::ALLOCATE, |b| {
            b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        });
        assert_eq!(code(&reply(&small.handle(c, &a, now))), 486);
        // Responses and garbage are dropped silently.
        assert!(s.handle(c, b"garbage that is not stun", now).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn handle_never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let now = Instant::now();
            let mut s = server(now);
            let _ = s.handle(C.parse().unwrap(), &b, now);
        }
    }
}
