//! Turbotunnel framing before the packets (spec §2.2): the 8-byte magic token, the 8-byte
//! ClientID, and the server's ClientID → client address ring.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

/// The first 8 bytes of every turbotunnel WebSocket stream.
pub const TOKEN: [u8; 8] = [0x12, 0x93, 0x60, 0x5d, 0x27, 0x81, 0x75, 0xf5];

/// Entries in the Go server's ClientID → address map.
pub const CLIENT_ID_RING_CAPACITY: usize = 98_304;

/// The 8 random bytes a client picks once per session; a session outlives any one WebSocket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub [u8; 8]);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({self})")
    }
}

/// What the first bytes of a stream turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preamble {
    /// Not enough bytes yet.
    Incomplete,
    /// The first 8 bytes are not the token: a pre-turbotunnel ("oneshot") client or noise.
    BadToken,
    /// Token and ClientID read; `used` bytes of the input belonged to them.
    Ready {
        /// The client's session identifier.
        client_id: ClientId,
        /// Bytes of the last `push` consumed by the preamble; the rest are packets.
        used: usize,
    },
}

/// Sans-IO reader of the 16-byte preamble, fed in any chunking.
#[derive(Debug, Default, Clone)]
pub struct PreambleReader {
    buf: [u8; 16],
    have: usize,
}

impl PreambleReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes. After `Ready` or `BadToken`, don't call again.
    pub fn push(&mut self, input: &[u8]) -> Preamble {
        let n = (16 - self.have).min(input.len());
        self.buf[self.have..self.have + n].copy_from_slice(&input[..n]);
        let before = self.have;
        self.have += n;
        // Judge the token as soon as its 8 bytes are known.
        if self.have >= 8 && self.buf[..8] != TOKEN {
            return Preamble::BadToken;
        }
        if self.have < 16 {
            return Preamble::Incomplete;
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&self.buf[8..16]);
        Preamble::Ready {
            client_id: ClientId(id),
            used: 16 - before,
        }
    }

    /// Whether any byte has arrived (a stream that ends before that is an unused proxy
    /// connection, closed quietly).
    pub fn started(&self) -> bool {
        self.have > 0
    }
}

/// The server's ClientID → client address map: a fixed ring where each `set` takes the next
/// slot, evicting its previous occupant unless that ClientID has been set again since.
/// Newest wins; nothing else expires. Memory grows with use up to `capacity` entries.
#[derive(Debug)]
pub struct ClientIdRing {
    capacity: usize,
    next: usize,
    slots: Vec<(ClientId, Option<SocketAddr>)>,
    index: HashMap<ClientId, usize>,
}

impl ClientIdRing {
    /// A ring of `capacity` entries (0 stores nothing).
    pub fn new(capacity: usize) -> Self {
        ClientIdRing {
            capacity,
            next: 0,
            slots: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Records `addr` (None: the proxy gave no usable `client_ip`) for `id`.
    pub fn set(&mut self, id: ClientId, addr: Option<SocketAddr>) {
        if self.capacity == 0 {
            return;
        }
        let slot = self.next;
        self.next = (self.next + 1) % self.capacity;
        if slot < self.slots.len() {
            let (old, _) = self.slots[slot];
            if self.index.get(&old) == Some(&slot) {
                self.index.remove(&old);
            }
            self.slots[slot] = (id, addr);
        } else {
            self.slots.push((id, addr));
        }
        self.index.insert(id, slot);
    }

    /// The newest address recorded for `id`.
    pub fn get(&self, id: &ClientId) -> Option<SocketAddr> {
        let slot = *self.index.get(id)?;
        self.slots.get(slot).and_then(|(_, a)| *a)
    }

    /// Whether `id` has an entry (even one with no address).
    pub fn contains(&self, id: &ClientId) -> bool {
        self.index.contains_key(id)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ptkit_websocket::addr::client_ip_param;

    fn id(n: u8) -> ClientId {
        ClientId([n, 0, 0, 0, 0, 0, 0, 0])
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(format!("{s}:1").parse().unwrap_or_else(|_| panic!("{s}")))
    }

    #[test]
    fn preamble_in_any_chunking() {
        let mut wire = TOKEN.to_vec();
        wire.extend_from_slice(&[0x16, 0xad, 0xb9, 0x9a, 0x3b, 0x94, 0x07, 0x58]);
        wire.extend_from_slice(b"rest");
        for cut in 0..wire.len() {
            let mut r = PreambleReader::new();
            let first = r.push(&wire[..cut]);
            let (second, offset) = match first {
                Preamble::Incomplete => (r.push(&wire[cut..]), cut),
                other => (other, 0),
            };
            match second {
                Preamble::Ready { client_id, used } => {
                    assert_eq!(client_id.to_string(), "16adb99a3b940758");
                    assert_eq!(&wire[offset + used..], b"rest");
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_token_is_judged_after_eight_bytes() {
        let mut r = PreambleReader::new();
        assert_eq!(r.push(&[0x16, 0x03, 0x01]), Preamble::Incomplete);
        assert_eq!(r.push(&[0; 5]), Preamble::BadToken);
        let mut r = PreambleReader::new();
        assert!(!r.started());
        assert_eq!(r.push(&TOKEN[..7]), Preamble::Incomplete);
        assert!(r.started());
    }

    #[test]
    fn spec_5_1_client_ip_to_useraddr() {
        let q = |v: &str| client_ip_param(Some(&format!("client_ip={v}")));
        assert_eq!(q("1.2.3.4"), addr("1.2.3.4"));
        assert_eq!(q("1:2::3:4"), addr("[1:2::3:4]"));
        assert_eq!(q("1%3A2%3A%3A3%3A4"), addr("[1:2::3:4]"));
        for bad in ["", "abc", "1.2.3.4.5", "[12::34]", "0.0.0.0", "[::]", "::"] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
        assert_eq!(client_ip_param(None), None);
    }

    #[test]
    fn spec_5_1_ring_capacity_0_and_1() {
        let mut r = ClientIdRing::new(0);
        r.set(id(0), addr("1.1.1.1"));
        assert_eq!(r.get(&id(0)), None);
        let mut r = ClientIdRing::new(1);
        r.set(id(0), addr("1.1.1.1"));
        r.set(id(1), addr("2.2.2.2"));
        assert_eq!(r.get(&id(0)), None);
        assert_eq!(r.get(&id(1)), addr("2.2.2.2"));
    }

    #[test]
    fn spec_5_1_ring_capacity_5() {
        let (a, b, c, d, e, f, g, h) = (
            addr("10.0.0.1"),
            addr("10.0.0.2"),
            addr("10.0.0.3"),
            addr("10.0.0.4"),
            addr("10.0.0.5"),
            addr("10.0.0.6"),
            addr("10.0.0.7"),
            addr("10.0.0.8"),
        );
        let mut r = ClientIdRing::new(5);
        r.set(id(0), a);
        r.set(id(1), b);
        r.set(id(2), c);
        r.set(id(0), d);
        r.set(id(3), e);
        assert_eq!(r.get(&id(0)), d);
        // Overwrites the stale (0,a) slot and keeps (0,d).
        r.set(id(4), f);
        assert_eq!(r.get(&id(0)), d);
        assert_eq!(r.get(&id(4)), f);
        assert_eq!(r.get(&id(1)), b);
        r.set(id(5), g);
        r.set(id(0), h);
        assert_eq!(r.get(&id(1)), None);
        assert_eq!(r.get(&id(2)), None);
        assert_eq!(r.get(&id(0)), h);
        for i in 0..4u8 {
            r.set(id(0), addr(&format!("10.1.0.{i}")));
        }
        for gone in [1, 2, 3, 4, 5] {
            assert!(!r.contains(&id(gone)), "{gone}");
        }
        assert_eq!(r.get(&id(0)), addr("10.1.0.3"));
        assert_eq!(r.len(), 1);
    }
}
