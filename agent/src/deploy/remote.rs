//! deploy/remote-access.yaml, applied on each remote cluster: a ServiceAccount that can only
//! read what fedwall federates, and a token Secret for it.

use k8s_openapi::api::{
    core::v1::{Namespace, Secret, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
};

use super::{ManifestError, NAMESPACE, REMOTE_READER, REMOTE_READER_TOKEN, document, meta};
use crate::datastore::kube::{REMOTE_KINDS, plural};

pub(super) fn documents() -> Result<Vec<String>, ManifestError> {
    let namespace = Namespace {
        metadata: meta(NAMESPACE, None),
        ..Namespace::default()
    };
    let service_account = ServiceAccount {
        metadata: meta(REMOTE_READER, Some(NAMESPACE)),
        ..ServiceAccount::default()
    };
    let cluster_role = ClusterRole {
        metadata: meta(REMOTE_READER, None),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(REMOTE_KINDS.map(|kind| plural(kind).to_owned()).to_vec()),
            verbs: ["get", "list", "watch"].map(str::to_owned).to_vec(),
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(REMOTE_READER, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: REMOTE_READER.to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: REMOTE_READER.to_owned(),
            namespace: Some(NAMESPACE.to_owned()),
            ..Subject::default()
        }]),
    };
    let mut token_meta = meta(REMOTE_READER_TOKEN, Some(NAMESPACE));
    token_meta.annotations = Some(
        [(
            "kubernetes.io/service-account.name".to_owned(),
            REMOTE_READER.to_owned(),
        )]
        .into(),
    );
    let token = Secret {
        metadata: token_meta,
        type_: Some("kubernetes.io/service-account-token".to_owned()),
        ..Secret::default()
    };
    Ok(vec![
        document("", "Namespace", &namespace)?,
        document("", "ServiceAccount", &service_account)?,
        document(
            "Read-only, and only the endpoint data fedwall federates: never secrets or policy.",
            "ClusterRole",
            &cluster_role,
        )?,
        document("", "ClusterRoleBinding", &binding)?,
        document(
            "A long-lived token for the reader, which the token controller fills in (keys\n\
             token, ca.crt, namespace). Kubernetes before 1.24 also makes one by itself; from\n\
             1.24 on, only this explicit Secret gives one.",
            "Secret",
            &token,
        )?,
    ])
}
