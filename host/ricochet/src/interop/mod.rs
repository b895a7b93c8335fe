//! Policies as data, both ways: Envoy route `retry_policy` and gRPC service configs in, Envoy
//! `retry_policy` out.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use ricochet::interop::{import_envoy, Document};
//! let text = std::fs::read_to_string("envoy.yaml")?;
//! let doc = Document::parse("envoy.yaml", &text)?;
//! let imported = import_envoy(&doc)?;
//! println!("{}", imported.to_policy_file()); // a `retry_policies:` file, notes as comments
//! # Ok(()) }
//! ```
//!
//! # What a translation promises
//!
//! Teams that wrote their retries as Envoy route config or as a gRPC service config should be
//! able to bring them, and to give a ricochet policy to the Envoy routes that run the ricochet
//! filter. The two worlds do not have the same words, so every translation says where it is not
//! exact, and never quietly:
//!
//! - **Errors** ([`ImportErrors`]): a field ricochet cannot express at all (Envoy's
//!   `retry_host_predicate`, `retriable_headers`, a `hedge_policy`; gRPC's `hedgingPolicy`), an
//!   unknown field or condition, a value out of range, and any translation that would retry
//!   *more* non-transient failures than the source did (ricochet retries whole categories:
//!   importing `retriable_status_codes: [409]` would retry every `BusinessLogicError` — 402,
//!   405, … — so it is refused, naming the statuses it would add). Each error names the path in
//!   the document and, for a file, its line.
//! - **Notes** ([`Note`]): a field that is carried over in a nearby form (Envoy's
//!   `(2^n − 1)·base` full-jitter bound against ricochet's `base·2^(n−1)`), a transient failure
//!   ricochet retries that the source did not name (a `500` under Envoy's `gateway-error`), one
//!   it does not retry that the source did (`501` under `5xx`), a value that belongs somewhere
//!   a policy file has no field for (`per_try_timeout` → the layer's `attempt_timeout`). They
//!   come back with the result, are written as comments at the top of the policy file, and
//!   [`strict`](Imported::strict) turns them into errors.
//!
//! What is read, field by field, is in [`envoy`] and [`grpc_config`].

pub mod envoy;
pub mod grpc_config;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use ricochet_core::PartialRetryConfig;

pub use envoy::{export_envoy, import_envoy, EnvoyExport};
pub use grpc_config::import_grpc_service_config;

/// One imported policy: the policy file entry, and what a policy file cannot hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedPolicy {
    /// The entry of the policy file (fields the source did not set are left to the `default`
    /// preset).
    pub config: PartialRetryConfig,
    /// The per-attempt timeout (`per_try_timeout`, `perAttemptRecvTimeout`): a policy file has
    /// no field for it; give it to `RetryLayer::attempt_timeout` or `ricochet run
    /// --attempt-timeout`.
    pub attempt_timeout: Option<Duration>,
    /// Where in the document the policy came from.
    pub source: String,
}

/// What an import produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The policies, by name.
    pub policies: BTreeMap<String, ImportedPolicy>,
    /// Where the translation is not exact.
    pub notes: Vec<Note>,
}

/// A place where a translation is not exact, though it is carried over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The field, as a path in the source document.
    pub path: String,
    /// What differs, and what to do about it.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", Escaped(&self.path), Escaped(&self.message))
    }
}

/// Text from a document shown safely: a key can hold anything, and printed raw a control
/// character would act on the terminal (`ESC[2J`), a line break forge a line of the report or
/// end a comment, and a bidirectional override reorder what is read. Each is escaped (`\n`,
/// `\u{1b}`, `\u{202e}`).
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            let unsafe_char = c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if unsafe_char {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// One thing that cannot be translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The document's name (a file path), when it has one.
    pub file: Option<String>,
    /// The line of the field, when it could be found.
    pub line: Option<usize>,
    /// The field, as a path in the document.
    pub path: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            Escaped(file).fmt(f)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", Escaped(&self.path), Escaped(&self.message))
    }
}

/// Everything that cannot be translated, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportErrors(pub Vec<ImportError>);

impl fmt::Display for ImportErrors {
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

impl std::error::Error for ImportErrors {}

impl Imported {
    /// The same, or the notes as errors: for a caller who accepts only exact translations.
    pub fn strict(self) -> Result<Self, ImportErrors> {
        if self.notes.is_empty() {
            return Ok(self);
        }
        Err(ImportErrors(
            self.notes
                .into_iter()
                .map(|n| ImportError {
                    file: None,
                    line: None,
                    path: n.path,
                    message: format!("not exact: {}", n.message),
                })
                .collect(),
        ))
    }

    /// The policies as a ricochet policy file (`retry_policies:`): YAML with the `yaml`
    /// feature, JSON otherwise. Notes and per-attempt timeouts are written as comments at the
    /// top of a YAML file (JSON has none: read [`Imported::notes`]).
    pub fn to_policy_file(&self) -> String {
        let mut policies = serde_json::Map::new();
        for (name, p) in &self.policies {
            policies.insert(name.clone(), partial_to_json(&p.config));
        }
        let file = serde_json::json!({ "retry_policies": policies });
        #[cfg(feature = "yaml")]
        {
            let mut out = String::from("# Imported by ricochet.\n");
            for (name, p) in &self.policies {
                comment(&mut out, &format!("policy `{name}`: from {}", p.source));
                if let Some(t) = p.attempt_timeout {
                    comment(&mut out, &format!(
                        "  per-attempt timeout {}s: a policy file has no field for it; give it to RetryLayer::attempt_timeout or `ricochet run --attempt-timeout`",
                        t.as_secs_f64()
                    ));
                }
            }
            for n in &self.notes {
                comment(&mut out, &format!("note: {n}"));
            }
            match serde_yaml_ng::to_string(&file) {
                Ok(yaml) => out.push_str(&yaml),
                Err(_) => out.push_str(&file.to_string()),
            }
            out
        }
        #[cfg(not(feature = "yaml"))]
        {
            serde_json::to_string_pretty(&file).unwrap_or_else(|_| file.to_string())
        }
    }
}

/// `text` as one comment line: the document's keys and values in it (a path, a name) may hold
/// line breaks, which are escaped so that the comment cannot end early and its rest be read
/// as policy file (YAML 1.1 breaks lines at NEL, LS and PS too).
#[cfg(feature = "yaml")]
fn comment(out: &mut String, text: &str) {
    out.push_str(&format!("# {}\n", Escaped(text)));
}

/// The fields a partial config sets (nulls left out).
fn partial_to_json(config: &PartialRetryConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Documents: YAML or JSON, keys in document order, errors with lines.

/// A value of a config document, its maps in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null` / `~`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    String(String),
    /// A list.
    List(Vec<Node>),
    /// A map, in document order.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value of `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::List(_) => "a list",
            Node::Map(_) => "a map",
        }
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a config document")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                serde::Deserialize::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Number(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::List(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                // A key given twice is an error (gRPC's JSON reader refuses it too): neither
                // value may win quietly.
                let mut entries = Vec::new();
                let mut keys = std::collections::HashSet::new();
                while let Some(k) = a.next_key::<String>()? {
                    if !keys.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate key `{k}`"
                        )));
                    }
                    entries.push((k, a.next_value()?));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Largest document accepted: route and service configs are kilobytes; a megabyte is a mistake.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// A parsed config document, with its text for locating errors.
#[derive(Debug, Clone)]
pub struct Document {
    name: String,
    text: String,
    root: Node,
}

impl Document {
    /// Parses `text` as JSON when `name` ends in `.json`, as YAML otherwise (feature `yaml`;
    /// JSON is YAML too).
    pub fn parse(name: &str, text: &str) -> Result<Self, ImportErrors> {
        let fail = |line: Option<usize>, message: String| {
            ImportErrors(vec![ImportError {
                file: Some(name.to_string()),
                line,
                path: "(document)".into(),
                message,
            }])
        };
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(fail(
                None,
                format!(
                    "{} bytes: a config document may hold at most {MAX_DOCUMENT_BYTES}",
                    text.len()
                ),
            ));
        }
        let is_json = name.to_ascii_lowercase().ends_with(".json");
        let root: Node = if is_json {
            serde_json::from_str(text).map_err(|e| fail(Some(e.line()), e.to_string()))?
        } else {
            #[cfg(feature = "yaml")]
            {
                serde_yaml_ng::from_str(text)
                    .map_err(|e| fail(e.location().map(|l| l.line()), e.to_string()))?
            }
            #[cfg(not(feature = "yaml"))]
            {
                serde_json::from_str(text).map_err(|e| {
                    fail(
                        Some(e.line()),
                        format!("{e} (YAML documents need ricochet's `yaml` feature)"),
                    )
                })?
            }
        };
        Ok(Self {
            name: name.to_string(),
            text: text.to_string(),
            root,
        })
    }

    /// A document from a value, with no text (errors carry no line).
    pub fn from_node(name: &str, root: Node) -> Self {
        Self {
            name: name.to_string(),
            text: String::new(),
            root,
        }
    }

    /// The root value.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The line of `key` where it is the `ordinal`-th key of that name in document order.
    fn line_of(&self, key: &str, ordinal: usize) -> Option<usize> {
        let text = &self.text;
        let mut seen = 0;
        let mut from = 0;
        while let Some(at) = text[from..].find(key) {
            let start = from + at;
            let end = start + key.len();
            from = end;
            let before = text[..start].chars().next_back();
            let opens_key = matches!(
                before,
                None | Some(' ' | '\t' | '\n' | '"' | '\'' | '{' | ',')
            );
            let after = text[end..]
                .trim_start_matches(['"', '\''])
                .trim_start_matches([' ', '\t']);
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let in_comment = text[line_start..start].contains('#');
            if opens_key && after.starts_with(':') && !in_comment {
                if seen == ordinal {
                    return Some(text[..start].matches('\n').count() + 1);
                }
                seen += 1;
            }
        }
        None
    }
}

/// A node with its path and its key's place in the document, for errors and notes.
#[derive(Clone, Copy)]
pub(crate) struct At<'a> {
    pub node: &'a Node,
    path: &'a Path<'a>,
}

/// A path into the document: `virtual_hosts[0].routes[2].route.retry_policy`.
pub(crate) enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str, &'a Node),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("(root)"),
            Path::Key(Path::Root, k, _) => f.write_str(k),
            Path::Key(parent, k, _) => write!(f, "{parent}.{k}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Errors described in full; past these, errors are only counted. Finding an error's line
/// reads the document: describing each of a megabyte of bad keys would take minutes.
pub const MAX_SHOWN_ERRORS: usize = 100;

/// Collects errors and notes while a document is read.
pub(crate) struct Reader<'d> {
    doc: &'d Document,
    errors: Vec<ImportError>,
    /// Errors past [`MAX_SHOWN_ERRORS`], counted.
    unshown: usize,
    pub notes: Vec<Note>,
}

impl<'d> Reader<'d> {
    pub fn new(doc: &'d Document) -> Self {
        Self {
            doc,
            errors: Vec::new(),
            unshown: 0,
            notes: Vec::new(),
        }
    }

    /// How many errors were found so far, shown or not.
    pub fn error_count(&self) -> usize {
        self.errors.len() + self.unshown
    }

    pub fn root(&self) -> At<'d> {
        static ROOT: Path<'static> = Path::Root;
        At {
            node: &self.doc.root,
            path: &ROOT,
        }
    }

    fn line(&self, path: &Path<'_>) -> Option<usize> {
        let mut p = path;
        while let Path::Index(parent, _) = p {
            p = parent;
        }
        let Path::Key(_, key, value) = p else {
            return None;
        };
        // The key's ordinal among same-named keys, in document order.
        fn count(node: &Node, key: &str, target: *const Node, seen: &mut usize) -> bool {
            match node {
                Node::Map(entries) => {
                    for (k, v) in entries {
                        if k == key {
                            if std::ptr::eq(v, target) {
                                return true;
                            }
                            *seen += 1;
                        }
                        if count(v, key, target, seen) {
                            return true;
                        }
                    }
                    false
                }
                Node::List(items) => items.iter().any(|i| count(i, key, target, seen)),
                _ => false,
            }
        }
        let mut seen = 0;
        count(&self.doc.root, key, *value as *const Node, &mut seen)
            .then(|| self.doc.line_of(key, seen))
            .flatten()
    }

    pub fn error(&mut self, at: &Path<'_>, message: impl Into<String>) {
        if self.errors.len() >= MAX_SHOWN_ERRORS {
            self.unshown += 1;
            return;
        }
        let line = self.line(at);
        self.errors.push(ImportError {
            file: (!self.doc.name.is_empty()).then(|| self.doc.name.clone()),
            line,
            path: at.to_string(),
            message: message.into(),
        });
    }

    pub fn note(&mut self, at: &Path<'_>, message: impl Into<String>) {
        self.notes.push(Note {
            path: at.to_string(),
            message: message.into(),
        });
    }

    pub fn finish(
        mut self,
        policies: BTreeMap<String, ImportedPolicy>,
    ) -> Result<Imported, ImportErrors> {
        // In document order, as far as lines are known (stable: same-line errors keep theirs).
        self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        if self.unshown > 0 {
            self.errors.push(ImportError {
                file: (!self.doc.name.is_empty()).then(|| self.doc.name.clone()),
                line: None,
                path: "(document)".into(),
                message: format!(
                    "and {} more errors (the first {MAX_SHOWN_ERRORS} are shown)",
                    self.unshown
                ),
            });
        }
        if self.errors.is_empty() {
            Ok(Imported {
                policies,
                notes: self.notes,
            })
        } else {
            Err(ImportErrors(self.errors))
        }
    }
}

impl<'a> At<'a> {
    pub fn path(&self) -> &'a Path<'a> {
        self.path
    }
}

/// Runs `f` on every entry of a map node, with its path; `Err(kind)` when not a map.
pub(crate) fn each_entry<'a>(
    node: &'a Node,
    parent: &Path<'_>,
    mut f: impl FnMut(&str, &'a Node, &Path<'_>),
) -> Result<(), &'static str> {
    let Node::Map(entries) = node else {
        return Err(node.kind());
    };
    for (k, v) in entries {
        let path = Path::Key(parent, k, v);
        f(k, v, &path);
    }
    Ok(())
}

/// A protobuf JSON `Duration` (`"0.25s"`, `".1s"`, `"2s"`) or YAML `{seconds, nanos}`.
pub(crate) fn duration(node: &Node) -> Result<Duration, String> {
    match node {
        Node::String(s) => {
            let Some(number) = s.strip_suffix('s') else {
                return Err(format!(
                    "{s:?} is not a duration: write seconds with an `s`, e.g. \"0.25s\""
                ));
            };
            let ok = !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && number.bytes().filter(|&b| b == b'.').count() <= 1
                && number != ".";
            // Protobuf durations are to the nanosecond: a tenth digit is not rounded away.
            let fraction = number.split_once('.').map_or("", |(_, f)| f);
            if ok && fraction.len() > 9 {
                return Err(format!(
                    "{s:?} is finer than a nanosecond: a duration has at most nine fractional digits"
                ));
            }
            let seconds: f64 = if ok {
                number
                    .parse()
                    .map_err(|_| format!("{s:?} is not a duration"))?
            } else {
                return Err(format!(
                    "{s:?} is not a duration (seconds, non-negative, e.g. \"0.25s\")"
                ));
            };
            Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is out of range"))
        }
        Node::Map(_) => {
            let seconds = match node.get("seconds") {
                Some(Node::Number(n)) => *n,
                Some(Node::String(s)) => s
                    .parse()
                    .map_err(|_| format!("seconds {s:?} is not a number"))?,
                None => 0.0,
                Some(other) => return Err(format!("seconds is {}", other.kind())),
            };
            let nanos = match node.get("nanos") {
                Some(Node::Number(n)) => *n,
                None => 0.0,
                Some(other) => return Err(format!("nanos is {}", other.kind())),
            };
            if let Node::Map(entries) = node {
                if let Some((k, _)) = entries.iter().find(|(k, _)| k != "seconds" && k != "nanos") {
                    return Err(format!("unknown duration field `{k}`"));
                }
            }
            if seconds < 0.0
                || !(0.0..1e9).contains(&nanos)
                || seconds.fract() != 0.0
                || nanos.fract() != 0.0
            {
                return Err(format!(
                    "{{seconds: {seconds}, nanos: {nanos}}} is not a non-negative duration"
                ));
            }
            Duration::try_from_secs_f64(seconds + nanos / 1e9)
                .map_err(|_| "out of range".to_string())
        }
        other => Err(format!(
            "expected a duration such as \"0.25s\", got {}",
            other.kind()
        )),
    }
}

/// A non-negative whole number (a protobuf integer, possibly written as a string).
pub(crate) fn whole_number(node: &Node) -> Result<u64, String> {
    let n = match node {
        Node::Number(n) => *n,
        Node::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("{s:?} is not a number"))?,
        other => return Err(format!("expected a number, got {}", other.kind())),
    };
    if n < 0.0 || n.fract() != 0.0 || !n.is_finite() || n > 9.0e15 {
        return Err(format!("{n} is not a non-negative whole number"));
    }
    Ok(n as u64)
}

/// A policy name that the policy file accepts (at most 64 bytes, no control characters).
pub(crate) fn policy_name(raw: &str) -> Result<String, String> {
    let name: String = raw.trim().to_string();
    if name.is_empty() {
        return Err("the policy name would be empty".into());
    }
    if name.len() > 64 {
        return Err(format!(
            "the policy name {name:?} is {} bytes long; a policy file allows 64",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the policy name {name:?} contains a control character"
        ));
    }
    Ok(name)
}

/// `items` joined with ", ", the first `max` of them and a count of the rest.
pub(crate) fn some_of<T: fmt::Display>(items: &[T], max: usize) -> String {
    let mut out: Vec<String> = items.iter().take(max).map(ToString::to_string).collect();
    if items.len() > max {
        out.push(format!("and {} more", items.len() - max));
    }
    out.join(", ")
}
