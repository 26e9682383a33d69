//! A throwaway certificate authority, a server certificate for 127.0.0.1
//! and a client certificate, made with the `openssl` command (installed by
//! `scripts/setup.sh --test`), so that tests can run a TLS Redis that
//! authenticates its clients, as production ones do.

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
            "ca.crt",
            "-CAkey",
            "ca.key",
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

impl TestCertificates {
    /// Makes them in `dir` (which must exist).
    pub fn generate(dir: &Path) -> TestCertificates {
        let mut ca = vec!["req", "-x509"];
        ca.extend(NEW_EC_KEY);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=cwasi test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
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
