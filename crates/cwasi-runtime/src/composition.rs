//! The composition file: which functions run together, and which one is the
//! entry. `cwasi run` reads it; the format is documented in `docs/composition.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{FunctionSpec, Limits, ModeOverride, Preopen, SeedConfig, DEFAULT_NAMESPACE};
use crate::error::RuntimeError;
use crate::identity::policy::CallPolicy;

/// A parsed and validated composition.
#[derive(Debug, Clone)]
pub struct Composition {
    /// The function whose `_start` runs.
    pub entry: String,
    /// Every function, in name order.
    pub functions: Vec<FunctionSpec>,
    /// Limits, with defaults for what the file leaves out.
    pub limits: Limits,
    /// The mode override of the file (`mode = "..."`).
    pub mode: ModeOverride,
    /// How to build each function that names a `build` step, by function
    /// name: `cwasi build` and `cwasi run --build` run them.
    pub builds: BTreeMap<String, BuildStep>,
    /// Functions that named no `namespace` and were put in the default one;
    /// a caller may want to be told, as it decides what shares a process.
    pub defaulted_namespace: Vec<String>,
}

/// A function's build step in a composition (`[functions.x.build]`): the
/// command that produces its module, so a project of several languages
/// builds with one `cwasi build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStep {
    /// The shell command (`sh -c`), e.g. `cargo build --release --target wasm32-wasip1`.
    pub command: String,
    /// The directory it runs in: `workdir` relative to the composition's
    /// directory, or that directory itself.
    pub workdir: PathBuf,
    /// Files or directories (walked) whose change makes the module stale,
    /// resolved against `workdir`; empty: always run the command.
    pub watch: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBuild {
    command: String,
    #[serde(default)]
    workdir: Option<PathBuf>,
    #[serde(default)]
    watch: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileComposition {
    entry: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    limits: FileLimits,
    functions: BTreeMap<String, FileFunction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_memory_mib: Option<u64>,
    max_payload_mib: Option<u64>,
    call_timeout_ms: Option<u64>,
    entry_timeout_ms: Option<u64>,
    max_call_depth: Option<u32>,
    max_idle_instances: Option<usize>,
    max_module_mib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFunction {
    module: PathBuf,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    preopens: Vec<Preopen>,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    connect_to: Option<String>,
    /// The callers allowed to call it; absent: everyone.
    #[serde(default)]
    allow_callers: Option<Vec<String>>,
    /// How to build its module.
    #[serde(default)]
    build: Option<FileBuild>,
}

impl Composition {
    /// Reads a composition file. Relative module and preopen paths are taken
    /// relative to the file's directory.
    pub fn from_file(path: &Path) -> Result<Composition, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // A bare file name has the empty path as its parent: its functions'
        // paths are relative to the current directory.
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Composition::parse(&text, base)
            .map_err(|e| RuntimeError::Config(format!("{}: {e}", path.display())))
    }

    /// Parses composition text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Composition, String> {
        let file: FileComposition = toml::from_str(text).map_err(|e| e.to_string())?;
        let mode = match &file.mode {
            Some(m) => m.parse()?,
            None => ModeOverride::Auto,
        };
        let limits = file.limits.resolve()?;
        let mut functions = Vec::with_capacity(file.functions.len());
        let mut builds = BTreeMap::new();
        let mut defaulted_namespace = Vec::new();
        for (name, f) in file.functions {
            validate_name(&name)?;
            if f.namespace.is_none() {
                defaulted_namespace.push(name.clone());
            }
            if let Some(b) = f.build {
                if b.command.trim().is_empty() {
                    return Err(format!("function '{name}': build.command is empty"));
                }
                let workdir = base.join(b.workdir.unwrap_or_default());
                let watch = b.watch.into_iter().map(|w| workdir.join(w)).collect();
                builds.insert(
                    name.clone(),
                    BuildStep {
                        command: b.command,
                        workdir,
                        watch,
                    },
                );
            }
            let namespace = f.namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
            validate_namespace(&namespace).map_err(|e| format!("function '{name}': {e}"))?;
            let preopens = f
                .preopens
                .into_iter()
                .map(|p| Preopen {
                    host: base.join(p.host),
                    ..p
                })
                .collect();
            let policy = match &f.allow_callers {
                Some(rules) => {
                    CallPolicy::parse(rules).map_err(|e| format!("function '{name}': {e}"))?
                }
                None => CallPolicy::allow_all(),
            };
            functions.push(FunctionSpec {
                name,
                namespace,
                module: base.join(f.module),
                module_bytes: None,
                args: f.args,
                env: f.env.into_iter().collect(),
                preopens,
                seed: SeedConfig {
                    handler: f.handler,
                    connect_to: f.connect_to,
                },
                policy,
            });
        }
        let comp = Composition {
            entry: file.entry,
            functions,
            limits,
            mode,
            builds,
            defaulted_namespace,
        };
        comp.validate()?;
        Ok(comp)
    }

    /// The short form `cwasi run a.wasm --with b=path/b.wasm`: every module in
    /// the default namespace, the first one the entry.
    pub fn from_modules(
        entry: &Path,
        entry_args: Vec<String>,
        with: &[(String, PathBuf)],
    ) -> Result<Composition, String> {
        let entry_name = entry
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("cannot name a function after {}", entry.display()))?
            .to_string();
        let mut spec = FunctionSpec::new(&entry_name, DEFAULT_NAMESPACE, entry.to_path_buf());
        spec.args = entry_args;
        let mut functions = vec![spec];
        for (name, path) in with {
            validate_name(name)?;
            functions.push(FunctionSpec::new(name, DEFAULT_NAMESPACE, path.clone()));
        }
        let comp = Composition {
            entry: entry_name,
            functions,
            limits: Limits::default(),
            mode: ModeOverride::Auto,
            builds: BTreeMap::new(),
            defaulted_namespace: Vec::new(),
        };
        comp.validate()?;
        Ok(comp)
    }

    fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for f in &self.functions {
            if !seen.insert(f.name.as_str()) {
                return Err(format!("function '{}' is listed twice", f.name));
            }
        }
        if !seen.contains(self.entry.as_str()) {
            return Err(format!(
                "entry '{}' is not one of the functions ({})",
                self.entry,
                self.functions
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    }
}

impl FileLimits {
    fn resolve(&self) -> Result<Limits, String> {
        let mut l = Limits::default();
        if let Some(m) = self.max_memory_mib {
            if m == 0 || m > 4096 {
                return Err("limits.max_memory_mib must be between 1 and 4096".into());
            }
            l.max_memory_bytes = (m as usize) << 20;
        }
        if let Some(m) = self.max_payload_mib {
            if m == 0 || m > 4095 {
                return Err("limits.max_payload_mib must be between 1 and 4095".into());
            }
            l.max_payload_bytes = (m as usize) << 20;
        }
        if let Some(m) = self.max_module_mib {
            if m == 0 || m > 4095 {
                return Err("limits.max_module_mib must be between 1 and 4095".into());
            }
            l.max_module_bytes = m << 20;
        }
        if let Some(ms) = self.call_timeout_ms {
            l.call_timeout = positive_ms("limits.call_timeout_ms", ms)?;
        }
        if let Some(ms) = self.entry_timeout_ms {
            l.entry_timeout = positive_ms("limits.entry_timeout_ms", ms)?;
        }
        if let Some(d) = self.max_call_depth {
            l.max_call_depth = d;
        }
        if let Some(n) = self.max_idle_instances {
            l.max_idle_instances = n;
        }
        Ok(l)
    }
}

fn positive_ms(what: &str, ms: u64) -> Result<Duration, String> {
    if ms == 0 {
        return Err(format!("{what} must be positive"));
    }
    Ok(Duration::from_millis(ms))
}

/// Checks a function name (`cwasi_abi::validate_name`: 1 to 255 bytes of
/// letters, digits, `-`, `_` and `.`, not starting with `.`).
pub fn validate_name(name: &str) -> Result<(), String> {
    cwasi_abi::validate_name(name).map_err(|e| e.to_string())
}

/// Checks a namespace by the same rule as a function name: it names files
/// of the node directory, Redis keys and log lines.
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    cwasi_abi::validate_name(namespace)
        .map_err(|e| format!("invalid namespace '{namespace}': {}", e.rule()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_composition() {
        let text = r#"
            entry = "a"
            mode = "embedded"
            [limits]
            call_timeout_ms = 500
            [functions.a]
            module = "a.wasm"
            args = ["1"]
            env = { NEXT = "b" }
            [functions.b]
            module = "/abs/b.wasm"
            namespace = "other"
            handler = "hello_greet"
        "#;
        let c = Composition::parse(text, Path::new("/base")).unwrap();
        assert_eq!(c.entry, "a");
        assert_eq!(c.limits.call_timeout, Duration::from_millis(500));
        assert_eq!(c.functions[0].module, PathBuf::from("/base/a.wasm"));
        assert_eq!(c.functions[0].namespace, "default");
        assert_eq!(c.functions[1].module, PathBuf::from("/abs/b.wasm"));
        assert_eq!(c.functions[1].seed.handler.as_deref(), Some("hello_greet"));
        assert_eq!(c.defaulted_namespace, vec!["a".to_string()]);
        assert!(c.builds.is_empty());
    }

    #[test]
    fn parses_build_steps() {
        let text = r#"
            entry = "a"
            [functions.a]
            module = "a/target/a.wasm"
            namespace = "n"
            build = { command = "cargo build", workdir = "a", watch = ["src", "Cargo.toml"] }
            [functions.b]
            module = "b.wasm"
            namespace = "n"
            [functions.b.build]
            command = "make"
        "#;
        let c = Composition::parse(text, Path::new("/base")).unwrap();
        let a = &c.builds["a"];
        assert_eq!(a.command, "cargo build");
        assert_eq!(a.workdir, PathBuf::from("/base/a"));
        assert_eq!(
            a.watch,
            vec![
                PathBuf::from("/base/a/src"),
                PathBuf::from("/base/a/Cargo.toml")
            ]
        );
        assert_eq!(c.builds["b"].workdir, PathBuf::from("/base/"));
        assert!(c.builds["b"].watch.is_empty());
        assert!(c.defaulted_namespace.is_empty());
        for bad in [
            "entry = \"a\"\n[functions.a]\nmodule = \"a.wasm\"\nbuild = { command = \" \" }\n",
            "entry = \"a\"\n[functions.a]\nmodule = \"a.wasm\"\nbuild = { cmd = \"x\" }\n",
        ] {
            assert!(
                Composition::parse(bad, Path::new("/base")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_bad_compositions() {
        let missing_entry = "entry = \"x\"\n[functions.a]\nmodule = \"a.wasm\"\n";
        assert!(Composition::parse(missing_entry, Path::new("."))
            .unwrap_err()
            .contains("entry 'x'"));
        let unknown_key = "entry = \"a\"\n[functions.a]\nmodule = \"a.wasm\"\nfoo = 1\n";
        assert!(Composition::parse(unknown_key, Path::new(".")).is_err());
        let bad_name = "entry = \"a b\"\n[functions.\"a b\"]\nmodule = \"a.wasm\"\n";
        assert!(Composition::parse(bad_name, Path::new("."))
            .unwrap_err()
            .contains("invalid function name"));
    }

    #[test]
    fn rejects_a_namespace_that_is_not_a_name() {
        for ns in ["../../x", "a/b", ".hidden", ""] {
            let text =
                format!("entry = \"a\"\n[functions.a]\nmodule = \"a.wasm\"\nnamespace = {ns:?}\n");
            let err = Composition::parse(&text, Path::new(".")).unwrap_err();
            assert!(
                err.contains(&format!("function 'a': invalid namespace '{ns}'")),
                "{ns}: {err}"
            );
        }
    }

    #[test]
    fn rejects_a_name_starting_with_a_dot() {
        let text = "entry = \".hidden\"\n[functions.\".hidden\"]\nmodule = \"a.wasm\"\n";
        let err = Composition::parse(text, Path::new(".")).unwrap_err();
        assert!(err.contains("invalid function name '.hidden'"), "{err}");
        assert!(err.contains("not starting with '.'"), "{err}");
    }
}
