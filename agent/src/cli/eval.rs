//! `fedwall eval '<selector>'`: which endpoints, local and remote, a selector matches — the
//! way calicoq prints it — and which remote clusters could not be read, since their
//! endpoints are then missing from the answer.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::{DatastoreArg, OutputFormat};
use crate::calc::{Calc, CalcConfig};
use crate::datastore::{FederatedSnapshot, Origin, Update, read_federated};
use crate::model::EndpointKind;
use crate::selector::Selector;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    fedwall eval \"app == 'client'\" --datastore file:examples/cluster-a\n  \
    fedwall eval \"fedwall.io/cluster == 'cluster-b'\" --datastore file:examples/cluster-a -o json\n\n\
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
}

/// A remote cluster (or local file) that could not be read in full.
struct ReadProblem {
    object: String,
    reason: String,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let selector =
        Selector::parse(&args.selector).with_context(|| format!("selector {:?}", args.selector))?;
    let dir = args.datastore.file_dir()?;
    let snapshot = read_federated(dir)?;
    let (calc, problems) = load(&snapshot, &args.cluster_name);

    let mut matches: Vec<_> = calc
        .endpoints()
        .filter(|(_, labels)| selector.matches(*labels))
        .map(|(ep, _)| ep)
        .collect();
    matches.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));

    match args.output {
        OutputFormat::Table => {
            println!("Endpoints matching selector {}:", selector.canonical());
            for ep in &matches {
                println!("  {} {}", ep.kind.title(), ep.name);
            }
            if !problems.is_empty() {
                eprintln!(
                    "The following problems were encountered connecting to the remote clusters \
                     which may have resulted in incomplete data:"
                );
                for problem in &problems {
                    eprintln!("- {}: {}", problem.object, problem.reason);
                }
            }
        }
        OutputFormat::Json => {
            let endpoints: Vec<serde_json::Value> = matches
                .iter()
                .map(|ep| {
                    serde_json::json!({
                        "kind": match ep.kind {
                            EndpointKind::Workload => "WorkloadEndpoint",
                            EndpointKind::Host => "HostEndpoint",
                        },
                        "name": ep.name,
                        "cluster": ep.cluster.name(),
                        "local": ep.cluster.is_local(),
                        "node": ep.node,
                        "addresses": ep.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let problems: Vec<serde_json::Value> = problems
                .iter()
                .map(|p| serde_json::json!({"object": p.object, "reason": p.reason}))
                .collect();
            let document = serde_json::json!({
                "selector": selector.canonical(),
                "endpoints": endpoints,
                "problems": problems,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Feeds a snapshot through calc (which builds endpoints exactly as the agent does) and
/// lists what could not be read.
fn load(snapshot: &FederatedSnapshot, cluster_name: &str) -> (Calc, Vec<ReadProblem>) {
    let mut calc = Calc::new(CalcConfig {
        node: String::new(),
        cluster_name: cluster_name.to_owned(),
    });
    let mut problems = Vec::new();
    for object in snapshot.local.objects.values() {
        calc.apply(&Update::Set {
            origin: Origin::Local,
            resource: object.resource.clone(),
        });
    }
    for problem in snapshot
        .local
        .problems
        .iter()
        .filter(|p| p.may_hide_objects())
    {
        problems.push(ReadProblem {
            object: "local datastore".into(),
            reason: problem.to_string(),
        });
    }
    let remotes: BTreeMap<_, _> = snapshot.remotes.iter().collect();
    for (name, remote) in remotes {
        let object = format!("RemoteClusterConfiguration({name})");
        if let Some(reason) = remote.state.problem() {
            problems.push(ReadProblem {
                object: object.clone(),
                reason: reason.to_owned(),
            });
        }
        if let Some(dir) = &remote.snapshot {
            for loaded in dir.objects.values() {
                calc.apply(&Update::Set {
                    origin: Origin::Remote(name.clone()),
                    resource: loaded.resource.clone(),
                });
            }
            for problem in dir.problems.iter().filter(|p| p.may_hide_objects()) {
                problems.push(ReadProblem {
                    object: object.clone(),
                    reason: problem.to_string(),
                });
            }
        }
    }
    // Endpoints that could not be built (a pod with a bad IP) are missing too.
    for problem in calc.problems() {
        problems.push(ReadProblem {
            object: match &problem.origin {
                Origin::Local => "local datastore".into(),
                Origin::Remote(name) => format!("RemoteClusterConfiguration({name})"),
            },
            reason: format!("{}: {}", problem.object, problem.message),
        });
    }
    (calc, problems)
}
