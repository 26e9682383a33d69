//! Wasm OCI images as image-layout tarballs, so that users and tests load a
//! function into containerd with `ctr image import` and need no registry or
//! docker. The tarball is written by runwasi's `oci-tar-builder`; this crate
//! decides what goes into it.
//!
//! Two kinds (`docs/containerd.md`):
//! - [`ImageKind::Plain`]: one tar layer holding `/<name>.wasm`, which is the
//!   entrypoint. Any containerd unpacks it.
//! - [`ImageKind::WasmLayer`]: the module itself as an `application/wasm`
//!   layer (a component as an
//!   `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` one,
//!   as runwasi names it), the Wasm artifact format. containerd 2 handles it natively;
//!   containerd 1.6 needs the stream processor of `docs/containerd.md`, which
//!   turns the layer into an empty tar, so the config's diff id is that of an
//!   empty tar.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use sha2::{Digest, Sha256};

/// Media type of a Wasm module layer (the Wasm artifact format).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Media type of a Wasm component layer, as runwasi names it.
pub const COMPONENT_LAYER_MEDIA_TYPE: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// Whether `bytes` is a WebAssembly component (the binary format's layer 1)
/// rather than a core module: the version field after `\0asm` is
/// `0d 00 01 00`.
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// How the module is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageKind {
    /// A tar layer with the `.wasm` file, which is the entrypoint.
    #[default]
    Plain,
    /// The module as an `application/wasm` layer, or a component as a
    /// [`COMPONENT_LAYER_MEDIA_TYPE`] one.
    WasmLayer,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// The module to pack.
    pub module: PathBuf,
    /// Image reference, such as `docker.io/library/echo:latest`.
    pub reference: String,
    /// Layout.
    pub kind: ImageKind,
    /// Default environment (`KEY=VALUE`), such as `CWASI_SERVE=true`.
    pub env: Vec<String>,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// The reference it carries.
    pub reference: String,
    /// Its entrypoint inside the container.
    pub entrypoint: String,
    /// `sha256:<hex>` of the module.
    pub module_digest: String,
    /// Whether the module is a component (its platform is then `wasip2`).
    pub component: bool,
}

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The module could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The module.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a Wasm module or component.
    #[error("{0} is not a WebAssembly module (no \\0asm header)")]
    NotWasm(PathBuf),
    /// The reference cannot name an image.
    #[error("invalid image reference '{0}': expected name[:tag] with no spaces")]
    Reference(String),
    /// A scratch file failed.
    #[error("scratch file {path}: {source}")]
    Scratch {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tarball could not be assembled or written.
    #[error("cannot write the image: {0}")]
    Write(String),
}

/// Writes the image tarball for `request` to `out`.
pub fn write_image(request: &ImageRequest, out: impl Write) -> Result<ImageSummary, ImageError> {
    let reference = normalize_reference(&request.reference)?;
    let bytes = std::fs::read(&request.module).map_err(|source| ImageError::Read {
        path: request.module.clone(),
        source,
    })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(ImageError::NotWasm(request.module.clone()));
    }
    let component = is_component(&bytes);
    let file_name = module_file_name(&request.module);
    let entrypoint = format!("/{file_name}");
    let scratch = Scratch::new()?;
    let (layer, media_type, diff_id) = match request.kind {
        ImageKind::Plain => {
            let tar = tar_with_file(&file_name, &bytes, 0o444)?;
            let id = sha256(&tar);
            (scratch.write("layer.tar", &tar)?, None, id)
        }
        ImageKind::WasmLayer => (
            scratch.write("module.wasm", &bytes)?,
            Some(
                if component {
                    COMPONENT_LAYER_MEDIA_TYPE
                } else {
                    WASM_LAYER_MEDIA_TYPE
                }
                .to_string(),
            ),
            sha256(&empty_tar()),
        ),
    };
    let os = if component { "wasip2" } else { "wasip1" };
    let platform = (Os::Other(os.to_string()), Arch::Other("wasm".to_string()));
    let config = image_config(&entrypoint, &request.env, diff_id, platform)?;
    assemble(&layer, media_type, config, &reference, out)?;
    Ok(ImageSummary {
        reference,
        entrypoint,
        module_digest: sha256(&bytes),
        component,
    })
}

/// Writes a Linux image of the host's architecture whose one layer holds the
/// static executable `program` at the root, as its entrypoint: a pod's
/// sandbox (pause) image where no registry can be reached. Returns the
/// normalized reference.
pub fn write_executable_image(
    program: &Path,
    reference: &str,
    out: impl Write,
) -> Result<String, ImageError> {
    let reference = normalize_reference(reference)?;
    let bytes = std::fs::read(program).map_err(|source| ImageError::Read {
        path: program.to_path_buf(),
        source,
    })?;
    let name = program
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("program");
    let tar = tar_with_file(name, &bytes, 0o555)?;
    let scratch = Scratch::new()?;
    let layer = scratch.write("layer.tar", &tar)?;
    let config = image_config(
        &format!("/{name}"),
        &[],
        sha256(&tar),
        (Os::Linux, Arch::default()),
    )?;
    assemble(&layer, None, config, &reference, out)?;
    Ok(reference)
}

/// The image-layout tarball of one layer and its config.
fn assemble(
    layer: &PathBuf,
    media_type: Option<String>,
    config: ImageConfiguration,
    reference: &str,
    out: impl Write,
) -> Result<(), ImageError> {
    let mut builder = oci_tar_builder::Builder::default();
    match media_type {
        Some(m) => builder.add_layer_with_media_type(layer, m),
        None => builder.add_layer(layer),
    };
    builder.add_config(config, reference.to_string());
    builder
        .build(out)
        .map_err(|e| ImageError::Write(format!("{e:#}")))
}

/// Writes the image tarball to the file `path`.
pub fn write_image_file(request: &ImageRequest, path: &Path) -> Result<ImageSummary, ImageError> {
    let file = std::fs::File::create(path).map_err(|source| ImageError::Scratch {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = std::io::BufWriter::new(file);
    let summary = write_image(request, &mut out)?;
    out.flush()
        .map_err(|e| ImageError::Write(format!("{}: {e}", path.display())))?;
    Ok(summary)
}

/// `name` alone gets the `:latest` tag; references with spaces, or empty
/// ones, are refused.
fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    let r = reference.trim();
    if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImageError::Reference(reference.to_string()));
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    Ok(if last.contains(':') || last.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    })
}

/// The file name the module gets in the image: its own, with `.wasm`.
fn module_file_name(module: &Path) -> String {
    let stem = module
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("module");
    format!("{stem}.wasm")
}

fn image_config(
    entrypoint: &str,
    env: &[String],
    diff_id: String,
    (os, architecture): (Os, Arch),
) -> Result<ImageConfiguration, ImageError> {
    let err = |e: oci_spec::OciSpecError| ImageError::Write(e.to_string());
    let mut config = ConfigBuilder::default().entrypoint(vec![entrypoint.to_string()]);
    if !env.is_empty() {
        config = config.env(env.to_vec());
    }
    ImageConfigurationBuilder::default()
        .os(os)
        .architecture(architecture)
        .config(config.build().map_err(err)?)
        .rootfs(
            RootFsBuilder::default()
                .diff_ids(vec![diff_id])
                .build()
                .map_err(err)?,
        )
        .build()
        .map_err(err)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A tar holding one file of `mode` at the root.
fn tar_with_file(name: &str, bytes: &[u8], mode: u32) -> Result<Vec<u8>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    tar.append_data(&mut header, name, bytes)
        .map_err(|e| ImageError::Write(format!("layer: {e}")))?;
    tar.into_inner()
        .map_err(|e| ImageError::Write(format!("layer: {e}")))
}

/// An empty tar: what the containerd 1.6 stream processor makes of a Wasm
/// layer (two zero blocks).
pub fn empty_tar() -> Vec<u8> {
    vec![0; 1024]
}

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, ImageError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cwasi-oci-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| ImageError::Scratch {
            path: dir.clone(),
            source,
        })?;
        Ok(Scratch(dir))
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ImageError> {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).map_err(|source| ImageError::Scratch {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_get_a_tag_and_bad_ones_are_refused() {
        assert_eq!(normalize_reference("echo").unwrap(), "echo:latest");
        assert_eq!(
            normalize_reference("localhost:5000/a/echo").unwrap(),
            "localhost:5000/a/echo:latest"
        );
        assert_eq!(normalize_reference("a/echo:v1").unwrap(), "a/echo:v1");
        assert!(normalize_reference("").is_err());
        assert!(normalize_reference("a b").is_err());
    }

    #[test]
    fn the_layer_holds_the_module_at_the_root() {
        let tar = tar_with_file("echo.wasm", b"\0asm\x01\0\0\0", 0o444).unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["echo.wasm"]);
    }

    #[test]
    fn a_component_gets_the_component_layer_media_type() {
        let scratch = Scratch::new().unwrap();
        // The smallest component: the preamble alone.
        let component = scratch.write("c.wasm", b"\0asm\x0d\0\x01\0").unwrap();
        let module = scratch.write("m.wasm", b"\0asm\x01\0\0\0").unwrap();
        let build = |module: &PathBuf| {
            let request = ImageRequest {
                module: module.clone(),
                reference: "x".into(),
                kind: ImageKind::WasmLayer,
                env: Vec::new(),
            };
            let mut out = Vec::new();
            let summary = write_image(&request, &mut out).unwrap();
            (summary, String::from_utf8_lossy(&out).into_owned())
        };
        let (summary, tarball) = build(&component);
        assert!(summary.component);
        assert!(tarball.contains(COMPONENT_LAYER_MEDIA_TYPE));
        assert!(tarball.contains("wasip2"));
        let (summary, tarball) = build(&module);
        assert!(!summary.component);
        assert!(!tarball.contains(COMPONENT_LAYER_MEDIA_TYPE));
        assert!(tarball.contains(WASM_LAYER_MEDIA_TYPE));
        assert!(tarball.contains("wasip1"));
        assert!(is_component(b"\0asm\x0d\0\x01\0"));
        assert!(!is_component(b"\0asm\x01\0\0\0"));
        assert!(!is_component(b"\0asm"));
    }

    #[test]
    fn not_wasm_is_refused() {
        let scratch = Scratch::new().unwrap();
        let path = scratch.write("x.wasm", b"hello").unwrap();
        let request = ImageRequest {
            module: path,
            reference: "x".into(),
            kind: ImageKind::Plain,
            env: Vec::new(),
        };
        let err = write_image(&request, Vec::new()).unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly module"), "{err}");
    }
}
