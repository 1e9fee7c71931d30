//! `fedwall selector …`: the selector language on the command line, for people debugging a
//! policy's selectors and for scripts.

use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use crate::selector::Selector;

#[derive(Debug, Subcommand)]
pub enum SelectorCommand {
    /// Check a selector: prints its canonical form on line 1 and its unique id on line 2;
    /// an invalid selector exits 1 with the byte position and what was expected.
    #[command(
        after_help = "Example:\n  fedwall selector parse \"role=='db' && has(tier)\"\n  \
                            (role == \"db\" && has(tier))\n  s:…"
    )]
    Parse {
        /// The selector, e.g. "app == 'web' && env in {'prod', 'staging'}".
        selector: String,
    },
    /// Evaluate a selector against a set of labels: prints `true` or `false`.
    #[command(
        after_help = "Example:\n  fedwall selector match \"app == 'web'\" '{\"app\": \"web\"}'\n  true"
    )]
    Match {
        /// The selector.
        selector: String,
        /// The labels, as a JSON object of strings: '{"app": "web", "env": "prod"}'.
        labels: String,
    },
}

pub fn run(command: SelectorCommand) -> anyhow::Result<ExitCode> {
    match command {
        SelectorCommand::Parse { selector } => {
            let parsed = parse(&selector)?;
            println!("{}", parsed.canonical());
            println!("{}", parsed.unique_id());
        }
        SelectorCommand::Match { selector, labels } => {
            let parsed = parse(&selector)?;
            let labels = parse_labels(&labels)?;
            println!("{}", parsed.matches(&labels));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(text: &str) -> anyhow::Result<Selector> {
    Selector::parse(text).with_context(|| format!("selector {text:?}"))
}

fn parse_labels(json: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_str(json).with_context(|| {
        format!("labels {json:?} are not JSON; write them as '{{\"key\": \"value\"}}'")
    })?;
    let serde_json::Value::Object(object) = value else {
        bail!("labels must be a JSON object of strings, like '{{\"app\": \"web\"}}', not {json}");
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::String(value) => Ok((key, value)),
            other => {
                bail!("label {key:?} has the value {other}: label values are strings; quote it")
            }
        })
        .collect()
}
