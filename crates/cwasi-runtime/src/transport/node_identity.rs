//! This node's identity among the nodes of a cluster: its certificate and
//! key, signed by the cluster CA (the files of the direct data plane's
//! mutual TLS, `CWASI_TLS_*`), and what checks other nodes' claims.
//!
//! - **Which node a certificate names.** A certificate proves a node name
//!   when it chains to the cluster CA and carries the name
//!   (`DNS:<node>`). The direct server checks the caller's claimed node
//!   against the certificate its peer presented; the stream server checks
//!   it against the certificate a request entry carries.
//! - **Signed broker requests.** A caller signs each request entry with
//!   its node's key; the callee checks the signature with the entry's
//!   certificate, after checking that the certificate names the claimed
//!   node ([`NodeIdentity::sign`], [`NodeIdentity::verify`]).
//!
//! Checked certificates are remembered for a while, so that a node's
//! stream of requests costs one signature check each, not a chain check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::SigningKey;
use rustls::{RootCertStore, SignatureScheme};

use crate::error::RuntimeError;

/// How long a certificate checked for a node is taken as proof without a
/// new check (so an expired or replaced one is seen within this).
const CHECKED_FOR: Duration = Duration::from_secs(300);
/// Most certificates remembered; past it the memory starts afresh.
const MAX_CHECKED: usize = 1024;
/// The schemes this node signs with, best first (the key decides which
/// one it can use).
const SCHEMES: [SignatureScheme; 5] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// This node's certificate and key, and the cluster CA that other nodes'
/// certificates must chain to.
pub(crate) struct NodeIdentity {
    key: Arc<dyn SigningKey>,
    /// This node's certificate (the end of its chain), sent with what it
    /// signs.
    cert: CertificateDer<'static>,
    /// Checks a certificate against the CA and a node name.
    names: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
    /// The certificate last found to name each node, and when: looked up
    /// by the node's name, so a hit copies nothing.
    checked: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeIdentity { .. }")
    }
}

/// A signature over a request, with the scheme that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signature {
    /// The TLS signature scheme's code.
    pub scheme: u16,
    /// The signature's bytes.
    pub bytes: Vec<u8>,
}

impl NodeIdentity {
    /// The identity of the node whose certificate chain is `chain` (its
    /// first certificate is the node's) and key is `key`, in the cluster
    /// whose CA certificates are `roots`.
    pub fn new(
        roots: Arc<RootCertStore>,
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        provider: Arc<CryptoProvider>,
    ) -> Result<NodeIdentity, RuntimeError> {
        let cert = chain
            .first()
            .cloned()
            .ok_or_else(|| RuntimeError::Config("node identity: no certificate".into()))?;
        let key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| RuntimeError::Config(format!("node identity: the key: {e}")))?;
        if key.choose_scheme(&SCHEMES).is_none() {
            return Err(RuntimeError::Config(format!(
                "node identity: the key ({:?}) cannot sign with any of {SCHEMES:?}",
                key.algorithm()
            )));
        }
        let algorithms = provider.signature_verification_algorithms;
        let names = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| RuntimeError::Config(format!("node identity: the CA: {e}")))?;
        Ok(NodeIdentity {
            key,
            cert,
            names,
            algorithms,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// This node's certificate, as sent with a signed request.
    pub fn certificate(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// Signs `message` with this node's key.
    pub fn sign(&self, message: &[u8]) -> Result<Signature, String> {
        let signer = self
            .key
            .choose_scheme(&SCHEMES)
            .ok_or("the node's key signs with no known scheme")?;
        let bytes = signer
            .sign(message)
            .map_err(|e| format!("cannot sign: {e}"))?;
        Ok(Signature {
            scheme: u16::from(signer.scheme()),
            bytes,
        })
    }

    /// Whether `cert` is a certificate of the cluster CA that names
    /// `node`; the reason if not.
    pub fn names_node(&self, cert: &[u8], node: &str) -> Result<(), String> {
        {
            let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked
                .get(node)
                .is_some_and(|(known, at)| known[..] == *cert && at.elapsed() < CHECKED_FOR)
            {
                return Ok(());
            }
        }
        let name = ServerName::try_from(node.to_string())
            .map_err(|e| format!("node name '{node}' cannot be checked: {e}"))?;
        self.names
            .verify_server_cert(
                &CertificateDer::from(cert),
                &[],
                &name,
                &[],
                UnixTime::now(),
            )
            .map_err(|e| format!("the certificate does not prove node '{node}': {e}"))?;
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.len() >= MAX_CHECKED {
            checked.clear();
        }
        checked.insert(node.to_string(), (cert.to_vec(), Instant::now()));
        Ok(())
    }

    /// Whether `signature` over `message` was made by the key of `cert`,
    /// a certificate of the cluster CA that names `node`; the reason if
    /// not.
    pub fn verify(
        &self,
        node: &str,
        cert: &[u8],
        signature: &Signature,
        message: &[u8],
    ) -> Result<(), String> {
        self.names_node(cert, node)?;
        let scheme = SignatureScheme::from(signature.scheme);
        let algorithm = self
            .algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme)
            .and_then(|(_, algs)| algs.first())
            .ok_or_else(|| format!("unknown signature scheme {scheme:?}"))?;
        let der = CertificateDer::from(cert);
        let ee = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        ee.verify_signature(*algorithm, message, &signature.bytes)
            .map_err(|e| format!("bad signature: {e}"))
    }
}
