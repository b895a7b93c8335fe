//! Policy files: the seed's own YAML format (or the same shape in JSON).
//!
//! ```yaml
//! retry_policies:
//!   default:
//!     max_attempts: 3
//!     initial_delay: 0.1
//!   critical:
//!     extends: aggressive
//!     max_attempts: 7
//! ```
//!
//! An entry starts from the policy it `extends` (a preset or another entry of the file); without
//! `extends`, an entry named after a preset starts from that preset, any other from `default`.
//! Fields left out keep the base's value. Every policy is resolved and validated when the file is
//! loaded, and every error is reported — not just the first — as `file:line:col: policy `name`:
//! message`, where the message names the field and the value.
//!
//! A hostile file must cost time in proportion to its size: an `extends` chain may be at most
//! [`MAX_EXTENDS_DEPTH`] policies long (resolution recurses along it), and only the first
//! [`MAX_LOCATED_ERRORS`] errors get a `line:col` (finding one scans the text).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ricochet_core::{PartialRetryConfig, RetryConfig};
use serde::Deserialize;

/// Largest policy file accepted: a policy file is a few hundred bytes; anything this large is a
/// mistake (or an attack) and is refused before it is parsed.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Longest `extends` chain, in policies of the file: real files extend a preset, or one another
/// a level or two deep. Unbounded, a 640 KB chain of 20 000 entries overflowed the stack, and
/// one of 2 000 took 27 s (`host/ricochet/tests/fuzz_regressions.rs`).
pub const MAX_EXTENDS_DEPTH: usize = 32;

/// Errors given a `line:col`; the rest are reported without one. Locating an error scans the
/// text, so locating each of a 1 MiB file's 36 000 errors took two minutes.
pub const MAX_LOCATED_ERRORS: usize = 100;

/// The file's top level.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    retry_policies: BTreeMap<String, PartialRetryConfig>,
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    /// The policy the error is in, when known.
    pub policy: Option<String>,
    /// The offending field, when known.
    pub field: Option<String>,
    /// What is wrong, naming the value.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(p) = &self.policy {
            write!(f, "policy `{p}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for FileErrors {}

/// A loaded file: every policy resolved (`extends` applied) and valid.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    path: PathBuf,
    policies: BTreeMap<String, RetryConfig>,
}

impl PolicyFile {
    /// Reads, parses, resolves and validates a file (at most [`MAX_FILE_BYTES`]).
    ///
    /// The cap holds for anything that can be opened: a regular file is refused by its size
    /// before it is read, and a pipe, a FIFO or a device such as `/dev/zero`, whose size says
    /// nothing, is read only up to one byte past the cap.
    pub fn load(path: &Path) -> Result<Self, FileErrors> {
        let too_big = |size: u64| {
            FileErrors(vec![FileError {
                path: path.to_path_buf(),
                location: None,
                policy: None,
                field: None,
                message: format!("file too large: {size} bytes (a policy file may hold at most {MAX_FILE_BYTES})"),
            }])
        };
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.len() > MAX_FILE_BYTES {
                return Err(too_big(meta.len()));
            }
        }
        let cannot_read = |e: std::io::Error| {
            FileErrors(vec![FileError {
                path: path.to_path_buf(),
                location: None,
                policy: None,
                field: None,
                message: format!("cannot read: {e}"),
            }])
        };
        let mut text = Vec::new();
        {
            use std::io::Read;
            // The size check above cannot see a pipe's or a device's length: cap the read too.
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut text))
                .map_err(cannot_read)?;
        }
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(FileErrors(vec![FileError {
                path: path.to_path_buf(),
                location: None,
                policy: None,
                field: None,
                message: format!(
                    "file too large: more than {MAX_FILE_BYTES} bytes (a policy file may hold at \
                     most {MAX_FILE_BYTES})"
                ),
            }]));
        }
        let text = String::from_utf8(text).map_err(|e| {
            FileErrors(vec![FileError {
                path: path.to_path_buf(),
                location: None,
                policy: None,
                field: None,
                message: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Parses, resolves and validates `text` (`path` is used in messages and picks JSON for `.json`).
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileErrors> {
        let err =
            |location, policy: Option<&str>, field: Option<&str>, message: String| FileError {
                path: path.to_path_buf(),
                location,
                policy: policy.map(str::to_string),
                field: field.map(str::to_string),
                message,
            };
        if text.trim().is_empty() {
            return Err(FileErrors(vec![err(
                None,
                None,
                None,
                "empty file: expected a `retry_policies:` map".into(),
            )]));
        }
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let raw: RawFile = if is_json {
            serde_json::from_str(text).map_err(|e| {
                FileErrors(vec![err(
                    Some((e.line(), e.column())),
                    None,
                    None,
                    e.to_string(),
                )])
            })?
        } else {
            #[cfg(feature = "yaml")]
            {
                serde_yaml_ng::from_str(text).map_err(|e| {
                    let location = e.location().map(|l| (l.line(), l.column()));
                    FileErrors(vec![err(
                        location,
                        None,
                        None,
                        strip_location(&e.to_string()),
                    )])
                })?
            }
            #[cfg(not(feature = "yaml"))]
            return Err(FileErrors(vec![err(
                None,
                None,
                None,
                "a YAML policy file needs ricochet's `yaml` feature (a `.json` file needs none)"
                    .into(),
            )]));
        };
        let mut errors = Vec::new();
        let mut policies = BTreeMap::new();
        // The position of the next error, while fewer than MAX_LOCATED_ERRORS came before it.
        let position = |errors_so_far: usize, policy: &str, field: &str| {
            (errors_so_far < MAX_LOCATED_ERRORS)
                .then(|| locate(text, policy, field))
                .flatten()
        };
        for name in raw.retry_policies.keys() {
            if let Some(problem) = bad_policy_name(name) {
                errors.push(err(
                    position(errors.len(), name, name),
                    Some(name),
                    None,
                    problem,
                ));
                continue;
            }
            match resolve(&raw.retry_policies, name, &mut Vec::new()) {
                Ok(config) => {
                    let problems = every_error(config);
                    if problems.is_empty() {
                        policies.insert(name.clone(), config);
                    }
                    for e in problems {
                        errors.push(err(
                            position(errors.len(), name, e.field()),
                            Some(name),
                            Some(e.field()),
                            e.to_string(),
                        ));
                    }
                }
                Err(message) => errors.push(err(
                    position(errors.len(), name, "extends"),
                    Some(name),
                    Some("extends"),
                    message,
                )),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                path: path.to_path_buf(),
                policies,
            })
        } else {
            Err(FileErrors(errors))
        }
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A policy by name: an entry of the file, else a preset.
    pub fn get(&self, name: &str) -> Option<RetryConfig> {
        self.policies
            .get(name)
            .copied()
            .or_else(|| RetryConfig::preset(name))
    }

    /// The file's policies, by name.
    pub fn policies(&self) -> &BTreeMap<String, RetryConfig> {
        &self.policies
    }
}

/// The seed's environment variables: `RETRY_<FIELD>` for every field (`RETRY_MAX_ATTEMPTS`,
/// `RETRY_INITIAL_DELAY`, `RETRY_MAX_DELAY`, …).
pub const ENV_VARS: [&str; 14] = [
    "RETRY_MAX_ATTEMPTS",
    "RETRY_INITIAL_DELAY",
    "RETRY_MAX_DELAY",
    "RETRY_EXPONENTIAL_BASE",
    "RETRY_JITTER",
    "RETRY_JITTER_FACTOR",
    "RETRY_SLOT_COUNT",
    "RETRY_SLOT_WIDTH",
    "RETRY_COORDINATION_ENABLED",
    "RETRY_IDEMPOTENCY_TTL",
    "RETRY_STRATEGY",
    "RETRY_MAX_ELAPSED",
    "RETRY_MAX_RETRY_AFTER",
    "RETRY_SLOT_CAPACITY",
];

/// A `RETRY_*` variable with a value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    /// The variable.
    pub var: String,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "environment variable {}={:?}: expected {}",
            self.var, self.value, self.expected
        )
    }
}

impl std::error::Error for EnvError {}

/// `config` with every `RETRY_*` variable that `lookup` finds laid over it (env beats file beats
/// preset). Validation is left to the caller; a value that does not parse is an error naming the
/// variable.
pub fn apply_env(
    mut config: RetryConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<RetryConfig, EnvError> {
    fn parse<T: std::str::FromStr>(
        var: &str,
        value: &str,
        expected: &'static str,
    ) -> Result<T, EnvError> {
        value.trim().parse().map_err(|_| EnvError {
            var: var.to_string(),
            value: value.to_string(),
            expected,
        })
    }
    fn parse_bool(var: &str, value: &str) -> Result<bool, EnvError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(EnvError {
                var: var.to_string(),
                value: value.to_string(),
                expected: "true or false",
            }),
        }
    }
    const SECONDS: &str = "a number of seconds";
    for var in ENV_VARS {
        let Some(value) = lookup(var) else { continue };
        let v = value.as_str();
        match var {
            "RETRY_MAX_ATTEMPTS" => config.max_attempts = parse(var, v, "a whole number")?,
            "RETRY_INITIAL_DELAY" => config.initial_delay = parse(var, v, SECONDS)?,
            "RETRY_MAX_DELAY" => config.max_delay = parse(var, v, SECONDS)?,
            "RETRY_EXPONENTIAL_BASE" => config.exponential_base = parse(var, v, "a number")?,
            "RETRY_JITTER" => config.jitter = parse_bool(var, v)?,
            "RETRY_JITTER_FACTOR" => {
                config.jitter_factor = parse(var, v, "a number within [0, 1]")?
            }
            "RETRY_SLOT_COUNT" => config.slot_count = parse(var, v, "a whole number")?,
            "RETRY_SLOT_WIDTH" => config.slot_width = parse(var, v, SECONDS)?,
            "RETRY_COORDINATION_ENABLED" => config.coordination_enabled = parse_bool(var, v)?,
            "RETRY_IDEMPOTENCY_TTL" => config.idempotency_ttl = parse(var, v, SECONDS)?,
            "RETRY_STRATEGY" => {
                config.strategy =
                    ricochet_core::JitterStrategy::from_name(v.trim()).ok_or(EnvError {
                        var: var.to_string(),
                        value: value.clone(),
                        expected: "none, proportional, full, equal or decorrelated",
                    })?
            }
            "RETRY_MAX_ELAPSED" => config.max_elapsed = Some(parse(var, v, SECONDS)?),
            "RETRY_MAX_RETRY_AFTER" => config.max_retry_after = parse(var, v, SECONDS)?,
            "RETRY_SLOT_CAPACITY" => config.slot_capacity = Some(parse(var, v, "a whole number")?),
            _ => {}
        }
    }
    Ok(config)
}

/// Why a policy could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The file has errors.
    File(FileErrors),
    /// A `RETRY_*` variable does not parse.
    Env(EnvError),
    /// The policy is neither in the file nor a preset.
    UnknownPolicy(String),
    /// The final config (after env) is invalid.
    Invalid(ricochet_core::ConfigError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(e) => e.fmt(f),
            Self::Env(e) => e.fmt(f),
            Self::UnknownPolicy(name) => write!(
                f,
                "unknown policy `{name}`: not in the file and not one of {}",
                RetryConfig::PRESET_NAMES.join(", ")
            ),
            Self::Invalid(e) => write!(f, "after RETRY_* environment variables: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Policy `name` with the seed's precedence: environment > file > preset.
pub fn load_policy(
    name: &str,
    file: Option<&Path>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<RetryConfig, LoadError> {
    let base = match file {
        Some(path) => PolicyFile::load(path).map_err(LoadError::File)?.get(name),
        None => RetryConfig::preset(name),
    }
    .ok_or_else(|| LoadError::UnknownPolicy(name.to_string()))?;
    let config = apply_env(base, lookup).map_err(LoadError::Env)?;
    config.validate().map_err(LoadError::Invalid)?;
    Ok(config)
}

/// Every validation error of `config`, not just the first: after each error the offending field
/// is reset to the `default` preset's value and validation runs again.
fn every_error(mut config: RetryConfig) -> Vec<ricochet_core::ConfigError> {
    let d = RetryConfig::DEFAULT;
    let mut errors = Vec::new();
    while let Err(e) = config.validate() {
        let before = config;
        match e.field() {
            "max_attempts" => config.max_attempts = d.max_attempts,
            "initial_delay" => {
                config.initial_delay = d.initial_delay.min(config.max_delay.max(0.0))
            }
            "max_delay" => config.max_delay = d.max_delay,
            "exponential_base" => config.exponential_base = d.exponential_base,
            "jitter_factor" => config.jitter_factor = d.jitter_factor,
            "slot_count" => config.slot_count = d.slot_count,
            "slot_width" => config.slot_width = d.slot_width,
            "idempotency_ttl" => config.idempotency_ttl = d.idempotency_ttl,
            "max_elapsed" => config.max_elapsed = None,
            "max_retry_after" => config.max_retry_after = d.max_retry_after,
            "slot_capacity" => config.slot_capacity = None,
            f if f.starts_with("circuit_breaker") => config.circuit_breaker = None,
            f if f.starts_with("retry_budget") => config.retry_budget = None,
            _ => {}
        }
        errors.push(e);
        if config == before || errors.len() > 32 {
            break;
        }
    }
    errors
}

/// The config of entry `name`, with its `extends` chain applied.
fn resolve(
    entries: &BTreeMap<String, PartialRetryConfig>,
    name: &str,
    chain: &mut Vec<String>,
) -> Result<RetryConfig, String> {
    if chain.iter().any(|n| n == name) {
        chain.push(name.to_string());
        return Err(format!("extends: cycle {}", chain.join(" -> ")));
    }
    let Some(entry) = entries.get(name) else {
        return RetryConfig::preset(name).ok_or_else(|| {
            format!(
                "extends: unknown policy `{name}` (not in this file, and not one of {})",
                RetryConfig::PRESET_NAMES.join(", ")
            )
        });
    };
    chain.push(name.to_string());
    if chain.len() > MAX_EXTENDS_DEPTH {
        return Err(format!(
            "extends: a chain may be at most {MAX_EXTENDS_DEPTH} policies long: {} -> …",
            chain.join(" -> ")
        ));
    }
    let base = match &entry.extends {
        Some(parent) => resolve(entries, parent.as_str(), chain)?,
        None => RetryConfig::preset(name).unwrap_or_default(),
    };
    chain.pop();
    Ok(entry.apply(base))
}

/// Why `name` cannot name a policy, if it cannot: it must be something `--policy` and `extends`
/// can say — not empty, at most 64 bytes, no control characters, no surrounding white space.
fn bad_policy_name(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some(format!("policy name {name:?} is empty"))
    } else if name.len() > 64 {
        Some(format!(
            "policy name is {} bytes long; at most 64 are allowed",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Some(format!("policy name {name:?} contains a control character"))
    } else if name.trim() != name {
        Some(format!(
            "policy name {name:?} starts or ends with white space"
        ))
    } else {
        None
    }
}

/// serde_yaml_ng appends " at line L column C"; the location is reported separately.
#[cfg(feature = "yaml")]
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Best-effort position of `field` inside policy `policy` (YAML or JSON text), 1-based.
fn locate(text: &str, policy: &str, field: &str) -> Option<(usize, usize)> {
    let leaf = field.rsplit('.').next().unwrap_or(field);
    let key_at = |line: &str, key: &str| -> Option<usize> {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let rest = trimmed.strip_prefix('"').unwrap_or(trimmed);
        let rest = rest.strip_prefix(key)?;
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        rest.trim_start().starts_with(':').then_some(indent)
    };
    let mut lines = text.lines().enumerate();
    let (policy_line, policy_indent) = lines
        .by_ref()
        .find_map(|(i, l)| key_at(l, policy).map(|ind| (i, ind)))?;
    for (i, line) in lines {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent <= policy_indent && !line.trim_start().starts_with('}') {
            break;
        }
        if let Some(ind) = key_at(line, leaf) {
            return Some((i + 1, ind + 1));
        }
    }
    Some((policy_line + 1, policy_indent + 1))
}

#[cfg(all(test, feature = "yaml"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SEED: &str = include_str!("../../../tests/data/seed-policies.yaml");

    #[test]
    fn the_seed_file_loads_with_the_seed_values() {
        let f = PolicyFile::parse(Path::new("seed.yaml"), SEED).unwrap();
        assert_eq!(f.get("default"), Some(RetryConfig::DEFAULT));
        assert_eq!(f.get("aggressive"), Some(RetryConfig::AGGRESSIVE));
        assert_eq!(f.get("conservative"), Some(RetryConfig::CONSERVATIVE));
    }

    #[test]
    fn extends_and_presets_fill_what_is_left_out() {
        let text = "retry_policies:\n  aggressive:\n    max_attempts: 9\n  critical:\n    extends: aggressive\n    initial_delay: 0.2\n";
        let f = PolicyFile::parse(Path::new("x.yaml"), text).unwrap();
        let critical = f.get("critical").unwrap();
        assert_eq!(
            (
                critical.max_attempts,
                critical.initial_delay,
                critical.max_delay
            ),
            (9, 0.2, 5.0)
        );
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = "retry_policies:\n  default:\n    jitter_factor: 1.5\n    max_delay: -2\n  aggressive:\n    max_attempts: 0\n  loop_a:\n    extends: loop_b\n  loop_b:\n    extends: loop_a\n";
        let errs = PolicyFile::parse(Path::new("bad.yaml"), text).unwrap_err();
        let all = errs.to_string();
        assert!(
            all.contains(
                "bad.yaml:3:5: policy `default`: jitter_factor must be within [0.0, 1.0], got 1.5"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "bad.yaml:6:5: policy `aggressive`: max_attempts must be at least 1, got 0"
            ),
            "{all}"
        );
        assert!(
            all.contains(
                "bad.yaml:4:5: policy `default`: max_delay must not be negative, got -2.0"
            ),
            "{all}"
        );
        assert!(all.contains("cycle"), "{all}");
    }

    #[test]
    fn environment_beats_file_beats_preset() {
        let dir = std::env::temp_dir().join(format!("ricochet-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.yaml");
        std::fs::write(
            &path,
            "retry_policies:\n  default:\n    max_attempts: 5\n    initial_delay: 0.2\n",
        )
        .unwrap();
        let env = |var: &str| (var == "RETRY_MAX_ATTEMPTS").then(|| "7".to_string());
        let c = load_policy("default", Some(&path), env).unwrap();
        assert_eq!(
            (c.max_attempts, c.initial_delay, c.max_delay),
            (7, 0.2, 10.0)
        );
        let bad = |var: &str| (var == "RETRY_INITIAL_DELAY").then(|| "fast".to_string());
        let e = load_policy("default", Some(&path), bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("RETRY_INITIAL_DELAY") && e.contains("fast"),
            "{e}"
        );
        let invalid = |var: &str| (var == "RETRY_JITTER_FACTOR").then(|| "1.5".to_string());
        let e = load_policy("default", None, invalid)
            .unwrap_err()
            .to_string();
        assert!(e.contains("jitter_factor") && e.contains("1.5"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_fields_and_types_are_parse_errors_with_position() {
        let errs = PolicyFile::parse(
            Path::new("u.yaml"),
            "retry_policies:\n  default:\n    max_atempts: 3\n",
        )
        .unwrap_err();
        let e = &errs.0[0];
        assert_eq!(e.location.map(|l| l.0), Some(3), "{e}");
        assert!(e.message.contains("max_atempts"), "{e}");
        let errs = PolicyFile::parse(
            Path::new("t.json"),
            "{\"retry_policies\": {\"default\": {\"max_delay\": \"ten\"}}}",
        )
        .unwrap_err();
        assert!(errs.to_string().contains("t.json:1:"), "{errs}");
    }
}
