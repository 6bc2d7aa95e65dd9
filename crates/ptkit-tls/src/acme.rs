//! The one ACME manager: obtains certificates (HTTP-01 or TLS-ALPN-01), caches them under
//! the state directory, installs them into a [`HotResolver`], and renews them ahead of expiry.
//!
//! Cache layout under [`AcmeConfig::cache_dir`] (directories 0700, files 0600, written
//! atomically):
//!
//! ```text
//! cache_dir/
//!   lock                              flock held while ordering
//!   accounts/<sha256(directory)>.json {"directory_url": …, "credentials": …}
//!   certs/<host name>/cert.pem        chain, leaf first
//!   certs/<host name>/key.pem         PKCS#8 private key
//! ```
//!
//! A cached certificate is reused, whichever directory issued it, until it is due for
//! renewal: startup with a valid cache does not contact the ACME server. Delete
//! `certs/<name>/` to force a new order.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use ptkit_core::shutdown::Shutdown;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use crate::cache::{self, CacheLock};
use crate::certs::{CertInfo, certified_key_from_pem, tls_alpn01_cert};
use crate::config::{ClientRoots, client_config};
use crate::error::{Error, Result};
use crate::http01::Http01Responder;
use crate::resolver::HotResolver;

/// Let's Encrypt's production directory (the default).
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (untrusted certificates, generous rate limits).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How the ACME server checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Challenge {
    /// `http-01`: the server fetches `http://<name>/.well-known/acme-challenge/<token>`
    /// (port 80); answer it with [`AcmeManager::http01_responder`] or [`crate::serve_http01`].
    Http01,
    /// `tls-alpn-01`: the server connects to `<name>:443` with ALPN `acme-tls/1`; answered by
    /// the resolver (use [`crate::Acceptor`] on the TLS listener).
    TlsAlpn01,
    /// Both: the caller answers TLS-ALPN-01 on port 443 *and* HTTP-01 on port 80. Each order
    /// uses `tls-alpn-01` when the CA offers it, else `http-01`; when a `tls-alpn-01`
    /// validation fails, a new order is tried with `http-01` (as Go's autocert does).
    Any,
}

impl Challenge {
    /// The concrete challenge types to try, in order of preference.
    fn candidates(self) -> &'static [Challenge] {
        match self {
            Challenge::Http01 => &[Challenge::Http01],
            Challenge::TlsAlpn01 => &[Challenge::TlsAlpn01],
            Challenge::Any => &[Challenge::TlsAlpn01, Challenge::Http01],
        }
    }

    /// Whether port 80 must answer HTTP-01 for this setting.
    pub fn uses_http01(self) -> bool {
        self.candidates().contains(&Challenge::Http01)
    }

    /// Whether port 443 must answer TLS-ALPN-01 for this setting.
    pub fn uses_tls_alpn01(self) -> bool {
        self.candidates().contains(&Challenge::TlsAlpn01)
    }

    fn acme_type(self) -> ChallengeType {
        match self {
            Challenge::Http01 => ChallengeType::Http01,
            // `Any` never reaches the ACME exchange: it is resolved through `candidates`.
            Challenge::TlsAlpn01 | Challenge::Any => ChallengeType::TlsAlpn01,
        }
    }

    /// The RFC 8555 / RFC 8737 name (`any` for [`Challenge::Any`]).
    pub fn name(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Any => "tls-alpn-01 or http-01",
        }
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the ACME manager needs to know. Build with [`AcmeConfig::new`], then adjust fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcmeConfig {
    /// The ACME directory URL (default: [`LETS_ENCRYPT_PRODUCTION`]).
    pub directory_url: String,
    /// DNS names to obtain certificates for (one certificate per name).
    pub hostnames: Vec<String>,
    /// Contact address for the account (without `mailto:`).
    pub email: Option<String>,
    /// Where the account and certificates are cached (created 0700).
    pub cache_dir: PathBuf,
    /// Extra CA certificates (PEM) to trust for the directory's HTTPS, e.g. Pebble's CA.
    pub extra_root_pem: Option<PathBuf>,
    /// Which challenge(s) to answer (default [`Challenge::TlsAlpn01`]).
    pub challenge: Challenge,
    /// Renew when less than this is left (default 30 days), but never later than when a
    /// third of the certificate's lifetime is left (short-lived certificates).
    pub renew_before: Duration,
    /// How often the renewal loop re-reads the cache and checks expiry (default 12 hours;
    /// it also wakes when a certificate becomes due).
    pub check_interval: Duration,
    /// Upper bound for one order, validation included (default 5 minutes).
    pub order_timeout: Duration,
    /// How long to wait for another process holding the cache lock (default 10 minutes).
    pub lock_timeout: Duration,
}

impl AcmeConfig {
    /// Defaults for `hostnames` cached under `cache_dir`.
    pub fn new(hostnames: Vec<String>, cache_dir: impl Into<PathBuf>) -> Self {
        AcmeConfig {
            directory_url: LETS_ENCRYPT_PRODUCTION.to_owned(),
            hostnames,
            email: None,
            cache_dir: cache_dir.into(),
            extra_root_pem: None,
            challenge: Challenge::TlsAlpn01,
            renew_before: Duration::from_secs(30 * 24 * 3600),
            check_interval: Duration::from_secs(12 * 3600),
            order_timeout: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(600),
        }
    }
}

/// The account file: credentials plus the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory_url: String,
    credentials: AccountCredentials,
}

/// Obtains, caches, installs and renews ACME certificates; cheap to clone and share between
/// the websocket, snowflake and QUIC listeners.
#[derive(Clone)]
pub struct AcmeManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: AcmeConfig,
    resolver: Arc<HotResolver>,
    http01: Http01Responder,
    account: Mutex<Option<Account>>,
    ordering: Mutex<()>,
    installed: watch::Sender<u64>,
    orders: AtomicU64,
}

impl fmt::Debug for AcmeManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeManager")
            .field("directory_url", &self.inner.config.directory_url)
            .field("hostnames", &self.inner.config.hostnames)
            .field("challenge", &self.inner.config.challenge)
            .finish()
    }
}

impl AcmeManager {
    /// Checks `config` (host names must be plain DNS names) and creates the cache directory.
    /// Contacts nobody.
    pub fn new(mut config: AcmeConfig, resolver: Arc<HotResolver>) -> Result<Self> {
        if config.hostnames.is_empty() {
            return Err(Error::Config("ACME needs at least one host name".into()));
        }
        for name in &mut config.hostnames {
            *name = validate_hostname(name)?;
        }
        if config.renew_before.is_zero() || config.check_interval.is_zero() {
            return Err(Error::Config(
                "renew_before and check_interval must be positive".into(),
            ));
        }
        cache::private_dir(&config.cache_dir)?;
        cache::private_dir(&config.cache_dir.join("accounts"))?;
        cache::private_dir(&config.cache_dir.join("certs"))?;
        let (installed, _) = watch::channel(0);
        Ok(AcmeManager {
            inner: Arc::new(Inner {
                config,
                resolver,
                http01: Http01Responder::new(),
                account: Mutex::new(None),
                ordering: Mutex::new(()),
                installed,
                orders: AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in use (host names normalized to lowercase).
    pub fn config(&self) -> &AcmeConfig {
        &self.inner.config
    }

    /// The resolver certificates are installed into.
    pub fn resolver(&self) -> &Arc<HotResolver> {
        &self.inner.resolver
    }

    /// The pending HTTP-01 responses; route `GET /.well-known/acme-challenge/<token>` of the
    /// port-80 HTTP server to [`Http01Responder::handle`].
    pub fn http01_responder(&self) -> Http01Responder {
        self.inner.http01.clone()
    }

    /// A counter bumped every time a certificate is installed or replaced in the resolver.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.installed.subscribe()
    }

    /// How many certificates this manager has ordered from the ACME server.
    pub fn orders_completed(&self) -> u64 {
        self.inner.orders.load(Ordering::Relaxed)
    }

    /// Makes sure every host name has a valid certificate installed: loads the cache, and
    /// orders (under the cache lock) the names that are missing or due for renewal.
    ///
    /// With a valid, not-yet-due cache the ACME server is not contacted. When several names
    /// fail, the first error is returned after trying them all.
    pub async fn ensure(&self) -> Result<()> {
        let _serialized = self.inner.ordering.lock().await;
        let due = self.load_cache(SystemTime::now());
        if due.is_empty() {
            return Ok(());
        }
        let lock_path = self.inner.config.cache_dir.join("lock");
        let _lock = CacheLock::acquire(&lock_path, self.inner.config.lock_timeout).await?;
        // Another process may have renewed while we waited for the lock.
        let due: Vec<String> = self
            .load_cache(SystemTime::now())
            .into_iter()
            .filter(|name| due.contains(name))
            .collect();
        let mut first_error = None;
        for name in due {
            let timeout = self.inner.config.order_timeout;
            let result = match tokio::time::timeout(timeout, self.order_and_store(&name)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("ACME order for {name} took longer than {timeout:?}"),
                ))),
            };
            if let Err(e) = result {
                tracing::warn!(name = %name, error = %e, "ACME order failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Spawns the renewal loop on `shutdown`'s tracker: it calls [`AcmeManager::ensure`]
    /// every [`AcmeConfig::check_interval`] (sooner when a certificate becomes due, and
    /// retrying failures after at most 10 minutes) until `shutdown` stops accepting.
    /// Renewed certificates are hot-swapped; open connections are not touched.
    pub fn spawn_renewal(&self, shutdown: &Shutdown) {
        let this = self.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            loop {
                let wait = match this.ensure().await {
                    Ok(()) => this.next_check(SystemTime::now()),
                    Err(e) => {
                        tracing::warn!(error = %e, "ACME renewal failed; will retry");
                        this.inner
                            .config
                            .check_interval
                            .min(Duration::from_secs(600))
                    }
                };
                tokio::select! {
                    _ = stop.accepting_stopped() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// When the renewal loop should look again: the check interval, or sooner if a
    /// certificate becomes due first (at least one second).
    fn next_check(&self, now: SystemTime) -> Duration {
        let config = &self.inner.config;
        let mut wait = config.check_interval;
        for name in &config.hostnames {
            if let Some(key) = self.inner.resolver.get(name)
                && let Ok(info) = CertInfo::of(&key)
            {
                let until_due = info
                    .remaining(now)
                    .saturating_sub(renew_threshold(&info, config.renew_before));
                wait = wait.min(until_due);
            }
        }
        wait.max(Duration::from_secs(1))
    }

    /// Installs every usable cached certificate; returns the names that need an order.
    fn load_cache(&self, now: SystemTime) -> Vec<String> {
        let mut due = Vec::new();
        for name in &self.inner.config.hostnames {
            match self.read_cached(name) {
                Ok(Some((key, info))) => {
                    if info.remaining(now) > Duration::ZERO {
                        self.install(name, key);
                    }
                    if info.remaining(now) <= renew_threshold(&info, self.inner.config.renew_before)
                    {
                        tracing::info!(name = %name, serial = %info.serial_hex(), "certificate due for renewal");
                        due.push(name.clone());
                    }
                }
                Ok(None) => due.push(name.clone()),
                Err(e) => {
                    tracing::warn!(name = %name, error = %e, "ignoring unusable cached certificate");
                    due.push(name.clone());
                }
            }
        }
        due
    }

    fn cert_dir(&self, name: &str) -> PathBuf {
        self.inner.config.cache_dir.join("certs").join(name)
    }

    fn read_cached(&self, name: &str) -> Result<Option<(Arc<CertifiedKey>, CertInfo)>> {
        let dir = self.cert_dir(name);
        let cert_path = dir.join("cert.pem");
        let (Some(cert_pem), Some(key_pem)) = (
            cache::read_optional(&cert_path)?,
            cache::read_optional(&dir.join("key.pem"))?,
        ) else {
            return Ok(None);
        };
        let key = certified_key_from_pem(&cert_pem, &key_pem, &cert_path)?;
        let info = CertInfo::of(&key)?;
        Ok(Some((key, info)))
    }

    /// Installs `key` for `name` unless the same leaf certificate is already there.
    fn install(&self, name: &str, key: Arc<CertifiedKey>) {
        let resolver = &self.inner.resolver;
        if let Some(current) = resolver.get(name)
            && current.cert.first() == key.cert.first()
        {
            return;
        }
        resolver.set(name, key);
        self.inner.installed.send_modify(|n| *n += 1);
    }

    async fn order_and_store(&self, name: &str) -> Result<()> {
        let (chain_pem, key_pem) = match self.order_any(name).await {
            Err(Error::Acme {
                source: instant_acme::Error::Api(problem),
                ..
            }) if problem
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
            {
                tracing::info!("cached ACME account is unknown to the server; registering again");
                *self.inner.account.lock().await = None;
                let path = self.account_path();
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::debug!(error = %e, "removing stale account file");
                }
                self.order_any(name).await?
            }
            other => other?,
        };
        let dir = self.cert_dir(name);
        let cert_path = dir.join("cert.pem");
        let key = certified_key_from_pem(chain_pem.as_bytes(), key_pem.as_bytes(), &cert_path)?;
        let info = CertInfo::of(&key)?;
        cache::private_dir(&dir)?;
        // Key first: a crash in between leaves a new key with the old chain, which
        // fails to load and is simply ordered again.
        cache::write_private(&dir.join("key.pem"), key_pem.as_bytes())?;
        cache::write_private(&cert_path, chain_pem.as_bytes())?;
        self.inner.orders.fetch_add(1, Ordering::Relaxed);
        tracing::info!(name = %name, serial = %info.serial_hex(), "installed ACME certificate");
        self.install(name, key);
        Ok(())
    }

    fn account_path(&self) -> PathBuf {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            self.inner.config.directory_url.as_bytes(),
        );
        let hex: String = digest
            .as_ref()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        self.inner
            .config
            .cache_dir
            .join("accounts")
            .join(format!("{hex}.json"))
    }

    fn http_client(&self) -> Result<Box<dyn instant_acme::HttpClient>> {
        let mut roots = ClientRoots::system();
        if let Some(pem) = &self.inner.config.extra_root_pem {
            roots = roots.with_pem_file(pem);
        }
        let tls = client_config(roots)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(&tls))
            .https_only()
            .enable_http1()
            .build();
        let client: HyperClient<_, BodyWrapper<Bytes>> =
            HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Box::new(client))
    }

    /// The ACME account: cached in memory, else restored from the cache file, else
    /// registered (and written to the cache).
    async fn account(&self) -> Result<Account> {
        let mut slot = self.inner.account.lock().await;
        if let Some(account) = &*slot {
            return Ok(account.clone());
        }
        let config = &self.inner.config;
        let path = self.account_path();
        let stored = match cache::read_optional(&path)? {
            Some(bytes) => match serde_json::from_slice::<StoredAccount>(&bytes) {
                Ok(stored) if stored.directory_url == config.directory_url => Some(stored),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable ACME account file");
                    None
                }
            },
            None => None,
        };
        let builder = Account::builder_with_http(self.http_client()?);
        let account = match stored {
            Some(stored) => builder
                .from_credentials(stored.credentials)
                .await
                .map_err(Error::acme("restoring account"))?,
            None => {
                let contact = config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        config.directory_url.clone(),
                        None,
                    )
                    .await
                    .map_err(Error::acme("registering account"))?;
                let stored = StoredAccount {
                    directory_url: config.directory_url.clone(),
                    credentials,
                };
                let json = serde_json::to_vec_pretty(&stored)
                    .map_err(|e| Error::Config(format!("serializing ACME account: {e}")))?;
                cache::write_private(&path, &json)?;
                tracing::info!(id = %account.id(), "registered ACME account");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Orders `name` with the configured challenge type(s): with [`Challenge::Any`], an
    /// order whose `tls-alpn-01` validation fails is followed by one using `http-01`.
    async fn order_any(&self, name: &str) -> Result<(String, String)> {
        let mut candidates = self.inner.config.challenge.candidates().to_vec();
        loop {
            let mut used = None;
            match self.order(name, &candidates, &mut used).await {
                Ok(done) => return Ok(done),
                Err(e) => match used {
                    Some(failed) if candidates.len() > 1 => {
                        candidates.retain(|c| *c != failed);
                        tracing::warn!(
                            name = %name,
                            error = %e,
                            "ACME {failed} validation failed; trying {}",
                            candidates[0]
                        );
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// Runs one order for `name`, answering the first of `candidates` the CA offers (which
    /// is stored in `used`); returns (chain PEM, private key PEM).
    async fn order(
        &self,
        name: &str,
        candidates: &[Challenge],
        used: &mut Option<Challenge>,
    ) -> Result<(String, String)> {
        let account = self.account().await?;
        let config = &self.inner.config;
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(Error::acme("new order"))?;
        let mut cleanup = ChallengeCleanup {
            resolver: self.inner.resolver.clone(),
            http01: self.inner.http01.clone(),
            tokens: Vec::new(),
            names: Vec::new(),
        };
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(Error::acme("fetching authorization"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(Error::OrderFailed {
                            name: name.to_owned(),
                            status: format!("authorization {other:?}"),
                        });
                    }
                }
                let offered = candidates.iter().copied().find(|c| {
                    authz
                        .challenges
                        .iter()
                        .any(|offer| offer.r#type == c.acme_type())
                });
                let Some(kind) = offered else {
                    return Err(Error::ChallengeUnavailable {
                        name: name.to_owned(),
                        challenge: config.challenge.name(),
                    });
                };
                let mut challenge =
                    authz
                        .challenge(kind.acme_type())
                        .ok_or(Error::ChallengeUnavailable {
                            name: name.to_owned(),
                            challenge: kind.name(),
                        })?;
                tracing::info!(name = %name, "answering the ACME {kind} challenge");
                *used = Some(kind);
                let key_auth = challenge.key_authorization();
                match kind {
                    Challenge::Http01 => {
                        let token = challenge.token.clone();
                        self.inner
                            .http01
                            .insert(token.clone(), key_auth.as_str().to_owned());
                        cleanup.tokens.push(token);
                    }
                    Challenge::TlsAlpn01 | Challenge::Any => {
                        let ident = challenge.identifier().to_string();
                        let cert = tls_alpn01_cert(&ident, key_auth.digest().as_ref())?;
                        self.inner.resolver.set_challenge(&ident, cert);
                        cleanup.names.push(ident);
                    }
                }
                challenge
                    .set_ready()
                    .await
                    .map_err(Error::acme("setting challenge ready"))?;
            }
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(config.order_timeout);
        let status = order
            .poll_ready(&retry)
            .await
            .map_err(Error::acme("waiting for validation"))?;
        drop(cleanup);
        if status != OrderStatus::Ready {
            return Err(Error::OrderFailed {
                name: name.to_owned(),
                status: format!("{status:?}"),
            });
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(Error::acme("finalizing order"))?;
        let chain_pem = order
            .poll_certificate(&retry)
            .await
            .map_err(Error::acme("downloading certificate"))?;
        Ok((chain_pem, key_pem))
    }
}

/// Removes challenge responses when an order ends, however it ends.
struct ChallengeCleanup {
    resolver: Arc<HotResolver>,
    http01: Http01Responder,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Drop for ChallengeCleanup {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.http01.remove(token);
        }
        for name in &self.names {
            self.resolver.remove_challenge(name);
        }
    }
}

/// Renew when no more than this is left: `renew_before`, capped at a third of the
/// certificate's lifetime.
fn renew_threshold(info: &CertInfo, renew_before: Duration) -> Duration {
    let lifetime = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or(Duration::ZERO);
    renew_before.min(lifetime / 3)
}

/// Lowercases and checks a DNS name we will order and use as a cache directory name.
fn validate_hostname(name: &str) -> Result<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
        return Err(Error::Config(format!(
            "{name:?} is not a DNS name ACME can validate with HTTP-01 or TLS-ALPN-01"
        )));
    }
    Ok(name)
}

/// The cache paths of one host name's certificate (chain, key), for operators and tests.
pub fn cached_cert_paths(cache_dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = cache_dir.join("certs").join(name.to_ascii_lowercase());
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hostnames_are_checked() {
        assert_eq!(
            validate_hostname("WS.Example.com.").unwrap(),
            "ws.example.com"
        );
        for bad in [
            "",
            "localhost",
            "*.example.com",
            "../x.com",
            "a..b",
            "-a.com",
            "a b.com",
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_prefers_tls_alpn01_then_http01() {
        assert_eq!(
            Challenge::Any.candidates(),
            [Challenge::TlsAlpn01, Challenge::Http01]
        );
        assert!(Challenge::Any.uses_http01() && Challenge::Any.uses_tls_alpn01());
        assert!(!Challenge::Http01.uses_tls_alpn01());
        assert!(!Challenge::TlsAlpn01.uses_http01());
        assert_eq!(Challenge::Http01.to_string(), "http-01");
    }

    #[test]
    fn threshold_is_capped_by_lifetime() {
        let now = SystemTime::now();
        let info = CertInfo {
            not_before: now,
            not_after: now + Duration::from_secs(90),
            serial: vec![1],
        };
        assert_eq!(
            renew_threshold(&info, Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            renew_threshold(&info, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn new_creates_private_cache_and_reuses_cache_offline() {
        let root = tempfile::tempdir().unwrap();
        let cache_dir = root.path().join("state/acme");
        let mut config = AcmeConfig::new(vec!["a.example.com".into()], &cache_dir);
        // Nothing listens here: any contact would fail.
        config.directory_url = "https://127.0.0.1:1/dir".into();
        let resolver = Arc::new(HotResolver::new());
        let manager = AcmeManager::new(config, resolver.clone()).unwrap();
        for dir in [
            cache_dir.clone(),
            cache_dir.join("accounts"),
            cache_dir.join("certs"),
        ] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        // Seed the cache with a valid certificate: ensure() installs it without ordering.
        let (_, cert_pem, key_pem) = crate::self_signed(&["a.example.com".into()]).unwrap();
        let (cert_path, key_path) = cached_cert_paths(&cache_dir, "a.example.com");
        cache::private_dir(cert_path.parent().unwrap()).unwrap();
        cache::write_private(&cert_path, cert_pem.as_bytes()).unwrap();
        cache::write_private(&key_path, key_pem.as_bytes()).unwrap();
        let mut installed = manager.subscribe();
        manager.ensure().await.unwrap();
        assert!(installed.has_changed().unwrap());
        assert_eq!(*installed.borrow_and_update(), 1);
        assert!(resolver.get("a.example.com").is_some());
        assert_eq!(manager.orders_completed(), 0);
        // Unchanged cache: no re-install.
        manager.ensure().await.unwrap();
        assert!(!installed.has_changed().unwrap());
        // A missing certificate must be ordered, and the dead directory makes that fail.
        std::fs::remove_file(&cert_path).unwrap();
        resolver.remove("a.example.com");
        let err = manager.ensure().await.unwrap_err();
        assert_eq!(err.kind(), "acme", "{err}");
    }
}
