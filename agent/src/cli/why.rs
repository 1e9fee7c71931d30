//! `fedwall why SOURCE DESTINATION`: would this node allow a flow's first packet, and which
//! policy rule (or default) decides at each local end. Replies and later packets of an
//! allowed flow pass on its conntrack entry.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

use super::{AgentSocket, DatastoreArg, OutputFormat};
use crate::calc::CalcConfig;
use crate::calc::why::{WhyReport, why};
use crate::daemon::{DebugRequest, DebugResponse, WhyRequest};
use crate::datastore::read_federated;
use crate::model::endpoint::protocol_number;
use fedwall_common::net::ip_proto;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    fedwall why 10.20.0.11 10.10.0.11 --port 8080\n  \
    fedwall why 10.10.0.41 198.51.100.10 --protocol udp --port 53\n  \
    fedwall why 10.10.0.41 10.10.1.11 --protocol icmp --icmp-type 8\n  \
    fedwall why 10.20.0.11 10.10.0.11 --port 8080 --datastore file:examples/cluster-a --node a-node-1\n\n\
    Each local end of the flow is judged by its own table: the source pod's egress, the \
    destination pod's ingress. An end that is not a pod of this node is not judged here \
    (its own node, or nothing, judges it). Exit status: 0 when allowed; 1 when denied, or on \
    an error (said on stderr).")]
pub struct WhyArgs {
    /// The flow's source address.
    source: IpAddr,
    /// The flow's destination address.
    destination: IpAddr,
    /// tcp, udp, sctp, udplite, icmp, icmpv6 or a protocol number.
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// Destination port (needed for tcp, udp, sctp and udplite).
    #[arg(long)]
    port: Option<u16>,
    /// Source port; rules rarely look at it.
    #[arg(long, default_value_t = 40000)]
    source_port: u16,
    /// ICMP type (icmp, icmpv6); default: echo request.
    #[arg(long)]
    icmp_type: Option<u8>,
    #[arg(long, default_value_t = 0)]
    icmp_code: u8,
    #[command(flatten)]
    agent: AgentSocket,
    /// Without a running agent (or with --no-agent): read this datastore instead (with
    /// --node).
    #[command(flatten)]
    datastore: DatastoreArg,
    /// Without a running agent: the node whose pods' tables judge the flow.
    #[arg(long, env = "FEDWALL_NODE_NAME")]
    node: Option<String>,
    #[arg(long, env = "FEDWALL_CLUSTER_NAME", default_value = "local")]
    cluster_name: String,
    #[arg(short, long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(args: WhyArgs) -> anyhow::Result<ExitCode> {
    let protocol = protocol_number(&args.protocol).with_context(|| {
        format!(
            "--protocol {:?}: use tcp, udp, sctp, udplite, icmp, icmpv6 or a number",
            args.protocol
        )
    })?;
    let has_ports = matches!(
        protocol,
        ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP | ip_proto::UDPLITE
    );
    let port = match (has_ports, args.port) {
        (true, None) => anyhow::bail!("--port is needed: {} flows have ports", args.protocol),
        (_, port) => port.unwrap_or_default(),
    };
    let request = WhyRequest {
        src: args.source,
        dst: args.destination,
        protocol,
        ports: has_ports.then_some((args.source_port, port)),
        icmp: match protocol {
            ip_proto::ICMP => Some((args.icmp_type.unwrap_or(8), args.icmp_code)),
            ip_proto::ICMPV6 => Some((args.icmp_type.unwrap_or(128), args.icmp_code)),
            _ => None,
        },
    };
    let report = match args.agent.ask(&DebugRequest::Why(request))? {
        Some(DebugResponse::Why(report)) => report,
        Some(other) => anyhow::bail!("the agent answered {other:?} to a why"),
        None => {
            let dir = args
                .datastore
                .file_dir()
                .with_context(|| args.agent.why_not())?;
            let node = args.node.clone().with_context(|| {
                format!(
                    "{}: to answer from --datastore, say which node's pods judge the flow \
                     with --node",
                    args.agent.why_not()
                )
            })?;
            let snapshot = read_federated(&dir)?;
            let config = CalcConfig {
                node,
                cluster_name: args.cluster_name.clone(),
            };
            let (calc, _) = super::eval::load(&snapshot, config);
            why(&calc, &request.flow())
        }
    };
    print(&report, args.output)?;
    Ok(if report.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print(report: &WhyReport, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(report)?),
        OutputFormat::Table => {
            println!(
                "{}: {}",
                report.flow,
                if report.allowed { "allowed" } else { "denied" }
            );
            println!("  source       {}", report.source);
            println!("  destination  {}", report.destination);
            if report.steps.is_empty() {
                println!("  neither end is a pod of this node: nothing here judges it");
            }
            for step in &report.steps {
                println!("  {} of {}: {}", step.direction, step.endpoint, step.reason);
                for logged in &step.logged {
                    println!("    logged by {logged}");
                }
            }
            if report.allowed && !report.steps.is_empty() {
                println!("  replies and later packets pass on the flow's conntrack entry");
            }
        }
    }
    Ok(())
}
