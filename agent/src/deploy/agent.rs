//! deploy/agent.yaml: the agent's namespace, ServiceAccount, RBAC and DaemonSet.

use std::net::SocketAddr;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
            HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
            ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding},
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString,
    },
};

use super::{
    AGENT, ManifestError, NAMESPACE, cluster_role_documents, crd, document, grant, meta,
    namespace_and_account, rule,
};
use crate::datastore::kube::{STATUS_LEASE, plural};
use crate::model::resources::Kind;
use crate::paths::{DEFAULT_LISTEN, DEFAULT_PIN_ROOT, DEFAULT_SOCKET};

/// The capabilities the agent's container keeps (every other one is dropped); the comment
/// above the DaemonSet says why each.
pub const CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

const CAPABILITIES_WHY: &str = "\
Capabilities: all dropped but (each checked by running the agent without it)
- BPF: load the TC programs, create, pin and update their maps (bpf(2));
- NET_ADMIN: TC programs are networking programs: loading them (EPERM without it) and
  attaching them (TCX links) needs it;
- PERFMON: the verifier rejects the programs without it (\"pointer -= pointer
  prohibited\": subtracting one pointer from another is for CAP_PERFMON holders).
Not needed: SYS_RESOURCE (since Linux 5.11 BPF memory is charged to the cgroup, not
RLIMIT_MEMLOCK; fedwall needs 6.6 for TCX), SYS_ADMIN, NET_RAW. Not privileged.
CAP_BPF and CAP_PERFMON need Linux 5.8 and a container runtime that knows their names.";

/// The pod's labels, which the DaemonSet selects it by.
fn pod_labels() -> std::collections::BTreeMap<String, String> {
    [("app.kubernetes.io/name".to_owned(), AGENT.to_owned())].into()
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.map(str::to_owned).to_vec()
}

pub(super) fn documents() -> Result<Vec<String>, ManifestError> {
    const READ: &[&str] = &["get", "list", "watch"];
    // Every kind the agent reads, one rule per API group.
    let mut read_rules: Vec<PolicyRule> = Vec::new();
    for kind in Kind::ALL {
        let (api_version, _) = kind.type_meta();
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        match read_rules
            .iter_mut()
            .find(|rule| rule.api_groups.as_deref() == Some(&[group.to_owned()]))
        {
            Some(rule) => rule
                .resources
                .get_or_insert_with(Vec::new)
                .push(plural(kind).to_owned()),
            None => read_rules.push(rule(group, vec![plural(kind).to_owned()], READ)),
        }
    }
    let cluster_rules: Vec<PolicyRule> = read_rules
        .into_iter()
        .chain([rule(
            crd::GROUP,
            strings(["remoteclusterconfigurations/status"]),
            &["get", "update", "patch"],
        )])
        .collect();
    let role = Role {
        metadata: meta(AGENT, Some(NAMESPACE)),
        rules: Some(vec![
            rule("", strings(["secrets"]), READ),
            // `create` cannot be limited to a name: the name is not known before it exists.
            rule("coordination.k8s.io", strings(["leases"]), &["create"]),
            PolicyRule {
                resource_names: Some(vec![STATUS_LEASE.to_owned()]),
                ..rule(
                    "coordination.k8s.io",
                    strings(["leases"]),
                    &["get", "update"],
                )
            },
        ]),
    };
    let (role_ref, subjects) = grant("Role", AGENT, AGENT);
    let role_binding = RoleBinding {
        metadata: meta(AGENT, Some(NAMESPACE)),
        role_ref,
        subjects,
    };
    let mut documents = namespace_and_account(AGENT)?;
    documents.extend(cluster_role_documents(
        AGENT,
        cluster_rules,
        "What the agent reads everywhere: endpoint data and policy, and the status of the\n\
         RemoteClusterConfigurations (written by the agent holding the Lease).",
    )?);
    documents.extend([
        document(
            &format!(
                "Secrets only in {NAMESPACE}: the kubeconfig Secrets RemoteClusterConfigurations\n\
                 name live here (one like this Role in any other namespace holding such Secrets).\n\
                 The Lease {STATUS_LEASE} elects the one agent that writes RCC status."
            ),
            "Role",
            &role,
        )?,
        document("", "RoleBinding", &role_binding)?,
        document(&daemon_set_why(), "DaemonSet", &daemon_set())?,
    ]);
    Ok(documents)
}

fn daemon_set_why() -> String {
    format!(
        "The agent on every node.\n\
         - hostNetwork: it programs the node's own interfaces; ClusterFirstWithHostNet keeps\n  \
         cluster DNS.\n\
         - /sys/fs/bpf: the node's bpffs (systemd mounts it), where maps and links stay\n  \
         pinned across restarts and upgrades, so enforcement never stops; HostToContainer\n  \
         propagation sees a bpffs mounted after the pod started (Bidirectional would need a\n  \
         privileged container).\n\
         - /run/fedwall: the debug socket `fedwall eval` / `fedwall why` on the node ask.\n\
         - Probes: the agent serves HTTP on {DEFAULT_LISTEN} (its default: /metrics stays off\n  \
         the network). The kubelet runs in the host's network namespace, which a hostNetwork\n  \
         pod shares, so it reaches 127.0.0.1 when the probe names that host; no --listen\n  \
         0.0.0.0 and no exec probe (which would need a client in the image) are needed.\n\
         - Tolerates every taint: pods on any node, ready or not, need their policy.\n\
         {CAPABILITIES_WHY}\n\
         Set FEDWALL_CLUSTER_NAME to this cluster's name: rules select its endpoints with\n\
         fedwall.io/cluster == '<name>', and remote clusters call it by that name."
    )
}

fn daemon_set() -> DaemonSet {
    let listen: SocketAddr = DEFAULT_LISTEN
        .parse()
        .expect("DEFAULT_LISTEN is an address and port");
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            host: Some(listen.ip().to_string()),
            path: Some(path.to_owned()),
            port: IntOrString::Int(listen.port().into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let env_from_field = |name: &str, field_path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    };
    let socket_dir = std::path::Path::new(DEFAULT_SOCKET)
        .parent()
        .and_then(std::path::Path::to_str)
        .unwrap_or(DEFAULT_SOCKET);
    let bpffs = std::path::Path::new(DEFAULT_PIN_ROOT)
        .parent()
        .and_then(std::path::Path::to_str)
        .unwrap_or(DEFAULT_PIN_ROOT);
    let host_path = |name: &str, path: &str, type_: &str| Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: Some(type_.to_owned()),
        }),
        ..Volume::default()
    };
    let container = Container {
        name: "agent".to_owned(),
        image: Some(super::image()),
        // The in-cluster configuration: no --kubeconfig.
        command: Some(strings(["fedwall", "agent", "--datastore", "kubernetes"])),
        env: Some(vec![
            env_from_field("FEDWALL_NODE_NAME", "spec.nodeName"),
            env_from_field("FEDWALL_NAMESPACE", "metadata.namespace"),
            EnvVar {
                name: "FEDWALL_CLUSTER_NAME".to_owned(),
                value: Some("local".to_owned()),
                value_from: None,
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: listen.port().into(),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        resources: Some(ResourceRequirements {
            // Measured: about 280 MiB with 100,000 remote endpoints (README, agent
            // benchmark). No limits: an OOM-killed agent stops following changes.
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity("100m".to_owned())),
                    ("memory".to_owned(), Quantity("256Mi".to_owned())),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            // Capabilities are a root process's: a non-root user would need ambient ones.
            run_as_user: Some(0),
            capabilities: Some(Capabilities {
                add: Some(CAPABILITIES.map(str::to_owned).to_vec()),
                drop: Some(strings(["ALL"])),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "bpffs".to_owned(),
                mount_path: bpffs.to_owned(),
                mount_propagation: Some("HostToContainer".to_owned()),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "run".to_owned(),
                mount_path: socket_dir.to_owned(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    DaemonSet {
        metadata: meta(AGENT, Some(NAMESPACE)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(pod_labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    labels: Some(pod_labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(AGENT.to_owned()),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
                    priority_class_name: Some("system-node-critical".to_owned()),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".to_owned()),
                        ..Toleration::default()
                    }]),
                    containers: vec![container],
                    volumes: Some(vec![
                        host_path("bpffs", bpffs, "Directory"),
                        host_path("run", socket_dir, "DirectoryOrCreate"),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}
