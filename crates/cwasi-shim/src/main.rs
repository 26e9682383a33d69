//! The `containerd-shim-cwasi-v1` binary: containerd starts it for every
//! container of runtime type `io.containerd.cwasi.v1`.

use containerd_shim_wasm::shim::{Cli, Config};
use cwasi_shim::CwasiShim;

fn main() {
    // Before runwasi forks its zygote, from which the containers are cloned.
    cwasi_shim::annotations::capture_from_working_directory();
    CwasiShim::run(Config {
        default_log_level: "info".to_string(),
        ..Default::default()
    });
}
