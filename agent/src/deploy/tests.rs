//! The manifests' shape: structural CRD schemas that say what serde reads, examples/ valid
//! against them, and the RBAC and DaemonSet the design asks for.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    rbac::v1::{ClusterRole, PolicyRule, Role},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::{Value, json};

use super::{Manifest, crd};
use crate::datastore::kube::plural;
use crate::model::resources::{
    EntityRule, FEDWALL_API_VERSION, IcmpFields, IntOrString, Kind, ObjectMeta,
    PolicyRule as FedwallRule, PolicySpec, RemoteClusterConfiguration, RemoteClusterSpec,
    RemoteClusterStatus, SecretReference, ServiceAccountMatch,
};

/// The keys a v1.20 API server's JSONSchemaProps knows that fedwall's schemas may use.
const SCHEMA_KEYS: [&str; 12] = [
    "type",
    "format",
    "description",
    "title",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "nullable",
    "minimum",
    "maximum",
    "x-kubernetes-int-or-string",
];

/// Why `schema` (at `path`) is not a structural schema fedwall can ship, if it is not.
fn structural_problems(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        problems.push(format!("{path}: not an object schema"));
        return;
    };
    for key in object.keys() {
        if !SCHEMA_KEYS.contains(&key.as_str()) {
            problems.push(format!("{path}: key {key:?} ($ref, anyOf, default…)"));
        }
    }
    let int_or_string = object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if !int_or_string && !object.get("type").is_some_and(Value::is_string) {
        problems.push(format!("{path}: no single type"));
    }
    if object.contains_key("properties") && object.contains_key("additionalProperties") {
        problems.push(format!("{path}: properties and additionalProperties"));
    }
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            structural_problems(property, &format!("{path}.{name}"), problems);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(subschema) = object.get(key) {
            structural_problems(subschema, &format!("{path}[{key}]"), problems);
        }
    }
}

/// Why `value` does not validate against `schema` the way the API server would check it,
/// counting a field the schema lacks as a problem: the server would prune it silently.
fn validation_problems(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let mut problem = |what: String| problems.push(format!("{path}: {what}"));
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            problem("null, and the schema is not nullable".into());
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            problem(format!("{value} is neither an integer nor a string"));
        }
        return;
    }
    let type_ = schema.get("type").and_then(Value::as_str).unwrap_or("?");
    let matches = match type_ {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => false,
    };
    if !matches {
        problem(format!("{value} is not of type {type_}"));
        return;
    }
    if let Some(items) = value.as_array() {
        for (index, item) in items.iter().enumerate() {
            validation_problems(
                &schema["items"],
                item,
                &format!("{path}[{index}]"),
                problems,
            );
        }
    }
    if let Some(fields) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap_or_default();
            if !fields.contains_key(required) {
                problems.push(format!("{path}: {required} is required"));
            }
        }
        for (name, field) in fields {
            let path = format!("{path}.{name}");
            match schema["properties"].get(name) {
                Some(property) => validation_problems(property, field, &path, problems),
                None => problems.push(format!("{path}: not in the schema (pruned)")),
            }
        }
    }
}

/// A manifest's problems against its kind's schema (without apiVersion, kind, metadata,
/// which the API server checks itself).
fn manifest_problems(kind: Kind, manifest: &Value) -> Vec<String> {
    let schema = crd::schema_for(kind).expect("a fedwall kind");
    let mut body = manifest.clone();
    if let Some(fields) = body.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            fields.remove(key);
        }
    }
    let mut problems = Vec::new();
    validation_problems(&schema, &body, kind.type_meta().1, &mut problems);
    problems
}

fn crds() -> Vec<CustomResourceDefinition> {
    crd::custom_resource_definitions().expect("the CRDs generate")
}

/// A CRD's (only) schema, as JSON.
fn schema_in(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("a schema");
    serde_json::to_value(schema).expect("a schema serializes")
}

/// Every key path in a JSON value (`a.b[].c`).
fn key_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                let path = format!("{prefix}.{key}");
                key_paths(field, &path, paths);
                paths.insert(path);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), paths);
            }
        }
        _ => {}
    }
}

#[test]
fn every_fedwall_kind_has_a_crd_with_its_scope_and_names() {
    let crds = crds();
    let kinds: Vec<&str> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    let expected: Vec<&str> = Kind::ALL
        .into_iter()
        .filter(|kind| kind.type_meta().0 == FEDWALL_API_VERSION)
        .map(|kind| kind.type_meta().1)
        .collect();
    assert_eq!(kinds, expected);
    for (crd, kind) in crds.iter().zip(crd::fedwall_kinds()) {
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{}.fedwall.io", plural(kind)).as_str())
        );
        let scope = if kind.is_namespaced() {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(crd.spec.scope, scope, "{kind}");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in crds() {
        let schema = schema_in(&crd);
        let mut problems = Vec::new();
        structural_problems(&schema, &crd.spec.names.kind, &mut problems);
        assert_eq!(problems, Vec::<String>::new(), "{}", crd.spec.names.kind);
        assert_eq!(schema["type"], "object");
        assert!(
            schema["properties"].get("metadata").is_none(),
            "the API server's own metadata schema applies"
        );
    }
}

#[test]
fn the_structural_check_finds_refs_untyped_and_unknown_keys() {
    let schema = json!({"type": "object", "properties": {
        "a": {"$ref": "#/definitions/A"},
        "b": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "c": {"type": "string", "default": ""},
    }});
    let mut problems = Vec::new();
    structural_problems(&schema, "X", &mut problems);
    assert_eq!(
        problems,
        [
            "X.a: key \"$ref\" ($ref, anyOf, default…)",
            "X.a: no single type",
            "X.b: key \"anyOf\" ($ref, anyOf, default…)",
            "X.b: no single type",
            "X.c: key \"default\" ($ref, anyOf, default…)",
        ]
    );
}

#[test]
fn converting_to_the_crd_type_loses_no_schema_key() {
    for kind in crd::fedwall_kinds() {
        let schema = crd::schema_for(kind).expect("a fedwall kind");
        let props: JSONSchemaProps = serde_json::from_value(schema.clone()).expect("converts");
        let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
        key_paths(&schema, "", &mut before);
        key_paths(
            &serde_json::to_value(props).expect("serializes"),
            "",
            &mut after,
        );
        assert_eq!(before, after, "{kind}");
    }
}

#[test]
fn the_schema_keeps_serde_names_and_kubernetes_conventions() {
    let schema = crd::schema_for(Kind::NetworkPolicy).expect("a fedwall kind");
    let spec = &schema["properties"]["spec"]["properties"];
    let rule = &spec["ingress"]["items"];
    assert_eq!(rule["required"], json!(["action"]));
    for renamed in ["notICMP", "ipVersion", "notProtocol"] {
        assert!(rule["properties"].get(renamed).is_some(), "{renamed}");
    }
    assert!(
        rule["properties"]["icmp"]["properties"]
            .get("type")
            .is_some()
    );
    // IntOrString: Kubernetes' marker; nullable where it is an Option, as every Option is.
    assert_eq!(
        rule["properties"]["protocol"],
        json!({"x-kubernetes-int-or-string": true, "nullable": true})
    );
    assert_eq!(
        rule["properties"]["source"]["properties"]["ports"]["items"],
        json!({"x-kubernetes-int-or-string": true})
    );
    assert_eq!(spec["order"]["nullable"], true);
    assert_eq!(spec["order"]["type"], "number");
    assert_eq!(spec["types"]["type"], "array");
    let endpoint = crd::schema_for(Kind::HostEndpoint).expect("a fedwall kind");
    assert!(
        endpoint["properties"]["spec"]["properties"]
            .get("expectedIPs")
            .is_some()
    );
    let rcc = crd::schema_for(Kind::RemoteClusterConfiguration).expect("a fedwall kind");
    let rcc_spec = &rcc["properties"]["spec"]["properties"];
    assert!(rcc_spec.get("staleDataTTL").is_some());
    assert_eq!(rcc_spec["clusterAccessSecret"]["required"], json!(["name"]));
    // An unsigned count: the minimum says so, the unknown `uint64` format is gone.
    let endpoints = &rcc["properties"]["status"]["properties"]["endpoints"];
    assert_eq!(
        endpoints,
        &json!({"type": "integer", "minimum": 0,
        "description": endpoints["description"]})
    );
}

#[test]
fn only_kinds_with_a_status_have_the_status_subresource() {
    for crd in crds() {
        let version = &crd.spec.versions[0];
        let has_status = version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some());
        assert_eq!(
            has_status,
            crd.spec.names.kind == "RemoteClusterConfiguration",
            "{}",
            crd.spec.names.kind
        );
    }
}

#[test]
fn printer_columns_name_schema_fields_of_their_type() {
    for crd in crds() {
        let version = &crd.spec.versions[0];
        let schema = schema_in(&crd);
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert_eq!(columns.last().map(|c| c.name.as_str()), Some("Age"));
        for column in &columns[..columns.len() - 1] {
            let pointer: String = column
                .json_path
                .split('.')
                .skip(1)
                .map(|field| format!("/properties/{field}"))
                .collect();
            let field = schema.pointer(&pointer).unwrap_or_else(|| {
                panic!(
                    "{}: column {} names {}",
                    crd.spec.names.kind, column.name, column.json_path
                )
            });
            assert_eq!(field["type"], column.type_, "{}", column.json_path);
        }
    }
    let names = |kind: &str| -> Vec<String> {
        crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .and_then(|crd| crd.spec.versions[0].additional_printer_columns.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|column| column.name)
            .collect()
    };
    assert_eq!(names("IPPool"), ["CIDR", "NATOutgoing", "Disabled", "Age"]);
    assert_eq!(
        names("RemoteClusterConfiguration"),
        ["DatastoreType", "State", "Endpoints", "Age"]
    );
    assert_eq!(names("NetworkPolicy"), ["Order", "Selector", "Age"]);
    assert_eq!(names("GlobalNetworkPolicy"), ["Order", "Selector", "Age"]);
}

/// Every fedwall.io document of examples/, with its file.
fn example_manifests() -> Vec<(String, Kind, Value)> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut manifests = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .expect("examples/ is there")
        .flat_map(|dir| {
            std::fs::read_dir(dir.expect("an entry").path())
                .into_iter()
                .flatten()
        })
        .map(|file| file.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let yaml = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
                .expect("examples are YAML");
            let value = serde_json::to_value(yaml).expect("YAML as JSON");
            let (Some(api_version), Some(kind)) =
                (value["apiVersion"].as_str(), value["kind"].as_str())
            else {
                continue;
            };
            if let Some(kind) = Kind::from_type_meta(api_version, kind)
                .filter(|kind| kind.type_meta().0 == FEDWALL_API_VERSION)
            {
                manifests.push((file.display().to_string(), kind, value.clone()));
            }
        }
    }
    manifests
}

#[test]
fn every_example_validates_against_its_crd_and_loses_no_field() {
    let manifests = example_manifests();
    let kinds: BTreeSet<Kind> = manifests.iter().map(|(_, kind, _)| *kind).collect();
    assert_eq!(
        kinds.len(),
        5,
        "the examples have every fedwall kind: {kinds:?}"
    );
    for (file, kind, manifest) in &manifests {
        assert_eq!(
            manifest_problems(*kind, manifest),
            Vec::<String>::new(),
            "{file}: {}",
            manifest["metadata"]["name"]
        );
    }
}

#[test]
fn the_schema_rejects_wrong_types_and_missing_required_fields() {
    let pool = json!({"spec": {"cidr": "10.0.0.0/16", "natOutgoing": "yes"}});
    assert_eq!(
        manifest_problems(Kind::IpPool, &pool),
        ["IPPool.spec.natOutgoing: \"yes\" is not of type boolean"]
    );
    let policy = json!({"spec": {"ingress": [{"protocol": 6.5}]}});
    assert_eq!(
        manifest_problems(Kind::NetworkPolicy, &policy),
        [
            "NetworkPolicy.spec.ingress[0]: action is required",
            "NetworkPolicy.spec.ingress[0].protocol: 6.5 is neither an integer nor a string",
        ]
    );
}

/// Every serialized field of a fully set object is in the schema: serde and the schema
/// agree on names, so the API server prunes nothing fedwall reads.
#[test]
fn a_fully_set_object_validates_with_every_field_known() {
    let entity = EntityRule {
        selector: Some("app == 'client'".into()),
        not_selector: Some("tier == 'x'".into()),
        namespace_selector: Some("all()".into()),
        nets: vec!["10.0.0.0/8".into()],
        not_nets: vec!["10.1.0.0/16".into()],
        ports: vec![IntOrString::Int(80), IntOrString::String("http".into())],
        not_ports: vec![IntOrString::String("8000:8080".into())],
        service_accounts: Some(ServiceAccountMatch {
            names: vec!["frontend".into()],
            selector: Some("role == 'x'".into()),
        }),
    };
    let icmp = IcmpFields {
        icmp_type: Some(8),
        code: Some(0),
    };
    let rule = FedwallRule {
        action: "Allow".into(),
        protocol: Some(IntOrString::String("TCP".into())),
        not_protocol: Some(IntOrString::Int(17)),
        icmp: Some(icmp.clone()),
        not_icmp: Some(icmp),
        ip_version: Some(4),
        source: entity.clone(),
        destination: entity,
    };
    let policy = crate::model::resources::NetworkPolicy {
        metadata: ObjectMeta::default(),
        spec: PolicySpec {
            order: Some(100.5),
            selector: Some("all()".into()),
            namespace_selector: Some("all()".into()),
            service_account_selector: Some("all()".into()),
            types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: vec![rule.clone()],
            egress: vec![rule],
        },
    };
    let rcc = RemoteClusterConfiguration {
        metadata: ObjectMeta::default(),
        spec: RemoteClusterSpec {
            datastore_type: Some("kubernetes".into()),
            path: Some("../b".into()),
            cluster_access_secret: Some(Box::new(SecretReference {
                name: "b".into(),
                namespace: Some("fedwall-system".into()),
                kind: Some("Secret".into()),
            })),
            kubeconfig: Some("/etc/b".into()),
            kubeconfig_inline: Some("apiVersion: v1".into()),
            stale_data_ttl: Some("10m".into()),
        },
        status: Some(Box::new(RemoteClusterStatus {
            state: "InSync".into(),
            message: "ok".into(),
            endpoints: 3,
            last_sync_time: Some("2024-01-01T00:00:00Z".into()),
            reporter: Some("node-1".into()),
        })),
    };
    for (kind, value) in [
        (Kind::NetworkPolicy, serde_json::to_value(&policy)),
        (Kind::RemoteClusterConfiguration, serde_json::to_value(&rcc)),
    ] {
        let value = value.expect("serializes");
        assert_eq!(manifest_problems(kind, &value), Vec::<String>::new());
    }
}

/// The documents of a rendered manifest whose `kind` is `kind`.
fn documents_of<T: serde::de::DeserializeOwned>(manifest: Manifest, kind: &str) -> Vec<T> {
    let text = manifest.render().expect("renders");
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|document| {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document).ok()?;
            (value.get("kind")?.as_str()? == kind)
                .then(|| serde_yaml::from_value(value).unwrap_or_else(|e| panic!("a {kind}: {e}")))
        })
        .collect()
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        rule.api_groups.iter().flatten().any(|g| g == group)
            && rule.resources.iter().flatten().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

/// The rules of a manifest's only ClusterRole.
fn cluster_role_rules(manifest: Manifest) -> Vec<PolicyRule> {
    let [cluster_role]: [ClusterRole; 1] = documents_of(manifest, "ClusterRole")
        .try_into()
        .expect("one ClusterRole");
    cluster_role.rules.unwrap_or_default()
}

#[test]
fn the_agent_reads_everywhere_but_secrets_only_in_its_namespace() {
    let rules = cluster_role_rules(Manifest::Agent);
    for resource in ["pods", "namespaces", "serviceaccounts", "nodes"] {
        assert!(grants(&rules, "", resource, "watch"), "{resource}");
    }
    assert!(grants(
        &rules,
        "networking.k8s.io",
        "networkpolicies",
        "list"
    ));
    for kind in crd::fedwall_kinds() {
        assert!(
            grants(&rules, "fedwall.io", plural(kind), "watch"),
            "{kind}"
        );
    }
    assert!(grants(
        &rules,
        "fedwall.io",
        "remoteclusterconfigurations/status",
        "patch"
    ));
    assert!(!grants(
        &rules,
        "fedwall.io",
        "remoteclusterconfigurations",
        "update"
    ));
    assert!(
        !grants(&rules, "", "secrets", "get"),
        "no cluster-wide secrets"
    );
    let [role]: [Role; 1] = documents_of(Manifest::Agent, "Role")
        .try_into()
        .expect("one Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(super::NAMESPACE));
    let rules = role.rules.unwrap_or_default();
    assert!(grants(&rules, "", "secrets", "get"));
    assert!(grants(&rules, "coordination.k8s.io", "leases", "create"));
    assert!(grants(&rules, "coordination.k8s.io", "leases", "update"));
}

#[test]
fn the_remote_reader_reads_endpoint_data_only() {
    let rules = cluster_role_rules(Manifest::RemoteAccess);
    let mut granted = BTreeSet::new();
    for rule in &rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert(format!("{group}/{resource}:{verb}"));
                }
            }
        }
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
    }
    let expected: BTreeSet<String> = ["pods", "namespaces", "serviceaccounts", "nodes"]
        .iter()
        .flat_map(|r| ["get", "list", "watch"].map(|v| format!("/{r}:{v}")))
        .collect();
    assert_eq!(granted, expected);
}

#[test]
fn the_daemon_set_runs_on_every_node_with_host_network_and_few_capabilities() {
    let [daemon_set]: [DaemonSet; 1] = documents_of(Manifest::Agent, "DaemonSet")
        .try_into()
        .expect("one DaemonSet");
    let pod = daemon_set
        .spec
        .and_then(|spec| spec.template.spec)
        .expect("a pod template");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.service_account_name.as_deref(), Some(super::AGENT));
    let tolerations = pod.tolerations.unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint: {tolerations:?}"
    );
    let [container]: [_; 1] = pod.containers.try_into().expect("one container");
    assert_eq!(
        container.command.unwrap_or_default(),
        ["fedwall", "agent", "--datastore", "kubernetes"]
    );
    assert_eq!(container.image, Some(super::image()));
    let env: Vec<(String, Option<String>, Option<String>)> = container
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|var| {
            let field = var
                .value_from
                .and_then(|from| from.field_ref)
                .map(|field| field.field_path);
            (var.name, var.value, field)
        })
        .collect();
    assert_eq!(
        env,
        [
            (
                "FEDWALL_NODE_NAME".into(),
                None,
                Some("spec.nodeName".into())
            ),
            (
                "FEDWALL_NAMESPACE".into(),
                None,
                Some("metadata.namespace".into())
            ),
            ("FEDWALL_CLUSTER_NAME".into(), Some("local".into()), None),
        ]
    );
    let security = container.security_context.expect("a security context");
    assert_eq!(security.privileged, Some(false));
    let capabilities = security.capabilities.expect("capabilities");
    assert_eq!(capabilities.drop.unwrap_or_default(), ["ALL"]);
    assert_eq!(
        capabilities.add.unwrap_or_default(),
        super::agent::CAPABILITIES
    );
    // The probes reach the agent's default --listen, on loopback.
    for (probe, path) in [
        (container.liveness_probe, "/healthz"),
        (container.readiness_probe, "/readyz"),
    ] {
        let get = probe.and_then(|p| p.http_get).expect("an HTTP probe");
        let address = format!(
            "{}:{}",
            get.host.unwrap_or_default(),
            serde_json::to_string(&get.port).unwrap_or_default()
        );
        assert_eq!(address, crate::paths::DEFAULT_LISTEN);
        assert_eq!(get.path.as_deref(), Some(path));
    }
    let mounts: Vec<(String, String)> = container
        .volume_mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.name, m.mount_path))
        .collect();
    let host_paths: Vec<(String, String)> = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name, v.host_path.map(|h| h.path).unwrap_or_default()))
        .collect();
    let expected = [
        ("bpffs".to_owned(), "/sys/fs/bpf".to_owned()),
        ("run".to_owned(), "/run/fedwall".to_owned()),
    ];
    assert_eq!(mounts, expected);
    assert_eq!(host_paths, expected);
    assert!(crate::paths::DEFAULT_PIN_ROOT.starts_with("/sys/fs/bpf/"));
    assert!(crate::paths::DEFAULT_SOCKET.starts_with("/run/fedwall/"));
}

#[test]
fn every_manifest_starts_with_how_to_regenerate_it() {
    for manifest in Manifest::ALL {
        let text = manifest.render().expect("renders");
        assert!(
            text.starts_with(&format!("# deploy/{}: generated by", manifest.file_name())),
            "{text}"
        );
        assert!(text.contains("cargo xtask manifests"));
    }
}
