//! How a RemoteClusterConfiguration reaches its cluster's API server: a kubeconfig in a
//! Secret of the local cluster, in a file, or inline. Credentials never leave this module
//! in any text: errors name where the kubeconfig came from, never what it holds.

use std::fmt;
use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use crate::datastore::RemoteClusterState;

/// Where a remote cluster's kubeconfig is.
#[derive(Clone, PartialEq, Eq)]
pub enum KubeAccess {
    /// A Secret of the local cluster with the keys `datastoreType` (optional, must be
    /// `kubernetes`) and `kubeconfig`; followed, so a rotated Secret reconnects.
    Secret { namespace: String, name: String },
    /// A kubeconfig file on the node; read again on every connection attempt.
    Path(PathBuf),
    /// The kubeconfig itself, in the RCC.
    Inline(String),
}

/// Never prints an inline kubeconfig: it holds credentials.
impl fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for KubeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeAccess::Secret { namespace, name } => write!(f, "Secret {namespace}/{name}"),
            KubeAccess::Path(path) => write!(f, "kubeconfig file {}", path.display()),
            KubeAccess::Inline(_) => f.write_str("spec.kubeconfigInline"),
        }
    }
}

/// A remote cluster's client configuration and the address it names, for messages.
pub struct Connection {
    pub config: kube::Config,
    pub server: String,
}

/// Reads a kubeconfig's text into a client configuration. TLS verification stays on unless
/// the kubeconfig itself turns it off (`insecure-skip-tls-verify`).
pub async fn connection(text: &str, access: &KubeAccess) -> Result<Connection, RemoteClusterState> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| {
        RemoteClusterState::ConfigIncomplete(format!(
            "the kubeconfig in {access} is not valid: {}; write one with a cluster (server, \
             certificate-authority-data), a user (token) and a current-context",
            describe(&error)
        ))
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| {
            RemoteClusterState::ConfigIncomplete(format!(
                "the kubeconfig in {access} cannot be used: {}; fix it",
                describe(&error)
            ))
        })?;
    Ok(Connection {
        server: config.cluster_url.to_string(),
        config,
    })
}

/// A kubeconfig error without the document's content: YAML errors can quote the value they
/// choke on, which may be a token.
fn describe(error: &KubeconfigError) -> String {
    match error {
        KubeconfigError::Parse(_) => {
            "it is not kubeconfig YAML (check the indentation and that it was not \
             base64-encoded twice)"
                .into()
        }
        other => super::error_chain(other),
    }
}

/// Reads a kubeconfig file.
pub fn read_path(path: &std::path::Path) -> Result<String, RemoteClusterState> {
    std::fs::read_to_string(path).map_err(|error| {
        RemoteClusterState::ConfigIncomplete(format!(
            "cannot read the kubeconfig file {}: {error}; mount it on every node or use \
             clusterAccessSecret",
            path.display()
        ))
    })
}

/// The kubeconfig a cluster-access Secret holds, checked.
pub(crate) fn from_secret(
    secret: &k8s_openapi::api::core::v1::Secret,
    access: &KubeAccess,
) -> Result<String, RemoteClusterState> {
    let data = secret.data.as_ref();
    let field = |key: &str| {
        data.and_then(|data| data.get(key))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|data| data.get(key).cloned())
            })
    };
    if let Some(kind) = field("datastoreType").filter(|kind| kind.trim() != "kubernetes") {
        return Err(RemoteClusterState::ConfigIncomplete(format!(
            "{access} has datastoreType {:?}; a cluster-access Secret must say kubernetes",
            kind.trim()
        )));
    }
    field("kubeconfig").ok_or_else(|| {
        RemoteClusterState::ConfigIncomplete(format!(
            "{access} has no key `kubeconfig`; add the remote cluster's kubeconfig under it"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::*;

    fn access() -> KubeAccess {
        KubeAccess::Secret {
            namespace: "fedwall-system".into(),
            name: "b-access".into(),
        }
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    fn problem(result: Result<impl Sized, RemoteClusterState>) -> String {
        match result {
            Err(state) => state.to_string(),
            Ok(_) => panic!("expected a problem"),
        }
    }

    #[test]
    fn a_cluster_access_secret_must_say_kubernetes_and_hold_a_kubeconfig() {
        let good = secret(&[("datastoreType", "kubernetes"), ("kubeconfig", "k")]);
        assert_eq!(from_secret(&good, &access()), Ok("k".to_owned()));
        assert_eq!(
            from_secret(&secret(&[("kubeconfig", "k")]), &access()),
            Ok("k".to_owned()),
            "datastoreType may be left out"
        );
        let etcd = problem(from_secret(
            &secret(&[("datastoreType", "etcdv3"), ("kubeconfig", "k")]),
            &access(),
        ));
        assert!(
            etcd.starts_with(
                "ConfigIncomplete: Secret fedwall-system/b-access has datastoreType \"etcdv3\""
            ),
            "{etcd}"
        );
        let missing = problem(from_secret(
            &secret(&[("datastoreType", "kubernetes")]),
            &access(),
        ));
        assert!(missing.contains("has no key `kubeconfig`"), "{missing}");
    }

    #[test]
    fn a_broken_kubeconfig_is_named_without_its_content() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let text = "users:\n- name: u\n  user: {token: s3cr3t-t0ken\n";
        let reason = problem(runtime.block_on(connection(text, &access())));
        assert!(
            reason.starts_with(
                "ConfigIncomplete: the kubeconfig in Secret fedwall-system/b-access is not valid"
            ),
            "{reason}"
        );
        assert!(!reason.contains("s3cr3t"), "{reason}");
        let no_context =
            "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: s3cr3t-t0ken}}]\n";
        let reason = problem(runtime.block_on(connection(
            no_context,
            &KubeAccess::Inline(no_context.into()),
        )));
        assert!(
            reason.starts_with(
                "ConfigIncomplete: the kubeconfig in spec.kubeconfigInline cannot be used"
            ),
            "{reason}"
        );
        assert!(!reason.contains("s3cr3t"), "{reason}");
    }
}
