//! `plan`: the scale-out topology of the rule pack
//! ([`crate::rules::topology`]).

use crate::rules::Which;
use crate::rules::topology::{self, DEFAULT_PARTITIONS};

use super::{RulesArg, load_rules};

/// Output formats of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// a table per topic, for people
    Text,
    /// one JSON object, for scripts
    Json,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub rules: RulesArg,
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// partitions suggested for each keyed topic
    #[arg(long, default_value_t = DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: u32,
}

/// Loads the pack, plans it and prints the topology.
pub async fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let set = load_rules(&args.rules.dir(), Which::All).await?;
    let topology = topology::plan(&set, args.partitions);
    match args.format {
        PlanFormat::Text => println!("{topology}"),
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&topology)?),
    }
    Ok(())
}
