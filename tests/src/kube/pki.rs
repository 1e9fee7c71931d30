//! One cluster's keys and certificates, made in process with rcgen: a CA that signs the
//! apiserver's serving certificate and the client certificates it trusts, and the key that
//! signs (controller-manager) and verifies (apiserver) service-account tokens. Each cluster
//! has its own, so a credential of one is worthless to another.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A client certificate and its key, PEM.
#[derive(Debug)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The files the control plane's flags name, and the CA for clients.
#[derive(Debug)]
pub struct Pki {
    pub ca_pem: String,
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Signs tokens (PKCS#8).
    pub service_account_key: PathBuf,
    /// Verifies them: kube-apiserver 1.20 reads no public key out of a PKCS#8 private key.
    pub service_account_public_key: PathBuf,
    /// `system:masters`: the harness's own access.
    pub admin: ClientCert,
    /// `system:kube-controller-manager`, also in `system:masters` so that every controller
    /// may run under its credentials (no per-controller service accounts to wait for).
    pub controller_manager: ClientCert,
}

impl Pki {
    /// Makes the keys and certificates of cluster `cluster`, writing the files under `dir`.
    pub fn create(cluster: &str, dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("fedwall-test-ca-{cluster}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign the CA");

        let serving_names = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ];
        let mut serving_params = CertificateParams::new(serving_names.map(String::from).to_vec())
            .expect("serving certificate names");
        serving_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate().expect("generate the serving key");
        let serving = serving_params
            .signed_by(&serving_key, &ca)
            .expect("sign the serving certificate");

        let client = |user: &str, group: &str| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, user);
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().expect("generate a client key");
            let cert = params
                .signed_by(&key, &ca)
                .unwrap_or_else(|e| panic!("sign the client certificate of {user}: {e}"));
            ClientCert {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        };
        let service_account_key = KeyPair::generate().expect("generate the service-account key");

        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        Pki {
            ca_cert: write("ca.crt", &ca.pem()),
            serving_cert: write("apiserver.crt", &serving.pem()),
            serving_key: write("apiserver.key", &serving_key.serialize_pem()),
            service_account_key: write("service-account.key", &service_account_key.serialize_pem()),
            service_account_public_key: write(
                "service-account.pub",
                &service_account_key.public_key_pem(),
            ),
            ca_pem: ca.pem(),
            admin: client("fedwall-test-admin", "system:masters"),
            controller_manager: client("system:kube-controller-manager", "system:masters"),
        }
    }
}
