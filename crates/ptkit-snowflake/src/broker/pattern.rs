//! Relay-URL host patterns (spec §3.5): `suffix$` matches a host name suffix, `^host$` one
//! exact host name. A proxy is accepted when its pattern is a superset of the broker's.

/// A parsed relay host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPattern {
    exact: bool,
    suffix: String,
}

impl RelayPattern {
    /// Parses a pattern: a trailing `$` is dropped, a leading `^` makes it exact.
    pub fn new(rule: &str) -> RelayPattern {
        let rule = rule.strip_suffix('$').unwrap_or(rule);
        match rule.strip_prefix('^') {
            Some(host) => RelayPattern {
                exact: true,
                suffix: host.to_owned(),
            },
            None => RelayPattern {
                exact: false,
                suffix: rule.to_owned(),
            },
        }
    }

    /// True when every host `other` matches is matched by `self` too: for a suffix pattern,
    /// `self`'s suffix is a suffix of `other`'s; an exact pattern only covers the same exact
    /// pattern.
    pub fn is_superset_of(&self, other: &RelayPattern) -> bool {
        if self.exact {
            other.exact && self.suffix == other.suffix
        } else {
            other.suffix.ends_with(&self.suffix)
        }
    }

    /// True when `host` matches.
    pub fn matches(&self, host: &str) -> bool {
        if self.exact {
            host == self.suffix
        } else {
            host.ends_with(&self.suffix)
        }
    }
}

/// The broker's relay-pattern policy: its own pattern, and the one it assumes for legacy
/// proxies that send no `AcceptedRelayPattern`.
#[derive(Debug, Clone)]
pub struct RelayPolicy {
    allowed: RelayPattern,
    legacy: RelayPattern,
}

impl RelayPolicy {
    /// `allowed` is `--allowed-relay-pattern`, `legacy_default` `--default-relay-pattern`.
    pub fn new(allowed: &str, legacy_default: &str) -> RelayPolicy {
        RelayPolicy {
            allowed: RelayPattern::new(allowed),
            legacy: RelayPattern::new(legacy_default),
        }
    }

    /// True when a proxy sending `accepted` (`None`: legacy proxy) may be given clients.
    pub fn accepts(&self, accepted: Option<&str>) -> bool {
        match accepted {
            Some(p) => RelayPattern::new(p).is_superset_of(&self.allowed),
            None => self.legacy.is_superset_of(&self.allowed),
        }
    }
}
