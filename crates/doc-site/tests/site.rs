//! The docs site as CI checks it: `mdbook build` succeeds without
//! warnings, every relative link of docs/, README.md and CHANGELOG.md
//! resolves (file and heading anchor), every page under docs/ is in
//! SUMMARY.md, and no heading names a work item instead of its subject.

use std::path::{Path, PathBuf};
use std::process::Command;

use doc_site::{check_links, markdown_files, names_an_issue, read_page, summary_pages};

/// The mdbook release the site is built with (scripts/setup.sh installs it).
const MDBOOK_VERSION: &str = "0.5.4";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Every page of the book (under docs/), relative to the repository root.
fn doc_pages(root: &Path) -> Vec<PathBuf> {
    markdown_files(&root.join("docs"))
        .expect("docs/ is readable")
        .into_iter()
        .map(|p| p.strip_prefix(root).expect("under the root").to_path_buf())
        .collect()
}

fn fail_with(what: &str, problems: &[String]) {
    if !problems.is_empty() {
        panic!(
            "{what}: {} problem(s)\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
}

#[test]
fn mdbook_builds_the_site() {
    let root = repo_root();
    let version = match Command::new("mdbook").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => panic!(
            "`mdbook --version` failed ({}): {}\nInstall it with `./scripts/setup.sh --docs` \
             (cargo install --locked mdbook --version {MDBOOK_VERSION} --no-default-features --features search)",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "mdbook is not installed ({e}), so the docs site cannot be built and checked.\n\
             Install it with `./scripts/setup.sh --docs` (CI's `./scripts/setup.sh --test` does it), \
             or: cargo install --locked mdbook --version {MDBOOK_VERSION} --no-default-features --features search"
        ),
    };
    if version != format!("mdbook v{MDBOOK_VERSION}") {
        eprintln!(
            "WARNING: {version} is not the pinned mdbook v{MDBOOK_VERSION}; \
             `./scripts/setup.sh --docs` installs the pinned one"
        );
    }

    let dest = std::env::temp_dir().join(format!("cwasi-doc-site-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let out = Command::new("mdbook")
        .arg("build")
        .arg("--dest-dir")
        .arg(&dest)
        .arg(&root)
        .output()
        .expect("mdbook runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let built = dest.join("index.html").is_file();
    // Every page SUMMARY.md lists became a page of the site.
    let summary = read_page(&root.join("docs/SUMMARY.md")).expect("docs/SUMMARY.md");
    let missing: Vec<String> = summary_pages(&summary)
        .into_iter()
        .map(|p| p.with_extension("html"))
        .filter(|p| !dest.join(p).is_file())
        .map(|p| format!("{} was not written", p.display()))
        .collect();
    let _ = std::fs::remove_dir_all(&dest);

    assert!(
        out.status.success() && built,
        "mdbook build failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let warnings: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    fail_with("mdbook build warned", &warnings);
    fail_with("the built site lacks pages", &missing);
}

#[test]
fn every_internal_link_resolves() {
    let root = repo_root();
    let mut files = doc_pages(&root);
    files.push(PathBuf::from("README.md"));
    files.push(PathBuf::from("CHANGELOG.md"));
    let problems: Vec<String> = check_links(&root, &files)
        .expect("the pages are readable")
        .iter()
        .map(ToString::to_string)
        .collect();
    fail_with("broken links", &problems);
}

#[test]
fn every_page_is_in_the_summary() {
    let root = repo_root();
    let summary = read_page(&root.join("docs/SUMMARY.md")).expect("docs/SUMMARY.md");
    let listed = summary_pages(&summary);
    let problems: Vec<String> = doc_pages(&root)
        .into_iter()
        .filter_map(|page| {
            let in_book = page
                .strip_prefix("docs")
                .expect("under docs/")
                .to_path_buf();
            (in_book != Path::new("SUMMARY.md") && !listed.contains(&in_book)).then(|| {
                format!(
                    "{}: not in docs/SUMMARY.md, so the site does not show it",
                    page.display()
                )
            })
        })
        .collect();
    fail_with("pages missing from the summary", &problems);
}

#[test]
fn no_heading_names_an_issue() {
    let root = repo_root();
    let mut problems = Vec::new();
    for page in doc_pages(&root) {
        let parsed = read_page(&root.join(&page)).expect("the page is readable");
        for h in parsed.headings.iter().filter(|h| names_an_issue(&h.text)) {
            problems.push(format!(
                "{}:{}: heading \"{}\" names a work item; say what the thing is",
                page.display(),
                h.line,
                h.text
            ));
        }
    }
    fail_with("headings that read as history", &problems);
}
