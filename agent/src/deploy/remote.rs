//! deploy/remote-access.yaml, applied on each remote cluster: a ServiceAccount that can only
//! read what fedwall federates, and a token Secret for it.

use k8s_openapi::api::core::v1::Secret;

use super::{
    ManifestError, NAMESPACE, REMOTE_READER, REMOTE_READER_TOKEN, cluster_role_documents, document,
    meta, namespace_and_account, rule,
};
use crate::datastore::kube::{REMOTE_KINDS, plural};

pub(super) fn documents() -> Result<Vec<String>, ManifestError> {
    let resources = REMOTE_KINDS.map(|kind| plural(kind).to_owned()).to_vec();
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
    let mut documents = namespace_and_account(REMOTE_READER)?;
    documents.extend(cluster_role_documents(
        REMOTE_READER,
        vec![rule("", resources, &["get", "list", "watch"])],
        "Read-only, and only the endpoint data fedwall federates: never secrets or policy.",
    )?);
    documents.push(document(
        "A long-lived token for the reader, which the token controller fills in (keys\n\
             token, ca.crt, namespace). Kubernetes before 1.24 also makes one by itself; from\n\
             1.24 on, only this explicit Secret gives one.",
        "Secret",
        &token,
    )?);
    Ok(documents)
}
