//! One lazily opened, self-healing connection to Redis or Redis Cluster, shared by the
//! [`RedisCoordinator`](super::RedisCoordinator) and the
//! [`RedisIdempotencyStore`](super::RedisIdempotencyStore).
//!
//! Three promises shape this module:
//!
//! - **Opening never needs the server.** [`RedisConnection::open`] only parses the settings; the
//!   first command connects. A service that starts while Redis is down runs uncoordinated (each
//!   call falls back) and coordinates as soon as Redis answers.
//! - **It heals by itself.** A single server goes through redis-rs's `ConnectionManager`, which
//!   reconnects in the background after a dropped connection; a cluster goes through
//!   `cluster_async`, which re-reads the slot map and reconnects per node. Callers bound every
//!   command with their own deadline, so a reconnect in progress costs them a fallback, never a
//!   hang. A server that goes silent without closing anything is noticed too: TCP keepalive and
//!   `TCP_USER_TIMEOUT` end a connection whose peer stopped acknowledging, and
//!   [`RECONNECT_AFTER_MISSES`] calls in a row dropped unanswered over
//!   [`RECONNECT_AFTER_SILENCE`] replace the link with a fresh one (a peer whose kernel still
//!   acknowledges, or a proxy in between, is never noticed by TCP).
//! - **Secrets stay secret.** Passwords from the URLs are collected at open time and scrubbed from
//!   every error message this module hands out; `Debug` prints redacted URLs only.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, RedisError, ScriptInvocation};

/// Default key prefix: every key this crate writes starts with `ricochet:`.
pub const DEFAULT_KEY_PREFIX: &str = "ricochet";

/// Default bound on establishing one TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is and how to talk to it.
///
/// # Default
///
/// - key prefix: [`DEFAULT_KEY_PREFIX`] (`ricochet`)
/// - TLS roots: the platform's trust store (for `rediss://`)
/// - connect timeout: [`DEFAULT_CONNECT_TIMEOUT`] (1 s)
///
/// URLs are redis-rs URLs: `redis://[user][:password@]host[:port][/db]`, or `rediss://…` for TLS.
/// Credentials in the URL are used for `AUTH` (with a username: ACL `AUTH user pass`).
#[derive(Clone)]
pub struct RedisSettings {
    nodes: Vec<String>,
    cluster: bool,
    key_prefix: String,
    root_ca_pem: Option<Vec<u8>>,
    connect_timeout: Duration,
}

impl RedisSettings {
    /// A single server (or a proxy in front of one).
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            nodes: vec![url.into()],
            cluster: false,
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            root_ca_pem: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// A Redis Cluster, found through any of `seed_urls`.
    pub fn cluster<I, S>(seed_urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            nodes: seed_urls.into_iter().map(Into::into).collect(),
            cluster: true,
            ..Self::single(String::new())
        }
    }

    /// Parses the `--redis` / `REDIS_URL` form: one URL is a single server; a comma-separated
    /// list of URLs, or `cluster:` followed by one or more URLs, is a cluster's seed nodes.
    pub fn parse(spec: &str) -> Self {
        let spec = spec.trim();
        let (forced_cluster, list) = match spec.strip_prefix("cluster:") {
            Some(rest) => (true, rest),
            None => (false, spec),
        };
        let urls: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if forced_cluster || urls.len() > 1 {
            Self::cluster(urls)
        } else {
            Self::single(list)
        }
    }

    /// Treat the URL(s) as seed nodes of a Redis Cluster (for a cluster reached through one seed).
    pub fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// The first component of every key, so deployments can share one Redis (`ricochet` by default).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Trust this CA (PEM) for `rediss://` instead of the platform's trust store.
    pub fn with_root_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem = Some(pem.into());
        self
    }

    /// Bound on establishing one connection (TCP and TLS handshake).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// Whether these settings name a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The URLs with any password replaced by `***`, for logs.
    pub fn redacted_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|u| redact_url(u)).collect()
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("nodes", &self.redacted_urls())
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("root_ca_pem", &self.root_ca_pem.as_ref().map(|_| "<pem>"))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// Why a connection could not be set up (bad URL, TLS material). Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// No URL was given.
    NoUrl,
    /// A URL did not parse; the URL is shown redacted.
    InvalidUrl {
        /// The URL, password replaced by `***`.
        url: String,
        /// What redis-rs said, scrubbed of secrets.
        reason: String,
    },
    /// The client could not be built (TLS roots, cluster credentials…), scrubbed of secrets.
    Client(String),
    /// The key prefix holds a `{`: Redis Cluster would take the hash tag from it instead of from
    /// the operation, and a prefix with `{}` would spread one operation's keys over slots.
    InvalidKeyPrefix(String),
}

impl fmt::Display for RedisSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoUrl => f.write_str("no Redis URL given"),
            Self::InvalidUrl { url, reason } => write!(f, "invalid Redis URL {url}: {reason}"),
            Self::Client(e) => write!(f, "cannot set up the Redis client: {e}"),
            Self::InvalidKeyPrefix(prefix) => write!(
                f,
                "key prefix must not contain `{{` (Redis Cluster would read a hash tag in it), got {prefix:?}"
            ),
        }
    }
}

impl std::error::Error for RedisSetupError {}

/// A command that did not get an answer, already classified and scrubbed of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RedisFailure {
    /// Could not reach the server (refused, reset, dropped, I/O or client-side timeout).
    Connection(String),
    /// The server answered with an error.
    Backend(String),
}

/// A shared handle on Redis or Redis Cluster; cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// The current link; replaced by a fresh one when the server has gone silent on it.
    link: RwLock<Link>,
    /// How to open a fresh link.
    factory: LinkFactory,
    silence: Mutex<Silence>,
    key_prefix: String,
    /// Passwords (raw and percent-decoded) to scrub from messages.
    secrets: Vec<String>,
    redacted_urls: Vec<String>,
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

enum LinkFactory {
    Single(redis::Client, redis::aio::ConnectionManagerConfig),
    Cluster(redis::cluster::ClusterClient, Duration),
}

impl LinkFactory {
    fn open(&self) -> Result<Link, RedisError> {
        Ok(match self {
            Self::Single(client, config) => Link::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                config.clone(),
            )?),
            Self::Cluster(client, connect_timeout) => {
                // Passing a config replaces every timeout the builder set: say them all again
                // (`Default::default()` here reset the 5 s response timeout to none).
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(*connect_timeout)
                    .set_response_timeout(CLUSTER_RESPONSE_TIMEOUT);
                Link::Cluster(client.get_pending_async_connection_with_config(config))
            }
        })
    }
}

/// Calls in a row that missed their caller's deadline (dropped unanswered) …
pub const RECONNECT_AFTER_MISSES: u32 = 3;

/// … over at least this long, after which the link is replaced by a fresh one: a server that
/// went silent without closing anything (a partition, a black-holed or frozen primary, a
/// dropped route) is otherwise only noticed when the kernel gives up on the connection, which
/// took ~15 minutes without keepalive, and never while it keeps acknowledging.
pub const RECONNECT_AFTER_SILENCE: Duration = Duration::from_secs(1);

/// The cluster client's own bound on one request (callers time out sooner on their own).
const CLUSTER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalive after this long idle, then a probe every [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// `TCP_USER_TIMEOUT` (Linux): how long sent data may stay unacknowledged before the kernel
/// drops the connection, so a peer that stopped answering at the TCP level is noticed in
/// seconds, not after ~15 minutes of retransmissions.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

fn tcp_settings() -> redis::io::tcp::TcpSettings {
    use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive.with_retries(3);
    let settings = TcpSettings::default().set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(TCP_USER_TIMEOUT);
    settings
}

/// Deadline misses since the last answer.
#[derive(Default)]
struct Silence {
    misses: u32,
    first_miss: Option<std::time::Instant>,
    reconnects: u64,
}

/// Watches one command: dropped before [`answered`](Self::answered), it counts a miss.
struct Watch<'a> {
    inner: &'a Inner,
    answered: bool,
}

impl Watch<'_> {
    fn answered(mut self) {
        self.answered = true;
        let mut silence = lock(&self.inner.silence);
        silence.misses = 0;
        silence.first_miss = None;
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.inner.missed();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn link(&self) -> Link {
        self.link
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A command was dropped unanswered: after [`RECONNECT_AFTER_MISSES`] in a row spanning
    /// [`RECONNECT_AFTER_SILENCE`], the next commands go over a fresh link.
    fn missed(&self) {
        let now = std::time::Instant::now();
        {
            let mut silence = lock(&self.silence);
            silence.misses += 1;
            let first = *silence.first_miss.get_or_insert(now);
            if silence.misses < RECONNECT_AFTER_MISSES
                || now.duration_since(first) < RECONNECT_AFTER_SILENCE
            {
                return;
            }
            silence.misses = 0;
            silence.first_miss = None;
            silence.reconnects += 1;
        }
        // Opening a link spawns its driver: only inside a runtime (a drop outside one is a
        // runtime shutting down; nothing is waiting then).
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        match self.factory.open() {
            Ok(link) => {
                tracing::warn!(
                    nodes = ?self.redacted_urls,
                    "Redis did not answer {RECONNECT_AFTER_MISSES} calls in a row for {RECONNECT_AFTER_SILENCE:?}: opening a new connection"
                );
                *self
                    .link
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = link;
            }
            Err(e) => {
                let message = scrub_secrets(&e.to_string(), &self.secrets);
                tracing::warn!(error = %message, "could not open a new Redis connection");
            }
        }
    }
}

impl RedisConnection {
    /// Prepares the connection without contacting the server (the first command connects).
    ///
    /// Must be called inside a Tokio runtime: the reconnecting machinery spawns tasks on it.
    pub fn open(settings: &RedisSettings) -> Result<Self, RedisSetupError> {
        if settings.nodes.is_empty() || settings.nodes.iter().all(|u| u.trim().is_empty()) {
            return Err(RedisSetupError::NoUrl);
        }
        if settings.key_prefix.contains('{') {
            return Err(RedisSetupError::InvalidKeyPrefix(
                settings.key_prefix.clone(),
            ));
        }
        let secrets = collect_secrets(&settings.nodes);
        let scrub = |s: String| scrub_secrets(&s, &secrets);
        let mut infos = Vec::with_capacity(settings.nodes.len());
        for url in &settings.nodes {
            let info =
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| RedisSetupError::InvalidUrl {
                        url: redact_url(url),
                        reason: scrub(e.to_string()),
                    })?;
            infos.push(info);
        }
        if settings
            .nodes
            .iter()
            .any(|u| u.trim_start().starts_with("rediss://"))
        {
            // With a single provider compiled in rustls would pick it anyway; installing it
            // explicitly keeps working if another crate in the graph enables a second one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let certs = settings
            .root_ca_pem
            .clone()
            .map(|pem| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            });
        let factory = if settings.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(infos)
                .connection_timeout(settings.connect_timeout)
                // Our callers time out on their own; a long response timeout here only stops
                // a request from waiting forever on a node that went silent.
                .response_timeout(Duration::from_secs(5))
                .retries(2);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder
                .tcp_settings(tcp_settings())
                .build()
                .map_err(|e| RedisSetupError::Client(scrub(e.to_string())))?;
            LinkFactory::Cluster(client, settings.connect_timeout)
        } else {
            let info = infos.remove(0).set_tcp_settings(tcp_settings());
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs),
                None => redis::Client::open(info),
            }
            .map_err(|e| RedisSetupError::Client(scrub(e.to_string())))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                // No response timeout: a timed-out request would tear the connection down, and
                // every caller already bounds its own wait. Dropped futures are harmless: the
                // multiplexed connection discards their replies.
                .set_response_timeout(None)
                .set_number_of_retries(3)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(500));
            LinkFactory::Single(client, config)
        };
        let link = factory
            .open()
            .map_err(|e| RedisSetupError::Client(scrub(e.to_string())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                link: RwLock::new(link),
                factory,
                silence: Mutex::default(),
                key_prefix: settings.key_prefix.clone(),
                redacted_urls: settings.redacted_urls(),
                secrets,
            }),
        })
    }

    /// The prefix of every key written through this connection.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// How often a silent server made this connection open a new link
    /// ([`RECONNECT_AFTER_MISSES`] calls in a row unanswered over [`RECONNECT_AFTER_SILENCE`]).
    pub fn reconnects(&self) -> u64 {
        lock(&self.inner.silence).reconnects
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.factory, LinkFactory::Cluster(..))
    }

    /// Sends `PING` and waits for the answer: connects now instead of on first use.
    pub async fn ping(&self) -> Result<(), crate::coordination::CoordinationError> {
        let _: String = self
            .query(&redis::cmd("PING"))
            .await
            .map_err(super::coordinator::coordination_error)?;
        Ok(())
    }

    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisFailure> {
        let watch = Watch {
            inner: &self.inner,
            answered: false,
        };
        let result = match self.inner.link() {
            Link::Single(mut m) => cmd.query_async(&mut m).await,
            Link::Cluster(mut c) => cmd.query_async(&mut c).await,
        };
        watch.answered();
        result.map_err(|e| self.classify(&e))
    }

    /// Runs a script by hash, loading it on `NOSCRIPT` (a restarted or fresh server).
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisFailure> {
        let watch = Watch {
            inner: &self.inner,
            answered: false,
        };
        let result = match self.inner.link() {
            Link::Single(mut m) => invocation.invoke_async(&mut m).await,
            Link::Cluster(mut c) => invocation.invoke_async(&mut c).await,
        };
        watch.answered();
        result.map_err(|e| self.classify(&e))
    }

    /// Sorts an error into "could not reach" and "answered with an error", without secrets.
    fn classify(&self, e: &RedisError) -> RedisFailure {
        let message = scrub_secrets(&e.to_string(), &self.inner.secrets);
        if e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_unrecoverable_error()
        {
            RedisFailure::Connection(message)
        } else {
            RedisFailure::Backend(message)
        }
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("nodes", &self.inner.redacted_urls)
            .field("cluster", &self.is_cluster())
            .field("key_prefix", &self.inner.key_prefix)
            .finish()
    }
}

/// `url` with the password part of its userinfo replaced by `***`.
///
/// The userinfo is found by its own rule, not the authority's: it runs up to the *last* `@`
/// after the scheme, so a password typed with a raw `/`, `?`, `#`, `@` or `:` (which ends an
/// authority) is still redacted whole. A URL whose query or fragment holds an `@` loses more
/// than its password to the `***` — never less.
pub fn redact_url(url: &str) -> String {
    match password_span(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// Where the password of `url`'s userinfo is (byte range), if it has a non-empty one: from
/// the first `:` of the userinfo to the last `@` after the scheme.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let userinfo_start = url.find("://")? + 3;
    let at = userinfo_start + url[userinfo_start..].rfind('@')?;
    let colon = userinfo_start + url[userinfo_start..at].find(':')?;
    (colon + 1 < at).then_some((colon + 1, at))
}

/// The passwords in `urls`, as written and percent-decoded.
fn collect_secrets(urls: &[String]) -> Vec<String> {
    let mut secrets = Vec::new();
    for url in urls {
        let Some((start, end)) = password_span(url) else {
            continue;
        };
        let raw = &url[start..end];
        secrets.push(raw.to_string());
        let decoded = percent_decode(raw);
        if decoded != raw {
            secrets.push(decoded);
        }
    }
    // Longest first, so a password that contains another is scrubbed whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn scrub_secrets(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("redis://:hunter2@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://app:p%40ss@h"), "rediss://app:***@h");
        assert_eq!(redact_url("redis://app@h:1"), "redis://app@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn a_password_with_any_reserved_character_is_redacted_whole() {
        for c in "/?#@:[]!$&'()*+,;=% ".chars() {
            let password = format!("left{c}right");
            for user in ["", "app", "a/p", "a?p", "a#p"] {
                let url = format!("redis://{user}:{password}@127.0.0.1:6379/0");
                let redacted = redact_url(&url);
                assert_eq!(redacted, format!("redis://{user}:***@127.0.0.1:6379/0"));
                assert_eq!(collect_secrets(&[url])[0], password, "{c:?}");
            }
        }
        // An `@` in the query costs the host its display, never the password its redaction.
        assert_eq!(redact_url("redis://:pw@h:1/0?x=a@b"), "redis://:***@b");
    }

    #[test]
    fn secrets_are_scrubbed_raw_and_decoded() {
        let secrets = collect_secrets(&["redis://u:p%40ss@h".to_string()]);
        assert_eq!(secrets, vec!["p%40ss".to_string(), "p@ss".to_string()]);
        assert_eq!(
            scrub_secrets("auth p@ss failed (p%40ss)", &secrets),
            "auth *** failed (***)"
        );
    }

    #[test]
    fn a_list_of_urls_is_a_cluster() {
        assert!(!RedisSettings::parse("redis://a:1").is_cluster());
        assert!(RedisSettings::parse("redis://a:1, redis://b:2").is_cluster());
        let one_seed = RedisSettings::parse("cluster:redis://a:1");
        assert!(one_seed.is_cluster());
        assert_eq!(one_seed.redacted_urls(), vec!["redis://a:1".to_string()]);
        let debug = format!("{:?}", RedisSettings::parse("redis://:topsecret@a:1"));
        assert!(!debug.contains("topsecret"), "{debug}");
    }
}
