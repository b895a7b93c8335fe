//! `ricochet import` and `ricochet export`: policies from and to Envoy and gRPC service configs,
//! on the library's `interop` module.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ricochet::config_file::load_policy;
use ricochet::interop::{
    export_envoy, import_envoy, import_grpc_service_config, Document, ImportErrors, Imported, Note,
    MAX_DOCUMENT_BYTES,
};

/// What `import` reads.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// An Envoy bootstrap, route configuration, virtual host, route or bare `retry_policy`
    /// (YAML or JSON).
    Envoy,
    /// A gRPC service config (JSON; `methodConfig` / `retryPolicy` / `retryThrottling`).
    Grpc,
}

/// `ricochet import`.
#[derive(Args)]
pub struct ImportArgs {
    /// What the file is.
    #[arg(value_enum)]
    pub format: ImportFormat,
    /// The Envoy config or gRPC service config (`-` for standard input).
    pub file: PathBuf,
    /// Write the policy file here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Refuse any translation that is not exact (every note becomes an error).
    #[arg(long)]
    pub strict: bool,
}

/// What `export` writes.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// An Envoy route `retry_policy`, for a route that runs the ricochet filter.
    Envoy,
}

/// `ricochet export`.
#[derive(Args)]
pub struct ExportArgs {
    /// What to write.
    #[arg(value_enum)]
    pub format: ExportFormat,
    /// Policy name: a preset (default, aggressive, conservative) or an entry of --config.
    #[arg(long, default_value = "default")]
    pub policy: String,
    /// Policy file in the seed's format (`retry_policies:` map), YAML or JSON.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The per-attempt timeout, as `per_try_timeout` (e.g. `500ms`, `2s`).
    #[arg(long, value_parser = crate::run::parse_duration)]
    pub attempt_timeout: Option<Duration>,
    /// Write JSON instead of YAML.
    #[arg(long)]
    pub json: bool,
    /// Refuse any translation that is not exact (every note becomes an error).
    #[arg(long)]
    pub strict: bool,
}

/// The document's name and text. At most one byte past the cap is read, so that standard
/// input without end (or `/dev/zero`) is refused rather than read until memory runs out.
fn read_input(file: &PathBuf) -> Result<(String, String)> {
    let (name, source): (String, Box<dyn Read>) = if file.as_os_str() == "-" {
        ("-".into(), Box::new(std::io::stdin()))
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        (file.display().to_string(), Box::new(opened))
    };
    let mut bytes = Vec::new();
    source
        .take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        anyhow::bail!(
            "{name}: more than {MAX_DOCUMENT_BYTES} bytes (a config document may hold at most {MAX_DOCUMENT_BYTES})"
        );
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((name, text))
}

fn report(errors: &ImportErrors, what: &str) -> ExitCode {
    for e in &errors.0 {
        eprintln!("{e}");
    }
    eprintln!("{what}: {} error(s)", errors.0.len());
    ExitCode::from(2)
}

fn print_notes(notes: &[Note]) {
    for n in notes {
        eprintln!("note: {n}");
    }
}

/// `ricochet import envoy|grpc FILE`: exit 0 with the policy file, 2 with every error.
pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let (name, text) = read_input(&args.file)?;
    let imported = Document::parse(&name, &text).and_then(|doc| match args.format {
        ImportFormat::Envoy => import_envoy(&doc),
        ImportFormat::Grpc => import_grpc_service_config(&doc),
    });
    let imported: Imported = match imported {
        Ok(i) if args.strict => match i.strict() {
            Ok(i) => i,
            Err(e) => return Ok(report(&e, &name)),
        },
        Ok(i) => i,
        Err(e) => return Ok(report(&e, &name)),
    };
    print_notes(&imported.notes);
    let file = imported.to_policy_file();
    match &args.out {
        Some(out) => {
            std::fs::write(out, &file).with_context(|| format!("--out {}", out.display()))?;
            eprintln!(
                "wrote {} polic{} to {}",
                imported.policies.len(),
                if imported.policies.len() == 1 {
                    "y"
                } else {
                    "ies"
                },
                out.display()
            );
        }
        None => std::io::stdout().write_all(file.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `ricochet export envoy`: the route's `retry_policy`, notes as comments and on stderr.
pub fn export(args: ExportArgs) -> Result<ExitCode> {
    let config = load_policy(&args.policy, args.config.as_deref(), |v| {
        std::env::var(v).ok()
    })
    .map_err(|e| anyhow::anyhow!("--policy {}: {e}", args.policy))?;
    let ExportFormat::Envoy = args.format;
    let export = match export_envoy(&config, args.attempt_timeout) {
        Ok(e) if args.strict => match e.strict() {
            Ok(e) => e,
            Err(errors) => return Ok(report(&errors, &args.policy)),
        },
        Ok(e) => e,
        Err(errors) => return Ok(report(&errors, &args.policy)),
    };
    print_notes(&export.notes);
    let wrapped = serde_json::json!({ "retry_policy": export.retry_policy });
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&wrapped)?)
    } else {
        let mut out = format!(
            "# ricochet policy `{}` as an Envoy route retry_policy (for routes that run the ricochet filter).\n",
            args.policy
        );
        for n in &export.notes {
            out.push_str(&format!("# note: {n}\n"));
        }
        out.push_str(&serde_yaml_ng::to_string(&wrapped)?);
        out
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
