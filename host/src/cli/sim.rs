//! `ricochet simulate`: wired to `ricochet_host::simulate`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct SimulateArgs {
    /// Clients in the herd.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
}

pub fn simulate(_args: SimulateArgs) -> Result<ExitCode> {
    anyhow::bail!("simulate: not wired yet")
}
