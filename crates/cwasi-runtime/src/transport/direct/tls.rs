//! Mutual TLS for the direct data plane: every node presents a certificate
//! signed by the cluster CA and accepts only peers that do. A server's
//! certificate must name its node (`DNS:<node>`), so that a node cannot
//! answer for another; a client's is checked against the CA only.

use std::io;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::config::TlsFiles;
use crate::error::RuntimeError;
use crate::transport::node_identity::NodeIdentity;

/// This node's TLS configurations, as client and as server, loaded once.
#[derive(Clone)]
pub(crate) struct DirectTls {
    /// For connecting to other nodes.
    pub client: Arc<ClientConfig>,
    /// For accepting them.
    pub server: Arc<ServerConfig>,
    /// The node's certificate and key, and the CA, for what it signs and
    /// checks besides the handshake.
    pub identity: Arc<NodeIdentity>,
}

impl std::fmt::Debug for DirectTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectTls { .. }")
    }
}

impl DirectTls {
    /// Reads the CA, the certificate and the key, and builds both sides.
    pub fn load(files: &TlsFiles) -> Result<DirectTls, RuntimeError> {
        let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
            RuntimeError::Config(format!(
                "direct TLS: cannot read {what} {}: {e}",
                path.display()
            ))
        };
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&files.ca)
            .map_err(|e| bad("the CA certificate", &files.ca, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("the CA certificate", &files.ca, &e))?;
        if cas.is_empty() {
            return Err(bad(
                "the CA certificate",
                &files.ca,
                &"no certificate in it",
            ));
        }
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| bad("the CA certificate", &files.ca, &e))?;
        }
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| bad("the certificate", &files.cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("the certificate", &files.cert, &e))?;
        if chain.is_empty() {
            return Err(bad("the certificate", &files.cert, &"no certificate in it"));
        }
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("the key", &files.key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let identity = NodeIdentity::new(roots.clone(), &chain, &key, provider.clone())?;
        let config_err = |side: &str, e: rustls::Error| {
            RuntimeError::Config(format!("direct TLS ({side}): {e}"))
        };
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err("client", e))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| config_err("client", e))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| RuntimeError::Config(format!("direct TLS (client verifier): {e}")))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err("server", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| config_err("server", e))?;
        Ok(DirectTls {
            client: Arc::new(client),
            server: Arc::new(server),
            identity: Arc::new(identity),
        })
    }
}

/// The name a node's certificate must carry: the node's own name.
pub(crate) fn server_name(node: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(node.to_string())
        .map_err(|e| format!("node name '{node}' cannot be checked against a certificate: {e}"))
}

/// The TLS failure inside `e`, if it is one: a certificate refused on
/// either side, or any other protocol error.
pub(crate) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Whether `e` means that one side refused the other's identity (a
/// certificate that is missing, expired, from another CA, or for another
/// node): not a reachability problem, so never a reason to fall back.
pub(crate) fn is_authentication_failure(e: &io::Error) -> bool {
    use rustls::AlertDescription as A;
    match tls_error(e) {
        Some(rustls::Error::InvalidCertificate(_))
        | Some(rustls::Error::NoCertificatesPresented) => true,
        Some(rustls::Error::AlertReceived(alert)) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
                | A::HandshakeFailure
        ),
        _ => false,
    }
}
