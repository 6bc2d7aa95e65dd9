//! The `TOR_PT_*` environment (pt-spec §1; items E-1..E-13), parsed without touching the
//! process: every function takes a lookup so tests and fuzzers can feed any environment.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ptkit_core::Args;
use ptkit_core::args::{ArgsError, scan, split_escaped};

/// How the host asked us to behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEnv {
    /// `TOR_PT_STATE_LOCATION` (not created yet; see [`make_state_dir`]).
    pub state_dir: PathBuf,
    /// `TOR_PT_EXIT_ON_STDIN_CLOSE=1`.
    pub exit_on_stdin_close: bool,
    /// `TOR_PT_OUTBOUND_BIND_ADDRESS_V4`.
    pub bind_v4: Option<IpAddr>,
    /// `TOR_PT_OUTBOUND_BIND_ADDRESS_V6` (brackets stripped).
    pub bind_v6: Option<IpAddr>,
    /// Client or server.
    pub role: Role,
}

/// Client or server role with its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `TOR_PT_CLIENT_TRANSPORTS` was set.
    Client(ClientEnv),
    /// `TOR_PT_SERVER_TRANSPORTS` was set.
    Server(ServerEnv),
}

/// Client variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnv {
    /// Requested transport names, as given (unknown ones are skipped later, item E-5).
    pub transports: Vec<String>,
    /// Raw `TOR_PT_PROXY`, validated after `VERSION` so failures are `PROXY-ERROR` (item L-7).
    pub proxy: Option<String>,
}

/// One server transport to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBind {
    /// Transport name.
    pub name: String,
    /// Where to listen (port 0: any).
    pub addr: SocketAddr,
    /// Its `TOR_PT_SERVER_TRANSPORT_OPTIONS`.
    pub options: Args,
}

/// Server variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEnv {
    /// Transports with bind addresses, filtered to requested names (item E-7).
    pub transports: Vec<ServerBind>,
    /// `TOR_PT_ORPORT`.
    pub orport: Option<SocketAddr>,
    /// `TOR_PT_EXTENDED_SERVER_PORT` when non-empty.
    pub extorport: Option<SocketAddr>,
    /// `TOR_PT_AUTH_COOKIE_FILE`.
    pub cookie_file: Option<PathBuf>,
}

/// What to print when the environment is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// No version we speak: print `VERSION-ERROR no-version` (item E-1).
    #[error("no supported managed-proxy version")]
    NoVersion,
    /// Anything else: print `ENV-ERROR <message>` (items E-2, E-3).
    #[error("{0}")]
    Env(String),
}

fn required(get: &dyn Fn(&str) -> Option<String>, key: &str) -> Result<String, EnvError> {
    match get(key) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(EnvError::Env(format!("no {key} environment variable"))),
    }
}

/// Checks `TOR_PT_MANAGED_TRANSPORT_VER` (items E-1, E-2).
pub fn check_version(get: &dyn Fn(&str) -> Option<String>) -> Result<(), EnvError> {
    let ver = required(get, "TOR_PT_MANAGED_TRANSPORT_VER")?;
    if ver.split(',').any(|v| v == "1") {
        Ok(())
    } else {
        Err(EnvError::NoVersion)
    }
}

/// Parses the whole environment after the version check (items E-3..E-12).
pub fn parse(get: &dyn Fn(&str) -> Option<String>) -> Result<ManagedEnv, EnvError> {
    check_version(get)?;
    let state_dir = PathBuf::from(required(get, "TOR_PT_STATE_LOCATION")?);
    let exit_on_stdin_close = get("TOR_PT_EXIT_ON_STDIN_CLOSE").as_deref() == Some("1");
    let bind_v4 = match get("TOR_PT_OUTBOUND_BIND_ADDRESS_V4").filter(|v| !v.is_empty()) {
        Some(v) => Some(IpAddr::V4(v.parse().map_err(|_| {
            EnvError::Env(format!(
                "TOR_PT_OUTBOUND_BIND_ADDRESS_V4: {v:?} is not an IPv4 address"
            ))
        })?)),
        None => None,
    };
    let bind_v6 = match get("TOR_PT_OUTBOUND_BIND_ADDRESS_V6").filter(|v| !v.is_empty()) {
        Some(v) => {
            let inner = v
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(&v);
            Some(IpAddr::V6(inner.parse::<Ipv6Addr>().map_err(|_| {
                EnvError::Env(format!(
                    "TOR_PT_OUTBOUND_BIND_ADDRESS_V6: {v:?} is not an IPv6 address"
                ))
            })?))
        }
        None => None,
    };
    let client = get("TOR_PT_CLIENT_TRANSPORTS").filter(|v| !v.is_empty());
    let server = get("TOR_PT_SERVER_TRANSPORTS").filter(|v| !v.is_empty());
    let role = match (client, server) {
        (Some(list), _) => Role::Client(ClientEnv {
            transports: list.split(',').map(str::to_owned).collect(),
            proxy: get("TOR_PT_PROXY").filter(|v| !v.is_empty()),
        }),
        (None, Some(list)) => Role::Server(parse_server(get, &list)?),
        (None, None) => {
            return Err(EnvError::Env(
                "neither TOR_PT_CLIENT_TRANSPORTS nor TOR_PT_SERVER_TRANSPORTS is set".into(),
            ));
        }
    };
    Ok(ManagedEnv {
        state_dir,
        exit_on_stdin_close,
        bind_v4,
        bind_v6,
        role,
    })
}

fn parse_server(get: &dyn Fn(&str) -> Option<String>, list: &str) -> Result<ServerEnv, EnvError> {
    let names: Vec<&str> = list.split(',').collect();
    let raw_opts = get("TOR_PT_SERVER_TRANSPORT_OPTIONS").unwrap_or_default();
    let mut options = parse_server_options(&raw_opts).map_err(|e| {
        EnvError::Env(format!(
            "TOR_PT_SERVER_TRANSPORT_OPTIONS: {raw_opts:?}: {e}"
        ))
    })?;
    let bindaddr = required(get, "TOR_PT_SERVER_BINDADDR")?;
    let transports = parse_bindaddrs(&bindaddr, &names)?
        .into_iter()
        .map(|(name, addr)| {
            let options = options.remove(&name).unwrap_or_default();
            ServerBind {
                name,
                addr,
                options,
            }
        })
        .collect();
    let orport = match get("TOR_PT_ORPORT").filter(|v| !v.is_empty()) {
        Some(v) => Some(
            resolve_addr(&v)
                .map_err(|e| EnvError::Env(format!("cannot resolve TOR_PT_ORPORT {v:?}: {e}")))?,
        ),
        None => None,
    };
    let extorport = match get("TOR_PT_EXTENDED_SERVER_PORT").filter(|v| !v.is_empty()) {
        Some(v) => Some(resolve_addr(&v).map_err(|e| {
            EnvError::Env(format!(
                "cannot resolve TOR_PT_EXTENDED_SERVER_PORT {v:?}: {e}"
            ))
        })?),
        None => None,
    };
    let cookie_file = get("TOR_PT_AUTH_COOKIE_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if extorport.is_some() && cookie_file.is_none() {
        return Err(EnvError::Env(
            "need TOR_PT_AUTH_COOKIE_FILE environment variable with TOR_PT_EXTENDED_SERVER_PORT"
                .into(),
        ));
    }
    if extorport.is_none() && orport.is_none() {
        return Err(EnvError::Env(
            "no TOR_PT_ORPORT or TOR_PT_EXTENDED_SERVER_PORT environment variable".into(),
        ));
    }
    Ok(ServerEnv {
        transports,
        orport,
        extorport,
        cookie_file,
    })
}

/// Parses `TOR_PT_SERVER_BINDADDR` and keeps the names in `wanted` (item E-7).
pub fn parse_bindaddrs(
    value: &str,
    wanted: &[&str],
) -> Result<Vec<(String, SocketAddr)>, EnvError> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for item in value.split(',') {
        let (name, addr) = item.split_once('-').ok_or_else(|| {
            EnvError::Env(format!(
                "TOR_PT_SERVER_BINDADDR: {item:?}: doesn't contain \"-\""
            ))
        })?;
        if seen.iter().any(|s| s == name) {
            return Err(EnvError::Env(format!(
                "TOR_PT_SERVER_BINDADDR: {name:?}: duplicate transport name"
            )));
        }
        seen.push(name.to_owned());
        let addr = resolve_addr(addr)
            .map_err(|e| EnvError::Env(format!("TOR_PT_SERVER_BINDADDR: {item:?}: {e}")))?;
        if wanted.contains(&name) {
            out.push((name.to_owned(), addr));
        }
    }
    Ok(out)
}

/// Parses `TOR_PT_SERVER_TRANSPORT_OPTIONS` (pt-spec §4.1, vectors §7.3).
pub fn parse_server_options(value: &str) -> Result<BTreeMap<String, Args>, ArgsError> {
    let mut out: BTreeMap<String, Args> = BTreeMap::new();
    if value.is_empty() {
        return Ok(out);
    }
    for item in split_escaped(value, ';')? {
        if item.is_empty() {
            return Err(ArgsError::EmptyItem);
        }
        let (transport, term, rest) = scan(item, &[':', '='])?;
        if term != Some(':') || transport.is_empty() {
            return Err(ArgsError::NoEquals(transport));
        }
        let (key, term, rest) = scan(rest, &['='])?;
        if term != Some('=') {
            return Err(ArgsError::NoEquals(key));
        }
        if key.is_empty() {
            return Err(ArgsError::EmptyKey);
        }
        let (value, _, _) = scan(rest, &[])?;
        out.entry(transport).or_default().push(key, value);
    }
    Ok(out)
}

/// Parses an `IP:port` the way goptlib's `resolveAddr` does (pt-spec §1.3): IPv4, bracketed
/// IPv6, or unbracketed IPv6 with the port after the last colon; no host names.
pub fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or("missing port")?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or("missing port")?
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return Err(format!("bad port {port:?}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port} out of range"))?;
    let ip: IpAddr = if s.starts_with('[') {
        IpAddr::V6(
            host.parse()
                .map_err(|_| format!("{host:?} is not an IPv6 address"))?,
        )
    } else {
        host.parse()
            .map_err(|_| format!("{host:?} is not an IP address"))?
    };
    Ok(SocketAddr::new(ip, port))
}

/// Creates the state directory with mode 0700 (items E-6, L-5); an existing directory is kept.
pub fn make_state_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn e1_e2_version_vectors() {
        assert!(
            matches!(check_version(&env(&[])), Err(EnvError::Env(m)) if m == "no TOR_PT_MANAGED_TRANSPORT_VER environment variable")
        );
        assert!(matches!(
            check_version(&env(&[("TOR_PT_MANAGED_TRANSPORT_VER", "")])),
            Err(EnvError::Env(_))
        ));
        assert_eq!(
            check_version(&env(&[("TOR_PT_MANAGED_TRANSPORT_VER", "2")])),
            Err(EnvError::NoVersion)
        );
        assert_eq!(
            check_version(&env(&[("TOR_PT_MANAGED_TRANSPORT_VER", "1 ")])),
            Err(EnvError::NoVersion)
        );
        for ok in ["1", "1,1", "1,2", "2,1"] {
            assert_eq!(
                check_version(&env(&[("TOR_PT_MANAGED_TRANSPORT_VER", ok)])),
                Ok(())
            );
        }
    }

    #[test]
    fn e5_client_transport_vectors() {
        let base = [
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/tmp/x"),
        ];
        assert!(parse(&env(&base)).is_err());
        let cases: &[(&str, &[&str])] = &[
            ("alpha", &["alpha"]),
            ("alpha,beta", &["alpha", "beta"]),
            ("alpha,beta,gamma", &["alpha", "beta", "gamma"]),
            ("*", &["*"]),
            ("alpha,*,gamma", &["alpha", "*", "gamma"]),
            ("alpha\\,beta", &["alpha\\", "beta"]),
        ];
        for (value, want) in cases {
            let mut e = base.to_vec();
            e.push(("TOR_PT_CLIENT_TRANSPORTS", value));
            let Role::Client(c) = parse(&env(&e)).unwrap().role else {
                panic!()
            };
            assert_eq!(c.transports, *want);
        }
    }

    #[test]
    fn e6_state_location_required_and_created_0700() {
        let e = [
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_CLIENT_TRANSPORTS", "plain"),
        ];
        assert!(
            matches!(parse(&env(&e)), Err(EnvError::Env(m)) if m.contains("TOR_PT_STATE_LOCATION"))
        );
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        make_state_dir(&nested).unwrap();
        make_state_dir(&nested).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(make_state_dir(&file).is_err());
        assert!(make_state_dir(&file.join("below")).is_err());
    }

    type Parsed = Vec<(String, SocketAddr, Vec<(String, String)>)>;

    fn server(bind: &str, transports: &str, opts: &str) -> Result<Parsed, EnvError> {
        let mut e = vec![
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/tmp/x"),
            ("TOR_PT_ORPORT", "127.0.0.1:9001"),
            ("TOR_PT_SERVER_BINDADDR", bind),
            ("TOR_PT_SERVER_TRANSPORTS", transports),
        ];
        if !opts.is_empty() {
            e.push(("TOR_PT_SERVER_TRANSPORT_OPTIONS", opts));
        }
        let parsed = parse(&env(&e))?;
        match parsed.role {
            Role::Server(s) => Ok(s
                .transports
                .into_iter()
                .map(|b| {
                    (
                        b.name,
                        b.addr,
                        b.options
                            .iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                    )
                })
                .collect()),
            Role::Client(_) => Err(EnvError::Env("client".into())),
        }
    }

    #[test]
    fn e7_bindaddr_vectors() {
        for (b, t, o) in [
            ("alpha", "alpha", ""),
            ("alpha-1.2.3.4", "alpha", ""),
            ("alpha-1.2.3.4:1111", "", "alpha:key=value"),
            ("alpha-1.2.3.4:1111", "alpha", "key=value"),
            ("alpha\\,beta-1.2.3.4:1111", "alpha\\,beta", ""),
            ("alpha-0.0.0.0:1234,alpha-[::]:1234", "alpha", ""),
            ("alpha-0.0.0.0:1234,alpha-0.0.0.0:1234", "alpha", ""),
        ] {
            assert!(server(b, t, o).is_err(), "{b} / {t} / {o}");
        }
        let got = server(
            "alpha-1.2.3.4:1111,beta-[1:2::3:4]:2222",
            "alpha,beta,gamma",
            "alpha:k1=v1;beta:k2=v2;gamma:k3=v3",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            (
                "alpha".into(),
                "1.2.3.4:1111".parse().unwrap(),
                vec![("k1".into(), "v1".into())]
            )
        );
        assert_eq!(
            got[1],
            (
                "beta".into(),
                "[1:2::3:4]:2222".parse().unwrap(),
                vec![("k2".into(), "v2".into())]
            )
        );
        assert!(server("alpha-1.2.3.4:1111", "xxx", "").unwrap().is_empty());
        assert_eq!(
            server("alpha-1.2.3.4:1111", "alpha,beta,gamma", "")
                .unwrap()
                .len(),
            1
        );
        let t = server(
            "trebuchet-127.0.0.1:1984,ballista-127.0.0.1:4891",
            "trebuchet,ballista",
            "trebuchet:secret=nou;trebuchet:cache=/tmp/c;ballista:secret=yes",
        )
        .unwrap();
        assert_eq!(
            t[0].2,
            vec![
                ("secret".to_string(), "nou".to_string()),
                ("cache".into(), "/tmp/c".into())
            ]
        );
        assert_eq!(t[1].2, vec![("secret".to_string(), "yes".to_string())]);
        assert!(
            server("alpha-1.2.3.4:1111,beta-[1:2::3:4]:2222", "*", "")
                .unwrap()
                .is_empty()
        );
        let tor = server("dummy-0.0.0.0:0,other-[::1]:4443", "dummy,other", "").unwrap();
        assert_eq!(tor[1].1, "[::1]:4443".parse().unwrap());
    }

    #[test]
    fn e9_orport_and_extorport_rules() {
        let base = vec![
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/tmp/x"),
            ("TOR_PT_SERVER_BINDADDR", "plain-127.0.0.1:0"),
            ("TOR_PT_SERVER_TRANSPORTS", "plain"),
        ];
        assert!(parse(&env(&base)).is_err(), "needs an ORPort or ExtORPort");
        let mut ext = base.clone();
        ext.push(("TOR_PT_EXTENDED_SERVER_PORT", "127.0.0.1:5555"));
        assert!(
            matches!(parse(&env(&ext)), Err(EnvError::Env(m)) if m.contains("TOR_PT_AUTH_COOKIE_FILE"))
        );
        ext.push(("TOR_PT_AUTH_COOKIE_FILE", "/tmp/cookie"));
        let Role::Server(s) = parse(&env(&ext)).unwrap().role else {
            panic!()
        };
        assert_eq!(s.extorport, Some("127.0.0.1:5555".parse().unwrap()));
        let mut empty_ext = base.clone();
        empty_ext.push(("TOR_PT_EXTENDED_SERVER_PORT", ""));
        empty_ext.push(("TOR_PT_ORPORT", "127.0.0.1:9001"));
        let Role::Server(s) = parse(&env(&empty_ext)).unwrap().role else {
            panic!()
        };
        assert_eq!(
            (s.extorport, s.orport),
            (None, Some("127.0.0.1:9001".parse().unwrap()))
        );
    }

    #[test]
    fn e10_outbound_bind_addresses() {
        let e = env(&[
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/tmp/x"),
            ("TOR_PT_CLIENT_TRANSPORTS", "plain"),
            ("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", "203.0.113.4"),
            ("TOR_PT_OUTBOUND_BIND_ADDRESS_V6", "[2001:db8::4]"),
        ]);
        let m = parse(&e).unwrap();
        assert_eq!(m.bind_v4, Some("203.0.113.4".parse().unwrap()));
        assert_eq!(m.bind_v6, Some("2001:db8::4".parse().unwrap()));
        let bad = env(&[
            ("TOR_PT_MANAGED_TRANSPORT_VER", "1"),
            ("TOR_PT_STATE_LOCATION", "/tmp/x"),
            ("TOR_PT_CLIENT_TRANSPORTS", "plain"),
            ("TOR_PT_OUTBOUND_BIND_ADDRESS_V4", "[::1]"),
        ]);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn resolve_addr_vectors_1_3() {
        for bad in [
            "",
            "1.2.3.4",
            "1.2.3.4:",
            "9999",
            ":9999",
            "[1:2::3:4]",
            "[1:2::3:4]:",
            "[1::2::3:4]",
            "1:2::3:4::9999",
            "1:2:3:4::9999",
            "localhost:9999",
            "[localhost]:9999",
            "1.2.3.4:http",
            "1.2.3.4:0x50",
            "1.2.3.4:-65456",
            "1.2.3.4:65536",
            "1.2.3.4:80\0",
            "1.2.3.4:80 ",
            " 1.2.3.4:80",
            "1.2.3.4 : 80",
            "1.2.3.4:+80",
        ] {
            assert!(resolve_addr(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            resolve_addr("1.2.3.4:9999").unwrap(),
            "1.2.3.4:9999".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("[1:2::3:4]:9999").unwrap(),
            "[1:2::3:4]:9999".parse().unwrap()
        );
        assert_eq!(
            resolve_addr("1:2::3:4:9999").unwrap(),
            "[1:2::3:4]:9999".parse().unwrap()
        );
    }

    #[test]
    fn server_options_vectors_7_3() {
        for bad in [
            "t\\",
            ":=",
            "t:=",
            ":k=",
            ":=v",
            "t:=v",
            "t:k\\",
            "t:k=v;",
            "abc",
            "t:",
            "key=value",
            "=value",
            "t:k=v\\",
            "t1:k=v;t2:k=v\\",
            "t:=key=value",
            "t:==key=value",
            "t:;key=value",
            "t:key\\=value",
        ] {
            assert!(parse_server_options(bad).is_err(), "{bad:?}");
        }
        let get = |s: &str| -> Vec<(String, Vec<(String, String)>)> {
            parse_server_options(s)
                .unwrap()
                .into_iter()
                .map(|(t, a)| {
                    (
                        t,
                        a.iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                    )
                })
                .collect()
        };
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert!(get("").is_empty());
        assert_eq!(get("t:k=v"), vec![("t".into(), vec![kv("k", "v")])]);
        assert_eq!(get("t:k=v=v"), vec![("t".into(), vec![kv("k", "v=v")])]);
        assert_eq!(get("t:k=vv=="), vec![("t".into(), vec![kv("k", "vv==")])]);
        assert_eq!(
            get("t1:k=v1;t2:k=v2;t1:k=v3"),
            vec![
                ("t1".into(), vec![kv("k", "v1"), kv("k", "v3")]),
                ("t2".into(), vec![kv("k", "v2")])
            ]
        );
        let names: Vec<String> = get("t\\:1:k=v;t\\=2:k=v;t\\;3:k=v;t\\\\4:k=v")
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(names, ["t:1", "t;3", "t=2", "t\\4"]);
        assert_eq!(
            get("t:k\\:1=v;t:k\\=2=v;t:k\\;3=v;t:k\\\\4=v")[0].1,
            vec![
                kv("k:1", "v"),
                kv("k=2", "v"),
                kv("k;3", "v"),
                kv("k\\4", "v")
            ]
        );
        assert_eq!(
            get("t:k=v\\:1;t:k=v\\=2;t:k=v\\;3;t:k=v\\\\4")[0].1,
            vec![
                kv("k", "v:1"),
                kv("k", "v=2"),
                kv("k", "v;3"),
                kv("k", "v\\4")
            ]
        );
        assert_eq!(
            get("scramblesuit:key=banana;automata:rule=110;automata:depth=3").len(),
            2
        );
        assert_eq!(
            get("dummy:shared-secret=a\\;b\\:c\\\\d;dummy:key2=x=y")[0].1,
            vec![kv("shared-secret", "a;b:c\\d"), kv("key2", "x=y")]
        );
    }
}
