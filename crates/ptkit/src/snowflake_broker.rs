//! `snowflake-broker`: a drop-in for the Go Snowflake broker (same flags and endpoints).
//!
//! Flags are Go-style: `-name`, `--name`, `-name=value`, `-name value`; boolean flags take
//! no separate value (`-disable-tls`, `-disable-tls=false`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ptkit_core::shutdown::Shutdown;
use ptkit_snowflake::broker::{BrokerConfig, BrokerError, BrokerSettings, MetricsLog, start};
use tracing_subscriber::EnvFilter;

const HELP: &str = "\
snowflake-broker: the Snowflake rendezvous point (ptkit's drop-in for the Go broker 2.5.1).

Snowflake clients POST their WebRTC offer to /client; volunteer proxies long-poll /proxy,
receive a client's offer with the relay URL of the client's bridge, and POST their answer to
/answer, which the broker hands back to the waiting client.

USAGE
    snowflake-broker [FLAGS]          (or: ptkit snowflake-broker [FLAGS])

TLS (choose one)
    --acme-hostnames NAMES    Get certificates from Let's Encrypt for these comma-separated
                              names (HTTP-01: port 80 must reach this host)
    --acme-email EMAIL        Contact address for the ACME account
    --acme-cert-cache DIR     Where certificates are cached, created 0700
                              (default \"acme-cert-cache\")
    --cert FILE, --key FILE   Serve HTTPS with this PEM certificate chain and key
    --disable-tls             Serve plain HTTP (behind a TLS-terminating proxy, or for tests)

LISTENING
    --addr ADDR               Address to listen on (default \":443\"; \":8080\" means all
                              addresses, port 8080)

MATCHING
    --bridge-list-path FILE   Newline-delimited JSON, one bridge per line, exactly these keys:
                              {\"displayName\":\"x\",\"webSocketAddress\":\"wss://h/\",\"fingerprint\":\"<40 or 64 hex>\"}
                              It replaces the built-in list (the Tor Project's bridge). An
                              unknown key or a bad line rejects the whole file.
    --allowed-relay-pattern P The relay host pattern this broker hands out, e.g.
                              \"snowflake.torproject.net$\" (suffix) or \"^relay.example$\" (exact).
                              Proxies whose accepted pattern is narrower get
                              \"incorrect relay pattern\". Empty (the default) rejects every
                              proxy that sends a pattern, as the Go broker does.
    --default-relay-pattern P Pattern assumed for old proxies that send none (default \"\")
    --allow-unknown-nat-pairing
                              Also match clients and proxies that both report NAT \"unknown\"
                              (the Go broker never does; needed offline and in labs, where
                              the NAT checks cannot run)

METRICS AND LOGGING
    --metrics-log FILE        Append the 24-hour metrics to FILE and serve it on /metrics
                              (default: standard output)
    --geoipdb FILE            tor's IPv4 geoip file (default /usr/share/tor/geoip)
    --geoip6db FILE           tor's IPv6 geoip file (default /usr/share/tor/geoip6)
    --disable-geoip           No country counts
    --unsafe-logging          Log addresses instead of \"[scrubbed]\"
    --ip-count-log FILE, --ip-count-mask KEY, --ip-count-interval DURATION
                              Accepted for compatibility; not implemented (ignored)
    --log-level LEVEL         error, warn, info (default), debug or trace; RUST_LOG overrides

PTKIT EXTRAS
    --acme-directory URL      ACME directory (default Let's Encrypt production)
    --acme-ca FILE            Extra CA to trust for the ACME directory (Pebble, a private CA)
    --acme-http-listen ADDR   Where to answer HTTP-01 challenges (default \":80\")

    -h, --help                This help
    --version                 Print the version

ENDPOINTS
    POST /client, /proxy, /answer; GET /amp/client/...; /debug (proxy counts), /robots.txt,
    /metrics (the metrics log), /prometheus (snowflake_* counters). SIGHUP reloads the bridge
    list and the geoip files.

EXAMPLES
    # Public broker with Let's Encrypt, for the bridges in bridges.jsonl:
    snowflake-broker --acme-hostnames broker.example.net --acme-email ops@example.net \\
        --bridge-list-path bridges.jsonl --allowed-relay-pattern snowflake.example.net$ \\
        --metrics-log /var/log/snowflake-broker/metrics.log

    # Lab broker on loopback for the official client and proxy:
    snowflake-broker --disable-tls --addr 127.0.0.1:8080 --allowed-relay-pattern 127.0.0.1$ \\
        --bridge-list-path lab-bridges.jsonl --allow-unknown-nat-pairing --disable-geoip
    snowflake-proxy -broker http://127.0.0.1:8080/ -relay ws://127.0.0.1:8000/ \\
        -allowed-relay-hostname-pattern 127.0.0.1$ -allow-non-tls-relay

EXIT STATUS
    0 after SIGINT or SIGTERM; 1 on a configuration or runtime error; 2 on a usage error.";

/// Parsed command line.
#[derive(Debug, Default)]
struct Options {
    addr: String,
    acme_hostnames: String,
    acme_email: String,
    acme_cert_cache: String,
    acme_directory: Option<String>,
    acme_ca: Option<PathBuf>,
    acme_http_listen: String,
    cert: String,
    key: String,
    disable_tls: bool,
    bridge_list_path: String,
    allowed_relay_pattern: String,
    default_relay_pattern: String,
    metrics_log: String,
    unsafe_logging: bool,
    geoipdb: Option<String>,
    geoip6db: Option<String>,
    disable_geoip: bool,
    allow_unknown_nat_pairing: bool,
    ip_count_log: String,
    log_level: String,
}

enum Parsed {
    Run(Box<Options>),
    Help,
    Version,
}

const BOOL_FLAGS: &[&str] = &[
    "disable-tls",
    "unsafe-logging",
    "disable-geoip",
    "allow-unknown-nat-pairing",
    "help",
    "h",
    "version",
];

const VALUE_FLAGS: &[&str] = &[
    "addr",
    "acme-hostnames",
    "acme-email",
    "acme-cert-cache",
    "acme-directory",
    "acme-ca",
    "acme-http-listen",
    "cert",
    "key",
    "bridge-list-path",
    "allowed-relay-pattern",
    "default-relay-pattern",
    "metrics-log",
    "geoipdb",
    "geoip6db",
    "ip-count-log",
    "ip-count-mask",
    "ip-count-interval",
    "log-level",
];

fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {v:?} for -{name}")),
    }
}

/// Parses Go-style flags.
fn parse_args(argv: &[String]) -> Result<Parsed, String> {
    let mut o = Options {
        addr: ":443".into(),
        acme_cert_cache: "acme-cert-cache".into(),
        acme_http_listen: ":80".into(),
        log_level: "info".into(),
        ..Options::default()
    };
    let mut help = false;
    let mut version = false;
    let mut args = argv.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            if let Some(extra) = args.next() {
                return Err(format!("unexpected argument {extra:?}"));
            }
            break;
        }
        let Some(flag) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|f| !f.is_empty() && !f.starts_with('-'))
        else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if BOOL_FLAGS.contains(&name) {
            let v = match inline {
                Some(v) => parse_bool(name, v)?,
                None => true,
            };
            match name {
                "disable-tls" => o.disable_tls = v,
                "unsafe-logging" => o.unsafe_logging = v,
                "disable-geoip" => o.disable_geoip = v,
                "allow-unknown-nat-pairing" => o.allow_unknown_nat_pairing = v,
                "help" | "h" => help = v,
                _ => version = v,
            }
            continue;
        }
        if !VALUE_FLAGS.contains(&name) {
            return Err(format!("flag provided but not defined: -{name}"));
        }
        let value = match inline {
            Some(v) => v.to_owned(),
            None => args
                .next()
                .cloned()
                .ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        match name {
            "addr" => o.addr = value,
            "acme-hostnames" => o.acme_hostnames = value,
            "acme-email" => o.acme_email = value,
            "acme-cert-cache" => o.acme_cert_cache = value,
            "acme-directory" => o.acme_directory = Some(value),
            "acme-ca" => o.acme_ca = Some(value.into()),
            "acme-http-listen" => o.acme_http_listen = value,
            "cert" => o.cert = value,
            "key" => o.key = value,
            "bridge-list-path" => o.bridge_list_path = value,
            "allowed-relay-pattern" => o.allowed_relay_pattern = value,
            "default-relay-pattern" => o.default_relay_pattern = value,
            "metrics-log" => o.metrics_log = value,
            "geoipdb" => o.geoipdb = Some(value),
            "geoip6db" => o.geoip6db = Some(value),
            "ip-count-log" => o.ip_count_log = value,
            "ip-count-interval" if parse_go_duration(&value).is_none() => {
                return Err(format!(
                    "invalid value {value:?} for flag -ip-count-interval: not a duration"
                ));
            }
            "log-level" => o.log_level = value,
            _ => {} // ip-count-mask: accepted, unused.
        }
    }
    if help {
        return Ok(Parsed::Help);
    }
    if version {
        return Ok(Parsed::Version);
    }
    let acme = !o.acme_hostnames.is_empty();
    let static_cert = !o.cert.is_empty() || !o.key.is_empty();
    if static_cert && (o.cert.is_empty() || o.key.is_empty()) {
        return Err("--cert and --key must be given together".into());
    }
    if static_cert && acme {
        return Err(
            "the --cert and --key options are not allowed with --acme-email or --acme-hostnames"
                .into(),
        );
    }
    if static_cert && !o.acme_email.is_empty() {
        return Err(
            "the --cert and --key options are not allowed with --acme-email or --acme-hostnames"
                .into(),
        );
    }
    if !acme && !static_cert && !o.disable_tls {
        return Err(
            "the --acme-hostnames, --cert and --key, or --disable-tls option is required".into(),
        );
    }
    Ok(Parsed::Run(Box::new(o)))
}

/// Parses a Go duration such as `1h`, `90m`, `1h30m`, `2.5s` (enough to validate the flag).
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Go's listen address: `:port` means every address (IPv6 and IPv4, falling back to IPv4
/// only), otherwise `host:port`.
async fn listen_candidates(addr: &str) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("--addr {addr:?}: bad port"))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]);
    }
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("--addr {addr:?}: cannot resolve"))?
        .collect();
    if found.is_empty() {
        bail!("--addr {addr:?} resolved to nothing");
    }
    Ok(found)
}

fn create_private_dir(dir: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let path = PathBuf::from(dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&path)
        .with_context(|| format!("cannot create --acme-cert-cache {dir}"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {dir} private"))?;
    Ok(path)
}

async fn tls_acceptor(o: &Options) -> anyhow::Result<Option<ptkit_tls::Acceptor>> {
    use std::sync::Arc;
    if !o.acme_hostnames.is_empty() {
        let hostnames: Vec<String> = o
            .acme_hostnames
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if hostnames.is_empty() {
            bail!("--acme-hostnames is empty");
        }
        tracing::info!(?hostnames, "ACME hostnames");
        let cache = create_private_dir(&o.acme_cert_cache)?;
        let http_listen = *listen_candidates(&o.acme_http_listen)
            .await?
            .last()
            .context("--acme-http-listen")?;
        let acme = ptkit_tls::options::AcmeOptions {
            hostnames,
            email: (!o.acme_email.is_empty()).then(|| o.acme_email.clone()),
            directory: o.acme_directory.clone(),
            ca: o.acme_ca.clone(),
            challenge: ptkit_tls::Challenge::Http01,
            http_listen: Some(http_listen),
        };
        let acceptor = ptkit_tls::options::start_acme(acme, cache)
            .await
            .context("ACME")?;
        return Ok(Some(acceptor));
    }
    if !o.cert.is_empty() {
        let key = ptkit_tls::load_pem_files(o.cert.as_ref(), o.key.as_ref())?;
        let resolver = Arc::new(ptkit_tls::HotResolver::with_default(key));
        return Ok(Some(ptkit_tls::Acceptor::new(resolver, &[b"http/1.1"])?));
    }
    Ok(None)
}

async fn run(o: Options) -> anyhow::Result<()> {
    if !o.ip_count_log.is_empty() {
        tracing::warn!("--ip-count-log is accepted for compatibility but not implemented");
    }
    let tls = tls_acceptor(&o).await?;
    let mut settings = BrokerSettings::default();
    settings.allowed_relay_pattern = o.allowed_relay_pattern.clone();
    settings.default_relay_pattern = o.default_relay_pattern.clone();
    settings.allow_unknown_nat_pairing = o.allow_unknown_nat_pairing;
    settings.bridge_list_path =
        (!o.bridge_list_path.is_empty()).then(|| o.bridge_list_path.clone().into());
    if !o.disable_geoip {
        let explicit = o.geoipdb.is_some() || o.geoip6db.is_some();
        let v4 = PathBuf::from(
            o.geoipdb
                .clone()
                .unwrap_or_else(|| "/usr/share/tor/geoip".into()),
        );
        let v6 = PathBuf::from(
            o.geoip6db
                .clone()
                .unwrap_or_else(|| "/usr/share/tor/geoip6".into()),
        );
        if explicit || (v4.exists() && v6.exists()) {
            settings.geoip_paths = Some((v4, v6));
        } else {
            tracing::warn!(
                "no geoip files at {} and {} (Debian: apt install tor-geoipdb); proxy country counts are off",
                v4.display(),
                v6.display()
            );
        }
    }
    let metrics_log = if o.metrics_log.is_empty() {
        MetricsLog::Stdout
    } else {
        MetricsLog::File(o.metrics_log.clone().into())
    };
    // Handlers first: a SIGHUP right after the "listening" line must reload, not kill.
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let shutdown = Shutdown::new();
    let mut last_err = None;
    let mut running = None;
    for addr in listen_candidates(&o.addr).await? {
        let mut config = BrokerConfig::new(addr);
        config.tls = tls.clone();
        config.settings = settings.clone();
        config.metrics_log = metrics_log.clone();
        match start(config, &shutdown).await {
            Ok(r) => {
                running = Some(r);
                break;
            }
            // Only a failed bind tries the next address (IPv6 may be off).
            Err(e @ BrokerError::Io { .. }) if e.to_string().starts_with("cannot listen") => {
                last_err = Some(e)
            }
            Err(e) => return Err(e.into()),
        }
    }
    let Some(running) = running else {
        return Err(last_err.map_or_else(|| anyhow::anyhow!("nothing to listen on"), Into::into));
    };
    tracing::info!(
        addr = %running.local_addr(),
        tls = tls.is_some(),
        bridges = running.broker.bridges().len(),
        "snowflake-broker listening"
    );
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the bridge list and geoip databases");
                if let Err(e) = running.reload().await {
                    tracing::error!("reload failed, keeping the previous data: {e}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    shutdown.abort();
    let _ = shutdown.drained(Duration::from_secs(2)).await;
    Ok(())
}

/// Runs `snowflake-broker` with the Go program's flags (`argv` without the program name) and
/// returns the exit code.
pub async fn main(argv: Vec<String>) -> i32 {
    let options = match parse_args(&argv) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            let _ = writeln!(std::io::stdout(), "{HELP}");
            return 0;
        }
        Ok(Parsed::Version) => {
            let _ = writeln!(
                std::io::stdout(),
                "snowflake-broker (ptkit {}), compatible with snowflake 2.5.1",
                env!("CARGO_PKG_VERSION")
            );
            return 0;
        }
        Err(msg) => {
            eprintln!("snowflake-broker: {msg} (see --help)");
            return 2;
        }
    };
    ptkit_core::redact::set_unsafe_logging(options.unsafe_logging);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&options.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    match run(*options).await {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("snowflake-broker: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn go_style_flags() {
        let Parsed::Run(o) = parse_args(&args(&[
            "-disable-tls",
            "--addr",
            "127.0.0.1:8080",
            "-allowed-relay-pattern=127.0.0.1$",
            "--allow-unknown-nat-pairing=true",
            "-ip-count-interval",
            "1h30m",
        ]))
        .unwrap() else {
            panic!("expected Run")
        };
        assert!(o.disable_tls && o.allow_unknown_nat_pairing);
        assert_eq!(o.addr, "127.0.0.1:8080");
        assert_eq!(o.allowed_relay_pattern, "127.0.0.1$");
        assert!(matches!(parse_args(&args(&["-h"])).unwrap(), Parsed::Help));
        assert!(matches!(
            parse_args(&args(&["--version"])).unwrap(),
            Parsed::Version
        ));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["-bogus"][..],
            &["--addr"],
            &["-disable-tls=maybe"],
            &["-disable-tls", "stray"],
            &[],
            &["-cert", "c.pem"],
            &["-cert", "c", "-key", "k", "-acme-hostnames", "x"],
            &["-disable-tls", "-ip-count-interval", "soon"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
