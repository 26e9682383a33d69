//! `cwasi image build`: a Wasm module as an OCI image tarball for
//! `ctr image import --all-platforms` (no registry or docker needed; the
//! image's platform is wasip1/wasm or wasip2/wasm, which `ctr` skips
//! without the flag).

use crate::console::note;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cwasi_oci::{write_image_file, ImageKind, ImageRequest};

/// `cwasi image ...`
#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Writes an OCI image-layout tarball holding a module.
    Build(BuildArgs),
}

/// `cwasi image build <module> -t <name> -o <out.tar>`
#[derive(clap::Args)]
pub struct BuildArgs {
    /// The .wasm module.
    module: PathBuf,
    /// Image reference, such as `docker.io/library/echo:latest`.
    #[arg(short = 't', long = "tag")]
    tag: String,
    /// Where to write the tarball.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Pack the module as an `application/wasm` layer (the Wasm artifact
    /// format) instead of a tar layer; see docs/containerd.md for what
    /// containerd 1.6 needs for it.
    #[arg(long)]
    wasm_layer: bool,
    /// A default environment entry KEY=VALUE of the image (repeatable), such
    /// as CWASI_SERVE=true.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
}

/// Runs an `image` subcommand.
pub fn image(command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Build(args) => build(args),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let request = ImageRequest {
        module: args.module,
        reference: args.tag,
        kind: if args.wasm_layer {
            ImageKind::WasmLayer
        } else {
            ImageKind::Plain
        },
        env: args.env,
    };
    let summary = write_image_file(&request, &args.output)
        .with_context(|| format!("cannot build {}", args.output.display()))?;
    note!(
        "cwasi: wrote {} ({}, entrypoint {}, {} {}); load it with `ctr image import --all-platforms {}`",
        args.output.display(),
        summary.reference,
        summary.entrypoint,
        if summary.component {
            "component"
        } else {
            "module"
        },
        summary.module_digest,
        args.output.display()
    );
    Ok(())
}
