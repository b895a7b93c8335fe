//! Dynamic adjustment (the seed's "future enhancement"): a policy loaded from a file can be
//! reloaded without a restart.
//!
//! [`ReloadablePolicy::current`] hands out an `Arc<RetryPolicy>`: a call in flight keeps the
//! policy it started with, new calls get the new one. A reload that fails — unreadable file,
//! invalid policy, bad `RETRY_*` variable — is rejected and the old policy stays. Reloads happen
//! on [`ReloadablePolicy::reload`] or, with [`ReloadablePolicy::watch`], when the file's
//! modification time changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::config_file::{load_policy, LoadError};
use crate::executor::RetryPolicy;

/// A policy that follows its file.
#[derive(Debug)]
pub struct ReloadablePolicy {
    file: PathBuf,
    name: String,
    current: RwLock<Arc<RetryPolicy>>,
    modified: Mutex<Option<SystemTime>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadablePolicy {
    /// Loads policy `name` from `file` (environment > file > preset) onto the backends of
    /// `template` (coordinator, store, metrics, clock, hooks).
    pub fn load(file: &Path, name: &str, template: &RetryPolicy) -> Result<Self, LoadError> {
        let stamp = modified(file);
        let config = load_policy(name, Some(file), |v| std::env::var(v).ok())?;
        let policy = template.with_config(config).map_err(LoadError::Invalid)?;
        Ok(Self {
            file: file.to_path_buf(),
            name: name.to_string(),
            current: RwLock::new(Arc::new(policy)),
            modified: Mutex::new(stamp),
        })
    }

    /// The policy for a new call.
    pub fn current(&self) -> Arc<RetryPolicy> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the file now. On error the current policy stays and the error is returned.
    pub fn reload(&self) -> Result<(), LoadError> {
        let stamp = modified(&self.file);
        let config = load_policy(&self.name, Some(&self.file), |v| std::env::var(v).ok())?;
        let next = self
            .current()
            .with_config(config)
            .map_err(LoadError::Invalid)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        *self.modified.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(())
    }

    /// Reloads if the file's modification time changed; `Ok(true)` when it reloaded.
    pub fn reload_if_changed(&self) -> Result<bool, LoadError> {
        let stamp = modified(&self.file);
        let last = *self.modified.lock().unwrap_or_else(|p| p.into_inner());
        if stamp == last {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => Ok(true),
            Err(e) => {
                // Remember the stamp so a broken file is reported once, not on every poll.
                *self.modified.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
                Err(e)
            }
        }
    }

    /// Polls the file every `every` and reloads on change; a rejected file is logged (the old
    /// policy stays). The task ends when the returned handle is aborted or the policy is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
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
