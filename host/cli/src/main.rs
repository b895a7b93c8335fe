//! `ricochet`: demo, run, simulate, plan, check, import and export retry policies.

use std::process::ExitCode;

use clap::Parser;
use ricochet_cli::cli::{self, Cli, Command};
use ricochet_cli::{demo, interop, plan, run as run_cmd, sim};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan::plan(args).map(|()| ExitCode::SUCCESS),
        Command::Check { file } => Ok(plan::check(&file)),
        Command::Import(args) => interop::import(args),
        Command::Export(args) => interop::export(args),
        Command::Component { out } => cli::write_component(&out).map(|()| ExitCode::SUCCESS),
        Command::Simulate(args) => sim::simulate(args),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run(args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::demo(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn run(args: cli::RunArgs) -> anyhow::Result<ExitCode> {
    if !args.quiet {
        cli::init_stderr_logs();
    }
    let backends = cli::Backends::from_args(&args.policy)?;
    let operation = args.operation.clone().unwrap_or_else(|| {
        let cmd = args
            .command
            .first()
            .map(String::as_str)
            .unwrap_or("command");
        cmd.rsplit('/').next().unwrap_or(cmd).to_string()
    });
    let options = run_cmd::RunOptions {
        service: args.service,
        operation,
        retry_on_exit: args.retry_on_exit,
        attempt_timeout: args.attempt_timeout,
        idempotency_key: args.idempotency_key,
        lease: args.lease,
        command: args.command,
    };
    run_cmd::run(options, backends).await
}
