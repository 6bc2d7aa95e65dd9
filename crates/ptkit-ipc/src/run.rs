//! The dispatcher itself (spec §1.3): parse the command line, negotiate, announce and serve
//! every requested transport, answer requests on stdin, then follow the lifecycle. This is the
//! I/O half of the crate; everything it decides comes from [`crate::flags`],
//! [`crate::options`], [`crate::lines`] and [`crate::requests`].
//!
//! Configuration errors (flags, `-mode`, options, state directory, `-metrics`) are reported
//! before the `VERSION` line, as one `VERSION-ERROR`/`ENV-ERROR` line, so a bad invocation
//! produces exactly one line; `PROXY-ERROR` follows `VERSION` as the spec orders it.
//!
//! Stdin carries requests (`STATS`, `CMESSAGE`/`SMESSAGE`, see [`crate::lines`]); it is read
//! whenever [`Hooks::input`] is given, and its end stops the dispatcher only with
//! `-exit-on-stdin-close`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ptkit_core::net::{DirectDialer, bind_tcp};
use ptkit_core::relay::{RelayConfig, relay_streams};
use ptkit_core::server::{ServerLimits, proxy};
use ptkit_core::shutdown::Shutdown;
use ptkit_core::transport::{SignalHandler, SignalOutbox};
use ptkit_core::{
    Args, BoxFuture, ClientConfig, Conn, Connector, Dialer, Registry, ServerConfig, Stats,
    StatsCounter, Target, TransportError,
};
use ptkit_tor::proxy::{ProxyDialer, ProxyUrl};
use ptkit_tor::socks_front::SocksLimits;
use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::flags::{self, DEFAULT_PROXY_LISTEN, IpcConfig, IpcRole, Mode, OptionsSource};
use crate::lines::{Dialect, EX_OK, IpcLine, LogLevel, Stream};
use crate::options::{self, TransportOptions};
use crate::requests::Requests;
use crate::socks_auth::is_bound_destination;

/// Usage text printed on stderr for `-h` / `-help`.
pub const USAGE: &str = "\
usage: ptkit -ptversion V[,V…] (-client | -server) (-transports a,b | -transport a) [flags]
flags: -state DIR -exit-on-stdin-close -proxy URI -options JSON|-optionsFile FILE
       -bindaddr t-ip:port,… | -bindhost IP -bindport N
       -target host:port | -targethost H -targetport N | -orport host:port
       -extorport ip:port -authcookie FILE
       -proxylistenaddr ip:port | -proxylistenhost IP -proxylistenport N
       -mode socks5|transparent-TCP|transparent-UDP|STUN -ipcLogLevel NONE|ERROR|WARN|INFO|DEBUG
       -metrics ip:port
stdin: STATS [transport] | SMESSAGE t base64 (client) | CMESSAGE t base64 (server)
       see docs/IPC.md";

/// The two standard streams of the dispatcher; stdout carries only protocol lines.
pub struct IpcOut {
    stdout: Mutex<Box<dyn Write + Send>>,
    stderr: Mutex<Box<dyn Write + Send>>,
    log: OnceLock<(Dialect, Option<LogLevel>)>,
}

impl std::fmt::Debug for IpcOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpcOut")
    }
}

impl IpcOut {
    /// Writes to the given streams (tests: buffers).
    pub fn new(stdout: Box<dyn Write + Send>, stderr: Box<dyn Write + Send>) -> Self {
        IpcOut {
            stdout: Mutex::new(stdout),
            stderr: Mutex::new(stderr),
            log: OnceLock::new(),
        }
    }

    /// The process's stdout and stderr.
    pub fn std() -> Self {
        IpcOut::new(Box::new(std::io::stdout()), Box::new(std::io::stderr()))
    }

    /// Writes `text` and a newline to `stream`, flushed. Errors (parent gone) are ignored.
    pub fn write(&self, stream: Stream, text: &str) {
        let target = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        if let Ok(mut w) = target.lock() {
            let _ = w.write_all(format!("{text}\n").as_bytes());
            let _ = w.flush();
        }
    }

    /// Renders `line` in `dialect` and writes it to its stream (§1.3.2).
    pub fn send(&self, line: &IpcLine, dialect: Dialect) {
        self.write(line.stream(dialect), &line.render(dialect));
    }

    /// Turns `LOG` lines on: `dialect`'s syntax, at or above `threshold` (`None`: `NONE`).
    /// Only the first call counts.
    pub fn set_log(&self, dialect: Dialect, threshold: Option<LogLevel>) {
        let _ = self.log.set((dialect, threshold));
    }

    /// True when a `LOG` line at `level` would be written.
    pub fn logs(&self, level: LogLevel) -> bool {
        self.log.get().is_some_and(|(_, t)| level.passes(*t))
    }

    /// Writes a `LOG` line if `level` passes the threshold.
    pub fn log(&self, level: LogLevel, text: &str) {
        if let Some((d, t)) = self.log.get()
            && level.passes(*t)
        {
            self.send(&IpcLine::Log(level, text.to_owned()), *d);
        }
    }

    /// Writes a fatal line and returns its exit code.
    fn fatal(&self, line: &IpcLine, dialect: Dialect) -> i32 {
        self.send(line, dialect);
        line.exit_code(dialect).unwrap_or(EX_OK)
    }
}

/// Reads the live counters of every running transport.
pub type StatsSource = Arc<dyn Fn() -> Vec<Stats> + Send + Sync>;

/// Serves `-metrics`: binds `addr` and serves `source` until the shutdown; returns the bound
/// address or why it could not bind.
pub type MetricsHook =
    Box<dyn Fn(SocketAddr, StatsSource, Shutdown) -> Result<SocketAddr, String> + Send + Sync>;

/// What the binary plugs into the dispatcher (all optional).
#[derive(Default)]
pub struct Hooks {
    /// The request stream (the process's stdin); `None`: no requests, and
    /// `-exit-on-stdin-close` never fires.
    pub input: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// `-metrics ADDR`; without it the flag is an `ENV-ERROR`.
    pub metrics: Option<MetricsHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("input", &self.input.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// Runs the dispatcher for `argv` (without the program name) and returns the exit code.
/// `get_env` supplies the `TOR_PT_*` fallback (read only before 3.0).
pub async fn run(
    argv: &[String],
    get_env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
    out: Arc<IpcOut>,
) -> i32 {
    run_with(argv, get_env, registry, out, Hooks::default()).await
}

/// [`run`] with the binary's [`Hooks`] (stdin requests, `-metrics`).
pub async fn run_with(
    argv: &[String],
    get_env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
    out: Arc<IpcOut>,
    hooks: Hooks,
) -> i32 {
    let cfg = match flags::parse(argv, get_env) {
        Ok(c) => c,
        Err(e) => {
            match e.line() {
                Some(line) => out.write(e.stream(), &line.render(e.dialect)),
                None => out.write(Stream::Stderr, USAGE),
            }
            return e.exit_code();
        }
    };
    run_config(cfg, registry, out, hooks).await
}

/// Runs an already parsed configuration (the command line, or `--config`'s JSON object).
pub async fn run_config(
    cfg: IpcConfig,
    registry: &Registry,
    out: Arc<IpcOut>,
    hooks: Hooks,
) -> i32 {
    let d = cfg.version.version.dialect();
    out.set_log(d, cfg.ipc_log_level);
    let env_error = |m: String| out.fatal(&IpcLine::EnvError(m), d);

    if cfg.role == IpcRole::Client {
        match cfg.mode {
            Mode::Socks5 => {}
            Mode::TransparentTcp if cfg.target.is_none() => {
                return env_error("missing -target (required with -mode transparent-TCP)".into());
            }
            Mode::TransparentTcp => {}
            // UDP over the transport (docs/udp.md); -target names the transport server.
            Mode::TransparentUdp | Mode::Stun if cfg.target.is_none() => {
                return env_error(format!(
                    "missing -target (required with -mode {})",
                    cfg.mode.as_str()
                ));
            }
            Mode::TransparentUdp | Mode::Stun => {}
        }
    }
    // 2.2+: `-options` is JSON only (§1.3.1); before, the microformat (or sniffed JSON).
    let loaded = match &cfg.options {
        Some(OptionsSource::Inline(s)) if cfg.version.version.json_options() => {
            options::decode_json(s, &cfg.transports)
        }
        Some(src) => options::load(src, &cfg.transports, &|p| std::fs::read_to_string(p)),
        None => Ok(TransportOptions::new()),
    };
    let options = match loaded {
        Ok(o) => o,
        Err(e) => return env_error(e.to_string()),
    };
    let state_dir = match &cfg.state_dir {
        Some(p) => p.clone(),
        None => match std::env::current_dir() {
            Ok(p) => p,
            Err(e) => return env_error(format!("cannot find the current directory: {e}")),
        },
    };
    if let Err(e) = ptkit_tor::env::make_state_dir(&state_dir) {
        return env_error(format!(
            "cannot create state directory {}: {e}",
            state_dir.display()
        ));
    }
    let shutdown = Shutdown::new();
    let stats: Arc<Mutex<Vec<Arc<StatsCounter>>>> = Arc::default();
    let source: StatsSource = {
        let stats = stats.clone();
        Arc::new(move || snapshot(&stats))
    };
    let mut metrics_on = None;
    if let Some(addr) = cfg.metrics {
        let bound = match &hooks.metrics {
            Some(hook) => hook(addr, source.clone(), shutdown.clone()),
            None => Err("not available in this build".into()),
        };
        match bound {
            Ok(a) => metrics_on = Some(a),
            Err(e) => return env_error(format!("-metrics {addr}: {e}")),
        }
    }

    out.send(&cfg.version.line(), d);
    if let Some(a) = metrics_on {
        // After VERSION: a LOG line must not come first.
        info!("metrics on http://{a}/metrics");
    }
    let mut ctx = Ctx {
        cfg: &cfg,
        registry,
        out: &out,
        out_arc: out.clone(),
        d,
        options,
        state_dir,
        shutdown: shutdown.clone(),
        stats: stats.clone(),
        requests: Requests::new(cfg.role),
    };
    let started = match cfg.role {
        IpcRole::Client => ctx.start_client(),
        IpcRole::Server => {
            ctx.start_server().await;
            Ok(())
        }
    };
    if let Err(code) = started {
        return code;
    }
    let requests = Arc::new(ctx.requests.with_stats(source.clone()));
    let exit_on_eof = cfg.exit_on_stdin_close;
    let input_done = async {
        match hooks.input {
            Some(input) => {
                crate::requests::serve(input, &requests, &out, d).await;
                if !exit_on_eof {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    let on_usr1 = || info!("stats {}", stats_json(&source()));
    let lifecycle = ptkit_tor::managed::lifecycle(&shutdown, false, on_usr1);
    let result = tokio::select! {
        r = lifecycle => r.map(|_| ()),
        _ = input_done => {
            info!("exiting: stdin closed");
            shutdown.abort();
            Ok(())
        }
    };
    match result {
        Ok(()) => {
            shutdown.drained(Duration::from_secs(2)).await;
            EX_OK
        }
        Err(e) => {
            warn!("cannot watch signals: {e}");
            shutdown.abort();
            EX_OK
        }
    }
}

fn snapshot(stats: &Mutex<Vec<Arc<StatsCounter>>>) -> Vec<Stats> {
    match stats.lock() {
        Ok(s) => s.iter().map(|c| c.snapshot()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The stats schema as one JSON array (the `STATS` answer, SIGUSR1's log line, `/stats`).
pub fn stats_json(all: &[Stats]) -> String {
    let items: Vec<String> = all.iter().map(Stats::to_json).collect();
    format!("[{}]", items.join(","))
}

struct Ctx<'a> {
    cfg: &'a IpcConfig,
    registry: &'a Registry,
    out: &'a IpcOut,
    out_arc: Arc<IpcOut>,
    d: Dialect,
    options: TransportOptions,
    state_dir: PathBuf,
    shutdown: Shutdown,
    stats: Arc<Mutex<Vec<Arc<StatsCounter>>>>,
    requests: Requests,
}

impl Ctx<'_> {
    fn names(&self, known: Vec<String>) -> Vec<String> {
        if self.cfg.transports.iter().any(|t| t == "*") {
            known
        } else {
            self.cfg.transports.clone()
        }
    }

    fn opts(&self, name: &str) -> Args {
        self.options.get(name).cloned().unwrap_or_default()
    }

    /// A counter for `name`, visible to `STATS`, SIGUSR1 and `-metrics`.
    fn counter(&self, name: &str) -> Arc<StatsCounter> {
        let c = Arc::new(StatsCounter::new(name.to_owned()));
        if let Ok(mut all) = self.stats.lock() {
            all.push(c.clone());
        }
        c
    }

    /// The outbox of transport `name`: its signals become `CMESSAGE` (client) or `SMESSAGE`
    /// (server) lines on stdout; oversized ones are dropped with a log line.
    fn outbox(&self, name: &str) -> SignalOutbox {
        let (out, d, role, name) = (self.out_arc.clone(), self.d, self.cfg.role, name.to_owned());
        Arc::new(move |payload: Vec<u8>| {
            let line = match role {
                IpcRole::Client => IpcLine::cmessage(&name, &payload),
                IpcRole::Server => IpcLine::smessage(&name, &payload),
            };
            match line {
                Ok(l) => out.send(&l, d),
                Err(e) => warn!("{name}: signal dropped: {e}"),
            }
        })
    }

    fn add_signals(&mut self, name: &str, handler: Option<Arc<dyn SignalHandler>>) {
        self.requests.add_transport(name, handler);
    }

    /// PT 1.0: methods `0x02`/`0x00` only; 2.x/3.0 add the settings methods `0x09` and
    /// `0x80` (§1.3.3).
    fn socks_limits(&self) -> SocksLimits {
        SocksLimits {
            methods: match self.d {
                Dialect::Pt1 => None,
                Dialect::Pt2 => Some(crate::socks_auth::methods()),
            },
            ..SocksLimits::default()
        }
    }

    /// `Err(code)`: a fatal line (`PROXY-ERROR`) was printed.
    fn start_client(&mut self) -> Result<(), i32> {
        let direct = DirectDialer::default();
        let dialer: Arc<dyn Dialer> = match &self.cfg.proxy {
            Some(uri) => match ProxyUrl::parse(uri) {
                Ok(p) => {
                    self.out.send(&IpcLine::ProxyDone, self.d);
                    Arc::new(ProxyDialer {
                        proxy: Arc::new(p),
                        direct,
                    })
                }
                Err(e) => return Err(self.out.fatal(&IpcLine::ProxyError(e.to_string()), self.d)),
            },
            None => Arc::new(direct),
        };
        for name in self.names(self.registry.client_names()) {
            let Some(transport) = self.registry.client(&name) else {
                // Unknown transports are skipped silently (§1.3.2).
                info!("skipping unknown transport {name:?}");
                continue;
            };
            let mode = self.cfg.mode;
            // 3.0: options apply to clients too. In socks5 mode they configure the
            // transport; in transparent mode they are each connection's settings.
            let (config_opts, settings) = match mode {
                Mode::Socks5 => (self.opts(&name), self.cfg.settings.clone()),
                _ if self.options.contains_key(&name) => (Args::new(), self.opts(&name)),
                _ => (Args::new(), self.cfg.settings.clone()),
            };
            let config = ClientConfig {
                options: config_opts,
                state_dir: Some(self.state_dir.clone()),
                dialer: Some(dialer.clone()),
            };
            let started = (|| {
                // UDP modes: `udp-*` knobs come out of the settings (docs/udp.md).
                let udp = match crate::udp::is_udp(mode) {
                    true => Some(crate::udp::split_options(mode, &settings)?),
                    false => None,
                };
                let connector = transport.connector(&config).map_err(|e| e.to_string())?;
                let listen = match self.cfg.proxy_listen {
                    Some(a) => a,
                    None => DEFAULT_PROXY_LISTEN
                        .parse::<SocketAddr>()
                        .map_err(|e| e.to_string())?,
                };
                if let Some((udp, settings)) = udp {
                    let (target, stats) = (self.cfg.target.clone(), self.counter(&name));
                    let sd = self.shutdown.clone();
                    return crate::udp::start_client(
                        listen, connector, settings, target, udp, stats, sd,
                    );
                }
                let listener = bind_tcp(listen).map_err(|e| format!("cannot listen: {e}"))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| format!("cannot listen: {e}"))?;
                let stats = self.counter(&name);
                match (mode, &self.cfg.target) {
                    (Mode::TransparentTcp, Some(target)) => serve_transparent(
                        listener,
                        connector,
                        settings,
                        target.clone(),
                        stats,
                        self.shutdown.clone(),
                    ),
                    (_, target) => crate::socks::serve(
                        listener,
                        Arc::new(Bound {
                            inner: connector,
                            target: target.clone(),
                            settings,
                        }),
                        stats,
                        self.shutdown.clone(),
                        self.socks_limits(),
                    ),
                }
                Ok::<_, String>(addr)
            })();
            match started {
                Ok(addr) => {
                    let handler = transport.signals(self.outbox(&name));
                    self.add_signals(&name, handler);
                    self.out
                        .send(&IpcLine::Cmethod { name, mode, addr }, self.d)
                }
                Err(m) => self.out.send(&IpcLine::CmethodError(name, m), self.d),
            }
        }
        self.out.send(&IpcLine::CmethodsDone, self.d);
        Ok(())
    }

    async fn start_server(&mut self) {
        for (name, addr) in &self.cfg.bind {
            let Some(transport) = self.registry.server(name) else {
                info!("skipping unknown transport {name:?}");
                continue;
            };
            if crate::udp::is_udp(self.cfg.mode) {
                // UDP modes: each transport connection becomes UDP to -target (docs/udp.md).
                let started = async {
                    let target = self.cfg.target.clone().ok_or("no target")?;
                    let (udp, options) =
                        crate::udp::split_options(self.cfg.mode, &self.opts(name))?;
                    let state_dir = Some(self.state_dir.clone());
                    let config = ServerConfig {
                        listen: *addr,
                        options,
                        state_dir,
                    };
                    let listener = transport.listen(config).await.map_err(|e| e.to_string())?;
                    let addr = listener.local_addr().map_err(|e| e.to_string())?;
                    let args = listener.client_args();
                    let (stats, sd) = (self.counter(name), self.shutdown.clone());
                    crate::udp::start_server(listener, target, udp, stats, sd);
                    Ok::<_, String>((addr, args))
                }
                .await;
                let line = match started {
                    Ok((addr, args)) => {
                        let handler = transport.signals(self.outbox(name));
                        self.add_signals(name, handler);
                        let name = name.clone();
                        IpcLine::Smethod { name, addr, args }
                    }
                    Err(m) => IpcLine::SmethodError(name.clone(), m),
                };
                self.out.send(&line, self.d);
                continue;
            }
            let upstream = ptkit_tor::managed::server_upstream(
                name,
                self.cfg.extorport,
                self.cfg.auth_cookie.as_deref(),
                self.cfg.target.clone(),
                &DirectDialer::default(),
            );
            let Some(upstream) = upstream else {
                let line = IpcLine::SmethodError(name.clone(), "no target".into());
                self.out.send(&line, self.d);
                continue;
            };
            let config = ServerConfig {
                listen: *addr,
                options: self.opts(name),
                state_dir: Some(self.state_dir.clone()),
            };
            let started = async {
                let listener = transport.listen(config).await.map_err(|e| e.to_string())?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let args = listener.client_args();
                let stats = self.counter(name);
                proxy(
                    listener,
                    upstream,
                    stats,
                    self.shutdown.clone(),
                    ServerLimits::default(),
                );
                Ok::<_, String>((addr, args))
            }
            .await;
            let line = match started {
                Ok((addr, args)) => {
                    let handler = transport.signals(self.outbox(name));
                    self.add_signals(name, handler);
                    IpcLine::Smethod {
                        name: name.clone(),
                        addr,
                        args,
                    }
                }
                Err(m) => IpcLine::SmethodError(name.clone(), m),
            };
            self.out.send(&line, self.d);
        }
        self.out.send(&IpcLine::SmethodsDone, self.d);
    }
}

/// The client side of a dispatcher's SOCKS port: the bound-transport destination `[::0]:0`
/// (§1.2) becomes `-target` (the transport server), and a SOCKS client that sends no settings
/// gets the configured default ones. Other destinations pass through (tor names the bridge).
struct Bound {
    inner: Arc<dyn Connector>,
    target: Option<Target>,
    settings: Args,
}

impl Connector for Bound {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_bound(&self) -> bool {
        self.target.is_some() || self.inner.is_bound()
    }

    fn connect(
        &self,
        settings: &Args,
        dest: Option<Target>,
    ) -> BoxFuture<'static, Result<Conn, TransportError>> {
        let settings = if settings.is_empty() {
            &self.settings
        } else {
            settings
        };
        let dest = match dest {
            Some(d) if is_bound_destination(&d) => match &self.target {
                Some(t) => Some(t.clone()),
                None => {
                    return Box::pin(async {
                        Err(TransportError::BadSettings(
                            "bound destination [::0]:0 but no -target to send it to".into(),
                        ))
                    });
                }
            },
            other => other,
        };
        self.inner.connect(settings, dest)
    }
}

/// `transparent-TCP` (§1.3.1 `-mode`): every accepted connection goes through `connector`
/// to the fixed `target`, with `settings` as its per-connection settings.
pub fn serve_transparent(
    listener: TcpListener,
    connector: Arc<dyn Connector>,
    settings: Args,
    target: Target,
    stats: Arc<StatsCounter>,
    shutdown: Shutdown,
) {
    let max = ptkit_core::net::DEFAULT_MAX_CONNECTIONS;
    ptkit_core::net::serve_tcp(
        listener,
        shutdown,
        max,
        "transparent-TCP",
        move |mut app, _peer| {
            let (connector, settings, target, stats) = (
                connector.clone(),
                settings.clone(),
                target.clone(),
                stats.clone(),
            );
            async move {
                let _open = stats.open();
                match connector.connect(&settings, Some(target)).await {
                    Ok(mut net) => {
                        let _ = relay_streams(
                            &mut app,
                            &mut net,
                            &RelayConfig::default(),
                            Some(&stats),
                        )
                        .await;
                    }
                    Err(e) => {
                        stats.fail(e.kind());
                        warn!("{} connection failed: {e}", connector.name());
                    }
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lines::{EX_CONFIG, EX_USAGE};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Runs a configuration that must fail; returns (code, stdout, stderr).
    async fn fail(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let (o, e) = (Buf::default(), Buf::default());
        let out = Arc::new(IpcOut::new(Box::new(o.clone()), Box::new(e.clone())));
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let code = tokio::time::timeout(
            Duration::from_secs(5),
            run(&argv, &get, &Registry::new(), out),
        )
        .await
        .unwrap();
        (code, o.text(), e.text())
    }

    #[tokio::test]
    async fn s1_3_2_errors_go_to_their_stream_with_their_code() {
        assert_eq!(
            fail(&["-ptversion", "7"], &[]).await,
            (
                EX_CONFIG,
                String::new(),
                "VERSION-ERROR no-version\n".into()
            )
        );
        let (code, out, err) =
            fail(&["-ptversion", "1", "-transports", "x", "-mode", "?"], &[]).await;
        assert_eq!((code, err.as_str()), (crate::lines::EX_PT1_FATAL, ""));
        assert!(out.starts_with("ENV-ERROR ") && out.ends_with('\n') && out.lines().count() == 1);
        let (code, out, err) = fail(
            &[
                "-ptversion",
                "2.2",
                "-transports",
                "x",
                "-optionsFile",
                "/nonexistent/o.json",
            ],
            &[],
        )
        .await;
        assert_eq!((code, out.as_str()), (EX_USAGE, ""));
        assert!(
            err.starts_with("ENV-ERROR cannot read options file"),
            "{err}"
        );
        // 2.0/2.1 take the microformat; 2.2+ JSON only.
        let (code, _, err) = fail(
            &["-ptversion", "2.1", "-transports", "x", "-options", "x:k"],
            &[],
        )
        .await;
        assert_eq!(code, EX_USAGE);
        assert!(err.starts_with("ENV-ERROR bad transport options"), "{err}");
    }

    #[tokio::test]
    async fn s1_3_2_proxy_error_follows_version() {
        let (code, out, err) = fail(
            &[
                "-ptversion",
                "3.0",
                "-transports",
                "x",
                "-proxy",
                "gopher://h:1",
            ],
            &[],
        )
        .await;
        assert_eq!(
            (code, out.as_str()),
            (crate::lines::EX_UNAVAILABLE, "VERSION 3.0\n")
        );
        assert!(
            err.starts_with("PROXY-ERROR ") && err.lines().count() == 1,
            "{err}"
        );
    }

    #[tokio::test]
    async fn help_prints_usage_on_stderr_and_exits_0() {
        let (code, out, err) = fail(&["-h"], &[]).await;
        assert_eq!((code, out.as_str()), (EX_OK, ""));
        assert!(err.starts_with("usage: "));
    }
}
