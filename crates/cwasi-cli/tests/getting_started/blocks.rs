//! The fenced code blocks of a Markdown page, as the getting-started test
//! reads them: language, attributes, text, line and the section they are in.

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Parser, Tag, TagEnd};

/// One code block of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The 1-based line of its opening fence (or first line, if indented).
    pub line: usize,
    /// The first word of its info string (`sh`, `text`, ...); empty for a
    /// fence without one and for an indented code block.
    pub lang: String,
    /// The rest of the info string, split on spaces and commas.
    pub attrs: Vec<String>,
    /// Its text, without the fence's indentation.
    pub code: String,
    /// The `##` heading it is under; `None` before the first one.
    pub section: Option<String>,
}

impl Block {
    /// The value of attribute `key=value`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
    }

    /// Whether the flag attribute `flag` is set.
    pub fn has(&self, flag: &str) -> bool {
        self.attrs.iter().any(|a| a == flag)
    }

    /// Where it is, for messages: `page.md:42`.
    pub fn place(&self, page: &str) -> String {
        format!("{page}:{}", self.line)
    }
}

/// Every code block of `markdown`, in order.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    let mut heading: Option<String> = None;
    let mut current: Option<Block> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::Heading {
                level: HeadingLevel::H1 | HeadingLevel::H2,
                ..
            }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(level)) => {
                if let Some(text) = heading.take() {
                    section = (level == HeadingLevel::H2).then(|| text.trim().to_string());
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let info = match kind {
                    CodeBlockKind::Fenced(info) => info.to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                let mut words = info
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|w| !w.is_empty())
                    .map(str::to_string);
                current = Some(Block {
                    line: markdown[..range.start].matches('\n').count() + 1,
                    lang: words.next().unwrap_or_default(),
                    attrs: words.collect(),
                    code: String::new(),
                    section: section.clone(),
                });
            }
            Event::End(TagEnd::CodeBlock) => out.extend(current.take()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(block) = current.as_mut() {
                    block.code.push_str(&text);
                } else if let Some(h) = heading.as_mut() {
                    h.push_str(&text);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# Title

```sh
cwasi --version
```

## Rust `core`

Text, then an expected output:

```text output
cwasi 0.2.0
```

1. In a list, indented:

   ```sh ready=serving
   cwasi serve x.wasm --name x &
   ```

   ~~~sh,install
   apt-get install clang
   ~~~

### A subsection stays in its section

```toml
entry = \"x\"
```

    an indented block

## C

```
no language
```
";

    #[test]
    fn reads_fences_attributes_indentation_and_sections() {
        let got = blocks(PAGE);
        type Summary<'a> = (usize, &'a str, Vec<&'a str>, &'a str, Option<&'a str>);
        let summary: Vec<Summary> = got
            .iter()
            .map(|b| {
                (
                    b.line,
                    b.lang.as_str(),
                    b.attrs.iter().map(String::as_str).collect(),
                    b.code.as_str(),
                    b.section.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, "sh", vec![], "cwasi --version\n", None),
                (
                    11,
                    "text",
                    vec!["output"],
                    "cwasi 0.2.0\n",
                    Some("Rust core")
                ),
                (
                    17,
                    "sh",
                    vec!["ready=serving"],
                    "cwasi serve x.wasm --name x &\n",
                    Some("Rust core")
                ),
                (
                    21,
                    "sh",
                    vec!["install"],
                    "apt-get install clang\n",
                    Some("Rust core")
                ),
                (27, "toml", vec![], "entry = \"x\"\n", Some("Rust core")),
                (31, "", vec![], "an indented block\n", Some("Rust core")),
                (35, "", vec![], "no language\n", Some("C")),
            ]
        );
        assert_eq!(got[2].attr("ready"), Some("serving"));
        assert!(got[3].has("install"));
        assert!(!got[0].has("install"));
        assert_eq!(got[1].place("p.md"), "p.md:11");
    }
}
