//! `cwasi up`: the polyglot example answers `POST /parse` over HTTP with
//! the JSON its chain (Python -> Rust -> JavaScript) produces; a function
//! of another namespace is served by a `cwasi serve` child and reached in
//! local mode; unknown paths, other methods, bodies over the payload limit
//! and functions that are not callable get their status; SIGTERM stops
//! `up` and its child. Requests are made with curl.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::guests::{polyglot_composition, private_dir, POLYGLOT_JSON};
use common::{run_with_timeout, Scratch, LIMIT};
use cwasi_runtime::NodeDirectory;
use test_programs_artifacts as progs;

/// A running `cwasi up`, killed if the test ends first.
struct Up {
    child: Child,
    /// `http://IP:PORT`.
    base: String,
}

impl Up {
    /// Starts `cwasi up` on port 0 and waits (bounded) for the URLs it
    /// prints.
    fn start(composition: &Path, runtime_dir: &Path) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cwasi"))
            .arg("up")
            .arg(composition)
            .args(["--http", "127.0.0.1:0", "--runtime-dir"])
            .arg(runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut up = Up {
            child,
            base: String::new(),
        };
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("cwasi up printed only {seen:?}"));
            seen.push(line);
        }
        assert!(
            seen[0].contains("as a caller of namespace 'polyglot'"),
            "{seen:?}"
        );
        for name in ["echo", "format", "main", "parse", "upper"] {
            let url = seen
                .iter()
                .find_map(|l| {
                    l.strip_prefix("POST ")
                        .filter(|u| u.ends_with(&format!("/{name}")))
                })
                .unwrap_or_else(|| panic!("no URL for {name} in {seen:?}"));
            up.base = url.trim_end_matches(&format!("/{name}")).to_string();
        }
        assert!(up.base.starts_with("http://127.0.0.1:"), "{}", up.base);
        assert!(!up.base.ends_with(":0"), "{}", up.base);
        up
    }

    /// curl's status code and body for `args` against `path`.
    fn curl(&self, path: &str, args: &[&str]) -> (u16, String) {
        let out = run_with_timeout(
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
                .args(args)
                .arg(format!("{}{path}", self.base)),
            LIMIT,
        );
        assert_eq!(out.code, Some(0), "curl {path}: {}", out.stderr);
        let (body, status) = out.stdout.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), body.to_string())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn up_serves_the_polyglot_example_over_http() {
    let scratch = Scratch::new("up");
    let node = private_dir(&scratch, "node");
    let composition = polyglot_composition(&scratch.0);
    // A function of another namespace, and a payload limit of 1 MiB.
    let mut text = std::fs::read_to_string(&composition).unwrap();
    text = text.replacen(
        "entry = \"main\"",
        "entry = \"main\"\n[limits]\nmax_payload_mib = 1\n",
        1,
    );
    text.push_str(&format!(
        "\n[functions.echo]\nmodule = {:?}\nnamespace = \"elsewhere\"\n",
        progs::ECHO
    ));
    std::fs::write(&composition, text).unwrap();
    let up = Up::start(&composition, &node);

    // The acceptance: Python parse, calling Rust upper and
    // JavaScript format.
    let (status, body) = up.curl("/parse", &["-d", "Ada Lovelace, 1815, mathematician"]);
    assert_eq!((status, body.as_str()), (200, POLYGLOT_JSON));
    // Another namespace, through its `cwasi serve` child.
    assert!(NodeDirectory::open(&node)
        .unwrap()
        .lookup("echo", "elsewhere")
        .is_some());
    let (status, body) = up.curl("/echo", &["--data-binary", "hello\nthere"]);
    assert_eq!((status, body.as_str()), (200, "hello\nthere"));
    // A callee's error: the function's own message, after its code.
    let (status, body) = up.curl("/parse", &["-d", "not a record"]);
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("CALLEE_ERROR: "), "{body}");
    // The entry is a command, not a function to call.
    let (status, body) = up.curl("/main", &["-d", "x"]);
    assert_eq!(status, 501, "{body}");
    assert!(body.starts_with("NOT_CALLABLE: "), "{body}");
    // Unknown path, other method, too large a body.
    let (status, body) = up.curl("/nobody", &["-d", "x"]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/parse"), "{body}");
    let (status, _) = up.curl("/", &[]);
    assert_eq!(status, 404);
    let (status, body) = up.curl("/parse", &[]);
    assert_eq!(status, 405, "{body}");
    let big = scratch.0.join("big");
    std::fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
    let (status, body) = up.curl("/echo", &["--data-binary", &format!("@{}", big.display())]);
    assert_eq!(status, 413, "{body}");
    // Just under the limit goes through.
    std::fs::write(&big, vec![b'x'; (1 << 20) - 64]).unwrap();
    let (status, body) = up.curl("/echo", &["--data-binary", &format!("@{}", big.display())]);
    assert_eq!((status, body.len()), (200, (1 << 20) - 64));

    // SIGTERM stops it, and its child withdraws its record.
    let mut up = up;
    let pid = rustix::process::Pid::from_child(&up.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + LIMIT;
    while up.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cwasi up did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(NodeDirectory::open(&node)
        .unwrap()
        .lookup("echo", "elsewhere")
        .is_none());
}
