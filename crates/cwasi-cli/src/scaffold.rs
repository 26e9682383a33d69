//! `cwasi new`: writes a function project from a template of
//! `cwasi-templates`, and says how to build and run it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use cwasi_templates::{Part, TEMPLATES};

use crate::console;

/// The arguments of `cwasi new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The template (see --list).
    #[arg(
        required_unless_present = "list",
        value_parser = clap::builder::PossibleValuesParser::new(cwasi_templates::names())
    )]
    template: Option<String>,
    /// The function's name; also the project's namespace and, by default,
    /// its directory.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Where to write the project (default: ./NAME). It must not exist, or
    /// be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Lists the templates, one line each.
    #[arg(long, exclusive = true)]
    list: bool,
}

/// The two commands every generated project documents: build, then run.
const NEXT: [&str; 2] = ["cwasi build app.toml", "cwasi run app.toml --data 'hello'"];

/// Runs `cwasi new`.
pub fn run(args: NewArgs) -> Result<()> {
    if args.list {
        return console::output(list().as_bytes());
    }
    let (Some(template), Some(name)) = (args.template, args.name) else {
        anyhow::bail!("give a template and a name, e.g. `cwasi new rust hello` (or --list)");
    };
    let template = cwasi_templates::find(&template)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&name));
    let written = template.write(&name, &dir)?;
    let mut out = format!(
        "Wrote the {} project '{name}' in {}:\n",
        template.name,
        dir.display()
    );
    let in_part = |path: &str| {
        template
            .parts
            .iter()
            .any(|p| path == p.path() || path.starts_with(&format!("{}/", p.path())))
    };
    let mut own: Vec<&String> = written.iter().filter(|p| !in_part(p)).collect();
    own.sort();
    for path in own {
        let _ = writeln!(out, "  {path}");
    }
    for part in template.parts {
        let suffix = if matches!(part, Part::CHeader(_)) {
            ""
        } else {
            "/"
        };
        let _ = writeln!(out, "  {}{suffix}  ({})", part.path(), part.describe());
    }
    let _ = writeln!(
        out,
        "\nNext:\n  cd {}",
        shell_word(&dir.display().to_string())
    );
    for command in NEXT {
        let _ = writeln!(out, "  {command}");
    }
    console::output(out.as_bytes())
}

/// What `cwasi new --list` prints.
fn list() -> String {
    let width = TEMPLATES.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for t in TEMPLATES {
        let _ = writeln!(out, "{:<width$}  {}", t.name, t.description);
    }
    out
}

/// `word` as one word for a POSIX shell: as it is if it has nothing the
/// shell would split or expand, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./+,:@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("hello"), "hello");
        assert_eq!(shell_word("../a/b-c"), "../a/b-c");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn the_list_has_every_template() {
        let text = list();
        assert_eq!(text.lines().count(), TEMPLATES.len());
        for t in TEMPLATES {
            assert!(text.contains(t.name) && text.contains(t.description));
        }
    }
}
