//! Version negotiation (spec §1.3.1 `-ptversion`, §1.3.2 "Version negotiation", 3.0 §4.2).
//!
//! The parent offers a comma list (`-ptversion`, else `TOR_PT_MANAGED_TRANSPORT_VER`). Tokens
//! are accepted loosely (`1`/`1.0`, `2`/`2.0`, `2.1`, `2.2`/`2.2.1`, `3`/`3.0`) and the
//! `VERSION` line echoes the chosen token exactly as the parent spelled it. Tokens are not
//! trimmed: PT 1.0 parents (tor) never send spaces, and goptlib matches exactly.

use std::fmt;

use crate::lines::{Dialect, IpcLine};

/// A protocol version we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PtVersion {
    /// Tor's PT 1.0 (`1`).
    V1,
    /// PT 2.0 (`2` or `2.0`).
    V2_0,
    /// PT 2.1.
    V2_1,
    /// PT 2.2 / 2.2.1.
    V2_2,
    /// PT 3.0.
    V3_0,
}

impl PtVersion {
    /// The newest version we speak, used when the parent offers nothing (3.0 §4.2).
    pub const LATEST: PtVersion = PtVersion::V3_0;

    /// Parses one offered token loosely; `None` for versions we do not speak.
    pub fn from_token(token: &str) -> Option<Self> {
        Some(match token {
            "1" | "1.0" => PtVersion::V1,
            "2" | "2.0" => PtVersion::V2_0,
            "2.1" => PtVersion::V2_1,
            "2.2" | "2.2.1" => PtVersion::V2_2,
            "3" | "3.0" => PtVersion::V3_0,
            _ => return None,
        })
    }

    /// Canonical spelling (used when the parent offered nothing).
    pub fn as_str(self) -> &'static str {
        match self {
            PtVersion::V1 => "1",
            PtVersion::V2_0 => "2.0",
            PtVersion::V2_1 => "2.1",
            PtVersion::V2_2 => "2.2",
            PtVersion::V3_0 => "3.0",
        }
    }

    /// Which output routing this version uses (§1.3.2: PT 1.0 vs 2.x/3.0).
    pub fn dialect(self) -> Dialect {
        match self {
            PtVersion::V1 => Dialect::Pt1,
            _ => Dialect::Pt2,
        }
    }

    /// `TOR_PT_*` variables are read only before 3.0 (proposal 0010, §1.3.1).
    pub fn reads_env(self) -> bool {
        self < PtVersion::V3_0
    }

    /// `-options` is JSON from 2.2 on (§1.3.1).
    pub fn json_options(self) -> bool {
        self >= PtVersion::V2_2
    }
}

impl fmt::Display for PtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the offer came from; decides how a failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferSource {
    /// The `-ptversion` flag (only 2.x/3.0 parents use flags).
    Flag,
    /// `TOR_PT_MANAGED_TRANSPORT_VER`.
    Env,
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The version chosen.
    pub version: PtVersion,
    /// The token to echo, as the parent spelled it.
    pub token: String,
}

impl Negotiated {
    /// The `VERSION <token>` line (stdout in every version).
    pub fn line(&self) -> IpcLine {
        IpcLine::Version(self.token.clone())
    }
}

/// No offered version is one we speak (§1.3.2 `VERSION-ERROR no-version`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no supported pluggable-transport version in {offered:?}")]
pub struct NoVersion {
    /// The raw offer.
    pub offered: String,
    /// How to report it: PT 1.0 routing (stdout) or 2.x/3.0 routing (stderr, exit 78).
    pub dialect: Dialect,
}

impl NoVersion {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        "no_version"
    }

    /// The line to print: `VERSION-ERROR no-version`.
    pub fn line(&self) -> IpcLine {
        IpcLine::VersionError
    }
}

/// Picks the highest common version from `offered` (`None` when the parent offered nothing,
/// which 3.0 answers with its latest version).
///
/// On failure the dialect is PT 2.x/3.0 when the offer came from `-ptversion` or any token
/// looks like a 2.x+ version (leading digit ≥ 2); otherwise PT 1.0 (stdout, no sysexits).
pub fn negotiate(offered: Option<(&str, OfferSource)>) -> Result<Negotiated, NoVersion> {
    let Some((list, source)) = offered else {
        return Ok(Negotiated {
            version: PtVersion::LATEST,
            token: PtVersion::LATEST.as_str().to_owned(),
        });
    };
    let best = list
        .split(',')
        .filter_map(|t| PtVersion::from_token(t).map(|v| (v, t)))
        .rev() // max_by_key keeps the last maximum: reversed, the first spelling offered wins
        .max_by_key(|(v, _)| *v);
    match best {
        Some((version, token)) => Ok(Negotiated {
            version,
            token: token.to_owned(),
        }),
        None => {
            let modern = source == OfferSource::Flag
                || list
                    .split(',')
                    .any(|t| matches!(t.bytes().next(), Some(b'2'..=b'9')));
            Err(NoVersion {
                offered: list.to_owned(),
                dialect: if modern { Dialect::Pt2 } else { Dialect::Pt1 },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lines::{EX_CONFIG, Stream};

    fn pick(list: &str) -> String {
        negotiate(Some((list, OfferSource::Flag)))
            .unwrap()
            .line()
            .render(Dialect::Pt2)
    }

    #[test]
    fn s1_3_2_version_echoes_offered_spelling() {
        assert_eq!(pick("1"), "VERSION 1");
        assert_eq!(pick("1.0"), "VERSION 1.0");
        assert_eq!(pick("2"), "VERSION 2");
        assert_eq!(pick("2.0"), "VERSION 2.0");
        assert_eq!(pick("2.1"), "VERSION 2.1");
        assert_eq!(pick("2.2"), "VERSION 2.2");
        assert_eq!(pick("2.2.1"), "VERSION 2.2.1");
        assert_eq!(pick("3"), "VERSION 3");
        assert_eq!(pick("3.0"), "VERSION 3.0");
    }

    #[test]
    fn s1_3_2_version_picks_highest_common() {
        assert_eq!(pick("1,2"), "VERSION 2");
        assert_eq!(pick("3.0,1,2.1"), "VERSION 3.0");
        assert_eq!(pick("4.0,2.1,9"), "VERSION 2.1");
        assert_eq!(pick("2,2.0"), "VERSION 2");
        let n = negotiate(Some(("1,2.2", OfferSource::Env))).unwrap();
        assert_eq!(n.version, PtVersion::V2_2);
    }

    #[test]
    fn s1_3_1_absent_offer_answers_latest() {
        let n = negotiate(None).unwrap();
        assert_eq!(n.version, PtVersion::V3_0);
        assert_eq!(n.line().render(Dialect::Pt2), "VERSION 3.0");
    }

    #[test]
    fn s1_3_2_unknown_version_routing() {
        let e = negotiate(Some(("4.0", OfferSource::Flag))).unwrap_err();
        assert_eq!(e.dialect, Dialect::Pt2);
        assert_eq!(e.line().render(e.dialect), "VERSION-ERROR no-version");
        assert_eq!(e.line().stream(e.dialect), Stream::Stderr);
        assert_eq!(e.line().exit_code(e.dialect), Some(EX_CONFIG));
        assert_eq!(e.kind(), "no_version");
        // A PT 1.0-looking offer from the environment: stdout, no sysexits code.
        for offer in ["0", "", "1 ", "v1", "1.1"] {
            let e = negotiate(Some((offer, OfferSource::Env))).unwrap_err();
            assert_eq!(e.dialect, Dialect::Pt1, "{offer:?}");
            assert_eq!(e.line().stream(e.dialect), Stream::Stdout);
            assert_eq!(e.line().exit_code(e.dialect), Some(1));
        }
        let e = negotiate(Some(("5", OfferSource::Env))).unwrap_err();
        assert_eq!(e.dialect, Dialect::Pt2);
    }
}
