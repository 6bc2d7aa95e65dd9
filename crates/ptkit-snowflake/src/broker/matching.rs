//! NAT-aware matching (spec §3.4), sans-IO: waiting proxies in three priority queues by NAT
//! type, each ordered by fewest clients first (then first come, first served).
//!
//! The Go broker's rules: a client with an `unrestricted` NAT is served by proxies whose NAT is
//! `restricted` or `unknown`; a client with a `restricted` or `unknown` NAT only by
//! `unrestricted` proxies. With `allow_unknown_pairing`, a client whose NAT is `unknown` is
//! also served by an `unknown` proxy when no `unrestricted` one waits (the Go broker never
//! pairs unknown with unknown, which breaks offline and lab deployments).

use std::collections::{BTreeSet, HashMap};

use super::messages::Nat;

/// A ticket naming one waiting proxy (unique per [`Pools`]).
pub type Ticket = u64;

/// Waiting proxies, each carrying a `T`.
#[derive(Debug)]
pub struct Pools<T> {
    /// Ordered (clients, ticket) per NAT type, indexed by [`nat_index`].
    queues: [BTreeSet<(u32, Ticket)>; 3],
    entries: HashMap<Ticket, (Nat, u32, T)>,
}

impl<T> Default for Pools<T> {
    fn default() -> Self {
        Pools {
            queues: Default::default(),
            entries: HashMap::new(),
        }
    }
}

fn nat_index(nat: Nat) -> usize {
    match nat {
        Nat::Unknown => 0,
        Nat::Restricted => 1,
        Nat::Unrestricted => 2,
    }
}

impl<T> Pools<T> {
    /// Empty pools.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a waiting proxy. A ticket already present is replaced.
    pub fn push(&mut self, ticket: Ticket, nat: Nat, clients: u32, value: T) {
        self.remove(ticket);
        self.queues[nat_index(nat)].insert((clients, ticket));
        self.entries.insert(ticket, (nat, clients, value));
    }

    /// Removes a waiting proxy (it timed out or went away).
    pub fn remove(&mut self, ticket: Ticket) -> Option<T> {
        let (nat, clients, value) = self.entries.remove(&ticket)?;
        self.queues[nat_index(nat)].remove(&(clients, ticket));
        Some(value)
    }

    /// Takes the best proxy for a client with NAT `client_nat`, if any waits.
    pub fn pop_for(&mut self, client_nat: Nat, allow_unknown_pairing: bool) -> Option<(Ticket, T)> {
        let pick = match client_nat {
            Nat::Unrestricted => {
                // Fewest clients among restricted and unknown proxies.
                let r = self.queues[nat_index(Nat::Restricted)].first().copied();
                let u = self.queues[nat_index(Nat::Unknown)].first().copied();
                match (r, u) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Nat::Restricted => self.queues[nat_index(Nat::Unrestricted)].first().copied(),
            Nat::Unknown => self.queues[nat_index(Nat::Unrestricted)]
                .first()
                .copied()
                .or_else(|| {
                    allow_unknown_pairing
                        .then(|| self.queues[nat_index(Nat::Unknown)].first().copied())
                        .flatten()
                }),
        };
        let (_, ticket) = pick?;
        self.remove(ticket).map(|v| (ticket, v))
    }

    /// Number of waiting proxies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no proxy waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of waiting proxies with NAT type `nat`.
    pub fn len_nat(&self, nat: Nat) -> usize {
        self.queues[nat_index(nat)].len()
    }

    /// Every waiting proxy's NAT type and value.
    pub fn iter(&self) -> impl Iterator<Item = (Nat, &T)> {
        self.entries.values().map(|(nat, _, v)| (*nat, v))
    }
}
