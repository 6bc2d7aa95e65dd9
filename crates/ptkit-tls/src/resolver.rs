//! The hot-swappable certificate resolver shared by every TLS listener.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol id of TLS-ALPN-01 validation connections (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

type KeyMap = HashMap<String, Arc<CertifiedKey>>;

/// A certificate store read lock-free on every handshake and updated atomically.
///
/// * Names map to certificates (exact match first, then a `*.parent` wildcard entry).
/// * An optional default certificate answers handshakes without SNI or with an unknown
///   name; static certificates go there. ACME-managed names are only ever stored by name,
///   so a client must send SNI to get them.
/// * When the ClientHello offers ALPN `acme-tls/1`, only a pending TLS-ALPN-01 challenge
///   certificate for that SNI name is served (or none, failing the handshake).
///
/// Replacing a certificate affects new handshakes only: established connections keep the
/// key they were set up with.
pub struct HotResolver {
    certs: ArcSwap<KeyMap>,
    default: ArcSwapOption<CertifiedKey>,
    challenges: ArcSwap<KeyMap>,
}

/// The name the issue and the websocket helper use for [`HotResolver`].
pub type CertStore = HotResolver;

impl HotResolver {
    /// An empty resolver: every handshake fails until a certificate is installed.
    pub fn new() -> Self {
        HotResolver {
            certs: ArcSwap::from_pointee(HashMap::new()),
            default: ArcSwapOption::empty(),
            challenges: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// A resolver that serves `key` to every handshake (static certificate files).
    pub fn with_default(key: Arc<CertifiedKey>) -> Self {
        let resolver = Self::new();
        resolver.set_default(key);
        resolver
    }

    /// Installs (or replaces) the certificate for `name` (case-insensitive; `*.example.com`
    /// matches one label below example.com).
    pub fn set(&self, name: &str, key: Arc<CertifiedKey>) {
        let name = normalize(name);
        self.certs.rcu(|map| {
            let mut map = KeyMap::clone(map);
            map.insert(name.clone(), key.clone());
            map
        });
    }

    /// Removes the certificate for `name`, returning it.
    pub fn remove(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = normalize(name);
        let old = self.certs.rcu(|map| {
            let mut map = KeyMap::clone(map);
            map.remove(&name);
            map
        });
        old.get(&name).cloned()
    }

    /// The certificate installed for exactly `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.load().get(&normalize(name)).cloned()
    }

    /// The names with a certificate installed.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.certs.load().keys().cloned().collect();
        names.sort();
        names
    }

    /// Sets the certificate for handshakes without SNI or with a name not installed.
    pub fn set_default(&self, key: Arc<CertifiedKey>) {
        self.default.store(Some(key));
    }

    /// Removes the default certificate.
    pub fn clear_default(&self) {
        self.default.store(None);
    }

    /// The default certificate, if any.
    pub fn default_key(&self) -> Option<Arc<CertifiedKey>> {
        self.default.load_full()
    }

    /// Installs a TLS-ALPN-01 challenge certificate for `name`.
    pub fn set_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        let name = normalize(name);
        self.challenges.rcu(|map| {
            let mut map = KeyMap::clone(map);
            map.insert(name.clone(), key.clone());
            map
        });
    }

    /// Removes the TLS-ALPN-01 challenge certificate for `name`.
    pub fn remove_challenge(&self, name: &str) {
        let name = normalize(name);
        self.challenges.rcu(|map| {
            let mut map = KeyMap::clone(map);
            map.remove(&name);
            map
        });
    }

    /// True when a TLS-ALPN-01 challenge certificate is pending for `name`.
    pub fn has_challenge(&self, name: &str) -> bool {
        self.challenges.load().contains_key(&normalize(name))
    }

    /// The certificate for a handshake with this SNI and whether `acme-tls/1` was offered.
    pub fn lookup(&self, sni: Option<&str>, acme_tls_alpn: bool) -> Option<Arc<CertifiedKey>> {
        if acme_tls_alpn {
            return sni.and_then(|name| self.challenges.load().get(&normalize(name)).cloned());
        }
        if let Some(name) = sni {
            let name = normalize(name);
            let certs = self.certs.load();
            if let Some(key) = certs.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = certs.get(&format!("*.{parent}"))
            {
                return Some(key.clone());
            }
        }
        self.default.load_full()
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Default for HotResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HotResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotResolver")
            .field("names", &self.names())
            .field("default", &self.default.load().is_some())
            .field("challenges", &self.challenges.load().len())
            .finish()
    }
}

impl ResolvesServerCert for HotResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = client_hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        self.lookup(client_hello.server_name(), acme)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::self_signed;

    fn key(name: &str) -> Arc<CertifiedKey> {
        self_signed(&[name.to_owned()]).unwrap().0
    }

    #[test]
    fn lookup_rules() {
        let r = HotResolver::new();
        assert!(r.lookup(Some("a.test"), false).is_none());
        let a = key("a.test");
        let wild = key("*.w.test");
        let def = key("default.test");
        let chall = key("a.test");
        r.set("A.test.", a.clone());
        r.set("*.w.test", wild.clone());
        assert!(Arc::ptr_eq(&r.lookup(Some("a.TEST"), false).unwrap(), &a));
        assert!(Arc::ptr_eq(
            &r.lookup(Some("x.w.test"), false).unwrap(),
            &wild
        ));
        // SNI required: no default yet.
        assert!(r.lookup(None, false).is_none());
        assert!(r.lookup(Some("other.test"), false).is_none());
        r.set_default(def.clone());
        assert!(Arc::ptr_eq(&r.lookup(None, false).unwrap(), &def));
        assert!(Arc::ptr_eq(
            &r.lookup(Some("other.test"), false).unwrap(),
            &def
        ));
        // acme-tls/1 gets only a challenge certificate.
        assert!(r.lookup(Some("a.test"), true).is_none());
        r.set_challenge("a.test", chall.clone());
        assert!(r.has_challenge("a.test"));
        assert!(Arc::ptr_eq(
            &r.lookup(Some("a.test"), true).unwrap(),
            &chall
        ));
        assert!(r.lookup(None, true).is_none());
        r.remove_challenge("a.test");
        assert!(r.lookup(Some("a.test"), true).is_none());
        assert!(Arc::ptr_eq(&r.remove("a.test").unwrap(), &a));
        assert_eq!(r.names(), vec!["*.w.test".to_owned()]);
        r.clear_default();
        assert!(r.default_key().is_none());
    }
}
