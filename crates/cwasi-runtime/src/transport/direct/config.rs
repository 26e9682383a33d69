//! How this node speaks the direct data plane ([`DirectConfig`]), from
//! `CWASI_TLS_*` and friends, and the data address a server announces
//! ([`DataAddr`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::RuntimeError;

/// The PEM files of this node's identity on the direct data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate(s): peers must present a certificate it
    /// signed.
    pub ca: PathBuf,
    /// This node's certificate (its chain), naming the node
    /// (`DNS:<CWASI_NODE>`); presented as a server and as a client.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// How this node connects to other nodes directly, and how its servers
/// accept them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectConfig {
    /// Mutual TLS with these files; `None`: no TLS.
    pub tls: Option<TlsFiles>,
    /// Whether plain TCP is allowed (a trusted network). Without TLS and
    /// without this, there is no direct path: calls go through the broker.
    pub allow_plain: bool,
}

impl DirectConfig {
    /// The configuration in the environment (see [`DirectConfig::from_vars`]).
    pub fn from_env() -> Result<DirectConfig, RuntimeError> {
        DirectConfig::from_vars(&|k| std::env::var(k).ok())
    }

    /// The configuration from variables looked up by `var`:
    /// `CWASI_TLS_CA`, `CWASI_TLS_CERT` and `CWASI_TLS_KEY` (all three), or
    /// else the broker's `CWASI_REDIS_CA_FILE`, `CWASI_REDIS_CLIENT_CERT`
    /// and `CWASI_REDIS_CLIENT_KEY` (all three); `CWASI_DIRECT_PLAIN=1`
    /// allows plain TCP.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<DirectConfig, RuntimeError> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let set = |names: [&str; 3]| -> Result<Option<TlsFiles>, RuntimeError> {
            let [ca, cert, key] = names.map(|n| var(n).map(PathBuf::from));
            match (ca, cert, key) {
                (None, None, None) => Ok(None),
                (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles { ca, cert, key })),
                (ca, cert, key) => {
                    let missing: Vec<&str> = [(names[0], ca), (names[1], cert), (names[2], key)]
                        .into_iter()
                        .filter(|(_, v)| v.is_none())
                        .map(|(n, _)| n)
                        .collect();
                    Err(RuntimeError::Config(format!(
                        "TLS for the direct data plane needs {}, {} and {}; {} not set",
                        names[0],
                        names[1],
                        names[2],
                        missing.join(" and ")
                    )))
                }
            }
        };
        let tls = match set(["CWASI_TLS_CA", "CWASI_TLS_CERT", "CWASI_TLS_KEY"])? {
            Some(t) => Some(t),
            None => set([
                "CWASI_REDIS_CA_FILE",
                "CWASI_REDIS_CLIENT_CERT",
                "CWASI_REDIS_CLIENT_KEY",
            ])
            .unwrap_or(None),
        };
        let allow_plain = match var("CWASI_DIRECT_PLAIN").as_deref() {
            None | Some("0") | Some("false") | Some("no") => false,
            Some("1") | Some("true") | Some("yes") => true,
            Some(other) => {
                return Err(RuntimeError::Config(format!(
                    "CWASI_DIRECT_PLAIN={other}: expected 1 or 0"
                )))
            }
        };
        Ok(DirectConfig { tls, allow_plain })
    }
}

/// Where a node's server takes direct calls, as announced in the cluster
/// registry: `tls://IP:PORT`, or `tcp://IP:PORT` for plain TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataAddr {
    /// Whether the server speaks TLS (and demands a client certificate).
    pub tls: bool,
    /// Its address.
    pub addr: SocketAddr,
}

impl fmt::Display for DataAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "tcp" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

impl FromStr for DataAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("tls://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("tcp://") {
            (false, r)
        } else {
            return Err(format!(
                "data address '{s}' must start with tls:// or tcp://"
            ));
        };
        let addr: SocketAddr = rest
            .parse()
            .map_err(|e| format!("data address '{s}': {e}"))?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(format!(
                "data address '{s}' must name a concrete address and port"
            ));
        }
        Ok(DataAddr { tls, addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn tls_files_come_in_threes_and_fall_back_to_the_brokers() {
        let c = DirectConfig::from_vars(&vars(&[
            ("CWASI_TLS_CA", "/ca"),
            ("CWASI_TLS_CERT", "/c"),
            ("CWASI_TLS_KEY", "/k"),
        ]))
        .unwrap();
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("/c"));
        let e = DirectConfig::from_vars(&vars(&[("CWASI_TLS_CA", "/ca")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CWASI_TLS_CERT and CWASI_TLS_KEY not set"),
            "{e}"
        );
        let c = DirectConfig::from_vars(&vars(&[
            ("CWASI_REDIS_CA_FILE", "/ca"),
            ("CWASI_REDIS_CLIENT_CERT", "/rc"),
            ("CWASI_REDIS_CLIENT_KEY", "/rk"),
            ("CWASI_DIRECT_PLAIN", "1"),
        ]))
        .unwrap();
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/rk"));
        assert!(c.allow_plain);
        assert_eq!(
            DirectConfig::from_vars(&vars(&[])).unwrap(),
            DirectConfig::default()
        );
        assert!(DirectConfig::from_vars(&vars(&[("CWASI_DIRECT_PLAIN", "maybe")])).is_err());
    }

    #[test]
    fn data_addresses_round_trip_and_bad_ones_are_refused() {
        let a: DataAddr = "tls://10.1.2.3:7000".parse().unwrap();
        assert!(a.tls);
        assert_eq!(a.to_string(), "tls://10.1.2.3:7000");
        assert!(!"tcp://[::1]:1".parse::<DataAddr>().unwrap().tls);
        for bad in [
            "10.1.2.3:7000",
            "tls://0.0.0.0:1",
            "tls://1.2.3.4:0",
            "tls://x:1",
            "",
        ] {
            assert!(bad.parse::<DataAddr>().is_err(), "{bad}");
        }
    }
}
