//! CustomResourceDefinitions of fedwall's resources, with structural OpenAPI v3 schemas
//! derived from their Rust types, printer columns and, for the types that have a status,
//! the status subresource. Only fields a v1.20 API server knows are used.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::Value;

use super::ManifestError;
use crate::datastore::kube::plural;
use crate::model::resources::{
    FEDWALL_API_VERSION, GlobalNetworkPolicy, HostEndpoint, IpPool, Kind, NetworkPolicy,
    RemoteClusterConfiguration,
};

/// The API group of fedwall's resources.
pub const GROUP: &str = "fedwall.io";
/// Their only version.
pub const VERSION: &str = "v1alpha1";

/// Integer and number formats a Kubernetes schema may carry. schemars also names Rust's
/// unsigned widths (`uint8`, `uint64`), which Kubernetes does not know (newer servers warn);
/// the `minimum` schemars adds with them keeps their meaning.
const KNOWN_NUMBER_FORMATS: [&str; 4] = ["int32", "int64", "float", "double"];

/// fedwall's own kinds (group fedwall.io), in the order deploy/ lists them.
pub fn fedwall_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(|kind| kind.type_meta().0 == FEDWALL_API_VERSION)
}

/// Every fedwall.io kind's CRD.
pub fn custom_resource_definitions() -> Result<Vec<CustomResourceDefinition>, ManifestError> {
    fedwall_kinds()
        .filter_map(|kind| Some(definition(kind, schema_for(kind)?)))
        .collect()
}

/// The schema of a fedwall.io kind's Rust type; `None` for the kinds of other groups.
pub fn schema_for(kind: Kind) -> Option<Value> {
    Some(match kind {
        Kind::NetworkPolicy => schema_of::<NetworkPolicy>(),
        Kind::GlobalNetworkPolicy => schema_of::<GlobalNetworkPolicy>(),
        Kind::HostEndpoint => schema_of::<HostEndpoint>(),
        Kind::IpPool => schema_of::<IpPool>(),
        Kind::RemoteClusterConfiguration => schema_of::<RemoteClusterConfiguration>(),
        Kind::Pod
        | Kind::Namespace
        | Kind::ServiceAccount
        | Kind::Node
        | Kind::K8sNetworkPolicy => return None,
    })
}

/// The CRDs as YAML documents.
pub(super) fn documents() -> Result<Vec<String>, ManifestError> {
    custom_resource_definitions()?
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            super::document("", &format!("CustomResourceDefinition {name}"), crd)
        })
        .collect()
}

/// The schema of a fedwall type as Kubernetes wants it: every subschema inlined (a CRD
/// schema has no `$ref`), `nullable` for `Option`s, and structural (see [`structural`]).
pub fn schema_of<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::openapi3().with(|settings| {
        settings.inline_subschemas = true;
        settings.meta_schema = None;
    });
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(root) = schema.as_object_mut() {
        // The type's Rust name: meaningless to users of the API.
        root.remove("title");
    }
    structural(&mut schema);
    schema
}

/// Rewrites one schema and its subschemas into what a CRD takes:
/// - no `default`: fedwall applies its defaults when it reads an object; the API server
///   would store them (an IPPool's `cidr: ""`) in objects users never wrote that way;
/// - no formats Kubernetes does not know ([`KNOWN_NUMBER_FORMATS`]);
/// - an optional int-or-string property is `nullable`, as other `Option`s are (schemars
///   cannot mark a schema without a `type` as nullable).
fn structural(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove("default");
    if object
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|format| !KNOWN_NUMBER_FORMATS.contains(&format))
    {
        object.remove("format");
    }
    let required: Vec<Value> = object
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let optional = !required.contains(&Value::from(name.as_str()));
            if let Some(property) = property.as_object_mut()
                && optional
                && property.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            {
                property.insert("nullable".into(), Value::Bool(true));
            }
            structural(property);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(subschema) = object.get_mut(key) {
            structural(subschema);
        }
    }
}

fn definition(kind: Kind, schema: Value) -> Result<CustomResourceDefinition, ManifestError> {
    let (api_version, kind_name) = kind.type_meta();
    debug_assert_eq!(api_version, FEDWALL_API_VERSION);
    let plural = plural(kind);
    let has_status = schema
        .pointer("/properties/status")
        .is_some_and(Value::is_object);
    let schema: JSONSchemaProps =
        serde_json::from_value(schema).map_err(|source| ManifestError::Schema {
            kind: kind_name.to_owned(),
            source,
        })?;
    Ok(CustomResourceDefinition {
        metadata: super::meta(&format!("{plural}.{GROUP}"), None),
        spec: CustomResourceDefinitionSpec {
            group: GROUP.to_owned(),
            names: CustomResourceDefinitionNames {
                kind: kind_name.to_owned(),
                list_kind: Some(format!("{kind_name}List")),
                plural: plural.to_owned(),
                singular: Some(kind_name.to_lowercase()),
                // `kubectl get fedwall` lists every fedwall resource.
                categories: Some(vec!["fedwall".to_owned()]),
                short_names: None,
            },
            scope: if kind.is_namespaced() {
                "Namespaced"
            } else {
                "Cluster"
            }
            .to_owned(),
            versions: vec![CustomResourceDefinitionVersion {
                name: VERSION.to_owned(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema),
                }),
                subresources: has_status.then(|| CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(Value::Object(
                        Default::default(),
                    ))),
                    scale: None,
                }),
                additional_printer_columns: Some(printer_columns(kind)),
                ..Default::default()
            }],
            ..Default::default()
        },
        status: None,
    })
}

/// What `kubectl get` shows of each kind (Age last, as for built-in kinds: naming columns
/// replaces the default Age column).
fn printer_columns(kind: Kind) -> Vec<CustomResourceColumnDefinition> {
    const ORDER: &str = "Lower orders apply first; empty: after every number.";
    const SELECTOR: &str = "The endpoints the policy applies to; empty: all().";
    const NAT: &str = "Traffic from the pool to outside every pool is SNATed.";
    const DISABLED: &str = "A remote cluster's range: never SNATed towards.";
    const STATE: &str =
        "Connecting, ResyncInProgress, InSync, ConnectionFailed or ConfigIncomplete.";
    const ENDPOINTS: &str = "The remote cluster's endpoints fedwall knows.";
    // (name, type, JSON path, description)
    let columns: &[(&str, &str, &str, &str)] = match kind {
        Kind::NetworkPolicy | Kind::GlobalNetworkPolicy => &[
            ("Order", "number", ".spec.order", ORDER),
            ("Selector", "string", ".spec.selector", SELECTOR),
        ],
        Kind::HostEndpoint => &[
            ("Node", "string", ".spec.node", ""),
            ("Interface", "string", ".spec.interfaceName", ""),
        ],
        Kind::IpPool => &[
            ("CIDR", "string", ".spec.cidr", ""),
            ("NATOutgoing", "boolean", ".spec.natOutgoing", NAT),
            ("Disabled", "boolean", ".spec.disabled", DISABLED),
        ],
        Kind::RemoteClusterConfiguration => &[
            ("DatastoreType", "string", ".spec.datastoreType", ""),
            ("State", "string", ".status.state", STATE),
            ("Endpoints", "integer", ".status.endpoints", ENDPOINTS),
        ],
        Kind::Pod
        | Kind::Namespace
        | Kind::ServiceAccount
        | Kind::Node
        | Kind::K8sNetworkPolicy => &[],
    };
    columns
        .iter()
        .chain([&("Age", "date", ".metadata.creationTimestamp", "")])
        .map(
            |(name, type_, json_path, description)| CustomResourceColumnDefinition {
                name: (*name).to_owned(),
                type_: (*type_).to_owned(),
                json_path: (*json_path).to_owned(),
                description: (!description.is_empty()).then(|| (*description).to_owned()),
                format: None,
                priority: None,
            },
        )
        .collect()
}
