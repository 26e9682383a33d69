//! What a container asks of CWASI: the function's name and namespace,
//! whether it serves, the mode override, and where the node directory and the
//! broker are.
//!
//! Each setting has an environment variable; the per-pod ones also have an
//! annotation ([`ANNOTATED`]). Precedence, highest first: the container's env
//! (the spec's process env: the pod's `env`, `ctr run --env`, the image's),
//! then the annotations the shim was started with ([`crate::annotations`]),
//! then the defaults. An empty value counts as unset.

use std::path::PathBuf;

use cwasi_runtime::{CallPolicy, ModeOverride};

use crate::annotations::{self, Annotations};

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
/// Microseconds a local call spins before it sleeps.
pub const ENV_SPIN_US: &str = "CWASI_SPIN_US";
/// Microseconds a local server's answers may say their requests queued for
/// a call slot before calls spill from it to the next path.
pub const ENV_SPILL_QUEUE_US: &str = "CWASI_SPILL_QUEUE_US";
/// With serve: also take direct calls from other nodes on this `IP:PORT`.
pub const ENV_LISTEN: &str = "CWASI_LISTEN";
/// With serve: serve Prometheus metrics on `http://IP:PORT/metrics`.
pub const ENV_METRICS_ADDR: &str = "CWASI_METRICS_ADDR";
/// With serve: seconds a stop waits for the calls in flight (default 10).
pub const ENV_DRAIN_SECS: &str = "CWASI_DRAIN_SECS";
/// With serve: the callers allowed to call the function, comma-separated
/// rules `<namespace>/<function>[@<node>]` (`cwasi.io/allow-callers`);
/// unset: every caller. `none` allows no caller.
pub const ENV_ALLOW_CALLERS: &str = "CWASI_ALLOW_CALLERS";

/// The settings a pod may give as annotations: each pair is the variable and
/// the annotation that stands for it. The node-wide ones (broker, TLS files,
/// node name, node directory) are env only.
pub const ANNOTATED: &[(&str, &str)] = &[
    (ENV_NAMESPACE, annotations::NAMESPACE),
    (ENV_SERVE, annotations::SERVE),
    (ENV_SEED_SERVE, annotations::SEED_SERVE),
    (ENV_MODE, annotations::MODE),
    (ENV_FUNCTION, annotations::FUNCTION),
    (ENV_SPIN_US, "cwasi.io/spin-us"),
    (ENV_SPILL_QUEUE_US, "cwasi.io/spill-queue-us"),
    (ENV_LISTEN, "cwasi.io/listen"),
    (ENV_METRICS_ADDR, "cwasi.io/metrics-addr"),
    (ENV_DRAIN_SECS, "cwasi.io/drain-secs"),
    (ENV_ALLOW_CALLERS, annotations::ALLOW_CALLERS),
    (ENV_EXPLAIN, "cwasi.io/explain"),
    (ENV_LOG, "cwasi.io/log"),
];
/// Where the node directory is bind-mounted by default.
pub const DEFAULT_NODE_DIR: &str = "/run/cwasi";

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A variable or annotation has a value outside its domain.
    #[error("{name}={value}: {expected}")]
    Invalid {
        /// The variable or annotation that gave the value.
        name: String,
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
    /// Which callers may call the function it serves.
    pub policy: CallPolicy,
    /// Log filter.
    pub log: String,
    /// The container's environment, split into pairs, in order.
    pub env: Vec<(String, String)>,
    /// The annotations the shim was started with.
    pub annotations: Annotations,
    /// What the container should be told (unknown `cwasi.io/` annotations).
    pub warnings: Vec<String>,
}

impl ContainerSettings {
    /// Resolves the settings from the container's `KEY=VALUE` env entries
    /// over `annotations`; `module_stem` names the function when neither
    /// sets it, and the namespace defaults to the pod's Kubernetes namespace,
    /// then to `containerd_namespace`.
    pub fn resolve(
        envs: &[String],
        annotations: Annotations,
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
        let var = |k: &str| layered(&env, &annotations, k);
        let flag = |name: &str| parse_flag(lookup(&env, &annotations, name));
        let mode = match lookup(&env, &annotations, ENV_MODE) {
            None => ModeOverride::Auto,
            Some(found) => found.value.parse().map_err(|_| SettingsError::Invalid {
                name: found.from,
                value: found.value,
                expected: "expected auto, embedded, local or remote",
            })?,
        };
        let function = var(ENV_FUNCTION)
            .or_else(|| module_stem.map(str::to_string))
            .unwrap_or_else(|| "main".to_string());
        let namespace = var(ENV_NAMESPACE)
            .or_else(|| {
                annotations
                    .get(annotations::POD_NAMESPACE)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            })
            .or_else(|| containerd_namespace.map(str::to_string))
            .unwrap_or_else(|| cwasi_runtime::DEFAULT_NAMESPACE.to_string());
        let node_dir = var(ENV_RUNTIME_DIR);
        Ok(ContainerSettings {
            function,
            namespace,
            serve: serve_flag(&env, &annotations)?,
            mode,
            node_dir_explicit: node_dir.is_some(),
            node_dir: PathBuf::from(node_dir.unwrap_or_else(|| DEFAULT_NODE_DIR.to_string())),
            explain: flag(ENV_EXPLAIN)?,
            policy: caller_policy(lookup(&env, &annotations, ENV_ALLOW_CALLERS))?,
            log: var(ENV_LOG).unwrap_or_else(|| "warn".to_string()),
            warnings: unknown_annotations(&annotations),
            env,
            annotations,
        })
    }

    /// A setting's value: the container's env, else its annotation; unset
    /// if empty.
    pub fn var(&self, name: &str) -> Option<String> {
        layered(&self.env, &self.annotations, name)
    }
}

/// A setting's value and the variable or annotation it came from, which an
/// error names.
struct Found {
    value: String,
    from: String,
}

/// `name`'s value from the env entry, else from its annotation, if either
/// is set and not empty.
fn lookup(env: &[(String, String)], annotations: &Annotations, name: &str) -> Option<Found> {
    let from_env = last_value(env, name)
        .filter(|v| !v.is_empty())
        .map(|value| Found {
            value,
            from: name.to_string(),
        });
    from_env.or_else(|| {
        let key = ANNOTATED.iter().find(|(var, _)| *var == name)?.1;
        let value = annotations.get(key).filter(|v| !v.is_empty())?;
        Some(Found {
            value: value.to_string(),
            from: format!("annotation {key}"),
        })
    })
}

/// [`lookup`]'s value alone.
fn layered(env: &[(String, String)], annotations: &Annotations, name: &str) -> Option<String> {
    lookup(env, annotations, name).map(|f| f.value)
}

/// Serving is asked by `CWASI_SERVE` or the prototype's marker. The env
/// decides if it sets either of them; the annotations only otherwise, so
/// `CWASI_SERVE=false` in a pod's env overrides its annotation.
fn serve_flag(env: &[(String, String)], annotations: &Annotations) -> Result<bool, SettingsError> {
    let no_annotations = Annotations::default();
    let env_only = |name: &str| lookup(env, &no_annotations, name);
    let annotated = |name: &str| lookup(&[], annotations, name);
    let (serve, seed) = if env_only(ENV_SERVE).is_some() || env_only(ENV_SEED_SERVE).is_some() {
        (env_only(ENV_SERVE), env_only(ENV_SEED_SERVE))
    } else {
        (annotated(ENV_SERVE), annotated(ENV_SEED_SERVE))
    };
    Ok(parse_flag(serve)? || parse_flag(seed)?)
}

/// The call policy a pod sets: comma-separated caller rules, or `none`;
/// every caller when unset.
fn caller_policy(found: Option<Found>) -> Result<CallPolicy, SettingsError> {
    let Some(found) = found else {
        return Ok(CallPolicy::allow_all());
    };
    if found.value.trim() == "none" {
        return Ok(CallPolicy::allowing([]));
    }
    let rules: Vec<&str> = found
        .value
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    CallPolicy::parse(&rules).map_err(|why| {
        tracing::warn!("{}: {why}", found.from);
        SettingsError::Invalid {
            name: found.from,
            value: found.value,
            expected: "expected comma-separated caller rules <namespace>/<function>[@<node>] \
                       (each part a name, '*', or a name's start and '*'), or none",
        }
    })
}

/// A boolean setting: `true`/`1`/`yes` or `false`/`0`/`no`; unset is false.
fn parse_flag(found: Option<Found>) -> Result<bool, SettingsError> {
    let Some(found) = found else {
        return Ok(false);
    };
    match found.value.as_str() {
        "0" | "false" | "no" => Ok(false),
        "1" | "true" | "yes" => Ok(true),
        _ => Err(SettingsError::Invalid {
            name: found.from,
            value: found.value,
            expected: "expected true or false",
        }),
    }
}

/// One warning per `cwasi.io/` annotation that no setting has: a typo would
/// otherwise be ignored without a word.
fn unknown_annotations(annotations: &Annotations) -> Vec<String> {
    let known: Vec<&str> = ANNOTATED.iter().map(|(_, key)| *key).collect();
    annotations
        .unknown(&known)
        .map(|k| {
            format!(
                "unknown annotation {k} ignored; the known ones are {}",
                known.join(", ")
            )
        })
        .collect()
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

    fn resolve_env(list: &[&str]) -> Result<ContainerSettings, SettingsError> {
        ContainerSettings::resolve(&envs(list), Annotations::default(), None, None)
    }

    /// For every setting that has an annotation: a value different from the
    /// default, one for the annotation and another for the env.
    const CASES: &[(&str, &str, &str)] = &[
        (ENV_NAMESPACE, "from-annotation", "from-env"),
        (ENV_SERVE, "true", "false"),
        (ENV_SEED_SERVE, "true", "false"),
        (ENV_MODE, "local", "remote"),
        (ENV_FUNCTION, "resize", "thumbnail"),
        (ENV_SPIN_US, "7", "9"),
        (ENV_SPILL_QUEUE_US, "2000", "500"),
        (ENV_LISTEN, "10.0.0.1:7000", "10.0.0.2:7000"),
        (ENV_METRICS_ADDR, "0.0.0.0:9464", "127.0.0.1:9464"),
        (ENV_DRAIN_SECS, "25", "3"),
        (ENV_EXPLAIN, "true", "false"),
        (ENV_LOG, "debug", "info"),
        (ENV_ALLOW_CALLERS, "team-a/*", "team-b/f@n1"),
    ];

    /// What a setting resolved to, as the shim reads it.
    fn effective(s: &ContainerSettings, var: &str) -> String {
        match var {
            ENV_NAMESPACE => s.namespace.clone(),
            ENV_SERVE | ENV_SEED_SERVE => s.serve.to_string(),
            ENV_MODE => format!("{:?}", s.mode),
            ENV_FUNCTION => s.function.clone(),
            ENV_EXPLAIN => s.explain.to_string(),
            ENV_LOG => s.log.clone(),
            ENV_ALLOW_CALLERS => s.policy.describe(),
            other => s.var(other).unwrap_or_default(),
        }
    }

    #[test]
    fn annotations_win_over_defaults_and_env_wins_over_annotations() {
        assert_eq!(
            CASES.len(),
            ANNOTATED.len(),
            "every annotated setting has a case"
        );
        for &(var, annotated, from_env) in CASES {
            let key = ANNOTATED.iter().find(|(v, _)| *v == var).unwrap().1;
            let ann = || Annotations::from_pairs([(key, annotated)]);
            let defaults =
                ContainerSettings::resolve(&[], Annotations::default(), None, None).unwrap();
            let by_annotation = ContainerSettings::resolve(&[], ann(), None, None).unwrap();
            let both = ContainerSettings::resolve(
                &envs(&[&format!("{var}={from_env}")]),
                ann(),
                None,
                None,
            )
            .unwrap();
            let only_env = resolve_env(&[&format!("{var}={from_env}")]).unwrap();
            let (d, a, b, e) = (
                effective(&defaults, var),
                effective(&by_annotation, var),
                effective(&both, var),
                effective(&only_env, var),
            );
            assert_ne!(a, d, "{key}={annotated} changes {var} from its default");
            assert_eq!(
                b, e,
                "{var}={from_env} in the env overrides {key}={annotated}"
            );
            assert_ne!(b, a, "{var}: the env and the annotation values differ");
            // An empty env entry does not hide the annotation.
            let empty = ContainerSettings::resolve(&envs(&[&format!("{var}=")]), ann(), None, None)
                .unwrap();
            assert_eq!(effective(&empty, var), a, "{var}= is unset");
        }
    }

    #[test]
    fn the_pod_namespace_is_the_default_trust_domain() {
        let pod = Annotations::from_pairs([(annotations::POD_NAMESPACE, "shop")]);
        let s = ContainerSettings::resolve(&[], pod.clone(), None, Some("k8s.io")).unwrap();
        assert_eq!(s.namespace, "shop");
        let with = Annotations::from_pairs([
            (annotations::POD_NAMESPACE, "shop"),
            (annotations::NAMESPACE, "team-a"),
        ]);
        let s = ContainerSettings::resolve(&[], with, None, Some("k8s.io")).unwrap();
        assert_eq!(s.namespace, "team-a");
    }

    #[test]
    fn a_pod_sets_its_call_policy_by_annotation_and_none_allows_no_caller() {
        let policy = |value: &str| {
            let ann = Annotations::from_pairs([(annotations::ALLOW_CALLERS, value)]);
            ContainerSettings::resolve(&[], ann, None, None)
                .unwrap()
                .policy
        };
        let p = policy("team-a/*, team-b/producer@node1");
        let rules: Vec<String> = p.rules().unwrap().iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["team-a/*", "team-b/producer@node1"]);
        assert_eq!(policy("none").rules().map(<[_]>::len), Some(0));
        let unset = ContainerSettings::resolve(&[], Annotations::default(), None, None).unwrap();
        assert!(!unset.policy.is_set());
    }

    #[test]
    fn bad_annotations_are_refused_by_name_and_unknown_ones_reported() {
        let ann = Annotations::from_pairs([(annotations::SERVE, "maybe")]);
        let e = ContainerSettings::resolve(&[], ann, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("annotation cwasi.io/serve=maybe"), "{e}");
        let ann = Annotations::from_pairs([(annotations::MODE, "fast")]);
        let e = ContainerSettings::resolve(&[], ann, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("annotation cwasi.io/mode=fast"), "{e}");
        let ann = Annotations::from_pairs([(annotations::ALLOW_CALLERS, "team-a/*, team-b")]);
        let e = ContainerSettings::resolve(&[], ann, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("annotation cwasi.io/allow-callers=team-a/*, team-b"),
            "{e}"
        );
        let ann = Annotations::from_pairs([("cwasi.io/mdoe", "local")]);
        let s = ContainerSettings::resolve(&[], ann, None, None).unwrap();
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("cwasi.io/mdoe"), "{:?}", s.warnings);
    }

    #[test]
    fn defaults_come_from_the_module_and_containerd() {
        let s = ContainerSettings::resolve(
            &envs(&["PATH=/bin"]),
            Annotations::default(),
            Some("echo"),
            Some("k8s.io"),
        )
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
        let s = ContainerSettings::resolve(
            &envs(&[
                "CWASI_NAMESPACE=team-a",
                "CWASI_FUNCTION=resize",
                "CWASI_MODE=local",
                "CWASI_RUNTIME_DIR=/x",
                "cwasi.secondary.function=true",
                "CWASI_EXPLAIN=1",
            ]),
            Annotations::default(),
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
        let e = resolve_env(&["CWASI_SERVE=maybe"]).unwrap_err().to_string();
        assert!(e.contains("CWASI_SERVE=maybe"), "{e}");
        let e = resolve_env(&["CWASI_MODE=fast"]).unwrap_err().to_string();
        assert!(e.contains("CWASI_MODE=fast"), "{e}");
    }

    #[test]
    fn the_containerd_namespace_is_read_from_the_shim_arguments() {
        let args = ["shim", "-namespace", "ns1", "-id", "c1"].map(String::from);
        assert_eq!(containerd_namespace(args).as_deref(), Some("ns1"));
        assert_eq!(containerd_namespace(["shim".to_string()]), None);
    }
}
