//! What the getting-started test does with each block of a page: the rules
//! a page must follow so that every command in it is run (or skipped for a
//! stated reason), and the steps that follow from them.

use super::blocks::Block;

/// The page whose install blocks are skipped: they clone the repository,
/// install toolchains as root and build the runtime, which CI has done
/// before the test, and which a test must not redo on the machine.
pub const INSTALL_PAGE: &str = "install.md";

/// Why an `install` block is not run (printed for each one skipped).
pub const INSTALL_REASON: &str = "it installs toolchains and builds cwasi from a clone; \
     CI has done that (scripts/setup.sh --test) and built the cwasi under test";

/// Info-string words of shell blocks the test would not run: a page must
/// use `sh` for a command, so that nothing a reader types goes untested.
const SHELL_LIKE: &[&str] = &["bash", "shell", "console", "zsh", "shell-session"];

/// One step of a page's script.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    /// Run this `sh` block; with `ready`, wait until what it started in the
    /// background has printed that text before the next block.
    Run {
        block: &'a Block,
        ready: Option<&'a str>,
    },
    /// This `sh` block is not run, for the reason given.
    Skip { block: &'a Block, why: &'static str },
    /// This `text output` block is what the `sh` block at `of` (a line)
    /// prints: each of its lines must be found in that block's output.
    Expect { block: &'a Block, of: usize },
}

/// The steps of `blocks` (of page `page`), or why the page breaks the
/// rules:
/// - `sh` blocks run; attributes: `ready=TEXT` (the block starts a server
///   with `&`: wait for TEXT in its output), `install` (skipped; only on
///   the install page);
/// - `text` blocks are not run; `text output` right after an `sh` block is
///   checked against that block's output;
/// - a block without a language, or in `bash`, `console`, ..., is refused;
/// - other languages (toml, rust, c, ...) are file contents, not run.
pub fn plan<'a>(page: &str, blocks: &[&'a Block]) -> Result<Vec<Step<'a>>, String> {
    let mut steps = Vec::new();
    let mut last_sh: Option<&Block> = None;
    for &block in blocks {
        let at = block.place(page);
        match block.lang.as_str() {
            "sh" => {
                for a in &block.attrs {
                    let known =
                        a == "install" || a.strip_prefix("ready=").is_some_and(|t| !t.is_empty());
                    if !known {
                        return Err(format!("{at}: unknown attribute '{a}' of an sh block (known: ready=TEXT, install)"));
                    }
                }
                if block.has("install") {
                    if page != INSTALL_PAGE {
                        return Err(format!(
                            "{at}: an `install` block is skipped, and only {INSTALL_PAGE} may have one"
                        ));
                    }
                    steps.push(Step::Skip {
                        block,
                        why: INSTALL_REASON,
                    });
                    last_sh = None;
                } else {
                    steps.push(Step::Run {
                        block,
                        ready: block.attr("ready"),
                    });
                    last_sh = Some(block);
                }
            }
            "text" => {
                if let Some(a) = block.attrs.iter().find(|a| *a != "output") {
                    return Err(format!(
                        "{at}: unknown attribute '{a}' of a text block (known: output)"
                    ));
                }
                if block.has("output") {
                    let Some(sh) = last_sh else {
                        return Err(format!(
                            "{at}: a `text output` block must follow the sh block it is the output of"
                        ));
                    };
                    steps.push(Step::Expect { block, of: sh.line });
                }
                last_sh = None;
            }
            "" => {
                return Err(format!(
                "{at}: a code block without a language; use sh for commands (they are run) or text"
            ))
            }
            lang if SHELL_LIKE.contains(&lang) => {
                return Err(format!(
                    "{at}: a {lang} block is not run by the test; write commands as sh"
                ))
            }
            _ => last_sh = None,
        }
    }
    Ok(steps)
}

/// The blocks of one test: with `section`, those before the first `##`
/// heading (the page's setup, run before every section) and those of that
/// section; without, all of them.
pub fn select<'a>(blocks: &'a [Block], section: Option<&str>) -> Vec<&'a Block> {
    blocks
        .iter()
        .filter(|b| section.is_none() || b.section.is_none() || b.section.as_deref() == section)
        .collect()
}

/// Whether an expected-output line matches a line of output: its parts
/// between `...` appear in order in it (a line of only `...` matches
/// anything).
pub fn line_matches(expected: &str, got: &str) -> bool {
    let mut rest = got;
    for part in expected.trim().split("...") {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The lines of `expected` (a `text output` block) not found in `output`.
pub fn missing_lines<'e>(expected: &'e str, output: &str) -> Vec<&'e str> {
    expected
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim() != "...")
        .filter(|l| !output.lines().any(|got| line_matches(l, got)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::blocks::blocks;
    use super::*;

    fn steps_of(page: &str, md: &str) -> Result<Vec<(usize, &'static str)>, String> {
        let all = blocks(md);
        let refs: Vec<&Block> = all.iter().collect();
        Ok(plan(page, &refs)?
            .iter()
            .map(|s| match s {
                Step::Run { block, ready: None } => (block.line, "run"),
                Step::Run { block, .. } => (block.line, "run-ready"),
                Step::Skip { block, .. } => (block.line, "skip"),
                Step::Expect { block, .. } => (block.line, "expect"),
            })
            .collect())
    }

    #[test]
    fn runs_sh_checks_outputs_and_skips_only_install_blocks() {
        let md = "```sh install\nrustup\n```\n\n```sh\ncwasi --version\n```\n\n```text output\ncwasi ...\n```\n\n```text\nnot checked\n```\n\n```toml\nentry = \"x\"\n```\n\n```sh ready=serving\ncwasi serve x &\n```\n";
        assert_eq!(
            steps_of("install.md", md).unwrap(),
            vec![(1, "skip"), (5, "run"), (9, "expect"), (21, "run-ready")]
        );
        let e = steps_of("first-function.md", md).unwrap_err();
        assert!(
            e.contains("first-function.md:1") && e.contains("only install.md"),
            "{e}"
        );
    }

    #[test]
    fn refuses_blocks_that_would_not_run_or_not_be_checked() {
        for (md, why) in [
            ("```bash\nls\n```\n", "write commands as sh"),
            ("```console\n$ ls\n```\n", "write commands as sh"),
            ("```\nls\n```\n", "without a language"),
            ("    ls\n", "without a language"),
            ("```sh later\nls\n```\n", "unknown attribute 'later'"),
            ("```sh ready=\nls\n```\n", "unknown attribute 'ready='"),
            ("```text outptu\nx\n```\n", "unknown attribute 'outptu'"),
            ("```text output\nx\n```\n", "must follow the sh block"),
            (
                "```sh\nls\n```\n\n```toml\na = 1\n```\n\n```text output\nx\n```\n",
                "must follow the sh block",
            ),
        ] {
            let e = steps_of("p.md", md).unwrap_err();
            assert!(e.contains(why), "{md:?}: {e}");
        }
    }

    #[test]
    fn selects_the_setup_and_one_section() {
        let all = blocks("```sh\nsetup\n```\n## A\n```sh\na\n```\n## B\n```sh\nb\n```\n");
        let codes = |s| -> Vec<String> { select(&all, s).iter().map(|b| b.code.clone()).collect() };
        assert_eq!(codes(Some("B")), ["setup\n", "b\n"]);
        assert_eq!(codes(None), ["setup\n", "a\n", "b\n"]);
    }

    #[test]
    fn matches_expected_lines_with_ellipses() {
        assert!(line_matches("HELLO", "HELLO"));
        assert!(line_matches(
            "entry 'x' finished in ...",
            "entry 'x' finished in 1.2 ms"
        ));
        assert!(line_matches(
            "  a -> b: embedded (...)",
            "  a -> b: embedded (same ns)"
        ));
        assert!(line_matches("...", "anything"));
        assert!(!line_matches("entry 'x' finished", "entry 'x' failed"));
        assert!(!line_matches("a ... b", "b a"));
        assert_eq!(
            missing_lines("HELLO\n...\nWORLD\n", "HELLO\nother\n"),
            vec!["WORLD"]
        );
    }
}
