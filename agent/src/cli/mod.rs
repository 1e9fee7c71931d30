//! The `fedwall` command line: argument parsing and output only; the work happens in the
//! library's layers.

mod agent;
mod bpf;
mod eval;
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
}

/// Where cluster data comes from.
#[derive(Debug, clap::Args)]
pub struct DatastoreArg {
    /// The datastore: `file:DIR`, a directory of YAML manifests (Kubernetes object shapes;
    /// RemoteClusterConfigurations with `datastoreType: file` name remote directories).
    #[arg(long, env = "FEDWALL_DATASTORE", value_name = "file:DIR")]
    datastore: Option<String>,
}

impl DatastoreArg {
    /// The directory of a `file:` datastore.
    pub fn file_dir(&self) -> anyhow::Result<&std::path::Path> {
        let Some(datastore) = &self.datastore else {
            anyhow::bail!("no datastore: pass --datastore file:DIR (or set FEDWALL_DATASTORE)");
        };
        match datastore.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Ok(std::path::Path::new(dir)),
            _ => anyhow::bail!(
                "--datastore {datastore:?} is not supported: use file:DIR (the kubernetes \
                 datastore comes with the agent's Kubernetes support)"
            ),
        }
    }
}

/// Asks the agent on `socket`; `Ok(None)` when no agent answers there, an error when it
/// answers with one.
pub fn ask_agent(
    socket: &std::path::Path,
    request: &crate::daemon::DebugRequest,
) -> anyhow::Result<Option<crate::daemon::DebugResponse>> {
    match crate::daemon::debug::ask(socket, request)? {
        Some(crate::daemon::DebugResponse::Error(error)) => {
            anyhow::bail!("the agent on {}: {error}", socket.display())
        }
        answer => Ok(answer),
    }
}

/// Says on stderr that the answer comes from the running agent.
pub fn note_agent(socket: &std::path::Path) {
    eprintln!(
        "(answered by the agent running on this node, {})",
        socket.display()
    );
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
