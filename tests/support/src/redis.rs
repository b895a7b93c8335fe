//! Test fixtures: real `redis-server` processes on free loopback ports, killed on drop.
//!
//! - [`RedisServer`]: one server (`--save "" --appendonly no` unless its extra arguments say
//!   otherwise), which a test may `kill -9`, restart on the same port, `SIGSTOP` and `SIGCONT`.
//! - [`RedisCluster`]: three `--cluster-enabled yes` servers joined by
//!   `redis-cli --cluster create … --cluster-yes`.
//! - [`single`]: the server named by `REDIS_URL` when set, otherwise a spawned one.
//!
//! Nothing here touches a server it did not start, except the one `REDIS_URL` names (and there
//! every test writes under its own random key prefix).

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ricochet::redis::RedisSettings;

/// How long a server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// `requirepass`, if any.
    pub password: Option<String>,
    tls: bool,
    /// TLS material, kept while the server may read it (a restart reads it again).
    certs: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A plain server on a free port.
    pub fn spawn() -> Self {
        Self::spawn_with(&[], None)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn spawn_with_password(password: &str) -> Self {
        Self::spawn_with(&[], Some(password))
    }

    /// A server with extra arguments.
    pub fn spawn_with(extra: &[&str], password: Option<&str>) -> Self {
        for _ in 0..5 {
            let port = free_port(false);
            let dir = tempfile::tempdir().expect("temp dir");
            let mut args: Vec<String> = vec!["--port".into(), port.to_string()];
            args.extend(extra.iter().map(|s| s.to_string()));
            if let Some(p) = password {
                args.extend(["--requirepass".to_string(), p.to_string()]);
            }
            let mut server = Self {
                child: None,
                port,
                dir,
                args,
                password: password.map(str::to_string),
                tls: false,
                certs: None,
            };
            if server.start() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port (is redis-server installed?)");
    }

    /// A TLS-only server (`--port 0 --tls-port P`) with a certificate for 127.0.0.1 signed by
    /// the returned CA (PEM); made with the `openssl` CLI.
    pub fn spawn_tls(password: Option<&str>) -> (Self, Vec<u8>) {
        let certs = tempfile::tempdir().expect("temp dir");
        let ca_pem = make_certificates(certs.path());
        let c = |name: &str| certs.path().join(name).display().to_string();
        for _ in 0..5 {
            let port = free_port(false);
            let dir = tempfile::tempdir().expect("temp dir");
            let mut args: Vec<String> = vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                c("server.crt"),
                "--tls-key-file".into(),
                c("server.key"),
                "--tls-ca-cert-file".into(),
                c("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
            if let Some(p) = password {
                args.extend(["--requirepass".to_string(), p.to_string()]);
            }
            let mut server = Self {
                child: None,
                port,
                dir,
                args,
                password: password.map(str::to_string),
                tls: true,
                certs: None,
            };
            if server.start() {
                server.certs = Some(certs);
                return (server, ca_pem);
            }
        }
        panic!("could not start a TLS redis-server");
    }

    /// Starts (or restarts) the process with the same arguments; false if it did not come up.
    fn start(&mut self) -> bool {
        let log = self.log_path();
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("redis-server");
        // The defaults first, so a caller's extra arguments (e.g. `--appendonly yes`) win.
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .args(&self.args)
        .arg("--dir")
        .arg(self.dir.path())
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if std::fs::read_to_string(&log)
                .is_ok_and(|s| s.contains("Ready to accept connections"))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill9();
        false
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `redis://[:password@]127.0.0.1:port` (or `rediss://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// `kill -9`, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port after [`kill9`](Self::kill9).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill9 only");
        for _ in 0..50 {
            if self.start() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// `SIGSTOP`: the process keeps its sockets but answers nothing.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// `SIGCONT`.
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// `redis-cli` against this server, returning stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A stopped process dies from SIGKILL too; continuing it first is just tidier.
            signal(child.id(), "-CONT");
        }
        self.kill9();
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Ports handed out in this process (so parallel tests never race for one).
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port (and, for cluster nodes, a free bus port `port + 10000`).
pub fn free_port(with_bus: bool) -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if taken.contains(&port)
            || (with_bus
                && (port > 55_000 || TcpListener::bind(("127.0.0.1", port + 10_000)).is_err()))
        {
            continue;
        }
        taken.insert(port);
        return port;
    }
}

/// Three masters (and optionally replicas), slots split by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn spawn() -> Self {
        Self::spawn_with(0, 5000)
    }

    /// Three masters with `replicas` replicas each, and `--cluster-node-timeout node_timeout_ms`
    /// (how long a master may be silent before its replica is promoted).
    pub fn spawn_with(replicas: usize, node_timeout_ms: u64) -> Self {
        let mut nodes = Vec::new();
        let node_timeout = node_timeout_ms.to_string();
        while nodes.len() < 3 * (1 + replicas) {
            let port = free_port(true);
            let dir = tempfile::tempdir().expect("temp dir");
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &node_timeout,
                // Replicas sync at once (the default waits 5 s for more replicas to join).
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                args,
                password: None,
                tls: false,
                certs: None,
            };
            if server.start() {
                nodes.push(server);
            }
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if nodes
                .iter()
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A replica that has not synced cannot be promoted: wait for every link.
        loop {
            let synced = nodes.iter().all(|n| {
                let info = n.cli(&["INFO", "replication"]);
                !info.contains("role:slave") || info.contains("master_link_status:up")
            });
            if synced {
                break;
            }
            assert!(Instant::now() < deadline, "replicas never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { nodes }
    }

    /// The node that is master of `key`'s slot now (by `CLUSTER KEYSLOT` and `CLUSTER SHARDS`
    /// as any live node sees them).
    pub fn master_of(&self, key: &str) -> usize {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Ok(slot) = node.cli(&["CLUSTER", "KEYSLOT", key]).trim().parse::<u16>() else {
                continue;
            };
            for line in node.cli(&["CLUSTER", "NODES"]).lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    continue;
                }
                let owns = fields[8..].iter().any(|range| {
                    let mut ends = range.split('-').filter_map(|e| e.parse::<u16>().ok());
                    match (ends.next(), ends.next()) {
                        (Some(a), Some(b)) => (a..=b).contains(&slot),
                        (Some(a), None) => a == slot,
                        _ => false,
                    }
                });
                if owns {
                    let port: u16 = fields[1]
                        .split(['@', ':'])
                        .nth(1)
                        .and_then(|p| p.parse().ok())
                        .expect("node address");
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.port == port)
                        .expect("a node of this cluster");
                }
            }
        }
        panic!("no live node knows the master of {key}");
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn settings(&self) -> RedisSettings {
        RedisSettings::cluster(self.urls()).with_key_prefix(unique_prefix())
    }
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("ricochet-test-{}", uuid::Uuid::new_v4().simple())
}

/// The server `REDIS_URL` names (then `None` for the fixture), or a freshly spawned one.
pub fn single() -> (RedisSettings, Option<RedisServer>) {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => (
            RedisSettings::parse(&url).with_key_prefix(unique_prefix()),
            None,
        ),
        _ => {
            let server = RedisServer::spawn();
            (
                RedisSettings::single(server.url()).with_key_prefix(unique_prefix()),
                Some(server),
            )
        }
    }
}

/// Whether something answers TCP on `port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(100)).is_ok()
}

/// A CA and a server certificate for 127.0.0.1/localhost, in `dir`; returns the CA's PEM.
fn make_certificates(dir: &Path) -> Vec<u8> {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=ricochet test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "server.ext",
    ]);
    std::fs::read(dir.join("ca.crt")).expect("read ca")
}
