//! `fedwall eval '<selector>'`: which endpoints, local and remote, a selector matches — the
//! way calicoq prints it — and which remote clusters could not be read, since their
//! endpoints are then missing from the answer.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::{AgentSocket, DatastoreArg, OutputFormat};
use crate::calc::eval::{EvalReport, ReadProblem, eval};
use crate::calc::{Calc, CalcConfig};
use crate::daemon::{DebugRequest, DebugResponse};
use crate::datastore::{FederatedSnapshot, Origin, Update, read_federated};
use crate::selector::Selector;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    fedwall eval \"app == 'client'\" --datastore file:examples/cluster-a\n  \
    fedwall eval \"fedwall.io/cluster == 'cluster-b'\" --datastore file:examples/cluster-a -o json\n\n\
    When an agent runs on this node (it answers on --socket), the answer is the agent's exact \
    view; otherwise fedwall reads --datastore itself.\n\n\
    Exit status: 0 when every cluster was read; 1 when some data could not be read (the \
    problems are listed on stderr, and the matches shown may be incomplete) or the selector \
    or datastore is invalid (the error says which).")]
pub struct EvalArgs {
    /// The selector, in Calico's selector language (see `fedwall selector parse`).
    selector: String,
    #[command(flatten)]
    datastore: DatastoreArg,
    /// This cluster's name: the `fedwall.io/cluster` label of its endpoints.
    #[arg(long, env = "FEDWALL_CLUSTER_NAME", default_value = "local")]
    cluster_name: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    agent: AgentSocket,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let selector =
        Selector::parse(&args.selector).with_context(|| format!("selector {:?}", args.selector))?;
    let request = DebugRequest::Eval {
        selector: args.selector.clone(),
    };
    match args.agent.ask(&request)? {
        Some(DebugResponse::Eval(report)) => return finish(&report, args.output),
        Some(other) => anyhow::bail!("the agent answered {other:?} to an eval"),
        None => {}
    }
    let dir = args
        .datastore
        .file_dir()
        .with_context(|| args.agent.why_not())?;
    let snapshot = read_federated(&dir)?;
    let report = from_snapshot(&snapshot, &args.cluster_name, &selector);
    finish(&report, args.output)
}

/// Prints the report; the exit status says whether every cluster could be read.
fn finish(report: &EvalReport, output: OutputFormat) -> anyhow::Result<ExitCode> {
    print(report, output)?;
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints a report as calicoq does (or as JSON).
pub fn print(report: &EvalReport, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Table => {
            println!("Endpoints matching selector {}:", report.selector);
            for ep in &report.endpoints {
                println!("  {} {}", ep.title(), ep.name);
            }
            if !report.problems.is_empty() {
                eprintln!(
                    "The following problems were encountered connecting to the remote clusters \
                     which may have resulted in incomplete data:"
                );
                for problem in &report.problems {
                    eprintln!("- {}: {}", problem.object, problem.reason);
                }
            }
        }
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}

/// Feeds a snapshot through calc (which builds endpoints exactly as the agent does), then
/// asks it; documents that did not load are problems too.
fn from_snapshot(
    snapshot: &FederatedSnapshot,
    cluster_name: &str,
    selector: &Selector,
) -> EvalReport {
    let config = CalcConfig {
        node: String::new(),
        cluster_name: cluster_name.to_owned(),
    };
    let (calc, file_problems) = load(snapshot, config);
    let mut report = eval(&calc, selector);
    report.problems.extend(file_problems);
    report
}

/// Calc fed with a snapshot, as the agent would be, and the documents that did not load.
pub(super) fn load(snapshot: &FederatedSnapshot, config: CalcConfig) -> (Calc, Vec<ReadProblem>) {
    let mut calc = Calc::new(config);
    let mut file_problems = Vec::new();
    let mut feed = |origin: Origin, dir: &crate::datastore::DirSnapshot| {
        for object in dir.objects.values() {
            calc.apply(&Update::Set {
                origin: origin.clone(),
                resource: object.resource.clone(),
            });
        }
        file_problems.extend(
            dir.problems
                .iter()
                .filter(|p| p.may_hide_objects())
                .map(|p| ReadProblem {
                    object: ReadProblem::origin_name(&origin),
                    reason: p.to_string(),
                }),
        );
    };
    feed(Origin::Local, &snapshot.local);
    for (name, remote) in &snapshot.remotes {
        if let Some(dir) = &remote.snapshot {
            feed(Origin::Remote(name.clone()), dir);
        }
    }
    for (name, remote) in &snapshot.remotes {
        calc.apply(&Update::RemoteState {
            cluster: name.clone(),
            state: remote.state.clone(),
        });
    }
    calc.flush();
    (calc, file_problems)
}
