//! How to reach the broker: the URL, credentials and TLS files, from
//! `CWASI_REDIS_URL` and friends.

use std::path::{Path, PathBuf};

use crate::error::RuntimeError;

/// How to reach the broker, from `CWASI_REDIS_URL` and friends.
#[derive(Clone)]
pub struct BrokerConfig {
    /// `redis://` or `rediss://` URL; may carry `user:password@`. For a
    /// Redis Cluster, the seed nodes' URLs, separated by commas.
    pub url: String,
    /// Whether the broker is a Redis Cluster: set when `url` lists more
    /// than one node, or by `CWASI_REDIS_CLUSTER=1` for a single seed.
    pub cluster: bool,
    /// Durability of requests (`CWASI_REDIS_WAIT=<replicas>`): a caller
    /// waits (`WAIT`) until this many replicas hold its request before it
    /// waits for the answer, and fails the call if they do not within
    /// `wait_timeout`; 0 (the default) does not wait. Redis replicates
    /// asynchronously, so without it a request acknowledged by a master that
    /// dies at once can vanish with it (the call then ends in a clear error
    /// at its deadline).
    pub wait_replicas: u32,
    /// How long a caller waits for `wait_replicas` (`CWASI_REDIS_WAIT_MS`,
    /// default 1000).
    pub wait_timeout: std::time::Duration,
    /// A setting of the environment that could not be read, with why:
    /// [`Broker::new`](super::Broker::new) refuses the configuration.
    pub invalid: Option<String>,
    /// ACL user name, if not in the URL (`CWASI_REDIS_USERNAME`).
    pub username: Option<String>,
    /// Password, if not in the URL (`CWASI_REDIS_PASSWORD`).
    pub password: Option<String>,
    /// This node's name (`CWASI_NODE`, else the hostname).
    pub node: String,
    /// For `rediss://`: the PEM certificate(s) of the CA that signed the
    /// server's certificate (`CWASI_REDIS_CA_FILE`), for brokers behind a
    /// private CA; default: the public web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// For `rediss://` with client authentication (Redis's default
    /// `tls-auth-clients yes`): this client's PEM certificate and key
    /// (`CWASI_REDIS_CLIENT_CERT`, `CWASI_REDIS_CLIENT_KEY`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact(&self.url))
            .field("username", &self.username)
            .field("node", &self.node)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert.as_ref().map(|(c, _)| c))
            .finish_non_exhaustive()
    }
}

impl BrokerConfig {
    /// A broker at `url` (credentials, if any, in the URL) for node `node`.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> BrokerConfig {
        let url = url.into();
        BrokerConfig {
            cluster: url.contains(','),
            wait_replicas: 0,
            wait_timeout: std::time::Duration::from_millis(1000),
            invalid: None,
            url,
            username: None,
            password: None,
            node: node.into(),
            ca_file: None,
            client_cert: None,
        }
    }

    /// The configuration in the environment, if `CWASI_REDIS_URL` is set.
    pub fn from_env() -> Option<BrokerConfig> {
        BrokerConfig::from_vars(&|k| std::env::var(k).ok())
    }

    /// The same, from variables looked up by `var`: the shim reads them from
    /// the container's environment, not its own.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Option<BrokerConfig> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let url = var("CWASI_REDIS_URL")?;
        let cluster = url.contains(',')
            || var("CWASI_REDIS_CLUSTER").is_some_and(|v| matches!(v.as_str(), "1" | "true"));
        let mut invalid = None;
        let mut number = |name: &str, what: &str| -> Option<u64> {
            let v = var(name)?;
            match v.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    invalid.get_or_insert(format!("{name}={v}: expected {what}"));
                    None
                }
            }
        };
        let wait_replicas = number("CWASI_REDIS_WAIT", "a number of replicas")
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let wait_ms = number("CWASI_REDIS_WAIT_MS", "milliseconds");
        let cert = var("CWASI_REDIS_CLIENT_CERT").map(PathBuf::from);
        let key = var("CWASI_REDIS_CLIENT_KEY").map(PathBuf::from);
        Some(BrokerConfig {
            username: var("CWASI_REDIS_USERNAME"),
            password: var("CWASI_REDIS_PASSWORD"),
            ca_file: var("CWASI_REDIS_CA_FILE").map(PathBuf::from),
            // One without the other is reported by `Broker::new`.
            client_cert: match (cert, key) {
                (None, None) => None,
                (c, k) => Some((c.unwrap_or_default(), k.unwrap_or_default())),
            },
            cluster,
            wait_replicas: wait_replicas.unwrap_or(0),
            wait_timeout: std::time::Duration::from_millis(wait_ms.unwrap_or(1000)),
            invalid,
            ..BrokerConfig::new(url, crate::node_dir::node_name_from(&var))
        })
    }
}

/// The TLS files of `config`, read, if it names any.
pub(super) fn tls_files(
    config: &BrokerConfig,
) -> Result<Option<redis::TlsCertificates>, RuntimeError> {
    let read = |what: &str, path: &Path| {
        if path.as_os_str().is_empty() {
            return Err(RuntimeError::Config(format!(
                "{what} is not set, but its pair is (set both CWASI_REDIS_CLIENT_CERT and \
                 CWASI_REDIS_CLIENT_KEY)"
            )));
        }
        std::fs::read(path).map_err(|e| {
            RuntimeError::Config(format!("cannot read {what} {}: {e}", path.display()))
        })
    };
    if config.ca_file.is_none() && config.client_cert.is_none() {
        return Ok(None);
    }
    Ok(Some(redis::TlsCertificates {
        root_cert: match &config.ca_file {
            Some(p) => Some(read("CWASI_REDIS_CA_FILE", p)?),
            None => None,
        },
        client_tls: match &config.client_cert {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read("CWASI_REDIS_CLIENT_CERT", cert)?,
                client_key: read("CWASI_REDIS_CLIENT_KEY", key)?,
            }),
            None => None,
        },
    }))
}

/// The URL (or each of a cluster's seed URLs) without its password, for
/// messages.
pub(super) fn redact(url: &str) -> String {
    url.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
            _ => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The seed URLs of a cluster's `url`, trimmed, without empty ones.
pub(super) fn seeds(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_from_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = BrokerConfig::from_vars(&vars(&[
            ("CWASI_REDIS_URL", "rediss://h:1"),
            ("CWASI_REDIS_CA_FILE", "/ca.pem"),
            ("CWASI_REDIS_CLIENT_CERT", "/c.pem"),
            ("CWASI_REDIS_CLIENT_KEY", "/k.pem"),
            ("CWASI_NODE", "n1"),
        ]))
        .unwrap();
        assert_eq!(c.ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            c.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        // Half a pair is kept, so that `Broker::new` can say what is missing.
        let half = BrokerConfig::from_vars(&vars(&[
            ("CWASI_REDIS_URL", "rediss://h:1"),
            ("CWASI_REDIS_CLIENT_KEY", "/k.pem"),
        ]))
        .unwrap();
        assert_eq!(
            half.client_cert,
            Some((PathBuf::new(), PathBuf::from("/k.pem")))
        );
        let e = tls_files(&half).unwrap_err().to_string();
        assert!(e.contains("CWASI_REDIS_CLIENT_CERT is not set"), "{e}");
        assert!(BrokerConfig::from_vars(&vars(&[])).is_none());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://u:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
