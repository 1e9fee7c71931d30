//! T3: deploy/ against a real v1.20.2 API server. The CRDs are established and their
//! schemas admit the examples unchanged (nothing pruned), reject wrong types, and keep
//! status behind its subresource; the agent's RBAC reads everything it needs and secrets
//! only in fedwall-system; the remote reader reads endpoint data and nothing else.

use std::path::Path;
use std::time::{Duration, Instant};

use fedwall::datastore::kube::plural;
use fedwall::deploy::{AGENT, Manifest, NAMESPACE, REMOTE_READER_TOKEN};
use fedwall::model::resources::{FEDWALL_API_VERSION, Kind, Resource};
use fedwall_tests::{
    kube::{Cluster, RunningPod, apply_yaml, block_on},
    require_root,
};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    coordination::v1::Lease,
    core::v1::{Namespace, Node, Pod, Secret, ServiceAccount},
    networking::v1::NetworkPolicy as K8sNetworkPolicy,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};

/// A file of deploy/, as shipped.
fn shipped(manifest: Manifest) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(manifest.file_name());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The dynamic API of a fedwall.io kind.
fn fedwall_api(client: &Client, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let (_, kind_name) = kind.type_meta();
    let gvk = GroupVersionKind::gvk("fedwall.io", "v1alpha1", kind_name);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural(kind));
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The HTTP status the API server refused with; panics if it did not refuse.
fn refused_with<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

fn allowed<T>(what: &str, result: Result<T, kube::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Lists what fedwall federates, cluster-wide, as `client`; returns the pods' names.
fn lists_endpoint_data(client: &Client) -> Vec<String> {
    let list = ListParams::default();
    allowed(
        "list namespaces",
        block_on(Api::<Namespace>::all(client.clone()).list(&list)),
    );
    allowed(
        "list serviceaccounts",
        block_on(Api::<ServiceAccount>::all(client.clone()).list(&list)),
    );
    allowed(
        "list nodes",
        block_on(Api::<Node>::all(client.clone()).list(&list)),
    );
    let pods = allowed(
        "list pods",
        block_on(Api::<Pod>::all(client.clone()).list(&list)),
    );
    pods.items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .collect()
}

/// Applies deploy/crds.yaml and waits until every CRD says Established.
fn install_crds(cluster: &Cluster) {
    let applied = apply_yaml(&cluster.client(), &shipped(Manifest::Crds), |_| true);
    assert_eq!(applied.len(), 5, "five CRDs");
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let deadline = Instant::now() + Duration::from_secs(30);
    for crd in applied {
        let name = crd.metadata.name.expect("a CRD's name");
        loop {
            let status = allowed(&name, block_on(crds.get(&name))).status;
            let established = status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "{name} not Established in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The fedwall.io documents of examples/cluster-a, as YAML values.
fn cluster_a_examples() -> Vec<serde_yaml::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster-a");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/cluster-a")
        .map(|entry| entry.expect("an entry").path())
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable example");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(document).expect("YAML");
            if value.get("apiVersion").and_then(serde_yaml::Value::as_str)
                == Some(FEDWALL_API_VERSION)
            {
                documents.push(value);
            }
        }
    }
    documents
}

/// `GET path` as a server-side Table, the way kubectl gets printer columns.
fn table(client: &Client, path: &str) -> Value {
    let request = http::Request::get(path)
        .header(
            http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )
        .body(Vec::new())
        .expect("a Table request");
    allowed(path, block_on(client.request::<Value>(request)))
}

/// The row of object `name` in a Table, by column name.
fn row(table: &Value, name: &str) -> serde_json::Map<String, Value> {
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|column| column["name"].as_str())
        .collect();
    let cells = table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row["cells"].as_array().expect("cells"))
        .find(|cells| cells.first() == Some(&json!(name)))
        .unwrap_or_else(|| panic!("no row {name} in {table}"));
    columns
        .iter()
        .map(|column| (*column).to_owned())
        .zip(cells.iter().cloned())
        .collect()
}

#[test]
fn the_crds_establish_admit_the_examples_unchanged_and_reject_wrong_types() {
    require_root!();
    let cluster = Cluster::start("manifests-crds");
    install_crds(&cluster);
    cluster.create_namespace("shop", &[]);
    let client = cluster.client();

    // Every fedwall.io object of the examples is stored as written (a field missing from a
    // schema would be pruned), and fedwall reads the stored object as it reads the file.
    let examples = cluster_a_examples();
    let kinds: std::collections::BTreeSet<_> = examples
        .iter()
        .filter_map(|e| e.get("kind").and_then(serde_yaml::Value::as_str))
        .collect();
    assert_eq!(
        kinds.len(),
        5,
        "cluster-a's examples hold every kind: {kinds:?}"
    );
    for example in examples {
        let from_file = Resource::from_yaml(example.clone()).expect("an example reads");
        let key = from_file.key();
        let yaml = serde_yaml::to_string(&example).expect("YAML");
        let [stored]: [DynamicObject; 1] = apply_yaml(&client, &yaml, |_| true)
            .try_into()
            .expect("one object");
        let written: Value = serde_json::to_value(&example).expect("JSON");
        assert_eq!(
            stored.data["spec"], written["spec"],
            "{key}: the stored spec"
        );
        let stored_value = serde_json::to_value(&stored).expect("JSON");
        let from_server = Resource::from_json(key.kind, stored_value).expect("reads back");
        assert_eq!(
            from_server, from_file,
            "{key}: fedwall's view through the server"
        );
    }

    // The printer columns `kubectl get` shows.
    let pools = table(&client, "/apis/fedwall.io/v1alpha1/ippools");
    let pool = row(&pools, "cluster-a-pods");
    assert_eq!(
        pool.keys().cloned().collect::<Vec<_>>(),
        ["Age", "CIDR", "Disabled", "NATOutgoing", "Name"]
    );
    assert_eq!(
        (&pool["CIDR"], &pool["NATOutgoing"]),
        (&json!("10.10.0.0/16"), &json!(true))
    );
    assert_eq!(
        row(&pools, "cluster-b-pods")["Disabled"],
        json!(true),
        "{pools}"
    );
    let policies = table(
        &client,
        "/apis/fedwall.io/v1alpha1/namespaces/shop/networkpolicies",
    );
    let policy = row(&policies, "allow-clients-to-web");
    assert_eq!(
        (&policy["Order"], &policy["Selector"]),
        (&json!(100), &json!("app == 'web'"))
    );

    // The schema refuses wrong types and missing required fields, naming the field.
    let pools_api = fedwall_api(&client, Kind::IpPool, None);
    let bad_pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": FEDWALL_API_VERSION, "kind": "IPPool",
        "metadata": {"name": "bad-pool"},
        "spec": {"cidr": "10.99.0.0/16", "natOutgoing": "yes"},
    }))
    .expect("an object");
    let (code, message) = refused_with(
        "an IPPool with natOutgoing: \"yes\"",
        block_on(pools_api.create(&PostParams::default(), &bad_pool)),
    );
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("spec.natOutgoing") && message.contains("boolean"),
        "{message}"
    );
    let bad_policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": FEDWALL_API_VERSION, "kind": "NetworkPolicy",
        "metadata": {"name": "bad-policy", "namespace": "shop"},
        "spec": {"ingress": [{"protocol": "TCP"}]},
    }))
    .expect("an object");
    let (code, message) = refused_with(
        "a NetworkPolicy rule without action",
        block_on(
            fedwall_api(&client, Kind::NetworkPolicy, Some("shop"))
                .create(&PostParams::default(), &bad_policy),
        ),
    );
    assert_eq!(code, 422, "{message}");
    // 1.20 names the list field without the index.
    assert!(
        message.contains("spec.ingress.action: Required value"),
        "{message}"
    );

    // Status goes through its subresource only.
    let rccs = fedwall_api(&client, Kind::RemoteClusterConfiguration, None);
    let status = json!({"status": {"state": "InSync", "endpoints": 4, "reporter": "a-node-1"}});
    allowed(
        "patch cluster-b's status",
        block_on(rccs.patch_status("cluster-b", &PatchParams::default(), &Patch::Merge(&status))),
    );
    let spec_and_status = json!({
        "spec": {"staleDataTTL": "10m"},
        "status": {"state": "ConnectionFailed"},
    });
    let after = allowed(
        "patch cluster-b's spec (and status, ignored)",
        block_on(rccs.patch(
            "cluster-b",
            &PatchParams::default(),
            &Patch::Merge(&spec_and_status),
        )),
    );
    assert_eq!(after.data["spec"]["staleDataTTL"], "10m");
    assert_eq!(after.data["status"]["state"], "InSync", "{after:?}");
    let wrong_status = json!({"status": {"endpoints": "many"}});
    let (code, message) = refused_with(
        "status endpoints: \"many\"",
        block_on(rccs.patch_status(
            "cluster-b",
            &PatchParams::default(),
            &Patch::Merge(&wrong_status),
        )),
    );
    assert_eq!(code, 422, "{message}");
    let rcc_table = table(
        &client,
        "/apis/fedwall.io/v1alpha1/remoteclusterconfigurations",
    );
    let rcc = row(&rcc_table, "cluster-b");
    assert_eq!(
        (&rcc["DatastoreType"], &rcc["State"], &rcc["Endpoints"]),
        (&json!("file"), &json!("InSync"), &json!(4))
    );
}

#[test]
fn the_agent_reads_what_it_needs_and_secrets_only_in_fedwall_system() {
    require_root!();
    let cluster = Cluster::start("manifests-agent");
    install_crds(&cluster);
    // The whole file, DaemonSet included: a v1.20 server admits its pod template.
    let applied = apply_yaml(&cluster.client(), &shipped(Manifest::Agent), |_| true);
    assert_eq!(
        applied.len(),
        7,
        "Namespace, ServiceAccount, 2 roles, 2 bindings, DaemonSet"
    );
    let admin = cluster.client();
    let daemon_set = allowed(
        "the DaemonSet",
        block_on(Api::<DaemonSet>::namespaced(admin.clone(), NAMESPACE).get(AGENT)),
    );
    let pod = daemon_set
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    assert_eq!(pod.host_network, Some(true));

    cluster.create_namespace("shop", &[]);
    cluster.store_kubeconfig_secret(NAMESPACE, "cluster-b-access", "apiVersion: v1");
    cluster.store_kubeconfig_secret("shop", "not-for-fedwall", "apiVersion: v1");
    apply_yaml(
        &admin,
        "apiVersion: fedwall.io/v1alpha1\nkind: RemoteClusterConfiguration\nmetadata: {name: cluster-b}\nspec:\n  datastoreType: kubernetes\n  clusterAccessSecret: {name: cluster-b-access, namespace: fedwall-system, kind: Secret}\n",
        |_| true,
    );
    let agent = cluster.access_of(NAMESPACE, AGENT).client();
    let list = ListParams::default();

    // Everything it watches, cluster-wide.
    lists_endpoint_data(&agent);
    allowed(
        "list Kubernetes NetworkPolicies",
        block_on(Api::<K8sNetworkPolicy>::all(agent.clone()).list(&list)),
    );
    for kind in Kind::ALL
        .into_iter()
        .filter(|kind| kind.type_meta().0 == FEDWALL_API_VERSION)
    {
        allowed(
            &format!("list {kind}"),
            block_on(fedwall_api(&agent, kind, None).list(&list)),
        );
    }

    // Secrets in its own namespace only.
    let own: Api<Secret> = Api::namespaced(agent.clone(), NAMESPACE);
    allowed(
        "get the access Secret",
        block_on(own.get("cluster-b-access")),
    );
    allowed("list fedwall-system's secrets", block_on(own.list(&list)));
    let (code, message) = refused_with(
        "get a Secret in shop",
        block_on(Api::<Secret>::namespaced(agent.clone(), "shop").get("not-for-fedwall")),
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("in the namespace \"shop\""), "{message}");
    let (code, _) = refused_with(
        "list every namespace's secrets",
        block_on(Api::<Secret>::all(agent.clone()).list(&list)),
    );
    assert_eq!(code, 403);

    // RCC status, not spec.
    let rccs = fedwall_api(&agent, Kind::RemoteClusterConfiguration, None);
    let status = json!({"status": {"state": "Connecting", "endpoints": 0}});
    let patched = allowed(
        "patch an RCC's status",
        block_on(rccs.patch_status("cluster-b", &PatchParams::default(), &Patch::Merge(&status))),
    );
    assert_eq!(patched.data["status"]["state"], "Connecting");
    let spec = json!({"spec": {"staleDataTTL": "1m"}});
    let (code, _) = refused_with(
        "patch an RCC's spec",
        block_on(rccs.patch("cluster-b", &PatchParams::default(), &Patch::Merge(&spec))),
    );
    assert_eq!(code, 403);

    // The status Lease: created, read and renewed by name; no other Lease is readable.
    let leases: Api<Lease> = Api::namespaced(agent.clone(), NAMESPACE);
    let lease_name = fedwall::datastore::kube::STATUS_LEASE;
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": lease_name},
        "spec": {"holderIdentity": "a-node-1", "leaseDurationSeconds": 15}}))
    .expect("a Lease");
    allowed(
        "create the Lease",
        block_on(leases.create(&PostParams::default(), &lease)),
    );
    let mut held = allowed("get the Lease", block_on(leases.get(lease_name)));
    if let Some(spec) = held.spec.as_mut() {
        spec.holder_identity = Some("a-node-2".into());
    }
    allowed(
        "renew the Lease",
        block_on(leases.replace(lease_name, &PostParams::default(), &held)),
    );
    let other: Lease =
        serde_json::from_value(json!({"metadata": {"name": "another"}})).expect("a Lease");
    block_on(Api::<Lease>::namespaced(admin, NAMESPACE).create(&PostParams::default(), &other))
        .expect("the admin creates another Lease");
    let (code, _) = refused_with("get another Lease", block_on(leases.get("another")));
    assert_eq!(code, 403);
}

#[test]
fn the_remote_reader_lists_endpoint_data_and_nothing_else() {
    require_root!();
    let cluster = Cluster::start("manifests-remote");
    apply_yaml(&cluster.client(), &shipped(Manifest::RemoteAccess), |_| {
        true
    });
    cluster.create_namespace("shop", &[]);
    cluster.create_node("remote-node-1", "198.51.100.1".parse().expect("an IP"), &[]);
    cluster.run_pod(&RunningPod {
        namespace: "shop",
        name: "client-1",
        node: "remote-node-1",
        labels: &[("app", "client")],
        ips: &["198.51.100.10".parse().expect("an IP")],
        ..RunningPod::default()
    });

    // The README's steps: the token and CA from the explicit token Secret, in a kubeconfig.
    let access = cluster.access_from_token_secret(NAMESPACE, REMOTE_READER_TOKEN);
    assert_eq!(access.service_account, fedwall::deploy::REMOTE_READER);
    let reader = access.client();
    let list = ListParams::default();
    assert_eq!(
        lists_endpoint_data(&reader),
        ["client-1"],
        "the reader sees the running pod"
    );
    for (what, result) in [
        (
            "list secrets",
            block_on(Api::<Secret>::all(reader.clone()).list(&list)).map(|_| ()),
        ),
        (
            "list its own namespace's secrets",
            block_on(Api::<Secret>::namespaced(reader.clone(), NAMESPACE).list(&list)).map(|_| ()),
        ),
        (
            "list networkpolicies",
            block_on(Api::<K8sNetworkPolicy>::all(reader.clone()).list(&list)).map(|_| ()),
        ),
    ] {
        let (code, message) = refused_with(what, result);
        assert_eq!(code, 403, "{what}: {message}");
    }
}
