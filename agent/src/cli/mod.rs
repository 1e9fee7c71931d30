//! The `fedwall` command line: argument parsing and output only; the work happens in the
//! library's layers.

mod agent;
mod bpf;
mod eval;
mod manifests;
mod selector;
mod why;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// eBPF network-policy enforcement for Kubernetes, with federated endpoint identity:
/// policies in one cluster can select pods and hosts of other clusters by their labels.
#[derive(Debug, Parser)]
#[command(name = "fedwall", version, propagate_version = true)]
struct Cli {
    /// Log filter, in `tracing` env-filter syntax (also read from RUST_LOG).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent: enforce the datastore's policies on this node's pods, with
    /// NAT-outgoing on the uplinks (the DaemonSet's command).
    Agent(agent::AgentArgs),
    /// Inspect fedwall's pinned kernel state on this node (works while the agent is down).
    #[command(subcommand)]
    Bpf(bpf::BpfCommand),
    /// Parse selectors and evaluate them against labels (Calico's selector language).
    #[command(subcommand)]
    Selector(selector::SelectorCommand),
    /// List the endpoints, local and remote, that a selector matches (like calicoq eval).
    Eval(eval::EvalArgs),
    /// Say whether a flow would be allowed on this node, and which policy rule decides.
    Why(why::WhyArgs),
    /// Print the manifests that install fedwall (CRDs, RBAC, DaemonSet, remote access).
    Manifests(manifests::ManifestsArgs),
}

/// Where cluster data comes from.
#[derive(Debug, clap::Args)]
pub struct DatastoreArg {
    /// The datastore: `kubernetes`, this cluster's API server (in-cluster credentials, or
    /// --kubeconfig), or `file:DIR`, a directory of YAML manifests (Kubernetes object
    /// shapes). RemoteClusterConfigurations name the remote clusters either way.
    #[arg(long, env = "FEDWALL_DATASTORE", value_name = "kubernetes|file:DIR")]
    datastore: Option<String>,
    /// With `--datastore kubernetes`: a kubeconfig for this cluster's API server instead of
    /// the pod's service account (for running the agent outside a pod).
    #[arg(long, env = "FEDWALL_KUBECONFIG", value_name = "PATH")]
    kubeconfig: Option<std::path::PathBuf>,
}

/// A datastore, as `--datastore` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    File(std::path::PathBuf),
    Kubernetes {
        kubeconfig: Option<std::path::PathBuf>,
    },
}

impl DatastoreArg {
    pub fn datastore(&self) -> anyhow::Result<Datastore> {
        let Some(datastore) = &self.datastore else {
            anyhow::bail!(
                "no datastore: pass --datastore kubernetes or --datastore file:DIR (or set \
                 FEDWALL_DATASTORE)"
            );
        };
        let chosen = match datastore.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Datastore::File(dir.into()),
            None if datastore == "kubernetes" => Datastore::Kubernetes {
                kubeconfig: self.kubeconfig.clone(),
            },
            _ => anyhow::bail!(
                "--datastore {datastore:?} is not a datastore: use kubernetes or file:DIR"
            ),
        };
        if self.kubeconfig.is_some() && matches!(chosen, Datastore::File(_)) {
            anyhow::bail!("--kubeconfig goes with --datastore kubernetes, not {datastore}");
        }
        Ok(chosen)
    }

    /// The directory of a `file:` datastore, for the commands that read one themselves.
    pub fn file_dir(&self) -> anyhow::Result<std::path::PathBuf> {
        match self.datastore()? {
            Datastore::File(dir) => Ok(dir),
            Datastore::Kubernetes { .. } => anyhow::bail!(
                "this command reads the kubernetes datastore through the agent's socket \
                 (--socket): run it on a node where the agent runs, or pass --datastore file:DIR"
            ),
        }
    }
}

/// How the inspection commands reach the agent running on this node.
#[derive(Debug, clap::Args)]
pub struct AgentSocket {
    /// The agent's debug socket, asked first.
    #[arg(long, default_value = crate::paths::DEFAULT_SOCKET)]
    pub socket: std::path::PathBuf,
    /// Read --datastore even when an agent runs (to see what a change on disk would do
    /// before the agent picks it up, or without the root the socket needs).
    #[arg(long)]
    pub no_agent: bool,
}

impl AgentSocket {
    /// Asks the agent; `Ok(None)` with `--no-agent` or when no agent answers, an error when
    /// it answers with one.
    pub fn ask(
        &self,
        request: &crate::daemon::DebugRequest,
    ) -> anyhow::Result<Option<crate::daemon::DebugResponse>> {
        if self.no_agent {
            return Ok(None);
        }
        match crate::daemon::debug::ask(&self.socket, request)? {
            Some(crate::daemon::DebugResponse::Error(error)) => {
                anyhow::bail!("the agent on {}: {error}", self.socket.display())
            }
            Some(answer) => {
                eprintln!(
                    "(answered by the agent running on this node, {})",
                    self.socket.display()
                );
                Ok(Some(answer))
            }
            None => Ok(None),
        }
    }

    /// Why the command reads a datastore itself, for the error when none was given.
    pub fn why_not(&self) -> String {
        if self.no_agent {
            "with --no-agent the answer comes from --datastore".to_owned()
        } else {
            format!("no agent answers on {}", self.socket.display())
        }
    }
}

/// Output format of the inspection commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document, for scripts.
    Json,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let result = match cli.command {
        Command::Agent(args) => agent::run(args),
        Command::Bpf(command) => bpf::run(command),
        Command::Selector(command) => selector::run(command),
        Command::Eval(args) => eval::run(args),
        Command::Why(args) => why::run(args),
        Command::Manifests(args) => manifests::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fedwall: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
