//! End-to-end tests of the `cwasi` binary with real wasmtime and the guest
//! programs of `crates/test-programs`.

mod common;

use std::path::Path;

use common::{assert_producer_ok, cwasi, function, Scratch, LIMIT};

use test_programs_artifacts as progs;

#[test]
fn pipeline_of_three_functions_keeps_every_payload_intact() {
    let dir = Scratch::new("pipeline");
    for size in [0usize, 1, 64 << 10, 10 << 20, 100 << 20] {
        let toml = format!(
            "entry = \"producer\"\n{}{}{}",
            function(
                "producer",
                progs::PRODUCER,
                &format!("args = [\"{size}\", \"transform\", \"xor-checksum\"]")
            ),
            function(
                "transform",
                progs::TRANSFORM,
                "env = { CWASI_NEXT = \"sink\" }"
            ),
            function("sink", progs::SINK, ""),
        );
        let file = dir.write("pipeline.toml", &toml);
        let out = cwasi(&["run", &file, "--explain"], LIMIT);
        assert_producer_ok(&out, size, "producer -> transform: embedded");
        assert!(
            out.stderr.contains("transform -> sink: embedded"),
            "{}",
            out.stderr
        );
    }
}

/// Every bad input reaches the calling guest as its documented code, the
/// process survives, and the next call in the same process succeeds.
#[test]
fn bad_inputs_give_the_guest_its_error_code() {
    let dir = Scratch::new("faults");
    let notwasm = dir.write("notwasm.wasm", "this is not wasm");
    let steps = [
        ("call:trap:16", -2),
        ("call:echo:16", 0),
        ("call:bad_response:16", -9),
        ("call:echo:16", 0),
        ("call:infinite_loop:1", -3),
        ("call:echo:16", 0),
        ("send:memory_hog:128", -12),
        ("send:memory_hog:lots", -8),
        ("call:echo:16", 0),
        ("call:nope:1", -1),
        ("call:notwasm:1", -13),
        ("badptr:echo", -7),
        ("badout:echo", -7),
        ("badtarget", -7),
        ("badhandle", -11),
        ("call:echo:1048577", -4),
        ("call:echo:1048576", 0),
    ];
    let args: Vec<String> = steps.iter().map(|(s, _)| format!("{s:?}")).collect();
    let toml = format!(
        "entry = \"probe\"\n[limits]\ncall_timeout_ms = 500\nmax_memory_mib = 64\nmax_payload_mib = 1\n{}{}{}{}{}{}{}",
        function("probe", progs::PROBE, &format!("args = [{}]", args.join(", "))),
        function("echo", progs::ECHO, ""),
        function("trap", progs::TRAP, ""),
        function("bad_response", progs::BAD_RESPONSE, ""),
        function("infinite_loop", progs::INFINITE_LOOP, ""),
        function("memory_hog", progs::MEMORY_HOG, ""),
        function("notwasm", &notwasm, ""),
    );
    let file = dir.write("faults.toml", &toml);
    // A composition with a module that is not Wasm is refused up front...
    let out = cwasi(&["run", &file], LIMIT);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("notwasm.wasm is not a WebAssembly module"),
        "{}",
        out.stderr
    );
    // ...unless asked to keep going, when callers get NOT_CALLABLE.
    let out = cwasi(&["run", &file, "--keep-unloadable"], LIMIT);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("step="))
        .collect();
    assert_eq!(lines.len(), steps.len(), "{}", out.stdout);
    for (i, ((step, want), line)) in steps.iter().zip(&lines).enumerate() {
        let prefix = format!("step={i} ");
        assert!(line.starts_with(&prefix), "{line}");
        if *want == 0 {
            assert!(line.contains(" ok len="), "{step}: {line}");
        } else {
            assert!(
                line.contains(&format!(" code={want} ")),
                "{step}: want {want}, got {line}"
            );
            let message = line.split_once("message=").map(|(_, m)| m).unwrap_or("");
            assert!(message.len() > 10, "{step}: no clear message in {line}");
        }
    }
}

#[test]
fn seed_functions_call_and_are_called_unchanged() {
    let dir = Scratch::new("seed");
    // A seed caller calls an ABI v1 callee: the response comes back over its
    // buffer, truncated to the request's length.
    let toml = format!(
        "entry = \"seed_caller\"\n{}{}",
        function(
            "seed_caller",
            progs::SEED_CALLER,
            "args = [\"hello from the prototype\"]\nconnect_to = \"echo\""
        ),
        function("echo", progs::ECHO, ""),
    );
    let out = cwasi(&["run", &dir.write("a.toml", &toml)], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("seed_caller sent=24 got=24 response=hello from the prototype"),
        "{}",
        out.stdout
    );

    // A seed caller calls a seed callee through its configured handler.
    let toml = format!(
        "entry = \"seed_caller\"\n{}{}",
        function(
            "seed_caller",
            progs::SEED_CALLER,
            "args = [\"greetings\"]\nconnect_to = \"hello\""
        ),
        function("hello", progs::SEED_CALLEE, "handler = \"hello_greet\""),
    );
    let out = cwasi(&["run", &dir.write("b.toml", &toml), "--explain"], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("seed_callee received len=9"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("text=greetings"), "{}", out.stdout);
    assert!(
        out.stdout.contains("seed_caller sent=9 got=0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("seed_caller -> hello: embedded"),
        "{}",
        out.stderr
    );

    // An ABI v1 caller calls the seed callee; it gets an empty response.
    let toml = format!(
        "entry = \"probe\"\n{}{}",
        function("probe", progs::PROBE, "args = [\"call:hello:100\"]"),
        function("hello", progs::SEED_CALLEE, "handler = \"hello_greet\""),
    );
    let out = cwasi(&["run", &dir.write("c.toml", &toml)], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("seed_callee received len=100"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("step=0 ok len=0"), "{}", out.stdout);

    // A handler name that the module does not export is refused clearly.
    let toml = format!(
        "entry = \"probe\"\n{}{}",
        function("probe", progs::PROBE, "args = [\"call:hello:1\"]"),
        function("hello", progs::SEED_CALLEE, "handler = \"nope\""),
    );
    let out = cwasi(&["run", &dir.write("d.toml", &toml)], LIMIT);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("handler 'nope'"), "{}", out.stderr);
}

/// Whether a line of `text` starts with `prefix`.
fn has_line(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| l.starts_with(prefix))
}

#[test]
fn the_output_of_served_callees_comes_back_prefixed_with_their_names() {
    let dir = Scratch::new("prefixed-output");
    let node = dir.0.join("node");
    // The callee sits in another namespace, so `cwasi run` serves it in a
    // `cwasi serve` child and calls it in local mode; what the callee
    // prints comes back through the run, after its name.
    let toml = format!(
        "entry = \"seed_caller\"\n{}{}",
        function(
            "seed_caller",
            progs::SEED_CALLER,
            "args = [\"greetings\"]\nconnect_to = \"hello\""
        ),
        function(
            "hello",
            progs::SEED_CALLEE,
            "namespace = \"team-b\"\nhandler = \"hello_greet\""
        ),
    );
    let out = cwasi(
        &[
            "run",
            &dir.write("served.toml", &toml),
            "--explain",
            "--runtime-dir",
            node.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("seed_caller -> hello: local"),
        "{}",
        out.stderr
    );
    assert!(
        has_line(&out.stdout, "hello | seed_callee received len=9"),
        "stdout:\n{}",
        out.stdout
    );
    // The server's own messages on stderr are prefixed too.
    assert!(has_line(&out.stderr, "hello | "), "stderr:\n{}", out.stderr);
    // The entry's own output is not.
    assert!(
        has_line(&out.stdout, "seed_caller sent=9"),
        "stdout:\n{}",
        out.stdout
    );
}

#[test]
fn short_form_runs_a_module_with_its_callees() {
    let with_transform = format!("transform={}", progs::TRANSFORM);
    let out = cwasi(
        &[
            "run",
            progs::PRODUCER,
            "--with",
            &with_transform,
            "--",
            "4096",
            "transform",
            "xor-checksum",
        ],
        LIMIT,
    );
    // Without CWASI_NEXT the transform returns the data itself, so the
    // producer reports a mismatch against the checksum and exits 1.
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("mismatch"), "{}", out.stdout);
    let with_echo = format!("echo={}", progs::ECHO);
    let out = cwasi(
        &[
            "run",
            progs::PRODUCER,
            "--with",
            &with_echo,
            "--",
            "4096",
            "echo",
            "echo",
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("ok size=4096"), "{}", out.stdout);
    assert!(out.stderr.contains("producer -> echo"), "{}", out.stderr);
}

#[test]
fn forced_embedding_across_namespaces_is_refused() {
    let dir = Scratch::new("mode");
    let toml = format!(
        "entry = \"producer\"\n{}{}",
        function(
            "producer",
            progs::PRODUCER,
            "args = [\"10\", \"echo\", \"echo\"]\nnamespace = \"a\""
        ),
        function("echo", progs::ECHO, "namespace = \"b\""),
    );
    let file = dir.write("ns.toml", &toml);
    let node = dir.0.join("node");
    let node = node.to_str().unwrap();
    let out = cwasi(
        &[
            "run",
            &file,
            "--explain",
            "--mode",
            "embedded",
            "--runtime-dir",
            node,
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("code=-6"), "{}", out.stdout);
    assert!(out.stderr.contains("never share a VM"), "{}", out.stderr);
    let out = cwasi(&["run", &file, "--mode", "sideways"], LIMIT);
    assert_eq!(out.code, Some(2), "clap usage error: {}", out.stderr);
    assert!(out.stderr.contains("unknown mode"), "{}", out.stderr);
}

#[test]
fn inspect_describes_modules_and_rejects_other_files() {
    let out = cwasi(&["inspect", progs::ECHO], LIMIT);
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("callable (ABI v1):     yes"),
        "{}",
        out.stdout
    );
    let out = cwasi(&["inspect", progs::SEED_CALLEE], LIMIT);
    assert!(out.stdout.contains("hello_greet"), "{}", out.stdout);
    let out = cwasi(&["inspect", progs::SEED_CALLER], LIMIT);
    assert!(out.stdout.contains("caller yes"), "{}", out.stdout);
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = cwasi(&["inspect", readme.to_str().unwrap()], LIMIT);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("is not a WebAssembly module"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_demo_composition_runs() {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline.toml");
    let out = cwasi(&["run", pipeline.to_str().unwrap(), "--explain"], LIMIT);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("words="), "{}", out.stdout);
    assert!(out.stderr.contains("source -> normalize"), "{}", out.stderr);
    assert!(out.stderr.contains("normalize -> count"), "{}", out.stderr);
    // Every hop of the table has its times, the embedded one of a single
    // call too (its first calls are always timed), and no time of zero.
    let row = out
        .stderr
        .lines()
        .find(|l| l.contains("normalize -> count"))
        .unwrap();
    assert!(row.contains("embedded"), "{row}");
    assert!(
        !row.contains(" - ") && !row.trim_end().ends_with('-'),
        "{row}"
    );
    assert!(!row.contains(" 0.0 µs"), "{row}");
}

#[test]
fn image_build_writes_an_oci_layout_and_refuses_what_is_not_wasm() {
    let s = Scratch::new("image");
    let out_tar = s.0.join("echo.tar");
    let out = cwasi(
        &[
            "image",
            "build",
            progs::ECHO,
            "-t",
            "echo",
            "-o",
            out_tar.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // The platform is wasip1/wasm: `ctr` imports it only with --all-platforms.
    assert!(
        out.stderr.contains(&format!(
            "ctr image import --all-platforms {}",
            out_tar.display()
        )),
        "{}",
        out.stderr
    );
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&out_tar)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    for expected in ["oci-layout", "index.json", "blobs/sha256/"] {
        assert!(names.contains(expected), "{expected} missing from {names}");
    }

    let not_wasm = s.write("notes.wasm", "just text");
    let out = cwasi(
        &[
            "image",
            "build",
            &not_wasm,
            "-t",
            "x",
            "-o",
            s.0.join("x.tar").to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("not a WebAssembly module"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_full_or_closed_output_stream_is_no_panic() {
    use std::process::{Command, Stdio};
    // A diagnostic to a full stderr is dropped: the call fails as it
    // would, with its exit code, and no panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let scratch = Scratch::new("full-stderr");
    let dir = scratch.0.join("node");
    let status = Command::new(env!("CARGO_BIN_EXE_cwasi"))
        .args(["call", "nothing-serves-this", "--runtime-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(full)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
    // Data to a reader that went away: a clean failure, no panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cwasi"))
        .args(["inspect", progs::ECHO])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn an_entry_that_is_refused_is_said_to_be_refused_and_the_run_fails() {
    let dir = Scratch::new("refused-entry");
    // An empty module: neither a command (no _start) nor a function (no
    // handler), with a request or without.
    let module = dir.0.join("empty.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let toml = format!(
        "entry = \"empty\"\n{}",
        function("empty", module.to_str().unwrap(), "")
    );
    let file = dir.write("a.toml", &toml);
    for data in [None, Some("hi")] {
        let mut args = vec!["run", &file];
        args.extend(data.iter().flat_map(|d| ["--data", d]));
        let out = cwasi(&args, LIMIT);
        assert_ne!(out.code, Some(0), "{}", out.stderr);
        assert!(
            out.stderr.contains("entry 'empty' was refused"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("finished"), "{}", out.stderr);
        assert!(out.stderr.contains("is not an entry"), "{}", out.stderr);
    }
}

#[test]
fn an_entry_that_is_a_function_is_called_once_with_the_data() {
    let dir = Scratch::new("function-entry");
    // A callable component, not a command: it exports no wasi:cli/run.
    let toml = format!(
        "entry = \"echo\"\n{}",
        function("echo", progs::COMPONENT_ECHO, "namespace = \"a\"")
    );
    let file = dir.write("a.toml", &toml);
    let out = cwasi(&["run", &file, "--data", "ping"], LIMIT);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ping");
    assert!(
        out.stderr.contains("entry 'echo' finished"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("<host> -> echo"), "{}", out.stderr);
    // From a file, into a file.
    let request = dir.write("request.bin", "from a file");
    let response = dir.0.join("response.bin");
    let out = cwasi(
        &[
            "run",
            &file,
            "--data",
            &format!("@{request}"),
            "--out",
            response.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(std::fs::read(&response).unwrap(), b"from a file");
    // A request for a command is refused, and says why.
    let out = cwasi(&["run", progs::HELLO, "--data", "x"], LIMIT);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--data is for an entry that is a function"),
        "{}",
        out.stderr
    );
}

/// An error names its OS cause once, not once from the runtime's message
/// and again from its source.
#[test]
fn an_error_names_its_cause_once() {
    let dir = Scratch::new("error-once");
    let missing = dir.0.join("missing.wasm");
    let out = cwasi(&["inspect", missing.to_str().unwrap()], LIMIT);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        out.stderr
    );
}
