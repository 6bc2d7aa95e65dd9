//! The *application IPC adapter* (spec §1.2, §6 row 10): run any PT 1.0 or PT 2.x/3.0
//! binary as a child and use it through the same `ptkit_core` traits as an in-process
//! transport, so an application switches between the two by configuration only.
//!
//! - PT 1.0 (`ptversion` `1`): the child is launched as tor launches it, by
//!   [`ptkit_tor::host::ManagedPt`] (`TOR_PT_*` variables, RFC 1929 arguments);
//! - PT 2.0/2.1/2.2/3.0: the child gets dispatcher flags ([`lines::build_args`]: always
//!   `-ptversion`, `-client`/`-server`, `-transports`, `-state`, `-exit-on-stdin-close`;
//!   `-options` as PT 1.0 microformat before 2.2 and JSON from 2.2; `-orport` before 3.0 and
//!   `-target` in 3.0), its output is read by the sans-IO [`lines::IpcHostParser`] (error
//!   lines and sysexits codes 78/64/69 become [`AdapterError`]s), and connections go through
//!   [`connector::IpcConnector`] (settings as the `0x09` JSON block by default).
//!
//! Entry points:
//!
//! - [`ExternalClient::launch`] → an `Arc<dyn ClientTransport>` whose connector dials through
//!   the child;
//! - [`ExternalServerTransport`] → a `ServerTransport` whose `listen` launches the child with
//!   a private loopback target and hands out the child's de-obfuscated connections as
//!   [`ptkit_core::Accepted`]s, so `ptkit_core::server::proxy` serves it like any transport;
//! - [`ExternalPt::launch`] → the child itself (methods, connectors, graceful stop), e.g. a
//!   server forwarding straight to a fixed target;
//! - [`TransportSpec`] with [`client_transport`], [`server_transport`] and
//!   [`client_registry`]: one JSON-friendly configuration that names either an in-process
//!   transport (`{"transport":"plain"}`) or a binary
//!   (`{"transport":"obfs4","exec":"/usr/bin/obfs4proxy","ptversion":"1"}`).

pub mod connector;
pub mod lines;
pub mod process;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use ptkit_core::{
    Accepted, Args, BoxFuture, ClientConfig, ClientMeta, ClientTransport, Connector, Pending,
    Registry, ServerConfig, ServerTransport, Target, TransportError, TransportListener,
};
use ptkit_tor::host::{
    HostConfig, HostError, HostRole, ManagedPt, MethodProtocol, ServerTransportSpec,
};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::version::PtVersion;

pub use connector::{IpcConnector, SettingsMethod};
pub use lines::{LaunchRole, Method, MethodKind};
pub use process::IpcPt;

/// Startup deadline when none is configured.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest [`TransportSpec`] JSON accepted.
pub const MAX_SPEC_LEN: usize = 64 * 1024;

/// Why an external PT could not be launched or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The program could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// I/O with the child failed.
    #[error("I/O with the PT failed: {0}")]
    Io(#[from] io::Error),
    /// The PT 1.0 host side failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// `VERSION-ERROR` or exit 78: no offered version is supported.
    #[error("PT supports no offered version: {0}")]
    VersionError(String),
    /// The child answered a version other than the one offered.
    #[error("PT answered unsupported version {0:?}")]
    UnsupportedVersion(String),
    /// `ENV-ERROR` or exit 64.
    #[error("PT rejected its configuration: {0}")]
    EnvError(String),
    /// `PROXY-ERROR` or exit 69.
    #[error("PT cannot use the upstream proxy: {0}")]
    ProxyError(String),
    /// A malformed or misplaced line.
    #[error("PT protocol violation: {0}")]
    Protocol(String),
    /// A line longer than the IPC limit.
    #[error("PT printed an over-long line")]
    LineTooLong,
    /// No `*METHODS DONE` in time.
    #[error("PT did not finish configuring within {0:?}")]
    StartupTimeout(Duration),
    /// The child exited during startup without a recognised error line.
    #[error("PT exited during startup ({}){}", status.map_or("status unknown".into(), |s| s.to_string()), message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    ExitedEarly {
        /// Exit status, when collected.
        status: Option<ExitStatus>,
        /// Its last error line on stderr.
        message: Option<String>,
    },
    /// The child did not launch the requested transport.
    #[error("PT did not launch transport {0:?}")]
    MethodMissing(String),
    /// The launched method cannot be used through a connector (e.g. transparent-UDP).
    #[error("PT method {0:?} is not a SOCKS method")]
    NotSocks(String),
    /// The configuration names no known transport or is invalid.
    #[error("bad adapter configuration: {0}")]
    BadConfig(String),
}

impl AdapterError {
    /// Stable metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterError::Spawn { .. } | AdapterError::Io(_) => "io",
            AdapterError::Host(h) => h.kind(),
            AdapterError::VersionError(_) | AdapterError::UnsupportedVersion(_) => "unsupported",
            AdapterError::EnvError(_) | AdapterError::ProxyError(_) => "pt_reported",
            AdapterError::Protocol(_) | AdapterError::LineTooLong => "malformed",
            AdapterError::ExitedEarly { .. }
            | AdapterError::MethodMissing(_)
            | AdapterError::NotSocks(_) => "misbehaving",
            AdapterError::StartupTimeout(_) => "timeout",
            AdapterError::BadConfig(_) => "config",
        }
    }

    /// The error for a child that exited during startup: sysexits 78/64/69 are the
    /// `VERSION-ERROR`/`ENV-ERROR`/`PROXY-ERROR` of 2.x/3.0 (§1.3.2).
    pub fn from_exit(status: Option<ExitStatus>, message: Option<String>) -> Self {
        let text = || {
            message
                .clone()
                .map(|m| m.split_once(' ').map_or(m.clone(), |(_, r)| r.to_owned()))
                .unwrap_or_default()
        };
        match status.and_then(|s| s.code()) {
            Some(crate::lines::EX_CONFIG) => AdapterError::VersionError(text()),
            Some(crate::lines::EX_USAGE) => AdapterError::EnvError(text()),
            Some(crate::lines::EX_UNAVAILABLE) => AdapterError::ProxyError(text()),
            _ => AdapterError::ExitedEarly { status, message },
        }
    }
}

impl From<AdapterError> for TransportError {
    fn from(e: AdapterError) -> Self {
        match e {
            AdapterError::Io(io) => TransportError::Io(io),
            AdapterError::BadConfig(m) => TransportError::BadSettings(m),
            AdapterError::VersionError(_) | AdapterError::UnsupportedVersion(_) => {
                TransportError::Unsupported(e.to_string())
            }
            other => TransportError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// How to launch one external PT for one transport.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    /// The binary.
    pub program: PathBuf,
    /// Arguments before the adapter's own flags.
    pub args: Vec<String>,
    /// The IPC version to speak: [`PtVersion::V1`] is Tor's environment protocol.
    pub version: PtVersion,
    /// The transport to run.
    pub transport: String,
    /// State directory (the child creates it).
    pub state_dir: PathBuf,
    /// Transport options (server options; under 3.0 also client options).
    pub options: Args,
    /// Upstream proxy URI for the child (`-proxy` / `TOR_PT_PROXY`).
    pub proxy: Option<String>,
    /// 2.x/3.0 clients: the transport server, passed as `-target`, where a connection
    /// without destination (the bound request `[::0]:0`) goes. Ignored under PT 1.0.
    pub server: Option<Target>,
    /// How per-connection settings are sent to a 2.x/3.0 client method.
    pub settings_method: SettingsMethod,
    /// Deadline for `*METHODS DONE`.
    pub startup_timeout: Duration,
    /// Extra environment for the child.
    pub extra_env: Vec<(String, String)>,
}

impl ExternalConfig {
    /// A configuration with defaults: no arguments or options, `0x09` settings, 30 s.
    pub fn new(
        program: impl Into<PathBuf>,
        version: PtVersion,
        transport: &str,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        ExternalConfig {
            program: program.into(),
            args: Vec::new(),
            version,
            transport: transport.to_owned(),
            state_dir: state_dir.into(),
            options: Args::new(),
            proxy: None,
            server: None,
            settings_method: SettingsMethod::default(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            extra_env: Vec::new(),
        }
    }
}

enum Running {
    V1(ManagedPt),
    Ipc(IpcPt),
}

/// A running external PT (either IPC generation).
pub struct ExternalPt {
    running: Running,
    methods: Vec<Method>,
    transport: String,
    settings_method: SettingsMethod,
}

impl std::fmt::Debug for ExternalPt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalPt")
            .field("pid", &self.pid())
            .field("methods", &self.methods)
            .finish()
    }
}

impl ExternalPt {
    /// Launches the child in `role` and waits for its methods. Fails unless the configured
    /// transport was launched.
    pub async fn launch(config: &ExternalConfig, role: LaunchRole) -> Result<Self, AdapterError> {
        let (running, methods) = if config.version == PtVersion::V1 {
            let host_role = match &role {
                LaunchRole::Client { .. } => HostRole::Client {
                    transports: vec![config.transport.clone()],
                    proxy: config.proxy.clone(),
                },
                LaunchRole::Server { bind, target } => HostRole::Server {
                    transports: vec![ServerTransportSpec {
                        name: config.transport.clone(),
                        bind: *bind,
                        options: config.options.clone(),
                    }],
                    orport: Some(target.socket_addr().ok_or_else(|| {
                        AdapterError::BadConfig(
                            "PT 1.0 servers need an IP address as target (TOR_PT_ORPORT)".into(),
                        )
                    })?),
                    extorport: None,
                    cookie_file: None,
                },
            };
            let mut host = HostConfig::new(&config.program, host_role, &config.state_dir);
            host.args = config.args.clone();
            host.startup_timeout = config.startup_timeout;
            host.extra_env = config.extra_env.clone();
            let pt = ManagedPt::launch(host).await?;
            let methods = pt
                .methods()
                .methods
                .iter()
                .map(|m| Method {
                    name: m.name.clone(),
                    kind: match m.protocol {
                        MethodProtocol::Socks4 => MethodKind::Socks4,
                        MethodProtocol::Socks5 => MethodKind::Socks5,
                        MethodProtocol::Server => MethodKind::Server,
                    },
                    addr: m.addr,
                    args: m.args.clone(),
                })
                .collect();
            (Running::V1(pt), methods)
        } else {
            let pt = IpcPt::launch(config, config.version, role).await?;
            let methods = pt.methods().to_vec();
            (Running::Ipc(pt), methods)
        };
        let this = ExternalPt {
            running,
            methods,
            transport: config.transport.clone(),
            settings_method: config.settings_method,
        };
        if this.method().is_none() {
            let name = this.transport.clone();
            this.stop(Duration::from_millis(200)).await;
            return Err(AdapterError::MethodMissing(name));
        }
        Ok(this)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::V1(pt) => pt.pid(),
            Running::Ipc(pt) => pt.pid(),
        }
    }

    /// Every method the child launched.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The method of the configured transport.
    pub fn method(&self) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == self.transport)
    }

    /// A connector through the configured transport's client method.
    pub fn connector(&self) -> Result<Arc<dyn Connector>, AdapterError> {
        let method = self
            .method()
            .ok_or_else(|| AdapterError::MethodMissing(self.transport.clone()))?;
        match (&self.running, method.kind) {
            (Running::V1(pt), MethodKind::Socks4 | MethodKind::Socks5) => pt
                .connector(&method.name)
                .map(|c| Arc::new(c) as Arc<dyn Connector>)
                .ok_or_else(|| AdapterError::NotSocks(method.name.clone())),
            (Running::Ipc(_), MethodKind::Socks5) => Ok(Arc::new(IpcConnector::new(
                &method.name,
                method.addr,
                self.settings_method,
            ))),
            _ => Err(AdapterError::NotSocks(method.name.clone())),
        }
    }

    /// Stops the child (stdin close, SIGTERM, SIGKILL with `grace` between).
    pub async fn stop(self, grace: Duration) {
        let r = match self.running {
            Running::V1(pt) => pt.stop(grace).await.map_err(AdapterError::from),
            Running::Ipc(pt) => pt.stop(grace).await,
        };
        match r {
            Ok(status) => tracing::debug!(transport = %self.transport, "PT stopped: {status}"),
            Err(e) => tracing::warn!(transport = %self.transport, "stopping PT: {e}"),
        }
    }
}

/// A client transport backed by a running external PT.
pub struct ExternalClient {
    name: String,
    connector: Arc<dyn Connector>,
    pt: tokio::sync::Mutex<Option<ExternalPt>>,
}

impl std::fmt::Debug for ExternalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalClient")
            .field("name", &self.name)
            .finish()
    }
}

impl ExternalClient {
    /// Launches the child as a client and returns the transport (its SOCKS listener on
    /// loopback, chosen by the child).
    pub async fn launch(config: &ExternalConfig) -> Result<Arc<ExternalClient>, AdapterError> {
        let role = LaunchRole::Client {
            listen: None,
            target: config.server.clone(),
        };
        let pt = ExternalPt::launch(config, role).await?;
        let connector = pt.connector()?;
        Ok(Arc::new(ExternalClient {
            name: config.transport.clone(),
            connector,
            pt: tokio::sync::Mutex::new(Some(pt)),
        }))
    }

    /// The child's process id, while it runs.
    pub async fn pid(&self) -> Option<u32> {
        self.pt.lock().await.as_ref().map(ExternalPt::pid)
    }

    /// Stops the child; connectors fail afterwards.
    pub async fn stop(&self, grace: Duration) {
        if let Some(pt) = self.pt.lock().await.take() {
            pt.stop(grace).await;
        }
    }
}

impl ClientTransport for ExternalClient {
    fn name(&self) -> &str {
        &self.name
    }

    /// The connector through the child. The child was configured at launch, so `config`
    /// is not used (its options belong in [`ExternalConfig::options`]).
    fn connector(&self, _config: &ClientConfig) -> Result<Arc<dyn Connector>, TransportError> {
        Ok(self.connector.clone())
    }
}

/// A server transport backed by an external PT: each `listen` launches the child on the
/// requested address with a private loopback target, whose connections are the accepted,
/// de-obfuscated streams.
#[derive(Debug, Clone)]
pub struct ExternalServerTransport {
    config: ExternalConfig,
}

impl ExternalServerTransport {
    /// A server transport launching `config`.
    pub fn new(config: ExternalConfig) -> Self {
        ExternalServerTransport { config }
    }
}

struct ExternalListener {
    inner: TcpListener,
    addr: SocketAddr,
    args: Args,
    pt: Option<ExternalPt>,
}

impl Drop for ExternalListener {
    fn drop(&mut self) {
        // The child is killed with its handle (kill_on_drop); stop gracefully when possible.
        if let Some(pt) = self.pt.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(pt.stop(Duration::from_secs(2)));
        }
    }
}

impl TransportListener for ExternalListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn client_args(&self) -> Args {
        self.args.clone()
    }

    fn accept(&mut self) -> BoxFuture<'_, io::Result<Pending>> {
        Box::pin(async move {
            let (conn, _) = self.inner.accept().await?;
            conn.set_nodelay(true)?;
            let pending: Pending = Box::pin(async move {
                Ok(Accepted {
                    conn: Box::new(conn),
                    meta: ClientMeta::default(),
                })
            });
            Ok(pending)
        })
    }
}

impl ServerTransport for ExternalServerTransport {
    fn name(&self) -> &str {
        &self.config.transport
    }

    fn generate_config(&self) -> Result<(Args, Args), TransportError> {
        Err(TransportError::Unsupported(
            "an external PT has no generate-config interface".into(),
        ))
    }

    fn listen(
        &self,
        config: ServerConfig,
    ) -> BoxFuture<'static, Result<Box<dyn TransportListener>, TransportError>> {
        let mut ext = self.config.clone();
        Box::pin(async move {
            for (k, v) in config.options.iter() {
                ext.options.push(k, v);
            }
            if let Some(dir) = config.state_dir {
                ext.state_dir = dir;
            }
            let inner = TcpListener::bind(("127.0.0.1", 0)).await?;
            let target = Target::from_socket_addr(inner.local_addr()?);
            let pt = ExternalPt::launch(
                &ext,
                LaunchRole::Server {
                    bind: config.listen,
                    target,
                },
            )
            .await?;
            let (addr, args) = match pt.method() {
                Some(m) => (m.addr, m.args.clone()),
                None => return Err(AdapterError::MethodMissing(ext.transport).into()),
            };
            Ok(Box::new(ExternalListener {
                inner,
                addr,
                args,
                pt: Some(pt),
            }) as Box<dyn TransportListener>)
        })
    }
}

/// One transport, in-process or external, as an application configures it (JSON or code).
///
/// `{"transport":"plain"}` names a built-in transport; adding `"exec"` runs a binary:
/// `{"transport":"obfs4","exec":"/usr/bin/obfs4proxy","ptversion":"1","options":{…}}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TransportSpec {
    /// Transport name.
    pub transport: String,
    /// Binary to run; absent: the built-in transport of that name.
    #[serde(default)]
    pub exec: Option<PathBuf>,
    /// Arguments before the adapter's flags.
    #[serde(default)]
    pub args: Vec<String>,
    /// IPC version: `1` (default), `2.0`, `2.1`, `2.2`, `3.0`.
    #[serde(default)]
    pub ptversion: Option<String>,
    /// State directory (default `pt_state/<transport>`).
    #[serde(default)]
    pub state: Option<PathBuf>,
    /// Transport options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Upstream proxy URI for the child.
    #[serde(default)]
    pub proxy: Option<String>,
    /// 2.x/3.0 clients: the transport server (`host:port`) for connections without a
    /// destination.
    #[serde(default)]
    pub server: Option<String>,
    /// `0x09` (default), `0x80` or `0x02`: how settings reach a 2.x/3.0 client.
    #[serde(default)]
    pub settings_method: Option<String>,
    /// Startup deadline in seconds (default 30).
    #[serde(default)]
    pub startup_timeout_secs: Option<u64>,
}

impl TransportSpec {
    /// Parses one spec from JSON (at most [`MAX_SPEC_LEN`] bytes).
    pub fn from_json(text: &str) -> Result<Self, AdapterError> {
        if text.len() > MAX_SPEC_LEN {
            return Err(AdapterError::BadConfig("specification too large".into()));
        }
        serde_json::from_str(text).map_err(|e| AdapterError::BadConfig(e.to_string()))
    }

    /// The launch configuration, or `None` for a built-in transport.
    pub fn external(&self) -> Result<Option<ExternalConfig>, AdapterError> {
        let Some(program) = &self.exec else {
            return Ok(None);
        };
        if !ptkit_tor::lines::is_transport_name(&self.transport) {
            return Err(AdapterError::BadConfig(format!(
                "{:?} is not a transport name",
                self.transport
            )));
        }
        let version = match self.ptversion.as_deref() {
            None => PtVersion::V1,
            Some(v) => PtVersion::from_token(v)
                .ok_or_else(|| AdapterError::BadConfig(format!("unknown ptversion {v:?}")))?,
        };
        let state = self
            .state
            .clone()
            .unwrap_or_else(|| PathBuf::from("pt_state").join(&self.transport));
        let mut c = ExternalConfig::new(program, version, &self.transport, state);
        c.args = self.args.clone();
        c.options = self
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        c.proxy = self.proxy.clone();
        c.server = match &self.server {
            Some(s) => Some(
                Target::parse(s).map_err(|e| AdapterError::BadConfig(format!("server: {e}")))?,
            ),
            None => None,
        };
        c.settings_method = match self.settings_method.as_deref() {
            None | Some("0x09") => SettingsMethod::JsonBlock,
            Some("0x80") => SettingsMethod::Legacy,
            Some("0x02") => SettingsMethod::Pt1Args,
            Some(other) => {
                return Err(AdapterError::BadConfig(format!(
                    "unknown settings_method {other:?} (0x09, 0x80 or 0x02)"
                )));
            }
        };
        if let Some(s) = self.startup_timeout_secs {
            c.startup_timeout = Duration::from_secs(s);
        }
        Ok(Some(c))
    }
}

/// The client transport `spec` names: the built-in one from `builtin`, or a launched binary.
pub async fn client_transport(
    spec: &TransportSpec,
    builtin: &Registry,
) -> Result<Arc<dyn ClientTransport>, AdapterError> {
    match spec.external()? {
        Some(config) => Ok(ExternalClient::launch(&config).await? as Arc<dyn ClientTransport>),
        None => builtin.client(&spec.transport).ok_or_else(|| {
            AdapterError::BadConfig(format!("unknown transport {:?}", spec.transport))
        }),
    }
}

/// The server transport `spec` names (an external one launches its binary on `listen`).
pub fn server_transport(
    spec: &TransportSpec,
    builtin: &Registry,
) -> Result<Arc<dyn ServerTransport>, AdapterError> {
    match spec.external()? {
        Some(config) => Ok(Arc::new(ExternalServerTransport::new(config))),
        None => builtin.server(&spec.transport).ok_or_else(|| {
            AdapterError::BadConfig(format!("unknown transport {:?}", spec.transport))
        }),
    }
}

/// `builtin`'s client transports with `specs` added; a spec with `exec` replaces the
/// built-in transport of the same name. External children are launched here.
pub async fn client_registry(
    specs: &[TransportSpec],
    builtin: &Registry,
) -> Result<Registry, AdapterError> {
    let mut reg = Registry::new();
    for name in builtin.client_names() {
        if specs
            .iter()
            .any(|s| s.transport == name && s.exec.is_some())
        {
            continue;
        }
        if let Some(t) = builtin.client(&name) {
            reg = reg.with_client(t);
        }
    }
    for spec in specs.iter().filter(|s| s.exec.is_some()) {
        reg = reg.with_client(client_transport(spec, builtin).await?);
    }
    Ok(reg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn specs_from_json() {
        let s = TransportSpec::from_json(r#"{"transport":"plain"}"#).unwrap();
        assert!(s.external().unwrap().is_none());
        let s = TransportSpec::from_json(
            r#"{"transport":"obfs4","exec":"/usr/bin/obfs4proxy","ptversion":"2.2","options":{"iat-mode":"0"},"settings_method":"0x80"}"#,
        )
        .unwrap();
        let c = s.external().unwrap().unwrap();
        assert_eq!(c.version, PtVersion::V2_2);
        assert_eq!(c.options.get("iat-mode"), Some("0"));
        assert_eq!(c.settings_method, SettingsMethod::Legacy);
        assert_eq!(c.state_dir, PathBuf::from("pt_state/obfs4"));
        for bad in [
            r#"{"transport":"x","exec":"/bin/x","ptversion":"9"}"#,
            r#"{"transport":"x-y","exec":"/bin/x"}"#,
            r#"{"transport":"x","exec":"/bin/x","settings_method":"0x01"}"#,
        ] {
            let e = TransportSpec::from_json(bad)
                .unwrap()
                .external()
                .unwrap_err();
            assert_eq!(e.kind(), "config");
        }
        assert!(TransportSpec::from_json(r#"{"transport":"x","bogus":1}"#).is_err());
    }

    #[test]
    fn sysexits_codes_become_errors() {
        use std::os::unix::process::ExitStatusExt;
        let st = |c: i32| Some(ExitStatus::from_raw(c << 8));
        assert!(matches!(
            AdapterError::from_exit(st(78), Some("VERSION-ERROR no-version".into())),
            AdapterError::VersionError(m) if m == "no-version"
        ));
        assert!(matches!(
            AdapterError::from_exit(st(64), None),
            AdapterError::EnvError(_)
        ));
        assert!(matches!(
            AdapterError::from_exit(st(69), None),
            AdapterError::ProxyError(_)
        ));
        assert!(matches!(
            AdapterError::from_exit(st(1), None),
            AdapterError::ExitedEarly { .. }
        ));
    }
}
