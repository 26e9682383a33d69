//! The project templates of `cwasi new`: a function in Rust (core module or
//! component), C, Python or JavaScript, or a composition of two, each a
//! project that builds outside the CWASI repository with one command and
//! runs with `cwasi run app.toml --data '…'`.
//!
//! The templates live in the repository's `templates/` and are embedded at
//! build time (build.rs) together with what the projects carry: the WIT
//! package, the C header and the Rust guest SDK, so a project is always of
//! the ABI of the `cwasi` that wrote it.

mod render;

use std::path::{Path, PathBuf};

pub use render::{crate_name, render, Placeholders};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// What a generated project carries besides its template's own files, and
/// where in the project it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The WIT package (`function.wit` and `deps/`), in this directory.
    Wit(&'static str),
    /// The C header `cwasi.h`, at this path.
    CHeader(&'static str),
    /// The Rust guest SDK (`cwasi-guest`, `cwasi-abi`), in this directory.
    Sdk(&'static str),
}

impl Part {
    /// Where it goes in the project.
    pub fn path(&self) -> &'static str {
        match *self {
            Part::Wit(p) | Part::CHeader(p) | Part::Sdk(p) => p,
        }
    }

    /// What it is, for people.
    pub fn describe(&self) -> &'static str {
        match self {
            Part::Wit(_) => "the WIT package cwasi:function, with the WASI interfaces it uses",
            Part::CHeader(_) => "the CWASI ABI for C",
            Part::Sdk(_) => "the CWASI guest SDK for Rust: cwasi-guest and cwasi-abi",
        }
    }
}

/// One template of `cwasi new`.
#[derive(Debug)]
pub struct Template {
    /// Its name on the command line.
    pub name: &'static str,
    /// One line saying what the project is.
    pub description: &'static str,
    /// What it carries besides its own files.
    pub parts: &'static [Part],
}

/// Every template, in the order `cwasi new --list` shows them.
pub const TEMPLATES: &[Template] = &[
    Template {
        name: "rust",
        description:
            "a Rust core module (wasm32-wasip1) with the CWASI guest SDK, vendored in sdk/",
        parts: &[Part::Sdk("sdk")],
    },
    Template {
        name: "rust-component",
        description:
            "a Rust component (wasm32-wasip2) with wit-bindgen and the WIT package in wit/",
        parts: &[Part::Wit("wit")],
    },
    Template {
        name: "c",
        description: "a C core module (clang, wasm32-wasi reactor) with the header cwasi.h",
        parts: &[Part::CHeader("cwasi.h")],
    },
    Template {
        name: "python",
        description: "a Python component (componentize-py) with the WIT package in wit/",
        parts: &[Part::Wit("wit")],
    },
    Template {
        name: "js",
        description: "a JavaScript component (componentize-js) with the WIT package in wit/",
        parts: &[Part::Wit("wit")],
    },
    Template {
        name: "composition",
        description: "two functions chained: a Python entry that calls a Rust function by name",
        parts: &[Part::Wit("wit"), Part::Sdk("shout/sdk")],
    },
];

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No template has this name.
    #[error("there is no template '{name}'; the templates are: {known}")]
    UnknownTemplate {
        /// The name asked for.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// The project name cannot be a function name.
    #[error("'{name}' cannot name a function: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The target directory exists and has files in it.
    #[error("{} already exists and is not empty; choose another name or --dir", .0.display())]
    NotEmpty(PathBuf),
    /// The target path exists and is not a directory.
    #[error("{} already exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Reading or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The template called `name`.
pub fn find(name: &str) -> Result<&'static Template, TemplateError> {
    TEMPLATES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| TemplateError::UnknownTemplate {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// The names of the templates, for help texts and completions.
pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|t| t.name).collect()
}

/// Checks that `name` can name the project's function: the rule of every
/// function name (1 to 255 letters, digits, `-`, `_` and `.`, not starting
/// with `.`), which the project also uses as its namespace.
pub fn validate_name(name: &str) -> Result<(), TemplateError> {
    cwasi_abi::validate_name(name).map_err(|e| TemplateError::InvalidName {
        name: name.to_string(),
        reason: e.rule().to_string(),
    })
}

impl Template {
    /// The files of a project named `name`, as (path in the project,
    /// contents), placeholders substituted; what [`Template::write`] writes.
    pub fn files(&self, name: &str) -> Result<Vec<(String, Vec<u8>)>, TemplateError> {
        validate_name(name)?;
        let vars = Placeholders::new(name, embedded::WIT_BINDGEN);
        let mut files: Vec<(String, Vec<u8>)> = embedded::TEMPLATE_FILES
            .iter()
            .filter(|(t, _, _)| *t == self.name)
            .map(|(_, path, bytes)| (render(path, &vars), render_bytes(bytes, &vars)))
            .collect();
        for part in self.parts {
            match *part {
                Part::Wit(dir) => files.extend(
                    embedded::WIT_FILES
                        .iter()
                        .map(|(p, b)| (format!("{dir}/{p}"), b.to_vec())),
                ),
                Part::CHeader(path) => files.push((path.to_string(), embedded::C_HEADER.to_vec())),
                Part::Sdk(dir) => files.extend(
                    embedded::SDK_FILES
                        .iter()
                        .map(|(p, b)| (format!("{dir}/{p}"), b.to_vec())),
                ),
            }
        }
        Ok(files)
    }

    /// Writes a project named `name` into `dir`, which must not exist or be
    /// empty, and returns the paths written (relative to `dir`). Nothing is
    /// written if the name or the directory is refused.
    pub fn write(&self, name: &str, dir: &Path) -> Result<Vec<String>, TemplateError> {
        let files = self.files(name)?;
        check_target(dir)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TemplateError::Io { path, source }
        };
        let mut written = Vec::with_capacity(files.len());
        for (rel, bytes) in files {
            let path = dir.join(&rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, bytes).map_err(io(&path))?;
            written.push(rel);
        }
        Ok(written)
    }
}

/// Refuses a target that is a file, or a directory with anything in it.
fn check_target(dir: &Path) -> Result<(), TemplateError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TemplateError::Io {
            path: dir.to_path_buf(),
            source,
        }),
        Ok(meta) if !meta.is_dir() => Err(TemplateError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            match entries.next() {
                None => Ok(()),
                Some(_) => Err(TemplateError::NotEmpty(dir.to_path_buf())),
            }
        }
    }
}

/// Substitutes placeholders in a text file; other files are copied as they
/// are (a template holds text only, but a stray binary must not break).
fn render_bytes(bytes: &[u8], vars: &Placeholders) -> Vec<u8> {
    match std::str::from_utf8(bytes) {
        Ok(text) => render(text, vars).into_bytes(),
        Err(_) => bytes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cwasi-templates-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn every_template_has_files_an_app_toml_and_a_readme() {
        for t in TEMPLATES {
            let files = t.files("hello").unwrap();
            let has = |p: &str| files.iter().any(|(path, _)| path == p);
            assert!(has("app.toml"), "{}: no app.toml", t.name);
            assert!(has("README.md"), "{}: no README.md", t.name);
            for (path, bytes) in &files {
                let text = String::from_utf8_lossy(bytes);
                for placeholder in ["{{name}}", "{{crate_name}}", "{{wit_bindgen}}"] {
                    assert!(
                        !text.contains(placeholder) && !path.contains(placeholder),
                        "{}: {path} keeps {placeholder}",
                        t.name
                    );
                }
            }
            let readme = files.iter().find(|(p, _)| p == "README.md").unwrap();
            let readme = String::from_utf8_lossy(&readme.1);
            assert!(readme.contains("cwasi build app.toml"), "{}", t.name);
            assert!(
                readme.contains("cwasi run app.toml --data 'hello'"),
                "{}",
                t.name
            );
        }
        assert_eq!(
            names(),
            ["rust", "rust-component", "c", "python", "js", "composition"]
        );
    }

    #[test]
    fn parts_are_carried() {
        let files = find("rust").unwrap().files("x").unwrap();
        let manifest = files
            .iter()
            .find(|(p, _)| p == "sdk/cwasi-guest/Cargo.toml")
            .expect("the vendored SDK");
        let manifest = String::from_utf8_lossy(&manifest.1);
        assert!(!manifest.contains("workspace"), "{manifest}");
        assert!(manifest.contains("path = \"../cwasi-abi\""), "{manifest}");
        assert!(files.iter().any(|(p, _)| p == "sdk/cwasi-abi/src/lib.rs"));
        let files = find("c").unwrap().files("x").unwrap();
        assert!(files.iter().any(|(p, _)| p == "cwasi.h"));
        let files = find("python").unwrap().files("x").unwrap();
        assert!(files.iter().any(|(p, _)| p == "wit/function.wit"));
        assert!(files.iter().any(|(p, _)| p.starts_with("wit/deps/")));
        let files = find("rust-component").unwrap().files("x").unwrap();
        let manifest = files.iter().find(|(p, _)| p == "Cargo.toml").unwrap();
        let manifest = String::from_utf8_lossy(&manifest.1);
        assert!(
            manifest.contains(&format!("wit-bindgen = {}", embedded::WIT_BINDGEN)),
            "{manifest}"
        );
    }

    #[test]
    fn unknown_templates_and_bad_names_are_refused() {
        let e = find("cobol").unwrap_err().to_string();
        assert!(e.contains("there is no template 'cobol'"), "{e}");
        assert!(
            e.contains("rust, rust-component, c, python, js, composition"),
            "{e}"
        );
        for bad in ["", ".hidden", "a/b", "a b", "ünï", &"x".repeat(256)] {
            let dir = scratch("bad-name");
            let e = find("c").unwrap().write(bad, &dir).unwrap_err();
            assert!(
                matches!(e, TemplateError::InvalidName { .. }),
                "{bad:?}: {e}"
            );
            assert!(!dir.exists(), "{bad:?}: something was written");
        }
    }

    #[test]
    fn existing_files_and_directories_are_refused_empty_ones_taken() {
        let dir = scratch("existing");
        std::fs::create_dir_all(&dir).unwrap();
        let c = find("c").unwrap();
        let written = c.write("shout", &dir).unwrap();
        assert!(written.contains(&"app.c".to_string()), "{written:?}");
        let app = std::fs::read_to_string(dir.join("app.toml")).unwrap();
        assert!(app.contains("entry = \"shout\""), "{app}");
        let e = c.write("shout", &dir).unwrap_err();
        assert!(matches!(e, TemplateError::NotEmpty(_)), "{e}");
        assert!(e.to_string().contains("is not empty"), "{e}");
        let file = dir.join("app.toml");
        let e = c.write("shout", &file).unwrap_err();
        assert!(matches!(e, TemplateError::NotADirectory(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
