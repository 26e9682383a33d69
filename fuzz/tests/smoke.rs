//! The fuzz targets, run in CI for a fixed number of inputs: each target's
//! binary (libFuzzer's driver, without coverage) over every file of its
//! seed corpus (`fuzz/corpus/<target>/`); then the same entry points,
//! called directly, over deterministic mutations of the seeds (bytes
//! flipped, cut, repeated, spliced, lengths set to extremes). A crash or a
//! panic fails the test; so does a target that runs long on one input.
//! Real fuzzing, with coverage guidance, is `cargo +nightly fuzz run
//! <target>` (see `docs/fuzzing.md`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cwasi_runtime::fuzzing;

/// Mutants tried per seed.
const MUTANTS_PER_SEED: usize = 300;

/// The longest one input may take, a bound far above what any should take:
/// a target that waits on something has a bug.
const PER_INPUT: Duration = Duration::from_secs(10);

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus {} cannot be read: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(
        !seeds.is_empty(),
        "the seed corpus {} is empty",
        dir.display()
    );
    seeds
}

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutant of `seed`, spliced with `other` at times.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => out.truncate(rng.below(out.len() + 1)),
            3 if !out.is_empty() => {
                let from = rng.below(out.len());
                let to = (from + 1 + rng.below(64)).min(out.len());
                let piece = out[from..to].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
            4 if !other.is_empty() => {
                let at = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            5 if out.len() >= 8 => {
                // A length or count set to an extreme.
                let at = rng.below(out.len() - 7);
                let v: u64 = [0, 1, u64::MAX, u32::MAX as u64, 1 << 40][rng.below(5)];
                out[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let at = rng.below(out.len() + 1);
                out.insert(at, rng.next() as u8);
            }
        }
    }
    out
}

/// Runs the target's own binary over its seed corpus, each file once.
fn replay(target: &str, binary: &str) {
    let files: Vec<PathBuf> = corpus(target).into_iter().map(|(p, _)| p).collect();
    let out = Command::new(binary)
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
    assert!(
        out.status.success(),
        "{target} failed on its seed corpus: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(target: &str, binary: &str, f: fn(&[u8])) {
    replay(target, binary);
    let seeds = corpus(target);
    let mut rng = Rng(0x5eed_0fc0_ffee ^ target.len() as u64);
    let mut inputs = 0;
    let check = |input: &[u8], what: &str| {
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| f(input));
        let took = started.elapsed();
        if outcome.is_err() || took >= PER_INPUT {
            // Kept for `cargo fuzz run <target> <file>`.
            let saved = std::env::temp_dir().join(format!("cwasi-fuzz-{target}-failure"));
            let _ = std::fs::write(&saved, input);
            panic!(
                "{target}: {what} panicked or took {took:?}; the input is in {}",
                saved.display()
            );
        }
    };
    for (i, (path, seed)) in seeds.iter().enumerate() {
        check(seed, &format!("seed {}", path.display()));
        inputs += 1;
        let other = &seeds[(i + 1) % seeds.len()].1;
        for n in 0..MUTANTS_PER_SEED {
            let mutant = mutate(&mut rng, seed, other);
            check(&mutant, &format!("mutant {n} of {}", path.display()));
            inputs += 1;
        }
    }
    eprintln!("{target}: {inputs} inputs from {} seeds", seeds.len());
}

#[test]
fn local_requests() {
    run(
        "local_requests",
        env!("CARGO_BIN_EXE_local_requests"),
        fuzzing::local_requests,
    );
}

#[test]
fn call_slot() {
    run(
        "call_slot",
        env!("CARGO_BIN_EXE_call_slot"),
        fuzzing::call_slot,
    );
}

#[test]
fn direct_requests() {
    run(
        "direct_requests",
        env!("CARGO_BIN_EXE_direct_requests"),
        fuzzing::direct_requests,
    );
}

#[test]
fn admission() {
    run(
        "admission",
        env!("CARGO_BIN_EXE_admission"),
        fuzzing::admission,
    );
}

#[test]
fn composition() {
    run(
        "composition",
        env!("CARGO_BIN_EXE_composition"),
        fuzzing::composition,
    );
}

#[test]
fn remote_entries() {
    run(
        "remote_entries",
        env!("CARGO_BIN_EXE_remote_entries"),
        fuzzing::remote_entries,
    );
}

#[test]
fn node_record() {
    run(
        "node_record",
        env!("CARGO_BIN_EXE_node_record"),
        fuzzing::node_record,
    );
}

#[test]
fn every_fuzz_target_has_a_smoke_test_and_a_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut targets: Vec<String> = std::fs::read_dir(root.join("fuzz_targets"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            path.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    targets.sort();
    let this = include_str!("smoke.rs");
    for t in &targets {
        assert!(
            this.contains(&format!("fn {t}()")),
            "fuzz target {t} has no smoke test here"
        );
        assert!(!corpus(t).is_empty());
    }
    assert_eq!(targets.len(), 7, "{targets:?}");
}

#[test]
fn the_composition_seeds_are_valid_compositions() {
    // Mutants of valid files reach deeper than mutants of rejected ones.
    for (path, seed) in corpus("composition") {
        let text = String::from_utf8(seed).unwrap();
        if let Err(e) = cwasi_runtime::Composition::parse(&text, Path::new("/nonexistent")) {
            panic!("{}: {e}", path.display());
        }
    }
}
