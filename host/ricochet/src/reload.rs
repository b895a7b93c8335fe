//! Dynamic adjustment (the seed's "future enhancement"): a policy loaded from a file can be
//! reloaded without a restart.
//!
//! [`ReloadablePolicy::current`] hands out an `Arc<RetryPolicy>`: a call in flight keeps the
//! policy it started with, new calls get the new one. A reload that fails — unreadable file,
//! invalid policy, bad `RETRY_*` variable — is rejected and the old policy stays. Reloads happen
//! on [`ReloadablePolicy::reload`] or, with [`ReloadablePolicy::watch`], when the file changes.
//!
//! # What carries over
//!
//! The circuit breakers and retry budgets carry over a reload whose guard config did not change
//! ([`RetryPolicy::with_config`]): changing the backoff does not close an open breaker or refill
//! a spent budget. A changed breaker (or budget) config starts that guard fresh.
//!
//! # Half-written files
//!
//! A change is noticed by the file's modification time, size and (on Unix) inode, so an atomic
//! rename and a Kubernetes `..data` symlink swap are both seen. An editor or `cp` that writes in
//! place can be polled half way, and half a policy file can be a valid one (`max_attempts: 1`
//! of `max_attempts: 10`). So the watcher applies a change only once the file has stayed the
//! same for a whole poll period, and only from a read during which it did not change. Writing
//! a new file and renaming it over the old one is still the way to make a change atomic.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use ricochet_core::RetryConfig;

use crate::config_file::{load_policy, FileError, FileErrors, LoadError};
use crate::executor::RetryPolicy;

/// The shortest period [`ReloadablePolicy::watch`] polls at; shorter ones (zero included) are
/// raised to it.
pub const MIN_WATCH_PERIOD: Duration = Duration::from_millis(10);

/// How many times [`ReloadablePolicy::reload`] reads a file that changes while it is read.
const STABLE_READ_TRIES: usize = 3;

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// What the watcher has seen of the file.
#[derive(Debug)]
struct Seen {
    /// The version the current policy came from (or that was last rejected).
    loaded: Option<Stamp>,
    /// A newer version seen at the last poll, applied if it is still there at the next.
    pending: Option<Option<Stamp>>,
}

/// A policy that follows its file.
#[derive(Debug)]
pub struct ReloadablePolicy {
    file: PathBuf,
    name: String,
    current: RwLock<Arc<RetryPolicy>>,
    seen: Mutex<Seen>,
}

impl ReloadablePolicy {
    /// Loads policy `name` from `file` (environment > file > preset) onto the backends of
    /// `template` (coordinator, store, metrics, clock, hooks).
    pub fn load(file: &Path, name: &str, template: &RetryPolicy) -> Result<Self, LoadError> {
        let (stamp, config) = read_stable(file, name)?;
        let policy = template.with_config(config).map_err(LoadError::Invalid)?;
        Ok(Self {
            file: file.to_path_buf(),
            name: name.to_string(),
            current: RwLock::new(Arc::new(policy)),
            seen: Mutex::new(Seen {
                loaded: stamp,
                pending: None,
            }),
        })
    }

    /// The policy for a new call.
    pub fn current(&self) -> Arc<RetryPolicy> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the file now (from a read during which it did not change). On error the
    /// current policy stays and the error is returned.
    pub fn reload(&self) -> Result<(), LoadError> {
        let result = read_stable(&self.file, &self.name);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.pending = None;
        let (stamp, config) = match result {
            Ok(read) => read,
            Err(e) => {
                // Remember the version so a broken file is reported once, not on every poll.
                seen.loaded = stamp(&self.file);
                return Err(e);
            }
        };
        seen.loaded = stamp;
        let next = self
            .current()
            .with_config(config)
            .map_err(LoadError::Invalid)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// One poll: `Ok(true)` when it reloaded. A change is applied once the file is the same as
    /// at the previous poll (see the [module docs](self)), so the first poll after a change
    /// only notes it.
    pub fn reload_if_changed(&self) -> Result<bool, LoadError> {
        let now = stamp(&self.file);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if now == seen.loaded {
                seen.pending = None;
                return Ok(false);
            }
            if seen.pending != Some(now) {
                seen.pending = Some(now);
                return Ok(false);
            }
        }
        self.reload().map(|()| true)
    }

    /// Polls the file every `every` (at least [`MIN_WATCH_PERIOD`]) and reloads a change once it
    /// has held for a poll; a rejected file is logged (target `ricochet::reload`, the old policy
    /// stays). The task ends when the returned handle is aborted or the policy is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = every.max(MIN_WATCH_PERIOD);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                if let Err(e) = this.reload_if_changed() {
                    tracing::error!(target: "ricochet::reload", file = %this.file.display(), error = %e, "policy reload rejected; keeping the previous policy");
                }
            }
        })
    }
}

/// Loads policy `name` from a read of `file` during which the file did not change (retrying a
/// few times), with the version it came from.
fn read_stable(file: &Path, name: &str) -> Result<(Option<Stamp>, RetryConfig), LoadError> {
    for _ in 0..STABLE_READ_TRIES {
        let before = stamp(file);
        let config = load_policy(name, Some(file), |v| std::env::var(v).ok())?;
        if stamp(file) == before {
            return Ok((before, config));
        }
    }
    Err(LoadError::File(FileErrors(vec![FileError {
        path: file.to_path_buf(),
        location: None,
        policy: None,
        field: None,
        message: format!(
            "the file changed while it was read, {STABLE_READ_TRIES} times in a row; \
             write it elsewhere and rename it into place"
        ),
    }])))
}

#[cfg(all(test, feature = "yaml"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ricochet_core::RetryConfig;

    #[tokio::test]
    async fn reload_swaps_for_new_calls_and_rejects_bad_files() {
        let dir = std::env::temp_dir().join(format!("ricochet-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.yaml");
        std::fs::write(&path, "retry_policies:\n  default:\n    max_attempts: 4\n").unwrap();
        let template = RetryPolicy::new(RetryConfig::default())
            .unwrap()
            .without_metrics();
        let r = Arc::new(ReloadablePolicy::load(&path, "default", &template).unwrap());
        let in_flight = r.current();
        assert_eq!(in_flight.config().max_attempts, 4);

        std::fs::write(&path, "retry_policies:\n  default:\n    max_attempts: 6\n").unwrap();
        r.reload().unwrap();
        assert_eq!(r.current().config().max_attempts, 6);
        assert_eq!(
            in_flight.config().max_attempts,
            4,
            "a call in flight keeps its policy"
        );

        std::fs::write(&path, "retry_policies:\n  default:\n    jitter_factor: 3\n").unwrap();
        let e = r.reload().unwrap_err().to_string();
        assert!(e.contains("jitter_factor"), "{e}");
        assert_eq!(r.current().config().max_attempts, 6, "the old policy stays");

        // The watcher picks up a change by itself.
        let handle = r.watch(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "retry_policies:\n  default:\n    max_attempts: 2\n").unwrap();
        let filetime = SystemTime::now() + Duration::from_secs(5);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(filetime).unwrap();
        let mut waited = 0;
        while r.current().config().max_attempts != 2 && waited < 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        assert_eq!(r.current().config().max_attempts, 2);
        handle.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
