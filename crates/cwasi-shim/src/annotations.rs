//! The OCI annotations a container's function is configured by.
//!
//! runwasi's `Sandbox` interface (containerd-shim-wasm 1.0.1, the newest)
//! hands `run_wasi` the process's args and env, not the spec's annotations,
//! and by then the container has pivoted into its rootfs, so its bundle is out
//! of reach. The shim therefore reads them once, at process start, from the
//! `config.json` in its working directory: containerd starts every shim in the
//! bundle of the first container of its group, which under CRI is the pod's
//! sandbox (runwasi groups a pod's containers into one shim by
//! `io.kubernetes.cri.sandbox-id`), and under `ctr` the container itself. The
//! copy is taken before runwasi forks its zygote, from which every container
//! process is cloned, so each container of the shim sees it.
//!
//! The sandbox carries the pod's annotations that containerd's runtime option
//! `pod_annotations` lets through (`docs/containerd.md`).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::OnceLock;

/// The pod's trust domain.
pub const NAMESPACE: &str = "cwasi.io/namespace";
/// `true` to serve calls instead of running `_start`.
pub const SERVE: &str = "cwasi.io/serve";
/// The mode override of the calls the function makes.
pub const MODE: &str = "cwasi.io/mode";
/// The name callers use.
pub const FUNCTION: &str = "cwasi.io/function";
/// The callers allowed to call the function a pod serves (comma-separated
/// rules, or `none`; unset: every caller).
pub const ALLOW_CALLERS: &str = "cwasi.io/allow-callers";
/// The prototype's serve marker.
pub const SEED_SERVE: &str = "cwasi.secondary.function";
/// The Kubernetes namespace of the pod, set by containerd's CRI plugin on the
/// sandbox; the default trust domain under Kubernetes.
pub const POD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";

/// The prefix of CWASI's own annotations; one that is not known is reported.
pub const PREFIX: &str = "cwasi.io/";

/// A `config.json` larger than this is not read (a spec is a few KiB).
const SPEC_LIMIT: u64 = 4 << 20;

/// The annotations of one OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations(BTreeMap<String, String>);

/// Why the annotations of a spec could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnotationsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The spec.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than a spec can be.
    #[error("{path} is larger than {SPEC_LIMIT} bytes")]
    TooLarge {
        /// The spec.
        path: String,
    },
    /// The file is not a JSON object with string annotations.
    #[error("{path} is not an OCI spec: {source}")]
    Parse {
        /// The spec.
        path: String,
        /// The cause.
        source: serde_json::Error,
    },
}

#[derive(serde::Deserialize)]
struct SpecAnnotations {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl Annotations {
    /// Annotations from `(key, value)` pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Annotations {
        Annotations(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Reads the annotations of the OCI spec at `path`; a missing file has
    /// none.
    pub fn from_spec_file(path: &Path) -> Result<Annotations, AnnotationsError> {
        let shown = || path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Annotations::default()),
            Err(source) => {
                return Err(AnnotationsError::Read {
                    path: shown(),
                    source,
                })
            }
        };
        let mut text = Vec::new();
        file.take(SPEC_LIMIT + 1)
            .read_to_end(&mut text)
            .map_err(|source| AnnotationsError::Read {
                path: shown(),
                source,
            })?;
        if text.len() as u64 > SPEC_LIMIT {
            return Err(AnnotationsError::TooLarge { path: shown() });
        }
        let spec: SpecAnnotations =
            serde_json::from_slice(&text).map_err(|source| AnnotationsError::Parse {
                path: shown(),
                source,
            })?;
        Ok(Annotations(spec.annotations.unwrap_or_default()))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The `cwasi.io/` keys this shim does not know, to be reported.
    pub fn unknown<'a>(&'a self, known: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .keys()
            .map(String::as_str)
            .filter(move |k| k.starts_with(PREFIX) && !known.contains(k))
    }
}

static CAPTURED: OnceLock<Result<Annotations, String>> = OnceLock::new();

/// Reads `config.json` in the working directory, once, at shim start: call it
/// first in `main`, before runwasi forks. A failure is kept and reported to
/// each container, which then refuses to run.
pub fn capture_from_working_directory() {
    CAPTURED.get_or_init(|| {
        Annotations::from_spec_file(Path::new("config.json")).map_err(|e| e.to_string())
    });
}

/// The annotations captured at shim start (none if nothing was captured).
pub fn captured() -> Result<Annotations, String> {
    CAPTURED
        .get()
        .cloned()
        .unwrap_or_else(|| Ok(Annotations::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_file_gives_its_annotations_and_a_missing_one_none() {
        let dir = std::env::temp_dir().join(format!("cwasi-annotations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"ociVersion":"1.0.2","annotations":{"cwasi.io/serve":"true","other":"x"}}"#,
        )
        .unwrap();
        let a = Annotations::from_spec_file(&path).unwrap();
        assert_eq!(a.get(SERVE), Some("true"));
        assert_eq!(a.get("other"), Some("x"));
        std::fs::write(&path, r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(
            Annotations::from_spec_file(&path).unwrap(),
            Annotations::default()
        );
        std::fs::write(&path, r#"{"annotations":{"cwasi.io/serve":true}}"#).unwrap();
        let e = Annotations::from_spec_file(&path).unwrap_err().to_string();
        assert!(e.contains("not an OCI spec"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = Annotations::from_spec_file(&dir.join("config.json")).unwrap();
        assert_eq!(missing, Annotations::default());
    }

    #[test]
    fn unknown_cwasi_keys_are_listed() {
        let a = Annotations::from_pairs([(SERVE, "true"), ("cwasi.io/srve", "true"), ("x", "y")]);
        assert_eq!(a.unknown(&[SERVE]).collect::<Vec<_>>(), ["cwasi.io/srve"]);
    }
}
