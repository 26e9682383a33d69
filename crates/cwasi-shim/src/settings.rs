//! What a container asks of CWASI, read from its OCI process: the function's
//! name and namespace, whether it serves, the mode override, and where the
//! node directory and the broker are.
//!
//! runwasi's `Sandbox` API (containerd-shim-wasm 1.0) hands the shim the
//! process args, env and entrypoint of the spec, not its annotations, so the
//! annotations of `../shared/DESIGN.md` are read from the environment under
//! the names below; Kubernetes projects annotations into it with the downward
//! API (`docs/kubernetes.md`). The prototype's annotation key
//! `cwasi.secondary.function=true` is accepted as an env entry as it is.

use std::path::PathBuf;

use cwasi_runtime::ModeOverride;

/// The function's namespace (annotation `cwasi.io/namespace`).
pub const ENV_NAMESPACE: &str = "CWASI_NAMESPACE";
/// `true` to serve calls instead of running `_start` (`cwasi.io/serve`).
pub const ENV_SERVE: &str = "CWASI_SERVE";
/// The prototype's serve marker, accepted as an env entry.
pub const ENV_SEED_SERVE: &str = "cwasi.secondary.function";
/// The mode override (`cwasi.io/mode`): auto, embedded, local or remote.
pub const ENV_MODE: &str = "CWASI_MODE";
/// The name other functions call this one by; default: the module's file
/// stem.
pub const ENV_FUNCTION: &str = "CWASI_FUNCTION";
/// The node directory inside the container; default [`DEFAULT_NODE_DIR`].
pub const ENV_RUNTIME_DIR: &str = "CWASI_RUNTIME_DIR";
/// `1` to print the routing decisions on the container's stderr.
pub const ENV_EXPLAIN: &str = "CWASI_EXPLAIN";
/// Log filter for the container's stderr (`tracing` syntax); default `warn`.
pub const ENV_LOG: &str = "CWASI_LOG";
/// Where the node directory is bind-mounted by default.
pub const DEFAULT_NODE_DIR: &str = "/run/cwasi";

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A variable has a value outside its domain.
    #[error("{name}={value}: {expected}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// Everything the shim needs to know about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// Name other functions call it by.
    pub function: String,
    /// Trust domain.
    pub namespace: String,
    /// Serve calls (true) or run `_start` (false).
    pub serve: bool,
    /// Mode override for the calls it makes.
    pub mode: ModeOverride,
    /// The node directory, and whether it was asked for explicitly (then it
    /// must exist).
    pub node_dir: PathBuf,
    /// Whether `node_dir` was set explicitly.
    pub node_dir_explicit: bool,
    /// Print routing decisions on stderr.
    pub explain: bool,
    /// Log filter.
    pub log: String,
    /// The container's environment, split into pairs, in order.
    pub env: Vec<(String, String)>,
}

impl ContainerSettings {
    /// Reads the settings from the container's `KEY=VALUE` env entries;
    /// `module_stem` names the function when `CWASI_FUNCTION` is unset, and
    /// `containerd_namespace` is the namespace when `CWASI_NAMESPACE` is.
    pub fn from_env(
        envs: &[String],
        module_stem: Option<&str>,
        containerd_namespace: Option<&str>,
    ) -> Result<ContainerSettings, SettingsError> {
        let env: Vec<(String, String)> = envs
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect();
        let var = |k: &str| last_value(&env, k).filter(|v| !v.is_empty());
        let flag = |name: &'static str| -> Result<bool, SettingsError> {
            match var(name).as_deref() {
                None | Some("0" | "false" | "no") => Ok(false),
                Some("1" | "true" | "yes") => Ok(true),
                Some(v) => Err(SettingsError::Invalid {
                    name,
                    value: v.to_string(),
                    expected: "expected true or false",
                }),
            }
        };
        let mode = match var(ENV_MODE) {
            None => ModeOverride::Auto,
            Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
                name: ENV_MODE,
                value: v,
                expected: "expected auto, embedded, local or remote",
            })?,
        };
        let function = var(ENV_FUNCTION)
            .or_else(|| module_stem.map(str::to_string))
            .unwrap_or_else(|| "main".to_string());
        let namespace = var(ENV_NAMESPACE)
            .or_else(|| containerd_namespace.map(str::to_string))
            .unwrap_or_else(|| cwasi_runtime::DEFAULT_NAMESPACE.to_string());
        let node_dir = var(ENV_RUNTIME_DIR);
        Ok(ContainerSettings {
            function,
            namespace,
            serve: flag(ENV_SERVE)? || flag(ENV_SEED_SERVE)?,
            mode,
            node_dir_explicit: node_dir.is_some(),
            node_dir: PathBuf::from(node_dir.unwrap_or_else(|| DEFAULT_NODE_DIR.to_string())),
            explain: flag(ENV_EXPLAIN)?,
            log: var(ENV_LOG).unwrap_or_else(|| "warn".to_string()),
            env,
        })
    }

    /// Looks a variable up in the container's environment.
    pub fn var(&self, name: &str) -> Option<String> {
        last_value(&self.env, name)
    }
}

/// The value of `name` in `env`; the last definition wins, as in a shell.
fn last_value(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// The containerd namespace this shim was started for: containerd passes it
/// as `-namespace <ns>` to every shim, and the container process inherits
/// the shim's arguments.
pub fn containerd_namespace(args: impl IntoIterator<Item = String>) -> Option<String> {
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "-namespace" || a == "--namespace" {
            return args.next();
        }
        if let Some(v) = a
            .strip_prefix("-namespace=")
            .or_else(|| a.strip_prefix("--namespace="))
        {
            return Some(v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_come_from_the_module_and_containerd() {
        let s = ContainerSettings::from_env(&envs(&["PATH=/bin"]), Some("echo"), Some("k8s.io"))
            .unwrap();
        assert_eq!(s.function, "echo");
        assert_eq!(s.namespace, "k8s.io");
        assert!(!s.serve);
        assert_eq!(s.mode, ModeOverride::Auto);
        assert_eq!(s.node_dir, PathBuf::from(DEFAULT_NODE_DIR));
        assert!(!s.node_dir_explicit);
        assert_eq!(s.var("PATH").as_deref(), Some("/bin"));
    }

    #[test]
    fn variables_override_and_the_seed_marker_serves() {
        let s = ContainerSettings::from_env(
            &envs(&[
                "CWASI_NAMESPACE=team-a",
                "CWASI_FUNCTION=resize",
                "CWASI_MODE=local",
                "CWASI_RUNTIME_DIR=/x",
                "cwasi.secondary.function=true",
                "CWASI_EXPLAIN=1",
            ]),
            Some("img"),
            Some("default"),
        )
        .unwrap();
        assert_eq!(s.function, "resize");
        assert_eq!(s.namespace, "team-a");
        assert!(s.serve);
        assert_eq!(s.mode, ModeOverride::Force(cwasi_runtime::Mode::Local));
        assert!(s.node_dir_explicit);
        assert!(s.explain);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let e = ContainerSettings::from_env(&envs(&["CWASI_SERVE=maybe"]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CWASI_SERVE=maybe"), "{e}");
        let e = ContainerSettings::from_env(&envs(&["CWASI_MODE=fast"]), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CWASI_MODE=fast"), "{e}");
    }

    #[test]
    fn the_containerd_namespace_is_read_from_the_shim_arguments() {
        let args = ["shim", "-namespace", "ns1", "-id", "c1"].map(String::from);
        assert_eq!(containerd_namespace(args).as_deref(), Some("ns1"));
        assert_eq!(containerd_namespace(["shim".to_string()]), None);
    }
}
