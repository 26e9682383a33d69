//! Certificates for `remote-direct-tls`, made for the run with the `openssl`
//! command (as the tests make theirs): one CA, and for each node a P-256
//! certificate naming it (`DNS:<node>`), used as its TLS server and client
//! certificate on the direct data plane.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cwasi_runtime::TlsFiles;

use crate::BenchError;

const WHO: &str = "remote-direct-tls";

/// `openssl req` arguments for a new P-256 key without a passphrase.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) -> Result<(), BenchError> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            BenchError::setup(
                WHO,
                format!("cannot run openssl ({e}); install it (apt-get install openssl) or leave remote-direct-tls out of --modes"),
            )
        })?;
    if !out.status.success() {
        return Err(BenchError::setup(
            WHO,
            format!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Makes `ca.crt` and, for each of `nodes`, `<node>.crt` and `<node>.key`
/// in `dir` (created), and returns each node's files, in order.
pub fn node_files(dir: &Path, nodes: &[&str]) -> Result<Vec<TlsFiles>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError::output(dir, e))?;
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
        "/CN=cwasi bench CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    let mut out = Vec::new();
    for node in nodes {
        let (key, csr, crt, ext) = (
            format!("{node}.key"),
            format!("{node}.csr"),
            format!("{node}.crt"),
            format!("{node}.ext"),
        );
        let subj = format!("/CN={node}");
        let mut req = vec!["req", "-new"];
        req.extend(NEW_EC_KEY);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req)?;
        let ext_path = dir.join(&ext);
        std::fs::write(
            &ext_path,
            format!("subjectAltName=DNS:{node}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .map_err(|e| BenchError::output(&ext_path, e))?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        )?;
        out.push(TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join(&crt),
            key: dir.join(&key),
        });
    }
    Ok(out)
}

/// The environment that gives a `cwasi serve` these files.
pub fn env(files: &TlsFiles) -> [(&'static str, PathBuf); 3] {
    [
        ("CWASI_TLS_CA", files.ca.clone()),
        ("CWASI_TLS_CERT", files.cert.clone()),
        ("CWASI_TLS_KEY", files.key.clone()),
    ]
}
