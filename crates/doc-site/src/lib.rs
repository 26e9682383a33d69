//! Checks of the docs site (`book.toml`, `docs/`): the Markdown facts its
//! tests need (links with their lines, headings and the anchors mdBook and
//! GitHub make of them), and the link check itself. The tests in `tests/`
//! run `mdbook build` and these checks over the repository.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Why the site's files could not be read; the checks report problems of
/// the pages themselves as [`Problem`]s, not as errors.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A file or directory of the site could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// What could not be read.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// A link or image of a page, as its author wrote the destination, and the
/// line it is on, so that a broken one can be named as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The destination, e.g. `operations.md#metrics` or `bench/x.svg`.
    pub dest: String,
    /// 1-based line of the link's start.
    pub line: usize,
}

/// A heading of a page: its text as rendered (code spans without their
/// backticks), an explicit `{#id}` if it has one, and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// The heading's text.
    pub text: String,
    /// An explicit id (`## Title {#id}`), which replaces the slug.
    pub id: Option<String>,
    /// 1-based line of the heading.
    pub line: usize,
    /// 1 for `#`, 2 for `##`, ...
    pub level: usize,
}

/// What the checks need of one Markdown page: its links and its headings,
/// outside code blocks.
#[derive(Debug, Default, Clone)]
pub struct Page {
    /// Every link and image destination.
    pub links: Vec<Link>,
    /// Every heading, in order.
    pub headings: Vec<Heading>,
}

impl Page {
    /// Parses Markdown as mdBook does (tables, footnotes, strikethrough,
    /// task lists, heading attributes).
    pub fn parse(text: &str) -> Page {
        let options = Options::ENABLE_TABLES
            | Options::ENABLE_FOOTNOTES
            | Options::ENABLE_STRIKETHROUGH
            | Options::ENABLE_TASKLISTS
            | Options::ENABLE_HEADING_ATTRIBUTES;
        let line_of = LineIndex::new(text);
        let mut page = Page::default();
        let mut heading: Option<Heading> = None;
        for (event, range) in Parser::new_ext(text, options).into_offset_iter() {
            match event {
                Event::Start(Tag::Link { dest_url, .. })
                | Event::Start(Tag::Image { dest_url, .. }) => page.links.push(Link {
                    dest: dest_url.to_string(),
                    line: line_of.line(range.start),
                }),
                Event::Start(Tag::Heading { level, id, .. }) => {
                    heading = Some(Heading {
                        text: String::new(),
                        id: id.map(|id| id.to_string()),
                        line: line_of.line(range.start),
                        level: level_number(level),
                    })
                }
                Event::Text(t) | Event::Code(t) => {
                    if let Some(h) = heading.as_mut() {
                        h.text.push_str(&t);
                    }
                }
                Event::End(TagEnd::Heading(_)) => {
                    if let Some(h) = heading.take() {
                        page.headings.push(h);
                    }
                }
                _ => {}
            }
        }
        page
    }

    /// The anchors of the page's headings, as mdBook and GitHub make them:
    /// [`slug`] of the text (or the explicit id), and a repeated one
    /// suffixed `-1`, `-2`, ...
    pub fn anchors(&self) -> BTreeSet<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut anchors = BTreeSet::new();
        for h in &self.headings {
            let base = h.id.clone().unwrap_or_else(|| slug(&h.text));
            let n = seen.entry(base.clone()).or_insert(0);
            let anchor = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            anchors.insert(anchor);
        }
        anchors
    }
}

fn level_number(level: HeadingLevel) -> usize {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// The anchor of a heading's text, by the rule mdBook and GitHub share:
/// letters and digits lower-cased, `-` and `_` kept, each whitespace
/// character a `-`, everything else dropped.
pub fn slug(text: &str) -> String {
    text.trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().collect::<String>())
            } else if c.is_whitespace() {
                Some("-".to_string())
            } else {
                None
            }
        })
        .collect()
}

/// Whether a heading names a work item ("issue 14") instead of saying what
/// the thing is: "issue" followed by whitespace and a digit, any case.
pub fn names_an_issue(text: &str) -> bool {
    let lower = text.to_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("issue") {
        let after = &rest[at + "issue".len()..];
        let trimmed = after.trim_start();
        if trimmed.len() < after.len() && trimmed.starts_with(|c: char| c.is_ascii_digit()) {
            return true;
        }
        rest = after;
    }
    false
}

/// One thing wrong with a page, named by file and line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The page, relative to the repository root.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// Every `.md` file under `dir`, recursively, sorted.
pub fn markdown_files(dir: &Path) -> Result<Vec<PathBuf>, SiteError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|source| SiteError::Read {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| SiteError::Read {
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and parses a page.
pub fn read_page(path: &Path) -> Result<Page, SiteError> {
    let text = fs::read_to_string(path).map_err(|source| SiteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Page::parse(&text))
}

/// Whether a destination leaves the repository's files: a URL with a
/// scheme (`https:`, `mailto:`) or a protocol-relative one.
fn is_external(dest: &str) -> bool {
    if dest.starts_with("//") {
        return true;
    }
    match dest.find(':') {
        Some(colon) => {
            let scheme = &dest[..colon];
            !scheme.is_empty()
                && !scheme.contains(['/', '#', '.'])
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
        }
        None => false,
    }
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Checks every relative link of `files` (paths relative to `root`): the
/// target exists in the repository and, for `page.md#anchor` or `#anchor`,
/// the target page has a heading with that anchor. Absolute paths are
/// refused (they do not work on the site nor in a clone), and so are links
/// from a page of `docs/` to a file outside it (the site has only `docs/`).
/// Returns every
/// problem, sorted by file and line.
pub fn check_links(root: &Path, files: &[PathBuf]) -> Result<Vec<Problem>, SiteError> {
    let mut anchors: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut problems = Vec::new();
    for file in files {
        let page = read_page(&root.join(file))?;
        for link in &page.links {
            if is_external(&link.dest) {
                continue;
            }
            let (path_part, fragment) = match link.dest.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.dest.as_str(), None),
            };
            let path_part = path_part.replace("%20", " ");
            let problem = |message: String| Problem {
                file: file.clone(),
                line: link.line,
                message,
            };
            if path_part.starts_with('/') {
                problems.push(problem(format!(
                    "`{}` is an absolute path; link relative to the page",
                    link.dest
                )));
                continue;
            }
            let target = if path_part.is_empty() {
                file.clone()
            } else {
                normalize(&file.parent().unwrap_or(Path::new("")).join(&path_part))
            };
            if target.starts_with("..") {
                problems.push(problem(format!(
                    "`{}` points outside the repository",
                    link.dest
                )));
                continue;
            }
            // The site is built from docs/ alone: a page there that links a
            // file outside it works in a clone and is broken on the site.
            if file.starts_with("docs") && !target.starts_with("docs") {
                problems.push(problem(format!(
                    "`{}` points outside docs/, which the site does not have; \
                     name the file as code instead",
                    link.dest
                )));
                continue;
            }
            let full = root.join(&target);
            if !full.exists() {
                problems.push(problem(format!(
                    "`{}`: {} does not exist",
                    link.dest,
                    target.display()
                )));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if target.extension().is_none_or(|e| e != "md") {
                continue; // a line anchor of a source file, say
            }
            if !anchors.contains_key(&target) {
                anchors.insert(target.clone(), read_page(&full)?.anchors());
            }
            if !anchors[&target].contains(fragment) {
                problems.push(problem(format!(
                    "`{}`: {} has no heading with the anchor `#{}`",
                    link.dest,
                    target.display(),
                    fragment
                )));
            }
        }
    }
    problems.sort();
    Ok(problems)
}

/// The pages `SUMMARY.md` lists (its link destinations, without
/// fragments), relative to the book's source directory.
pub fn summary_pages(summary: &Page) -> BTreeSet<PathBuf> {
    summary
        .links
        .iter()
        .filter(|l| !is_external(&l.dest) && !l.dest.is_empty())
        .map(|l| normalize(Path::new(l.dest.split('#').next().unwrap_or(""))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_mdbook_and_github() {
        assert_eq!(slug("Metrics"), "metrics");
        assert_eq!(slug("call(a: i32) -> x"), "calla-i32---x");
        assert_eq!(
            slug("Caller identity & policies (v5)"),
            "caller-identity--policies-v5"
        );
        assert_eq!(
            slug("`cwasi bench`: the experiments"),
            "cwasi-bench-the-experiments"
        );
        assert_eq!(slug("Fan-out A→N×B"), "fan-out-anb");
    }

    #[test]
    fn repeated_headings_get_numbered_anchors() {
        let page = Page::parse("# A\n\n## Test\n\ntext\n\n## Test\n\n## Other {#custom}\n");
        let anchors: Vec<_> = page.anchors().into_iter().collect();
        assert_eq!(anchors, ["a", "custom", "test", "test-1"]);
    }

    #[test]
    fn links_have_their_lines_and_code_blocks_have_none() {
        let text =
            "# T\n\nsee [x](a.md#b)\n\n```\n[not](a link)\n# not a heading\n```\n\n![img](p.svg)\n";
        let page = Page::parse(text);
        assert_eq!(
            page.links,
            [
                Link {
                    dest: "a.md#b".into(),
                    line: 3
                },
                Link {
                    dest: "p.svg".into(),
                    line: 10
                }
            ]
        );
        assert_eq!(page.headings.len(), 1);
    }

    #[test]
    fn issue_numbers_in_headings_are_found() {
        assert!(names_an_issue("Local mode (issue 14)"));
        assert!(names_an_issue("Issue  7: x"));
        assert!(!names_an_issue("Known issues"));
        assert!(!names_an_issue("What an issue of 2 MiB costs"));
        assert!(!names_an_issue("issue: Foundation"));
    }

    #[test]
    fn external_links_are_told_apart() {
        assert!(is_external("https://example.org/x"));
        assert!(is_external("mailto:a@b"));
        assert!(!is_external("operations.md#metrics"));
        assert!(!is_external("#metrics"));
        assert!(!is_external("bench/current/a.svg"));
    }
}
