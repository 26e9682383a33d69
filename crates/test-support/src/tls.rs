//! A throwaway certificate authority, a server certificate for 127.0.0.1
//! and a client certificate, made with the `openssl` command (installed by
//! `scripts/setup.sh --test`), so that tests can run a TLS Redis that
//! authenticates its clients, as production ones do. [`NodeCertificates`]
//! are the same for the nodes of a multi-node test, which authenticate each
//! other on the direct data plane.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files of a test CA and of the certificates it signed.
pub struct TestCertificates {
    /// The CA's certificate (what clients trust).
    pub ca_cert: PathBuf,
    /// The server's certificate (`IP:127.0.0.1`) and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA, and its key.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

/// `openssl req` arguments for a new P-256 key without a passphrase.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}); install it with: apt-get install openssl")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key in `name.key` and a certificate signing request for `cn`.
fn request(dir: &Path, name: &str, cn: &str) {
    let (key, csr, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("/CN={cn}"),
    );
    let mut args = vec!["req", "-new"];
    args.extend(NEW_EC_KEY);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
}

/// Signs `name.csr` with the CA, adding the extensions in `ext`.
fn sign(dir: &Path, name: &str, ext: &str) {
    sign_with(dir, "ca", name, ext);
}

/// Signs `name.csr` with the CA in `ca.crt`/`ca.key` (`ca` is the stem),
/// adding the extensions in `ext`.
fn sign_with(dir: &Path, ca: &str, name: &str, ext: &str) {
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext).expect("write an extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &ext_file,
        ],
    );
}

/// A self-signed CA in `stem.crt`/`stem.key`, named `cn`.
fn new_ca(dir: &Path, stem: &str, cn: &str) {
    let (key, crt, subj) = (
        format!("{stem}.key"),
        format!("{stem}.crt"),
        format!("/CN={cn}"),
    );
    let mut ca = vec!["req", "-x509"];
    ca.extend(NEW_EC_KEY);
    ca.extend([
        "-keyout",
        &key,
        "-out",
        &crt,
        "-days",
        "2",
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
}

impl TestCertificates {
    /// Makes them in `dir` (which must exist).
    pub fn generate(dir: &Path) -> TestCertificates {
        new_ca(dir, "ca", "cwasi test CA");
        request(dir, "server", "127.0.0.1");
        sign(
            dir,
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        );
        request(dir, "client", "cwasi-client");
        sign(dir, "client", "extendedKeyUsage=clientAuth\n");
        TestCertificates {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }

    /// `redis-server` arguments for a TLS port using them (clients must
    /// present a certificate of this CA).
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&self.server_cert),
            "--tls-key-file".into(),
            path(&self.server_key),
            "--tls-ca-cert-file".into(),
            path(&self.ca_cert),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
    }
}

/// A certificate and its key, for one node.
pub struct NodeCertificate {
    /// The node name, its certificate's only name (`DNS:<name>`).
    pub name: String,
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its P-256 key (PEM).
    pub key: PathBuf,
}

/// PEM files for the direct data plane of a multi-node test: one CA, and
/// for each node a certificate naming it (`subjectAltName=DNS:<node>`)
/// that serves both as its TLS server and client certificate; plus an
/// unrelated CA with certificates for the same names, to test that a
/// certificate from another CA is refused even when the name is right.
pub struct NodeCertificates {
    /// The CA the nodes trust (`nodes-ca.crt`).
    pub ca_cert: PathBuf,
    /// The nodes' certificates, in the order of the names given.
    pub nodes: Vec<NodeCertificate>,
    /// The other CA (`other-ca.crt`), which no node trusts.
    pub other_ca_cert: PathBuf,
    /// Certificates for the same names signed by the other CA, in the same
    /// order.
    pub other: Vec<NodeCertificate>,
}

impl NodeCertificates {
    /// Makes them in `dir` (which must exist) for `nodes` (DNS names):
    /// `nodes-ca.crt`, `node-<name>.crt`/`.key`, `other-ca.crt`,
    /// `other-<name>.crt`/`.key`. Panics if `openssl` fails.
    pub fn generate(dir: &Path, nodes: &[&str]) -> NodeCertificates {
        let issue = |ca: &str, prefix: &str| -> Vec<NodeCertificate> {
            nodes
                .iter()
                .map(|node| {
                    let stem = format!("{prefix}-{node}");
                    request(dir, &stem, node);
                    sign_with(
                        dir,
                        ca,
                        &stem,
                        &format!(
                            "subjectAltName=DNS:{node}\n\
                             extendedKeyUsage=serverAuth,clientAuth\n"
                        ),
                    );
                    NodeCertificate {
                        name: node.to_string(),
                        cert: dir.join(format!("{stem}.crt")),
                        key: dir.join(format!("{stem}.key")),
                    }
                })
                .collect()
        };
        new_ca(dir, "nodes-ca", "cwasi test nodes CA");
        new_ca(dir, "other-ca", "cwasi unrelated test CA");
        NodeCertificates {
            ca_cert: dir.join("nodes-ca.crt"),
            nodes: issue("nodes-ca", "node"),
            other_ca_cert: dir.join("other-ca.crt"),
            other: issue("other-ca", "other"),
        }
    }

    /// The certificate of node `name` (signed by the nodes' CA); panics if
    /// it was not among the names given.
    pub fn node(&self, name: &str) -> &NodeCertificate {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node certificate for {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl verify -CAfile ca cert` succeeds, with the purpose given.
    fn verifies(ca: &Path, cert: &Path, purpose: &str) -> bool {
        Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(ca)
            .arg(cert)
            .output()
            .expect("run openssl verify")
            .status
            .success()
    }

    #[test]
    fn node_certificates_name_nodes_and_chain_to_their_own_ca() {
        let dir = std::env::temp_dir().join(format!("cwasi-node-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let certs = NodeCertificates::generate(&dir, &["node-a", "node-b"]);
        for n in &certs.nodes {
            assert!(verifies(&certs.ca_cert, &n.cert, "sslserver"), "{}", n.name);
            assert!(verifies(&certs.ca_cert, &n.cert, "sslclient"), "{}", n.name);
            assert!(!verifies(&certs.other_ca_cert, &n.cert, "sslserver"));
            let text = Command::new("openssl")
                .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
                .arg(&n.cert)
                .output()
                .expect("run openssl x509");
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains(&format!("DNS:{}", n.name)), "{text}");
            assert!(n.key.exists());
        }
        for o in &certs.other {
            assert!(verifies(&certs.other_ca_cert, &o.cert, "sslclient"));
            assert!(
                !verifies(&certs.ca_cert, &o.cert, "sslclient"),
                "{}",
                o.name
            );
        }
        assert_eq!(certs.node("node-b").name, "node-b");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
