//! `ricochet simulate`: the deterministic herd simulation (`ricochet::simulate`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::simulate::{
    result_json, simulate as run_one, write_svg, SimModel, SimOptions, SimStrategy,
};
use anyhow::Result;
use clap::Args;

use crate::plan::Format;

#[derive(Args)]
pub struct SimulateArgs {
    /// Clients in the herd (all start at t = 0).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    clients: u32,
    /// Strategy: exponential (alias none), proportional, full, equal, decorrelated, slots, or all.
    #[arg(long, default_value = "all", value_parser = parse_strategies)]
    strategy: Strategies,
    /// Server model: `capacity` (serves C calls per slot, rejects the rest) or `occ` (the AWS
    /// jitter study's optimistic concurrency on one row).
    #[arg(long, default_value = "capacity", value_parser = parse_model)]
    model: SimModel,
    /// Calls the capacity server serves per slot (default: clients / 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    capacity: Option<u32>,
    /// Seed of every draw: the same seed gives the same numbers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write an SVG: arrivals over time (one line per strategy) and cumulative completions.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Clone)]
struct Strategies(Vec<SimStrategy>);

fn parse_strategies(s: &str) -> Result<Strategies, String> {
    if s == "all" {
        return Ok(Strategies(SimStrategy::ALL.to_vec()));
    }
    s.split(',')
        .map(|name| {
            SimStrategy::from_name(name.trim()).ok_or_else(|| {
                format!("unknown strategy `{name}` (expected exponential, proportional, full, equal, decorrelated, slots or all)")
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Strategies)
}

fn parse_model(s: &str) -> Result<SimModel, String> {
    SimModel::from_name(s).ok_or_else(|| format!("unknown model `{s}` (expected capacity or occ)"))
}

pub fn simulate(args: SimulateArgs) -> Result<ExitCode> {
    let opts = SimOptions {
        clients: args.clients,
        model: args.model,
        seed: args.seed,
        capacity_per_bucket: args.capacity,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for strategy in &args.strategy.0 {
        let clients = u64::from(args.clients);
        let show = |done: u64| {
            let filled = (done * 30 / clients.max(1)) as usize;
            eprint!(
                "\r{:<13} [{}{}] {done}/{clients}",
                strategy.name(),
                "#".repeat(filled),
                ".".repeat(30 - filled.min(30))
            );
        };
        let progress: Option<&dyn Fn(u64)> = if terminal && clients >= 10_000 {
            Some(&show)
        } else {
            None
        };
        results.push(run_one(*strategy, &opts, progress));
        if progress.is_some() {
            eprintln!();
        }
    }
    match args.format {
        Format::Json => {
            for r in &results {
                println!("{}", result_json(r));
            }
        }
        Format::Table => {
            println!(
                "{} clients · model {} · seed {}",
                args.clients,
                args.model.name(),
                args.seed
            );
            println!(
                "{:<13} {:>10} {:>14} {:>14} {:>8}",
                "strategy", "calls", "completion (s)", "peak per slot", "gave up"
            );
            for r in &results {
                println!(
                    "{:<13} {:>10} {:>14.3} {:>14} {:>8}",
                    r.strategy, r.calls, r.completion_s, r.peak_per_slot, r.gave_up
                );
            }
        }
    }
    if let Some(path) = &args.plot {
        let title = format!("{} clients, {} model", args.clients, args.model.name());
        write_svg(path, &results, &title)
            .map_err(|e| anyhow::anyhow!("--plot {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
