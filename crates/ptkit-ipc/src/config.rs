//! The 2016 PT 2.0 draft's JSON configuration (WIP §"IPC Interfaces": "the configuration is
//! encoded as JSON and passed as a command-line argument"; "state … only in the child
//! process's current directory"), and `generate-config` (the Server Factory's *generate
//! configuration*, which returns the matching client and server configurations).
//!
//! The draft leaves the object opaque; ours (documented in `docs/IPC.md`) is one flat object
//! with these keys — the transport's own keys live in `"options"` (transport-wide) and, for a
//! client, `"settings"` (default per-connection settings, used when a SOCKS client sends
//! none), so they never clash with ours:
//!
//! | key | role | meaning (dispatcher flag it stands for) |
//! |---|---|---|
//! | `transport` | both, required | the transport name (`-transport`) |
//! | `role` | both | `"client"` (default) or `"server"` |
//! | `host`, `port` | client | the transport server (the draft's conventional keys; `-target`); SOCKS requests for `[::0]:0` go there |
//! | `listen` | client | SOCKS (or transparent) listener, `ip:port` (`-proxylistenaddr`, default `127.0.0.1:0`) |
//! | `mode` | client | `socks5` (default) or `transparent-TCP` (`-mode`) |
//! | `proxy` | client | upstream proxy URI (`-proxy`) |
//! | `settings` | client | object: default per-connection settings |
//! | `bindaddr` | server, required | `ip:port` to listen on (`-bindaddr`) |
//! | `target` | server | where to forward, `host:port` (`-target`) |
//! | `extorport`, `authcookie` | server | Tor's Extended ORPort instead of `target` |
//! | `options` | both | object: transport options (`-options`) |
//! | `state` | both | state directory (`-state`); default: the current directory |
//! | `ipcLogLevel`, `metrics`, `exitOnStdinClose` | both | as the flags |
//!
//! Numbers and booleans are accepted where a string is expected (`"port": 443`). Any other
//! key is refused, so a typo is an `ENV-ERROR`, not a silent default. The process then
//! behaves exactly like a dispatcher launched with `-ptversion 2.0` and those flags
//! (`VERSION 2.0`, `CMETHOD`/`SMETHOD` lines, stdin requests, sysexits).

use std::net::SocketAddr;

use ptkit_core::{Args, Registry, Target};
use serde_json::{Map, Value, json};

use crate::flags::{self, IpcConfig};
use crate::options::{MAX_OPTIONS_LEN, flatten, json_to_string};

/// Keys of the configuration object (anything else is refused).
pub const KEYS: &[&str] = &[
    "transport",
    "role",
    "host",
    "port",
    "listen",
    "mode",
    "proxy",
    "settings",
    "bindaddr",
    "target",
    "extorport",
    "authcookie",
    "options",
    "state",
    "ipcLogLevel",
    "metrics",
    "exitOnStdinClose",
];

/// Default transport server address of `generate-config`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:4433";
/// Default forward target of `generate-config` (a local tor's ORPort).
pub const DEFAULT_TARGET: &str = "127.0.0.1:9001";

fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ (Value::Object(_) | Value::Array(_))) => Err(format!(
            "configuration key {key:?} must be a string, not {v}"
        )),
        Some(v) => Ok(json_to_string(v)),
    }
}

fn object(map: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(_) => Err(format!("configuration key {key:?} must be an object")),
    }
}

/// Parses a configuration object into the dispatcher's configuration (negotiated version
/// 2.0). The error is the `ENV-ERROR` message.
pub fn parse(text: &str) -> Result<IpcConfig, String> {
    if text.len() > MAX_OPTIONS_LEN {
        return Err(format!("configuration longer than {MAX_OPTIONS_LEN} bytes"));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("configuration is not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("configuration JSON must be an object".into());
    };
    if let Some(k) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown configuration key {k:?} (transport keys go in \"options\" or \"settings\")"
        ));
    }
    let transport = string(&map, "transport")?.ok_or("configuration needs \"transport\"")?;
    let server = match string(&map, "role")?.as_deref() {
        None | Some("client") => false,
        Some("server") => true,
        Some(r) => {
            return Err(format!(
                "configuration \"role\" {r:?}: want client or server"
            ));
        }
    };
    let role = if server { "-server" } else { "-client" };
    let mut argv: Vec<String> = vec!["-ptversion".into(), "2.0".into(), role.into()];
    let mut flag = |name: &str, value: String| {
        argv.push(format!("-{name}"));
        argv.push(value);
    };
    flag("transport", transport.clone());
    let only = |keys: &[&str], role: &str| match keys.iter().find(|k| map.contains_key(**k)) {
        Some(k) => Err(format!("configuration key {k:?} is for a {role}")),
        None => Ok(()),
    };
    if server {
        only(
            &["host", "port", "listen", "mode", "proxy", "settings"],
            "client",
        )?;
        let bind = string(&map, "bindaddr")?.ok_or("a server configuration needs \"bindaddr\"")?;
        flag("bindaddr", format!("{transport}-{bind}"));
        for key in ["target", "extorport", "authcookie"] {
            if let Some(v) = string(&map, key)? {
                flag(key, v);
            }
        }
    } else {
        only(&["bindaddr", "extorport", "authcookie"], "server")?;
        if map.contains_key("target") {
            return Err("a client names its server with \"host\" and \"port\"".into());
        }
        match (string(&map, "host")?, string(&map, "port")?) {
            (Some(h), Some(p)) => {
                let h = if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]")
                } else {
                    h
                };
                flag("target", format!("{h}:{p}"));
            }
            (None, None) => {}
            _ => return Err("configuration needs both \"host\" and \"port\"".into()),
        }
        for (key, name) in [
            ("listen", "proxylistenaddr"),
            ("mode", "mode"),
            ("proxy", "proxy"),
        ] {
            if let Some(v) = string(&map, key)? {
                flag(name, v);
            }
        }
    }
    for key in ["state", "ipcLogLevel", "metrics"] {
        if let Some(v) = string(&map, key)? {
            flag(key, v);
        }
    }
    if let Some(options) = object(&map, "options")?
        && !options.is_empty()
    {
        flag("options", json!({ transport.clone(): options }).to_string());
    }
    match map.get("exitOnStdinClose") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => argv.push(format!("-exit-on-stdin-close={b}")),
        Some(_) => return Err("configuration \"exitOnStdinClose\" must be a boolean".into()),
    }
    let mut cfg = flags::parse(&argv, &|_| None).map_err(|e| e.to_string())?;
    if let Some(settings) = object(&map, "settings")? {
        cfg.settings = flatten(&settings);
    }
    Ok(cfg)
}

fn args_object(args: &Args) -> Value {
    Value::Object(
        args.iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect(),
    )
}

/// `generate-config TRANSPORT [--server HOST:PORT] [--target HOST:PORT]`: the matching
/// client and server configurations as `{"client": {…}, "server": {…}}` (pretty JSON), from
/// `ServerTransport::generate_config`. The server binds the server address's port on that IP
/// (on `0.0.0.0` when the host is a name). The error is a one-line message.
pub fn generate(argv: &[String], registry: &Registry) -> Result<String, String> {
    let mut transport = None;
    let mut server = DEFAULT_SERVER.to_owned();
    let mut target = DEFAULT_TARGET.to_owned();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let slot = match name.trim_start_matches('-') {
            "server" if name.starts_with('-') => &mut server,
            "target" if name.starts_with('-') => &mut target,
            _ if name.starts_with('-') => return Err(format!("unknown flag {a:?}")),
            _ if transport.is_none() => {
                transport = Some(a.clone());
                continue;
            }
            _ => return Err(format!("unexpected argument {a:?}")),
        };
        *slot = match inline {
            Some(v) => v,
            None => it.next().ok_or(format!("{a} needs a value"))?.clone(),
        };
    }
    let name = transport.ok_or(
        "usage: ptkit generate-config TRANSPORT [--server HOST:PORT] [--target HOST:PORT]",
    )?;
    let t = registry.server(&name).ok_or_else(|| {
        format!(
            "unknown transport {name:?}; known: {}",
            registry.server_names().join(", ")
        )
    })?;
    let srv = Target::parse(&server).map_err(|e| format!("--server {server:?}: {e}"))?;
    Target::parse(&target).map_err(|e| format!("--target {target:?}: {e}"))?;
    let bind_ip = match &srv.host {
        ptkit_core::Host::Ip(ip) => *ip,
        _ => std::net::IpAddr::from([0, 0, 0, 0]),
    };
    let bindaddr = SocketAddr::new(bind_ip, srv.port);
    let (client, server_args) = t.generate_config().map_err(|e| e.to_string())?;
    let host = match &srv.host {
        ptkit_core::Host::Ip(ip) => ip.to_string(),
        ptkit_core::Host::Name(n) => n.clone(),
    };
    let out = json!({
        "client": {
            "transport": t.name(),
            "role": "client",
            "host": host,
            "port": srv.port.to_string(),
            "settings": args_object(&client),
        },
        "server": {
            "transport": t.name(),
            "role": "server",
            "bindaddr": bindaddr.to_string(),
            "target": target,
            "options": args_object(&server_args),
        },
    });
    serde_json::to_string_pretty(&out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::flags::{IpcRole, Mode, OptionsSource};
    use crate::version::PtVersion;

    #[test]
    fn wip_client_configuration() {
        let c = parse(
            r#"{"transport":"websocket","host":"::1","port":443,"listen":"127.0.0.1:1080",
                "mode":"transparent-TCP","settings":{"path":"/ws","base64":true},
                "options":{"max-message":"16384"},"ipcLogLevel":"INFO","exitOnStdinClose":true}"#,
        )
        .unwrap();
        assert_eq!(c.version.version, PtVersion::V2_0);
        assert_eq!(c.role, IpcRole::Client);
        assert_eq!(c.transports, ["websocket"]);
        assert_eq!(c.target.unwrap().to_string(), "[::1]:443");
        assert_eq!(c.proxy_listen, Some("127.0.0.1:1080".parse().unwrap()));
        assert_eq!(c.mode, Mode::TransparentTcp);
        assert_eq!(c.settings.get("path"), Some("/ws"));
        assert_eq!(c.settings.get("base64"), Some("true"));
        assert_eq!(
            c.options,
            Some(OptionsSource::Inline(
                r#"{"websocket":{"max-message":"16384"}}"#.into()
            ))
        );
        assert!(c.exit_on_stdin_close);
        // State: the current directory unless given.
        assert_eq!(c.state_dir, None);
    }

    #[test]
    fn wip_server_configuration() {
        let c = parse(
            r#"{"transport":"plain","role":"server","bindaddr":"0.0.0.0:4433",
                "target":"127.0.0.1:9001","state":"st"}"#,
        )
        .unwrap();
        assert_eq!(c.role, IpcRole::Server);
        assert_eq!(
            c.bind,
            [("plain".to_string(), "0.0.0.0:4433".parse().unwrap())]
        );
        assert_eq!(c.target.unwrap().to_string(), "127.0.0.1:9001");
        assert_eq!(c.state_dir, Some("st".into()));
    }

    #[test]
    fn bad_configurations_are_one_message() {
        for (text, want) in [
            ("{", "configuration is not valid JSON"),
            ("[]", "configuration JSON must be an object"),
            (r#"{"role":"client"}"#, "configuration needs \"transport\""),
            (
                r#"{"transport":"p","cert":"x"}"#,
                "unknown configuration key \"cert\"",
            ),
            (
                r#"{"transport":"p","role":"peer"}"#,
                "configuration \"role\"",
            ),
            (
                r#"{"transport":"p","role":"server"}"#,
                "a server configuration needs",
            ),
            (
                r#"{"transport":"p","host":"h"}"#,
                "configuration needs both",
            ),
            (
                r#"{"transport":"p","bindaddr":"1.2.3.4:1"}"#,
                "configuration key \"bindaddr\" is for a server",
            ),
            (
                r#"{"transport":"p","role":"server","bindaddr":"1.2.3.4:1","target":"h:1","listen":"x"}"#,
                "configuration key \"listen\" is for a client",
            ),
            (
                r#"{"transport":"p","settings":[1]}"#,
                "configuration key \"settings\" must be an object",
            ),
            (
                r#"{"transport":"p","host":{},"port":1}"#,
                "configuration key \"host\" must be a string",
            ),
            (
                r#"{"transport":"p","mode":"udp"}"#,
                "invalid value \"udp\" for flag -mode",
            ),
            (
                r#"{"transport":"p","role":"server","bindaddr":"1.2.3.4:1"}"#,
                "missing -target",
            ),
            (
                r#"{"transport":"p","exitOnStdinClose":"yes"}"#,
                "configuration \"exitOnStdinClose\" must be a boolean",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
            assert!(!e.contains('\n'));
        }
        let big = format!(r#"{{"transport":"{}"}}"#, "a".repeat(MAX_OPTIONS_LEN));
        assert!(parse(&big).unwrap_err().contains("longer than"));
    }
}
