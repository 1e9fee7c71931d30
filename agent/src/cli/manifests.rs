//! `fedwall manifests`: prints, or writes, the manifests that install fedwall (deploy/).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::deploy::Manifest;

/// Print the manifests that install fedwall: CRDs, the agent's RBAC and DaemonSet, and the
/// read-only access a remote cluster grants.
///
/// The output is multi-document YAML for `kubectl apply -f -`, generated from fedwall's
/// Rust types: the same text as the files of deploy/ in fedwall's repository (a test keeps
/// them equal). Without --only, every file in turn.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Install on a cluster (CRDs first, so the agent finds its resources):
  fedwall manifests --only crds | kubectl apply -f -
  fedwall manifests --only agent | kubectl apply -f -
Let this cluster read a remote one (README: \"Connecting a remote cluster\"):
  fedwall manifests --only remote-access | kubectl --context REMOTE apply -f -
Regenerate deploy/ after changing the types (what `cargo xtask manifests` does):
  fedwall manifests --out-dir deploy")]
pub struct ManifestsArgs {
    /// Only this file of deploy/.
    #[arg(long, value_enum, value_name = "FILE")]
    only: Option<Manifest>,
    /// Write the files (crds.yaml, agent.yaml, remote-access.yaml) into DIR instead of
    /// printing them.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

pub fn run(args: ManifestsArgs) -> anyhow::Result<ExitCode> {
    let manifests = match args.only {
        Some(manifest) => vec![manifest],
        None => Manifest::ALL.to_vec(),
    };
    let mut printed = Vec::new();
    for manifest in manifests {
        let text = manifest
            .render()
            .with_context(|| format!("generating {}", manifest.file_name()))?;
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(manifest.file_name());
                std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => printed.push(text),
        }
    }
    print!("{}", printed.join("---\n"));
    Ok(ExitCode::SUCCESS)
}
