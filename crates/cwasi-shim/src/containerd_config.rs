//! containerd's config with the `cwasi` runtime handler in it, merged into
//! whatever the node already has.
//!
//! containerd's CRI plugin replaces its built-in table of runtimes with the
//! config's `runtimes` table as soon as the config has one. A config that
//! names only `cwasi` therefore loses `runc`, the default runtime, and the
//! CRI plugin refuses to load ("no corresponding runtime configured in
//! `containerd.runtimes` for default runtime name"). [`merge`] adds the
//! `cwasi` handler with the pod annotations the shim reads, adds `runc` when
//! the default runtime has no entry, and keeps everything else: other
//! runtimes, comments and layout (it edits the document with `toml_edit`).
//! Merging its own output again changes nothing.
//!
//! ```
//! let merged = cwasi_shim::containerd_config::merge("").unwrap();
//! assert!(merged.text.contains("runtimes.runc]"));
//! assert!(merged.text.contains("runtimes.cwasi]"));
//! assert!(cwasi_shim::containerd_config::merge(&merged.text).unwrap().changes.is_empty());
//! ```

use toml_edit::{Array, DocumentMut, Item, Table, TableLike, Value};

/// The handler name pods select through their RuntimeClass.
pub const HANDLER: &str = "cwasi";
/// The shim's runtime type.
pub const RUNTIME_TYPE: &str = "io.containerd.cwasi.v1";
/// The runtime type of containerd's default runtime, `runc`.
pub const RUNC_RUNTIME_TYPE: &str = "io.containerd.runc.v2";
/// The pod annotations the CRI plugin must pass to the shim.
pub const POD_ANNOTATIONS: [&str; 2] = ["cwasi.io/*", "cwasi.secondary.function"];

/// Why a config could not be merged; the file is then left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not TOML.
    #[error("not valid TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
    /// A `version` containerd does not know.
    #[error("config version {0} is not one containerd knows (1, 2 or 3)")]
    Version(String),
    /// A key holds another type than containerd expects there.
    #[error("`{key}` must be {expected}")]
    WrongType {
        /// The dotted key.
        key: String,
        /// What it must be.
        expected: &'static str,
    },
}

/// The merged config and what the merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The config to write: the input itself when nothing changed.
    pub text: String,
    /// One line per change; empty when the input already had everything.
    pub changes: Vec<String>,
    /// What is wrong with the node that the merge does not fix.
    pub warnings: Vec<String>,
}

/// The CRI plugin's id in a config of this version.
fn cri_plugin(version: i64) -> Option<&'static str> {
    match version {
        1 => Some("cri"),
        2 => Some("io.containerd.grpc.v1.cri"),
        3 => Some("io.containerd.cri.v1.runtime"),
        _ => None,
    }
}

/// Adds the `cwasi` runtime handler (and `runc`, if the default runtime has
/// no entry) to a containerd config; see the module doc.
pub fn merge(text: &str) -> Result<Merged, ConfigError> {
    let mut doc: DocumentMut = text.parse()?;
    let mut changes = Vec::new();
    let mut warnings = Vec::new();

    let version = match doc.get("version") {
        // containerd reads a config without a version as version 1; an
        // empty one has nothing to read, so it gets the current layout.
        None if doc.is_empty() => {
            doc.insert("version", toml_edit::value(2));
            changes.push("wrote `version = 2` into the empty config".to_string());
            2
        }
        None => 1,
        Some(item) => item.as_integer().ok_or(ConfigError::WrongType {
            key: "version".into(),
            expected: "an integer",
        })?,
    };
    let plugin = cri_plugin(version).ok_or_else(|| ConfigError::Version(version.to_string()))?;

    if let Some(disabled) = doc.get("disabled_plugins").and_then(Item::as_array) {
        let off = disabled
            .iter()
            .filter_map(Value::as_str)
            .any(|p| p == plugin || p == "cri");
        if off {
            warnings.push(format!(
                "the CRI plugin is disabled (`disabled_plugins` lists it): `ctr` can run \
                 cwasi containers, but Kubernetes cannot until `{plugin}` is removed from it"
            ));
        }
    }

    let prefix = format!("plugins.\"{plugin}\".containerd");
    let containerd = table_at(doc.as_table_mut(), &["plugins", plugin, "containerd"], "")?;
    let default = match containerd.get("default_runtime_name") {
        None => "runc".to_string(),
        Some(item) => item
            .as_str()
            .ok_or(ConfigError::WrongType {
                key: format!("{prefix}.default_runtime_name"),
                expected: "a string",
            })?
            .to_string(),
    };
    let runtimes_key = format!("{prefix}.runtimes");
    let runtimes = table_at(containerd, &["runtimes"], &prefix)?;

    if !runtimes.contains_key(&default) {
        if default == "runc" {
            let mut runc = new_table(false);
            runc.insert("runtime_type", toml_edit::value(RUNC_RUNTIME_TYPE));
            runtimes.insert("runc", Item::Table(runc));
            changes.push(format!(
                "added the default runtime `runc` ({RUNC_RUNTIME_TYPE}) to {runtimes_key}, \
                 which containerd would otherwise drop"
            ));
        } else {
            warnings.push(format!(
                "the default runtime `{default}` has no entry in {runtimes_key}: the CRI \
                 plugin will not load until it has one"
            ));
        }
    }

    let entry_key = format!("{runtimes_key}.{HANDLER}");
    let entry = table_at(runtimes, &[HANDLER], &runtimes_key)?;
    match entry.get("runtime_type").map(Item::as_str) {
        Some(Some(RUNTIME_TYPE)) => {}
        Some(Some(other)) => {
            changes.push(format!(
                "changed the runtime type of {entry_key} from `{other}` to `{RUNTIME_TYPE}`"
            ));
            entry.insert("runtime_type", toml_edit::value(RUNTIME_TYPE));
        }
        Some(None) => {
            return Err(ConfigError::WrongType {
                key: format!("{entry_key}.runtime_type"),
                expected: "a string",
            })
        }
        None => {
            changes.push(format!(
                "registered the `{HANDLER}` runtime ({RUNTIME_TYPE}) as {entry_key}"
            ));
            entry.insert("runtime_type", toml_edit::value(RUNTIME_TYPE));
        }
    }
    let annotations = entry
        .entry("pod_annotations")
        .or_insert(toml_edit::value(Array::new()))
        .as_array_mut()
        .ok_or(ConfigError::WrongType {
            key: format!("{entry_key}.pod_annotations"),
            expected: "an array of strings",
        })?;
    let missing: Vec<&str> = POD_ANNOTATIONS
        .into_iter()
        .filter(|want| !annotations.iter().any(|a| a.as_str() == Some(want)))
        .collect();
    if !missing.is_empty() {
        for a in &missing {
            annotations.push(*a);
        }
        changes.push(format!(
            "{entry_key} now passes the pod annotations {}",
            missing.join(", ")
        ));
    }

    let text = if changes.is_empty() {
        text.to_string()
    } else {
        doc.to_string()
    };
    Ok(Merged {
        text,
        changes,
        warnings,
    })
}

/// A table to add: written after everything the config had (toml_edit
/// would otherwise write it after its parent's last table, in the middle
/// of the node's own settings). `implicit`: only its subtables' headers are
/// written.
fn new_table(implicit: bool) -> Table {
    let mut t = Table::new();
    t.set_implicit(implicit);
    t.set_position(usize::MAX);
    t
}

/// The table at `path` below `parent`, created (implicit, so that only the
/// innermost header is written) where missing. `at` is the parent's dotted
/// key, for errors.
fn table_at<'a>(
    mut parent: &'a mut dyn TableLike,
    path: &[&str],
    at: &str,
) -> Result<&'a mut dyn TableLike, ConfigError> {
    let mut key_so_far = at.to_string();
    for key in path {
        if !key_so_far.is_empty() {
            key_so_far.push('.');
        }
        if key.contains('.') {
            key_so_far.push_str(&format!("\"{key}\""));
        } else {
            key_so_far.push_str(key);
        }
        if !parent.contains_key(key) {
            // Through `insert`, which turns the table into an inline one
            // where the parent is inline.
            parent.insert(key, Item::Table(new_table(true)));
        }
        parent = parent
            .get_mut(key)
            .and_then(Item::as_table_like_mut)
            .ok_or_else(|| ConfigError::WrongType {
                key: key_so_far.clone(),
                expected: "a table",
            })?;
    }
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config Debian's containerd 1.6 package installs.
    const DEBIAN: &str =
        "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    \
        [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      \
        conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    \
        path = \"/var/lib/containerd/opt\"\n";

    fn parsed(text: &str) -> toml::Table {
        text.parse()
            .unwrap_or_else(|e| panic!("{e}: the merge wrote\n{text}"))
    }

    fn runtimes<'a>(config: &'a toml::Table, plugin: &str) -> &'a toml::Table {
        config["plugins"][plugin]["containerd"]["runtimes"]
            .as_table()
            .unwrap()
    }

    fn assert_whole(merged: &Merged, plugin: &str) {
        let config = parsed(&merged.text);
        let r = runtimes(&config, plugin);
        assert_eq!(r["cwasi"]["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        let annotations: Vec<_> = r["cwasi"]["pod_annotations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for a in POD_ANNOTATIONS {
            assert!(annotations.contains(&a), "{annotations:?}");
        }
        // Merging the result again changes nothing, to the byte.
        let again = merge(&merged.text).unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.text, merged.text);
    }

    #[test]
    fn every_starting_config_gets_both_runtimes() {
        // (starting config, CRI plugin id, runc added)
        let cases: &[(&str, &str, bool)] = &[
            ("", "io.containerd.grpc.v1.cri", true),
            ("\n# nothing yet\n", "io.containerd.grpc.v1.cri", true),
            (DEBIAN, "io.containerd.grpc.v1.cri", true),
            ("version = 3\n", "io.containerd.cri.v1.runtime", true),
            (
                "[plugins.cri.containerd]\n  snapshotter = \"overlayfs\"\n",
                "cri",
                true,
            ),
            (
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  \
                 runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".\
                 containerd.runtimes.runc.options]\n    SystemdCgroup = true\n",
                "io.containerd.grpc.v1.cri",
                false,
            ),
        ];
        for (start, plugin, runc_added) in cases {
            let merged = merge(start).unwrap_or_else(|e| panic!("{start:?}: {e}"));
            assert_whole(&merged, plugin);
            let config = parsed(&merged.text);
            let runc = &runtimes(&config, plugin)["runc"];
            assert_eq!(runc["runtime_type"].as_str(), Some(RUNC_RUNTIME_TYPE));
            let said = merged.changes.join("\n");
            assert_eq!(
                said.contains("added the default runtime"),
                *runc_added,
                "{said}"
            );
            assert!(said.contains("registered the `cwasi` runtime"), "{said}");
            assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        }
    }

    #[test]
    fn what_the_node_had_is_kept() {
        let merged = merge(DEBIAN).unwrap();
        let config = parsed(&merged.text);
        let cri = &config["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
        assert_eq!(
            config["plugins"]["io.containerd.internal.v1.opt"]["path"].as_str(),
            Some("/var/lib/containerd/opt")
        );
        // The original text is still there, as it was.
        assert!(
            merged.text.starts_with(DEBIAN.trim_end()),
            "{}",
            merged.text
        );

        // A runtime of its own, a comment and the systemd cgroup driver.
        let own = "version = 2\n# gVisor for untrusted pods\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runsc]\n  \
             runtime_type = \"io.containerd.runsc.v1\"\n";
        let merged = merge(own).unwrap();
        assert!(merged.text.contains("# gVisor for untrusted pods"));
        let config = parsed(&merged.text);
        let r = runtimes(&config, "io.containerd.grpc.v1.cri");
        assert_eq!(
            r["runsc"]["runtime_type"].as_str(),
            Some("io.containerd.runsc.v1")
        );
        assert!(r.contains_key("runc") && r.contains_key("cwasi"), "{r:?}");
    }

    #[test]
    fn an_older_entry_is_completed_and_its_extra_annotations_kept() {
        let old = "version = 3\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.cwasi]\n  \
             runtime_type = \"io.containerd.cwasi.v1\"\n  pod_annotations = [\"example.com/x\"]\n";
        let merged = merge(old).unwrap();
        assert_whole(&merged, "io.containerd.cri.v1.runtime");
        let config = parsed(&merged.text);
        let a = &runtimes(&config, "io.containerd.cri.v1.runtime")["cwasi"]["pod_annotations"];
        assert_eq!(a.as_array().unwrap()[0].as_str(), Some("example.com/x"));
        let said = merged.changes.join("\n");
        assert!(said.contains("now passes the pod annotations"), "{said}");
        assert!(!said.contains("registered"), "{said}");
    }

    #[test]
    fn inline_tables_are_merged_too() {
        let inline = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  \
            containerd = { snapshotter = \"overlayfs\" }\n";
        let merged = merge(inline).unwrap();
        assert_whole(&merged, "io.containerd.grpc.v1.cri");
        let config = parsed(&merged.text);
        assert_eq!(
            config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"].as_str(),
            Some("overlayfs")
        );
    }

    #[test]
    fn what_cannot_be_fixed_is_said() {
        let disabled = "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";
        let merged = merge(disabled).unwrap();
        assert!(
            merged.warnings[0].contains("the CRI plugin is disabled"),
            "{:?}",
            merged.warnings
        );
        let other_default = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  \
            default_runtime_name = \"crun\"\n";
        let merged = merge(other_default).unwrap();
        assert!(
            merged.warnings[0].contains("the default runtime `crun` has no entry"),
            "{:?}",
            merged.warnings
        );
        assert_whole(&merged, "io.containerd.grpc.v1.cri");
    }

    #[test]
    fn bad_configs_are_refused_with_the_key_named() {
        let cases: &[(&str, &str)] = &[
            ("version = [", "not valid TOML"),
            ("version = 4\n", "config version 4"),
            ("version = \"2\"\n", "`version` must be an integer"),
            (
                "version = 2\nplugins = 7\n",
                "`plugins` must be a table",
            ),
            (
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = \"x\"\n",
                "`plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes` must be a table",
            ),
            (
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cwasi]\n\
                 pod_annotations = \"cwasi.io/*\"\n",
                "pod_annotations` must be an array of strings",
            ),
        ];
        for (text, want) in cases {
            let err = merge(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
