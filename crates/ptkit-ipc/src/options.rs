//! Transport options from `-options`, `-optionsFile` or `TOR_PT_SERVER_TRANSPORT_OPTIONS`
//! (spec §1.3.1 "JSON option shapes").
//!
//! Two syntaxes, told apart by the first non-blank character (unambiguous, since a
//! microformat item starts with a transport name, a C identifier):
//! - `{` → JSON (2.2+ `-options`, and `-optionsFile`);
//! - otherwise the PT 1.0 microformat `t:k=v;t:k=v` (2.0/2.1 `-options`, the variable),
//!   decoded by [`ptkit_tor::env::parse_server_options`].
//!
//! JSON shapes accepted, for the requested transports `T`:
//! 1. an object with a string `"transport"` member (shapeshifter-dispatcher's flat object):
//!    options for that transport (matched case-insensitively to a name in `T`);
//! 2. an object whose values are all objects and at least one key names a transport in `T`
//!    (case-insensitively) or `T` contains `*` (the spec's keyed example): one entry per key;
//! 3. any other object: the same flat options for every name in `T`.
//!
//! Values become strings with [`json_to_string`]: strings as they are, numbers and booleans
//! as their JSON text, arrays and objects as compact JSON text, `null` omitted.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use ptkit_core::Args;
use ptkit_core::args::ArgsError;
use ptkit_tor::env::parse_server_options;
use serde_json::{Map, Value};

use crate::flags::OptionsSource;

/// Longest options text accepted, inline or from a file, in bytes.
pub const MAX_OPTIONS_LEN: usize = 64 * 1024;

/// Options per transport name.
pub type TransportOptions = BTreeMap<String, Args>;

/// Why options were refused (reported as `ENV-ERROR`, exit 64 under 2.x/3.0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// More than [`MAX_OPTIONS_LEN`] bytes.
    #[error("options longer than {MAX_OPTIONS_LEN} bytes")]
    TooLong,
    /// The microformat does not parse.
    #[error("bad transport options: {0}")]
    Microformat(#[from] ArgsError),
    /// Malformed JSON.
    #[error("options are not valid JSON: {0}")]
    Json(String),
    /// Valid JSON of the wrong shape (not an object).
    #[error("options JSON must be an object")]
    NotObject,
    /// The options file could not be read.
    #[error("cannot read options file {path}: {reason}")]
    Io {
        /// The path given.
        path: String,
        /// The I/O error text.
        reason: String,
    },
}

impl OptionsError {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            OptionsError::TooLong => "options_too_long",
            OptionsError::Microformat(_) => "options_microformat",
            OptionsError::Json(_) => "options_json",
            OptionsError::NotObject => "options_not_object",
            OptionsError::Io { .. } => "options_io",
        }
    }
}

/// A JSON value as an option string; `None` for `null`.
pub fn json_to_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Flattens a JSON object into [`Args`] with [`json_to_string`].
pub fn flatten(map: &Map<String, Value>) -> Args {
    map.iter()
        .filter_map(|(k, v)| json_to_string(v).map(|s| (k.clone(), s)))
        .collect()
}

/// Decodes options text (inline `-options` or the variable), for the requested transports.
pub fn decode(raw: &str, transports: &[String]) -> Result<TransportOptions, OptionsError> {
    if raw.len() > MAX_OPTIONS_LEN {
        return Err(OptionsError::TooLong);
    }
    if raw.trim_start().starts_with('{') {
        decode_json(raw, transports)
    } else {
        Ok(parse_server_options(raw)?)
    }
}

fn requested<'a>(transports: &'a [String], name: &str) -> Option<&'a String> {
    transports.iter().find(|t| t.eq_ignore_ascii_case(name))
}

/// Decodes JSON options (shapes in the module docs).
pub fn decode_json(raw: &str, transports: &[String]) -> Result<TransportOptions, OptionsError> {
    if raw.len() > MAX_OPTIONS_LEN {
        return Err(OptionsError::TooLong);
    }
    let value: Value = serde_json::from_str(raw).map_err(|e| OptionsError::Json(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(OptionsError::NotObject);
    };
    let mut out = TransportOptions::new();
    if map.is_empty() {
        return Ok(out);
    }
    if let Some(Value::String(name)) = map.get("transport") {
        let name = requested(transports, name).unwrap_or(name).clone();
        out.insert(name, flatten(&map));
        return Ok(out);
    }
    let all_objects = map.values().all(Value::is_object);
    let keyed = all_objects
        && (transports.iter().any(|t| t == "*")
            || map.keys().any(|k| requested(transports, k).is_some()));
    if keyed {
        for (k, v) in &map {
            if let Value::Object(inner) = v {
                let name = requested(transports, k).unwrap_or(k).clone();
                out.insert(name, flatten(inner));
            }
        }
    } else {
        let args = flatten(&map);
        for t in transports {
            out.insert(t.clone(), args.clone());
        }
    }
    Ok(out)
}

/// Resolves an [`OptionsSource`]; `read_file` is the I/O hook for `-optionsFile` (e.g.
/// `|p| std::fs::read_to_string(p)`); its result is size-checked here.
pub fn load(
    source: &OptionsSource,
    transports: &[String],
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<TransportOptions, OptionsError> {
    match source {
        OptionsSource::Inline(s) | OptionsSource::Env(s) => decode(s, transports),
        OptionsSource::File(path) => {
            let text = read_file(path).map_err(|e| OptionsError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            decode_json(&text, transports)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn s1_3_1_microformat_for_2_0_and_2_1() {
        let o = decode(
            "obfs4:cert=a\\;b;obfs4:iat-mode=0;x:k=v",
            &names(&["obfs4"]),
        )
        .unwrap();
        assert_eq!(o["obfs4"].get("cert"), Some("a;b"));
        assert_eq!(o["obfs4"].get("iat-mode"), Some("0"));
        assert_eq!(o["x"].get("k"), Some("v"));
        assert!(matches!(
            decode("obfs4", &names(&["obfs4"])),
            Err(OptionsError::Microformat(_))
        ));
        assert!(decode("", &names(&["a"])).unwrap().is_empty());
    }

    #[test]
    fn s1_3_1_json_dispatcher_flat_object() {
        let raw = r#"{"serverAddress":"1.2.3.4:5","toneburst":{"mode":"x"},"polish":null,
                     "n":7,"b":true,"l":[1,"a"],"transport":"Replicant"}"#;
        let o = decode(raw, &names(&["replicant"])).unwrap();
        let a = &o["replicant"];
        assert_eq!(a.get("serverAddress"), Some("1.2.3.4:5"));
        assert_eq!(a.get("toneburst"), Some(r#"{"mode":"x"}"#));
        assert_eq!(a.get("polish"), None);
        assert_eq!(a.get("n"), Some("7"));
        assert_eq!(a.get("b"), Some("true"));
        assert_eq!(a.get("l"), Some(r#"[1,"a"]"#));
        assert_eq!(a.get("transport"), Some("Replicant"));
    }

    #[test]
    fn s1_3_1_json_keyed_by_transport() {
        let raw = r#" {"shadow":{"password":"p","cipherName":"darkstar"},"other":{"k":1}}"#;
        let o = decode(raw, &names(&["Shadow"])).unwrap();
        assert_eq!(o["Shadow"].get("cipherName"), Some("darkstar"));
        assert_eq!(o["other"].get("k"), Some("1"));
        // Not keyed when no key names a requested transport: flat for each transport.
        let o = decode(r#"{"toneburst":{"m":"x"}}"#, &names(&["a", "b"])).unwrap();
        assert_eq!(o["a"].get("toneburst"), Some(r#"{"m":"x"}"#));
        assert_eq!(o["b"], o["a"]);
        let o = decode(r#"{"cipherName":"darkstar"}"#, &names(&["shadow"])).unwrap();
        assert_eq!(o["shadow"].get("cipherName"), Some("darkstar"));
        assert!(decode("{}", &names(&["a"])).unwrap().is_empty());
    }

    #[test]
    fn s1_3_1_json_errors_and_bounds() {
        assert!(matches!(
            decode("{\"a\":", &names(&["a"])),
            Err(OptionsError::Json(_))
        ));
        assert!(matches!(
            decode("{\"a\":1}x", &names(&["a"])),
            Err(OptionsError::Json(_))
        ));
        assert_eq!(
            decode_json("[1]", &names(&["a"])),
            Err(OptionsError::NotObject)
        );
        let big = format!("{{\"k\":\"{}\"}}", "x".repeat(MAX_OPTIONS_LEN));
        assert_eq!(decode(&big, &names(&["a"])), Err(OptionsError::TooLong));
        let deep = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
        assert!(matches!(
            decode(&deep, &names(&["a"])),
            Err(OptionsError::Json(_))
        ));
        assert_eq!(OptionsError::TooLong.kind(), "options_too_long");
    }

    #[test]
    fn s1_3_1_options_file_hook() {
        let src = OptionsSource::File("/o.json".into());
        let o = load(&src, &names(&["a"]), &|p| {
            assert_eq!(p, Path::new("/o.json"));
            Ok(r#"{"k":"v"}"#.into())
        })
        .unwrap();
        assert_eq!(o["a"].get("k"), Some("v"));
        let e = load(&src, &names(&["a"]), &|_| Err(io::Error::other("gone"))).unwrap_err();
        assert_eq!(e.kind(), "options_io");
        // A file must hold JSON.
        assert!(matches!(
            load(&src, &names(&["a"]), &|_| Ok("a:k=v".into())),
            Err(OptionsError::Json(_))
        ));
        let env = OptionsSource::Env("a:k=v".into());
        assert_eq!(
            load(&env, &names(&["a"]), &|_| unreachable!()).unwrap()["a"].get("k"),
            Some("v")
        );
    }
}
