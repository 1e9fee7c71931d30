//! `fedwall bpf …`: read fedwall's pinned maps directly, without the agent.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Subcommand;

use super::OutputFormat;
use crate::{dataplane::ProtoStats, paths::DEFAULT_PIN_ROOT};

#[derive(Debug, Subcommand)]
pub enum BpfCommand {
    /// Packets and bytes seen by fedwall's TC programs, per direction and protocol class,
    /// summed over CPUs.
    Stats {
        /// Where the agent pins its maps.
        #[arg(long, default_value = DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
        #[arg(short, long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

pub fn run(command: BpfCommand) -> anyhow::Result<ExitCode> {
    match command {
        BpfCommand::Stats { pin_root, output } => {
            let stats = ProtoStats::from_pin(&pin_root).with_context(|| {
                format!("reading the counters pinned under {}", pin_root.display())
            })?;
            print_stats(&stats, output);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_stats(stats: &ProtoStats, output: OutputFormat) {
    match output {
        OutputFormat::Table => {
            println!(
                "{:<9} {:<11} {:>12} {:>14}",
                "DIRECTION", "CLASS", "PACKETS", "BYTES"
            );
            for (direction, class, counter) in stats.iter() {
                println!(
                    "{:<9} {:<11} {:>12} {:>14}",
                    direction.name(),
                    class.name(),
                    counter.packets,
                    counter.bytes
                );
            }
        }
        OutputFormat::Json => {
            let rows: Vec<_> = stats
                .iter()
                .map(|(direction, class, counter)| {
                    serde_json::json!({
                        "direction": direction.name(),
                        "class": class.name(),
                        "packets": counter.packets,
                        "bytes": counter.bytes,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(rows));
        }
    }
}
