//! The dispatcher command line (spec §1.3.1), parsed with Go `flag` package semantics, with
//! the `TOR_PT_*` fallback that PT 2.0/2.1/2.2 allow (3.0 removed it, proposal 0010).
//!
//! Syntax, as Go's `flag`: `-name value`, `-name=value`, `--name` the same as `-name`;
//! boolean flags (`-client`, `-server`, `-exit-on-stdin-close`) take no separate value but
//! accept `-name=true|false|1|0|t|f|…`; a non-boolean flag takes the next argument even if it
//! starts with `-`; parsing stops at `--` or the first non-flag argument; a repeated flag keeps
//! its last value. Unlike Go, a leftover positional argument is an error, and an empty value
//! counts as absent (as `ptkit_tor::env` does for variables).
//!
//! Precedence: a flag overrides its variable (Draft 3/2.1); 2.2 forbids the parent to set
//! both, which we do not punish. Variables are read only when the negotiated version is
//! below 3.0. Every failure is a [`ConfigError`]: one `ENV-ERROR` (or `VERSION-ERROR`) line,
//! its stream and its exit code.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ptkit_core::Target;
use ptkit_tor::env::{parse_bindaddrs, resolve_addr};

use crate::lines::{Dialect, EX_OK, IpcLine, LogLevel, Stream};
use crate::version::{Negotiated, NoVersion, OfferSource, negotiate};

/// The `-mode` of a dispatcher (§1.3.1, §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// `socks5` (default).
    #[default]
    Socks5,
    /// `transparent-TCP`.
    TransparentTcp,
    /// `transparent-UDP` (u16 big-endian length framing, §1.3.4).
    TransparentUdp,
    /// `STUN` (STUN header delimits packets, §1.3.4).
    Stun,
}

impl Mode {
    /// The spelling used on `CMETHOD` lines and in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Socks5 => "socks5",
            Mode::TransparentTcp => "transparent-TCP",
            Mode::TransparentUdp => "transparent-UDP",
            Mode::Stun => "STUN",
        }
    }

    /// Parses a `-mode` value case-insensitively (proposal 0009).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Mode::Socks5,
            Mode::TransparentTcp,
            Mode::TransparentUdp,
            Mode::Stun,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// Client or server (`-client` / `-server`, default client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IpcRole {
    /// `-client` (default).
    #[default]
    Client,
    /// `-server`.
    Server,
}

/// Where transport options come from; decode them with [`crate::options::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionsSource {
    /// `-options <value>` (microformat before 2.2, JSON from 2.2).
    Inline(String),
    /// `-optionsFile <path>` (2.2+: the same JSON, read from a file by the caller's hook).
    File(PathBuf),
    /// `TOR_PT_SERVER_TRANSPORT_OPTIONS` (microformat).
    Env(String),
}

/// The dispatcher's configuration, every value validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpcConfig {
    /// The negotiated version and the token to echo on the `VERSION` line.
    pub version: Negotiated,
    /// `-client` / `-server`.
    pub role: IpcRole,
    /// `-transports a,b` / `-transport a` (may contain `*`; unknown names are skipped later).
    pub transports: Vec<String>,
    /// `-state` (`None`: the current directory).
    pub state_dir: Option<PathBuf>,
    /// `-exit-on-stdin-close`.
    pub exit_on_stdin_close: bool,
    /// `-proxy`, raw; validate with `ptkit_tor::proxy::ProxyUrl::parse` after `VERSION` and
    /// answer `PROXY DONE` / `PROXY-ERROR`.
    pub proxy: Option<String>,
    /// `-options` / `-optionsFile`.
    pub options: Option<OptionsSource>,
    /// `-bindaddr`, or `-bindhost` + `-bindport` for the single transport, in order.
    pub bind: Vec<(String, SocketAddr)>,
    /// `-target`, `-targethost` + `-targetport`, or (before 3.0) `-orport`.
    pub target: Option<Target>,
    /// `-extorport`.
    pub extorport: Option<SocketAddr>,
    /// `-authcookie`.
    pub auth_cookie: Option<PathBuf>,
    /// `-proxylistenaddr` or `-proxylistenhost` + `-proxylistenport` (`None`: use
    /// [`DEFAULT_PROXY_LISTEN`]).
    pub proxy_listen: Option<SocketAddr>,
    /// `-mode`.
    pub mode: Mode,
    /// `-ipcLogLevel` (`None` is `NONE`, the default).
    pub ipc_log_level: Option<LogLevel>,
    /// `-metrics ADDR` (ours): serve the stats as Prometheus text and JSON on ADDR.
    pub metrics: Option<SocketAddr>,
    /// Client default per-connection settings, used when a SOCKS client sends none (set by
    /// `--config`'s `"settings"`; no flag sets it).
    pub settings: ptkit_core::Args,
}

/// Client listener when none is given (shapeshifter-dispatcher's default, §1.5).
pub const DEFAULT_PROXY_LISTEN: &str = "127.0.0.1:0";

/// What is wrong with the command line or environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagError {
    /// `-h` / `-help`: print usage, exit 0 (as Go).
    #[error("help requested")]
    Help,
    /// A malformed flag such as `---x` or `-=x`.
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// A flag we do not know.
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    /// A value flag at the end of the line.
    #[error("flag needs an argument: -{0}")]
    MissingValue(&'static str),
    /// A value that does not parse.
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    BadValue {
        /// The flag (or variable) name.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// Two flags that exclude each other.
    #[error("-{0} and -{1} cannot be used together")]
    Conflict(&'static str, &'static str),
    /// A required flag is absent.
    #[error("missing -{0}")]
    Missing(&'static str),
    /// A positional argument.
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    /// Version negotiation failed.
    #[error(transparent)]
    NoVersion(#[from] NoVersion),
}

impl FlagError {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            FlagError::Help => "flags_help",
            FlagError::BadSyntax(_) => "flags_bad_syntax",
            FlagError::UnknownFlag(_) => "flags_unknown",
            FlagError::MissingValue(_) => "flags_missing_value",
            FlagError::BadValue { .. } => "flags_bad_value",
            FlagError::Conflict(..) => "flags_conflict",
            FlagError::Missing(_) => "flags_missing",
            FlagError::Unexpected(_) => "flags_unexpected",
            FlagError::NoVersion(_) => "no_version",
        }
    }
}

/// A failure with its reporting: the line, the stream and the exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ConfigError {
    /// What went wrong.
    pub error: FlagError,
    /// PT 1.0 or 2.x/3.0 reporting (2.x/3.0 unless PT 1.0 was negotiated or offered).
    pub dialect: Dialect,
}

impl ConfigError {
    /// The line to print: `VERSION-ERROR no-version`, `ENV-ERROR <message>`, or `None` for
    /// [`FlagError::Help`] (print usage on stderr instead).
    pub fn line(&self) -> Option<IpcLine> {
        match &self.error {
            FlagError::Help => None,
            FlagError::NoVersion(_) => Some(IpcLine::VersionError),
            e => Some(IpcLine::EnvError(e.to_string())),
        }
    }

    /// Where the line goes.
    pub fn stream(&self) -> Stream {
        match self.line() {
            Some(l) => l.stream(self.dialect),
            None => Stream::Stderr,
        }
    }

    /// The process exit code: 78 or 64 under 2.x/3.0 (§1.3.2), 1 under PT 1.0, 0 for help.
    pub fn exit_code(&self) -> i32 {
        self.line()
            .and_then(|l| l.exit_code(self.dialect))
            .unwrap_or(EX_OK)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Every flag we accept (§1.3.1), plus `-orport` (server target before 3.0).
const FLAGS: &[(&str, Kind)] = &[
    ("ptversion", Kind::Value),
    ("transports", Kind::Value),
    ("transport", Kind::Value),
    ("state", Kind::Value),
    ("exit-on-stdin-close", Kind::Bool),
    ("proxy", Kind::Value),
    ("options", Kind::Value),
    ("optionsFile", Kind::Value),
    ("bindaddr", Kind::Value),
    ("bindhost", Kind::Value),
    ("bindport", Kind::Value),
    ("target", Kind::Value),
    ("targethost", Kind::Value),
    ("targetport", Kind::Value),
    ("orport", Kind::Value),
    ("extorport", Kind::Value),
    ("authcookie", Kind::Value),
    ("proxylistenaddr", Kind::Value),
    ("proxylistenhost", Kind::Value),
    ("proxylistenport", Kind::Value),
    ("mode", Kind::Value),
    ("client", Kind::Bool),
    ("server", Kind::Bool),
    ("ipcLogLevel", Kind::Value),
    ("metrics", Kind::Value),
];

/// Go's `strconv.ParseBool`.
fn parse_bool(flag: &'static str, v: &str) -> Result<bool, FlagError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(bad(flag, v, "not a boolean")),
    }
}

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> FlagError {
    FlagError::BadValue {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// The raw flags: name → last value (booleans as `true`/`false`).
#[derive(Debug, Default)]
struct Raw {
    values: BTreeMap<&'static str, String>,
}

impl Raw {
    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }
}

fn scan<S: AsRef<str>>(args: &[S]) -> Result<Raw, FlagError> {
    let mut raw = Raw::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_ref();
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(body) = arg.strip_prefix('-').filter(|b| !b.is_empty()) else {
            return Err(FlagError::Unexpected(arg.to_owned()));
        };
        let body = body.strip_prefix('-').unwrap_or(body);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::BadSyntax(arg.to_owned()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            return Err(FlagError::Help);
        }
        let Some(&(name, kind)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(FlagError::UnknownFlag(name.to_owned()));
        };
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_owned(),
            (Kind::Bool, Some(v)) => parse_bool(name, v)?.to_string(),
            (Kind::Value, Some(v)) => v.to_owned(),
            (Kind::Value, None) => {
                let v = args.get(i).ok_or(FlagError::MissingValue(name))?;
                i += 1;
                v.as_ref().to_owned()
            }
        };
        raw.values.insert(name, value);
    }
    if let Some(extra) = args.get(i) {
        return Err(FlagError::Unexpected(extra.as_ref().to_owned()));
    }
    Ok(raw)
}

/// Parses the dispatcher command line (without `argv[0]`) and, before 3.0, the environment
/// through `env` (e.g. `|k| std::env::var(k).ok()`).
pub fn parse<S: AsRef<str>>(
    args: &[S],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IpcConfig, ConfigError> {
    let raw = scan(args).map_err(|error| ConfigError {
        error,
        dialect: Dialect::Pt2,
    })?;
    let env_ver = env("TOR_PT_MANAGED_TRANSPORT_VER").filter(|v| !v.is_empty());
    let offer = match (raw.get("ptversion"), env_ver.as_deref()) {
        (Some(v), _) => Some((v, OfferSource::Flag)),
        (None, Some(v)) => Some((v, OfferSource::Env)),
        (None, None) => None,
    };
    let version = negotiate(offer).map_err(|e| ConfigError {
        dialect: e.dialect,
        error: FlagError::NoVersion(e),
    })?;
    let dialect = version.version.dialect();
    build(&raw, version, env).map_err(|error| ConfigError { error, dialect })
}

/// The first value of a flag, else (when allowed) the non-empty variable.
struct Lookup<'a> {
    raw: &'a Raw,
    env: &'a dyn Fn(&str) -> Option<String>,
    use_env: bool,
}

impl Lookup<'_> {
    fn env(&self, var: &str) -> Option<String> {
        if self.use_env {
            (self.env)(var).filter(|v| !v.is_empty())
        } else {
            None
        }
    }

    fn get(&self, flag: &str, var: &str) -> Option<String> {
        self.raw
            .get(flag)
            .map(str::to_owned)
            .or_else(|| self.env(var))
    }

    fn exclusive(&self, a: &'static str, b: &'static str) -> Result<(), FlagError> {
        if self.raw.get(a).is_some() && self.raw.get(b).is_some() {
            return Err(FlagError::Conflict(a, b));
        }
        Ok(())
    }

    /// Both or neither of a host/port pair.
    fn pair(
        &self,
        host: &'static str,
        port: &'static str,
    ) -> Result<Option<(String, u16)>, FlagError> {
        match (self.raw.get(host), self.raw.get(port)) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(FlagError::Missing(port)),
            (None, Some(_)) => Err(FlagError::Missing(host)),
            (Some(h), Some(p)) => {
                let port_num = p
                    .parse::<u16>()
                    .ok()
                    .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad(port, p, "not a port number"))?;
                Ok(Some((h.to_owned(), port_num)))
            }
        }
    }
}

fn ip_literal(flag: &'static str, host: &str) -> Result<IpAddr, FlagError> {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    inner
        .parse()
        .map_err(|_| bad(flag, host, "not an IP address"))
}

fn build(
    raw: &Raw,
    version: Negotiated,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IpcConfig, FlagError> {
    let l = Lookup {
        raw,
        env,
        use_env: version.version.reads_env(),
    };

    // Role.
    if raw.flag("client") && raw.flag("server") {
        return Err(FlagError::Conflict("client", "server"));
    }
    let role = if raw.flag("server") {
        IpcRole::Server
    } else if raw.flag("client") {
        IpcRole::Client
    } else if l.env("TOR_PT_CLIENT_TRANSPORTS").is_none()
        && l.env("TOR_PT_SERVER_TRANSPORTS").is_some()
    {
        IpcRole::Server
    } else {
        IpcRole::Client
    };

    // Transports: exactly one of -transports / -transport.
    l.exclusive("transports", "transport")?;
    let transports_var = match role {
        IpcRole::Client => "TOR_PT_CLIENT_TRANSPORTS",
        IpcRole::Server => "TOR_PT_SERVER_TRANSPORTS",
    };
    let transports: Vec<String> = if let Some(t) = raw.get("transport") {
        if t.contains(',') {
            return Err(bad("transport", t, "names one transport; use -transports"));
        }
        vec![t.to_owned()]
    } else {
        let list = l
            .get("transports", transports_var)
            .ok_or(FlagError::Missing("transports"))?;
        let names: Vec<String> = list.split(',').map(str::to_owned).collect();
        if names.iter().any(String::is_empty) {
            return Err(bad("transports", &list, "empty transport name"));
        }
        names
    };

    let state_dir = l.get("state", "TOR_PT_STATE_LOCATION").map(PathBuf::from);
    let exit_on_stdin_close = raw.flag("exit-on-stdin-close")
        || (raw.get("exit-on-stdin-close").is_none()
            && l.env("TOR_PT_EXIT_ON_STDIN_CLOSE").as_deref() == Some("1"));
    let proxy = l.get("proxy", "TOR_PT_PROXY");

    l.exclusive("options", "optionsFile")?;
    let options = match (raw.get("options"), raw.get("optionsFile")) {
        (Some(o), _) => Some(OptionsSource::Inline(o.to_owned())),
        (None, Some(f)) => Some(OptionsSource::File(PathBuf::from(f))),
        (None, None) => l
            .env("TOR_PT_SERVER_TRANSPORT_OPTIONS")
            .map(OptionsSource::Env),
    };

    // Bind addresses.
    l.exclusive("bindaddr", "bindhost")?;
    l.exclusive("bindaddr", "bindport")?;
    let bind = if let Some((host, port)) = l.pair("bindhost", "bindport")? {
        let ip = ip_literal("bindhost", &host)?;
        let [name] = transports.as_slice() else {
            return Err(FlagError::Conflict("bindhost", "transports"));
        };
        vec![(name.clone(), SocketAddr::new(ip, port))]
    } else if let Some(value) = l.get("bindaddr", "TOR_PT_SERVER_BINDADDR") {
        let all: Vec<&str>;
        let wanted: Vec<&str> = if transports.iter().any(|t| t == "*") {
            all = value
                .split(',')
                .filter_map(|i| i.split_once('-').map(|(n, _)| n))
                .collect();
            all
        } else {
            transports.iter().map(String::as_str).collect()
        };
        parse_bindaddrs(&value, &wanted).map_err(|e| bad("bindaddr", &value, e.to_string()))?
    } else {
        Vec::new()
    };

    // Target.
    l.exclusive("target", "targethost")?;
    l.exclusive("target", "targetport")?;
    l.exclusive("target", "orport")?;
    l.exclusive("orport", "targethost")?;
    l.exclusive("orport", "targetport")?;
    let target = if let Some((host, port)) = l.pair("targethost", "targetport")? {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let joined = format!("{host}:{port}");
        Some(Target::parse(&joined).map_err(|e| bad("targethost", &joined, e.to_string()))?)
    } else {
        let (flag, value) = match (raw.get("target"), raw.get("orport")) {
            (Some(t), _) => ("target", Some(t.to_owned())),
            (None, Some(o)) => ("orport", Some(o.to_owned())),
            (None, None) => ("orport", l.env("TOR_PT_ORPORT")),
        };
        match value {
            Some(v) => Some(Target::parse(&v).map_err(|e| bad(flag, &v, e.to_string()))?),
            None => None,
        }
    };

    let extorport = match l.get("extorport", "TOR_PT_EXTENDED_SERVER_PORT") {
        Some(v) => Some(resolve_addr(&v).map_err(|e| bad("extorport", &v, e))?),
        None => None,
    };
    let auth_cookie = l
        .get("authcookie", "TOR_PT_AUTH_COOKIE_FILE")
        .map(PathBuf::from);
    if extorport.is_some() && auth_cookie.is_none() {
        return Err(FlagError::Missing("authcookie"));
    }

    l.exclusive("proxylistenaddr", "proxylistenhost")?;
    l.exclusive("proxylistenaddr", "proxylistenport")?;
    let proxy_listen = if let Some((host, port)) = l.pair("proxylistenhost", "proxylistenport")? {
        Some(SocketAddr::new(ip_literal("proxylistenhost", &host)?, port))
    } else {
        match raw.get("proxylistenaddr") {
            Some(v) => Some(resolve_addr(v).map_err(|e| bad("proxylistenaddr", v, e))?),
            None => None,
        }
    };

    let mode = match raw.get("mode") {
        Some(m) => Mode::parse(m).ok_or_else(|| {
            bad(
                "mode",
                m,
                "want socks5, transparent-TCP, transparent-UDP or STUN",
            )
        })?,
        None => Mode::Socks5,
    };
    let ipc_log_level = match raw.get("ipcLogLevel") {
        Some(v) => LogLevel::parse_threshold(v)
            .ok_or_else(|| bad("ipcLogLevel", v, "want NONE, ERROR, WARN, INFO or DEBUG"))?,
        None => None,
    };

    let metrics = match raw.get("metrics") {
        Some(v) => Some(
            v.parse::<SocketAddr>()
                .map_err(|_| bad("metrics", v, "want an IP address and port"))?,
        ),
        None => None,
    };

    if role == IpcRole::Server {
        if bind.is_empty() {
            return Err(FlagError::Missing("bindaddr"));
        }
        if target.is_none() && extorport.is_none() {
            return Err(FlagError::Missing("target"));
        }
    }

    Ok(IpcConfig {
        version,
        role,
        transports,
        state_dir,
        exit_on_stdin_close,
        proxy,
        options,
        bind,
        target,
        extorport,
        auth_cookie,
        proxy_listen,
        mode,
        ipc_log_level,
        metrics,
        settings: ptkit_core::Args::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lines::{EX_CONFIG, EX_USAGE};
    use crate::version::PtVersion;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn ok(args: &[&str]) -> IpcConfig {
        parse(args, &env(&[])).unwrap()
    }

    fn err(args: &[&str]) -> ConfigError {
        parse(args, &env(&[])).unwrap_err()
    }

    const SERVER: &[&str] = &[
        "-server",
        "-transports",
        "shadow",
        "-bindaddr",
        "shadow-127.0.0.1:2222",
        "-target",
        "127.0.0.1:9001",
    ];

    #[test]
    fn s1_3_1_flag_forms_are_equivalent() {
        let forms: &[&[&str]] = &[
            &["-transports", "a,b", "-mode", "STUN", "-client"],
            &["-transports=a,b", "-mode=STUN", "-client=true"],
            &["--transports", "a,b", "--mode", "stun", "--client"],
            &["--transports=a,b", "--mode=Stun", "-client=1", "--"],
        ];
        for f in forms {
            let c = ok(f);
            assert_eq!(c.transports, ["a", "b"], "{f:?}");
            assert_eq!(c.mode, Mode::Stun);
            assert_eq!(c.role, IpcRole::Client);
            assert_eq!(c.version.version, PtVersion::V3_0);
        }
        // A value flag takes the next argument even when it starts with '-'.
        assert_eq!(ok(&["-transport", "-x"]).transports, ["-x"]);
        // Last value wins, as in Go.
        assert_eq!(
            ok(&["-transport", "a", "-transport", "b"]).transports,
            ["b"]
        );
    }

    #[test]
    fn s1_3_1_every_flag() {
        let c = ok(&[
            "-ptversion",
            "2.1,3.0",
            "-server",
            "-transport",
            "shadow",
            "-state",
            "st",
            "-exit-on-stdin-close",
            "-proxy",
            "socks5://h:1",
            "-optionsFile",
            "/etc/o.json",
            "-bindhost",
            "::1",
            "-bindport",
            "2222",
            "-targethost",
            "::1",
            "-targetport",
            "9001",
            "-extorport",
            "127.0.0.1:6000",
            "-authcookie",
            "/c",
            "-proxylistenhost",
            "127.0.0.2",
            "-proxylistenport",
            "1080",
            "-mode",
            "transparent-tcp",
            "-ipcLogLevel",
            "info",
        ]);
        assert_eq!(c.version.token, "3.0");
        assert_eq!(c.role, IpcRole::Server);
        assert_eq!(c.state_dir, Some(PathBuf::from("st")));
        assert!(c.exit_on_stdin_close);
        assert_eq!(c.proxy.as_deref(), Some("socks5://h:1"));
        assert_eq!(c.options, Some(OptionsSource::File("/etc/o.json".into())));
        assert_eq!(
            c.bind,
            [("shadow".to_string(), "[::1]:2222".parse().unwrap())]
        );
        assert_eq!(c.target.unwrap().to_string(), "[::1]:9001");
        assert_eq!(c.extorport, Some("127.0.0.1:6000".parse().unwrap()));
        assert_eq!(c.auth_cookie, Some(PathBuf::from("/c")));
        assert_eq!(c.proxy_listen, Some("127.0.0.2:1080".parse().unwrap()));
        assert_eq!(c.mode, Mode::TransparentTcp);
        assert_eq!(c.ipc_log_level, Some(LogLevel::Info));
        assert_eq!(c.metrics, None);
        assert_eq!(
            ok(&["-transport", "a", "--metrics=127.0.0.1:9100"]).metrics,
            Some("127.0.0.1:9100".parse().unwrap())
        );

        let c = ok(&[
            "-transports",
            "a",
            "-options",
            "{}",
            "-proxylistenaddr",
            "[::1]:0",
            "-target",
            "example.com:443",
        ]);
        assert_eq!(c.options, Some(OptionsSource::Inline("{}".into())));
        assert_eq!(c.proxy_listen, Some("[::1]:0".parse().unwrap()));
        assert_eq!(c.target.unwrap().to_string(), "example.com:443");
        assert_eq!(c.mode, Mode::Socks5);
        assert_eq!(c.ipc_log_level, None);
        assert!(!c.exit_on_stdin_close);

        let c = ok(SERVER);
        assert_eq!(
            c.bind,
            [("shadow".into(), "127.0.0.1:2222".parse().unwrap())]
        );
        let mut orport = SERVER[..5].to_vec();
        orport.extend(["-orport", "127.0.0.1:9001"]);
        assert_eq!(ok(&orport).target, c.target);
    }

    #[test]
    fn s1_3_1_conflicting_flags() {
        let cases: &[(&[&str], FlagError)] = &[
            (
                &["-client", "-server", "-transport", "a"],
                FlagError::Conflict("client", "server"),
            ),
            (
                &["-transports", "a", "-transport", "a"],
                FlagError::Conflict("transports", "transport"),
            ),
            (
                &["-transport", "a", "-options", "{}", "-optionsFile", "f"],
                FlagError::Conflict("options", "optionsFile"),
            ),
            (
                &[
                    "-transport",
                    "a",
                    "-bindaddr",
                    "a-1.2.3.4:1",
                    "-bindhost",
                    "1.2.3.4",
                ],
                FlagError::Conflict("bindaddr", "bindhost"),
            ),
            (
                &["-transport", "a", "-target", "h:1", "-targetport", "1"],
                FlagError::Conflict("target", "targetport"),
            ),
            (
                &[
                    "-transport",
                    "a",
                    "-proxylistenaddr",
                    "1.2.3.4:1",
                    "-proxylistenport",
                    "2",
                ],
                FlagError::Conflict("proxylistenaddr", "proxylistenport"),
            ),
            (
                &[
                    "-transports",
                    "a,b",
                    "-bindhost",
                    "1.2.3.4",
                    "-bindport",
                    "1",
                ],
                FlagError::Conflict("bindhost", "transports"),
            ),
        ];
        for (args, want) in cases {
            let e = err(args);
            assert_eq!(&e.error, want, "{args:?}");
            assert_eq!(e.exit_code(), EX_USAGE);
            assert_eq!(e.stream(), Stream::Stderr);
            let line = e.line().unwrap().render(e.dialect);
            assert!(line.starts_with("ENV-ERROR -"), "{line}");
            assert!(!line.contains('\n'));
            assert_eq!(e.error.kind(), "flags_conflict");
        }
    }

    #[test]
    fn s1_3_1_missing_and_bad_values() {
        assert_eq!(err(&[]).error, FlagError::Missing("transports"));
        assert_eq!(
            err(&["-transport"]).error,
            FlagError::MissingValue("transport")
        );
        assert_eq!(
            err(&["-transport", "a", "-bindhost", "1.2.3.4"]).error,
            FlagError::Missing("bindport")
        );
        assert_eq!(
            err(&["-server", "-transport", "a", "-target", "h:1"]).error,
            FlagError::Missing("bindaddr")
        );
        assert_eq!(err(&SERVER[..5]).error, FlagError::Missing("target"));
        let mut ext = SERVER[..5].to_vec();
        ext.extend(["-extorport", "127.0.0.1:1"]);
        assert_eq!(err(&ext).error, FlagError::Missing("authcookie"));
        for (args, flag) in [
            (&["-transport", "a", "-mode", "socks4"][..], "mode"),
            (&["-transport", "a", "-ipcLogLevel", "TRACE"], "ipcLogLevel"),
            (&["-transport", "a", "-client=maybe"], "client"),
            (&["-transport", "a,b"], "transport"),
            (&["-transports", "a,,b"], "transports"),
            (
                &["-transport", "a", "-proxylistenaddr", "localhost:1"],
                "proxylistenaddr",
            ),
            (
                &[
                    "-transport",
                    "a",
                    "-proxylistenhost",
                    "h",
                    "-proxylistenport",
                    "1",
                ],
                "proxylistenhost",
            ),
            (
                &["-transport", "a", "-bindhost", "::1", "-bindport", "70000"],
                "bindport",
            ),
            (
                &["-transport", "a", "-bindhost", "::1", "-bindport", "+1"],
                "bindport",
            ),
            (&["-transport", "a", "-target", "nohost"], "target"),
            (&["-transport", "a", "-metrics", "localhost:1"], "metrics"),
        ] {
            let e = err(args);
            assert!(
                matches!(&e.error, FlagError::BadValue { flag: f, .. } if *f == flag),
                "{args:?}: {e:?}"
            );
            assert_eq!(e.exit_code(), EX_USAGE);
        }
        assert_eq!(
            err(&["-transport", "a", "-mode", "socks4"])
                .line()
                .unwrap()
                .render(Dialect::Pt2),
            "ENV-ERROR invalid value \"socks4\" for flag -mode: want socks5, transparent-TCP, transparent-UDP or STUN"
        );
    }

    #[test]
    fn s1_3_1_go_flag_syntax_errors() {
        assert_eq!(err(&["-nope"]).error, FlagError::UnknownFlag("nope".into()));
        assert_eq!(
            err(&["-Mode", "x"]).error,
            FlagError::UnknownFlag("Mode".into())
        );
        assert_eq!(err(&["---x"]).error, FlagError::BadSyntax("---x".into()));
        assert_eq!(err(&["-=x"]).error, FlagError::BadSyntax("-=x".into()));
        assert_eq!(
            err(&["-transport", "a", "extra"]).error,
            FlagError::Unexpected("extra".into())
        );
        assert_eq!(
            err(&["-transport", "a", "--", "extra"]).error,
            FlagError::Unexpected("extra".into())
        );
        let h = err(&["-help"]);
        assert_eq!(h.error, FlagError::Help);
        assert_eq!(h.exit_code(), 0);
        assert_eq!(h.line(), None);
        assert_eq!(err(&["-nope"]).exit_code(), EX_USAGE);
    }

    #[test]
    fn s1_3_2_unknown_version_is_config_error() {
        let e = err(&["-ptversion", "4.0", "-transport", "a"]);
        assert!(matches!(e.error, FlagError::NoVersion(_)));
        assert_eq!(e.line(), Some(IpcLine::VersionError));
        assert_eq!(e.stream(), Stream::Stderr);
        assert_eq!(e.exit_code(), EX_CONFIG);
        // From the environment with PT 1.0-looking tokens: PT 1.0 reporting.
        let e = parse(
            &[] as &[&str],
            &env(&[("TOR_PT_MANAGED_TRANSPORT_VER", "0.9")]),
        )
        .unwrap_err();
        assert_eq!(e.stream(), Stream::Stdout);
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn s1_3_1_env_fallback_before_3_0_only() {
        let vars = [
            ("TOR_PT_MANAGED_TRANSPORT_VER", "2.1"),
            ("TOR_PT_SERVER_TRANSPORTS", "obfs4,x"),
            ("TOR_PT_SERVER_BINDADDR", "obfs4-0.0.0.0:443,y-1.2.3.4:5"),
            ("TOR_PT_SERVER_TRANSPORT_OPTIONS", "obfs4:iat-mode=1"),
            ("TOR_PT_ORPORT", "127.0.0.1:9001"),
            ("TOR_PT_STATE_LOCATION", "/var/lib/pt"),
            ("TOR_PT_EXIT_ON_STDIN_CLOSE", "1"),
        ];
        let c = parse(&[] as &[&str], &env(&vars)).unwrap();
        assert_eq!(c.version.token, "2.1");
        assert_eq!(c.role, IpcRole::Server);
        assert_eq!(c.transports, ["obfs4", "x"]);
        assert_eq!(c.bind, [("obfs4".into(), "0.0.0.0:443".parse().unwrap())]);
        assert_eq!(
            c.options,
            Some(OptionsSource::Env("obfs4:iat-mode=1".into()))
        );
        assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/pt")));
        assert!(c.exit_on_stdin_close);
        // A flag overrides its variable.
        let c = parse(
            &[
                "-state",
                "here",
                "-exit-on-stdin-close=false",
                "-bindaddr",
                "x-[::]:1",
            ],
            &env(&vars),
        )
        .unwrap();
        assert_eq!(c.state_dir, Some(PathBuf::from("here")));
        assert!(!c.exit_on_stdin_close);
        assert_eq!(c.bind, [("x".into(), "[::]:1".parse().unwrap())]);
        // 3.0 (from -ptversion) ignores every TOR_PT_* variable.
        let e = parse(&["-ptversion", "3.0"], &env(&vars)).unwrap_err();
        assert_eq!(e.error, FlagError::Missing("transports"));
        // "*" keeps every bind address.
        let c = parse(&["-server", "-transports", "*"], &env(&vars)).unwrap();
        assert_eq!(c.bind.len(), 2);
    }

    #[test]
    fn s1_3_1_mode_parse_case_insensitive() {
        for (s, m) in [
            ("SOCKS5", Mode::Socks5),
            ("Transparent-Udp", Mode::TransparentUdp),
            ("stun", Mode::Stun),
        ] {
            assert_eq!(Mode::parse(s), Some(m));
        }
        assert_eq!(Mode::parse("transparent"), None);
        assert_eq!(Mode::parse("udp"), None);
    }
}
