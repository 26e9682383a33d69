//! The `containerd-shim-cwasi-v1` binary: containerd starts it for every
//! container of runtime type `io.containerd.cwasi.v1`.

use containerd_shim_wasm::shim::{Cli, Config};
use cwasi_shim::CwasiShim;

fn main() {
    // containerd's `start` runs in the bundle of the container the shim is
    // for, and puts what it prints into the error `ctr run` shows: a node
    // directory the container cannot mount is named here, before
    // containerd's "failed to prepare rootfs". (A successful start must
    // print nothing but the address runwasi prints.)
    if is_start(std::env::args().skip(1)) {
        if let Err(e) = cwasi_shim::node::check_bundle_dir(std::path::Path::new(".")) {
            eprintln!("cwasi: {e}");
            std::process::exit(1);
        }
    }
    // Before runwasi forks its zygote, from which the containers are cloned.
    cwasi_shim::annotations::capture_from_working_directory();
    cwasi_shim::node::open_compile_cache();
    CwasiShim::run(Config {
        default_log_level: "info".to_string(),
        ..Default::default()
    });
}

/// Whether containerd runs the shim's `start` action: the one argument that
/// is neither a flag nor a flag's value (`-id ID`, `-namespace NS`, ...).
fn is_start(args: impl Iterator<Item = String>) -> bool {
    const SWITCHES: [&str; 4] = ["-debug", "--debug", "-v", "-info"];
    let mut value_next = false;
    let mut action = None;
    for arg in args {
        if value_next {
            value_next = false;
        } else if arg.starts_with('-') {
            value_next = !SWITCHES.contains(&arg.as_str()) && !arg.contains('=');
        } else {
            action = Some(arg);
        }
    }
    action.as_deref() == Some("start")
}

#[cfg(test)]
mod tests {
    use super::is_start;

    fn args(line: &str) -> impl Iterator<Item = String> + '_ {
        line.split_whitespace().map(str::to_string)
    }

    #[test]
    fn only_the_start_action_is_start() {
        assert!(is_start(args(
            "-namespace k8s.io -address /run/c.sock -publish-binary /bin/c -id abc start"
        )));
        assert!(is_start(args("-debug -id start start")));
        assert!(!is_start(args(
            "-namespace default -id start -address /run/c.sock"
        )));
        assert!(!is_start(args("-namespace default -id x delete")));
        assert!(!is_start(args("-v")));
    }
}
