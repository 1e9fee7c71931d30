//! `kubectl apply -f` for the tests: every document of a manifest, server-side applied
//! with the kind's REST resource found by discovery. A kind whose CRD was applied just
//! before is waited for (a CRD serves only once Established).

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client};
use serde::Deserialize as _;

use super::block_on;

/// How long a kind may take to be served after its CRD was created.
const CRD_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies every document of `yaml` for which `keep` says yes; returns what the server
/// stored. Panics naming the document that failed.
pub fn apply_yaml(
    client: &Client,
    yaml: &str,
    keep: impl Fn(&DynamicObject) -> bool,
) -> Vec<DynamicObject> {
    let mut applied = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document).expect("a YAML document");
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml::from_value(value)
            .expect("a Kubernetes object (apiVersion, kind, metadata)");
        if keep(&object) {
            applied.push(apply(client, &object));
        }
    }
    applied
}

fn apply(client: &Client, object: &DynamicObject) -> DynamicObject {
    let types = object.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("a group/version and kind");
    let name = object.metadata.name.clone().expect("metadata.name");
    let what = format!("{} {name}", types.kind);
    let deadline = Instant::now() + CRD_TIMEOUT;
    let (resource, capabilities) = loop {
        match block_on(pinned_kind(client, &gvk)) {
            Ok(found) => break found,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("{what}: the API server does not serve its kind: {error}"),
        }
    };
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object.metadata.namespace.as_deref().unwrap_or("default"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply("fedwall-tests").force();
    block_on(api.patch(&name, &params, &Patch::Apply(object)))
        .unwrap_or_else(|e| panic!("apply {what}: {e}"))
}
