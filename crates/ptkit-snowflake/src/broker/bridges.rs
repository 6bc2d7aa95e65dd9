//! The bridge list (spec §3.5): newline-delimited JSON mapping bridge fingerprints to the
//! WebSocket URL proxies relay to. Sans-IO: the parser takes the file's bytes.

use std::collections::HashMap;

use serde_json::Value;

use super::messages::Fingerprint;

/// Longest line accepted (Go's `bufio.Scanner` default token limit).
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Largest bridge list file accepted.
pub const MAX_FILE_LEN: usize = 16 << 20;
/// Most entries in one bridge list.
pub const MAX_ENTRIES: usize = 100_000;

/// The only keys a bridge list line may have (matched case-insensitively, as Go does).
const KEYS: [&str; 3] = ["displayName", "webSocketAddress", "fingerprint"];

/// One bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeInfo {
    /// A name for people; not used by the broker.
    pub display_name: String,
    /// The relay URL given to proxies (`RelayURL`).
    pub websocket_address: String,
    /// The bridge's fingerprint.
    pub fingerprint: Fingerprint,
}

/// Fingerprint → bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeList {
    bridges: HashMap<Fingerprint, BridgeInfo>,
}

/// Why a bridge list was rejected: the 1-based line and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeListError {
    /// 1-based line number, 0 for the file as a whole.
    pub line: usize,
    /// What was wrong.
    pub detail: String,
}

impl Default for BridgeList {
    /// The built-in list: the Tor Project's bridge at `wss://snowflake.torproject.net/`.
    fn default() -> Self {
        let fp = Fingerprint::default_bridge();
        let mut bridges = HashMap::new();
        bridges.insert(
            fp.clone(),
            BridgeInfo {
                display_name: "default".into(),
                websocket_address: "wss://snowflake.torproject.net/".into(),
                fingerprint: fp,
            },
        );
        BridgeList { bridges }
    }
}

impl BridgeList {
    /// Parses a bridge list. Any invalid line (bad JSON, an unknown key, a value that is not a
    /// string, a fingerprint that is not hex of 20 or 32 bytes) rejects the whole file. Blank
    /// lines are skipped; a later line for the same fingerprint replaces an earlier one.
    pub fn parse(data: &[u8]) -> Result<BridgeList, BridgeListError> {
        let err = |line, detail: String| BridgeListError { line, detail };
        if data.len() > MAX_FILE_LEN {
            return Err(err(0, format!("larger than {MAX_FILE_LEN} bytes")));
        }
        let mut bridges = HashMap::new();
        for (index, raw) in data.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.len() > MAX_LINE_LEN {
                return Err(err(line, format!("longer than {MAX_LINE_LEN} bytes")));
            }
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let object = match serde_json::from_slice::<Value>(raw) {
                Ok(Value::Object(o)) => o,
                Ok(_) => return Err(err(line, "not a JSON object".into())),
                Err(e) => return Err(err(line, e.to_string())),
            };
            let mut values: [String; 3] = Default::default();
            for (key, value) in &object {
                let Some(slot) = KEYS.iter().position(|k| k.eq_ignore_ascii_case(key)) else {
                    return Err(err(line, format!("unknown key {key:?}")));
                };
                values[slot] = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    _ => return Err(err(line, format!("{key} is not a string"))),
                };
            }
            let [display_name, websocket_address, fingerprint] = values;
            let fingerprint = Fingerprint::from_hex(&fingerprint).ok_or_else(|| {
                err(
                    line,
                    format!("fingerprint {fingerprint:?} is not hex of 20 or 32 bytes"),
                )
            })?;
            bridges.insert(
                fingerprint.clone(),
                BridgeInfo {
                    display_name,
                    websocket_address,
                    fingerprint,
                },
            );
            if bridges.len() > MAX_ENTRIES {
                return Err(err(line, format!("more than {MAX_ENTRIES} bridges")));
            }
        }
        Ok(BridgeList { bridges })
    }

    /// The bridge with this fingerprint.
    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&BridgeInfo> {
        self.bridges.get(fingerprint)
    }

    /// Number of bridges.
    pub fn len(&self) -> usize {
        self.bridges.len()
    }

    /// True when the list has no bridge (every client poll then fails).
    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty()
    }
}
